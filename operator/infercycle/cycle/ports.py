"""The ports through which the cycle acts: small protocols that the Kubernetes client and the
agent client satisfy, and that an in-memory fake satisfies in unit tests.

Execution and reporting know only these; ``kube.api.KubeApi`` and ``cycle.agents`` are the real
adapters. Expected outcomes are typed results (``EvictionOutcome``); failures are exceptions from
``infercycle.errors`` (``ConflictError`` for a 409, ``AgentClientError`` for an agent).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Protocol

from infercycle.api.resources import CheckpointRecord

Manifest = dict[str, Any]


class EvictionOutcome(StrEnum):
    EVICTED = "Evicted"
    BLOCKED = "Blocked"  # 429: the PodDisruptionBudget refuses it now
    GONE = "Gone"  # the pod (or this UID of it) no longer exists


class KubePort(Protocol):
    """The Kubernetes reads and writes the cycle performs."""

    requests: int

    def read_deployment(self, namespace: str, name: str) -> dict[str, Any] | None: ...

    def read_pod(self, namespace: str, pod: str) -> dict[str, Any] | None: ...

    def set_serving(self, namespace: str, pod: str, uid: str, serving: bool) -> bool: ...

    def set_readiness_gate(self, namespace: str, pod: str, uid: str, serving: bool) -> bool: ...

    def list_pods(self, namespace: str, selector: str) -> list[dict[str, Any]]: ...

    def evict(self, namespace: str, pod: str, uid: str) -> EvictionOutcome: ...

    def patch_status(
        self,
        namespace: str,
        name: str,
        status: dict[str, Any],
        resource_version: str | None = None,
    ) -> dict[str, Any]: ...

    def post_event(
        self, involved: dict[str, Any], event_type: str, reason: str, message: str
    ) -> None: ...


class AgentPort(Protocol):
    """One pod's recycle agent."""

    async def checkpoint(self) -> CheckpointRecord: ...

    async def restart(self) -> None: ...


class AgentConnector(Protocol):
    """Finds the agent of a pod; ``None`` when it cannot be reached (no pod IP)."""

    def __call__(self, deployment: dict[str, Any], pod_ip: str | None) -> AgentPort | None: ...
