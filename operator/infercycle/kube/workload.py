"""The objects an InferenceDeployment owns, built as plain manifests (no API calls here).

StatefulSet (one session volume per replica, so pod N finds its own checkpoint), a headless
Service for stable pod names, a client Service that selects only pods labelled as serving, a
PodDisruptionBudget, and the Secret holding the agent token.
"""

from __future__ import annotations

import copy
from typing import Any

from infercycle.api.resources import API_VERSION, InferenceDeploymentSpec, RestartStrategy
from infercycle.api.units import parse_duration
from infercycle.api.values import EffectivePolicy
from infercycle.cycle.state import DEPLOYMENT_LABEL

Manifest = dict[str, Any]


SERVING_LABEL = "infercycle.io/serving"
MANAGED_BY = {"app.kubernetes.io/managed-by": "infercycle"}
SESSION_VOLUME = "sessions"
DEFAULT_MOUNT_PATH = "/var/lib/infercycle/sessions"
DEFAULT_AGENT_PORT = 8089
AGENT_CONTAINER = "infercycle-agent"
AGENT_UID = 65532
TOKEN_KEY = "token"  # noqa: S105 - the Secret key name, not a secret


def agent_secret_name(name: str) -> str:
    return f"{name}-agent-token"


def headless_service_name(name: str) -> str:
    return f"{name}-pods"


def owner_reference(name: str, uid: str) -> Manifest:
    return {
        "apiVersion": API_VERSION,
        "kind": "InferenceDeployment",
        "name": name,
        "uid": uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def selector_labels(name: str) -> dict[str, str]:
    return {DEPLOYMENT_LABEL: name}


def label_selector_string(name: str) -> str:
    return f"{DEPLOYMENT_LABEL}={name}"


def _metadata(
    name: str, namespace: str, owner: Manifest, extra: dict[str, str] | None = None
) -> Manifest:
    return {
        "name": name,
        "namespace": namespace,
        "labels": {**MANAGED_BY, **selector_labels(owner["name"]), **(extra or {})},
        "ownerReferences": [owner],
    }


def server_container_name(spec: InferenceDeploymentSpec) -> str:
    """The server container's name; empty for an attached workload that names none (each
    pod's first container is the server then)."""
    containers = (spec.template or {}).get("spec", {}).get("containers") or []
    if spec.server_container:
        return spec.server_container
    if containers:
        return str(containers[0].get("name", ""))
    return ""


def agent_enabled(spec: InferenceDeploymentSpec) -> bool:
    return spec.agent is None or spec.agent.enabled is not False


def restart_grace_seconds(spec: InferenceDeploymentSpec) -> float:
    grace = spec.agent.restart_grace_period if spec.agent else None
    return parse_duration(grace) if grace else 30.0


def agent_port(spec: InferenceDeploymentSpec) -> int:
    return (spec.agent.port if spec.agent else None) or DEFAULT_AGENT_PORT


def _agent_container(spec: InferenceDeploymentSpec, image: str, mount_path: str) -> Manifest:
    agent = spec.agent
    args = [
        "agent",
        f"--port={agent_port(spec)}",
        f"--checkpoint-dir={mount_path}/checkpoints",
        "--token-file=/var/run/infercycle/agent/token",
        # Off the session volume: a full or read-only volume cannot make it restore twice.
        "--state-dir=/tmp/state",
        f"--server-process={server_container_name(spec)}",
    ]
    if agent and agent.session_hook:
        args.append(f"--session-hook={agent.session_hook}")
    if agent and agent.session_dir:
        args.append(f"--session-dir={agent.session_dir}")
    if agent and agent.keep_checkpoints:
        args.append(f"--keep={agent.keep_checkpoints}")
    if agent and agent.max_checkpoint_size:
        args.append(f"--max-size={agent.max_checkpoint_size}")
    if agent and agent.restart_grace_period:
        args.append(f"--grace-period={restart_grace_seconds(spec):g}")
    return {
        "name": AGENT_CONTAINER,
        "image": (agent.image if agent and agent.image else None) or image,
        "args": args,
        "env": [
            {"name": "POD_UID", "valueFrom": {"fieldRef": {"fieldPath": "metadata.uid"}}},
            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        ],
        "ports": [{"name": "agent", "containerPort": agent_port(spec), "protocol": "TCP"}],
        "readinessProbe": {"httpGet": {"path": "/healthz", "port": agent_port(spec)}},
        "resources": {
            "requests": {"cpu": "10m", "memory": "64Mi"},
            "limits": {"memory": "512Mi"},
        },
        "securityContext": agent_security_context(spec),
        "volumeMounts": [
            {"name": SESSION_VOLUME, "mountPath": mount_path},
            {"name": "agent-token", "mountPath": "/var/run/infercycle/agent", "readOnly": True},
            {"name": "agent-tmp", "mountPath": "/tmp"},  # noqa: S108 - an emptyDir,
        ],
    }


def _in_place(spec: InferenceDeploymentSpec) -> bool:
    strategy = RestartStrategy(spec.restart_strategy or RestartStrategy.IN_PLACE)
    return strategy is RestartStrategy.IN_PLACE


def server_user(spec: InferenceDeploymentSpec) -> tuple[int | None, int | None]:
    """The non-root user and group the server container runs as, when the template says so
    (its own securityContext first, then the pod's); None for root or unknown."""
    pod_spec = (spec.template or {}).get("spec") or {}
    pod_context = pod_spec.get("securityContext") or {}
    server = server_container_name(spec)
    context: dict[str, Any] = {}
    for container in pod_spec.get("containers") or []:
        if container.get("name") == server:
            context = container.get("securityContext") or {}
    user = context.get("runAsUser", pod_context.get("runAsUser"))
    group = context.get("runAsGroup", pod_context.get("runAsGroup"))
    if not isinstance(user, int) or isinstance(user, bool) or user <= 0:
        return None, None
    return user, group if isinstance(group, int) and not isinstance(group, bool) else None


def agent_security_context(spec: InferenceDeploymentSpec) -> Manifest:
    """The agent meets the restricted Pod Security Standard whenever the server's user is known.

    An in-place restart signals the server process through the shared PID namespace. A process
    may signal another of the same user without any capability, so the agent runs as the
    server's user when the template names it. Only when it does not (or names root) does the
    agent keep its own user and add CAP_KILL, which the restricted standard refuses.
    """
    user, group = server_user(spec)
    context: Manifest = {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "runAsUser": user if user is not None else AGENT_UID,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    if group is not None:
        context["runAsGroup"] = group
    if user is None and _in_place(spec):
        context["capabilities"]["add"] = ["KILL"]
    return context


def pod_template(name: str, spec: InferenceDeploymentSpec, agent_image: str) -> Manifest:
    """The user's template plus our labels, the session volume and the agent sidecar."""
    template = copy.deepcopy(spec.template or {})
    metadata = template.setdefault("metadata", {})
    metadata["labels"] = {
        **(metadata.get("labels") or {}),
        **selector_labels(name),
        SERVING_LABEL: "true",
    }
    pod_spec = template.setdefault("spec", {})
    containers = pod_spec.setdefault("containers", [])
    server = server_container_name(spec)
    mount_path = (
        spec.session_store.mount_path if spec.session_store else None
    ) or DEFAULT_MOUNT_PATH
    if spec.session_store is not None:
        for container in containers:
            if container.get("name") == server:
                mounts = container.setdefault("volumeMounts", [])
                if not any(m.get("name") == SESSION_VOLUME for m in mounts):
                    mounts.append({"name": SESSION_VOLUME, "mountPath": mount_path})
    if agent_enabled(spec) and spec.session_store is not None:
        containers[:] = [c for c in containers if c.get("name") != AGENT_CONTAINER]
        containers.append(_agent_container(spec, agent_image, mount_path))
        volumes = pod_spec.setdefault("volumes", [])
        volumes[:] = [v for v in volumes if v.get("name") not in ("agent-token", "agent-tmp")]
        volumes.append(
            {
                "name": "agent-token",
                # Readable by whichever user the agent runs as, so the pod needs no fsGroup;
                # only the agent container mounts it.
                "secret": {"secretName": agent_secret_name(name), "defaultMode": 0o444},
            }
        )
        volumes.append({"name": "agent-tmp", "emptyDir": {"sizeLimit": "64Mi"}})
        # The agent finds the server process to stop it (InPlace) and, with either strategy, to
        # restore the sessions into the server a new container or a new pod starts.
        pod_spec["shareProcessNamespace"] = True
        if server_user(spec)[0] is None:
            # Who the server runs as is not said: the agent runs as its own user (with CAP_KILL
            # for in-place restarts) and reaches the session volume through this group. A pod
            # that names the server's user gets neither: the agent runs as that user.
            pod_spec.setdefault("securityContext", {}).setdefault("fsGroup", AGENT_UID)
    return template


def stateful_set(
    name: str, namespace: str, uid: str, spec: InferenceDeploymentSpec, agent_image: str
) -> Manifest:
    owner = owner_reference(name, uid)
    body: Manifest = {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": _metadata(name, namespace, owner),
        "spec": {
            "replicas": spec.desired_replicas,
            "serviceName": headless_service_name(name),
            "podManagementPolicy": "Parallel",
            "selector": {"matchLabels": selector_labels(name)},
            "template": pod_template(name, spec, agent_image),
            "updateStrategy": {"type": "RollingUpdate"},
            "persistentVolumeClaimRetentionPolicy": {
                "whenDeleted": "Delete",
                "whenScaled": "Retain",
            },
        },
    }
    store = spec.session_store
    if store is not None:
        claim: Manifest = {
            "metadata": {"name": SESSION_VOLUME, "labels": selector_labels(name)},
            "spec": {
                "accessModes": list(store.access_modes or ["ReadWriteOnce"]),
                "resources": {"requests": {"storage": store.size}},
            },
        }
        if store.storage_class_name:
            claim["spec"]["storageClassName"] = store.storage_class_name
        body["spec"]["volumeClaimTemplates"] = [claim]
    return body


def _service_ports(spec: InferenceDeploymentSpec) -> list[Manifest]:
    server = server_container_name(spec)
    ports: list[Manifest] = []
    for container in (spec.template or {}).get("spec", {}).get("containers") or []:
        if container.get("name") != server:
            continue
        for index, port in enumerate(container.get("ports") or []):
            ports.append(
                {
                    "name": port.get("name") or f"port-{index}",
                    "port": port["containerPort"],
                    "targetPort": port["containerPort"],
                    "protocol": port.get("protocol", "TCP"),
                }
            )
    return ports or [{"name": "http", "port": 8000, "targetPort": 8000, "protocol": "TCP"}]


def client_service(name: str, namespace: str, uid: str, spec: InferenceDeploymentSpec) -> Manifest:
    """Selects only serving pods: a drained pod leaves the endpoints at once."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(name, namespace, owner_reference(name, uid)),
        "spec": {
            "selector": {**selector_labels(name), SERVING_LABEL: "true"},
            "ports": _service_ports(spec),
        },
    }


def headless_service(
    name: str, namespace: str, uid: str, spec: InferenceDeploymentSpec
) -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(headless_service_name(name), namespace, owner_reference(name, uid)),
        "spec": {
            "clusterIP": "None",
            "publishNotReadyAddresses": True,
            "selector": selector_labels(name),
            "ports": _service_ports(spec),
        },
    }


def disruption_budget(
    name: str, namespace: str, uid: str, spec: InferenceDeploymentSpec, policy: EffectivePolicy
) -> Manifest:
    """Protects the fleet from every voluntary disruption, ours included."""
    max_unavailable = policy.disruption.max_unavailable_for(max(spec.desired_replicas, 1))
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _metadata(name, namespace, owner_reference(name, uid)),
        "spec": {
            "maxUnavailable": max_unavailable,
            "selector": {"matchLabels": selector_labels(name)},
            "unhealthyPodEvictionPolicy": "AlwaysAllow",
        },
    }


def agent_secret(name: str, namespace: str, uid: str, token: str) -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": _metadata(agent_secret_name(name), namespace, owner_reference(name, uid)),
        "stringData": {TOKEN_KEY: token},
    }


# The operator's pods, as the chart and manifests/ label them.
OPERATOR_POD_LABELS = {
    "app.kubernetes.io/component": "operator",
    "app.kubernetes.io/part-of": "infercycle",
}


def agent_network_policy(
    name: str, namespace: str, uid: str, spec: InferenceDeploymentSpec, operator_namespace: str
) -> Manifest:
    """Ingress to the deployment's pods: the agent port from the operator only.

    A pod selected by any NetworkPolicy accepts only what some policy allows, so the ports the
    template declares (other than the agent's) stay open to every peer, as they were; ports it
    does not declare are closed. Other policies of the namespace add to this one.
    """
    port = agent_port(spec)
    declared: list[Manifest] = []
    seen: set[tuple[int, str]] = set()
    for container in ((spec.template or {}).get("spec") or {}).get("containers") or []:
        if container.get("name") == AGENT_CONTAINER:
            continue
        for item in container.get("ports") or []:
            key = (int(item["containerPort"]), str(item.get("protocol", "TCP")))
            if key[0] != port and key not in seen:
                seen.add(key)
                declared.append({"port": key[0], "protocol": key[1]})
    if not declared:
        declared = [
            {"port": item["targetPort"], "protocol": item["protocol"]}
            for item in _service_ports(spec)
            if item["targetPort"] != port
        ]
    ingress: list[Manifest] = [
        {
            "from": [
                {
                    "namespaceSelector": {
                        "matchLabels": {"kubernetes.io/metadata.name": operator_namespace}
                    },
                    "podSelector": {"matchLabels": dict(OPERATOR_POD_LABELS)},
                }
            ],
            "ports": [{"port": port, "protocol": "TCP"}],
        }
    ]
    if declared:
        ingress.append({"ports": declared})
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _metadata(f"{name}-agent", namespace, owner_reference(name, uid)),
        "spec": {
            "podSelector": {"matchLabels": selector_labels(name)},
            "policyTypes": ["Ingress"],
            "ingress": ingress,
        },
    }
