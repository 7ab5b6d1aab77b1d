"""The generated CRDs on a real API server: they install, and bad specs are refused with the
message of the schema or CEL rule that caught them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.fixtures.cluster import Cluster

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]


def _deployment(namespace: str, **spec: Any) -> str:
    body = {
        "apiVersion": "infercycle.io/v1alpha1",
        "kind": "InferenceDeployment",
        "metadata": {"name": "probe", "namespace": namespace},
        "spec": {
            "replicas": 3,
            "template": {"spec": {"containers": [{"name": "server", "image": "x"}]}},
            **spec,
        },
    }
    return json.dumps(body)


@pytest.fixture(scope="module")
def installed(cluster: Cluster) -> Cluster:
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(REPO / "crds"))
    cluster.wait_established(
        "crd/inferencedeployments.infercycle.io", "crd/recyclepolicies.infercycle.io"
    )
    return cluster


def test_valid_deployment_and_policy_are_accepted(installed: Cluster, namespace: str) -> None:
    installed.kubectl("apply", "--dry-run=server", "-f", "-", input=_deployment(namespace))
    for sample in sorted((REPO / "manifests" / "samples").glob("*.yaml")):
        for document in yaml.safe_load_all(sample.read_text()):
            if not document or document.get("kind") not in ("InferenceDeployment", "RecyclePolicy"):
                continue
            if document["kind"] == "InferenceDeployment":
                document["metadata"]["namespace"] = namespace
            installed.kubectl("apply", "--dry-run=server", "-f", "-", input=json.dumps(document))


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"replicas": 3, "disruption": {"minAvailable": 3}}, "minAvailable must be below replicas"),
        (
            {
                "health": {
                    "rules": [
                        {
                            "name": "r",
                            "signal": "cpu",
                            "kind": "above",
                            "threshold": "2",
                            "clear": "3",
                            "window": "1m",
                        }
                    ]
                }
            },
            "clear must be on the healthy side",
        ),
        (
            {"health": {"rules": [{"name": "r", "kind": "outlier", "threshold": "0.5"}]}},
            "ratios above 1",
        ),
        (
            {"health": {"rules": [{"name": "memory-leak", "threshold": "-1Mi"}]}},
            "threshold must not be negative",
        ),
        (
            {"health": {"rules": [{"name": "memory-leak", "clear": "-1"}]}},
            "clear must not be negative",
        ),
        (
            {"health": {"rules": [{"name": "memory-leak", "limit": "-1Gi"}]}},
            "limit must not be negative",
        ),
        (
            {"health": {"rules": [{"name": "memory-leak", "window": "0s"}]}},
            "window must be longer than 0s",
        ),
        (
            {"health": {"rules": [{"name": "latency-creep", "baselineWindow": "0ms"}]}},
            "baselineWindow must be longer than 0s",
        ),
        ({"disruption": {"maxRecyclesPerHour": 21}}, "less than or equal to 20"),
        ({"health": {"warmup": "ten minutes"}}, "spec.health.warmup"),
        ({"template": {"spec": {"containers": []}}}, "template.spec.containers must list"),
        ({"restartStrategy": "Reboot"}, "spec.restartStrategy"),
    ],
)
def test_invalid_deployments_are_refused_with_the_rule_message(
    installed: Cluster, namespace: str, spec: dict[str, Any], message: str
) -> None:
    result = installed.kubectl(
        "apply", "--dry-run=server", "-f", "-", input=_deployment(namespace, **spec), check=False
    )
    assert result.returncode != 0
    assert message in result.stderr, result.stderr


def test_printer_columns_and_short_names(installed: Cluster, namespace: str) -> None:
    installed.kubectl("apply", "-f", "-", input=_deployment(namespace))
    out = installed.kubectl("get", "infd", "-n", namespace).stdout
    header = out.splitlines()[0].split()
    assert header == ["NAME", "REPLICAS", "READY", "DEGRADED", "RECYCLING", "AGE"]
    installed.kubectl("get", "rcp")


TARGET = {"apiVersion": "apps/v1", "kind": "Deployment", "name": "llama"}
LWS_TARGET = {"apiVersion": "leaderworkerset.x-k8s.io/v1", "kind": "LeaderWorkerSet", "name": "big"}
TEMPLATE = {"spec": {"containers": [{"name": "server", "image": "x"}]}}


def _raw(namespace: str, spec: dict[str, Any]) -> str:
    body = {
        "apiVersion": "infercycle.io/v1alpha1",
        "kind": "InferenceDeployment",
        "metadata": {"name": "probe", "namespace": namespace},
        "spec": spec,
    }
    return json.dumps(body)


def test_an_attached_deployment_is_accepted(installed: Cluster, namespace: str) -> None:
    for target in (TARGET, LWS_TARGET):
        spec = {"targetRef": target, "restartStrategy": "Recreate"}
        installed.kubectl("apply", "--dry-run=server", "-f", "-", input=_raw(namespace, spec))


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"replicas": 2, "template": TEMPLATE, "targetRef": TARGET}, "set exactly one of"),
        ({"replicas": 2}, "set exactly one of"),
        ({"template": TEMPLATE}, "spec.replicas is required with spec.template"),
        (
            {"targetRef": {**TARGET, "kind": "LeaderWorkerSet"}},
            "leaderworkerset.x-k8s.io/v1 for LeaderWorkerSet",
        ),
        ({"targetRef": {**TARGET, "kind": "DaemonSet"}}, "spec.targetRef.kind"),
        (
            {"targetRef": LWS_TARGET, "restartStrategy": "InPlace"},
            "must be Recreate for a LeaderWorkerSet",
        ),
    ],
)
def test_template_and_target_ref_rules_are_enforced_by_the_api_server(
    installed: Cluster, namespace: str, spec: dict[str, Any], message: str
) -> None:
    result = installed.kubectl(
        "apply", "--dry-run=server", "-f", "-", input=_raw(namespace, spec), check=False
    )
    assert result.returncode != 0
    assert message in result.stderr, result.stderr
