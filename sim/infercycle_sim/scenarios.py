"""Seeded models of vLLM pods, healthy and degrading, for tests, simulators and benchmarks.

A model is a pure function of (scenario, seed, age): ``sample`` keeps no state, so the same
call always returns the same numbers and a restart (age back to 0) is a cure. Magnitudes follow
a vLLM server on one 80 GiB GPU: ~90 % of the GPU preallocated for weights and KV cache, host
working set 10-18 GiB, p99 latency ~85 ms at moderate load, a few requests per second per pod.

Every scenario starts the same way: the model loads for one to two and a half minutes (host
memory and GPU memory ramp, CPU busy, no traffic, no latency), then the pod becomes ready and
serves, with latency and CPU elevated for the first few minutes.

Degrading scenarios and their parameters (``params``):

``leak``
    Host memory grows ``rate`` MiB/h from ``onset`` seconds.
``gpu_creep``
    GPU memory grows ``rate`` MiB/h from ``onset`` until the GPU is full.
``latency_creep``
    The published case: p99 85 ms after 1 h, 2.3x after 24 h, 3.8x after 48 h, GPU memory
    +67 % of its non-KV share and KV-cache usage rising as the prefix-cache hit rate falls.
    ``compression`` runs that timeline faster (8 = 48 h in 6 h).
``superlinear``
    A request-tracking map that is never pruned grows from ``onset``: latency grows with the
    square of its size and CPU with its 1.5th power; ``compression`` speeds it up.
``error_creep``
    The error rate creeps up from ``onset`` (+12 % per 8 h), latency with it (timeouts).

Healthy scenarios: ``healthy``; ``spikes`` (one- to three-sample spikes on every signal);
``surge`` (a plain pod, meant to be driven with :func:`surge_load` as ``fleet_load`` for the
whole fleet); ``gc_sawtooth`` (host memory sawtooth of 0.5-2 GiB every 2-12 min;
``saw_amplitude`` in bytes and ``saw_period`` in seconds set them); ``idle`` (no
traffic, so no latency); ``scrape_gaps`` (samples and single signals missing for a while);
``cleanup_spikes`` (a cleanup path adds 500 ms to p99 for 20-40 s every 5-15 min);
``transient_bump`` (host memory rises 1.5-3 GiB, stays up to an hour, then heals).

``onset_s`` is when the degradation starts (the fault appears), the reference for time to
detect; ``None`` for healthy scenarios.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

HEALTHY_SCENARIOS: tuple[str, ...] = (
    "healthy",
    "spikes",
    "surge",
    "gc_sawtooth",
    "idle",
    "scrape_gaps",
    "cleanup_spikes",
    "transient_bump",
)
DEGRADING_SCENARIOS: tuple[str, ...] = (
    "leak",
    "gpu_creep",
    "latency_creep",
    "superlinear",
    "error_creep",
)
SCENARIOS: tuple[str, ...] = HEALTHY_SCENARIOS + DEGRADING_SCENARIOS

SCENARIO_PARAMS: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        "leak": ("rate", "onset"),
        "gpu_creep": ("rate", "onset"),
        "latency_creep": ("compression",),
        "superlinear": ("onset", "compression"),
        "error_creep": ("onset", "compression"),
        "gc_sawtooth": ("saw_period", "saw_amplitude"),
    }
)
"""Parameters each scenario accepts; every model also accepts ``load_share``."""

SIGNALS: tuple[str, ...] = (
    "cpu",
    "memory",
    "gpu_memory",
    "latency_p99",
    "kv_cache",
    "request_rate",
    "error_rate",
)

MIB = float(2**20)
GIB = float(2**30)
GPU_BYTES = 80 * GIB
HOUR = 3600.0
EVENT_SLOT_S = 15.0
"""Spikes and gaps are decided per 15 s slot of age, whatever the sampling step."""

_MASK = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15


def _mix(value: int) -> int:
    """splitmix64: a fast, well-spread hash of a 64-bit integer."""
    value = (value + _GOLDEN) & _MASK
    value = ((value ^ (value >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    value = ((value ^ (value >> 27)) * 0x94D049BB133111EB) & _MASK
    return value ^ (value >> 31)


def _hash(key: int, channel: int, slot: int) -> int:
    value = (key ^ (channel * 0xD1B54A32D192ED03) ^ (slot * _GOLDEN)) & _MASK
    value = ((value ^ (value >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    value = ((value ^ (value >> 27)) * 0x94D049BB133111EB) & _MASK
    return value ^ (value >> 31)


def _uniform(key: int, channel: int, slot: int) -> float:
    return _hash(key, channel, slot) / 2.0**64


def _normal(key: int, channel: int, slot: int) -> float:
    """Approximately standard normal: four 16-bit uniforms from one hash, centred and scaled."""
    bits = _hash(key, channel, slot)
    total = (bits & 0xFFFF) + ((bits >> 16) & 0xFFFF) + ((bits >> 32) & 0xFFFF) + (bits >> 48)
    return (total / 65536.0 - 2.0) * 1.7320508


class _Channel:
    CPU, MEMORY, GPU, LATENCY, KV, RATE, ERRORS = range(1, 8)
    SPIKE, GAP, SIGNAL_GAP, SETUP = 20, 40, 41, 99


def surge_load(
    t_s: float,
    start_s: float = 2 * HOUR,
    ramp_s: float = 1200.0,
    hold_s: float = 2 * HOUR,
    peak: float = 2.5,
) -> float:
    """A fleet-wide traffic surge: 1.0, a ramp to ``peak``, a plateau, a ramp back down."""
    if t_s <= start_s:
        return 1.0
    if t_s < start_s + ramp_s:
        return 1.0 + (peak - 1.0) * (t_s - start_s) / ramp_s
    if t_s <= start_s + ramp_s + hold_s:
        return peak
    down = t_s - (start_s + ramp_s + hold_s)
    return max(1.0, peak - (peak - 1.0) * down / (ramp_s * 1.5))


def fleet_load(scenario: str, t_s: float) -> float:
    """The fleet load a scenario is meant to run under at fleet time ``t_s``."""
    return surge_load(t_s) if scenario == "surge" else 1.0


@dataclass(frozen=True, slots=True)
class PodModel:
    """One simulated pod; ``sample`` is a pure function of its age."""

    scenario: str
    seed: int
    degrading: bool
    onset_s: float | None
    params: Mapping[str, float] = field(default_factory=dict)
    _key: int = field(default=0, repr=False)

    def sample(self, age_s: float, fleet_load: float = 1.0) -> dict[str, float | None]:
        """The signals a Prometheus query would return for this pod at ``age_s``."""
        key, scenario, p = self._key, self.scenario, self.params
        second = int(age_s)
        slot = int(age_s // EVENT_SLOT_S)
        if scenario == "scrape_gaps" and self._in_event(_Channel.GAP, slot, 1 / 60, 8):
            return dict.fromkeys(SIGNALS)
        load_at = p["load_s"]
        ready_at = p["ready_s"]
        ready = age_s >= ready_at
        since_ready = age_s - ready_at
        load = 0.0 if scenario == "idle" else max(fleet_load, 0.0) * p["load_share"]
        wander = 1.0 + 0.03 * math.sin(2 * math.pi * age_s / p["wander_s"] + p["phase"])

        # Host memory: staged weights during load, a small settling growth, then flat.
        if age_s < load_at:
            memory = GIB + (p["memory"] - GIB) * age_s / load_at
        else:
            memory = p["memory"] + 256 * MIB * (1 - math.exp(-(age_s - load_at) / 2400.0))
        memory += 200 * MIB * (load - 1.0) if ready else 0.0
        memory += 24 * MIB * _normal(key, _Channel.MEMORY, second)

        # GPU memory: weights and the KV-cache pool are allocated once, then nothing moves.
        gpu_full = p["gpu_fraction"] * GPU_BYTES
        if age_s < load_at / 2:
            gpu = 0.5 * GIB
        elif age_s < ready_at:
            share = (age_s - load_at / 2) / (ready_at - load_at / 2)
            gpu = 0.5 * GIB + (gpu_full - 0.5 * GIB) * share
        else:
            gpu = gpu_full
        gpu += 4 * MIB * _normal(key, _Channel.GPU, second)

        if not ready:
            cpu = p["load_cpu"] * (1 + 0.1 * _normal(key, _Channel.CPU, second))
            return {
                "cpu": cpu,
                "memory": memory,
                "gpu_memory": gpu,
                "latency_p99": None,
                "kv_cache": 0.0,
                "request_rate": 0.0,
                "error_rate": 0.0,
            }

        warm = math.exp(-since_ready / 150.0)
        rate = p["requests"] * load * (1 - math.exp(-since_ready / 30.0))
        rate *= 1 + 0.04 * _normal(key, _Channel.RATE, second)
        load_latency = 1 + 0.3 * (load - 1) if load >= 1 else 0.85 + 0.15 * load
        latency: float | None = p["latency"] * load_latency * (1 + 1.2 * warm) * wander
        cpu = p["cpu"] * (0.4 + 0.6 * load) * (1 + 0.8 * warm)
        kv = min(p["kv"] * load**0.9, 0.98)
        errors = p["errors"]

        # Degradation.
        if scenario == "leak":
            memory += p["rate"] * MIB * max(0.0, age_s - p["onset"]) / HOUR
        elif scenario == "gpu_creep":
            grown = p["rate"] * MIB * max(0.0, age_s - p["onset"]) / HOUR
            gpu = min(gpu + grown, GPU_BYTES - 0.4 * GIB)
        elif scenario == "latency_creep":
            hours = p["compression"] * age_s / HOUR
            drift = max(0.0, hours - 1.0)
            assert latency is not None
            latency *= 1 + 0.05687 * drift + 4.17e-5 * drift * drift
            gpu += 5 * GIB * min(drift, 72.0) / 47.0
            kv = min(kv * (1 + 1.2 * min(drift / 47.0, 1.5)), 0.98)
        elif scenario == "superlinear":
            grown = p["compression"] * max(0.0, age_s - p["onset"]) / (6 * HOUR)
            assert latency is not None
            latency *= 1 + grown * grown
            cpu *= 1 + 0.8 * grown**1.5
            memory += 64 * MIB * 6 * grown
        elif scenario == "error_creep":
            grown = p["compression"] * max(0.0, age_s - p["onset"]) / (8 * HOUR)
            errors = min(errors + 0.12 * grown, 0.5)
            assert latency is not None
            latency *= 1 + grown

        # Healthy peculiarities.
        elif scenario == "gc_sawtooth":
            tooth = ((age_s + p["saw_phase"]) / p["saw_period"]) % 1.0
            memory += p["saw_amplitude"] * tooth
        elif scenario == "transient_bump":
            memory += p["bump"] * self._bump_shape(age_s)
        elif (
            scenario == "cleanup_spikes"
            and (age_s + p["saw_phase"]) % p["cleanup_period"] < p["cleanup_length"]
        ):
            assert latency is not None
            latency += 0.5
            cpu += 1.0

        latency = (
            None
            if latency is None
            else latency * (1 + 0.05 * _normal(key, _Channel.LATENCY, second))
        )
        cpu *= 1 + 0.06 * _normal(key, _Channel.CPU, second)
        kv = min(max(kv + 0.02 * _normal(key, _Channel.KV, second), 0.0), 1.0)
        errors = max(errors * (1 + 0.3 * _normal(key, _Channel.ERRORS, second)), 0.0)

        if scenario == "spikes":
            if latency is not None and self._in_event(_Channel.SPIKE, slot, 1 / 80, 3):
                latency *= 3 + 3 * _uniform(key, _Channel.SPIKE, slot)
            if self._in_event(_Channel.SPIKE + 1, slot, 1 / 80, 3):
                cpu *= 1.5 + _uniform(key, _Channel.SPIKE + 1, slot)
            if self._in_event(_Channel.SPIKE + 2, slot, 1 / 80, 3):
                memory += (0.5 + 2.5 * _uniform(key, _Channel.SPIKE + 2, slot)) * GIB
            if self._in_event(_Channel.SPIKE + 3, slot, 1 / 120, 3):
                errors += 0.05 + 0.25 * _uniform(key, _Channel.SPIKE + 3, slot)
            if self._in_event(_Channel.SPIKE + 4, slot, 1 / 120, 3):
                kv = min(kv + 0.3, 1.0)

        if load <= 0.0:
            latency, rate, errors, kv = None, 0.0, 0.0, 0.0
        result: dict[str, float | None] = {
            "cpu": max(cpu, 0.01),
            "memory": memory,
            "gpu_memory": gpu,
            "latency_p99": latency,
            "kv_cache": kv,
            "request_rate": max(rate, 0.0),
            "error_rate": min(errors, 1.0),
        }
        if scenario == "scrape_gaps":
            for index, name in enumerate(SIGNALS):
                if self._in_event(_Channel.SIGNAL_GAP + 10 * index, slot, 1 / 100, 4):
                    result[name] = None
        return result

    def _in_event(self, channel: int, slot: int, chance: float, longest: int) -> bool:
        """Whether ``slot`` falls in an event that starts with ``chance`` per slot and lasts
        one to ``longest`` slots."""
        for back in range(longest):
            bits = _hash(self._key, channel, slot - back)
            if bits / 2.0**64 < chance and (bits & 0xFF) % longest >= back:
                return True
        return False

    def _bump_shape(self, age_s: float) -> float:
        p = self.params
        t = age_s - p["bump_at"]
        rise, hold, heal = p["bump_rise"], p["bump_hold"], p["bump_heal"]
        if t <= 0:
            return 0.0
        if t < rise:
            return t / rise
        if t < rise + hold:
            return 1.0
        if t < rise + hold + heal:
            return 1.0 - (t - rise - hold) / heal
        return 0.0


def make_pod_model(scenario: str, seed: int, params: dict[str, float] | None = None) -> PodModel:
    """A pod of ``scenario``; ``seed`` draws its levels, ``params`` overrides the drawn ones."""
    if scenario not in SCENARIOS:
        msg = f"unknown scenario {scenario!r}; use one of {', '.join(SCENARIOS)}"
        raise ValueError(msg)
    given = dict(params or {})
    allowed = {*SCENARIO_PARAMS.get(scenario, ()), "load_share"}
    unknown = sorted(set(given) - allowed)
    if unknown:
        msg = (
            f"scenario {scenario!r} takes no parameter {', '.join(unknown)}; "
            f"it takes {', '.join(sorted(allowed))}"
        )
        raise ValueError(msg)
    key = _mix(seed * 1_000_003 + SCENARIOS.index(scenario))
    draws = iter(range(1, 64))

    def draw(low: float, high: float) -> float:
        return low + (high - low) * _uniform(key, _Channel.SETUP, next(draws))

    load_s = draw(60, 150)
    values: dict[str, float] = {
        "load_s": load_s,
        "ready_s": load_s + draw(20, 60),
        "memory": draw(10, 18) * GIB,
        "gpu_fraction": draw(0.88, 0.92),
        "cpu": draw(2.0, 2.6),
        "load_cpu": draw(3.0, 5.0),
        "requests": draw(2.0, 6.0),
        "latency": draw(0.078, 0.092),
        "kv": draw(0.3, 0.42),
        "errors": draw(0.0005, 0.002),
        "load_share": draw(0.9, 1.1),
        "wander_s": draw(1200, 5400),
        "phase": draw(0, 2 * math.pi),
        "saw_phase": draw(0, 3600),
        "saw_period": draw(120, 720),
        "saw_amplitude": draw(0.5, 2.0) * GIB,
        "cleanup_period": draw(300, 900),
        "cleanup_length": draw(20, 40),
        "bump": draw(1.5, 3.0) * GIB,
        "bump_at": draw(1.5, 4.0) * HOUR,
        "bump_rise": draw(600, 1200),
        "bump_hold": draw(1200, 3600),
        "bump_heal": draw(600, 1800),
    }
    onset: float | None = None
    if scenario == "leak":
        values["rate"] = draw(384, 1536)
        values["onset"] = draw(1800, 3 * HOUR)
    elif scenario == "gpu_creep":
        values["rate"] = draw(768, 2048)
        values["onset"] = draw(1800, 3 * HOUR)
    elif scenario in ("superlinear", "error_creep"):
        values["onset"] = draw(1800, 2 * HOUR)
        values["compression"] = 1.0
    elif scenario == "latency_creep":
        values["compression"] = 1.0
    values.update(given)
    if scenario in ("leak", "gpu_creep", "superlinear", "error_creep"):
        onset = values["onset"]
    elif scenario == "latency_creep":
        onset = HOUR / values["compression"]
    return PodModel(
        scenario=scenario,
        seed=seed,
        degrading=scenario in DEGRADING_SCENARIOS,
        onset_s=onset,
        params=MappingProxyType(values),
        _key=key,
    )
