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
    NAMESPACE,
    NAMESPACED_OVERLAY,
    REPO,
    VALUES_FILES,
    Manifest,
    by_kind,
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
    cluster.wait_established(
        "crd/inferencedeployments.infercycle.io", "crd/recyclepolicies.infercycle.io"
    )
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


def _bind_for_test(
    cluster: Cluster, rendered: list[Manifest], namespace: str, watched: str | None = None
) -> tuple[str, list[Manifest]]:
    """The operator's roles and bindings of a rendering, renamed for this test only and bound
    to an account in ``namespace``; Roles of managed namespaces move to ``watched``, the leader
    Lease's Role to ``namespace``. Returns the account's user name and what was applied."""
    suffix = secrets.token_hex(3)
    account = one(rendered, "ServiceAccount")
    objects: list[Manifest] = []
    for binding in by_kind(rendered, "ClusterRoleBinding") + by_kind(rendered, "RoleBinding"):
        ref = binding["roleRef"]
        role = one(rendered, ref["kind"], ref["name"])
        name = f"{ref['name']}-test-{suffix}"
        home = binding["metadata"].get("namespace") == NAMESPACE  # the leader Lease's Role
        where = namespace if home else watched
        scoped = {"namespace": where} if binding["kind"] == "RoleBinding" else {}
        role["metadata"] = {"name": name, **scoped}
        binding["metadata"] = {"name": name, **scoped}
        binding["roleRef"]["name"] = name
        binding["subjects"][0]["namespace"] = namespace
        objects += [role, binding]
    account["metadata"]["namespace"] = namespace
    objects.append(account)
    body = json.dumps({"apiVersion": "v1", "kind": "List", "items": objects})
    cluster.kubectl(
        "apply", "--server-side", f"--field-manager={FIELD_MANAGER}", "-f", "-", input=body
    )
    return f"system:serviceaccount:{namespace}:{account['metadata']['name']}", objects


def _unbind(cluster: Cluster, objects: list[Manifest]) -> None:
    for obj in objects:
        if obj["kind"] != "ServiceAccount":
            scope = ["-n", obj["metadata"]["namespace"]] if "namespace" in obj["metadata"] else []
            cluster.kubectl(
                "delete", obj["kind"].lower(), obj["metadata"]["name"], *scope, check=False
            )


@pytest.fixture
def bound_operator_account(installed: Cluster, namespace: str, kubectl: Path) -> Iterator[str]:
    """The operator's ClusterRoles and bindings applied for real, under names of this test."""
    rendered = documents(run(kubectl, "kustomize", MANIFESTS).stdout)
    account, objects = _bind_for_test(installed, rendered, namespace)
    try:
        yield account
    finally:
        _unbind(installed, objects)


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
        # Attach mode reads the workload it targets, and drains through the pods' status.
        ("get", "statefulsets.apps"),
        ("get", "deployments.apps"),
        ("patch", "pods/status"),
        ("patch", "poddisruptionbudgets.policy"),
        ("patch", "networkpolicies.networking.k8s.io"),
        ("get", "secrets"),
        ("create", "secrets"),
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
        ("list", "secrets"),
        ("watch", "secrets"),
        ("update", "secrets"),
        ("delete", "secrets"),
        ("delete", "statefulsets.apps"),
        ("delete", "poddisruptionbudgets.policy"),
        ("create", "persistentvolumeclaims"),
        ("delete", "persistentvolumeclaims"),
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


def test_with_namespaces_listed_the_operator_has_rights_only_there(
    installed: Cluster, namespace: str, restricted_namespace: str, kubectl: Path
) -> None:
    rendered = documents(run(kubectl, "kustomize", NAMESPACED_OVERLAY).stdout)
    account, objects = _bind_for_test(installed, rendered, namespace, watched=restricted_namespace)
    try:
        for verb, resource in (("watch", "pods"), ("get", "secrets"), ("patch", "pods")):
            assert _can(installed, account, verb, resource, restricted_namespace), resource
            assert not _can(installed, account, verb, resource, "default"), resource
        assert _can(installed, account, "watch", "recyclepolicies.infercycle.io", "default")
        assert _can(installed, account, "list", "namespaces", "default")
        # One replica by default: the leader Lease's Role comes with manifests/leader-election.
        assert not _can(installed, account, "create", "leases.coordination.k8s.io", namespace)
        assert not _can(installed, account, "create", "leases.coordination.k8s.io", "default")
    finally:
        _unbind(installed, objects)
