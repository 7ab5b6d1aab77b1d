"""An in-memory Kubernetes and agent for the cycle's ports: just enough API server to walk a
recycle, with the failures a real one gives (409 on a stale resourceVersion, 429 on a refused
eviction, 404 for a pod that is gone) and a record of every call."""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from infercycle.api.resources import CheckpointRecord
from infercycle.cycle.ports import EvictionOutcome
from infercycle.errors import AgentClientError, ConflictError

NAMESPACE = "serving"
NAME = "llama"
SERVING = "infercycle.io/serving"


class Clock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def pod(name: str, uid: str, *, restarts: int = 0, ready: bool = True) -> dict[str, Any]:
    return {
        "metadata": {
            "name": name,
            "namespace": NAMESPACE,
            "uid": uid,
            "labels": {"infercycle.io/deployment": NAME, SERVING: "true"},
        },
        "spec": {"nodeName": "node-1"},
        "status": {
            "phase": "Running",
            "podIP": f"ip-of-{name}",  # the fake connector finds the pod by it
            "startTime": "2027-01-15T08:00:00Z",
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
            "containerStatuses": [
                {"name": "server", "restartCount": restarts, "state": {"running": {}}}
            ],
        },
    }


def deployment(strategy: str = "InPlace", *, fallback: bool = True) -> dict[str, Any]:
    return {
        "apiVersion": "infercycle.io/v1alpha1",
        "kind": "InferenceDeployment",
        "metadata": {
            "name": NAME,
            "namespace": NAMESPACE,
            "uid": "deployment-uid",
            "generation": 1,
            "resourceVersion": "1",
            "annotations": {"infercycle.io/last-handled-configuration": "{}"},
        },
        "spec": {
            "replicas": 2,
            "restartStrategy": strategy,
            "sessionStore": {"size": "1Gi"},
            "recycle": {
                "drainTimeout": "60s",
                "readyTimeout": "300s",
                "verifyWindow": "120s",
                "fallbackToRecreate": fallback,
            },
            "template": {
                "spec": {"containers": [{"name": "server", "image": "example.invalid/s:1"}]}
            },
        },
        "status": {},
    }


GATE = "infercycle.io/serving"


def attached_pod(
    name: str,
    uid: str,
    labels: dict[str, str],
    *,
    gated: bool = True,
    ready: bool = True,
    created: str = "2027-01-15T08:00:00Z",
) -> dict[str, Any]:
    """A pod of a workload the user manages: its own labels, the readiness gate when the user
    added it (and its condition, once set), Ready only with its containers ready."""
    status = "True" if ready else "False"
    conditions = [
        {"type": "ContainersReady", "status": status},
        {"type": "Ready", "status": status},
    ]
    spec: dict[str, Any] = {"nodeName": "node-1", "containers": [{"name": "server"}]}
    if gated:
        spec["readinessGates"] = [{"conditionType": GATE}]
        conditions.append({"type": GATE, "status": "True"})
    return {
        "metadata": {
            "name": name,
            "namespace": NAMESPACE,
            "uid": uid,
            "labels": dict(labels),
            "creationTimestamp": created,
        },
        "spec": spec,
        "status": {
            "phase": "Running",
            "podIP": f"ip-of-{name}",
            "startTime": created,
            "conditions": conditions,
            "containerStatuses": [{"name": "server", "restartCount": 0, "state": {"running": {}}}],
        },
    }


def attached_deployment(kind: str, target: str, strategy: str | None = None) -> dict[str, Any]:
    """An InferenceDeployment attached to ``kind``/``target`` in the test namespace."""
    body = deployment()
    spec = body["spec"]
    for owned in ("replicas", "template", "sessionStore", "restartStrategy"):
        spec.pop(owned)
    api = "leaderworkerset.x-k8s.io/v1" if kind == "LeaderWorkerSet" else "apps/v1"
    spec["targetRef"] = {"apiVersion": api, "kind": kind, "name": target}
    spec["disruption"] = {"minAvailable": 1}
    if strategy is not None:
        spec["restartStrategy"] = strategy
    return body


def _selector_matches(selector: str, labels: dict[str, str]) -> bool:
    """``key=value,...`` selectors, the form the attached workloads in these tests use."""
    for term in filter(None, selector.split(",")):
        key, _, value = term.partition("=")
        if labels.get(key) != value:
            return False
    return True


@dataclass
class FakeKube:
    """The KubePort, in memory."""

    body: dict[str, Any]
    pods: dict[str, dict[str, Any]]
    requests: int = 0
    events: list[tuple[str, str, str]] = field(default_factory=list)
    calls: list[tuple[str, ...]] = field(default_factory=list)
    conflicts: int = 0  # the next N version-checked writes lose a race
    evictions_refused: bool = False
    recreate_on_evict: bool = True
    status_writes: int = 0
    # What the workload's controller does once a pod is evicted (default: same name, new UID).
    on_evict: Callable[[FakeKube, dict[str, Any]], None] | None = None
    # Workloads by (plural, name), for attached deployments.
    objects: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    # Restarts that happened and that the kubelet has not counted in the pod's status yet.
    late_restarts: list[str] = field(default_factory=list)

    def read_object(
        self, namespace: str, api_path: tuple[str, str, str], name: str
    ) -> dict[str, Any] | None:
        self.requests += 1
        found = self.objects.get((api_path[2], name))
        return copy.deepcopy(found) if found is not None else None

    def read_deployment(self, namespace: str, name: str) -> dict[str, Any] | None:
        self.requests += 1
        return copy.deepcopy(self.body)

    def read_pod(self, namespace: str, pod_name: str) -> dict[str, Any] | None:
        self.requests += 1
        found = self.pods.get(pod_name)
        return copy.deepcopy(found) if found is not None else None

    def set_serving(self, namespace: str, pod_name: str, uid: str, serving: bool) -> bool:
        self.requests += 1
        self.calls.append(("serving", pod_name, str(serving).lower()))
        found = self.pods.get(pod_name)
        if found is None or found["metadata"]["uid"] != uid:
            return False
        found["metadata"]["labels"][SERVING] = "true" if serving else "false"
        return True

    def set_readiness_gate(self, namespace: str, pod_name: str, uid: str, serving: bool) -> bool:
        self.requests += 1
        self.calls.append(("gate", pod_name, str(serving).lower()))
        found = self.pods.get(pod_name)
        if found is None or found["metadata"]["uid"] != uid:
            return False
        conditions = [c for c in found["status"]["conditions"] if c["type"] != GATE]
        conditions.append({"type": GATE, "status": "True" if serving else "False"})
        found["status"]["conditions"] = conditions
        return True

    def list_pods(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        self.requests += 1
        return [
            copy.deepcopy(found)
            for found in self.pods.values()
            if _selector_matches(selector, found["metadata"]["labels"])
        ]

    def evict(self, namespace: str, pod_name: str, uid: str) -> EvictionOutcome:
        self.requests += 1
        self.calls.append(("evict", pod_name, uid))
        found = self.pods.get(pod_name)
        if found is None or found["metadata"]["uid"] != uid:
            return EvictionOutcome.GONE
        if self.evictions_refused:
            return EvictionOutcome.BLOCKED
        del self.pods[pod_name]
        if self.on_evict is not None:
            self.on_evict(self, found)
        elif self.recreate_on_evict:
            self.pods[pod_name] = pod(pod_name, f"{uid}-new", ready=False)
        return EvictionOutcome.EVICTED

    def patch_status(
        self,
        namespace: str,
        name: str,
        status: dict[str, Any],
        resource_version: str | None = None,
    ) -> dict[str, Any]:
        self.requests += 1
        current = self.body["metadata"]["resourceVersion"]
        if resource_version is not None:
            if self.conflicts > 0:
                self.conflicts -= 1
                raise ConflictError(f"{namespace}/{name} changed since it was read")
            if resource_version != current:
                raise ConflictError(f"{namespace}/{name} changed since it was read")
        merged = dict(self.body.get("status") or {})
        for key, value in status.items():
            if value is None:
                merged.pop(key, None)
            else:
                merged[key] = copy.deepcopy(value)
        self.body["status"] = merged
        self.body["metadata"]["resourceVersion"] = str(int(current) + 1)
        self.status_writes += 1
        return copy.deepcopy(self.body)

    def post_event(
        self, involved: dict[str, Any], event_type: str, reason: str, message: str
    ) -> None:
        self.requests += 1
        self.events.append((event_type, reason, message))

    # -- what a kubelet would do ---------------------------------------------------------------

    def restart_container(self, pod_name: str) -> None:
        status = self.pods[pod_name]["status"]
        status["containerStatuses"][0]["restartCount"] += 1

    def make_ready(self, pod_name: str) -> None:
        self.pods[pod_name]["status"]["conditions"] = [{"type": "Ready", "status": "True"}]

    @property
    def operation(self) -> dict[str, Any] | None:
        return (self.body.get("status") or {}).get("operation")

    @property
    def history(self) -> list[dict[str, Any]]:
        return list((self.body.get("status") or {}).get("history") or [])

    def reasons(self) -> list[str]:
        return [reason for _, reason, _ in self.events]


class AgentDownError(AgentClientError):
    def __init__(self, message: str, *, may_have_acted: bool = False) -> None:
        super().__init__(message)
        self.may_have_acted = may_have_acted


@dataclass
class FakeAgent:
    """A pod's agent; ``fail_*`` make a call fail as an unreachable agent does (refused);
    ``restart_unanswered`` makes the restart call time out after it may have reached the agent,
    and ``lose_restart_answer`` loses the answer of a restart that happened."""

    kube: FakeKube
    pod_name: str
    fail_checkpoint: str | None = None
    fail_restart: str | None = None
    restarts_container: bool = True
    # The restart happens, then the answer is lost (a timeout or reset after the kill).
    lose_restart_answer: bool = False
    # The restart happens, and the pod's status shows it only after the kubelet's next pass.
    restart_counted_late: bool = False
    restart_unanswered: str | None = None
    checkpoints: int = 0
    restarts: int = 0

    async def checkpoint(self) -> CheckpointRecord:
        if self.fail_checkpoint:
            raise AgentDownError(self.fail_checkpoint)
        self.checkpoints += 1
        return CheckpointRecord(id=f"c{self.checkpoints}", size_bytes=42, duration_ms=3)

    async def restart(self) -> None:
        if self.fail_restart:
            raise AgentDownError(self.fail_restart)
        if self.restart_unanswered:
            raise AgentDownError(self.restart_unanswered, may_have_acted=True)
        self.restarts += 1
        if self.restarts_container and self.restart_counted_late:
            self.kube.late_restarts.append(self.pod_name)
        elif self.restarts_container:
            self.kube.restart_container(self.pod_name)
        if self.lose_restart_answer:
            raise AgentDownError(
                "POST /v1/restart: connection reset after the restart", may_have_acted=True
            )


@dataclass
class FakeAgents:
    """The AgentConnector: one FakeAgent per pod, created on first use."""

    kube: FakeKube
    agents: dict[str, FakeAgent] = field(default_factory=dict)
    template: dict[str, Any] = field(default_factory=dict)

    def __call__(self, deployment: dict[str, Any], pod_ip: str | None) -> FakeAgent | None:
        if not pod_ip:
            return None
        name = pod_ip.removeprefix("ip-of-")
        return self.agents.setdefault(name, FakeAgent(self.kube, name, **self.template))
