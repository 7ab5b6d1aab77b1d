-- ArgoCD health of an InferenceDeployment, read from the conditions the operator writes.
--   Progressing  the operator has not reported on this generation yet, a recycle is in flight,
--                or the pods are not all Ready yet
--   Suspended    recycling is paused on purpose (spec.paused) or by the circuit breaker
--   Degraded     the spec or policy cannot be reconciled, a pod keeps degrading right after its
--                recycle, or metrics have been unavailable for more than 15 minutes
--   Healthy      Ready is True
local METRICS_GRACE_SECONDS = 900

local hs = {}

local function conditions_by_type(status)
  local found = {}
  if status.conditions ~= nil then
    for _, condition in ipairs(status.conditions) do
      if condition.type ~= nil then
        found[condition.type] = condition
      end
    end
  end
  return found
end

local function is(condition, value)
  return condition ~= nil and condition.status == value
end

local function describe(condition, fallback)
  if condition ~= nil and condition.message ~= nil and condition.message ~= "" then
    return condition.message
  end
  return fallback
end

-- Seconds since 1970 of an RFC 3339 UTC time ("2024-05-01T12:00:00Z"), without os.time's
-- local-time reading of a date table.
local function epoch_seconds(stamp)
  if stamp == nil then
    return nil
  end
  local y, mo, d, h, mi, s = string.match(stamp, "^(%d+)-(%d+)-(%d+)T(%d+):(%d+):(%d+)")
  if y == nil then
    return nil
  end
  y, mo, d = tonumber(y), tonumber(mo), tonumber(d)
  if mo <= 2 then
    y = y - 1
  end
  local era = math.floor(y / 400)
  local year_of_era = y - era * 400
  local month_index = (mo + 9) % 12
  local day_of_year = math.floor((153 * month_index + 2) / 5) + d - 1
  local day_of_era = year_of_era * 365 + math.floor(year_of_era / 4)
    - math.floor(year_of_era / 100) + day_of_year
  local days = era * 146097 + day_of_era - 719468
  return days * 86400 + tonumber(h) * 3600 + tonumber(mi) * 60 + tonumber(s)
end

local function false_for_long(condition)
  if not is(condition, "False") or os == nil or os.time == nil then
    return false
  end
  local since = epoch_seconds(condition.lastTransitionTime)
  return since ~= nil and os.time() - since > METRICS_GRACE_SECONDS
end

if obj.status == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to report status"
  return hs
end

local generation = obj.metadata.generation
local observed = obj.status.observedGeneration
if generation ~= nil and (observed == nil or observed < generation) then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe generation " .. tostring(generation)
  return hs
end

local c = conditions_by_type(obj.status)

if is(c.Paused, "True") and (c.Paused.reason == "PausedBySpec" or c.Paused.reason == "CircuitBreakerOpen") then
  hs.status = "Suspended"
  hs.message = c.Paused.reason .. ": " .. describe(c.Paused, "recycling is paused")
  return hs
end

if is(c.Ready, "False") and c.Ready.reason == "ReconcileFailed" then
  hs.status = "Degraded"
  hs.message = "ReconcileFailed: " .. describe(c.Ready, "the operator cannot reconcile this spec")
  return hs
end

if is(c.Paused, "True") then
  hs.status = "Degraded"
  hs.message = tostring(c.Paused.reason) .. ": " .. describe(c.Paused, "recycling is paused")
  return hs
end

if false_for_long(c.MetricsAvailable) then
  hs.status = "Degraded"
  hs.message = tostring(c.MetricsAvailable.reason) .. ": "
    .. describe(c.MetricsAvailable, "no usable metrics")
  return hs
end

if is(c.Recycling, "True") then
  hs.status = "Progressing"
  hs.message = "Recycling: " .. describe(c.Recycling, "a recycle is in flight")
  return hs
end

if is(c.Ready, "True") then
  hs.status = "Healthy"
  hs.message = describe(c.Ready, "Ready")
  if is(c.Degraded, "True") then
    hs.message = hs.message .. "; " .. describe(c.Degraded, "some pods are degraded")
  end
  return hs
end

hs.status = "Progressing"
if c.Ready == nil then
  hs.message = "Waiting for Ready: no Ready condition yet"
else
  hs.message = "Waiting for Ready: "
    .. describe(c.Ready, "Ready is " .. tostring(c.Ready.status) .. " (" .. tostring(c.Ready.reason) .. ")")
end
return hs
