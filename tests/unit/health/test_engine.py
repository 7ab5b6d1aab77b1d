"""Pod lifecycle, bounded memory, policy changes and backfill."""

from __future__ import annotations

import dataclasses
import gc
import tracemalloc

import numpy as np
import pytest

from infercycle.api.resolver import resolve_policy
from infercycle.api.values import RuleKind
from infercycle.health import HealthEngine, PodKey
from infercycle.health.history import MAX_COLUMNS, CycleStore

from .helpers import GIB, MIB, Run, constant, key, make_policy, make_rule, state_of

ABOVE = make_rule(RuleKind.ABOVE, threshold=2.0, window_s=300)


def test_a_new_uid_under_the_same_name_is_a_fresh_pod() -> None:
    run = Run(make_policy(ABOVE, warmup_s=120))
    old = key("pod-0", "uid-1")
    run.advance(900, {old: constant(cpu=3.0)})
    assert run.history[-1][1][old].degraded
    new = key("pod-0", "uid-2")
    verdicts = run.advance(60, {new: constant(cpu=3.0)})
    assert set(verdicts) == {new}
    assert not verdicts[new].degraded
    assert verdicts[new].warming_up
    assert state_of(verdicts[new], "rule") == "warming-up"


def test_retain_forgets_pods_that_went_away() -> None:
    run = Run(make_policy(ABOVE))
    pods = {key(f"pod-{n}"): constant(cpu=1.0) for n in range(4)}
    run.advance(120, pods)
    run.engine.retain([key("pod-1"), key("pod-3")])
    assert set(run.engine.evaluate(run.t)) == {key("pod-1"), key("pod-3")}


def test_pods_unseen_longer_than_the_longest_window_are_dropped() -> None:
    run = Run(make_policy(ABOVE))
    run.advance(300, {key("gone"): constant(cpu=1.0), key("stays"): constant(cpu=1.0)})
    verdicts = run.advance(200, {key("stays"): constant(cpu=1.0)})
    assert key("gone") in verdicts  # within the window it is still known, without fresh data
    assert not verdicts[key("gone")].has_data
    verdicts = run.advance(300, {key("stays"): constant(cpu=1.0)})
    assert set(verdicts) == {key("stays")}


def test_history_is_bounded_by_the_longest_window() -> None:
    policy = resolve_policy().health
    store = CycleStore(policy.signals, policy.longest_window_s)
    for cycle in range(5000):
        store.column_for(cycle * 15.0)
    assert store.capacity * 15.0 >= policy.longest_window_s
    assert store.capacity * 15.0 < policy.longest_window_s * 1.3
    kept = store.times[~np.isnan(store.times)]
    assert len(kept) == store.capacity
    assert kept.max() == 4999 * 15.0


def test_ring_adapts_to_the_cycle_step() -> None:
    store = CycleStore(["cpu"], history_s=3600)
    for cycle in range(400):
        store.column_for(cycle * 60.0)
    assert store.step() == 60.0
    assert store.capacity < 100  # 1 h at 60 s, not the 15 s guess
    window = store.window(399 * 60.0 - 3600, 399 * 60.0)
    assert len(window) == 60
    for cycle in range(400, 2000):
        store.column_for(cycle * 5.0 + 24_000)
    assert store.capacity >= 3600 / 5.0
    assert store.capacity <= MAX_COLUMNS


def test_memory_stays_flat_as_pods_churn() -> None:
    policy = resolve_policy().health
    engine = HealthEngine(policy)
    started: dict[PodKey, float] = {}
    generation = [0] * 20

    def cycle(t: float) -> None:
        for slot in range(20):
            if t % 1800 == 0 and slot % 4 == int(t // 1800) % 4:
                generation[slot] += 1  # a quarter of the fleet restarts every half hour
            pod = PodKey(f"pod-{slot}", f"uid-{generation[slot]}")
            started.setdefault(pod, t)
            engine.observe(t, pod, started[pod], {"cpu": 1.0 + slot / 10, "memory": 8 * GIB})
        engine.evaluate(t)

    def held_bytes() -> int:
        store = engine._store
        return sum(matrix.nbytes for matrix in store.values.values()) + store.times.nbytes

    t = 0.0
    for _ in range(3 * 60):  # 3 h at 60 s: the ring is full, every slot restarted
        t += 60
        cycle(t)
    held = held_bytes()
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    for _ in range(3 * 60):  # 3 more hours, six more rounds of restarts
        t += 60
        cycle(t)
    gc.collect()
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    assert held_bytes() == held
    grown = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
    assert grown < 256 * 1024, f"engine grew by {grown} bytes while pods churned"
    assert len(engine.pods) == 20
    assert engine._allocated <= 20  # rows of pods that went away are reused


def test_set_policy_keeps_the_history() -> None:
    run = Run(make_policy(ABOVE))
    run.advance(900, {key("pod"): constant(cpu=1.5)})
    assert not run.history[-1][1][key("pod")].degraded
    stricter = dataclasses.replace(ABOVE, threshold=1.0, clear=1.0)
    run.engine.set_policy(make_policy(stricter))
    verdict = run.engine.evaluate(run.t)[key("pod")]
    assert verdict.degraded, "the samples already held are judged by the new rule at once"


def test_backfill_restores_what_live_observation_knew() -> None:
    rule = make_rule(
        RuleKind.GROWTH,
        signal="memory",
        threshold=256 * MIB,
        clear=64 * MIB,
        name="memory-leak",
        window_s=3600,
        sustain_s=900,
    )
    policy = make_policy(rule)
    pod = key("leaky")
    live = Run(policy, step_s=30)
    live.advance(2.5 * 3600, {pod: lambda t: {"memory": 10 * GIB + GIB * t / 3600}})
    assert live.history[-1][1][pod].degraded
    restarted = HealthEngine(policy)
    points = [(t, 10 * GIB + GIB * t / 3600) for t in np.arange(30.0, 2.5 * 3600 + 1, 30.0)]
    restarted.observe_series(pod, 30.0, "memory", points)
    restarted.observe_series(pod, 30.0, "unknown_signal", points)
    verdict = restarted.evaluate(2.5 * 3600)[pod]
    assert verdict.degraded, "the breach start is recovered from the backfilled history"
    assert verdict.reasons[0].observed == pytest.approx(
        live.history[-1][1][pod].reasons[0].observed, rel=0.01
    )
    # and live cycles continue on the same columns
    restarted.observe(2.5 * 3600 + 30, pod, 30.0, {"memory": 10 * GIB + GIB * 2.51})
    assert restarted.evaluate(2.5 * 3600 + 30)[pod].degraded


def test_backfill_of_a_short_history_does_not_invent_a_sustained_breach() -> None:
    rule = make_rule(
        RuleKind.GROWTH,
        signal="memory",
        threshold=256 * MIB,
        name="memory-leak",
        window_s=3600,
        sustain_s=900,
    )
    engine = HealthEngine(make_policy(rule))
    pod = key("new")
    points = [(t, 10 * GIB + GIB * t / 3600) for t in np.arange(0.0, 3300, 30.0)]
    engine.observe_series(pod, 0.0, "memory", points)
    assert not engine.evaluate(3300)[pod].degraded


def test_unchanged_verdicts_are_handed_out_again() -> None:
    run = Run(make_policy(ABOVE))
    pod = key("steady")
    first = run.advance(300, {pod: constant(cpu=1.0)})[pod]
    second = run.advance(15, {pod: constant(cpu=1.2)})[pod]
    assert second is first
    observed = [e.observed for e in second.evaluations]
    assert observed == [pytest.approx(1.0)]  # the latest cycle's explanation
    run.engine.retain([])
    assert second.evaluations == ()


def test_a_second_observation_in_a_cycle_replaces_the_first() -> None:
    engine = HealthEngine(make_policy(ABOVE))
    pod = key("twice")
    for cycle in range(1, 30):
        t = cycle * 15.0
        engine.observe(t, pod, 0.0, {"cpu": 9.0})
        engine.observe(t, pod, 0.0, {"cpu": 1.0})
    verdict = engine.evaluate(29 * 15.0)[pod]
    assert not verdict.degraded
    assert verdict.evaluations[0].observed == pytest.approx(1.0)
