"""The cycle's value types and what it remembers between cycles (no I/O, no decisions).

``Registry`` holds what the watches have seen; ``DeploymentState`` the in-memory companions of
one deployment (its health engine, what was last written and said); ``DeploymentContext`` one
deployment as one cycle sees it. ``QueryId`` and ``QuerySet`` name the Prometheus queries of a
cycle, so two deployments that give the same signal different PromQL never share an answer.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from infercycle.api.resources import InferenceDeploymentSpec
from infercycle.api.spec import LabelSelector
from infercycle.api.values import EffectivePolicy
from infercycle.health.engine import HealthEngine, PodKey, Verdict
from infercycle.health.model import ContainerRestarts
from infercycle.health.resolution import Blindness
from infercycle.recycle.fleet import PodState, Target
from infercycle.recycle.units import units_of

DeploymentKey = tuple[str, str]  # (namespace, name)
DEPLOYMENT_LABEL = "infercycle.io/deployment"


@dataclass(frozen=True, slots=True)
class TargetLookup:
    """An attached deployment's workload as last read, or why it cannot be used."""

    target: Target | None
    error: str | None = None


@dataclass
class Registry:
    """What the watches have seen; handlers keep it current, the cycle only reads it.

    Pods are kept per namespace, so a deployment finds its own by a selector: the
    ``infercycle.io/deployment`` label of the pods it owns, or the selector of the workload it
    attaches to (read each cycle into ``targets``)."""

    deployments: dict[DeploymentKey, dict[str, Any]] = field(default_factory=dict)
    pods: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    policies: dict[str, dict[str, Any]] = field(default_factory=dict)
    namespaces: dict[str, dict[str, str]] = field(default_factory=dict)
    targets: dict[DeploymentKey, TargetLookup] = field(default_factory=dict)

    def put_pod(self, pod: dict[str, Any], deleted: bool) -> None:
        metadata = pod.get("metadata") or {}
        pods = self.pods.setdefault(metadata.get("namespace", ""), {})
        name = metadata.get("name", "")
        if deleted:
            current = pods.get(name)
            if current is not None and current["metadata"].get("uid") == metadata.get("uid"):
                pods.pop(name, None)
        else:
            pods[name] = pod

    def pods_matching(self, namespace: str, selector: LabelSelector) -> dict[str, dict[str, Any]]:
        """The namespace's pods the selector finds, by name."""
        return {
            name: pod
            for name, pod in self.pods.get(namespace, {}).items()
            if selector.matches((pod.get("metadata") or {}).get("labels") or {})
        }

    def forget(self, key: DeploymentKey) -> None:
        self.deployments.pop(key, None)
        self.targets.pop(key, None)


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


@dataclass(frozen=True, slots=True)
class DeploymentContext:
    """One deployment as one cycle sees it: its spec and merged policy, or why it has none."""

    key: DeploymentKey
    body: dict[str, Any]
    spec: InferenceDeploymentSpec | None
    policy: EffectivePolicy | None
    error: str | None
    pods: tuple[PodState, ...]
    agent_enabled: bool = False  # a recycle agent sidecar and a session volume: checkpoints
    target: Target | None = None  # the attached workload, as read this cycle
    error_reason: str = "PolicyInvalid"

    @property
    def usable(self) -> bool:
        return self.spec is not None and self.policy is not None

    @property
    def attached(self) -> bool:
        return self.spec is not None and self.spec.attached

    @property
    def units(self) -> tuple[PodState, ...]:
        """What is judged and recycled as one: pods, or LeaderWorkerSet groups."""
        return units_of(self.pods, self.target.group_size if self.target else None)

    @property
    def grouped(self) -> bool:
        """Units are LeaderWorkerSet groups."""
        return self.target is not None and self.target.group_size is not None

    @property
    def desired(self) -> int:
        """Desired units: the owned StatefulSet's replicas or the target's."""
        if self.target is not None:
            return self.target.desired
        return self.spec.desired_replicas if self.spec is not None else 0

    @property
    def named(self) -> bool:
        """A recreated unit comes back under its name (everything but a Deployment's pods)."""
        return self.target is None or self.target.named

    @property
    def generation(self) -> int | None:
        value = (self.body.get("metadata") or {}).get("generation")
        return int(value) if value is not None else None


@dataclass(frozen=True, slots=True)
class UnitView:
    """The unit being recycled as the cluster shows it now, and, for an attached workload,
    whether all its desired units are Ready."""

    unit: PodState | None
    fleet_ready: bool | None = None


@dataclass(frozen=True, slots=True, order=True)
class QueryId:
    """One distinct query of a cycle: a signal name and which of its PromQL texts."""

    signal: str
    variant: int = 0

    @property
    def label(self) -> str:
        """The key the Prometheus reader reports this query under."""
        return self.signal if self.variant == 0 else f"{self.signal}#{self.variant}"


class QuerySet:
    """The distinct queries of one cycle; the same (signal, PromQL) pair always has one id."""

    def __init__(self) -> None:
        self._ids: dict[tuple[str, str], QueryId] = {}
        self._variants: dict[str, int] = {}

    def add(self, signal: str, promql: str) -> QueryId:
        found = self._ids.get((signal, promql))
        if found is not None:
            return found
        variant = self._variants.get(signal, -1) + 1
        self._variants[signal] = variant
        query = QueryId(signal, variant)
        self._ids[(signal, promql)] = query
        return query

    def find(self, signal: str, promql: str) -> QueryId | None:
        return self._ids.get((signal, promql))

    def by_label(self) -> dict[str, str]:
        """``{label: promql}``, what the reader takes."""
        return {query.label: promql for (_, promql), query in self._ids.items()}

    def signal_of(self, label: str) -> str:
        for query in self._ids.values():
            if query.label == label:
                return query.signal
        return label

    def __len__(self) -> int:
        return len(self._ids)

    def __iter__(self) -> Iterator[QueryId]:
        return iter(self._ids.values())


@dataclass(frozen=True, slots=True)
class MetricsState:
    """Whether a deployment's signals could be read this cycle, and why not."""

    available: bool
    reason: str
    message: str


@dataclass(frozen=True, slots=True)
class Evaluation:
    """What the engine made of one deployment's pods this cycle."""

    verdicts: Mapping[PodKey, Verdict]
    metrics: MetricsState
    requests_running: Mapping[str, float] = field(default_factory=dict)
    # (rule, pod) pairs whose histogram quantile sits in its lowest bucket: the rule is blind.
    blind: tuple[Blindness, ...] = ()
    # The server container's restart count each verdict was reached on: a verdict is about one
    # life of the process, so a pod restarted since (in this very cycle, say) has none yet.
    lives: Mapping[PodKey, int] = field(default_factory=dict)

    def verdict(self, pod: PodState) -> Verdict | None:
        key = pod_key(pod)
        judged_on = self.lives.get(key)
        if judged_on is not None and judged_on != pod.restart_count:
            return None
        return self.verdicts.get(key)

    def degraded(self, unit: PodState) -> bool | None:
        """Whether a unit is condemned: a group when any member is; None without a verdict."""
        verdicts = [self.verdict(pod) for pod in unit.members or (unit,)]
        known = [verdict for verdict in verdicts if verdict is not None]
        if not known:
            return None
        return any(verdict.degraded for verdict in known)

    def requests_running_on(self, pod: str) -> float | None:
        return self.requests_running.get(pod)


@dataclass(frozen=True, slots=True)
class RecyclingState:
    """The ``Recycling`` condition's content: is a recycle in flight, and what it waits for."""

    active: bool
    reason: str
    message: str


IDLE = RecyclingState(active=False, reason="Idle", message="no recycle in flight")


def pod_key(pod: PodState) -> PodKey:
    """One engine row per pod UID: the engine splits it into lives of the server process from
    the restarts it is told of (``container_restarts``), so repeated OOM kills add up."""
    return PodKey(pod.name, pod.uid)


def container_restarts(pod: PodState) -> ContainerRestarts:
    """What the pod's status says of the server container's restarts, as the engine takes it."""
    return ContainerRestarts(pod.restart_count, pod.last_terminated_reason, pod.last_terminated_at)
