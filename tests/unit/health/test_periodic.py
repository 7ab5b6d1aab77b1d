"""Healthy memory cycles of every period against the growth rules, and a leak beneath one."""

from __future__ import annotations

import numpy as np
import pytest

from infercycle.api.values import RuleKind
from infercycle.health import HealthEngine

from .helpers import GIB, MIB, key, make_policy, make_rule

WINDOW_S = 3600.0
THRESHOLD = 256 * MIB  # per hour
STEP_S = 30.0
BASE = 12 * GIB
# The rise of one cycle. A cycle no slower than the window puts a fall in every window, and
# rises fast: 2.5 thresholds' worth of an hour, so each tooth of a window climbs at 2.5x the
# threshold and one of a twentieth at 50x. A slower cycle has windows that hold nothing but one
# rising stretch, which no fit over the window can tell from a leak: there the amplitude keeps
# that stretch at 0.9x the threshold.
FAST_AMPLITUDE = 2.5 * THRESHOLD


def amplitude(period_s: float, rising_s: float) -> float:
    if period_s <= WINDOW_S:
        return FAST_AMPLITUDE
    return 0.9 * THRESHOLD * rising_s / 3600.0


LIMIT = BASE + FAST_AMPLITUDE + 3 * GIB  # the peaks stay 3 GiB under the limit
PHASES = (0.0, 0.25, 0.5, 0.75)
PERIODS = (1 / 20, 1 / 8, 1 / 4, 1 / 3, 1 / 2, 2 / 3, 3 / 4, 1.0, 1.2, 1.5, 2.0)


def leak_policy() -> object:
    return make_policy(
        make_rule(
            RuleKind.GROWTH,
            signal="memory",
            threshold=THRESHOLD,
            clear=64 * MIB,
            name="leak",
            window_s=WINDOW_S,
            sustain_s=900.0,
            sufficient=True,
            limit_signal="memory_limit",
            time_to_limit_s=7200.0,
        ),
        warmup_s=600.0,
    )


def sawtooth(t: float, period_s: float, phase: float) -> float:
    return amplitude(period_s, period_s) * ((t / period_s + phase) % 1.0)


def hump(t: float, period_s: float, phase: float) -> float:
    """A smooth cycle: a cache that fills and drains again."""
    return (
        0.5 * amplitude(period_s, period_s / 2) * (1 - np.cos(2 * np.pi * (t / period_s + phase)))
    )


@pytest.mark.parametrize("shape", [sawtooth, hump])
@pytest.mark.parametrize("period", PERIODS)
def test_a_stationary_memory_cycle_of_any_period_is_never_a_leak(
    shape: object, period: float
) -> None:
    """Every phase, with and without a known limit, for 6 hours: no window of the cycle, from
    twenty teeth to half a tooth, reads as growth."""
    period_s = period * WINDOW_S
    engine = HealthEngine(leak_policy())  # type: ignore[arg-type]
    rng = np.random.default_rng(int(period * 1000))
    pods = [
        (key(f"pod-{phase}-{limited}"), phase, limited)
        for phase in PHASES
        for limited in (True, False)
    ]
    for step in range(1, int(6 * 3600 / STEP_S)):
        t = step * STEP_S
        for pod, phase, limited in pods:
            cycle = shape(t, period_s, phase)  # type: ignore[operator]
            memory = BASE + cycle + 24 * MIB * rng.standard_normal()
            signals = {"memory": memory, "memory_limit": LIMIT if limited else None}
            engine.observe(t, pod, 0.0, signals)
        verdicts = engine.evaluate(t)
        degraded = [pod.name for pod, _, _ in pods if verdicts[pod].degraded]
        assert not degraded, f"{degraded} condemned at {t:.0f} s"


@pytest.mark.parametrize("shape", ["sawtooth", "hump"])
@pytest.mark.parametrize("period", [1.2, 1.5, 2.0])
def test_a_steep_cycle_slower_than_the_window_is_never_a_leak_once_it_has_fallen(
    shape: str, period: float
) -> None:
    """A tooth of up to two windows climbs at 1.25-2.1x the threshold (the rising half of a hump
    at 2.5-4.2x), so some windows hold nothing but one rising stretch. Once the pod has been
    seen to fall from its peak, that stretch climbs back only to where it already was: every
    pod whose first fall comes within its first window stays healthy, for 8 hours."""
    period_s = period * WINDOW_S
    engine = HealthEngine(leak_policy())  # type: ignore[arg-type]
    rng = np.random.default_rng(int(period * 100))
    falls = (0.2, 0.45, 0.7, 0.95)
    pods = [
        (key(f"pod-{f}-{limited}"), f * WINDOW_S, limited)
        for f in falls
        for limited in (True, False)
    ]
    for step in range(1, int(8 * 3600 / STEP_S)):
        t = step * STEP_S
        for pod, fall_s, limited in pods:
            turn = (t - fall_s) / period_s
            if shape == "sawtooth":
                cycle = FAST_AMPLITUDE * (turn % 1.0)
            else:
                cycle = 0.5 * FAST_AMPLITUDE * (1 + np.cos(2 * np.pi * turn))
            memory = BASE + cycle + 24 * MIB * rng.standard_normal()
            signals = {"memory": memory, "memory_limit": LIMIT if limited else None}
            engine.observe(t, pod, 0.0, signals)
        verdicts = engine.evaluate(t)
        degraded = [pod.name for pod, _, _ in pods if verdicts[pod].degraded]
        assert not degraded, f"{degraded} condemned at {t:.0f} s"


@pytest.mark.parametrize("limited", [True, False])
def test_a_leak_under_a_fast_sawtooth_still_breaches(limited: bool) -> None:
    """Teeth of 1.5 GiB every 5 minutes over a 1 GiB/h leak: the troughs rise, and the leak
    is called within two windows of its onset, or, against a limit it reaches 5 hours after
    the onset, with most of ``timeToLimit`` still left."""
    engine = HealthEngine(leak_policy())  # type: ignore[arg-type]
    rng = np.random.default_rng(11)
    onset = 2 * 3600.0
    pod = key("leaking")
    called = None
    t = 0.0
    reached = onset + 5 * 3600
    while t < reached and called is None:
        t += STEP_S
        tooth = 1.5 * GIB * ((t / 300.0) % 1.0)
        memory = BASE + tooth + GIB * max(t - onset, 0.0) / 3600 + 24 * MIB * rng.standard_normal()
        limit = BASE + 1.5 * GIB + 5 * GIB if limited else None
        engine.observe(t, pod, 0.0, {"memory": memory, "memory_limit": limit})
        if engine.evaluate(t)[pod].degraded:
            called = t
    assert called is not None
    assert called > onset
    if limited:
        assert reached - called >= 0.8 * 7200
    else:
        assert called < onset + 2 * 3600


def compressed_policy() -> object:
    """The end-to-end fleet's growth rule: a one-minute window on a 2 s cycle."""
    return make_policy(
        make_rule(
            RuleKind.GROWTH,
            signal="memory",
            threshold=50 * GIB,
            clear=10 * GIB,
            name="leak",
            window_s=60.0,
            sustain_s=10.0,
            sufficient=True,
            limit_signal="memory_limit",
            time_to_limit_s=60.0,
        ),
        warmup_s=10.0,
        stale_after_s=20.0,
    )


@pytest.mark.parametrize("period_s", [12.0, 20.0, 30.0, 40.0, 50.0, 60.0, 72.0, 90.0])
def test_a_sawtooth_on_a_compressed_clock_is_never_a_leak(period_s: float) -> None:
    """A one-minute window and a 2 s cycle, as the end-to-end fleet runs: teeth of 2 GiB
    from a fifth of the window to one and a half climb at 1.6-12x the 50 GiB/h threshold.
    The pods' first fall comes within their first window (before it, one rising stretch
    is all there is to judge)."""
    engine = HealthEngine(compressed_policy())  # type: ignore[arg-type]
    rng = np.random.default_rng(int(period_s))
    pods = [
        (key(f"pod-{phase}-{limited}"), phase, limited)
        for phase in PHASES
        for limited in (True, False)
    ]
    for step in range(1, 300):
        t = step * 2.0
        for pod, phase, limited in pods:
            turn = (t - 20.0 - 40.0 * phase) / period_s  # the first fall 20-50 s in
            memory = BASE + 2 * GIB * (turn % 1.0) + 24 * MIB * rng.standard_normal()
            limit = BASE + 7 * GIB if limited else None
            engine.observe(t, pod, 0.0, {"memory": memory, "memory_limit": limit})
        verdicts = engine.evaluate(t)
        degraded = [pod.name for pod, _, _ in pods if verdicts[pod].degraded]
        assert not degraded, f"{degraded} condemned at {t:.0f} s"


@pytest.mark.parametrize("switch_s", [4.0, 9.0, 14.0, 19.0])
def test_flat_ground_then_a_sawtooth_of_half_the_window_is_never_a_leak(switch_s: float) -> None:
    """As the end-to-end calm fleet turns a flat pod into a collector: teeth of 2 GiB over
    half the window (4.8x the threshold), joined at six points of a tooth. Every window
    past the switch holds a fall, so the flat ground before it never reads as a leak's
    start."""
    engine = HealthEngine(compressed_policy())  # type: ignore[arg-type]
    rng = np.random.default_rng(int(switch_s))
    pods = [(key(f"pod-{phase}"), phase) for phase in (0.0, 0.2, 0.4, 0.6, 0.8, 0.95)]
    for step in range(1, 120):
        t = step * 2.0
        for pod, phase in pods:
            tooth = 2 * GIB * ((t / 30.0 + phase) % 1.0) if t >= switch_s else 0.0
            memory = BASE + tooth + 24 * MIB * rng.standard_normal()
            engine.observe(t, pod, 0.0, {"memory": memory, "memory_limit": None})
        verdicts = engine.evaluate(t)
        degraded = [pod.name for pod, _ in pods if verdicts[pod].degraded]
        assert not degraded, f"{degraded} condemned at {t:.0f} s"


def test_a_lone_spike_before_a_leak_does_not_hide_it() -> None:
    """A scrape that read 4 GiB too high just after the onset is no level the process held."""
    engine = HealthEngine(leak_policy())  # type: ignore[arg-type]
    rng = np.random.default_rng(12)
    onset = 2 * 3600.0
    pod = key("leaking")
    called = None
    t = 0.0
    while t < onset + 4 * 3600 and called is None:
        t += STEP_S
        memory = BASE + GIB * max(t - onset, 0.0) / 3600 + 24 * MIB * rng.standard_normal()
        if t == onset + 600:
            memory += 4 * GIB
        engine.observe(t, pod, 0.0, {"memory": memory, "memory_limit": None})
        if engine.evaluate(t)[pod].degraded:
            called = t
    assert called is not None
    assert onset + 600 < called < onset + 2 * 3600
