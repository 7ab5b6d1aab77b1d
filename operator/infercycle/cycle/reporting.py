"""Reporting: the typed status of a deployment, its conditions, and its events.

Status is built from the same pydantic models the CRD schema is generated from
(``InferenceDeploymentStatus``, ``Condition``, ``PodHealthSummary``) and serialised once, so the
writer and the schema cannot drift. Conditions follow metav1.Condition: a transition moves
``lastTransitionTime``, a repeat does not. A status equal to the last one written is not written
again until ``STATUS_REFRESH_S`` has passed; an event repeated within ``EVENT_REPEAT_S`` is posted
once. Only ``cycle.ports`` is known here, never the Kubernetes client.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from infercycle.api.resources import (
    MAX_POD_SUMMARIES,
    Condition,
    ConditionStatus,
    InferenceDeploymentStatus,
    PodHealthSummary,
    PodVerdict,
)
from infercycle.api.units import to_timestamp
from infercycle.cycle.ports import KubePort
from infercycle.cycle.state import (
    DEPLOYMENT_LABEL,
    DeploymentContext,
    DeploymentState,
    Evaluation,
    RecyclingState,
)
from infercycle.health.engine import Verdict
from infercycle.recycle.fleet import PodState
from infercycle.recycle.machine import Event, EventType
from infercycle.recycle.planner import Plan
from infercycle.recycle.units import ready_units

log = logging.getLogger("infercycle.cycle")
STATUS_REFRESH_S = 300.0
EVENT_REPEAT_S = 600.0
CONDITION_TYPES = (
    "Ready",
    "Degraded",
    "Recycling",
    "MetricsAvailable",
    "RulesActive",
    "Paused",
    "Drainable",
)
SERVING_GATE_LINE = "readinessGates: [{conditionType: infercycle.io/serving}]"


def set_condition(
    conditions: Sequence[Condition],
    *,
    type_: str,
    status: bool | None,
    reason: str,
    message: str,
    now: float,
    generation: int | None,
) -> list[Condition]:
    """A copy of ``conditions`` with ``type_`` set; lastTransitionTime moves only on a change."""
    value = (
        ConditionStatus.UNKNOWN
        if status is None
        else (ConditionStatus.TRUE if status else ConditionStatus.FALSE)
    )
    previous = next((c for c in conditions if c.type == type_), None)
    changed = previous is None or previous.status != value
    updated = Condition(
        type=type_,
        status=value,
        reason=reason,
        message=message[:2048],
        last_transition_time=to_timestamp(now)
        if changed or previous is None
        else previous.last_transition_time,
        observed_generation=generation,
    )
    kept = [c for c in conditions if c.type != type_] + [updated]
    order = {name: index for index, name in enumerate(CONDITION_TYPES)}
    return sorted(kept, key=lambda c: order.get(c.type, len(order)))


def parse_conditions(raw: Iterable[dict[str, Any]]) -> list[Condition]:
    """Conditions as read from the API; one that does not parse is dropped and rewritten."""
    parsed: list[Condition] = []
    for item in raw:
        try:
            parsed.append(Condition.model_validate(item))
        except ValueError:
            log.info("dropping unreadable condition %r", item.get("type"))
    return parsed


def verdict_label(verdict: Verdict | None) -> PodVerdict:
    if verdict is None:
        return PodVerdict.NO_DATA
    if verdict.degraded:
        return PodVerdict.DEGRADED
    if verdict.warming_up:
        return PodVerdict.WARMING_UP
    if verdict.has_data:
        return PodVerdict.HEALTHY
    return PodVerdict.NO_DATA


def reason_texts(verdict: Verdict | None) -> list[str]:
    return [] if verdict is None else [reason.text for reason in verdict.reasons]


def pod_summaries(
    state: DeploymentState, pods: Sequence[PodState], evaluation: Evaluation, now: float
) -> list[PodHealthSummary]:
    """One row per pod, degraded first; ``since`` is when the pod's verdict last changed."""
    rows: list[PodHealthSummary] = []
    for pod in pods:
        verdict = evaluation.verdict(pod)
        label = verdict_label(verdict)
        identity = f"{pod.uid}:{label.value}"
        previous = state.since.get(pod.name)
        if previous is None or previous[0] != identity:
            state.since[pod.name] = (identity, now)
        reasons = [text[:512] for text in reason_texts(verdict)[:8]]
        rows.append(
            PodHealthSummary(
                name=pod.name,
                uid=pod.uid,
                verdict=label,
                since=to_timestamp(state.since[pod.name][1]),
                reasons=reasons or None,
            )
        )
    for name in set(state.since) - {pod.name for pod in pods}:
        del state.since[name]
    rows.sort(key=lambda row: (row.verdict != PodVerdict.DEGRADED, row.name))
    return rows[:MAX_POD_SUMMARIES]


@dataclass(frozen=True, slots=True)
class Pause:
    """The ``Paused`` condition: why recycling is held for the whole deployment, if it is."""

    reason: str
    message: str

    @property
    def paused(self) -> bool:
        return self.reason != "NotPaused"


def pause_of(paused_by_spec: bool, plan: Plan | None) -> Pause:
    if paused_by_spec:
        return Pause("PausedBySpec", "spec.paused is true")
    if plan is not None and plan.circuit_open:
        return Pause("CircuitBreakerOpen", plan.holds[0].message)
    if plan is not None and plan.flapping:
        return Pause("PodFlapping", plan.holds[0].message)
    return Pause("NotPaused", "recycling is enabled")


def invalid_status(
    current: dict[str, Any], message: str, now: float, generation: int | None
) -> InferenceDeploymentStatus:
    """A deployment whose spec or policy cannot be used: Ready=False, and why."""
    conditions = set_condition(
        parse_conditions(current.get("conditions") or []),
        type_="Ready",
        status=False,
        reason="ReconcileFailed",
        message=message,
        now=now,
        generation=generation,
    )
    return InferenceDeploymentStatus(conditions=conditions)


def build_status(
    context: DeploymentContext,
    state: DeploymentState,
    evaluation: Evaluation,
    recycling: RecyclingState,
    pause: Pause,
    *,
    current: dict[str, Any],
    dry_run: bool,
    now: float,
) -> InferenceDeploymentStatus:
    """The status one cycle writes (operation and history are the executor's to write)."""
    assert context.spec is not None
    assert context.policy is not None
    generation = context.generation
    replicas = context.desired
    units = context.units
    ready = ready_units(units)
    what = "groups" if context.grouped else "pods"
    degraded = [pod.name for pod in context.pods if _degraded(evaluation, pod)]
    drainable = drainable_condition(context, units)
    metrics = evaluation.metrics
    conditions = parse_conditions(current.get("conditions") or [])
    for type_, status, reason, message in (
        (
            "Ready",
            ready >= replicas,
            "Reconciled" if ready >= replicas else "ReplicasNotReady",
            f"{ready}/{replicas} {what} ready",
        ),
        (
            "Degraded",
            bool(degraded),
            "PodsDegraded" if degraded else "AllHealthy",
            f"degraded: {', '.join(degraded)}" if degraded else "no pod is degraded",
        ),
        ("Recycling", recycling.active, recycling.reason, recycling.message),
        ("MetricsAvailable", metrics.available, metrics.reason, metrics.message),
        ("RulesActive", *rules_active_condition(context, evaluation)),
        ("Paused", pause.paused, pause.reason, pause.message),
        ("Drainable", *drainable),
    ):
        conditions = set_condition(
            conditions,
            type_=type_,
            status=status,
            reason=reason,
            message=message,
            now=now,
            generation=generation,
        )
    policy_text = " <- ".join(context.policy.sources) + (" (dry-run)" if dry_run else "")
    return InferenceDeploymentStatus(
        observed_generation=generation,
        conditions=conditions,
        replicas=len(context.pods),
        ready_replicas=ready,
        degraded_replicas=len(degraded),
        selector=context.target.selector.to_query()
        if context.target is not None
        else f"{DEPLOYMENT_LABEL}={context.key[1]}",
        policy=policy_text[:1024],
        pods=pod_summaries(state, context.pods, evaluation, now),
        last_evaluation=to_timestamp(now),
    )


def rules_active_condition(
    context: DeploymentContext, evaluation: Evaluation
) -> tuple[bool, str, str]:
    """The ``RulesActive`` condition: every rule the policy asks for runs and can see, or which
    do not and why (a signal the server does not export; a histogram too coarse to move)."""
    assert context.policy is not None
    off = context.policy.switched_off
    if off:
        texts = [entry.describe(context.policy.server) for entry in off]
        return False, "RulesSwitchedOff", "; ".join(texts)
    if evaluation.blind:
        rules = sorted({item.rule for item in evaluation.blind})
        first = evaluation.blind[0].describe()
        message = f"blind on {len(evaluation.blind)} pod(s): {', '.join(rules)}; e.g. {first}"
        return False, "HistogramTooCoarse", message
    return True, "AllRulesActive", f"all {len(context.policy.health.rules)} rules run and see"


def rule_warnings(context: DeploymentContext, evaluation: Evaluation) -> list[Event]:
    """One Warning per rule switched off, and per rule blind on some pod (once per rule)."""
    assert context.policy is not None
    events = [
        warning("RuleSwitchedOff", entry.describe(context.policy.server))
        for entry in context.policy.switched_off
    ]
    seen: set[str] = set()
    for item in evaluation.blind:
        if item.rule not in seen:
            seen.add(item.rule)
            events.append(warning("HistogramTooCoarse", item.describe()))
    return events


def drainable_condition(
    context: DeploymentContext, units: Sequence[PodState]
) -> tuple[bool, str, str]:
    """The ``Drainable`` condition: how pods leave service before a restart, or that some
    cannot, and the one line that fixes it."""
    if not context.attached:
        return True, "ServiceLabel", "pods leave the client Service through their serving label"
    missing = sorted(unit.name for unit in units if not unit.drainable)
    if not missing:
        return (
            True,
            "ReadinessGate",
            "pods leave their Services through the readiness gate infercycle.io/serving",
        )
    target = context.target
    where = f" of {target.kind}/{target.name}" if target is not None else ""
    shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
    return (
        False,
        "ReadinessGateMissing",
        f"{shown} lack the readiness gate infercycle.io/serving: they are recycled by eviction "
        f"without a drain. Add `{SERVING_GATE_LINE}` to the pod template{where}",
    )


def _degraded(evaluation: Evaluation, pod: PodState) -> bool:
    verdict = evaluation.verdict(pod)
    return verdict is not None and verdict.degraded


class Reporter:
    """Writes status and posts events for the cycle, through the Kubernetes port."""

    def __init__(self, kube: KubePort, clock: Callable[[], float]) -> None:
        self._kube = kube
        self._clock = clock

    async def write_status(
        self,
        context: DeploymentContext,
        state: DeploymentState | None,
        status: InferenceDeploymentStatus,
        now: float,
    ) -> bool:
        """Merge-patch the status unless it equals the last write and that write is recent."""
        wire = status.to_api()
        comparable = {key: value for key, value in wire.items() if key != "lastEvaluation"}
        if (
            state is not None
            and state.last_status == comparable
            and now - state.last_status_at < STATUS_REFRESH_S
        ):
            return False
        namespace, name = context.key
        try:
            await asyncio.to_thread(self._kube.patch_status, namespace, name, wire, None)
        except Exception as error:  # status is retried next cycle; the cycle goes on
            log.warning("status of %s/%s not written: %s", namespace, name, error)
            return False
        if state is not None:
            state.last_status = comparable
            state.last_status_at = now
        return True

    async def event(self, body: dict[str, Any], event: Event) -> None:
        log.info("%s %s: %s", event.reason, body["metadata"].get("name"), event.message)
        await asyncio.to_thread(
            self._kube.post_event, body, event.type.value, event.reason, event.message
        )

    async def event_once(
        self, body: dict[str, Any], state: DeploymentState | None, event: Event
    ) -> None:
        """Repeated conditions are reported once per ``EVENT_REPEAT_S``, not once per cycle."""
        if state is not None:
            now = self._clock()
            last = state.events.get((event.reason, event.message))
            if last is not None and now - last < EVENT_REPEAT_S:
                return
            state.events[(event.reason, event.message)] = now
        await self.event(body, event)


def warning(reason: str, message: str) -> Event:
    return Event(EventType.WARNING, reason, message)


def normal(reason: str, message: str) -> Event:
    return Event(EventType.NORMAL, reason, message)
