"""The agent sidecar on a real API server that enforces the restricted Pod Security Standard.

The pod is built exactly as the operator builds it (kube/workload.py) and created for real in a
namespace labelled ``pod-security.kubernetes.io/enforce=restricted``: the API server's own
PodSecurity admission is the judge, not a copy of its rules.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from infercycle.api.resources import InferenceDeploymentSpec
from infercycle.kube import workload
from tests.fixtures.cluster import Cluster

pytestmark = pytest.mark.integration

RESTRICTED_CONTAINER = {
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "runAsNonRoot": True,
    "seccompProfile": {"type": "RuntimeDefault"},
}


def _spec(server_context: dict[str, Any], strategy: str = "InPlace") -> InferenceDeploymentSpec:
    return InferenceDeploymentSpec.model_validate(
        {
            "replicas": 1,
            "restartStrategy": strategy,
            "sessionStore": {"size": "1Gi"},
            "agent": {"sessionHook": "http://127.0.0.1:8000/sessions"},
            "template": {
                "spec": {
                    "containers": [
                        {
                            "name": "server",
                            "image": "registry.invalid/inference-server:1",
                            "securityContext": server_context,
                        }
                    ]
                }
            },
        }
    )


def _pod(namespace: str, name: str, spec: InferenceDeploymentSpec) -> dict[str, Any]:
    template = workload.pod_template("llm", spec, "registry.invalid/infercycle:test")
    pod_spec = template["spec"]
    # The StatefulSet would bind its claim; a plain pod names one (it need not exist to be
    # admitted, and the pod is never started).
    pod_spec.setdefault("volumes", []).append(
        {"name": workload.SESSION_VOLUME, "persistentVolumeClaim": {"claimName": "sessions"}}
    )
    pod_spec["nodeName"] = "no-such-node"  # never scheduled, never run: admission is the test
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, **template.get("metadata", {})},
        "spec": pod_spec,
    }


@pytest.fixture
def restricted(cluster: Cluster, namespace: str) -> str:
    cluster.kubectl(
        "label", "namespace", namespace,
        "pod-security.kubernetes.io/enforce=restricted",
        "pod-security.kubernetes.io/enforce-version=latest",
    )  # fmt: skip
    return namespace


def _create(cluster: Cluster, pod: dict[str, Any]) -> Any:
    return cluster.kubectl("create", "-f", "-", input=json.dumps(pod), check=False)


def test_the_agent_sidecar_is_admitted_where_restricted_is_enforced(
    cluster: Cluster, restricted: str
) -> None:
    spec = _spec({**RESTRICTED_CONTAINER, "runAsUser": 1000, "runAsGroup": 1000})
    pod = _pod(restricted, "in-place", spec)
    created = _create(cluster, pod)
    assert created.returncode == 0, created.stderr
    stored = json.loads(
        cluster.kubectl("get", "pod", "in-place", "-n", restricted, "-o", "json").stdout
    )
    agent = next(c for c in stored["spec"]["containers"] if c["name"] == workload.AGENT_CONTAINER)
    assert agent["securityContext"]["runAsUser"] == 1000  # the server's user: no CAP_KILL
    assert "add" not in agent["securityContext"]["capabilities"]
    assert stored["spec"]["shareProcessNamespace"] is True
    assert "fsGroup" not in (stored["spec"].get("securityContext") or {})

    recreate = _pod(restricted, "recreate", _spec(RESTRICTED_CONTAINER, strategy="Recreate"))
    created = _create(cluster, recreate)
    assert created.returncode == 0, created.stderr


def test_without_the_servers_user_the_kill_capability_is_refused_there(
    cluster: Cluster, restricted: str
) -> None:
    pod = _pod(restricted, "unknown-user", _spec(RESTRICTED_CONTAINER))
    refused = _create(cluster, pod)
    assert refused.returncode != 0
    assert "violates PodSecurity" in refused.stderr, refused.stderr
    assert "KILL" in refused.stderr
