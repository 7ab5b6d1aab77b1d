"""The recycle state machine: one step per call, persisted before any action.

A recycle walks Draining -> Checkpointing -> Restarting -> WaitingReady -> Undraining ->
Verifying. ``next_move`` looks at the persisted operation, at what the cluster shows now and at
the outcome of the action it asked for last (``Observation.outcome``), and returns a ``Move``:
the operation to persist *before* acting, the one action to perform, and what to record. Every
decision is made here, the fall-back from InPlace to Recreate included; the executor only
persists and performs. Because the step is written first and every action is either idempotent
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

SERVING_GATE = "infercycle.io/serving"


class Action(StrEnum):
    NONE = "None"
    DRAIN = "Drain"
    CHECKPOINT = "Checkpoint"
    RESTART_IN_PLACE = "RestartInPlace"
    EVICT = "Evict"
    UNDRAIN = "Undrain"


class EventType(StrEnum):
    NORMAL = "Normal"
    WARNING = "Warning"


@dataclass(frozen=True, slots=True)
class Event:
    """A Kubernetes Event to post on the InferenceDeployment."""

    type: EventType
    reason: str
    message: str


def _normal(reason: str, message: str) -> Event:
    return Event(EventType.NORMAL, reason, message)


def _warning(reason: str, message: str) -> Event:
    return Event(EventType.WARNING, reason, message)


@dataclass(frozen=True, slots=True)
class ActionOutcome:
    """How the action of the previous move went, as the executor reports it."""

    action: Action
    ok: bool
    error: str | None = None
    checkpoint: CheckpointRecord | None = None
    # The call failed without an answer after it may have reached the agent (a timeout, a
    # reset): the agent may have acted all the same.
    unanswered: bool = False


@dataclass(frozen=True, slots=True)
class Observation:
    """What the driver sees of the pod being recycled, and how its last action went."""

    pod: PodState | None
    requests_running: float | None = None
    degraded: bool | None = None
    agent_enabled: bool = True
    metrics_ok: bool = True
    outcome: ActionOutcome | None = None
    # A recreated pod comes back under its own name (StatefulSet pods, LeaderWorkerSet groups);
    # a Deployment's does not, so its recycle follows the workload instead of the name.
    named: bool = True
    # Every desired unit of the workload is Ready (read for unnamed pods).
    fleet_ready: bool | None = None


@dataclass(frozen=True, slots=True)
class Move:
    """Persist ``operation`` (or clear it when ``record`` is set), then perform ``action``."""

    action: Action
    operation: RecycleOperation | None
    record: RecycleRecord | None = None
    event: Event | None = None
    waiting: str | None = None

    @property
    def finishes(self) -> bool:
        """The operation ends with this move (its record goes to history)."""
        return self.operation is None


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


def start(
    pod: PodState,
    reasons: tuple[str, ...],
    strategy: RestartStrategy,
    now: float,
    *,
    dry_run: bool = False,
) -> Move:
    """The first move of a recycle the planner chose: persist the operation (or, in dry-run,
    record the decision and stop there)."""
    reason_text = "; ".join(reasons) or "degraded"
    if dry_run:
        record = RecycleRecord(
            pod=pod.name,
            uid=pod.uid,
            result=RecycleResult.DRY_RUN,
            strategy=strategy,
            started_at=to_timestamp(now),
            finished_at=to_timestamp(now),
            reasons=list(reasons[:8]),
            message="dry-run: decided, not acted on",
        )
        message = f"would recycle {pod.name}: {reason_text}"
        return Move(Action.NONE, None, record, _normal("DryRunRecycle", message), message)
    operation = start_operation(pod, reasons, strategy, now)
    message = f"recycling {pod.name} ({strategy.value}): {reason_text}"
    return Move(Action.NONE, operation, event=_normal("RecycleStarted", message))


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


def _give_up(
    op: RecycleOperation,
    result: RecycleResult,
    now: float,
    message: str,
    *,
    record: str | None = None,
    undrain: bool = False,
) -> Move:
    """End the operation without success: record it, warn, and return the pod to service
    first when ``undrain`` (it may still be drained)."""
    return Move(
        Action.UNDRAIN if undrain else Action.NONE,
        None,
        finish(op, result, now, record if record is not None else message),
        _warning(f"Recycle{result}", message),
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
        return _give_up(op, RecycleResult.ABANDONED, now, message)
    outcome = seen.outcome
    if step is RecycleStep.DRAINING:
        return _drain(op, seen, timings, now)
    if step is RecycleStep.CHECKPOINTING:
        if outcome is not None and outcome.action is Action.CHECKPOINT:
            return _after_checkpoint(op, now, outcome)
        return Move(Action.CHECKPOINT, op, waiting=f"checkpointing sessions of {op.pod}")
    if step is RecycleStep.RESTARTING:
        # Only a restart the agent refused, or could not be asked for, is escalated at once. A
        # call that timed out or was reset may have restarted the server all the same, and the
        # pod may not show it yet: that one waits for the restart like an accepted call, and
        # escalates only when no restart shows within half of readyTimeout.
        if (
            outcome is not None
            and outcome.action is Action.RESTART_IN_PLACE
            and not outcome.ok
            and not outcome.unanswered
            and not _restart_seen(op, pod)
        ):
            return _after_failed_restart(op, timings, now, outcome.error or "unknown error")
        return _restart(op, seen, timings, now)
    if step is RecycleStep.WAITING_READY:
        return _wait_ready(op, seen, timings, now)
    if step is RecycleStep.UNDRAINING:
        if outcome is not None and outcome.action is Action.UNDRAIN:
            return _after_undrain(op, now)
        return Move(Action.UNDRAIN, op, waiting=f"returning {op.pod} to the client Service")
    return _verify(op, seen, timings, now)


def _drain(op: RecycleOperation, seen: Observation, timings: RecycleTimings, now: float) -> Move:
    assert seen.pod is not None
    if not seen.pod.drainable:
        # No way to take it out of its Service: restart it at once rather than wait on traffic
        # that cannot leave (the Drainable condition tells the user how to add the gate).
        note = f"{op.pod} has no readiness gate {SERVING_GATE}, so it is not drained"
        if seen.agent_enabled:
            return Move(
                Action.CHECKPOINT,
                _enter(op, RecycleStep.CHECKPOINTING, now),
                event=_warning("NotDrained", f"{note}; checkpointing sessions"),
            )
        move = _begin_restart(op, now, note)
        message = move.event.message if move.event else note
        return replace(move, event=_warning("NotDrained", message))
    if seen.pod.serving:
        return Move(
            Action.DRAIN, op, event=_normal("Draining", f"{op.pod} leaves the client Service")
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
            event=_normal("Checkpointing", f"{op.pod} {note}; checkpointing sessions"),
        )
    return _begin_restart(op, now, f"{op.pod} {note}; no agent, sessions are not checkpointed")


def _begin_restart(op: RecycleOperation, now: float, note: str) -> Move:
    strategy = RestartStrategy(op.strategy)
    action = Action.RESTART_IN_PLACE if strategy is RestartStrategy.IN_PLACE else Action.EVICT
    restarting = _enter(op, RecycleStep.RESTARTING, now, restart_requested=True)
    how = "restarting the server in place" if action is Action.RESTART_IN_PLACE else "evicting"
    return Move(action, restarting, event=_normal("Restarting", f"{note}; {how}"))


def _after_checkpoint(op: RecycleOperation, now: float, outcome: ActionOutcome) -> Move:
    """Continue once the agent answered (or failed): sessions are kept when it can."""
    record = outcome.checkpoint if outcome.ok else None
    if record is not None:
        op = op.model_copy(update={"checkpoint": record})
        note = f"checkpoint {record.id} ({record.size_bytes} bytes, {record.duration_ms} ms)"
        return _begin_restart(op, now, note)
    error = outcome.error or "no checkpoint returned"
    move = _begin_restart(op, now, f"checkpoint failed ({error}); sessions will not be restored")
    message = move.event.message if move.event else error
    return replace(move, event=_warning("CheckpointFailed", message))


def _after_failed_restart(
    op: RecycleOperation, timings: RecycleTimings, now: float, error: str
) -> Move:
    """The agent refused or could not be asked to restart the server."""
    if timings.fallback_to_recreate:
        return _escalate(op, now, f"in-place restart failed: {error}")
    return _give_up(
        op,
        RecycleResult.FAILED,
        now,
        f"in-place restart failed: {error}",
        record=error,
        undrain=True,
    )


def _escalate(op: RecycleOperation, now: float, why: str) -> Move:
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
        Action.EVICT, escalated, event=_warning("RecycleEscalated", f"{why}; evicting {op.pod}")
    )


def _restart(op: RecycleOperation, seen: Observation, timings: RecycleTimings, now: float) -> Move:
    if _restart_seen(op, seen.pod):
        new_uid = seen.pod.uid if seen.pod is not None else None
        return Move(
            Action.NONE,
            _enter(op, RecycleStep.WAITING_READY, now, new_uid=new_uid),
            event=_normal("Restarted", f"{op.pod} restarted; waiting until it is Ready"),
        )
    waited = _in_step_for(op, now)
    strategy = RestartStrategy(op.strategy)
    if strategy is RestartStrategy.RECREATE:
        if seen.pod is None and not seen.named:
            return Move(
                Action.NONE,
                _enter(op, RecycleStep.WAITING_READY, now),
                event=_normal(
                    "Restarted", f"{op.pod} is gone; waiting until its replacement is Ready"
                ),
            )
        if seen.pod is None:
            if waited > timings.ready_timeout_s:
                message = (
                    f"{op.pod} was not recreated within {waited:.0f}s of its eviction "
                    "(scaled down, or its controller is stuck); the recycle ends here"
                )
                return _give_up(op, RecycleResult.FAILED, now, message)
            return Move(Action.NONE, op, waiting=f"waiting for {op.pod} to be recreated")
        if seen.pod.terminating:
            return Move(Action.NONE, op, waiting=f"{op.pod} is terminating")
        if waited > timings.ready_timeout_s:
            message = (
                f"eviction of {op.pod} stayed refused for {waited:.0f}s; the disruption budget "
                "never allowed it, so the pod is returned to service untouched"
            )
            return _give_up(op, RecycleResult.ABANDONED, now, message, undrain=True)
        return Move(Action.EVICT, op, waiting=f"evicting {op.pod}")
    if waited > timings.ready_timeout_s / 2:
        return _after_failed_restart(
            op, timings, now, f"{op.pod} did not restart in place within {waited:.0f}s"
        )
    return Move(Action.NONE, op, waiting=f"waiting for the server in {op.pod} to restart")


def _wait_ready(
    op: RecycleOperation, seen: Observation, timings: RecycleTimings, now: float
) -> Move:
    pod = seen.pod
    if not seen.named and seen.fleet_ready:
        # The replacement was never drained: nothing to return to service, verify at once.
        return Move(
            Action.NONE,
            _enter(op, RecycleStep.VERIFYING, now),
            event=_normal("Ready", f"the replacement of {op.pod} is Ready; verifying"),
        )
    if seen.named and pod is not None and pod.ready and pod.running and not pod.terminating:
        return Move(
            Action.UNDRAIN,
            _enter(op, RecycleStep.UNDRAINING, now, new_uid=pod.uid),
            event=_normal("Ready", f"{op.pod} is Ready again"),
        )
    waited = _in_step_for(op, now)
    if waited > timings.ready_timeout_s:
        what = op.pod if seen.named else f"the replacement of {op.pod}"
        message = f"{what} was not Ready {waited:.0f}s after the restart"
        return _give_up(op, RecycleResult.FAILED, now, message, undrain=True)
    if not seen.named:
        return Move(Action.NONE, op, waiting=f"waiting for the replacement of {op.pod}")
    return Move(Action.NONE, op, waiting=f"waiting for {op.pod} to be Ready")


def _after_undrain(op: RecycleOperation, now: float) -> Move:
    return Move(
        Action.NONE,
        _enter(op, RecycleStep.VERIFYING, now),
        event=_normal("Undrained", f"{op.pod} is back in the client Service; verifying"),
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
                event=_warning(
                    "RecycleEscalated",
                    f"{op.pod} is still degraded after an in-place restart; recreating it",
                ),
            )
        message = f"{op.pod} is still degraded after its recycle; the cause is not in the pod"
        return _give_up(op, RecycleResult.FAILED, now, message)
    if not seen.metrics_ok:
        return Move(Action.NONE, op, waiting=f"verifying {op.pod}: waiting for metrics")
    if _in_step_for(op, now) >= timings.verify_window_s:
        result = RecycleResult.ESCALATED if op.escalated else RecycleResult.SUCCEEDED
        message = f"{op.pod} healthy after the recycle"
        return Move(
            Action.NONE,
            None,
            finish(op, result, now, message),
            _normal("RecycleSucceeded", message),
        )
    return Move(Action.NONE, op, waiting=f"verifying {op.pod}")
