"""Choose the next pod to recycle, or say exactly which guard holds it back.

Pure: the caller passes the fleet, the verdicts, the recent history and the policy; the planner
returns a ``Plan``. Guards are checked from the broadest (the whole deployment) to the narrowest
(one pod), so the reported reason is the one an operator needs to act on first.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from infercycle.api.values import DisruptionPolicy
from infercycle.recycle.fleet import PastRecycle, PodJudgement, PodState

HOUR = 3600.0


class Guard(StrEnum):
    PAUSED = "Paused"
    IN_FLIGHT = "InFlight"
    CIRCUIT_BREAKER = "CircuitBreaker"
    HOURLY_BUDGET = "HourlyBudget"
    FLAPPING = "Flapping"
    COOLDOWN = "Cooldown"
    MAX_UNAVAILABLE = "MaxUnavailable"
    MIN_AVAILABLE = "MinAvailable"
    NOT_RUNNING = "NotRunning"


@dataclass(frozen=True, slots=True)
class Hold:
    guard: Guard
    message: str
    pod: str | None = None


@dataclass(frozen=True, slots=True)
class Candidate:
    pod: PodState
    reasons: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Plan:
    candidate: Candidate | None
    holds: tuple[Hold, ...] = ()
    degraded: tuple[str, ...] = field(default=())
    circuit_open: bool = False
    flapping: tuple[str, ...] = ()

    @property
    def summary(self) -> str:
        if self.candidate is not None:
            return f"recycle {self.candidate.pod.name}: {'; '.join(self.candidate.reasons)}"
        if self.holds:
            return self.holds[0].message
        return "no pod is degraded"


def plan_recycle(
    *,
    now: float,
    replicas: int,
    pods: Sequence[PodState],
    judgements: Sequence[PodJudgement],
    history: Sequence[PastRecycle],
    disruption: DisruptionPolicy,
    in_flight: bool = False,
    paused: bool = False,
    dry_run: bool = False,
    noun: str = "pods",
) -> Plan:
    """The next recycle allowed by every guard, or the guards that refuse it. ``pods`` are the
    units recycled as one (LeaderWorkerSet groups, ``noun="groups"``): every budget counts
    them."""
    by_name = {pod.name: pod for pod in pods}
    degraded = sorted(
        (
            j
            for j in judgements
            if j.degraded and j.name in by_name and j.uid == by_name[j.name].uid
        ),
        key=lambda j: (-j.severity, j.name),
    )
    names = tuple(j.name for j in degraded)
    if not degraded:
        return Plan(candidate=None)
    if paused:
        return Plan(None, (Hold(Guard.PAUSED, "recycling is paused by spec.paused"),), names)
    if in_flight:
        return Plan(None, (Hold(Guard.IN_FLIGHT, "another recycle is in flight"),), names)

    fleet_size = max(replicas, len(pods), 1)
    percent = 100.0 * len(degraded) / fleet_size
    if len(degraded) > 1 and percent > disruption.max_degraded_percent:
        message = (
            f"{len(degraded)} of {fleet_size} {noun} ({percent:.0f}%) look degraded, above "
            f"maxDegradedPercent {disruption.max_degraded_percent}%: a fleet-wide cause is more "
            "likely than a pod fault, so nothing is recycled"
        )
        return Plan(None, (Hold(Guard.CIRCUIT_BREAKER, message),), names, circuit_open=True)

    relevant = [record for record in history if record.dry_run == dry_run]
    last_hour = [record for record in relevant if now - record.started_at < HOUR]
    if len(last_hour) >= disruption.max_recycles_per_hour:
        message = (
            f"hourly budget spent: {len(last_hour)} recycles in the last hour, "
            f"maxRecyclesPerHour is {disruption.max_recycles_per_hour}"
        )
        return Plan(None, (Hold(Guard.HOURLY_BUDGET, message),), names)

    last_finish: dict[str, float] = {}
    for record in relevant:
        last_finish[record.pod] = max(last_finish.get(record.pod, 0.0), record.finished_at)

    flapping = [
        (judgement.name, now - last_finish[judgement.name])
        for judgement in degraded
        if judgement.name in last_finish
        and now - last_finish[judgement.name] < disruption.flap_window_s
    ]
    if flapping:
        flap_holds = tuple(
            Hold(
                Guard.FLAPPING,
                f"{name} is degraded again {since / 60:.0f} min after its last recycle "
                f"(flapWindow {disruption.flap_window_s / 60:.0f} min): restarting will not fix "
                "it, so recycling is paused until it heals or the window passes",
                name,
            )
            for name, since in flapping
        )
        return Plan(None, flap_holds, names, flapping=tuple(name for name, _ in flapping))

    holds: list[Hold] = []
    max_unavailable = disruption.max_unavailable_for(fleet_size)
    min_available = disruption.min_available_for(fleet_size)
    unavailable = {pod.name for pod in pods if not pod.available}
    unavailable |= {f"missing-{i}" for i in range(max(replicas - len(pods), 0))}
    for judgement in degraded:
        pod = by_name[judgement.name]
        since = now - last_finish[pod.name] if pod.name in last_finish else None
        if since is not None and since < disruption.cooldown_s:
            holds.append(
                Hold(
                    Guard.COOLDOWN,
                    f"{pod.name} was recycled {since / 60:.0f} min ago; cooldown is "
                    f"{disruption.cooldown_s / 60:.0f} min",
                    pod.name,
                )
            )
            continue
        if not pod.running or pod.terminating:
            holds.append(Hold(Guard.NOT_RUNNING, f"{pod.name} is not running", pod.name))
            continue
        if len(unavailable | {pod.name}) > max_unavailable:
            holds.append(
                Hold(
                    Guard.MAX_UNAVAILABLE,
                    f"{len(unavailable)} {noun} already unavailable; recycling {pod.name} would "
                    f"exceed maxUnavailable {max_unavailable}",
                    pod.name,
                )
            )
            continue
        remaining = sum(1 for other in pods if other.available and other.name != pod.name)
        if remaining < min_available:
            holds.append(
                Hold(
                    Guard.MIN_AVAILABLE,
                    f"only {remaining} other {noun} are ready and serving; minAvailable is "
                    f"{min_available}",
                    pod.name,
                )
            )
            continue
        return Plan(Candidate(pod, judgement.reasons), tuple(holds), names)
    return Plan(None, tuple(holds), names)
