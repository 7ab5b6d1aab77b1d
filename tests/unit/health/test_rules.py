"""Each rule kind, and the guards around them, on hand-made signals."""

from __future__ import annotations

import re

import pytest

from infercycle.api.values import RuleKind
from infercycle.health import RuleState

from .helpers import GIB, MIB, Run, constant, key, make_policy, make_rule, state_of

POD = key("pod-0")


def steps(*pieces: tuple[float, float]) -> object:
    """A signal that holds each value until the given fleet time."""

    def value(t: float) -> float:
        for until, level in pieces:
            if t <= until:
                return level
        return pieces[-1][1]

    return value


# -- above / below ----------------------------------------------------------------------------


def test_above_breaches_once_every_sample_of_a_covered_window_is_beyond() -> None:
    run = Run(make_policy(make_rule(RuleKind.ABOVE, threshold=2.0, window_s=300)))
    verdict = run.advance(120, {POD: constant(cpu=3.0)})[POD]
    assert not verdict.degraded
    assert state_of(verdict, "rule") == "no-data"  # 8 of 20 samples: the window is not covered
    verdict = run.advance(180, {POD: constant(cpu=3.0)})[POD]
    assert verdict.degraded
    assert state_of(verdict, "rule") == "breach"
    first = run.first_degraded(POD)
    assert first is not None
    assert 240 <= first <= 300


def test_one_sample_on_the_healthy_side_keeps_above_from_breaching() -> None:
    run = Run(make_policy(make_rule(RuleKind.ABOVE, threshold=2.0, window_s=300)))
    cpu = steps((150, 3.0), (165, 1.0), (10_000, 3.0))
    run.advance(600, {POD: lambda t: {"cpu": cpu(t)}})  # type: ignore[operator]
    first = run.first_degraded(POD)
    assert first is not None
    assert first >= 165 + 300  # the dip must leave the window first


def test_gaps_mean_not_sustained() -> None:
    run = Run(make_policy(make_rule(RuleKind.ABOVE, threshold=2.0, window_s=300)))

    def gappy(t: float) -> dict[str, float | None]:
        return {"cpu": None if int(t // 15) % 3 == 0 else 3.0}  # a third missing

    verdict = run.advance(1200, {POD: gappy})[POD]
    assert not run.ever_degraded(POD)
    assert state_of(verdict, "rule") == "no-data"
    assert "covered" in next(e.detail for e in verdict.evaluations)


def test_below_breaches_under_the_threshold() -> None:
    rule = make_rule(RuleKind.BELOW, signal="kv_cache", threshold=0.1, clear=0.2, window_s=300)
    run = Run(make_policy(rule))
    run.advance(600, {POD: constant(kv_cache=0.3)})
    assert not run.ever_degraded(POD)
    verdict = run.advance(600, {POD: constant(kv_cache=0.05)})[POD]
    assert verdict.degraded
    assert verdict.reasons[0].text == "rule: kv_cache 5.0% < 10.0% for 5m"


def test_hysteresis_holds_until_the_clear_level() -> None:
    rule = make_rule(RuleKind.ABOVE, threshold=2.0, clear=1.5, window_s=300)
    run = Run(make_policy(rule))
    run.advance(600, {POD: constant(cpu=3.0)})
    verdict = run.advance(900, {POD: constant(cpu=1.8)})[POD]
    assert verdict.degraded, "between clear and threshold the breach holds"
    assert "clears under 1.5" in verdict.reasons[0].text
    held = next(e for e in verdict.evaluations if e.rule.name == "rule")
    assert held.level == 1.5
    run.advance(300, {POD: constant(cpu=1.2)})
    assert not run.history[-1][1][POD].degraded


def test_without_hysteresis_the_breach_ends_at_the_threshold() -> None:
    run = Run(make_policy(make_rule(RuleKind.ABOVE, threshold=2.0, window_s=300)))
    run.advance(600, {POD: constant(cpu=3.0)})
    verdict = run.advance(300, {POD: constant(cpu=1.8)})[POD]
    assert not verdict.degraded


# -- guards -----------------------------------------------------------------------------------


def test_nothing_breaches_during_warmup_and_warmup_samples_do_not_count() -> None:
    run = Run(make_policy(make_rule(RuleKind.ABOVE, threshold=2.0, window_s=300), warmup_s=600))
    verdict = run.advance(590, {POD: constant(cpu=5.0)})[POD]
    assert verdict.warming_up
    assert state_of(verdict, "rule") == "warming-up"
    run.advance(600, {POD: constant(cpu=5.0)})
    first = run.first_degraded(POD)
    assert first is not None
    assert first >= 600 + 0.8 * 300


def test_traffic_gated_rule_counts_only_with_traffic() -> None:
    rule = make_rule(
        RuleKind.ABOVE, signal="latency_p99", threshold=0.2, window_s=300, requires_traffic=True
    )
    run = Run(make_policy(rule, min_request_rate=0.5))
    verdict = run.advance(900, {POD: constant(latency_p99=1.0, request_rate=0.1)})[POD]
    assert not run.ever_degraded(POD)
    assert state_of(verdict, "rule") == "low-traffic"
    verdict = run.advance(900, {POD: constant(latency_p99=1.0, request_rate=3.0)})[POD]
    assert verdict.degraded


def test_missing_and_stale_data_never_breach() -> None:
    run = Run(make_policy(make_rule(RuleKind.ABOVE, threshold=2.0, window_s=300)))
    verdict = run.advance(900, {POD: constant(cpu=None)})[POD]
    assert state_of(verdict, "rule") == "no-data"
    assert not verdict.has_data
    run.advance(600, {POD: constant(cpu=3.0)})
    assert run.history[-1][1][POD].degraded
    verdict = run.advance(300, {POD: constant()})[POD]  # signal absent: stale after 2 min
    assert not verdict.degraded
    assert state_of(verdict, "rule") == "no-data"


# -- growth -----------------------------------------------------------------------------------


def leak_rule(**extra: object) -> object:
    return make_rule(
        RuleKind.GROWTH,
        signal="memory",
        threshold=256 * MIB,
        clear=64 * MIB,
        name="memory-leak",
        window_s=3600,
        sustain_s=900,
        **extra,
    )


def test_growth_breaches_after_a_covered_window_and_the_sustain() -> None:
    run = Run(make_policy(leak_rule()), step_s=30)  # type: ignore[arg-type]
    leak = {POD: lambda t: {"memory": 12 * GIB + 512 * MIB * t / 3600}}
    verdict = run.advance(3 * 3600, leak)[POD]
    first = run.first_degraded(POD)
    assert first is not None
    assert 0.8 * 3600 + 900 <= first <= 3600 + 900 + 300
    reason = verdict.reasons[0]
    assert reason.kind is RuleKind.GROWTH
    assert reason.observed == pytest.approx(512 * MIB, rel=0.05)
    assert reason.threshold == 256 * MIB
    assert reason.window_s == 3600
    match = re.fullmatch(
        r"memory-leak: memory growth (\d+\.\d)Mi/h > 256\.0Mi/h over 1h", reason.text
    )
    assert match, reason.text
    assert float(match.group(1)) == pytest.approx(512, abs=2)


def test_growth_ignores_spikes_and_steps() -> None:
    run = Run(make_policy(leak_rule()), step_s=30)  # type: ignore[arg-type]

    def spiky(t: float) -> dict[str, float | None]:
        spike = 4 * GIB if int(t // 30) % 17 == 0 else 0.0
        step = 2 * GIB if t > 2 * 3600 else 0.0  # one-off allocation that stays
        return {"memory": 12 * GIB + spike + step}

    run.advance(5 * 3600, {POD: spiky})
    assert not run.ever_degraded(POD)


def test_growth_sees_a_leak_through_spikes() -> None:
    run = Run(make_policy(leak_rule()), step_s=30)  # type: ignore[arg-type]

    def leaking(t: float) -> dict[str, float | None]:
        spike = 3 * GIB if int(t // 30) % 13 == 0 else 0.0
        return {"memory": 12 * GIB + 600 * MIB * t / 3600 + spike}

    run.advance(3 * 3600, {POD: leaking})
    assert run.ever_degraded(POD)


def test_growth_time_to_limit() -> None:
    rule = leak_rule(limit=16 * GIB, time_to_limit_s=6 * 3600)
    run = Run(make_policy(rule), step_s=30)  # type: ignore[arg-type]
    # 200 MiB/h: under the slope threshold, but 15.5 GiB + 200 MiB/h reaches 16 GiB in 2.5 h.
    verdict = run.advance(3 * 3600, {POD: lambda t: {"memory": 15 * GIB + 200 * MIB * t / 3600}})[
        POD
    ]
    assert verdict.degraded
    reason = verdict.reasons[0]
    assert "reaches the limit 16.0Gi within 6h" in reason.text
    assert reason.threshold < 200 * MIB  # the growth that reaches the limit in time
    slow = Run(make_policy(rule), step_s=30)  # type: ignore[arg-type]
    slow.advance(3 * 3600, {POD: lambda t: {"memory": 8 * GIB + 200 * MIB * t / 3600}})
    assert not slow.ever_degraded(POD)


def test_a_known_limit_replaces_the_slope_threshold() -> None:
    """1 GiB/h is four times the threshold, but 84 GiB below a 96 GiB limit it has days to go:
    the leak is left to run and the rule says when it would reach the limit."""
    rule = leak_rule(limit=96 * GIB, time_to_limit_s=3 * 3600)
    run = Run(make_policy(rule), step_s=30)  # type: ignore[arg-type]
    verdict = run.advance(3 * 3600, {POD: lambda t: {"memory": 12 * GIB + GIB * t / 3600}})[POD]
    assert not run.ever_degraded(POD)
    evaluation = next(e for e in verdict.evaluations if e.rule.name == "memory-leak")
    assert evaluation.state is RuleState.OK
    hours = float(re.search(r"reaches the limit in (\d+)h", evaluation.detail).group(1))  # type: ignore[union-attr]
    assert 75 <= hours <= 85


def test_limit_signal_gives_each_pod_its_own_limit() -> None:
    rule = leak_rule(limit_signal="memory_limit", time_to_limit_s=3 * 3600)
    near, far, unknown = key("near"), key("far"), key("unknown")
    run = Run(make_policy(rule), step_s=30)  # type: ignore[arg-type]

    def leaking(limit: float | None) -> object:
        return lambda t: {"memory": 12 * GIB + 600 * MIB * t / 3600, "memory_limit": limit}

    run.advance(3 * 3600, {near: leaking(14 * GIB), far: leaking(64 * GIB), unknown: leaking(None)})
    assert run.ever_degraded(near)  # from 13 GiB at 1.6 h, 600 MiB/h reaches 14 GiB in 1.7 h
    assert not run.ever_degraded(far)  # 50 GiB of headroom: days away
    assert run.ever_degraded(unknown)  # no limit known: 600 MiB/h > 256 MiB/h condemns it
    reasons = {pod: verdict.reasons for pod, verdict in run.history[-1][1].items()}
    assert "reaches the limit 14.0Gi (memory_limit) within 3h" in reasons[near][0].text
    assert "> 256.0Mi/h" in reasons[unknown][0].text


def test_a_limit_signal_that_goes_missing_keeps_its_last_value() -> None:
    rule = leak_rule(limit_signal="memory_limit", time_to_limit_s=3 * 3600)
    run = Run(make_policy(rule), step_s=30)  # type: ignore[arg-type]

    def leaking(t: float) -> dict[str, float | None]:
        limit = 64 * GIB if t < 600 else None  # kube-state-metrics answered once, then not
        return {"memory": 12 * GIB + 600 * MIB * t / 3600, "memory_limit": limit}

    run.advance(3 * 3600, {POD: leaking})
    assert not run.ever_degraded(POD)


# -- baseline ---------------------------------------------------------------------------------


def creep_rule() -> object:
    return make_rule(
        RuleKind.BASELINE,
        signal="latency_p99",
        threshold=1.5,
        clear=1.2,
        name="latency-creep",
        window_s=600,
        baseline_window_s=600,
        requires_traffic=True,
    )


def test_baseline_breaches_against_the_pods_own_early_level() -> None:
    run = Run(make_policy(creep_rule(), warmup_s=300))  # type: ignore[arg-type]
    latency = steps((3600, 0.1), (10_000, 0.2))
    pods = {POD: lambda t: {"latency_p99": latency(t), "request_rate": 3.0}}  # type: ignore[operator]
    verdict = run.advance(3600, pods)[POD]
    assert not verdict.degraded
    assert next(e.observed for e in verdict.evaluations) == pytest.approx(1.0)
    verdict = run.advance(1800, pods)[POD]
    assert verdict.degraded
    assert verdict.reasons[0].observed == pytest.approx(2.0)


def test_baseline_is_not_comparable_under_a_traffic_surge() -> None:
    run = Run(make_policy(creep_rule(), warmup_s=300))  # type: ignore[arg-type]
    run.advance(3600, {POD: constant(latency_p99=0.1, request_rate=3.0)})
    verdict = run.advance(3600, {POD: constant(latency_p99=0.2, request_rate=6.0)})[POD]
    assert not run.ever_degraded(POD)
    assert state_of(verdict, "latency-creep") == "not-comparable"


def test_baseline_waits_for_data_and_is_taken_only_while_healthy() -> None:
    sufficient = make_rule(
        RuleKind.ABOVE,
        signal="error_rate",
        threshold=0.5,
        window_s=120,
        name="errors",
        sufficient=True,
    )
    run = Run(make_policy(creep_rule(), sufficient, warmup_s=300))  # type: ignore[arg-type]
    sick = {POD: constant(latency_p99=0.5, request_rate=3.0, error_rate=0.9)}
    verdict = run.advance(3600, sick)[POD]
    assert verdict.degraded
    assert state_of(verdict, "latency-creep") == "no-data"
    assert "no baseline" in verdict.evaluations[0].detail
    # Once healthy again, the baseline is the pod's first healthy period, not the sick one.
    run.advance(3600, {POD: constant(latency_p99=0.1, request_rate=3.0, error_rate=0.0)})
    verdict = run.advance(1200, {POD: constant(latency_p99=0.1, request_rate=3.0)})[POD]
    assert state_of(verdict, "latency-creep") == "ok"


# -- outlier ----------------------------------------------------------------------------------


def outlier_rule(min_fleet: int = 3) -> object:
    return make_rule(
        RuleKind.OUTLIER,
        threshold=1.5,
        clear=1.2,
        window_s=300,
        name="cpu-outlier",
        min_fleet=min_fleet,
    )


def test_outlier_flags_the_pod_far_from_the_fleet_median() -> None:
    run = Run(make_policy(outlier_rule()))  # type: ignore[arg-type]
    pods = {key(f"pod-{n}"): constant(cpu=2.0 + 0.05 * n) for n in range(5)}
    pods[key("hot")] = constant(cpu=4.0)
    verdicts = run.advance(900, pods)
    assert verdicts[key("hot")].degraded
    assert verdicts[key("hot")].reasons[0].observed == pytest.approx(4.0 / 2.125, rel=0.01)
    assert not any(run.ever_degraded(pod) for pod in pods if pod.name != "hot")


def test_outlier_ignores_a_fleet_wide_rise() -> None:
    run = Run(make_policy(outlier_rule()))  # type: ignore[arg-type]
    pods = {
        key(f"pod-{n}"): (lambda t, n=n: {"cpu": (2.0 + 0.1 * n) * (1 + t / 600)}) for n in range(6)
    }
    run.advance(3600, pods)
    assert not any(run.ever_degraded(pod) for pod in pods)


def test_outlier_needs_enough_pods() -> None:
    run = Run(make_policy(outlier_rule(min_fleet=3)))  # type: ignore[arg-type]
    verdicts = run.advance(900, {key("a"): constant(cpu=2.0), key("b"): constant(cpu=6.0)})
    assert not verdicts[key("b")].degraded
    assert state_of(verdicts[key("b")], "cpu-outlier") == "insufficient-fleet"


# -- verdicts ---------------------------------------------------------------------------------


def two_signal_policy(*, sufficient: bool = False, quorum: int = 2) -> object:
    return make_policy(
        make_rule(RuleKind.ABOVE, signal="cpu", threshold=2.0, name="cpu-high"),
        make_rule(RuleKind.ABOVE, signal="cpu", threshold=1.0, name="cpu-higher-than-one"),
        make_rule(
            RuleKind.ABOVE,
            signal="error_rate",
            threshold=0.05,
            name="errors",
            sufficient=sufficient,
        ),
        quorum=quorum,
    )


def test_quorum_counts_distinct_signals() -> None:
    run = Run(two_signal_policy())  # type: ignore[arg-type]
    verdict = run.advance(600, {POD: constant(cpu=3.0, error_rate=0.0)})[POD]
    assert not verdict.degraded, "two rules on one signal are one signal"
    assert {reason.rule for reason in verdict.reasons} == {"cpu-high", "cpu-higher-than-one"}
    assert verdict.breached_signals == ("cpu",)
    verdict = run.advance(600, {POD: constant(cpu=3.0, error_rate=0.2)})[POD]
    assert verdict.degraded
    assert verdict.breached_signals == ("cpu", "error_rate")


def test_a_sufficient_rule_condemns_alone() -> None:
    run = Run(two_signal_policy(sufficient=True))  # type: ignore[arg-type]
    verdict = run.advance(600, {POD: constant(cpu=0.5, error_rate=0.2)})[POD]
    assert verdict.degraded
    assert [reason.rule for reason in verdict.reasons] == ["errors"]


def test_every_rule_is_explained() -> None:
    run = Run(two_signal_policy())  # type: ignore[arg-type]
    verdict = run.advance(600, {POD: constant(cpu=1.5)})[POD]
    states = {e.rule.name: e.state for e in verdict.evaluations}
    assert states == {
        "cpu-high": RuleState.OK,
        "cpu-higher-than-one": RuleState.BREACH,
        "errors": RuleState.NO_DATA,
    }
    lines = [e.describe() for e in verdict.evaluations]
    assert lines[0].startswith("cpu-high  ok  1.5 (threshold 2)")
    assert lines[2] == "errors  no-data  - (threshold 5.0%): no fresh error_rate data"


def test_growth_hysteresis_holds_until_the_trend_is_gone() -> None:
    run = Run(make_policy(leak_rule()), step_s=30)  # type: ignore[arg-type]

    def memory(t: float) -> dict[str, float | None]:
        leaked = 512 * MIB * min(t, 4 * 3600) / 3600  # the leak stops after 4 h
        dip = 300 * MIB * min(max(t - 3 * 3600, 0.0), 1800) / 1800  # and memory drops 300 MiB
        return {"memory": 12 * GIB + leaked - dip}

    run.advance(3 * 3600, {POD: memory})
    assert run.history[-1][1][POD].degraded
    run.advance(1800, {POD: memory})  # the drop leaves a quarter of the pairs falling ...
    assert all(verdicts[POD].degraded for _, verdicts in run.history[-60:])  # ... it holds
    reason = run.history[-1][1][POD].reasons[0]
    assert reason.text.endswith("breached > 256.0Mi/h, clears under 64.0Mi/h"), reason.text
    assert reason.observed > 64 * MIB
    run.advance(3 * 3600, {POD: memory})
    assert not run.history[-1][1][POD].degraded
