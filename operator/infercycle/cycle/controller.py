"""The fleet controller: runs one evaluation cycle for every watched InferenceDeployment.

Each cycle reads what the watches cached (``state.Registry``), builds the contexts and the query
set (``inputs``), asks Prometheus one query per distinct PromQL text for all pods at once,
evaluates each deployment (``evaluation``), lets the planner and the recycle machine decide, has
the executor perform (``execution``), and writes status (``reporting``). This module only puts
those rooms in order; one deployment's trouble never stops the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

from infercycle import fleet_metrics as metrics
from infercycle.api.resources import InferenceDeploymentSpec, RecycleRecord, RecycleResult
from infercycle.api.units import from_timestamp
from infercycle.cycle import evaluation as evaluating
from infercycle.cycle import inputs
from infercycle.cycle.agents import AgentConnections
from infercycle.cycle.children import attach_children, reconcile_children, release_attached
from infercycle.cycle.execution import Executor
from infercycle.cycle.ports import AgentConnector
from infercycle.cycle.reporting import (
    Reporter,
    build_status,
    invalid_status,
    normal,
    pause_of,
    reason_texts,
    rule_warnings,
    warning,
)
from infercycle.cycle.state import (
    IDLE,
    DeploymentContext,
    DeploymentKey,
    DeploymentState,
    Evaluation,
    QuerySet,
    RecyclingState,
    Registry,
)
from infercycle.health.engine import HealthEngine
from infercycle.kube.api import KubeApi
from infercycle.prom.reader import FleetSnapshot, PrometheusReader, range_series
from infercycle.recycle.fleet import PastRecycle, PodJudgement, PodState
from infercycle.recycle.planner import Guard, Plan, plan_recycle
from infercycle.recycle.units import judge_units
from infercycle.settings import OperatorSettings

log = logging.getLogger("infercycle.cycle")

CONCURRENT_DEPLOYMENTS = 8
"""Deployments handled at once within one cycle."""


def _error_kind(error: str) -> str:
    lowered = error.lower()
    if "timed out" in lowered:
        return "timeout"
    if "connection" in lowered or "refused" in lowered:
        return "unreachable"
    return "error"


def _past(record: RecycleRecord) -> PastRecycle:
    return PastRecycle(
        pod=record.pod,
        started_at=from_timestamp(record.started_at),
        finished_at=from_timestamp(record.finished_at),
        dry_run=record.result == RecycleResult.DRY_RUN,
    )


class FleetController:
    def __init__(
        self,
        settings: OperatorSettings,
        kube: KubeApi,
        reader: PrometheusReader,
        *,
        agents: AgentConnector | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.kube = kube
        self.reader = reader
        self.registry = Registry()
        self.states: dict[DeploymentKey, DeploymentState] = {}
        self.clock = clock
        self.reporter = Reporter(kube, clock)
        connect = agents or AgentConnections(kube, settings.agent_timeout_s)
        self.executor = Executor(
            kube,
            connect,
            self.reporter,
            lambda c, name: inputs.read_unit(kube, c, name),
            clock,
            may_act=self._leading,
        )
        self.last_cycle_at: float | None = None
        self._requests_reported = 0
        # Whether this replica may act (hold the leader Lease). A standby still evaluates every
        # deployment, so its engines are warm when it takes over, but writes and acts on none.
        self.may_act: Callable[[], bool] = lambda: True

    def _leading(self) -> bool:
        return self.may_act()  # looked up at each call: the elector is attached after creation

    # -- children and forgetting -------------------------------------------------------------

    def reconcile_children(self, body: dict[str, Any]) -> None:
        """Keep the owned objects in sync (``PolicyError``/``ValueError`` on a bad spec); an
        attached deployment owns no workload, only the agent token its sidecars mount."""
        spec = InferenceDeploymentSpec.model_validate(body.get("spec") or {})
        policy = inputs.resolve(
            self.registry, body, spec, cycle_interval_s=self.settings.cycle_interval_s
        )
        if spec.attached:
            attach_children(self.kube, body, spec)
            return
        wanted = reconcile_children(self.kube, body, spec, policy, self.settings.agent_image)
        key = (body["metadata"]["namespace"], body["metadata"]["name"])
        state = self.states.get(key)
        if state is not None:
            state.pdb_max_unavailable = wanted

    def release(self, body: dict[str, Any]) -> list[str]:
        """Before an attached deployment goes: return its drained pods to service."""
        return release_attached(self.kube, body)

    def forget(self, key: DeploymentKey) -> None:
        self.registry.forget(key)
        self.states.pop(key, None)
        for gauge in (metrics.METRICS_AVAILABLE, metrics.CIRCUIT_OPEN):
            with contextlib.suppress(KeyError):
                gauge.remove(*key)

    def state_for(self, context: DeploymentContext) -> DeploymentState:
        """The deployment's engine, created on first sight and told of policy changes."""
        assert context.policy is not None
        signature = context.policy.health
        state = self.states.get(context.key)
        if state is None:
            state = DeploymentState(HealthEngine(context.policy.health), signature)
            self.states[context.key] = state
        elif state.policy_signature != signature:
            state.engine.set_policy(context.policy.health)
            state.policy_signature = signature
        return state

    # -- the cycle ---------------------------------------------------------------------------

    async def read_range(
        self, promql: str, start: float, end: float, step: float
    ) -> evaluating.Series:
        return await asyncio.wait_for(
            asyncio.to_thread(range_series, self.reader, promql, start, end, step),
            timeout=self.settings.query_timeout_s * 3,
        )

    async def prepare(
        self, contexts: list[DeploymentContext]
    ) -> tuple[QuerySet, FleetSnapshot | None]:
        """Backfill new engines, then read this cycle's snapshot: shared by the cycle and
        ``infercycle explain``, so both see the same answers the same way."""
        queries = inputs.query_set(contexts)
        fresh = [c for c in contexts if c.policy is not None and c.key not in self.states]
        targets = [(context, self.state_for(context).engine) for context in fresh]
        await evaluating.backfill(
            targets, self.read_range, self.clock(), self.settings.cycle_interval_s
        )
        snapshot = await self.reader.snapshot(queries.by_label()) if contexts else None
        return queries, snapshot

    def evaluate(
        self,
        context: DeploymentContext,
        snapshot: FleetSnapshot | None,
        queries: QuerySet,
        now: float,
    ) -> Evaluation:
        return evaluating.evaluate(
            context,
            self.state_for(context).engine,
            snapshot,
            queries,
            now,
            self.settings.prometheus_url,
        )

    async def read_targets(self) -> None:
        """Read the workload of every attached deployment, once per cycle."""
        for key, body in list(self.registry.deployments.items()):
            try:
                spec = InferenceDeploymentSpec.model_validate(body.get("spec") or {})
            except ValueError:
                continue  # the context reports the invalid spec
            if spec.target_ref is None:
                self.registry.targets.pop(key, None)
                continue
            lookup = await asyncio.to_thread(inputs.read_target, self.kube, key, spec)
            self.registry.targets[key] = lookup

    async def run_cycle(self) -> FleetSnapshot | None:
        started = time.perf_counter()
        await self.read_targets()
        contexts = inputs.contexts(self.registry, self.settings.cycle_interval_s)
        queries, snapshot = await self.prepare(contexts)
        if snapshot is not None:
            metrics.CYCLE_QUERIES.set(snapshot.queries)
            for label, seconds in snapshot.durations.items():
                metrics.QUERY_SECONDS.labels(queries.signal_of(label)).observe(seconds)
            for label, error in snapshot.errors.items():
                metrics.QUERY_ERRORS.labels(queries.signal_of(label), _error_kind(error)).inc()
        now = self.clock()
        # Deployments are handled side by side, so an agent or API call that takes its full
        # timeout in one of them delays only that one.
        limit = asyncio.Semaphore(CONCURRENT_DEPLOYMENTS)

        async def handle(context: DeploymentContext) -> None:
            async with limit:
                try:
                    if self.may_act():
                        await self._handle(context, snapshot, queries, now)
                    elif context.policy is not None:
                        self.evaluate(context, snapshot, queries, now)  # keeps the engine warm
                except Exception:  # one deployment's trouble must not stop the others
                    log.exception("cycle failed for %s/%s", *context.key)

        await asyncio.gather(*(handle(context) for context in contexts))
        live = {context.key for context in contexts}
        for key in list(self.states):
            if key not in live:
                self.forget(key)
        metrics.API_REQUESTS.inc(self.kube.requests - self._requests_reported)
        self._requests_reported = self.kube.requests
        metrics.EVALUATION_SECONDS.observe(time.perf_counter() - started)
        self.last_cycle_at = time.time()
        metrics.LAST_CYCLE.set(self.last_cycle_at)
        return snapshot

    async def _handle(
        self,
        context: DeploymentContext,
        snapshot: FleetSnapshot | None,
        queries: QuerySet,
        now: float,
    ) -> None:
        namespace, name = context.key
        body = context.body
        if context.policy is None or context.spec is None:
            message = context.error or "invalid"
            state = self.states.get(context.key)
            await self.reporter.event_once(body, state, warning(context.error_reason, message))
            current = dict(body.get("status") or {})
            status = invalid_status(current, message, now, context.generation)
            await self.reporter.write_status(context, state, status, now)
            return
        state = self.state_for(context)
        policy, spec = context.policy, context.spec
        evaluation = self.evaluate(context, snapshot, queries, now)
        self._export(context, evaluation)
        if not evaluation.metrics.available:
            await self.reporter.event_once(
                body, state, warning("MetricsUnavailable", evaluation.metrics.message)
            )
        for event in rule_warnings(context, evaluation):
            await self.reporter.event_once(body, state, event)
        dry_run = policy.dry_run or self.settings.dry_run
        plan: Plan | None = None
        recycling = IDLE
        await self.executor.admit(context)
        if (body.get("status") or {}).get("operation"):
            recycling = await self.executor.advance(context, state, evaluation)
        else:
            await self.executor.undrain_orphans(context)
            units = context.units
            judgements = judge_units(
                units, [self._judgement(evaluation, pod) for pod in context.pods]
            )
            if evaluation.metrics.available:
                history = [
                    RecycleRecord.model_validate(r)
                    for r in (body.get("status") or {}).get("history") or []
                ]
                plan = plan_recycle(
                    now=now,
                    replicas=context.desired,
                    pods=units,
                    judgements=judgements,
                    history=[_past(record) for record in history],
                    disruption=policy.disruption,
                    paused=bool(spec.paused),
                    dry_run=dry_run,
                    noun="groups" if context.grouped else "pods",
                )
                recycling = await self._act_on_plan(context, state, evaluation, plan, dry_run, now)
            elif any(j.degraded for j in judgements):
                recycling = RecyclingState(
                    False,
                    "Idle",
                    f"metrics unavailable: no recycle ({evaluation.metrics.message})",
                )
        fresh = await asyncio.to_thread(self.kube.read_deployment, namespace, name)
        if fresh is None:
            return
        pause = pause_of(bool(spec.paused), plan)
        if pause.reason == "CircuitBreakerOpen":
            await self.reporter.event_once(body, state, warning(pause.reason, pause.message))
        metrics.CIRCUIT_OPEN.labels(namespace, name).set(
            1 if pause.reason == "CircuitBreakerOpen" else 0
        )
        status = build_status(
            context,
            state,
            evaluation,
            recycling,
            pause,
            current=dict(fresh.get("status") or {}),
            dry_run=dry_run,
            now=now,
        )
        await self.reporter.write_status(context, state, status, now)
        if spec.attached:
            return  # the user's workload: no PodDisruptionBudget of ours to keep in step
        wanted = policy.disruption.max_unavailable_for(max(spec.desired_replicas, 1))
        if state.pdb_max_unavailable is None:
            state.pdb_max_unavailable = wanted
        elif wanted != state.pdb_max_unavailable:
            await asyncio.to_thread(self.reconcile_children, fresh)

    async def _act_on_plan(  # noqa: PLR0917 - one call site, each argument distinct
        self,
        context: DeploymentContext,
        state: DeploymentState,
        evaluation: Evaluation,
        plan: Plan,
        dry_run: bool,
        now: float,
    ) -> RecyclingState:
        namespace, name = context.key
        for hold in plan.holds:
            metrics.GUARD_REFUSALS.labels(namespace, name, hold.guard.value).inc()
        if plan.candidate is not None:
            return await self.executor.start(
                context, state, evaluation, plan.candidate, dry_run=dry_run, now=now
            )
        if not plan.holds:
            return RecyclingState(False, "Idle", "no pod is degraded")
        hold = plan.holds[0]
        if hold.guard is not Guard.CIRCUIT_BREAKER:
            await self.reporter.event_once(
                context.body, state, normal("GuardRefused", hold.message)
            )
        return RecyclingState(False, "Idle", hold.message)

    @staticmethod
    def _judgement(evaluation: Evaluation, pod: PodState) -> PodJudgement:
        verdict = evaluation.verdict(pod)
        if verdict is None:
            return PodJudgement(pod.name, pod.uid, degraded=False)
        reasons = tuple(reason_texts(verdict))
        return PodJudgement(pod.name, pod.uid, verdict.degraded, reasons, float(len(reasons)))

    @staticmethod
    def _export(context: DeploymentContext, evaluation: Evaluation) -> None:
        namespace, name = context.key
        for pod in context.pods:
            verdict = evaluation.verdict(pod)
            metrics.POD_DEGRADED.labels(namespace, name, pod.name).set(
                1 if verdict is not None and verdict.degraded else 0
            )
        metrics.METRICS_AVAILABLE.labels(namespace, name).set(
            1 if evaluation.metrics.available else 0
        )
