"""The recycle state machine walked step by step, including a restart of the operator anywhere."""

from dataclasses import replace

import pytest

from infercycle.api.resources import (
    CheckpointRecord,
    RecycleOperation,
    RecycleResult,
    RecycleStep,
    RestartStrategy,
)
from infercycle.api.values import RecycleTimings
from infercycle.recycle.fleet import PodState
from infercycle.recycle.machine import (
    Action,
    ActionOutcome,
    Move,
    Observation,
    next_move,
    start,
    start_operation,
)

T0 = 1_000_000.0
TIMINGS = RecycleTimings(
    drain_timeout_s=60, checkpoint_timeout_s=30, ready_timeout_s=300, verify_window_s=120
)
POD = PodState("vllm-0", "uid-a", ready=True, serving=True, running=True, restart_count=0)
DRAINED = replace(POD, serving=False)


def after_checkpoint(op, now, record, error) -> Move:  # type: ignore[no-untyped-def]
    """The move that follows the agent's answer to the checkpoint the machine asked for."""
    checkpointing = op.model_copy(update={"step": RecycleStep.CHECKPOINTING})
    outcome = ActionOutcome(
        Action.CHECKPOINT, ok=record is not None, error=error, checkpoint=record
    )
    return next_move(checkpointing, Observation(DRAINED, outcome=outcome), TIMINGS, now)


def test_recreate_walk_from_drain_to_success() -> None:
    op = start_operation(POD, ("memory-leak: growth",), RestartStrategy.RECREATE, T0)
    move = next_move(op, Observation(POD, requests_running=3), TIMINGS, T0)
    assert move.action is Action.DRAIN
    drained = replace(POD, serving=False)
    move = next_move(op, Observation(drained, requests_running=3), TIMINGS, T0 + 5)
    assert move.action is Action.NONE
    assert "3 requests in flight" in (move.waiting or "")
    move = next_move(op, Observation(drained, requests_running=0), TIMINGS, T0 + 10)
    assert move.action is Action.CHECKPOINT
    assert move.operation is not None
    assert move.operation.step == RecycleStep.CHECKPOINTING
    record = CheckpointRecord(id="c1", size_bytes=10, duration_ms=5)
    move = after_checkpoint(move.operation, T0 + 11, record, None)
    assert move.action is Action.EVICT
    assert move.operation is not None
    assert move.operation.restart_requested
    assert move.operation.checkpoint == record
    op = move.operation
    assert next_move(op, Observation(drained), TIMINGS, T0 + 12).action is Action.EVICT
    recreated = PodState("vllm-0", "uid-b", ready=False, serving=True, running=True)
    move = next_move(op, Observation(recreated), TIMINGS, T0 + 20)
    assert move.operation is not None
    assert move.operation.step == RecycleStep.WAITING_READY
    assert move.operation.new_uid == "uid-b"
    op = move.operation
    assert next_move(op, Observation(recreated), TIMINGS, T0 + 30).action is Action.NONE
    ready = replace(recreated, ready=True)
    move = next_move(op, Observation(ready), TIMINGS, T0 + 40)
    assert move.action is Action.UNDRAIN
    assert move.operation is not None
    undrained = ActionOutcome(Action.UNDRAIN, ok=True)
    move = next_move(move.operation, Observation(ready, outcome=undrained), TIMINGS, T0 + 41)
    assert move.operation is not None
    op = move.operation
    assert next_move(op, Observation(ready, degraded=False), TIMINGS, T0 + 60).operation == op
    move = next_move(op, Observation(ready, degraded=False), TIMINGS, T0 + 41 + 120)
    assert move.operation is None
    assert move.record is not None
    assert move.record.result == RecycleResult.SUCCEEDED


def test_a_resumed_restart_step_never_restarts_a_pod_twice() -> None:
    op = start_operation(POD, ("r",), RestartStrategy.IN_PLACE, T0)
    move = after_checkpoint(op, T0 + 1, None, "agent down")
    assert move.action is Action.RESTART_IN_PLACE
    assert move.event is not None
    assert move.event.reason == "CheckpointFailed"
    op = move.operation
    assert op is not None
    # The operator died after persisting the step; on resume it waits instead of restarting again.
    resumed = next_move(op, Observation(replace(POD, serving=False)), TIMINGS, T0 + 5)
    assert resumed.action is Action.NONE
    restarted = replace(POD, serving=False, restart_count=1)
    move = next_move(op, Observation(restarted), TIMINGS, T0 + 6)
    assert move.operation is not None
    assert move.operation.step == RecycleStep.WAITING_READY


def test_in_place_that_never_happens_escalates_to_an_eviction_of_the_same_uid() -> None:
    op = start_operation(POD, ("r",), RestartStrategy.IN_PLACE, T0)
    op = after_checkpoint(
        op, T0, CheckpointRecord(id="c", size_bytes=1, duration_ms=1), None
    ).operation
    assert op is not None
    move = next_move(op, Observation(replace(POD, serving=False)), TIMINGS, T0 + 200)
    assert move.action is Action.EVICT
    assert move.operation is not None
    assert move.operation.escalated
    assert move.operation.uid == "uid-a"


def test_pod_replaced_before_restart_abandons_without_acting() -> None:
    op = start_operation(POD, ("r",), RestartStrategy.RECREATE, T0)
    other = PodState("vllm-0", "uid-z", ready=True, serving=True, running=True)
    move = next_move(op, Observation(other), TIMINGS, T0 + 1)
    assert move.action is Action.NONE
    assert move.record is not None
    assert move.record.result == RecycleResult.ABANDONED


def test_drain_timeout_moves_on() -> None:
    op = start_operation(POD, ("r",), RestartStrategy.RECREATE, T0)
    move = next_move(op, Observation(replace(POD, serving=False), None), TIMINGS, T0 + 61)
    assert move.action is Action.CHECKPOINT
    assert "drain timeout" in (move.event.message if move.event else "")


def test_without_agent_the_checkpoint_is_skipped() -> None:
    op = start_operation(POD, ("r",), RestartStrategy.RECREATE, T0)
    seen = Observation(replace(POD, serving=False), 0, agent_enabled=False)
    assert next_move(op, seen, TIMINGS, T0 + 1).action is Action.EVICT


def test_blocked_eviction_is_abandoned_after_the_timeout_and_the_pod_returned() -> None:
    op = start_operation(POD, ("r",), RestartStrategy.RECREATE, T0)
    op = after_checkpoint(op, T0, None, "x").operation
    assert op is not None
    move = next_move(op, Observation(replace(POD, serving=False)), TIMINGS, T0 + 301)
    assert move.action is Action.UNDRAIN
    assert move.record is not None
    assert move.record.result == RecycleResult.ABANDONED


@pytest.mark.parametrize("strategy", [RestartStrategy.IN_PLACE, RestartStrategy.RECREATE])
def test_still_degraded_after_the_restart(strategy: RestartStrategy) -> None:
    op = start_operation(POD, ("r",), strategy, T0)
    op = op.model_copy(update={"step": RecycleStep.VERIFYING})
    move = next_move(op, Observation(POD, degraded=True), TIMINGS, T0 + 10)
    if strategy is RestartStrategy.IN_PLACE:
        assert move.action is Action.DRAIN
        assert move.operation is not None
        assert move.operation.strategy == RestartStrategy.RECREATE
        assert move.operation.escalated
    else:
        assert move.record is not None
        assert move.record.result == RecycleResult.FAILED


def test_verify_waits_while_metrics_are_missing() -> None:
    op = start_operation(POD, ("r",), RestartStrategy.RECREATE, T0)
    op = op.model_copy(update={"step": RecycleStep.VERIFYING})
    move = next_move(op, Observation(POD, metrics_ok=False), TIMINGS, T0 + 10_000)
    assert move.operation == op
    assert move.record is None


def restarting_in_place() -> RecycleOperation:
    """An InPlace operation that has asked the agent to restart the server."""
    op = after_checkpoint(
        start_operation(POD, ("r",), RestartStrategy.IN_PLACE, T0), T0, None, "down"
    ).operation
    assert op is not None
    return op


def test_a_failed_in_place_restart_falls_back_to_an_eviction_when_the_policy_allows() -> None:
    op = restarting_in_place()
    failed = ActionOutcome(Action.RESTART_IN_PLACE, ok=False, error="agent timed out")
    move = next_move(op, Observation(DRAINED, outcome=failed), TIMINGS, T0 + 2)
    assert move.action is Action.EVICT
    assert move.operation is not None
    assert move.operation.escalated
    assert move.event is not None
    assert move.event.reason == "RecycleEscalated"


def test_a_restart_whose_answer_was_lost_is_not_escalated_when_the_pod_shows_it() -> None:
    op = restarting_in_place()
    lost = ActionOutcome(Action.RESTART_IN_PLACE, ok=False, error="connection reset")
    restarted = replace(DRAINED, restart_count=1)
    move = next_move(op, Observation(restarted, outcome=lost), TIMINGS, T0 + 2)
    assert move.action is Action.NONE
    assert move.operation is not None
    assert move.operation.step == RecycleStep.WAITING_READY
    assert not move.operation.escalated


def test_a_failed_in_place_restart_without_fallback_returns_the_pod_and_records_failure() -> None:
    op = restarting_in_place()
    failed = ActionOutcome(Action.RESTART_IN_PLACE, ok=False, error="agent timed out")
    strict = replace(TIMINGS, fallback_to_recreate=False)
    move = next_move(op, Observation(DRAINED, outcome=failed), strict, T0 + 2)
    assert move.action is Action.UNDRAIN
    assert move.finishes
    assert move.record is not None
    assert move.record.result == RecycleResult.FAILED


def test_an_outcome_of_another_action_is_not_taken_for_this_steps_answer() -> None:
    op = start_operation(POD, ("r",), RestartStrategy.RECREATE, T0)
    checkpointing = op.model_copy(update={"step": RecycleStep.CHECKPOINTING})
    stray = ActionOutcome(Action.UNDRAIN, ok=True)
    move = next_move(checkpointing, Observation(DRAINED, outcome=stray), TIMINGS, T0 + 1)
    assert move.action is Action.CHECKPOINT
    assert move.operation == checkpointing


def test_start_in_dry_run_records_the_decision_and_persists_no_operation() -> None:
    move = start(POD, ("memory-leak: growth",), RestartStrategy.IN_PLACE, T0, dry_run=True)
    assert move.finishes
    assert move.record is not None
    assert move.record.result == RecycleResult.DRY_RUN
    assert move.event is not None
    assert move.event.reason == "DryRunRecycle"
    live = start(POD, ("memory-leak: growth",), RestartStrategy.IN_PLACE, T0)
    assert live.operation is not None
    assert live.operation.step == RecycleStep.DRAINING


def test_a_pod_without_the_readiness_gate_is_evicted_at_once_and_the_event_says_why() -> None:
    ungated = replace(POD, drainable=False)
    op = start_operation(ungated, ("memory-leak: growth",), RestartStrategy.RECREATE, T0)
    move = next_move(op, Observation(ungated, requests_running=5, agent_enabled=False), TIMINGS, T0)
    assert move.action is Action.EVICT
    assert move.operation is not None
    assert move.operation.step == RecycleStep.RESTARTING
    assert move.event is not None
    assert move.event.reason == "NotDrained"
    assert "infercycle.io/serving" in move.event.message


def test_a_gated_pod_is_drained_before_anything_else() -> None:
    op = start_operation(POD, ("memory-leak: growth",), RestartStrategy.RECREATE, T0)
    move = next_move(op, Observation(POD, requests_running=5, named=False), TIMINGS, T0)
    assert move.action is Action.DRAIN


def test_a_deployment_pod_is_followed_through_its_replacement_not_its_name() -> None:
    op = start_operation(POD, ("memory-leak: growth",), RestartStrategy.RECREATE, T0)
    restarting = op.model_copy(update={"step": RecycleStep.RESTARTING, "restart_requested": True})
    gone = next_move(restarting, Observation(None, named=False), TIMINGS, T0 + 5)
    assert gone.action is Action.NONE
    assert gone.operation is not None
    assert gone.operation.step == RecycleStep.WAITING_READY
    waiting = gone.operation
    still = next_move(waiting, Observation(None, named=False, fleet_ready=False), TIMINGS, T0 + 10)
    assert still.operation == waiting
    assert still.waiting is not None
    assert "replacement" in still.waiting
    ready = next_move(waiting, Observation(None, named=False, fleet_ready=True), TIMINGS, T0 + 15)
    assert ready.action is Action.NONE  # the replacement was never drained
    assert ready.operation is not None
    assert ready.operation.step == RecycleStep.VERIFYING
    late = next_move(waiting, Observation(None, named=False, fleet_ready=False), TIMINGS, T0 + 400)
    assert late.record is not None
    assert late.record.result == RecycleResult.FAILED
    assert "replacement" in (late.record.message or "")


def test_a_named_pod_that_is_gone_after_eviction_is_waited_for_not_taken_as_restarted() -> None:
    op = start_operation(POD, ("memory-leak: growth",), RestartStrategy.RECREATE, T0)
    restarting = op.model_copy(update={"step": RecycleStep.RESTARTING, "restart_requested": True})
    move = next_move(restarting, Observation(None, named=True, fleet_ready=True), TIMINGS, T0 + 5)
    assert move.operation == restarting
