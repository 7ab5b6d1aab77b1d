"""The agent port's real adapter: reaches a pod's recycle agent over HTTP with the
deployment's token."""

from __future__ import annotations

from typing import Any

from infercycle.agent.client import AgentClient
from infercycle.api.resources import CheckpointRecord, InferenceDeploymentSpec
from infercycle.kube.api import KubeApi
from infercycle.kube.workload import agent_port, owner_reference, restart_grace_seconds


class PodAgent:
    """One pod's agent, answering in the operator's own terms."""

    def __init__(self, client: AgentClient) -> None:
        self._client = client

    async def checkpoint(self) -> CheckpointRecord:
        result = await self._client.checkpoint()
        return CheckpointRecord(
            id=result.id[:128],
            size_bytes=result.size_bytes,
            duration_ms=result.duration_ms,
            sha256=result.sha256[:64] if result.sha256 else None,
        )

    async def restart(self) -> None:
        await self._client.restart()


class AgentConnections:
    """Finds a pod's agent: its address from the pod, its token from the deployment's Secret."""

    def __init__(self, kube: KubeApi, timeout_s: float) -> None:
        self._kube = kube
        self._timeout_s = timeout_s

    def __call__(self, deployment: dict[str, Any], pod_ip: str | None) -> PodAgent | None:
        if not pod_ip:
            return None
        metadata = deployment["metadata"]
        spec = InferenceDeploymentSpec.model_validate(deployment.get("spec") or {})
        token = self._kube.ensure_agent_token(
            metadata["name"],
            metadata["namespace"],
            owner_reference(metadata["name"], metadata["uid"]),
        )
        host = f"[{pod_ip}]" if ":" in pod_ip else pod_ip
        # A restart waits out the server's grace period before it answers.
        timeout = self._timeout_s + restart_grace_seconds(spec)
        return PodAgent(AgentClient(f"http://{host}:{agent_port(spec)}", token, timeout=timeout))
