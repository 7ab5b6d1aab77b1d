"""The fleet controller: one evaluation cycle for every watched InferenceDeployment.

Each cycle reads what the watches cached (deployments, their pods, policies, namespaces), asks
Prometheus one query per distinct signal query for all pods at once, feeds the health engines,
advances at most one recycle per deployment, and writes status. Every decision is made by pure
code in ``health/`` and ``recycle/``; this module only gathers inputs and applies outputs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from infercycle import fleet_metrics as metrics
from infercycle.agent.client import AgentClient, AgentError, AgentUnavailable
from infercycle.api.resolver import PolicyError, resolve_policy
from infercycle.api.resources import (
    MAX_HISTORY,
    MAX_POD_SUMMARIES,
    CheckpointRecord,
    InferenceDeploymentSpec,
    RecycleOperation,
    RecycleRecord,
    RecycleResult,
    RestartStrategy,
)
from infercycle.api.selection import choose_policy
from infercycle.api.spec import RecyclePolicySpec
from infercycle.api.units import from_timestamp, to_timestamp
from infercycle.api.values import EffectivePolicy
from infercycle.health.engine import HealthEngine, PodKey, Verdict
from infercycle.kube import workload
from infercycle.kube.api import ConflictError, EvictionOutcome, KubeApi, pod_state
from infercycle.prom.reader import FleetSnapshot, PrometheusReader, range_series
from infercycle.recycle import machine
from infercycle.recycle.conditions import set_condition
from infercycle.recycle.fleet import PastRecycle, PodJudgement, PodState
from infercycle.recycle.planner import Guard, Plan, plan_recycle
from infercycle.settings import OperatorSettings

log = logging.getLogger("infercycle.controller")
DeploymentKey = tuple[str, str]
STATUS_REFRESH_S = 300.0
HANDLED_ANNOTATION = "infercycle.io/last-handled-configuration"
EVENT_REPEAT_S = 600.0


@dataclass
class Registry:
    """What the watches have seen; handlers keep it current, the cycle only reads it."""

    deployments: dict[DeploymentKey, dict[str, Any]] = field(default_factory=dict)
    pods: dict[DeploymentKey, dict[str, dict[str, Any]]] = field(default_factory=dict)
    policies: dict[str, dict[str, Any]] = field(default_factory=dict)
    namespaces: dict[str, dict[str, str]] = field(default_factory=dict)

    def put_pod(self, pod: dict[str, Any], deleted: bool) -> None:
        metadata = pod.get("metadata") or {}
        owner = (metadata.get("labels") or {}).get(workload.DEPLOYMENT_LABEL)
        if not owner:
            return
        key = (metadata.get("namespace", ""), owner)
        pods = self.pods.setdefault(key, {})
        if deleted:
            current = pods.get(metadata.get("name", ""))
            if current is not None and current["metadata"].get("uid") == metadata.get("uid"):
                pods.pop(metadata.get("name", ""), None)
        else:
            pods[metadata.get("name", "")] = pod


@dataclass
class DeploymentState:
    """In-memory companions of one deployment: its engine and what was last said about it."""

    engine: HealthEngine
    policy_signature: object
    last_status: dict[str, Any] = field(default_factory=dict)
    last_status_at: float = 0.0
    events: dict[tuple[str, str], float] = field(default_factory=dict)
    since: dict[str, tuple[str, float]] = field(default_factory=dict)
    pdb_max_unavailable: int | None = None


@dataclass(frozen=True)
class Context:
    key: DeploymentKey
    body: dict[str, Any]
    spec: InferenceDeploymentSpec | None
    policy: EffectivePolicy | None
    error: str | None
    pods: tuple[PodState, ...]


class FleetController:
    def __init__(self, settings: OperatorSettings, kube: KubeApi, reader: PrometheusReader) -> None:
        self.settings = settings
        self.kube = kube
        self.reader = reader
        self.registry = Registry()
        self.states: dict[DeploymentKey, DeploymentState] = {}
        self.last_cycle: dict[str, float] = {}
        self.running_requests: dict[tuple[str, str], float] = {}
        self.requests_reported = 0

    # ---------------------------------------------------------------------------------------
    # Children: StatefulSet, Services, PodDisruptionBudget, agent Secret.

    def reconcile_children(self, body: dict[str, Any]) -> None:
        metadata = body["metadata"]
        name, namespace, uid = metadata["name"], metadata["namespace"], metadata["uid"]
        spec = InferenceDeploymentSpec.model_validate(body.get("spec") or {})
        policy = self._resolve(body, spec)
        owner = workload.owner_reference(name, uid)
        if workload.agent_enabled(spec) and spec.session_store is not None:
            self.kube.ensure_agent_token(name, namespace, owner)
        image = self.settings.agent_image
        self.kube.apply(workload.headless_service(name, namespace, uid, spec))
        self.kube.apply(workload.client_service(name, namespace, uid, spec))
        self.kube.apply(workload.disruption_budget(name, namespace, uid, spec, policy))
        self.kube.apply(workload.stateful_set(name, namespace, uid, spec, image))
        state = self.states.get((namespace, name))
        if state is not None:
            state.pdb_max_unavailable = policy.disruption.max_unavailable_for(max(spec.replicas, 1))

    def forget(self, key: DeploymentKey) -> None:
        self.registry.deployments.pop(key, None)
        self.registry.pods.pop(key, None)
        self.states.pop(key, None)
        for gauge in (metrics.METRICS_AVAILABLE, metrics.CIRCUIT_OPEN):
            with contextlib.suppress(KeyError):
                gauge.remove(*key)

    # ---------------------------------------------------------------------------------------
    # Policy.

    def _policies(self) -> dict[str, RecyclePolicySpec]:
        parsed: dict[str, RecyclePolicySpec] = {}
        for name, spec in self.registry.policies.items():
            try:
                parsed[name] = RecyclePolicySpec.model_validate(spec or {})
            except ValidationError as error:
                log.warning(
                    "RecyclePolicy %s is invalid and ignored: %s", name, _first_error(error)
                )
        return parsed

    def _resolve(self, body: dict[str, Any], spec: InferenceDeploymentSpec) -> EffectivePolicy:
        metadata = body["metadata"]
        choice = choose_policy(
            policy_ref=spec.policy_ref.name if spec.policy_ref else None,
            deployment_labels=metadata.get("labels") or {},
            namespace_labels=self.registry.namespaces.get(metadata["namespace"], {}),
            policies=self._policies(),
        )
        if choice.error:
            raise PolicyError(choice.error)
        sources: tuple[str, ...] = (f"RecyclePolicy/{choice.name}",) if choice.name else ()
        sources += (f"InferenceDeployment/{metadata['name']}",)
        return resolve_policy(choice.spec, spec.policy_layer(), sources=sources)

    def _context(self, key: DeploymentKey, body: dict[str, Any]) -> Context:
        spec: InferenceDeploymentSpec | None = None
        policy: EffectivePolicy | None = None
        error: str | None = None
        try:
            spec = InferenceDeploymentSpec.model_validate(body.get("spec") or {})
            policy = self._resolve(body, spec)
        except ValidationError as problem:
            error = f"spec is invalid: {_first_error(problem)}"
        except (PolicyError, ValueError) as problem:
            error = str(problem)
        server = workload.server_container_name(spec) if spec else ""
        pods = tuple(
            pod_state(pod, server)
            for pod in sorted(self.registry.pods.get(key, {}).values(), key=_pod_name)
        )
        return Context(key, body, spec, policy, error, pods)

    # ---------------------------------------------------------------------------------------
    # The cycle.

    async def run_cycle(self) -> FleetSnapshot | None:
        started = time.perf_counter()
        # A deployment enters the cycle once kopf has handled it: writing its status earlier
        # races kopf's own first patches of the object (finalizer, diff base).
        contexts = [
            self._context(key, body)
            for key, body in list(self.registry.deployments.items())
            if HANDLED_ANNOTATION in ((body.get("metadata") or {}).get("annotations") or {})
        ]
        queries: dict[str, str] = {}
        for context in contexts:
            if context.policy is None:
                continue
            health = context.policy.health
            for signal in (*health.signals, "requests_running"):
                promql = health.queries.get(signal)
                if promql:
                    queries[_query_label(signal, promql, queries)] = promql
        await self._backfill(
            [c for c in contexts if c.policy is not None and c.key not in self.states]
        )
        snapshot = await self.reader.snapshot(queries) if contexts else None
        if snapshot is not None:
            self.running_requests = {}
            for label, values in snapshot.signals.items():
                if label.split("#")[0] == "requests_running":
                    self.running_requests.update(values)
            metrics.CYCLE_QUERIES.set(snapshot.queries)
            for label, seconds in snapshot.durations.items():
                metrics.QUERY_SECONDS.labels(label.split("#")[0]).observe(seconds)
            for label, error in snapshot.errors.items():
                metrics.QUERY_ERRORS.labels(label.split("#")[0], _error_kind(error)).inc()
        now = time.time()
        for context in contexts:
            try:
                await self._handle(context, snapshot, queries, now)
            except Exception:  # one deployment's trouble must not stop the others
                log.exception("cycle failed for %s/%s", *context.key)
        live = {context.key for context in contexts}
        for key in list(self.states):
            if key not in live:
                self.forget(key)
        elapsed = time.perf_counter() - started
        metrics.API_REQUESTS.inc(self.kube.requests - self.requests_reported)
        self.requests_reported = self.kube.requests
        metrics.EVALUATION_SECONDS.observe(elapsed)
        metrics.LAST_CYCLE.set(time.time())
        self.last_cycle = {"seconds": elapsed, "deployments": len(contexts)}
        return snapshot

    async def _backfill(self, contexts: list[Context]) -> None:
        """New engines start from Prometheus' history, not from nothing: after an operator
        restart a leak that was 50 minutes into its 1 h window is still 50 minutes in."""
        if not contexts:
            return
        for context in contexts:
            self._state(context)
        end = time.time()
        step = self.settings.cycle_interval_s
        wanted: dict[str, list[tuple[Context, str]]] = {}
        longest = 0.0
        for context in contexts:
            assert context.policy is not None
            health = context.policy.health
            longest = max(longest, health.longest_window_s)
            for signal in health.signals:
                promql = health.queries.get(signal)
                if promql:
                    wanted.setdefault(promql, []).append((context, signal))
        start = end - longest

        async def one(promql: str) -> dict[tuple[str, str], list[tuple[float, float]]]:
            try:
                return await asyncio.wait_for(
                    asyncio.to_thread(range_series, self.reader, promql, start, end, step),
                    timeout=self.settings.query_timeout_s * 3,
                )
            except Exception as error:
                log.warning("history not loaded for %s: %s", promql[:80], error)
                return {}

        texts = list(wanted)
        answers = await asyncio.gather(*(one(text) for text in texts))
        for text, series in zip(texts, answers, strict=True):
            for context, signal in wanted[text]:
                engine = self.states[context.key].engine
                for pod in context.pods:
                    points = series.get((context.key[0], pod.name), [])
                    started = pod.started_at or end
                    usable = [(t, v) for t, v in points if t >= started]
                    if usable and pod.running:
                        engine.observe_series(_key(pod), started, signal, usable)

    def _state(self, context: Context) -> DeploymentState:
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

    async def _handle(
        self,
        context: Context,
        snapshot: FleetSnapshot | None,
        queries: Mapping[str, str],
        now: float,
    ) -> None:
        namespace, name = context.key
        body = context.body
        generation = body["metadata"].get("generation")
        status: dict[str, Any] = dict(body.get("status") or {})
        conditions: list[dict[str, Any]] = list(status.get("conditions") or [])
        if context.policy is None or context.spec is None:
            conditions = set_condition(
                conditions,
                type_="Ready",
                status=False,
                reason="ReconcileFailed",
                message=context.error or "invalid",
                now=now,
                generation=generation,
            )
            await self._event_once(body, "Warning", "PolicyInvalid", context.error or "invalid")
            await self._write_status(context, {"conditions": conditions}, now, force=False)
            return
        state = self._state(context)
        policy = context.policy
        spec = context.spec
        verdicts, metrics_ok, metrics_reason, metrics_message = self._evaluate(
            context, state, snapshot, queries, now
        )
        judgements = [_judgement(pod, verdicts.get(_key(pod))) for pod in context.pods]
        degraded = [j for j in judgements if j.degraded]
        for pod in context.pods:
            verdict = verdicts.get(_key(pod))
            metrics.POD_DEGRADED.labels(namespace, name, pod.name).set(
                1 if verdict is not None and verdict.degraded else 0
            )
        metrics.METRICS_AVAILABLE.labels(namespace, name).set(1 if metrics_ok else 0)
        if not metrics_ok:
            await self._event_once(body, "Warning", "MetricsUnavailable", metrics_message)

        operation_raw = status.get("operation")
        history = [RecycleRecord.model_validate(r) for r in status.get("history") or []]
        dry_run = policy.dry_run or self.settings.dry_run
        paused = bool(spec.paused)
        recycling: tuple[bool, str, str] = (False, "Idle", "no recycle in flight")
        plan: Plan | None = None

        if operation_raw:
            recycling = await self._advance(context, state, verdicts, metrics_ok, now)
        else:
            await self._undrain_orphans(context)
            if metrics_ok:
                plan = plan_recycle(
                    now=now,
                    replicas=spec.replicas,
                    pods=context.pods,
                    judgements=judgements,
                    history=[_past(record) for record in history],
                    disruption=policy.disruption,
                    paused=paused,
                    dry_run=dry_run,
                )
                recycling = await self._act_on_plan(context, plan, dry_run, now)
            elif degraded:
                recycling = (False, "Idle", f"metrics unavailable: no recycle ({metrics_message})")

        fresh = await asyncio.to_thread(self.kube.read_deployment, namespace, name)
        if fresh is None:
            return
        status = dict(fresh.get("status") or {})
        conditions = list(status.get("conditions") or [])
        ready_pods = sum(1 for pod in context.pods if pod.ready and pod.running)
        conditions = set_condition(
            conditions,
            type_="Ready",
            status=ready_pods >= spec.replicas,
            reason="Reconciled" if ready_pods >= spec.replicas else "ReplicasNotReady",
            message=f"{ready_pods}/{spec.replicas} pods ready",
            now=now,
            generation=generation,
        )
        degraded_names = ", ".join(j.name for j in degraded)
        conditions = set_condition(
            conditions,
            type_="Degraded",
            status=bool(degraded),
            reason="PodsDegraded" if degraded else "AllHealthy",
            message=f"degraded: {degraded_names}" if degraded else "no pod is degraded",
            now=now,
            generation=generation,
        )
        conditions = set_condition(
            conditions,
            type_="Recycling",
            status=recycling[0],
            reason=recycling[1],
            message=recycling[2],
            now=now,
            generation=generation,
        )
        conditions = set_condition(
            conditions,
            type_="MetricsAvailable",
            status=metrics_ok,
            reason=metrics_reason,
            message=metrics_message,
            now=now,
            generation=generation,
        )
        paused_reason, paused_message = "NotPaused", "recycling is enabled"
        if paused:
            paused_reason, paused_message = "PausedBySpec", "spec.paused is true"
        elif plan is not None and plan.circuit_open:
            paused_reason, paused_message = "CircuitBreakerOpen", plan.holds[0].message
            await self._event_once(body, "Warning", "CircuitBreakerOpen", paused_message)
        elif plan is not None and plan.flapping:
            paused_reason, paused_message = "PodFlapping", plan.holds[0].message
        metrics.CIRCUIT_OPEN.labels(namespace, name).set(
            1 if paused_reason == "CircuitBreakerOpen" else 0
        )
        conditions = set_condition(
            conditions,
            type_="Paused",
            status=paused_reason != "NotPaused",
            reason=paused_reason,
            message=paused_message,
            now=now,
            generation=generation,
        )
        summaries = self._pod_summaries(state, context.pods, verdicts, now)
        policy_text = " <- ".join(policy.sources) + (" (dry-run)" if dry_run else "")
        await self._write_status(
            context,
            {
                "observedGeneration": generation,
                "conditions": conditions,
                "replicas": len(context.pods),
                "readyReplicas": ready_pods,
                "degradedReplicas": len(degraded),
                "selector": workload.label_selector_string(name),
                "policy": policy_text[:1024],
                "pods": summaries,
                "lastEvaluation": to_timestamp(now),
            },
            now,
            force=False,
            fresh=fresh,
        )
        if state.pdb_max_unavailable is not None:
            wanted = policy.disruption.max_unavailable_for(max(spec.replicas, 1))
            if wanted != state.pdb_max_unavailable:
                await asyncio.to_thread(self.reconcile_children, fresh)
        else:
            state.pdb_max_unavailable = policy.disruption.max_unavailable_for(max(spec.replicas, 1))

    # ---------------------------------------------------------------------------------------
    # Evaluation.

    def _evaluate(
        self,
        context: Context,
        state: DeploymentState,
        snapshot: FleetSnapshot | None,
        queries: Mapping[str, str],
        now: float,
    ) -> tuple[dict[PodKey, Verdict], bool, str, str]:
        assert context.policy is not None
        health = context.policy.health
        namespace = context.key[0]
        running = [pod for pod in context.pods if pod.running and not pod.terminating]
        state.engine.retain([_key(pod) for pod in running])
        if snapshot is None or not running:
            return {}, True, "NoData", "no running pods to evaluate"
        if snapshot.unreachable:
            error = next(iter(snapshot.errors.values()), "unreachable")
            return (
                {},
                False,
                "PrometheusUnreachable",
                f"Prometheus at {self.settings.prometheus_url} is unreachable: {error}",
            )
        wanted = {
            _query_label_lookup(signal, health.queries.get(signal, ""), queries)
            for signal in health.signals
        }
        failed = {label: error for label, error in snapshot.errors.items() if label in wanted}
        if failed:
            label, error = next(iter(failed.items()))
            return {}, False, "PrometheusError", f"query for {label.split('#')[0]} failed: {error}"
        sample_times = [
            snapshot.sample_time[(namespace, pod.name)]
            for pod in running
            if (namespace, pod.name) in snapshot.sample_time
        ]
        if not sample_times:
            return {}, False, "NoData", "Prometheus has no samples for these pods yet"
        newest = max(sample_times)
        if now - newest > health.stale_after_s:
            return (
                {},
                False,
                "StaleData",
                f"newest sample is {now - newest:.0f}s old "
                f"(staleAfter {health.stale_after_s:.0f}s)",
            )
        by_signal = {
            signal: snapshot.signals.get(
                _query_label_lookup(signal, health.queries.get(signal, ""), queries), {}
            )
            for signal in health.signals
        }
        for pod in running:
            ref = (namespace, pod.name)
            sampled = snapshot.sample_time.get(ref)
            fresh = sampled is not None and now - sampled <= health.stale_after_s
            signals = {
                signal: (values.get(ref) if fresh else None) for signal, values in by_signal.items()
            }
            state.engine.observe(now, _key(pod), pod.started_at or now, signals)
        verdicts = state.engine.evaluate(now)
        return verdicts, True, "Queried", f"{snapshot.queries} queries, {len(running)} pods"

    def _pod_summaries(
        self,
        state: DeploymentState,
        pods: tuple[PodState, ...],
        verdicts: Mapping[PodKey, Verdict],
        now: float,
    ) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        for pod in pods:
            verdict = verdicts.get(_key(pod))
            label = _verdict_label(verdict)
            previous = state.since.get(pod.name)
            if previous is None or previous[0] != f"{pod.uid}:{label}":
                state.since[pod.name] = (f"{pod.uid}:{label}", now)
            row: dict[str, Any] = {
                "name": pod.name,
                "uid": pod.uid,
                "verdict": label,
                "since": to_timestamp(state.since[pod.name][1]),
            }
            reasons = _reason_texts(verdict)
            if reasons:
                row["reasons"] = [text[:512] for text in reasons[:8]]
            rows.append(row)
        for name in set(state.since) - {pod.name for pod in pods}:
            del state.since[name]
        rows.sort(key=lambda row: (row["verdict"] != "Degraded", row["name"]))
        return rows[:MAX_POD_SUMMARIES]

    # ---------------------------------------------------------------------------------------
    # Recycling.

    async def _act_on_plan(
        self, context: Context, plan: Plan, dry_run: bool, now: float
    ) -> tuple[bool, str, str]:
        namespace, name = context.key
        for hold in plan.holds:
            metrics.GUARD_REFUSALS.labels(namespace, name, hold.guard.value).inc()
        if plan.candidate is None:
            if plan.holds:
                hold = plan.holds[0]
                if hold.guard not in (Guard.CIRCUIT_BREAKER,):
                    await self._event_once(context.body, "Normal", "GuardRefused", hold.message)
                return False, "Idle", hold.message
            return False, "Idle", "no pod is degraded"
        assert context.spec is not None
        candidate = plan.candidate
        strategy = RestartStrategy(context.spec.restart_strategy or RestartStrategy.IN_PLACE)
        reason_text = "; ".join(candidate.reasons) or "degraded"
        if dry_run:
            record = RecycleRecord(
                pod=candidate.pod.name,
                uid=candidate.pod.uid,
                result=RecycleResult.DRY_RUN,
                strategy=strategy,
                started_at=to_timestamp(now),
                finished_at=to_timestamp(now),
                reasons=list(candidate.reasons[:8]),
                message="dry-run: decided, not acted on",
            )
            if await self._persist(context, None, record, clear=False):
                metrics.RECYCLES.labels(
                    namespace, name, _reason_label(candidate.reasons), strategy.value, "DryRun"
                ).inc()
                await self._event(
                    context.body,
                    "Normal",
                    "DryRunRecycle",
                    f"would recycle {candidate.pod.name}: {reason_text}",
                )
            return False, "DryRun", f"would recycle {candidate.pod.name}: {reason_text}"
        operation = machine.start_operation(candidate.pod, candidate.reasons, strategy, now)
        if not await self._persist(context, operation, None):
            return False, "Idle", "status changed meanwhile; retrying next cycle"
        await self._event(
            context.body,
            "Normal",
            "RecycleStarted",
            f"recycling {candidate.pod.name} ({strategy.value}): {reason_text}",
        )
        return await self._advance(context, self.states[context.key], {}, True, now)

    async def _advance(
        self,
        context: Context,
        state: DeploymentState,
        verdicts: Mapping[PodKey, Verdict],
        metrics_ok: bool,
        now: float,
    ) -> tuple[bool, str, str]:
        """Advance the persisted operation by as many steps as can be done right now."""
        namespace, name = context.key
        assert context.spec is not None
        assert context.policy is not None
        timings = context.policy.recycle
        agent_on = workload.agent_enabled(context.spec) and context.spec.session_store is not None
        waiting = "recycle in flight"
        for _ in range(6):
            fresh = await asyncio.to_thread(self.kube.read_deployment, namespace, name)
            if fresh is None:
                return False, "Idle", "deployment deleted"
            raw = (fresh.get("status") or {}).get("operation")
            if not raw:
                return False, "Idle", "recycle finished"
            op = RecycleOperation.model_validate(raw)
            pod = next((p for p in context.pods if p.name == op.pod), None)
            live = await asyncio.to_thread(self.kube.read_pod, namespace, op.pod)
            server = workload.server_container_name(context.spec)
            pod = pod_state(live, server) if live is not None else None
            verdict = verdicts.get(_key(pod)) if pod is not None else None
            seen = machine.Observation(
                pod=pod,
                requests_running=self._requests_running(context, op.pod),
                degraded=(verdict.degraded if verdict is not None else None)
                if metrics_ok
                else None,
                agent_enabled=agent_on,
                metrics_ok=metrics_ok,
            )
            move = machine.next_move(op, seen, timings, now)
            step_label = op.step
            metrics.OPERATION_AGE.labels(namespace, name, step_label).set(
                now - from_timestamp(op.started_at)
            )
            moved = await self._apply_move(context, fresh, op, move, pod, now)
            if move.waiting:
                waiting = move.waiting
            if not moved:
                break
        return True, "InProgress", waiting

    async def _apply_move(  # noqa: PLR0917 - one call site, each argument distinct
        self,
        context: Context,
        fresh: dict[str, Any],
        op: RecycleOperation,
        move: machine.Move,
        pod: PodState | None,
        now: float,
    ) -> bool:
        """Persist and perform one move; True when the next step can be tried at once."""
        namespace, name = context.key
        body = fresh
        if move.operation is None:
            # Finishing: undrain first, so a crash here can never leave the pod out of service.
            if move.action is machine.Action.UNDRAIN and pod is not None:
                await asyncio.to_thread(self.kube.set_serving, namespace, op.pod, pod.uid, True)
            if not await self._persist(context, None, move.record, clear=True, fresh=fresh):
                return False
            if move.record is not None:
                metrics.RECYCLES.labels(
                    namespace,
                    name,
                    _reason_label(tuple(op.reasons)),
                    move.record.strategy,
                    move.record.result,
                ).inc()
                metrics.OPERATION_AGE.labels(namespace, name, op.step).set(0)
            if move.event:
                await self._event(body, *move.event)
            return False
        if move.operation != op and not await self._persist(
            context, move.operation, None, fresh=fresh
        ):
            return False
        if move.event and move.action is not machine.Action.EVICT:
            await self._event(body, *move.event)
        current = move.operation
        if move.action is machine.Action.NONE:
            return move.operation != op
        if move.action is machine.Action.DRAIN:
            await asyncio.to_thread(
                self.kube.set_serving, namespace, current.pod, current.uid, False
            )
            return False
        if move.action is machine.Action.UNDRAIN:
            uid = pod.uid if pod is not None else current.new_uid or current.uid
            await asyncio.to_thread(self.kube.set_serving, namespace, current.pod, uid, True)
            follow = machine.after_undrain(current, now)
            return await self._apply_move(
                context, await self._reread(context), current, follow, pod, now
            )
        if move.action is machine.Action.CHECKPOINT:
            record, error = await self._checkpoint(context, pod)
            follow = machine.after_checkpoint(current, time.time(), record, error)
            return await self._apply_move(
                context, await self._reread(context), current, follow, pod, now
            )
        if move.action is machine.Action.RESTART_IN_PLACE:
            error = await self._restart_in_place(context, pod)
            if error is None:
                return False
            await self._event(body, "Warning", "AgentUnavailable", error)
            assert context.policy is not None
            if context.policy.recycle.fallback_to_recreate:
                follow = machine.escalate(current, time.time(), f"in-place restart failed: {error}")
            else:
                follow = machine.Move(
                    machine.Action.UNDRAIN,
                    None,
                    machine.finish(current, RecycleResult.FAILED, time.time(), error),
                    ("Warning", "RecycleFailed", f"in-place restart failed: {error}"),
                )
            return await self._apply_move(
                context, await self._reread(context), current, follow, pod, now
            )
        if move.action is machine.Action.EVICT:
            outcome = await asyncio.to_thread(self.kube.evict, namespace, current.pod, current.uid)
            if outcome is EvictionOutcome.BLOCKED:
                await self._event_once(
                    body,
                    "Warning",
                    "EvictionBlocked",
                    f"eviction of {current.pod} refused by its PodDisruptionBudget; waiting",
                )
            elif move.event:
                await self._event(body, *move.event)
        return False

    async def _reread(self, context: Context) -> dict[str, Any]:
        fresh = await asyncio.to_thread(self.kube.read_deployment, *context.key)
        return fresh or context.body

    def _agent(self, context: Context, pod: PodState | None) -> AgentClient | None:
        assert context.spec is not None
        if pod is None or not pod.pod_ip:
            return None
        token = self.kube.ensure_agent_token(
            context.key[1],
            context.key[0],
            workload.owner_reference(context.key[1], context.body["metadata"]["uid"]),
        )
        host = f"[{pod.pod_ip}]" if ":" in pod.pod_ip else pod.pod_ip
        # A restart waits out the server's grace period before it answers.
        timeout = self.settings.agent_timeout_s + workload.restart_grace_seconds(context.spec)
        return AgentClient(
            f"http://{host}:{workload.agent_port(context.spec)}", token, timeout=timeout
        )

    async def _checkpoint(
        self, context: Context, pod: PodState | None
    ) -> tuple[CheckpointRecord | None, str | None]:
        client = await asyncio.to_thread(self._agent, context, pod)
        if client is None:
            return None, "the pod has no IP, so its agent cannot be reached"
        try:
            result = await client.checkpoint()
        except (AgentError, AgentUnavailable) as error:
            return None, str(error)
        return (
            CheckpointRecord(
                id=result.id[:128],
                size_bytes=result.size_bytes,
                duration_ms=result.duration_ms,
                sha256=result.sha256[:64] if result.sha256 else None,
            ),
            None,
        )

    async def _restart_in_place(self, context: Context, pod: PodState | None) -> str | None:
        client = await asyncio.to_thread(self._agent, context, pod)
        if client is None:
            return "the pod has no IP, so its agent cannot be reached"
        try:
            await client.restart()
        except (AgentError, AgentUnavailable) as error:
            return str(error)
        return None

    def _requests_running(self, context: Context, pod: str) -> float | None:
        return self.running_requests.get((context.key[0], pod))

    async def _undrain_orphans(self, context: Context) -> None:
        """No operation holds a pod drained between recycles: put strays back in service."""
        namespace = context.key[0]
        for pod in context.pods:
            if not pod.serving and not pod.terminating:
                log.info("returning drained pod %s/%s to service", namespace, pod.name)
                await asyncio.to_thread(self.kube.set_serving, namespace, pod.name, pod.uid, True)
                await self._event(
                    context.body,
                    "Normal",
                    "Undrained",
                    f"{pod.name} was drained with no recycle in flight; returned to service",
                )

    # ---------------------------------------------------------------------------------------
    # Status and events.

    async def _persist(
        self,
        context: Context,
        operation: RecycleOperation | None,
        record: RecycleRecord | None,
        *,
        clear: bool = False,
        fresh: dict[str, Any] | None = None,
    ) -> bool:
        """Version-checked write of the operation and history: False when someone wrote first."""
        namespace, name = context.key
        current = fresh or await asyncio.to_thread(self.kube.read_deployment, namespace, name)
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
                self.kube.patch_status,
                namespace,
                name,
                status,
                current["metadata"].get("resourceVersion"),
            )
        except ConflictError:
            log.info("%s/%s changed while writing the recycle step; retrying", namespace, name)
            return False
        return True

    async def _write_status(
        self,
        context: Context,
        status: dict[str, Any],
        now: float,
        *,
        force: bool,
        fresh: dict[str, Any] | None = None,
    ) -> None:
        state = self.states.get(context.key)
        comparable = {k: v for k, v in status.items() if k != "lastEvaluation"}
        if (
            state is not None
            and not force
            and state.last_status == comparable
            and now - state.last_status_at < STATUS_REFRESH_S
        ):
            return
        namespace, name = context.key
        try:
            await asyncio.to_thread(self.kube.patch_status, namespace, name, status, None)
        except Exception as error:
            log.warning("status of %s/%s not written: %s", namespace, name, error)
            return
        if state is not None:
            state.last_status = comparable
            state.last_status_at = now

    async def _event(self, body: dict[str, Any], kind: str, reason: str, message: str) -> None:
        log.info("%s %s: %s", reason, body["metadata"].get("name"), message)
        await asyncio.to_thread(self.kube.post_event, body, kind, reason, message)

    async def _event_once(self, body: dict[str, Any], kind: str, reason: str, message: str) -> None:
        """Repeated conditions are reported once per EVENT_REPEAT_S, not once per cycle."""
        key = (body["metadata"].get("namespace", ""), body["metadata"].get("name", ""))
        state = self.states.get(key)
        now = time.time()
        if state is not None:
            last = state.events.get((reason, message))
            if last is not None and now - last < EVENT_REPEAT_S:
                return
            state.events[(reason, message)] = now
        await self._event(body, kind, reason, message)


def _key(pod: PodState) -> PodKey:
    """A restarted server process is a new pod to the engine: history and warm-up start over."""
    return PodKey(pod.name, f"{pod.uid}/{pod.restart_count}")


def _judgement(pod: PodState, verdict: Verdict | None) -> PodJudgement:
    if verdict is None:
        return PodJudgement(pod.name, pod.uid, degraded=False)
    reasons = tuple(_reason_texts(verdict))
    return PodJudgement(pod.name, pod.uid, verdict.degraded, reasons, float(len(reasons)))


def _reason_texts(verdict: Verdict | None) -> list[str]:
    if verdict is None:
        return []
    return [reason.text for reason in verdict.reasons]


def _verdict_label(verdict: Verdict | None) -> str:
    if verdict is None:
        return "NoData"
    if verdict.degraded:
        return "Degraded"
    if verdict.warming_up:
        return "WarmingUp"
    if verdict.has_data:
        return "Healthy"
    return "NoData"


def _past(record: RecycleRecord) -> PastRecycle:
    return PastRecycle(
        pod=record.pod,
        started_at=from_timestamp(record.started_at),
        finished_at=from_timestamp(record.finished_at),
        dry_run=record.result == RecycleResult.DRY_RUN,
    )


def _reason_label(reasons: tuple[str, ...]) -> str:
    """Rule names only, so the metric's label values stay few."""
    names = sorted({reason.split(":", 1)[0] for reason in reasons})
    return ",".join(names)[:120] or "degraded"


def _query_label(signal: str, promql: str, existing: Mapping[str, str]) -> str:
    if existing.get(signal, promql) == promql:
        return signal
    index = 1
    while existing.get(f"{signal}#{index}", promql) != promql:
        index += 1
    return f"{signal}#{index}"


def _query_label_lookup(signal: str, promql: str, queries: Mapping[str, str]) -> str:
    for label, text in queries.items():
        if text == promql and label.split("#")[0] == signal:
            return label
    return signal


def _error_kind(error: str) -> str:
    lowered = error.lower()
    if "timed out" in lowered:
        return "timeout"
    if "connection" in lowered or "refused" in lowered:
        return "unreachable"
    return "error"


def _first_error(error: ValidationError) -> str:
    first = error.errors()[0]
    where = ".".join(str(part) for part in first["loc"])
    return f"{where}: {first['msg']}"


def _pod_name(pod: dict[str, Any]) -> str:
    return str((pod.get("metadata") or {}).get("name", ""))


async def explain(controller: FleetController, key: DeploymentKey) -> dict[str, Any]:
    """Everything `infercycle explain` prints, from the same code paths as the live cycle."""
    body = controller.registry.deployments.get(key)
    if body is None:
        msg = f"InferenceDeployment {key[0]}/{key[1]} not found"
        raise LookupError(msg)
    context = controller._context(key, body)
    report: dict[str, Any] = {"deployment": f"{key[0]}/{key[1]}"}
    if context.policy is None:
        report["error"] = context.error
        return report
    policy = context.policy
    await controller._backfill([context])
    state = controller.states[key]
    queries: dict[str, str] = {}
    for signal in (*policy.health.signals, "requests_running"):
        promql = policy.health.queries.get(signal)
        if promql:
            queries[signal] = promql
    snapshot = await controller.reader.snapshot(queries)
    verdicts, ok, reason, message = controller._evaluate(
        context, state, snapshot, queries, time.time()
    )
    report["policy"] = {
        "sources": list(policy.sources),
        "dryRun": policy.dry_run or controller.settings.dry_run,
        "quorum": policy.health.quorum,
        "warmupSeconds": policy.health.warmup_s,
        "minRequestRate": policy.health.min_request_rate,
        "staleAfterSeconds": policy.health.stale_after_s,
        "rules": [
            {
                "name": rule.name,
                "signal": rule.signal,
                "kind": rule.kind.value,
                "rule": rule.describe(),
                "sufficient": rule.sufficient,
                "requiresTraffic": rule.requires_traffic,
            }
            for rule in policy.health.rules
        ],
        "disruption": {
            "maxUnavailable": policy.disruption.max_unavailable,
            "minAvailable": policy.disruption.min_available,
            "cooldownSeconds": policy.disruption.cooldown_s,
            "maxRecyclesPerHour": policy.disruption.max_recycles_per_hour,
            "maxDegradedPercent": policy.disruption.max_degraded_percent,
            "flapWindowSeconds": policy.disruption.flap_window_s,
        },
    }
    report["metrics"] = {"available": ok, "reason": reason, "message": message}
    pods = []
    for pod in context.pods:
        verdict = verdicts.get(_key(pod))
        pods.append(
            {
                "name": pod.name,
                "uid": pod.uid,
                "ready": pod.ready,
                "serving": pod.serving,
                "verdict": _verdict_label(verdict),
                "reasons": _reason_texts(verdict),
                "rules": [
                    {
                        "rule": evaluation.rule.name,
                        "state": evaluation.state.value,
                        "observed": evaluation.observed,
                        "level": evaluation.level,
                        "text": evaluation.describe(),
                    }
                    for evaluation in (verdict.evaluations if verdict else ())
                ],
            }
        )
    report["pods"] = pods
    report["operation"] = (body.get("status") or {}).get("operation")
    return report
