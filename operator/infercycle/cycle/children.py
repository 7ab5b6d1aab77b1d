"""The objects an InferenceDeployment owns, kept in sync: StatefulSet, Services, PDB, token."""

from __future__ import annotations

from typing import Any

from infercycle.api.resources import InferenceDeploymentSpec, RestartStrategy
from infercycle.api.values import EffectivePolicy
from infercycle.cycle.inputs import read_target
from infercycle.kube import workload
from infercycle.kube.api import KubeApi, pod_state


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


def release_attached(kube: KubeApi, body: dict[str, Any]) -> list[str]:
    """An attached deployment going away leaves no pod out of service: every pod of its target
    drained through the readiness gate is returned (the names returned). Nothing else of the
    workload is touched."""
    try:
        spec = InferenceDeploymentSpec.model_validate(body.get("spec") or {})
    except ValueError:
        return []
    if spec.target_ref is None:
        return []
    namespace = body["metadata"]["namespace"]
    lookup = read_target(kube, (namespace, body["metadata"]["name"]), spec)
    if lookup.target is None:
        return []
    returned = []
    for raw in kube.list_pods(namespace, lookup.target.selector.to_query()):
        pod = pod_state(raw, "", attached=True)
        if pod.drainable and not pod.serving and not pod.terminating:
            kube.set_readiness_gate(namespace, pod.name, pod.uid, True)
            returned.append(pod.name)
    return returned
