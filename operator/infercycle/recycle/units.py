"""The units the planner and the recycle machine handle: single pods, or LeaderWorkerSet groups.

A multi-host model serves from a group of pods (one leader, ``size - 1`` workers) that only
works as a whole, so a group is judged and recycled as one unit. ``units_of`` folds the pods of
a deployment into units; a group's unit carries its leader's name and UID (the leader is what
gets drained and recreated: its workers go with it), counts as Ready only when the leader and a
full set of workers created with or after it are Ready, and ``judge_units`` condemns the group
when any one member is condemned. Budgets (maxUnavailable, cooldown, recycles per hour, the
circuit breaker) then count groups, because the planner only ever sees units.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from infercycle.recycle.fleet import PodJudgement, PodState


def units_of(pods: Sequence[PodState], group_size: int | None) -> tuple[PodState, ...]:
    """Each pod, or with ``group_size`` each group as one unit (ordered by name)."""
    if group_size is None:
        return tuple(pods)
    groups: dict[str, list[PodState]] = {}
    for pod in pods:
        if pod.group is not None:
            groups.setdefault(pod.group, []).append(pod)
    return tuple(group_unit(name, groups[name], group_size) for name in sorted(groups))


def _current_workers(leader: PodState | None, members: Iterable[PodState]) -> list[PodState]:
    """Workers of the group's present life: created no earlier than its leader."""
    workers = [pod for pod in members if not pod.leader]
    if leader is None or leader.created_at is None:
        return workers
    return [pod for pod in workers if pod.created_at is None or pod.created_at >= leader.created_at]


def _up(pod: PodState) -> bool:
    return pod.ready and pod.running and not pod.terminating


def group_unit(name: str, members: Sequence[PodState], size: int) -> PodState:
    """One group as one unit, named after its leader (whose pod may be gone for now)."""
    leader = next((pod for pod in members if pod.leader and not pod.terminating), None)
    leader = leader or next((pod for pod in members if pod.leader), None)
    workers = _current_workers(leader, members)
    ordered = tuple(
        ([leader] if leader is not None else [])
        + sorted((pod for pod in members if pod is not leader), key=lambda pod: pod.name)
    )
    if leader is None:
        return PodState(
            name=name,
            uid="",
            ready=False,
            serving=True,
            running=False,
            members=ordered,
            group=name,
            leader=True,
        )
    complete = _up(leader) and sum(1 for pod in workers if _up(pod)) >= size - 1
    return PodState(
        name=name,
        uid=leader.uid,
        ready=complete,
        serving=leader.serving,
        running=leader.running,
        terminating=leader.terminating,
        started_at=leader.started_at,
        restart_count=leader.restart_count,
        pod_ip=leader.pod_ip,
        node=leader.node,
        drainable=leader.drainable,
        awaiting_gate=leader.awaiting_gate,
        group=name,
        leader=True,
        created_at=leader.created_at,
        members=ordered,
    )


def judge_units(
    units: Sequence[PodState], judgements: Sequence[PodJudgement]
) -> list[PodJudgement]:
    """One judgement per unit: a group is condemned when any member is, with its reasons."""
    by_pod: Mapping[tuple[str, str], PodJudgement] = {(j.name, j.uid): j for j in judgements}
    judged: list[PodJudgement] = []
    for unit in units:
        if not unit.members:
            found = by_pod.get((unit.name, unit.uid))
            judged.append(found or PodJudgement(unit.name, unit.uid, degraded=False))
            continue
        condemned = [
            by_pod[(pod.name, pod.uid)]
            for pod in unit.members
            if (pod.name, pod.uid) in by_pod and by_pod[(pod.name, pod.uid)].degraded
        ]
        reasons = tuple(
            f"{member.name}: {reason}" for member in condemned for reason in member.reasons
        )
        judged.append(
            PodJudgement(
                unit.name,
                unit.uid,
                degraded=bool(condemned),
                reasons=reasons,
                severity=max((member.severity for member in condemned), default=0.0),
            )
        )
    return judged


def ready_units(units: Iterable[PodState]) -> int:
    """Units that are Ready, running and not on their way out."""
    return sum(1 for unit in units if _up(unit))
