"""Execution: performs what the recycle machine decided, through the ports, and nothing else.

For a deployment with a recycle in flight, ``Executor.advance`` loops: read the persisted
operation and the pod, ask ``recycle.machine.next_move``, persist the move's operation with a
version-checked write, perform its one action, and hand the action's outcome to the machine on
the next turn. Every decision (what next, when to give up, when to fall back from InPlace to
Recreate) is the machine's. A write that loses a race (HTTP 409) stops the loop: the next cycle
reads what won. ``start`` persists the first move of a recycle the planner chose;
``undrain_orphans`` returns pods drained with no recycle in flight.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from infercycle import fleet_metrics as metrics
from infercycle.api.resources import (
    MAX_HISTORY,
    RecycleOperation,
    RecycleRecord,
)
from infercycle.api.units import from_timestamp
from infercycle.cycle.ports import AgentConnector, EvictionOutcome, KubePort
from infercycle.cycle.reporting import Reporter, normal, warning
from infercycle.cycle.state import (
    DeploymentContext,
    DeploymentState,
    Evaluation,
    RecyclingState,
    UnitView,
)
from infercycle.errors import AgentClientError, ConflictError
from infercycle.recycle import machine
from infercycle.recycle.fleet import PodState
from infercycle.recycle.machine import Action, ActionOutcome, Move
from infercycle.recycle.planner import Candidate

log = logging.getLogger("infercycle.cycle")
# Steps tried in one cycle at most: enough to go from an answered checkpoint to the restart,
# or from Ready through the undrain to verifying, without looping on a confused cluster.
MAX_STEPS_PER_CYCLE = 6

# Reads the unit under recycle fresh from the API (``inputs.read_unit`` over the KubePort).
UnitReader = Callable[[DeploymentContext, str], UnitView]


def reason_label(reasons: tuple[str, ...] | list[str]) -> str:
    """Rule names only, so the metric's label values stay few."""
    names = sorted({reason.split(":", 1)[0] for reason in reasons})
    return ",".join(names)[:120] or "degraded"


class Executor:
    """Performs the recycle machine's moves for one cycle, through the ports."""

    def __init__(
        self,
        kube: KubePort,
        agents: AgentConnector,
        reporter: Reporter,
        read_unit: UnitReader,
        clock: Callable[[], float],
        *,
        may_act: Callable[[], bool] = lambda: True,
    ) -> None:
        self._kube = kube
        self._agents = agents
        self._reporter = reporter
        self._read_unit = read_unit
        self._clock = clock
        # Asked before every step: a replica that lost the leader Lease mid-recycle stops at
        # once, and the new leader resumes from the persisted operation.
        self._may_act = may_act

    # -- starting ----------------------------------------------------------------------------

    async def start(
        self,
        context: DeploymentContext,
        state: DeploymentState,
        evaluation: Evaluation,
        candidate: Candidate,
        *,
        dry_run: bool,
        now: float,
    ) -> RecyclingState:
        """Persist the first move of the recycle the planner chose, then advance it.

        The planner decided from the watch cache; the write is made against a fresh read, and
        only when that read still shows what the planner saw (no operation, the same history),
        so a lagging watch or a second operator can never start a second recycle."""
        assert context.spec is not None
        strategy = context.spec.strategy
        move = machine.start(candidate.pod, candidate.reasons, strategy, now, dry_run=dry_run)
        namespace, name = context.key
        fresh = await asyncio.to_thread(self._kube.read_deployment, namespace, name)
        if fresh is None:
            return RecyclingState(False, "Idle", "deployment deleted")
        seen = fresh.get("status") or {}
        if seen.get("operation"):
            return RecyclingState(True, "InProgress", "a recycle was started meanwhile")
        planned_on = (context.body.get("status") or {}).get("history") or []
        if (seen.get("history") or []) != planned_on:
            return RecyclingState(False, "Idle", "status changed meanwhile; re-planning next cycle")
        if move.finishes:  # dry-run: the decision is recorded, nothing is done
            if await self.persist(context, None, move.record, fresh=fresh):
                metrics.RECYCLES.labels(
                    namespace, name, reason_label(candidate.reasons), strategy.value, "DryRun"
                ).inc()
                if move.event is not None:
                    await self._reporter.event(context.body, move.event)
            return RecyclingState(False, "DryRun", move.waiting or "dry-run")
        if not await self.persist(context, move.operation, None, fresh=fresh):
            return RecyclingState(False, "Idle", "status changed meanwhile; retrying next cycle")
        if move.event is not None:
            await self._reporter.event(context.body, move.event)
        return await self.advance(context, state, evaluation)

    # -- advancing ---------------------------------------------------------------------------

    async def advance(
        self, context: DeploymentContext, state: DeploymentState, evaluation: Evaluation
    ) -> RecyclingState:
        """Advance the persisted operation by as many steps as can be done right now."""
        assert context.spec is not None
        assert context.policy is not None
        namespace, name = context.key
        timings = context.policy.recycle
        agent_on = context.agent_enabled
        waiting = "recycle in flight"
        outcome: ActionOutcome | None = None
        expected: RecycleOperation | None = None
        for _ in range(MAX_STEPS_PER_CYCLE):
            if not self._may_act():
                return RecyclingState(
                    True, "InProgress", "no longer the leader; the leader resumes"
                )
            fresh = await asyncio.to_thread(self._kube.read_deployment, namespace, name)
            if fresh is None:
                return RecyclingState(False, "Idle", "deployment deleted")
            raw = (fresh.get("status") or {}).get("operation")
            if not raw:
                return RecyclingState(False, "Idle", "recycle finished")
            op = RecycleOperation.model_validate(raw)
            if expected is not None and op != expected:
                # Someone else wrote the operation since our last move: our outcome is not theirs.
                outcome = None
            view = await asyncio.to_thread(self._read_unit, context, op.pod)
            pod = view.unit
            metrics_ok = evaluation.metrics.available
            seen = machine.Observation(
                pod=pod,
                requests_running=evaluation.requests_running_on(op.pod),
                degraded=evaluation.degraded(pod) if metrics_ok and pod is not None else None,
                agent_enabled=agent_on,
                metrics_ok=metrics_ok,
                outcome=outcome,
                named=context.named,
                fleet_ready=view.fleet_ready,
            )
            now = self._clock()
            move = machine.next_move(op, seen, timings, now)
            metrics.OPERATION_AGE.labels(namespace, name, op.step).set(
                now - from_timestamp(op.started_at)
            )
            if move.waiting:
                waiting = move.waiting
            outcome, go_on = await self._perform(context, state, fresh, op, move, pod)
            expected = move.operation
            if move.finishes and move.record is not None and not go_on:
                done = f"{move.record.result} for {op.pod}: {move.record.message or ''}"
                return RecyclingState(False, "Idle", done.rstrip(": "))
            if not go_on:
                break
        return RecyclingState(True, "InProgress", waiting)

    async def _perform(  # noqa: PLR0917 - one call site, each argument distinct
        self,
        context: DeploymentContext,
        state: DeploymentState,
        fresh: dict[str, Any],
        op: RecycleOperation,
        move: Move,
        pod: PodState | None,
    ) -> tuple[ActionOutcome | None, bool]:
        """Persist ``move`` and perform its action; the outcome, and whether to go on now."""
        namespace, name = context.key
        if move.finishes:
            # Undrain first, so a crash here can never leave the pod out of service.
            if move.action is Action.UNDRAIN and pod is not None:
                await self._serve(context, op.pod, pod.uid, serving=True)
            if not await self.persist(context, None, move.record, clear=True, fresh=fresh):
                return None, False
            if move.record is not None:
                metrics.RECYCLES.labels(
                    namespace,
                    name,
                    reason_label(op.reasons),
                    move.record.strategy,
                    move.record.result,
                ).inc()
                metrics.OPERATION_AGE.labels(namespace, name, op.step).set(0)
            if move.event is not None:
                await self._reporter.event(fresh, move.event)
            return None, False
        current = move.operation
        assert current is not None
        if current != op and not await self.persist(context, current, None, fresh=fresh):
            return None, False
        if move.event is not None and move.action is not Action.EVICT:
            await self._reporter.event(fresh, move.event)
        action = move.action
        if action is Action.NONE:
            return None, current != op
        if action is Action.DRAIN:
            await self._serve(context, current.pod, current.uid, serving=False)
            return None, False
        if action is Action.UNDRAIN:
            uid = pod.uid if pod is not None else current.new_uid or current.uid
            await self._serve(context, current.pod, uid, serving=True)
            return ActionOutcome(Action.UNDRAIN, ok=True), True
        if action is Action.CHECKPOINT:
            return await self._checkpoint(context, pod), True
        if action is Action.RESTART_IN_PLACE:
            done = await self._restart_in_place(context, pod)
            if not done.ok:
                await self._reporter.event(
                    fresh, warning("AgentUnavailable", done.error or "agent unavailable")
                )
            return done, not done.ok
        # Action.EVICT
        outcome = await asyncio.to_thread(self._kube.evict, namespace, current.pod, current.uid)
        if outcome is EvictionOutcome.BLOCKED:
            await self._reporter.event_once(
                fresh,
                state,
                warning(
                    "EvictionBlocked",
                    f"eviction of {current.pod} refused by its PodDisruptionBudget; waiting",
                ),
            )
        elif move.event is not None:
            await self._reporter.event(fresh, move.event)
        return ActionOutcome(Action.EVICT, ok=outcome is not EvictionOutcome.BLOCKED), False

    async def _checkpoint(self, context: DeploymentContext, pod: PodState | None) -> ActionOutcome:
        agent = self._agents(context.body, pod.pod_ip if pod is not None else None)
        if agent is None:
            return ActionOutcome(
                Action.CHECKPOINT, ok=False, error="the pod has no IP, so its agent is unreachable"
            )
        try:
            record = await agent.checkpoint()
        except AgentClientError as error:
            return ActionOutcome(Action.CHECKPOINT, ok=False, error=str(error))
        return ActionOutcome(Action.CHECKPOINT, ok=True, checkpoint=record)

    async def _restart_in_place(
        self, context: DeploymentContext, pod: PodState | None
    ) -> ActionOutcome:
        agent = self._agents(context.body, pod.pod_ip if pod is not None else None)
        if agent is None:
            return ActionOutcome(
                Action.RESTART_IN_PLACE,
                ok=False,
                error="the pod has no IP, so its agent is unreachable",
            )
        try:
            await agent.restart()
        except AgentClientError as error:
            return ActionOutcome(
                Action.RESTART_IN_PLACE,
                ok=False,
                error=str(error),
                unanswered=error.may_have_acted,
            )
        return ActionOutcome(Action.RESTART_IN_PLACE, ok=True)

    async def _serve(
        self, context: DeploymentContext, pod: str, uid: str, *, serving: bool
    ) -> bool:
        """Drain or undrain one pod: the serving label of an owned pod, the readiness gate
        condition of an attached one."""
        namespace = context.key[0]
        if context.attached:
            return await asyncio.to_thread(
                self._kube.set_readiness_gate, namespace, pod, uid, serving
            )
        return await asyncio.to_thread(self._kube.set_serving, namespace, pod, uid, serving)

    # -- between recycles --------------------------------------------------------------------

    async def admit(self, context: DeploymentContext) -> None:
        """An attached pod with the readiness gate is not Ready until its gate condition is set:
        set it on every new pod, recycles in flight or not, so rollouts and recreated pods
        come into service as they would without the gate."""
        for pod in context.pods:
            if pod.awaiting_gate and not pod.terminating:
                log.info("admitting pod %s/%s through its readiness gate", context.key[0], pod.name)
                await self._serve(context, pod.name, pod.uid, serving=True)

    async def undrain_orphans(self, context: DeploymentContext) -> None:
        """No operation holds a pod drained between recycles: put strays back in service.

        Only once a fresh read confirms that no recycle is in flight: a lagging watch must never
        put the pod being recycled back in service."""
        namespace, name = context.key
        strays = [pod for pod in context.pods if not pod.serving and not pod.terminating]
        if not strays:
            return
        fresh = await asyncio.to_thread(self._kube.read_deployment, namespace, name)
        if fresh is None or (fresh.get("status") or {}).get("operation"):
            return
        for pod in strays:
            log.info("returning drained pod %s/%s to service", namespace, pod.name)
            await self._serve(context, pod.name, pod.uid, serving=True)
            await self._reporter.event(
                context.body,
                normal(
                    "Undrained",
                    f"{pod.name} was drained with no recycle in flight; returned to service",
                ),
            )

    # -- persistence -------------------------------------------------------------------------

    async def persist(
        self,
        context: DeploymentContext,
        operation: RecycleOperation | None,
        record: RecycleRecord | None,
        *,
        clear: bool = False,
        fresh: dict[str, Any] | None = None,
    ) -> bool:
        """Version-checked write of the operation and history: False when someone wrote first."""
        namespace, name = context.key
        current = fresh or await asyncio.to_thread(self._kube.read_deployment, namespace, name)
        if current is None:
            return False
        status: dict[str, Any] = {}
        if operation is not None:
            status["operation"] = operation.to_api()
        elif clear:
            status["operation"] = None
        if record is not None:
            history = list((current.get("status") or {}).get("history") or [])
            history.append(record.to_api())
            status["history"] = history[-MAX_HISTORY:]
        try:
            await asyncio.to_thread(
                self._kube.patch_status,
                namespace,
                name,
                status,
                current["metadata"].get("resourceVersion"),
            )
        except ConflictError:
            log.info("%s/%s changed while writing the recycle step; retrying", namespace, name)
            return False
        return True
