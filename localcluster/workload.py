"""Workloads for the real node: the stand-in inference server as an InferenceDeployment.

The pods run images built here and loaded into the node's containerd: the stand-in server
(``localhost/infercycle/standin``: the project's image plus the stand-in module) as the server
container, the recycle agent (the project's own image) as the sidecar the operator adds. Their
session volume is a local
PersistentVolume on the node; Prometheus finds them through the API server (pod annotations)
and reads their containers' memory from the kubelet's cAdvisor endpoint. Used by the real-node
tests and ``make demo``.
"""

from __future__ import annotations

import shlex
from typing import Any

from localcluster.components.kubelet import NODE_LABEL, NODE_TAINT
from localcluster.node import STORAGE_CLASS

SERVER = "standin"
SERVER_PORT = 8000
AGENT_PORT = 8089
LEAK_MB_PER_MIN = 120.0  # ~7 GiB/h; the fast memory-leak rule's threshold is 2 GiB/h


def on_real_node(pod_spec: dict[str, Any]) -> dict[str, Any]:
    """Pin a pod spec to the real node (it carries a taint that keeps every other pod away)."""
    pod_spec["nodeSelector"] = {NODE_LABEL: "real"}
    pod_spec["tolerations"] = [{"key": NODE_TAINT, "operator": "Exists", "effect": "NoSchedule"}]
    return pod_spec


def standin_container(image: str, leaking_pod: str | None) -> dict[str, Any]:
    """The stand-in server; only ``leaking_pod`` leaks (all replicas share one template)."""
    leak = ""
    if leaking_pod:
        leak = (
            f'$( [ "$POD_NAME" = {shlex.quote(leaking_pod)} ] && '
            f"echo --leak-mb-per-min {LEAK_MB_PER_MIN:g} )"
        )
    script = (
        f"exec python3 /opt/infercycle-standin/standin.py --host 0.0.0.0 --port {SERVER_PORT} "
        f"--log-level WARNING {leak}"
    )
    return {
        "name": SERVER,
        "image": image,
        "imagePullPolicy": "Never",
        "command": ["/bin/sh", "-c", script],
        "env": [{"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
        "ports": [{"name": "http", "containerPort": SERVER_PORT}],
        "readinessProbe": {
            "httpGet": {"path": "/health", "port": SERVER_PORT},
            "periodSeconds": 1,
            "failureThreshold": 2,
        },
        "resources": {
            "requests": {"cpu": "10m", "memory": "64Mi"},
            "limits": {"memory": "1536Mi"},
        },
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
        },
    }


def deployment(
    name: str,
    namespace: str,
    image: str,
    *,
    strategy: str,
    replicas: int,
    leaking_pod: str | None,
    other_rules: list[str],
) -> dict[str, Any]:
    """An InferenceDeployment on the real node whose only rule is a fast memory-leak rule.

    ``other_rules`` names the built-in rules to turn off (every one but ``memory-leak``).
    """
    rules: list[dict[str, Any]] = [
        {"name": rule, "enabled": False} for rule in other_rules if rule != "memory-leak"
    ]
    rules.append(
        {
            "name": "memory-leak",
            "threshold": "2Gi",
            "clear": "512Mi",
            "window": "40s",
            "sustain": "10s",
        }
    )
    template_spec = on_real_node(
        {"terminationGracePeriodSeconds": 10, "containers": [standin_container(image, leaking_pod)]}
    )
    return {
        "apiVersion": "infercycle.io/v1alpha1",
        "kind": "InferenceDeployment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "replicas": replicas,
            "restartStrategy": strategy,
            "sessionStore": {"size": "1Gi", "storageClassName": STORAGE_CLASS},
            "agent": {
                "sessionHook": f"http://127.0.0.1:{SERVER_PORT}/sessions",
                "restartGracePeriod": "5s",
            },
            "health": {"warmup": "20s", "staleAfter": "45s", "rules": rules},
            "disruption": {
                "maxUnavailable": 1,
                "minAvailable": 1,
                "cooldown": "10m",
                "maxRecyclesPerHour": 10,
                "maxDegradedPercent": 50,
            },
            "recycle": {
                "drainTimeout": "4s",
                "readyTimeout": "120s",
                "verifyWindow": "6s",
                "fallbackToRecreate": False,
            },
            "template": {
                "metadata": {
                    "annotations": {
                        "prometheus.io/scrape": "true",
                        "prometheus.io/port": str(SERVER_PORT),
                        "prometheus.io/path": "/metrics",
                        # Real containers: the kubelet's cAdvisor reports their memory. The
                        # fleet simulator, when the same test session runs it, must not add
                        # simulated series for these pods on top.
                        "sim.infercycle.io/disabled": "true",
                    }
                },
                "spec": template_spec,
            },
        },
    }
