"""The recycle state machine: one step per call, persisted before any action.

A recycle walks Draining -> Checkpointing -> Restarting -> WaitingReady -> Undraining ->
Verifying. ``next_move`` looks at the persisted operation and at what the cluster shows now,
and returns a ``Move``: the operation to persist *before* acting, the one action to perform,
and what to record. Because the step is written first and every action is either idempotent
(labels, checkpoints) or guarded by the pod's UID and restart count (restarts), an operator that
dies at any point resumes from status without restarting a pod twice.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum

from infercycle.api.resources import (
    CheckpointRecord,
    RecycleOperation,
    RecycleRecord,
    RecycleResult,
    RecycleStep,
    RestartStrategy,
)
from infercycle.api.units import from_timestamp, to_timestamp
from infercycle.api.values import RecycleTimings
from infercycle.recycle.fleet import PodState


class Action(StrEnum):
    NONE = "None"
    DRAIN = "Drain"
    CHECKPOINT = "Checkpoint"
    RESTART_IN_PLACE = "RestartInPlace"
    EVICT = "Evict"
    UNDRAIN = "Undrain"


@dataclass(frozen=True, slots=True)
class Observation:
    """What the driver sees of the pod being recycled in this cycle."""

    pod: PodState | None
    requests_running: float | None = None
    degraded: bool | None = None
    agent_enabled: bool = True
    metrics_ok: bool = True


@dataclass(frozen=True, slots=True)
class Move:
    """Persist ``operation`` (or clear it when ``record`` is set), then perform ``action``."""

    action: Action
    operation: RecycleOperation | None
    record: RecycleRecord | None = None
    event: tuple[str, str, str] | None = None  # (Normal|Warning, Reason, message)
    waiting: str | None = None


def start_operation(
    pod: PodState, reasons: tuple[str, ...], strategy: RestartStrategy, now: float
) -> RecycleOperation:
    stamp = to_timestamp(now)
    return RecycleOperation(
        pod=pod.name,
        uid=pod.uid,
        step=RecycleStep.DRAINING,
        strategy=strategy,
        started_at=stamp,
        step_started_at=stamp,
        reasons=list(reasons[:8]),
        restart_count=pod.restart_count,
    )


def _enter(
    op: RecycleOperation, step: RecycleStep, now: float, **changes: object
) -> RecycleOperation:
    updated = op.model_copy(update={"step": step, "step_started_at": to_timestamp(now), **changes})
    return RecycleOperation.model_validate(updated.model_dump())


def finish(
    op: RecycleOperation, result: RecycleResult, now: float, message: str | None = None
) -> RecycleRecord:
    return RecycleRecord(
        pod=op.pod,
        uid=op.uid,
        result=result,
        strategy=RestartStrategy(op.strategy),
        started_at=op.started_at,
        finished_at=to_timestamp(now),
        reasons=list(op.reasons),
        message=message,
    )


def _in_step_for(op: RecycleOperation, now: float) -> float:
    return now - from_timestamp(op.step_started_at)


def _restart_seen(op: RecycleOperation, pod: PodState | None) -> bool:
    if pod is None:
        return False
    if pod.uid != op.uid:
        return True
    return op.restart_count is not None and pod.restart_count > op.restart_count


def next_move(op: RecycleOperation, seen: Observation, timings: RecycleTimings, now: float) -> Move:
    """The next persisted state and action for ``op`` given what the cluster shows now."""
    step = RecycleStep(op.step)
    pod = seen.pod
    if step in (RecycleStep.DRAINING, RecycleStep.CHECKPOINTING) and (
        pod is None or pod.uid != op.uid
    ):
        message = f"{op.pod} was replaced or deleted by something else before the restart"
        return Move(
            Action.NONE,
            None,
            finish(op, RecycleResult.ABANDONED, now, message),
            ("Warning", "RecycleAbandoned", message),
        )
    if step is RecycleStep.DRAINING:
        return _drain(op, seen, timings, now)
    if step is RecycleStep.CHECKPOINTING:
        return Move(Action.CHECKPOINT, op, waiting=f"checkpointing sessions of {op.pod}")
    if step is RecycleStep.RESTARTING:
        return _restart(op, seen, timings, now)
    if step is RecycleStep.WAITING_READY:
        return _wait_ready(op, seen, timings, now)
    if step is RecycleStep.UNDRAINING:
        return Move(Action.UNDRAIN, op, waiting=f"returning {op.pod} to the client Service")
    return _verify(op, seen, timings, now)


def _drain(op: RecycleOperation, seen: Observation, timings: RecycleTimings, now: float) -> Move:
    assert seen.pod is not None
    if seen.pod.serving:
        return Move(
            Action.DRAIN, op, event=("Normal", "Draining", f"{op.pod} leaves the client Service")
        )
    waited = _in_step_for(op, now)
    idle = seen.requests_running is not None and seen.requests_running <= 0
    if not idle and waited < timings.drain_timeout_s:
        running = "unknown" if seen.requests_running is None else f"{seen.requests_running:.0f}"
        return Move(
            Action.NONE,
            op,
            waiting=f"draining {op.pod}: {running} requests in flight, "
            f"{timings.drain_timeout_s - waited:.0f}s left",
        )
    note = "drained" if idle else f"drain timeout after {waited:.0f}s"
    if seen.agent_enabled:
        return Move(
            Action.CHECKPOINT,
            _enter(op, RecycleStep.CHECKPOINTING, now),
            event=("Normal", "Checkpointing", f"{op.pod} {note}; checkpointing sessions"),
        )
    return _begin_restart(op, now, f"{op.pod} {note}; no agent, sessions are not checkpointed")


def _begin_restart(op: RecycleOperation, now: float, note: str) -> Move:
    strategy = RestartStrategy(op.strategy)
    action = Action.RESTART_IN_PLACE if strategy is RestartStrategy.IN_PLACE else Action.EVICT
    restarting = _enter(op, RecycleStep.RESTARTING, now, restart_requested=True)
    how = "restarting the server in place" if action is Action.RESTART_IN_PLACE else "evicting"
    return Move(action, restarting, event=("Normal", "Restarting", f"{note}; {how}"))


def after_checkpoint(
    op: RecycleOperation, now: float, record: CheckpointRecord | None, error: str | None
) -> Move:
    """Continue once the agent answered (or failed): sessions are kept when it can."""
    if record is not None:
        op = op.model_copy(update={"checkpoint": record})
        note = f"checkpoint {record.id} ({record.size_bytes} bytes, {record.duration_ms} ms)"
        return _begin_restart(op, now, note)
    move = _begin_restart(op, now, f"checkpoint failed ({error}); sessions will not be restored")
    return replace(move, event=("Warning", "CheckpointFailed", move.event[2] if move.event else ""))


def escalate(op: RecycleOperation, now: float, why: str) -> Move:
    """InPlace could not do it: evict the pod instead (its UID guards against a double restart)."""
    escalated = _enter(
        op,
        RecycleStep.RESTARTING,
        now,
        strategy=RestartStrategy.RECREATE,
        escalated=True,
        restart_requested=True,
        message=why,
    )
    return Move(
        Action.EVICT, escalated, event=("Warning", "RecycleEscalated", f"{why}; evicting {op.pod}")
    )


def _restart(op: RecycleOperation, seen: Observation, timings: RecycleTimings, now: float) -> Move:
    if _restart_seen(op, seen.pod):
        new_uid = seen.pod.uid if seen.pod is not None else None
        return Move(
            Action.NONE,
            _enter(op, RecycleStep.WAITING_READY, now, new_uid=new_uid),
            event=("Normal", "Restarted", f"{op.pod} restarted; waiting until it is Ready"),
        )
    waited = _in_step_for(op, now)
    strategy = RestartStrategy(op.strategy)
    if strategy is RestartStrategy.RECREATE:
        if seen.pod is None:
            return Move(Action.NONE, op, waiting=f"waiting for {op.pod} to be recreated")
        if seen.pod.terminating:
            return Move(Action.NONE, op, waiting=f"{op.pod} is terminating")
        if waited > timings.ready_timeout_s:
            message = (
                f"eviction of {op.pod} stayed refused for {waited:.0f}s; the disruption budget "
                "never allowed it, so the pod is returned to service untouched"
            )
            return Move(
                Action.UNDRAIN,
                None,
                finish(op, RecycleResult.ABANDONED, now, message),
                ("Warning", "RecycleAbandoned", message),
            )
        return Move(Action.EVICT, op, waiting=f"evicting {op.pod}")
    if waited > timings.ready_timeout_s / 2:
        return escalate(op, now, f"{op.pod} did not restart in place within {waited:.0f}s")
    return Move(Action.NONE, op, waiting=f"waiting for the server in {op.pod} to restart")


def _wait_ready(
    op: RecycleOperation, seen: Observation, timings: RecycleTimings, now: float
) -> Move:
    pod = seen.pod
    if pod is not None and pod.ready and pod.running and not pod.terminating:
        return Move(
            Action.UNDRAIN,
            _enter(op, RecycleStep.UNDRAINING, now, new_uid=pod.uid),
            event=("Normal", "Ready", f"{op.pod} is Ready again"),
        )
    waited = _in_step_for(op, now)
    if waited > timings.ready_timeout_s:
        message = f"{op.pod} was not Ready {waited:.0f}s after the restart"
        return Move(
            Action.UNDRAIN,
            None,
            finish(op, RecycleResult.FAILED, now, message),
            ("Warning", "RecycleFailed", message),
        )
    return Move(Action.NONE, op, waiting=f"waiting for {op.pod} to be Ready")


def after_undrain(op: RecycleOperation, now: float) -> Move:
    return Move(
        Action.NONE,
        _enter(op, RecycleStep.VERIFYING, now),
        event=("Normal", "Undrained", f"{op.pod} is back in the client Service; verifying"),
    )


def _verify(op: RecycleOperation, seen: Observation, timings: RecycleTimings, now: float) -> Move:
    if seen.degraded:
        if RestartStrategy(op.strategy) is RestartStrategy.IN_PLACE and not op.escalated:
            restarted = _enter(
                op,
                RecycleStep.DRAINING,
                now,
                uid=seen.pod.uid if seen.pod else op.uid,
                strategy=RestartStrategy.RECREATE,
                escalated=True,
                restart_count=seen.pod.restart_count if seen.pod else op.restart_count,
                restart_requested=None,
                message="still degraded after an in-place restart",
            )
            return Move(
                Action.DRAIN,
                restarted,
                event=(
                    "Warning",
                    "RecycleEscalated",
                    f"{op.pod} is still degraded after an in-place restart; recreating it",
                ),
            )
        message = f"{op.pod} is still degraded after its recycle; the cause is not in the pod"
        return Move(
            Action.NONE,
            None,
            finish(op, RecycleResult.FAILED, now, message),
            ("Warning", "RecycleFailed", message),
        )
    if not seen.metrics_ok:
        return Move(Action.NONE, op, waiting=f"verifying {op.pod}: waiting for metrics")
    if _in_step_for(op, now) >= timings.verify_window_s:
        result = RecycleResult.ESCALATED if op.escalated else RecycleResult.SUCCEEDED
        message = f"{op.pod} healthy after the recycle"
        return Move(
            Action.NONE,
            None,
            finish(op, result, now, message),
            ("Normal", "RecycleSucceeded", message),
        )
    return Move(Action.NONE, op, waiting=f"verifying {op.pod}")
