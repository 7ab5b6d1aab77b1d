"""The rendered install on a real API server (the local cluster of tests/fixtures/cluster.py).

`kubectl apply --dry-run=server` runs every admission step, schema validation and defaulting
without storing anything, so the install is checked against the real API without touching the
shared cluster. Namespaced objects are moved into the test's own namespace, which warns on the
restricted Pod Security Standard: a Deployment that would violate it makes the API server say so.
The operator's RBAC is then applied for real under unique names, and the API server's own
authorizer is asked what the operator's ServiceAccount may do.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.cluster import Cluster
from tests.unit.delivery.support import (
    MANIFESTS,
    REPO,
    VALUES_FILES,
    Manifest,
    documents,
    helm_template,
    one,
    run,
)

pytestmark = pytest.mark.integration
FIELD_MANAGER = "infercycle-delivery-test"
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition"}


@pytest.fixture(scope="module")
def installed(cluster: Cluster) -> Cluster:
    """The CRDs, as the other integration tests install them (the samples need them)."""
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(REPO / "crds"))
    for crd in ("inferencedeployments.infercycle.io", "recyclepolicies.infercycle.io"):
        cluster.kubectl("wait", "--for=condition=Established", f"crd/{crd}", "--timeout=60s")
    return cluster


@pytest.fixture
def restricted_namespace(installed: Cluster, namespace: str) -> str:
    installed.kubectl(
        "label", "namespace", namespace,
        "pod-security.kubernetes.io/warn=restricted",
        "pod-security.kubernetes.io/warn-version=latest",
    )  # fmt: skip
    return namespace


def _served_kinds(cluster: Cluster) -> set[str]:
    listing = cluster.kubectl("api-resources", "-o", "name").stdout.split()
    return {name.split(".", 1)[0] for name in listing}


def _retarget(objects: list[Manifest], namespace: str, served: set[str]) -> list[Manifest]:
    """Namespaced objects into the test namespace; kinds this cluster does not serve dropped."""
    plural = {"ServiceMonitor": "servicemonitors", "PrometheusRule": "prometheusrules"}
    moved = []
    for original in objects:
        if original["kind"] in plural and plural[original["kind"]] not in served:
            continue  # the Prometheus Operator's CRDs are not installed here
        obj = json.loads(json.dumps(original))
        if obj["kind"] not in CLUSTER_SCOPED:
            obj["metadata"]["namespace"] = namespace
        for subject in obj.get("subjects") or []:
            subject["namespace"] = namespace
        moved.append(obj)
    return moved


def _dry_run(cluster: Cluster, objects: list[Manifest]) -> str:
    body = json.dumps({"apiVersion": "v1", "kind": "List", "items": objects})
    result = cluster.kubectl(
        "apply", "--server-side", "--dry-run=server", "--force-conflicts",
        f"--field-manager={FIELD_MANAGER}", "-f", "-",
        input=body,
    )  # fmt: skip
    return result.stderr


def _renderings(helm: Path, kubectl: Path) -> Iterator[tuple[str, list[Manifest]]]:
    yield "manifests", documents(run(kubectl, "kustomize", MANIFESTS).stdout)
    yield (
        "manifests/monitoring",
        documents(run(kubectl, "kustomize", MANIFESTS / "monitoring").stdout),
    )
    yield "chart (defaults)", documents(helm_template(helm).stdout)
    for values in VALUES_FILES:
        yield f"chart ({values.name})", documents(helm_template(helm, values).stdout)


def test_every_rendering_passes_server_side_dry_run(
    installed: Cluster, restricted_namespace: str, helm: Path, kubectl: Path
) -> None:
    served = _served_kinds(installed)
    for name, objects in _renderings(helm, kubectl):
        warnings = _dry_run(installed, _retarget(objects, restricted_namespace, served))
        assert "would violate PodSecurity" not in warnings, f"{name}: {warnings}"


def test_samples_pass_server_side_dry_run(installed: Cluster, namespace: str) -> None:
    samples: list[Manifest] = []
    for path in sorted((MANIFESTS / "samples").glob("*.yaml")):
        samples.extend(documents(path.read_text()))
    _dry_run(installed, _retarget(samples, namespace, set()))


def _can(cluster: Cluster, account: str, verb: str, resource: str, namespace: str) -> bool:
    """`kubectl auth can-i`; ``pods/eviction`` is a subresource, not a pod named eviction."""
    name, _, subresource = resource.partition("/")
    extra = [f"--subresource={subresource}"] if subresource else []
    result = cluster.kubectl(
        "auth", "can-i", verb, name, *extra, f"--as={account}", "-n", namespace, check=False
    )
    return result.stdout.strip() == "yes"


@pytest.fixture
def bound_operator_account(installed: Cluster, namespace: str, kubectl: Path) -> Iterator[str]:
    """The operator's ClusterRole and binding applied for real, under names of this test only."""
    rendered = documents(run(kubectl, "kustomize", MANIFESTS).stdout)
    suffix = secrets.token_hex(3)
    role = one(rendered, "ClusterRole", "infercycle-operator")
    binding = one(rendered, "ClusterRoleBinding", "infercycle-operator")
    account = one(rendered, "ServiceAccount")
    role["metadata"] = {"name": f"infercycle-test-{suffix}"}
    binding["metadata"] = {"name": f"infercycle-test-{suffix}"}
    binding["roleRef"]["name"] = role["metadata"]["name"]
    binding["subjects"][0]["namespace"] = namespace
    account["metadata"]["namespace"] = namespace
    objects = [role, binding, account]
    body = json.dumps({"apiVersion": "v1", "kind": "List", "items": objects})
    installed.kubectl(
        "apply", "--server-side", f"--field-manager={FIELD_MANAGER}", "-f", "-", input=body
    )
    try:
        yield f"system:serviceaccount:{namespace}:{account['metadata']['name']}"
    finally:
        installed.kubectl("delete", "clusterrolebinding", binding["metadata"]["name"], check=False)
        installed.kubectl("delete", "clusterrole", role["metadata"]["name"], check=False)


def test_the_api_server_grants_exactly_what_the_operator_needs(
    installed: Cluster, bound_operator_account: str
) -> None:
    account = bound_operator_account
    elsewhere = "default"
    allowed: list[tuple[str, str]] = [
        ("watch", "pods"),
        ("patch", "pods"),
        ("create", "pods/eviction"),
        ("create", "statefulsets.apps"),
        ("delete", "poddisruptionbudgets.policy"),
        ("get", "secrets"),
        ("create", "persistentvolumeclaims"),
        ("create", "events"),
        ("create", "events.events.k8s.io"),
        ("list", "namespaces"),
        ("patch", "inferencedeployments.infercycle.io"),
        ("patch", "inferencedeployments.infercycle.io/status"),
        ("update", "inferencedeployments.infercycle.io/finalizers"),
        ("watch", "recyclepolicies.infercycle.io"),
        ("list", "customresourcedefinitions.apiextensions.k8s.io"),
    ]
    refused: list[tuple[str, str]] = [
        ("create", "pods"),
        ("delete", "pods"),
        ("create", "deployments.apps"),
        ("create", "inferencedeployments.infercycle.io"),
        ("delete", "inferencedeployments.infercycle.io"),
        ("patch", "recyclepolicies.infercycle.io"),
        ("create", "customresourcedefinitions.apiextensions.k8s.io"),
        ("create", "clusterroles.rbac.authorization.k8s.io"),
        ("get", "nodes"),
        ("create", "pods/exec"),
        ("update", "inferencedeployments.infercycle.io/scale"),
        ("patch", "recyclepolicies.infercycle.io/status"),
    ]
    wrong: list[Any] = [
        ("expected yes", verb, resource)
        for verb, resource in allowed
        if not _can(installed, account, verb, resource, elsewhere)
    ] + [
        ("expected no", verb, resource)
        for verb, resource in refused
        if _can(installed, account, verb, resource, elsewhere)
    ]
    assert not wrong
