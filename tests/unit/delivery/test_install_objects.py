"""Every object the install creates, from manifests/ and from the chart, is valid and locked down.

Each rendering is checked the same way: known kinds and apiVersions only, no field the API does
not define, the restricted Pod Security Standard, no wildcard RBAC, the operator's settings all
understood by the operator, and the least-privilege ClusterRole exactly as reviewed.
"""

from __future__ import annotations

from typing import Any

import pytest

from infercycle.settings import OperatorSettings
from tests.unit.delivery.support import (
    CLIENT_MODELS,
    KNOWN_KINDS,
    Manifest,
    by_kind,
    one,
    pod_containers,
    unknown_fields,
)

# The operator's permissions as reviewed, one (apiGroup, resource, verb) per line of thought.
# Cluster-scoped resources, granted cluster-wide in every install:
CLUSTER_PERMISSIONS = {
    *(("", "namespaces", verb) for verb in ("get", "list", "watch")),
    *(("infercycle.io", "recyclepolicies", verb) for verb in ("get", "list", "watch")),
    *(("apiextensions.k8s.io", "customresourcedefinitions", verb)
      for verb in ("get", "list", "watch")),
}  # fmt: skip
# In the namespaces it manages: every namespace, or only the listed ones through Roles there.
WORKLOAD_PERMISSIONS = {
    *(("", "pods", verb) for verb in ("get", "list", "watch", "patch")),
    ("", "pods/eviction", "create"),
    # Attach mode: the readiness gate condition, and the attached workloads read by name.
    ("", "pods/status", "patch"),
    ("apps", "deployments", "get"),
    ("apps", "statefulsets", "get"),
    ("leaderworkerset.x-k8s.io", "leaderworkersets", "get"),
    # Children are written by server-side apply only: never read, never deleted.
    *((group, resource, verb)
      for group, resource in (("", "services"), ("apps", "statefulsets"),
                              ("policy", "poddisruptionbudgets"),
                              ("networking.k8s.io", "networkpolicies"))
      for verb in ("create", "patch")),
    ("", "secrets", "get"),
    ("", "secrets", "create"),
    *((group, "events", verb) for group in ("", "events.k8s.io") for verb in ("create", "patch")),
    *(("infercycle.io", "inferencedeployments", verb)
      for verb in ("get", "list", "watch", "patch", "update")),
    *(("infercycle.io", "inferencedeployments/status", verb)
      for verb in ("get", "patch", "update")),
    ("infercycle.io", "inferencedeployments/finalizers", "update"),
}  # fmt: skip
# With leader election, in the operator's own namespace: its Lease (get/update by name only).
LEASE_PERMISSIONS = {
    ("coordination.k8s.io", "leases", verb) for verb in ("get", "update", "create")
}
LEASE_NAME = "infercycle-operator-leader"
RESTRICTED_VOLUME_TYPES = {
    "configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim",
    "projected", "secret",
}  # fmt: skip


def permissions(role: Manifest) -> set[tuple[str, str, str]]:
    return {
        (group, resource, verb)
        for rule in role["rules"]
        for group in rule.get("apiGroups", [])
        for resource in rule.get("resources", [])
        for verb in rule["verbs"]
    }


def test_only_known_kinds_and_api_versions(rendering: list[Manifest]) -> None:
    assert rendering
    for obj in rendering:
        kind = obj.get("kind")
        assert kind in KNOWN_KINDS, f"unexpected kind {kind}"
        assert obj["apiVersion"] == KNOWN_KINDS[kind], f"{kind} uses {obj['apiVersion']}"
        assert obj["metadata"]["name"]


def test_no_field_the_api_does_not_define(rendering: list[Manifest]) -> None:
    for obj in rendering:
        if obj["kind"] in CLIENT_MODELS:
            lost = unknown_fields(obj)
            assert not lost, f"{obj['kind']} {obj['metadata']['name']}:\n" + "\n".join(lost)


def test_namespaced_objects_live_in_the_operator_namespace(rendering: list[Manifest]) -> None:
    cluster_scoped = {"Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition"}
    watched = _watched_namespaces(rendering)
    for obj in rendering:
        if obj["kind"] in cluster_scoped:
            assert "namespace" not in obj["metadata"], obj["metadata"]
        elif obj["kind"] in ("Role", "RoleBinding") and obj["metadata"]["name"].endswith("-leader"):
            assert obj["metadata"]["namespace"] == "infercycle-system", obj["metadata"]
        elif obj["kind"] in ("Role", "RoleBinding"):
            assert obj["metadata"]["namespace"] in watched, obj["metadata"]
        elif obj["kind"] == "ConfigMap" and obj["metadata"]["name"].endswith("-dashboard"):
            continue  # goes where Grafana's sidecar looks
        else:
            assert obj["metadata"].get("namespace") == "infercycle-system", obj["metadata"]


def test_no_wildcards_in_rbac(rendering: list[Manifest]) -> None:
    for role in by_kind(rendering, "ClusterRole") + by_kind(rendering, "Role"):
        for rule in role["rules"]:
            for key in ("apiGroups", "resources", "verbs", "resourceNames", "nonResourceURLs"):
                assert "*" not in rule.get(key, []), f"{role['metadata']['name']}: {rule}"
                assert not any("*" in value for value in rule.get(key, [])), rule


def test_workloads_meet_the_restricted_pod_security_standard(rendering: list[Manifest]) -> None:
    for workload in by_kind(rendering, "Deployment"):
        pod = workload["spec"]["template"]["spec"]
        pod_context = pod.get("securityContext") or {}
        for forbidden in ("hostNetwork", "hostPID", "hostIPC"):
            assert not pod.get(forbidden), forbidden
        for volume in pod.get("volumes") or []:
            kinds = set(volume) - {"name"}
            assert kinds <= RESTRICTED_VOLUME_TYPES, f"volume {volume['name']} is {kinds}"
        for container in pod_containers(workload):
            context = container.get("securityContext") or {}
            where = f"{workload['metadata']['name']}/{container['name']}"
            assert context.get("allowPrivilegeEscalation") is False, where
            assert context.get("privileged") is not True, where
            assert "ALL" in context.get("capabilities", {}).get("drop", []), where
            assert set(context.get("capabilities", {}).get("add", [])) <= {"NET_BIND_SERVICE"}
            assert context.get("runAsNonRoot", pod_context.get("runAsNonRoot")) is True, where
            assert context.get("runAsUser", pod_context.get("runAsUser")) != 0, where
            seccomp = context.get("seccompProfile") or pod_context.get("seccompProfile") or {}
            assert seccomp.get("type") in ("RuntimeDefault", "Localhost"), where
            assert context.get("readOnlyRootFilesystem") is True, where


def test_read_only_root_has_a_writable_tmp(rendering: list[Manifest]) -> None:
    for workload in by_kind(rendering, "Deployment"):
        pod = workload["spec"]["template"]["spec"]
        empty_dirs = {v["name"] for v in pod.get("volumes") or [] if "emptyDir" in v}
        for container in pod_containers(workload):
            mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts") or []}
            assert mounts.get("/tmp") in empty_dirs, f"{container['name']} has no /tmp emptyDir"


def test_containers_have_requests_and_limits(rendering: list[Manifest]) -> None:
    for workload in by_kind(rendering, "Deployment"):
        for container in pod_containers(workload):
            resources = container.get("resources") or {}
            assert {"cpu", "memory"} <= set(resources.get("requests", {})), container["name"]
            assert "memory" in resources.get("limits", {}), container["name"]


def _leader_election(rendering: list[Manifest]) -> bool:
    (container,) = one(rendering, "Deployment")["spec"]["template"]["spec"]["containers"]
    return _plain_env(container).get("INFERCYCLE_LEADER_ELECTION") == "true"


def test_operator_deployment_shape(rendering: list[Manifest]) -> None:
    for deployment in by_kind(rendering, "Deployment"):
        spec = deployment["spec"]
        if _leader_election(rendering):  # one acts, the other stands by; never none
            assert spec["replicas"] == 2
            assert spec["strategy"] == {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
            }
            (container,) = spec["template"]["spec"]["containers"]
            pod_name = next(item for item in container["env"] if item["name"] == "POD_NAME")
            assert pod_name["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
        else:
            assert spec["replicas"] == 1, "without leader election two would both recycle"
            assert spec["strategy"] == {"type": "Recreate"}
        pod = spec["template"]["spec"]
        assert pod["automountServiceAccountToken"] is True
        (container,) = pod["containers"]
        assert container["args"] == ["run"]
        ports = {port["name"]: port["containerPort"] for port in container["ports"]}
        assert set(ports) == {"metrics", "health"}
        assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
        assert container["readinessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}


def _plain_env(container: dict[str, Any]) -> dict[str, str]:
    return {item["name"]: item["value"] for item in container["env"] if "value" in item}


def test_operator_env_is_understood_by_the_operator(
    rendering: list[Manifest], monkeypatch: pytest.MonkeyPatch
) -> None:
    known = {
        f"{OperatorSettings.model_config.get('env_prefix', '')}{name.upper()}"
        for name in OperatorSettings.model_fields
    }
    for deployment in by_kind(rendering, "Deployment"):
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        names = [item["name"] for item in container["env"]]
        assert len(names) == len(set(names)), f"duplicate env: {names}"
        # POD_NAME (downward API) names the replica in the leader Lease.
        assert set(names) - {"POD_NAME"} <= known, f"not settings: {set(names) - known}"
        env = _plain_env(container)
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        for name in {item["name"] for item in container["env"]} - set(env) - {"POD_NAME"}:
            monkeypatch.setenv(name, "from-a-secret")
        settings = OperatorSettings()
        ports = {port["name"]: port["containerPort"] for port in container["ports"]}
        assert settings.metrics_port == ports["metrics"]
        assert settings.health_port == ports["health"]
        # The agent sidecar runs from the operator's own image unless told otherwise.
        assert settings.agent_image.rsplit(":", 1)[0] == container["image"].rsplit(":", 1)[0]


def _watched_namespaces(rendering: list[Manifest]) -> set[str]:
    if not by_kind(rendering, "Deployment"):
        return set()
    (container,) = one(rendering, "Deployment")["spec"]["template"]["spec"]["containers"]
    listed = _plain_env(container).get("INFERCYCLE_NAMESPACES", "")
    return {name.strip() for name in listed.split(",") if name.strip()}


def granted(rendering: list[Manifest], account: str, home: str) -> dict[str | None, set[Any]]:
    """What the bindings give the account: cluster-wide (key None) and per namespace."""
    subject = {"kind": "ServiceAccount", "name": account, "namespace": home}
    grants: dict[str | None, set[Any]] = {}
    bindings = by_kind(rendering, "ClusterRoleBinding") + by_kind(rendering, "RoleBinding")
    for binding in bindings:
        if subject not in binding["subjects"]:
            continue
        namespace = binding["metadata"].get("namespace")
        ref = binding["roleRef"]
        role = one(
            rendering, ref["kind"], ref["name"], namespace if ref["kind"] == "Role" else None
        )
        grants.setdefault(namespace, set()).update(permissions(role))
    return grants


def test_the_operator_is_granted_exactly_the_reviewed_permissions(
    rendering: list[Manifest],
) -> None:
    for deployment in by_kind(rendering, "Deployment"):
        account = deployment["spec"]["template"]["spec"]["serviceAccountName"]
        home = deployment["metadata"]["namespace"]
        grants = granted(rendering, account, home)
        watched = _watched_namespaces(rendering)
        # Listed namespaces: no cluster-wide right on pods, Secrets or workloads.
        expected: dict[str | None, set[Any]] = {
            None: CLUSTER_PERMISSIONS | (set() if watched else WORKLOAD_PERMISSIONS)
        }
        for namespace in watched:
            expected[namespace] = set(WORKLOAD_PERMISSIONS)
        if _leader_election(rendering):
            expected[home] = expected.get(home, set()) | LEASE_PERMISSIONS
        assert grants == expected


def test_the_lease_can_be_read_and_renewed_only_by_its_name(rendering: list[Manifest]) -> None:
    for role in by_kind(rendering, "Role"):
        for rule in role["rules"]:
            if "leases" in rule["resources"] and set(rule["verbs"]) & {"get", "update"}:
                assert rule["resourceNames"] == [LEASE_NAME], rule


def test_the_operator_deletes_nothing_touches_no_volume_claim_and_lists_no_secret(
    rendering: list[Manifest],
) -> None:
    for deployment in by_kind(rendering, "Deployment"):
        account = deployment["spec"]["template"]["spec"]["serviceAccountName"]
        grants = granted(rendering, account, deployment["metadata"]["namespace"])
        assert grants
        for where, permitted in grants.items():
            for group, resource, verb in permitted:
                what = f"{where or 'cluster-wide'}: {group}/{resource} {verb}"
                assert verb not in ("delete", "deletecollection"), what
                assert resource != "persistentvolumeclaims", what
                assert resource != "secrets" or verb in ("get", "create"), what


def test_aggregated_roles_only_touch_infercycle_resources(rendering: list[Manifest]) -> None:
    aggregated = {}
    for role in by_kind(rendering, "ClusterRole"):
        labels = role["metadata"].get("labels", {})
        for target in ("admin", "edit", "view"):
            if labels.get(f"rbac.authorization.k8s.io/aggregate-to-{target}") == "true":
                aggregated[target] = role
    if not aggregated:
        return  # switched off (rbac.aggregateToDefaultRoles=false) or not part of this rendering
    assert set(aggregated) == {"admin", "edit", "view"}
    for target, role in aggregated.items():
        granted = permissions(role)
        assert {group for group, _, _ in granted} == {"infercycle.io"}, target
        assert ("infercycle.io", "inferencedeployments", "watch") in granted
    assert not {verb for _, _, verb in permissions(aggregated["view"])} - {"get", "list", "watch"}
    for target in ("admin", "edit"):
        granted = permissions(aggregated[target])
        assert ("infercycle.io", "inferencedeployments", "create") in granted
        assert ("infercycle.io", "inferencedeployments/scale", "update") in granted
        assert not {verb for group, resource, verb in granted if resource == "recyclepolicies"} - {
            "get",
            "list",
            "watch",
        }, "only cluster administrators change RecyclePolicies"


def test_metrics_service_reaches_the_operator(rendering: list[Manifest]) -> None:
    for deployment in by_kind(rendering, "Deployment"):
        service = one(rendering, "Service")
        pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert service["spec"]["selector"].items() <= pod_labels.items()
        (port,) = service["spec"]["ports"]
        assert port["name"] == "metrics"
        assert port["targetPort"] == "metrics"


def test_network_policy_allows_exactly_what_the_operator_needs(rendering: list[Manifest]) -> None:
    for policy in by_kind(rendering, "NetworkPolicy"):
        deployment = one(rendering, "Deployment")
        pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert policy["spec"]["podSelector"]["matchLabels"].items() <= pod_labels.items()
        assert set(policy["spec"]["policyTypes"]) == {"Ingress", "Egress"}
        ingress_ports = {p["port"] for rule in policy["spec"]["ingress"] for p in rule["ports"]}
        assert ingress_ports == {8080, 8081}
        egress_ports = {
            (p["port"], p["protocol"]) for rule in policy["spec"]["egress"] for p in rule["ports"]
        }
        assert {(443, "TCP"), (53, "UDP"), (53, "TCP"), (9090, "TCP"), (8089, "TCP")} <= (
            egress_ports
        )
        agents = next(rule for rule in policy["spec"]["egress"] if rule["ports"][0]["port"] == 8089)
        (peer,) = agents["to"]
        assert peer["podSelector"]["matchExpressions"] == [
            {"key": "infercycle.io/deployment", "operator": "Exists"}
        ]
        watched = _watched_namespaces(rendering)
        if watched:  # agents only where the operator manages deployments
            (expression,) = peer["namespaceSelector"]["matchExpressions"]
            assert expression["key"] == "kubernetes.io/metadata.name"
            assert expression["operator"] == "In"
            assert set(expression["values"]) == watched
        else:
            assert peer["namespaceSelector"] == {}


def test_service_monitor_scrapes_the_metrics_service(rendering: list[Manifest]) -> None:
    for monitor in by_kind(rendering, "ServiceMonitor"):
        assert [endpoint["port"] for endpoint in monitor["spec"]["endpoints"]] == ["metrics"]
        assert monitor["spec"]["namespaceSelector"] == {"matchNames": ["infercycle-system"]}
        selector = monitor["spec"]["selector"]["matchLabels"]
        assert selector["app.kubernetes.io/component"] == "operator"
