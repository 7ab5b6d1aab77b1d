"""Health, disruption and recycle settings: their spec form, their resolved form, and the merge.

A ``RecyclePolicy`` holds cluster-wide defaults; an ``InferenceDeployment`` overrides them field by
field. Spec models leave every field optional so that "not set" stays distinguishable from "set to
the default"; ``resolve_policy`` layers built-in defaults <- policy <- deployment and returns plain
resolved values (seconds, floats) for the decision code.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Annotated, Any, TypeVar

from pydantic import AfterValidator, Field, model_validator

from infercycle import errors
from infercycle.api.base import ApiModel
from infercycle.api.units import (
    QUANTITY_PATTERN,
    Duration,
    Quantity,
    parse_duration,
    parse_quantity,
)

_M = TypeVar("_M", bound=ApiModel)
_T = TypeVar("_T")

SIGNAL_NAME_PATTERN = r"^[a-z][a-z0-9_]{0,62}$"
RULE_NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"
PERCENT_OR_INT_PATTERN = r"^([0-9]+|[0-9]{1,3}%)$"
LIMIT_PATTERN = f"^({QUANTITY_PATTERN[1:-1]}|{SIGNAL_NAME_PATTERN[1:-1]})$"

BUILTIN_SIGNALS = (
    "cpu",
    "memory",
    "gpu_memory",
    "latency_p99",
    "kv_cache",
    "request_rate",
    "error_rate",
    "requests_running",
    "memory_limit",
    "gpu_memory_total",
)


def is_signal_name(text: str) -> bool:
    """Whether a ``limit`` names a signal (``memory_limit``) rather than a level (``24Gi``)."""
    return text[:1].isalpha()


def _check_limit(text: str) -> str:
    if not is_signal_name(text):
        parse_quantity(text)
    elif not re.fullmatch(SIGNAL_NAME_PATTERN, text):
        msg = (
            f'{text!r} is neither a level such as "24Gi" nor a signal name such as '
            '"memory_limit" (lower case letters, digits and underscores)'
        )
        raise ValueError(msg)
    return text


LimitRef = Annotated[
    str,
    Field(max_length=63, json_schema_extra={"pattern": LIMIT_PATTERN}),
    AfterValidator(_check_limit),
]


class RuleKind(StrEnum):
    """How a rule judges a signal."""

    ABOVE = "above"
    BELOW = "below"
    GROWTH = "growth"
    BASELINE = "baseline"
    OUTLIER = "outlier"


class SignalRuleSpec(ApiModel):
    """One rule on one signal, keyed by ``name``: an override names the rule it changes."""

    name: Annotated[str, Field(max_length=63, json_schema_extra={"pattern": RULE_NAME_PATTERN})]
    signal: Annotated[
        str | None,
        Field(
            default=None,
            max_length=63,
            json_schema_extra={"pattern": SIGNAL_NAME_PATTERN},
            description="Signal judged by the rule (cpu, memory, gpu_memory, latency_p99, "
            "kv_cache, request_rate, error_rate, or a custom signal with a query).",
        ),
    ] = None
    kind: Annotated[
        RuleKind | None,
        Field(
            default=None,
            description="above/below: every sample in the window beyond the threshold; growth: "
            "robust slope over the window, per hour; baseline: ratio to the pod's own early "
            "value; outlier: ratio to the fleet median at the same time.",
        ),
    ] = None
    threshold: Annotated[
        Quantity | None,
        Field(
            default=None,
            description="Breach level. Units: the signal's (bytes, seconds, cores, 0..1); per "
            'hour for growth ("256Mi" = 256 MiB/h); a ratio for baseline and outlier ("1.8").',
        ),
    ] = None
    clear: Annotated[
        Quantity | None,
        Field(
            default=None,
            description="Hysteresis: once breached, the rule clears only past this level, on the "
            "healthy side of the threshold. Defaults to the threshold.",
        ),
    ] = None
    window: Annotated[
        Duration | None,
        Field(
            default=None,
            description="Sustain window (above/below/baseline/outlier) or fit window (growth).",
        ),
    ] = None
    sustain: Annotated[
        Duration | None,
        Field(default=None, description="growth only: how long the slope must stay breached."),
    ] = None
    sufficient: Annotated[
        bool | None,
        Field(default=None, description="This rule alone condemns a pod, whatever the quorum."),
    ] = None
    requires_traffic: Annotated[
        bool | None,
        Field(
            default=None,
            description="Count this rule only while the pod serves at least minRequestRate.",
        ),
    ] = None
    limit: Annotated[
        LimitRef | None,
        Field(
            default=None,
            description='growth only: level the signal must not reach, either fixed ("24Gi") '
            "or the name of a signal whose latest value is each pod's own limit "
            '("memory_limit"). A pod with a known limit is judged by time to limit instead '
            "of by `threshold`; a pod without one (no sample of the limit signal yet) by "
            "`threshold`.",
        ),
    ] = None
    time_to_limit: Annotated[
        Duration | None,
        Field(
            default=None,
            description="growth only: breach when the fitted trend reaches `limit` within this.",
        ),
    ] = None
    baseline_window: Annotated[
        Duration | None,
        Field(
            default=None,
            description="baseline only: length of the reference period right after warm-up.",
        ),
    ] = None
    min_fleet: Annotated[
        int | None,
        Field(default=None, ge=2, le=10000, description="outlier only: pods with data needed."),
    ] = None
    enabled: Annotated[
        bool | None, Field(default=None, description="false switches an inherited rule off.")
    ] = None


class HealthSpec(ApiModel):
    """When a pod counts as degraded."""

    quorum: Annotated[
        int | None,
        Field(default=None, ge=1, le=16, description="Distinct signals that must breach at once."),
    ] = None
    warmup: Annotated[
        Duration | None,
        Field(default=None, description="Grace period after a pod starts: nothing breaches."),
    ] = None
    min_request_rate: Annotated[
        Quantity | None,
        Field(
            default=None,
            description="Requests/s a pod must serve before traffic-dependent rules count.",
        ),
    ] = None
    stale_after: Annotated[
        Duration | None,
        Field(default=None, description="Samples older than this are no data, never a breach."),
    ] = None
    queries: Annotated[
        dict[str, Annotated[str, Field(max_length=4096)]] | None,
        Field(
            default=None,
            max_length=32,
            description="PromQL per signal, returning one series per (namespace, pod). "
            "Overrides a built-in signal's query or defines a custom signal.",
        ),
    ] = None
    rules: Annotated[
        list[SignalRuleSpec] | None,
        Field(default=None, max_length=32, description="Rules keyed by name."),
    ] = None

    @model_validator(mode="after")
    def _unique_rule_names(self) -> HealthSpec:
        names = [rule.name for rule in self.rules or ()]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            msg = f"health.rules: rule names must be unique, repeated: {', '.join(duplicates)}"
            raise ValueError(msg)
        return self


IntOrPercent = Annotated[
    int | str,
    Field(json_schema_extra={"x-kubernetes-int-or-string": True}),
]


class DisruptionSpec(ApiModel):
    """How much recycling the fleet tolerates."""

    max_unavailable: Annotated[
        IntOrPercent | None,
        Field(default=None, description='Pods out of service at once by recycling ("1", "25%").'),
    ] = None
    min_available: Annotated[
        IntOrPercent | None,
        Field(default=None, description="Ready pods that must remain before a recycle starts."),
    ] = None
    cooldown: Annotated[
        Duration | None,
        Field(default=None, description="Minimum time between two recycles of the same pod."),
    ] = None
    max_recycles_per_hour: Annotated[
        int | None,
        Field(default=None, ge=0, le=1000, description="Recycles per deployment per hour."),
    ] = None
    max_degraded_percent: Annotated[
        int | None,
        Field(
            default=None,
            ge=1,
            le=100,
            description="Circuit breaker: pause when more of the fleet than this looks degraded.",
        ),
    ] = None
    flap_window: Annotated[
        Duration | None,
        Field(
            default=None,
            description="A pod degraded again this soon after its recycle is not recycled again "
            "(restarting will not fix it); the deployment is Paused for it.",
        ),
    ] = None

    @model_validator(mode="after")
    def _percent_forms(self) -> DisruptionSpec:
        for name in ("max_unavailable", "min_available"):
            value = getattr(self, name)
            if isinstance(value, str):
                _parse_int_or_percent(value, f"disruption.{_camel(name)}")
        return self


class RecycleSpec(ApiModel):
    """Timeouts and behaviour of the recycle steps."""

    drain_timeout: Annotated[
        Duration | None,
        Field(default=None, description="Longest wait for in-flight requests to finish."),
    ] = None
    checkpoint_timeout: Annotated[
        Duration | None, Field(default=None, description="Longest wait for the agent checkpoint.")
    ] = None
    ready_timeout: Annotated[
        Duration | None,
        Field(default=None, description="Longest wait for the restarted pod to become Ready."),
    ] = None
    verify_window: Annotated[
        Duration | None,
        Field(default=None, description="Time the restarted pod has to look healthy again."),
    ] = None
    fallback_to_recreate: Annotated[
        bool | None,
        Field(
            default=None,
            description="When the agent is missing or fails, evict the pod instead (InPlace).",
        ),
    ] = None


class LabelSelectorRequirement(ApiModel):
    key: Annotated[str, Field(max_length=317)]
    operator: Annotated[
        str, Field(json_schema_extra={"enum": ["In", "NotIn", "Exists", "DoesNotExist"]})
    ]
    values: Annotated[list[Annotated[str, Field(max_length=63)]] | None, Field(max_length=64)] = (
        None
    )


class LabelSelector(ApiModel):
    """A metav1.LabelSelector."""

    match_labels: Annotated[
        dict[str, Annotated[str, Field(max_length=63)]] | None, Field(max_length=64)
    ] = None
    match_expressions: Annotated[list[LabelSelectorRequirement] | None, Field(max_length=16)] = None

    def matches(self, labels: Mapping[str, str]) -> bool:
        for key, value in (self.match_labels or {}).items():
            if labels.get(key) != value:
                return False
        for requirement in self.match_expressions or ():
            present = requirement.key in labels
            current = labels.get(requirement.key)
            values = requirement.values or []
            if requirement.operator == "In" and current not in values:
                return False
            if requirement.operator == "NotIn" and present and current in values:
                return False
            if requirement.operator == "Exists" and not present:
                return False
            if requirement.operator == "DoesNotExist" and present:
                return False
        return True


class RecyclePolicySpec(ApiModel):
    """Cluster-wide defaults, chosen by ``policyRef`` or by selectors."""

    namespace_selector: Annotated[
        LabelSelector | None,
        Field(default=None, description="Namespaces (by their labels) this policy applies to."),
    ] = None
    selector: Annotated[
        LabelSelector | None,
        Field(default=None, description="InferenceDeployments (by labels) this policy applies to."),
    ] = None
    priority: Annotated[
        int | None,
        Field(default=None, ge=0, le=1000, description="Highest wins when several policies match."),
    ] = None
    health: HealthSpec | None = None
    disruption: DisruptionSpec | None = None
    recycle: RecycleSpec | None = None
    dry_run: Annotated[
        bool | None, Field(default=None, description="Decide and report, never act.")
    ] = None


# ---------------------------------------------------------------------------------------------
# Resolved form: what the decision code reads. Plain frozen dataclasses, numbers in SI units.


@dataclass(frozen=True, slots=True)
class Rule:
    name: str
    signal: str
    kind: RuleKind
    threshold: float
    clear: float
    window_s: float
    sustain_s: float = 0.0
    sufficient: bool = False
    requires_traffic: bool = False
    limit: float | None = None
    limit_signal: str | None = None
    time_to_limit_s: float | None = None
    baseline_window_s: float = 600.0
    min_fleet: int = 3

    @property
    def judges_time_to_limit(self) -> bool:
        """A growth rule with a limit (fixed or per pod) and a horizon to reach it."""
        return self.time_to_limit_s is not None and (
            self.limit is not None or self.limit_signal is not None
        )

    @property
    def breaches_upward(self) -> bool:
        return self.kind is not RuleKind.BELOW

    def describe(self) -> str:
        """A short human form such as ``memory growth > 256Mi/h over 1h``."""
        from infercycle.api.display import describe_rule  # noqa: PLC0415 - keeps units local

        return describe_rule(self)


@dataclass(frozen=True, slots=True)
class HealthPolicy:
    rules: tuple[Rule, ...]
    quorum: int = 2
    warmup_s: float = 600.0
    min_request_rate: float = 0.1
    stale_after_s: float = 120.0
    queries: Mapping[str, str] = field(default_factory=dict)

    @property
    def signals(self) -> tuple[str, ...]:
        """Every signal a rule reads (its own and its limit signal), plus request_rate
        (traffic gating needs it)."""
        seen = dict.fromkeys(rule.signal for rule in self.rules)
        seen.update(dict.fromkeys(r.limit_signal for r in self.rules if r.limit_signal))
        seen.setdefault("request_rate", None)
        return tuple(seen)

    @property
    def longest_window_s(self) -> float:
        longest = max(
            [max(rule.window_s, rule.sustain_s + rule.window_s) for rule in self.rules] or [0.0]
        )
        return max(longest, self.warmup_s)


@dataclass(frozen=True, slots=True)
class DisruptionPolicy:
    max_unavailable: int | str = 1
    min_available: int | str = "75%"
    cooldown_s: float = 3600.0
    max_recycles_per_hour: int = 4
    max_degraded_percent: int = 50
    flap_window_s: float = 1800.0

    def max_unavailable_for(self, replicas: int) -> int:
        return _scale(self.max_unavailable, replicas, round_up=False, floor=1)

    def min_available_for(self, replicas: int) -> int:
        return _scale(self.min_available, replicas, round_up=True, floor=0)


@dataclass(frozen=True, slots=True)
class RecycleTimings:
    drain_timeout_s: float = 120.0
    checkpoint_timeout_s: float = 60.0
    ready_timeout_s: float = 600.0
    verify_window_s: float = 900.0
    fallback_to_recreate: bool = True


@dataclass(frozen=True, slots=True)
class EffectivePolicy:
    health: HealthPolicy
    disruption: DisruptionPolicy
    recycle: RecycleTimings
    dry_run: bool = False
    sources: tuple[str, ...] = ("built-in defaults",)


PolicyError = errors.PolicyError


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def _parse_int_or_percent(value: str, where: str) -> tuple[int, bool]:
    text = value.strip()
    if text.endswith("%") and text[:-1].isdigit() and int(text[:-1]) <= 100:
        return int(text[:-1]), True
    if text.isdigit():
        return int(text), False
    msg = f'{where}: {value!r} is neither a count nor a percentage; write "2" or "25%"'
    raise ValueError(msg)


def _scale(value: int | str, replicas: int, *, round_up: bool, floor: int) -> int:
    if isinstance(value, int):
        return max(value, floor)
    number, is_percent = _parse_int_or_percent(value, "disruption")
    if not is_percent:
        return max(number, floor)
    scaled = number * replicas
    result = -(-scaled // 100) if round_up else scaled // 100
    return max(result, floor)


# ---------------------------------------------------------------------------------------------
# Merge: built-in defaults <- RecyclePolicy <- InferenceDeployment, field by field.


def merge_health(base: HealthSpec | None, override: HealthSpec | None) -> HealthSpec | None:
    if base is None or override is None:
        return override or base
    merged: dict[str, Any] = {
        name: getattr(override, name) if name in override.model_fields_set else getattr(base, name)
        for name in HealthSpec.model_fields
        if name not in ("queries", "rules")
    }
    merged["queries"] = {**(base.queries or {}), **(override.queries or {})} or None
    merged["rules"] = _merge_rules(base.rules or [], override.rules or []) or None
    return HealthSpec.model_validate(merged)


def _merge_rules(
    base: Iterable[SignalRuleSpec], override: Iterable[SignalRuleSpec]
) -> list[SignalRuleSpec]:
    by_name = {rule.name: rule for rule in base}
    for rule in override:
        by_name[rule.name] = _overlay(by_name.get(rule.name), rule) or rule
    return list(by_name.values())


def _overlay(base: _M | None, override: _M | None) -> _M | None:
    """Fields set in ``override`` win; others come from ``base``."""
    if base is None or override is None:
        return override or base
    values = {name: getattr(base, name) for name in base.model_fields_set}
    values.update({name: getattr(override, name) for name in override.model_fields_set})
    return type(base).model_validate(values)


def merge_policy_specs(*layers: RecyclePolicySpec | None) -> RecyclePolicySpec:
    """Later layers override earlier ones, field by field (rules by name, queries by signal)."""
    result = RecyclePolicySpec()
    for layer in layers:
        if layer is None:
            continue
        result = RecyclePolicySpec(
            namespace_selector=layer.namespace_selector or result.namespace_selector,
            selector=layer.selector or result.selector,
            priority=layer.priority if layer.priority is not None else result.priority,
            health=merge_health(result.health, layer.health),
            disruption=_overlay(result.disruption, layer.disruption),
            recycle=_overlay(result.recycle, layer.recycle),
            dry_run=layer.dry_run if layer.dry_run is not None else result.dry_run,
        )
    return result


def _resolve_rule(spec: SignalRuleSpec, known_signals: set[str]) -> Rule | None:
    where = f"health.rules[{spec.name}]"
    if spec.enabled is False:
        return None
    missing = [
        _camel(name)
        for name in ("signal", "kind", "threshold", "window")
        if getattr(spec, name) is None
    ]
    if missing:
        msg = (
            f"{where}: missing {', '.join(missing)}; a rule that is not inherited from a "
            "RecyclePolicy must set signal, kind, threshold and window"
        )
        raise PolicyError(msg)
    assert spec.signal is not None
    assert spec.kind is not None
    assert spec.threshold is not None
    assert spec.window is not None
    if spec.signal not in known_signals:
        msg = (
            f"{where}.signal: {spec.signal!r} has no query; use one of "
            f"{', '.join(sorted(known_signals))} or add health.queries.{spec.signal}"
        )
        raise PolicyError(msg)
    kind = RuleKind(spec.kind)
    threshold = parse_quantity(spec.threshold)
    clear = parse_quantity(spec.clear) if spec.clear is not None else threshold
    if kind is RuleKind.BELOW and clear < threshold:
        msg = (
            f"{where}.clear: {spec.clear} must be at or above the threshold "
            f"{spec.threshold} for a 'below' rule"
        )
        raise PolicyError(msg)
    if kind is not RuleKind.BELOW and clear > threshold:
        msg = (
            f"{where}.clear: {spec.clear} must be at or below the threshold "
            f"{spec.threshold} for a '{kind.value}' rule"
        )
        raise PolicyError(msg)
    if kind in (RuleKind.BASELINE, RuleKind.OUTLIER) and threshold <= 1:
        msg = f'{where}.threshold: a {kind.value} threshold is a ratio above 1, such as "1.5"'
        raise PolicyError(msg)
    if (spec.limit is None) != (spec.time_to_limit is None):
        msg = f"{where}: limit and timeToLimit go together; set both or neither"
        raise PolicyError(msg)
    limit: float | None = None
    limit_signal: str | None = None
    if spec.limit is not None:
        if kind is not RuleKind.GROWTH:
            msg = f"{where}.limit: only a growth rule has a limit; remove limit and timeToLimit"
            raise PolicyError(msg)
        if is_signal_name(spec.limit):
            limit_signal = spec.limit
            if limit_signal not in known_signals:
                msg = (
                    f"{where}.limit: signal {limit_signal!r} has no query; add "
                    f'health.queries.{limit_signal} or give a level such as "24Gi"'
                )
                raise PolicyError(msg)
        else:
            limit = parse_quantity(spec.limit)
    return Rule(
        name=spec.name,
        signal=spec.signal,
        kind=kind,
        threshold=threshold,
        clear=clear,
        window_s=parse_duration(spec.window),
        sustain_s=parse_duration(spec.sustain) if spec.sustain else 0.0,
        sufficient=bool(spec.sufficient),
        requires_traffic=bool(spec.requires_traffic),
        limit=limit,
        limit_signal=limit_signal,
        time_to_limit_s=parse_duration(spec.time_to_limit) if spec.time_to_limit else None,
        baseline_window_s=parse_duration(spec.baseline_window) if spec.baseline_window else 600.0,
        min_fleet=spec.min_fleet or 3,
    )


def resolve_policy(
    *layers: RecyclePolicySpec | None, sources: tuple[str, ...] = ()
) -> EffectivePolicy:
    """Merge the layers over the built-in defaults and resolve every string to a number."""
    from infercycle.api.defaults import DEFAULT_POLICY_SPEC  # noqa: PLC0415 - avoids a cycle

    spec = merge_policy_specs(DEFAULT_POLICY_SPEC, *layers)
    health = spec.health or HealthSpec()
    queries = dict(health.queries or {})
    known = set(BUILTIN_SIGNALS) | set(queries)
    rules = tuple(
        rule for rule in (_resolve_rule(r, known) for r in health.rules or ()) if rule is not None
    )
    quorum = health.quorum or 2
    distinct = len({rule.signal for rule in rules if not rule.sufficient})
    if quorum > max(distinct, 1) and not any(rule.sufficient for rule in rules):
        msg = (
            f"health.quorum: {quorum} distinct signals can never breach at once with rules on "
            f"only {distinct} signals; lower the quorum or add rules"
        )
        raise PolicyError(msg)
    disruption = spec.disruption or DisruptionSpec()
    recycle = spec.recycle or RecycleSpec()
    defaults_d = DisruptionPolicy()
    defaults_r = RecycleTimings()
    return EffectivePolicy(
        health=HealthPolicy(
            rules=rules,
            quorum=quorum,
            warmup_s=parse_duration(health.warmup) if health.warmup else 600.0,
            min_request_rate=(
                parse_quantity(health.min_request_rate) if health.min_request_rate else 0.1
            ),
            stale_after_s=parse_duration(health.stale_after) if health.stale_after else 120.0,
            queries=queries,
        ),
        disruption=DisruptionPolicy(
            max_unavailable=_int_or_percent(disruption.max_unavailable, defaults_d.max_unavailable),
            min_available=_int_or_percent(disruption.min_available, defaults_d.min_available),
            cooldown_s=_seconds(disruption.cooldown, defaults_d.cooldown_s),
            max_recycles_per_hour=_pick(
                disruption.max_recycles_per_hour, defaults_d.max_recycles_per_hour
            ),
            max_degraded_percent=_pick(
                disruption.max_degraded_percent, defaults_d.max_degraded_percent
            ),
            flap_window_s=_seconds(disruption.flap_window, defaults_d.flap_window_s),
        ),
        recycle=RecycleTimings(
            drain_timeout_s=_seconds(recycle.drain_timeout, defaults_r.drain_timeout_s),
            checkpoint_timeout_s=_seconds(
                recycle.checkpoint_timeout, defaults_r.checkpoint_timeout_s
            ),
            ready_timeout_s=_seconds(recycle.ready_timeout, defaults_r.ready_timeout_s),
            verify_window_s=_seconds(recycle.verify_window, defaults_r.verify_window_s),
            fallback_to_recreate=_pick(
                recycle.fallback_to_recreate, defaults_r.fallback_to_recreate
            ),
        ),
        dry_run=bool(spec.dry_run),
        sources=("built-in defaults", *sources),
    )


def _seconds(value: str | None, default: float) -> float:
    return parse_duration(value) if value is not None else default


def _pick(value: _T | None, default: _T) -> _T:
    return value if value is not None else default


def _int_or_percent(value: int | str | None, default: int | str) -> int | str:
    if value is None:
        return default
    if isinstance(value, str):
        number, is_percent = _parse_int_or_percent(value, "disruption")
        return value.strip() if is_percent else number
    return value
