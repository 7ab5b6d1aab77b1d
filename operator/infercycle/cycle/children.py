"""The objects an InferenceDeployment owns, kept in sync: StatefulSet, Services, PDB, token."""

from __future__ import annotations

from typing import Any

from infercycle.api.resources import InferenceDeploymentSpec, RestartStrategy
from infercycle.api.values import EffectivePolicy
from infercycle.kube import workload
from infercycle.kube.api import KubeApi


def reconcile_children(
    kube: KubeApi,
    body: dict[str, Any],
    spec: InferenceDeploymentSpec,
    policy: EffectivePolicy,
    agent_image: str,
) -> int:
    """Server-side apply every owned object; the PDB's maxUnavailable it was given."""
    metadata = body["metadata"]
    name, namespace, uid = metadata["name"], metadata["namespace"], metadata["uid"]
    owner = workload.owner_reference(name, uid)
    if workload.agent_enabled(spec) and spec.session_store is not None:
        kube.ensure_agent_token(name, namespace, owner)
    kube.apply(workload.headless_service(name, namespace, uid, spec))
    kube.apply(workload.client_service(name, namespace, uid, spec))
    kube.apply(workload.disruption_budget(name, namespace, uid, spec, policy))
    kube.apply(workload.stateful_set(name, namespace, uid, spec, agent_image))
    return policy.disruption.max_unavailable_for(max(spec.desired_replicas, 1))


def attach_children(kube: KubeApi, body: dict[str, Any], spec: InferenceDeploymentSpec) -> None:
    """An attached deployment owns nothing of the workload; with InPlace restarts it owns the
    agent token Secret that the user's agent sidecars mount (``<name>-agent-token``)."""
    if workload.agent_enabled(spec) and spec.strategy is RestartStrategy.IN_PLACE:
        metadata = body["metadata"]
        owner = workload.owner_reference(metadata["name"], metadata["uid"])
        kube.ensure_agent_token(metadata["name"], metadata["namespace"], owner)
