from infercycle.api.values import DisruptionPolicy
from infercycle.recycle.fleet import PastRecycle, PodJudgement, PodState
from infercycle.recycle.planner import Guard, plan_recycle

NOW = 1_000_000.0
POLICY = DisruptionPolicy(
    max_unavailable=1,
    min_available="50%",
    cooldown_s=3600,
    max_recycles_per_hour=2,
    max_degraded_percent=50,
    flap_window_s=1800,
)


def fleet(count: int, **overrides: PodState) -> list[PodState]:
    pods = [
        PodState(f"p-{i}", f"uid-{i}", ready=True, serving=True, running=True) for i in range(count)
    ]
    return [overrides.get(pod.name, pod) for pod in pods]


def sick(*names: str, severity: float = 1.0) -> list[PodJudgement]:
    return [
        PodJudgement(name, f"uid-{name.split('-')[1]}", True, (f"{name} leaks",), severity)
        for name in names
    ]


def plan(pods: list[PodState], judgements: list[PodJudgement], **kwargs: object):  # type: ignore[no-untyped-def]
    arguments = {
        "now": NOW,
        "replicas": len(pods),
        "pods": pods,
        "judgements": judgements,
        "history": [],
        "disruption": POLICY,
    }
    arguments.update(kwargs)
    return plan_recycle(**arguments)  # type: ignore[arg-type]


def test_healthy_fleet_recycles_nothing() -> None:
    result = plan(fleet(8), [])
    assert result.candidate is None
    assert result.holds == ()


def test_most_severe_degraded_pod_goes_first() -> None:
    judgements = sick("p-2", severity=1) + sick("p-5", severity=3)
    result = plan(fleet(8), judgements)
    assert result.candidate is not None
    assert result.candidate.pod.name == "p-5"
    assert result.degraded == ("p-5", "p-2")


def test_verdict_for_an_older_pod_instance_is_ignored() -> None:
    stale = [PodJudgement("p-1", "old-uid", True, ("x",), 1.0)]
    assert plan(fleet(4), stale).candidate is None


def test_circuit_breaker_opens_when_most_of_the_fleet_looks_degraded() -> None:
    result = plan(fleet(4), sick("p-0", "p-1", "p-2"))
    assert result.candidate is None
    assert result.circuit_open
    assert result.holds[0].guard is Guard.CIRCUIT_BREAKER
    assert "3 of 4 pods" in result.holds[0].message


def test_a_single_degraded_pod_never_trips_the_breaker_even_in_a_tiny_fleet() -> None:
    result = plan(fleet(2), sick("p-0"), disruption=DisruptionPolicy(min_available=0))
    assert result.candidate is not None


def test_max_unavailable_counts_pods_already_out() -> None:
    down = PodState("p-3", "uid-3", ready=False, serving=True, running=True)
    result = plan(fleet(8, **{"p-3": down}), sick("p-1"))
    assert result.candidate is None
    assert result.holds[0].guard is Guard.MAX_UNAVAILABLE


def test_the_degraded_pod_being_unready_itself_does_not_block_it() -> None:
    down = PodState("p-1", "uid-1", ready=False, serving=True, running=True)
    result = plan(fleet(8, **{"p-1": down}), sick("p-1"))
    assert result.candidate is not None


def test_min_available_is_respected() -> None:
    policy = DisruptionPolicy(max_unavailable=3, min_available=3)
    drained = PodState("p-2", "uid-2", ready=True, serving=False, running=True)
    result = plan(fleet(4, **{"p-2": drained}), sick("p-0"), disruption=policy)
    assert result.candidate is None
    assert result.holds[0].guard is Guard.MIN_AVAILABLE
    assert "minAvailable is 3" in result.holds[0].message


def test_missing_replicas_count_as_unavailable() -> None:
    result = plan(fleet(3), sick("p-0"), replicas=4)
    assert result.candidate is None
    assert result.holds[0].guard is Guard.MAX_UNAVAILABLE


def test_cooldown_and_hourly_budget() -> None:
    recent = [PastRecycle("p-1", NOW - 2400, NOW - 2300)]
    result = plan(fleet(8), sick("p-1"), history=recent)
    assert result.holds[0].guard is Guard.COOLDOWN
    busy = [PastRecycle(f"p-{i}", NOW - 600, NOW - 500 - i) for i in (4, 5)]
    result = plan(fleet(8), sick("p-1"), history=busy)
    assert result.holds[0].guard is Guard.HOURLY_BUDGET


def test_flapping_pod_pauses_recycling() -> None:
    recent = [PastRecycle("p-1", NOW - 700, NOW - 600)]
    result = plan(fleet(8), sick("p-1") + sick("p-2"), history=recent)
    assert result.candidate is None
    assert result.flapping == ("p-1",)
    assert result.holds[0].guard is Guard.FLAPPING


def test_dry_run_history_only_counts_in_dry_run() -> None:
    rehearsed = [PastRecycle("p-1", NOW - 100, NOW - 100, dry_run=True)]
    assert plan(fleet(8), sick("p-1"), history=rehearsed).candidate is not None
    again = plan(fleet(8), sick("p-1"), history=rehearsed, dry_run=True)
    assert again.candidate is None


def test_paused_and_in_flight_hold_everything() -> None:
    assert plan(fleet(8), sick("p-1"), paused=True).holds[0].guard is Guard.PAUSED
    assert plan(fleet(8), sick("p-1"), in_flight=True).holds[0].guard is Guard.IN_FLIGHT
