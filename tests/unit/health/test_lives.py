"""Hung engines, restarts and lives of the process, time to limit, and saturation."""

from __future__ import annotations

import numpy as np
import pytest

from infercycle.api.resolver import PolicyError, resolve_policy
from infercycle.api.spec import RecyclePolicySpec
from infercycle.api.values import RuleKind
from infercycle.health import ContainerRestarts, HealthEngine
from infercycle.health.engine import _counter_rise

from .helpers import GIB, MIB, Run, key, make_policy, make_rule, state_of

POD = key("pod-0")


def stall_rule(window_s: float = 180.0) -> object:
    return make_rule(
        RuleKind.STALL,
        signal="progress",
        threshold=0.0,
        name="stall",
        window_s=window_s,
        pending_signal="requests_pending",
        sufficient=True,
    )


# -- stall ------------------------------------------------------------------------------------


def test_a_hung_engine_with_work_pending_is_flagged_within_five_minutes() -> None:
    run = Run(make_policy(stall_rule()), step_s=30)  # type: ignore[arg-type]
    hang_at = 1800.0

    def engine(t: float) -> dict[str, float | None]:
        done = 500.0 * min(t, hang_at)
        return {"progress": done, "requests_pending": 12.0, "request_rate": 0.0}

    run.advance(3600, {POD: engine})
    first = run.first_degraded(POD)
    assert first is not None
    assert hang_at < first <= hang_at + 300


def test_an_idle_engine_with_nothing_pending_is_not_stalled() -> None:
    run = Run(make_policy(stall_rule()), step_s=30)  # type: ignore[arg-type]
    verdict = run.advance(
        3600, {POD: lambda t: {"progress": 1e6, "requests_pending": 0.0, "request_rate": 0.0}}
    )[POD]
    assert not run.ever_degraded(POD)
    assert state_of(verdict, "stall") == "ok"


def test_a_slow_engine_that_still_progresses_is_not_stalled() -> None:
    run = Run(make_policy(stall_rule()), step_s=30)  # type: ignore[arg-type]
    run.advance(
        3600, {POD: lambda t: {"progress": 3.0 * t, "requests_pending": 80.0, "request_rate": 0.0}}
    )
    assert not run.ever_degraded(POD)


def test_a_pause_shorter_than_the_window_is_not_a_stall() -> None:
    run = Run(make_policy(stall_rule()), step_s=30)  # type: ignore[arg-type]

    def paused(t: float) -> dict[str, float | None]:
        done = 100.0 * t if t < 1800 else 100.0 * 1800 + 100.0 * max(t - 1890, 0.0)
        return {"progress": done, "requests_pending": 300.0}

    run.advance(3600, {POD: paused})
    assert not run.ever_degraded(POD)


def test_without_a_pending_signal_a_stall_rule_has_no_data() -> None:
    run = Run(make_policy(stall_rule()), step_s=30)  # type: ignore[arg-type]
    verdict = run.advance(600, {POD: lambda t: {"progress": 5.0}})[POD]
    assert not verdict.degraded
    evaluation = next(e for e in verdict.evaluations if e.rule.name == "stall")
    assert evaluation.state.value == "no-data"
    assert "requests_pending" in evaluation.detail


# -- restarts and lives -----------------------------------------------------------------------


def oom_policy(threshold: float = 2.0) -> object:
    return make_policy(
        make_rule(
            RuleKind.INCREASE,
            signal="oom_kills",
            threshold=threshold,
            name="oom",
            window_s=86400.0,
            sufficient=True,
        ),
        make_rule(RuleKind.ABOVE, signal="cpu", threshold=100.0, name="cpu"),
    )


def drive(
    engine: HealthEngine, until: float, restarts: dict[float, ContainerRestarts], step: float = 30
) -> list[tuple[float, bool]]:
    """Cycles of one pod to ``until``; ``restarts`` maps a time to the status from then on."""
    status = ContainerRestarts(0)
    seen = []
    t = 0.0
    while t < until:
        t += step
        for at in sorted(restarts):
            if at <= t:
                status = restarts[at]
        engine.observe(t, POD, 0.0, {"cpu": 1.0}, status)
        seen.append((t, engine.evaluate(t)[POD].degraded))
    return seen


def test_two_oom_kills_within_the_window_condemn_a_pod_one_does_not() -> None:
    engine = HealthEngine(oom_policy())  # type: ignore[arg-type]
    one = drive(engine, 3600, {1200: ContainerRestarts(1, "OOMKilled", 1190.0)})
    assert not any(degraded for _, degraded in one)
    engine = HealthEngine(oom_policy())  # type: ignore[arg-type]
    two = drive(
        engine,
        7200,
        {
            1200: ContainerRestarts(1, "OOMKilled", 1190.0),
            4800: ContainerRestarts(2, "OOMKilled", 4790.0),
        },
    )
    first = next(t for t, degraded in two if degraded)
    assert 4800 <= first <= 4830


def test_restarts_for_other_reasons_are_not_oom_kills() -> None:
    engine = HealthEngine(oom_policy())  # type: ignore[arg-type]
    seen = drive(
        engine,
        7200,
        {1200: ContainerRestarts(1, "Error", 1190.0), 4800: ContainerRestarts(2, "Completed")},
    )
    assert not any(degraded for _, degraded in seen)


def test_a_pod_without_restart_information_has_no_oom_data() -> None:
    engine = HealthEngine(oom_policy())  # type: ignore[arg-type]
    engine.observe(30.0, POD, 0.0, {"cpu": 1.0})
    verdict = engine.evaluate(30.0)[POD]
    evaluation = next(e for e in verdict.evaluations if e.rule.name == "oom")
    assert evaluation.state.value == "no-data"


def test_a_restart_starts_a_new_life_with_its_own_warm_up() -> None:
    policy = make_policy(make_rule(RuleKind.ABOVE, signal="cpu", threshold=2.0), warmup_s=600)
    engine = HealthEngine(policy)
    for step in range(1, 81):
        t = step * 30.0
        restarts = ContainerRestarts(1 if t >= 1800 else 0, "Error", 1790.0)
        engine.observe(t, POD, 0.0, {"cpu": 1.0}, restarts)
        verdict = engine.evaluate(t)[POD]
        if t == 1500.0:
            assert not verdict.warming_up
        if t == 2100.0:
            assert verdict.warming_up  # 310 s into the new life
        if t == 2400.0:
            assert not verdict.warming_up


def test_a_falling_progress_counter_is_taken_for_a_restart() -> None:
    policy = make_policy(stall_rule(), warmup_s=600)  # type: ignore[arg-type]
    run = Run(policy, step_s=30)

    def restarted(t: float) -> dict[str, float | None]:
        return {"progress": 50.0 * (t if t <= 3000 else t - 3000), "requests_pending": 1.0}

    verdict = run.advance(3000, {POD: restarted})[POD]
    assert not verdict.warming_up
    verdict = run.advance(300, {POD: restarted})[POD]
    assert verdict.warming_up


def limited_leak_policy(sustain_s: float = 900.0) -> object:
    return make_policy(
        make_rule(
            RuleKind.GROWTH,
            signal="memory",
            threshold=256 * MIB,
            clear=64 * MIB,
            name="leak",
            window_s=3600.0,
            sustain_s=sustain_s,
            sufficient=True,
            limit_signal="memory_limit",
            time_to_limit_s=7200.0,
        ),
        warmup_s=600.0,
    )


def test_a_leak_that_kills_within_an_hour_is_called_within_the_first_life() -> None:
    engine = HealthEngine(limited_leak_policy())  # type: ignore[arg-type]
    rng = np.random.default_rng(3)
    # 16 GiB of headroom gone in 50 minutes: the life ends before a whole window after warm-up
    # could be fitted, so only the fit of the current regime can call it.
    rate = 16 * GIB / 3000
    life, count, called = 0.0, 0, None
    limit = 26 * GIB
    for step in range(1, 4 * 120):
        t = step * 30.0
        memory = 10 * GIB + rate * max(t - life - 150, 0.0) + 24 * MIB * rng.standard_normal()
        if memory >= limit:
            count, life = count + 1, t
            memory = 1 * GIB
        status = ContainerRestarts(count, "OOMKilled" if count else None, life or None)
        engine.observe(t, POD, 0.0, {"memory": memory, "memory_limit": limit}, status)
        if engine.evaluate(t)[POD].degraded and called is None:
            called = t
            assert count == 0  # before the first kill
    assert called is not None


@pytest.mark.parametrize("gib_per_hour", [0.5, 1.0, 3.0])
def test_a_linear_leak_is_called_at_least_0_8_of_time_to_limit_before_it(
    gib_per_hour: float,
) -> None:
    engine = HealthEngine(limited_leak_policy())  # type: ignore[arg-type]
    rng = np.random.default_rng(7)
    onset = 2 * 3600.0
    headroom = gib_per_hour * GIB * 5  # five hours from the onset to the limit
    limit = 12 * GIB + headroom
    reached = onset + 5 * 3600.0
    called = None
    t = 0.0
    while t < reached and called is None:
        t += 30.0
        grown = gib_per_hour * GIB * max(t - onset, 0.0) / 3600
        memory = 12 * GIB + grown + 24 * MIB * rng.standard_normal()
        engine.observe(t, POD, 0.0, {"memory": memory, "memory_limit": limit})
        if engine.evaluate(t)[POD].degraded:
            called = t
    assert called is not None
    assert called > onset
    assert reached - called >= 0.8 * 7200.0


def test_a_step_near_the_limit_is_not_taken_for_a_leak() -> None:
    engine = HealthEngine(limited_leak_policy())  # type: ignore[arg-type]
    rng = np.random.default_rng(11)
    limit = 16 * GIB
    for step in range(1, 8 * 120):
        t = step * 30.0
        memory = 12 * GIB + (1.5 * GIB if t > 3 * 3600 else 0.0) + 24 * MIB * rng.standard_normal()
        engine.observe(t, POD, 0.0, {"memory": memory, "memory_limit": limit})
        assert not engine.evaluate(t)[POD].degraded


# -- saturation -------------------------------------------------------------------------------


def saturation_policy() -> object:
    return make_policy(
        make_rule(
            RuleKind.SATURATION,
            signal="kv_cache",
            threshold=0.95,
            clear=0.9,
            name="saturated",
            window_s=1800.0,
            pending_signal="requests_waiting",
            sufficient=True,
        )
    )


def fleet(pinned: float, others: float, waiting: float) -> dict[object, object]:
    pods: dict[object, object] = {
        key("pinned"): lambda t: {"kv_cache": pinned, "requests_waiting": waiting}
    }
    for index in range(4):
        pods[key(f"pod-{index}")] = lambda t: {"kv_cache": others, "requests_waiting": 0.0}
    return pods


def test_a_cache_pinned_full_with_requests_waiting_is_flagged_after_its_window() -> None:
    run = Run(saturation_policy(), step_s=30)  # type: ignore[arg-type]
    run.advance(3600, fleet(0.99, 0.35, 20.0))  # type: ignore[arg-type]
    first = run.first_degraded(key("pinned"))
    assert first is not None
    assert 0.8 * 1800 <= first <= 1900  # a covered window: 80 % of its cycles
    assert not run.ever_degraded(key("pod-0"))


def test_a_full_cache_without_a_queue_is_not_saturation() -> None:
    run = Run(saturation_policy(), step_s=30)  # type: ignore[arg-type]
    run.advance(3600, fleet(0.99, 0.35, 0.0))  # type: ignore[arg-type]
    assert not run.ever_degraded(key("pinned"))


def test_a_fleet_wide_surge_that_fills_every_cache_condemns_no_pod() -> None:
    run = Run(saturation_policy(), step_s=30)  # type: ignore[arg-type]
    run.advance(3600, fleet(0.99, 0.97, 30.0))  # type: ignore[arg-type]
    assert not any(run.ever_degraded(pod) for pod in run.started)


# -- counters and the policy ------------------------------------------------------------------


def test_counter_rise_counts_across_a_reset_and_a_gap() -> None:
    values = np.array([[10.0, 12.0, np.nan, 15.0, 2.0, 4.0], [1.0, 1.0, 1.0, 1.0, 1.0, 1.0]])
    assert _counter_rise(values).tolist() == [2.0 + 3.0 + 2.0 + 2.0, 0.0]


def test_the_default_policy_has_a_sufficient_stall_rule_not_gated_by_traffic() -> None:
    health = resolve_policy().health
    stall = next(rule for rule in health.rules if rule.kind is RuleKind.STALL)
    assert stall.sufficient
    assert not stall.requires_traffic
    assert stall.window_s + 60 <= 300
    assert {"progress", "requests_pending"} <= set(health.queries)
    assert "oom_kills" not in health.queries  # the engine keeps it from pod status


def test_a_pending_signal_on_a_rule_that_reads_none_is_refused() -> None:
    spec = RecyclePolicySpec.model_validate(
        {
            "health": {
                "rules": [
                    {
                        "name": "cpu-high",
                        "signal": "cpu",
                        "kind": "above",
                        "threshold": "3",
                        "window": "5m",
                        "pending": "requests_waiting",
                    }
                ]
            }
        }
    )
    with pytest.raises(PolicyError, match=r"health.rules\[cpu-high\].pending"):
        resolve_policy(spec)


def test_a_stall_rule_clears_only_at_or_above_its_threshold() -> None:
    spec = RecyclePolicySpec.model_validate(
        {"health": {"rules": [{"name": "engine-stall", "threshold": "10", "clear": "5"}]}}
    )
    with pytest.raises(PolicyError, match=r"clear.*at or above"):
        resolve_policy(spec)


@pytest.mark.parametrize("limited", [True, False])
def test_a_leak_under_a_collector_sawtooth_is_called(limited: bool) -> None:
    engine = HealthEngine(limited_leak_policy())  # type: ignore[arg-type]
    rng = np.random.default_rng(5)
    onset, rate = 2 * 3600.0, 0.6 * GIB / 3600
    limit = 12 * GIB + 1.5 * GIB + 0.6 * GIB * 5  # the peaks reach it 5 h after the onset
    reached = onset + 5 * 3600.0
    called = None
    t = 0.0
    while t < reached and called is None:
        t += 30.0
        tooth = 1.5 * GIB * ((t / 400.0) % 1.0)
        memory = 12 * GIB + tooth + rate * max(t - onset, 0.0) + 24 * MIB * rng.standard_normal()
        signals = {"memory": memory, "memory_limit": limit if limited else None}
        engine.observe(t, POD, 0.0, signals)
        if engine.evaluate(t)[POD].degraded:
            called = t
    assert called is not None
    assert called > onset
    if limited:
        assert reached - called >= 0.8 * 7200.0


@pytest.mark.parametrize("limited", [True, False])
def test_a_collector_sawtooth_alone_is_never_a_leak(limited: bool) -> None:
    engine = HealthEngine(limited_leak_policy())  # type: ignore[arg-type]
    rng = np.random.default_rng(6)
    for step in range(1, 10 * 120):
        t = step * 30.0
        tooth = 2 * GIB * ((t / 650.0) % 1.0)
        limit = 12 * GIB + 2 * GIB + 3 * GIB if limited else None
        memory = 12 * GIB + tooth + 24 * MIB * rng.standard_normal()
        engine.observe(t, POD, 0.0, {"memory": memory, "memory_limit": limit})
        assert not engine.evaluate(t)[POD].degraded


def test_without_restart_information_a_collapse_from_near_the_limit_is_an_oom_kill() -> None:
    never = make_rule(
        RuleKind.GROWTH,
        signal="memory",
        threshold=1e18,
        name="leak",
        window_s=3600.0,
        limit_signal="memory_limit",
        time_to_limit_s=1.0,
    )
    policy = make_policy(*oom_policy().rules, never)  # type: ignore[attr-defined]
    engine = HealthEngine(policy)
    limit = 20 * GIB
    first = None
    for step in range(1, 4 * 120):
        t = step * 30.0
        life = t % 3600.0  # each life grows to the limit within the hour, then is killed
        memory = 4 * GIB + 16 * GIB * life / 3600.0
        engine.observe(t, POD, 0.0, {"memory": memory, "memory_limit": limit, "cpu": 1.0})
        if engine.evaluate(t)[POD].degraded and first is None:
            first = t
    assert first is not None
    assert 7200.0 <= first <= 7230.0  # the second kill


def test_the_newest_oom_kill_known_at_first_sight_counts() -> None:
    engine = HealthEngine(oom_policy())  # type: ignore[arg-type]
    seen = drive(
        engine,
        3600,
        {
            0: ContainerRestarts(3, "OOMKilled", -600.0),  # before the engine knew the pod
            1800: ContainerRestarts(4, "OOMKilled", 1790.0),
        },
    )
    first = next(t for t, degraded in seen if degraded)
    assert 1800 <= first <= 1830
