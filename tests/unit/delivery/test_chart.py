"""The Helm chart: lint, render, refuse bad values with a clear message, match manifests/."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.unit.delivery.support import (
    CHART,
    KUBE_VERSION,
    NAMESPACED_OVERLAY,
    REPO,
    VALUES,
    VALUES_FILES,
    Manifest,
    by_kind,
    documents,
    helm_template,
    one,
    run,
)


def test_helm_lint_is_clean(helm: Path) -> None:
    for values in [None, *VALUES_FILES]:
        extra: list[str | Path] = ["--values", values] if values else []
        result = run(helm, "lint", "--strict", CHART, "--kube-version", KUBE_VERSION, *extra)
        assert "0 chart(s) failed" in result.stdout


def test_schema_is_draft_07_and_refuses_unknown_keys_everywhere() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    assert schema["$schema"] == "http://json-schema.org/draft-07/schema#"

    def walk(node: dict[str, Any], path: str) -> None:
        if node.get("type") == "object" and "properties" in node:
            assert node.get("additionalProperties") is False, f"{path} accepts unknown keys"
            for name, sub in node["properties"].items():
                walk(sub, f"{path}.{name}")

    walk(schema, "values")


def _merged(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Values as Helm merges them: maps key by key, everything else replaced."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            merged[key] = _merged(base[key], value)
        else:
            merged[key] = value
    return merged


def test_default_and_test_values_satisfy_the_schema() -> None:
    import jsonschema  # noqa: PLC0415

    schema = json.loads((CHART / "values.schema.json").read_text())
    validator = jsonschema.Draft7Validator(schema)
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    for name, values in [
        ("values.yaml", defaults),
        *(
            (path.name, _merged(defaults, yaml.safe_load(path.read_text())))
            for path in VALUES_FILES
        ),
    ]:
        errors = [error.message for error in validator.iter_errors(values)]
        assert not errors, f"{name}: {errors}"


@pytest.mark.parametrize(
    ("assignment", "message"),
    [
        (
            "cycleInterval=fast",
            "at '/cycleInterval': 'fast' does not match pattern",
        ),
        ("imagee.tag=1", "at '': additional properties 'imagee' not allowed"),
        (
            "prometheus.auth.secretname=creds",
            "at '/prometheus/auth': additional properties 'secretname' not allowed",
        ),
        ("prometheus.url=ftp://prometheus", "at '/prometheus/url': 'ftp://prometheus' does not"),
        ("dryRun=maybe", "at '/dryRun': got string, want boolean"),
        ("watchNamespaces=llm", "at '/watchNamespaces': got string, want array"),
        ("image.pullPolicy=Sometimes", "at '/image/pullPolicy': value must be one of"),
        ("securityContext.privilegd=true", "additional properties 'privilegd' not allowed"),
        ("networkPolicy.agentPort=0", "at '/networkPolicy/agentPort': minimum: got 0, want 1"),
    ],
)
def test_bad_values_are_refused_with_the_schema_message(
    helm: Path, assignment: str, message: str
) -> None:
    result = helm_template(helm, check=False, sets=(assignment,))
    assert result.returncode != 0, f"{assignment} was accepted"
    assert "values don't meet the specifications of the schema" in result.stderr
    assert message in result.stderr, result.stderr


@pytest.mark.parametrize(
    ("assignments", "message"),
    [
        (("prometheus.auth.tokenKey=token",), "set prometheus.auth.secretName too"),
        (("prometheus.auth.secretName=creds",), "no key is: set tokenKey, or usernameKey"),
        (
            (
                "prometheus.auth.secretName=creds",
                "prometheus.auth.tokenKey=token",
                "prometheus.auth.usernameKey=user",
                "prometheus.auth.passwordKey=pass",
            ),
            "not both",
        ),
        (
            ("prometheus.auth.secretName=creds", "prometheus.auth.usernameKey=user"),
            "basic auth needs both usernameKey and passwordKey",
        ),
    ],
)
def test_credentials_that_cannot_work_are_refused(
    helm: Path, assignments: tuple[str, ...], message: str
) -> None:
    result = helm_template(helm, check=False, sets=assignments)
    assert result.returncode != 0
    assert message in result.stderr, result.stderr


def _operator(objects: list[Manifest]) -> dict[str, Any]:
    deployment = one(objects, "Deployment")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return dict(container)


def _env(container: dict[str, Any]) -> dict[str, Any]:
    return {item["name"]: item.get("value", item.get("valueFrom")) for item in container["env"]}


def test_basic_auth_values(helm: Path) -> None:
    objects = documents(helm_template(helm, VALUES / "basic-auth.yaml").stdout)
    env = _env(_operator(objects))
    secrets = "/var/run/secrets/infercycle/prometheus"
    assert env["INFERCYCLE_PROMETHEUS_URL"] == "https://prometheus.monitoring.svc:9091"
    assert env["INFERCYCLE_PROMETHEUS_USERNAME"] == {
        "secretKeyRef": {"name": "prometheus-credentials", "key": "username"}
    }
    assert env["INFERCYCLE_PROMETHEUS_PASSWORD_FILE"] == f"{secrets}/password"
    assert env["INFERCYCLE_PROMETHEUS_CA_FILE"] == f"{secrets}/ca.crt"
    assert "INFERCYCLE_PROMETHEUS_TOKEN_FILE" not in env
    assert env["INFERCYCLE_NAMESPACES"] == "llm-serving,llm-batch"
    assert env["INFERCYCLE_DRY_RUN"] == "true"
    assert env["INFERCYCLE_CYCLE_INTERVAL"] == "1m"
    pod = one(objects, "Deployment")["spec"]["template"]["spec"]
    (volume,) = [v for v in pod["volumes"] if v["name"] == "prometheus-credentials"]
    sources = {
        source["secret"]["name"]: source["secret"]["items"]
        for source in volume["projected"]["sources"]
    }
    assert sources == {
        "prometheus-credentials": [{"key": "password", "path": "password"}],
        "prometheus-ca": [{"key": "ca.pem", "path": "ca.crt"}],
    }
    # Mounted Secret files are readable by the operator's group only.
    assert volume["projected"]["defaultMode"] == 0o440
    assert pod["securityContext"]["fsGroup"] == pod["securityContext"]["runAsGroup"]
    mounts = {m["name"]: m for m in _operator(objects)["volumeMounts"]}
    assert mounts["prometheus-credentials"] == {
        "name": "prometheus-credentials",
        "mountPath": secrets,
        "readOnly": True,
    }


def test_bearer_token_values(helm: Path) -> None:
    objects = documents(helm_template(helm, VALUES / "bearer-token.yaml").stdout)
    container = _operator(objects)
    env = _env(container)
    assert env["INFERCYCLE_PROMETHEUS_TOKEN_FILE"] == "/var/run/secrets/infercycle/prometheus/token"
    assert "INFERCYCLE_PROMETHEUS_USERNAME" not in env
    assert "INFERCYCLE_PROMETHEUS_PASSWORD_FILE" not in env
    assert container["image"] == "ghcr.io/infercycle/infercycle:0.1.0-rc.1"
    assert env["INFERCYCLE_AGENT_IMAGE"] == container["image"]
    assert container["imagePullPolicy"] == "Always"
    assert not by_kind(objects, "NetworkPolicy")
    aggregated = [
        role
        for role in by_kind(objects, "ClusterRole")
        if "-operator" not in role["metadata"]["name"]
    ]
    assert not aggregated


def test_optional_objects_appear_only_when_enabled(helm: Path) -> None:
    default = documents(helm_template(helm).stdout)
    for kind in ("ServiceMonitor", "PrometheusRule", "ConfigMap"):
        assert not by_kind(default, kind), f"{kind} rendered without being enabled"
    enabled = documents(helm_template(helm, VALUES / "basic-auth.yaml").stdout)
    monitor = one(enabled, "ServiceMonitor")
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    rule = one(enabled, "PrometheusRule")
    rules_file = yaml.safe_load((CHART / "alerts" / "infercycle-rules.yaml").read_text())
    assert rule["spec"] == rules_file, "the PrometheusRule must carry the rule file verbatim"
    dashboard = one(enabled, "ConfigMap")
    assert dashboard["metadata"]["namespace"] == "grafana"
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(dashboard["data"]["infercycle.json"]) == json.loads(
        (CHART / "dashboards" / "infercycle.json").read_text()
    )


def test_chart_crds_are_the_synced_copies(chart_default: list[Manifest]) -> None:
    rendered = {
        crd["metadata"]["name"]: crd for crd in by_kind(chart_default, "CustomResourceDefinition")
    }
    on_disk = {
        crd["metadata"]["name"]: crd
        for crd in (yaml.safe_load(p.read_text()) for p in sorted((CHART / "crds").glob("*.yaml")))
    }
    assert rendered == on_disk
    assert set(rendered) == {"inferencedeployments.infercycle.io", "recyclepolicies.infercycle.io"}


# -- the chart's defaults install the same operator as manifests/ -----------------------------


def _substance(deployment: Manifest) -> dict[str, Any]:
    """What makes the operator behave: everything but names and labels."""
    pod = dict(deployment["spec"]["template"]["spec"])
    return {
        "replicas": deployment["spec"]["replicas"],
        "strategy": deployment["spec"]["strategy"],
        "pod": {key: value for key, value in pod.items() if key != "containers"},
        "containers": pod["containers"],
    }


def test_default_deployment_matches_manifests(
    chart_default: list[Manifest], kustomized: list[Manifest]
) -> None:
    chart = _substance(one(chart_default, "Deployment"))
    plain = _substance(one(kustomized, "Deployment"))
    assert chart == plain


def test_cluster_roles_match_manifests(
    chart_default: list[Manifest], kustomized: list[Manifest]
) -> None:
    def rules(objects: list[Manifest]) -> dict[str, Any]:
        return {role["metadata"]["name"]: role["rules"] for role in by_kind(objects, "ClusterRole")}

    def bindings(objects: list[Manifest]) -> dict[str, Any]:
        return {
            binding["metadata"]["name"]: (binding["roleRef"], binding["subjects"])
            for binding in by_kind(objects, "ClusterRoleBinding")
        }

    # The release is called infercycle, so the chart's names are the plain manifests' names.
    assert rules(chart_default) == rules(kustomized)
    assert bindings(chart_default) == bindings(kustomized)


def test_namespaced_roles_match_the_kustomize_component(helm: Path, kubectl: Path) -> None:
    chart = documents(helm_template(helm, sets=("watchNamespaces={ml-serving}",)).stdout)
    plain = documents(run(kubectl, "kustomize", NAMESPACED_OVERLAY).stdout)
    for kind in ("Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding"):
        assert sorted(o["metadata"]["name"] for o in by_kind(chart, kind)) == sorted(
            o["metadata"]["name"] for o in by_kind(plain, kind)
        ), kind
    for name in ("infercycle-operator",):
        assert one(chart, "Role", name)["rules"] == one(plain, "Role", name)["rules"]
        assert (
            one(chart, "RoleBinding", name)["subjects"]
            == one(plain, "RoleBinding", name)["subjects"]
        )
    assert one(chart, "Role", "infercycle-operator")["metadata"]["namespace"] == "ml-serving"


def test_network_policy_and_service_match_manifests(
    chart_default: list[Manifest], kustomized: list[Manifest]
) -> None:
    chart, plain = one(chart_default, "NetworkPolicy"), one(kustomized, "NetworkPolicy")
    for key in ("policyTypes", "ingress", "egress"):
        assert chart["spec"][key] == plain["spec"][key], key
    assert (
        one(chart_default, "Service")["spec"]["ports"]
        == one(kustomized, "Service")["spec"]["ports"]
    )


def test_service_monitor_matches_the_monitoring_folder(
    helm: Path, kustomized_monitoring: list[Manifest]
) -> None:
    objects = documents(helm_template(helm, sets=("serviceMonitor.enabled=true",)).stdout)
    chart = one(objects, "ServiceMonitor")["spec"]
    plain = one(kustomized_monitoring, "ServiceMonitor")["spec"]
    assert chart["endpoints"] == plain["endpoints"]
    assert chart["namespaceSelector"] == plain["namespaceSelector"]


def test_notes_render(helm: Path, tmp_path: Path) -> None:
    """NOTES.txt is not rendered by `helm template`; render it as a value of a copy of the chart."""
    copy = tmp_path / "infercycle"
    shutil.copytree(CHART, copy)
    notes = (copy / "templates" / "NOTES.txt").read_text()
    (copy / "templates" / "zz-notes.yaml").write_text(
        '{{- define "test.notes" }}' + notes + "{{- end }}\n"
        'notes: {{ include "test.notes" . | toJson }}\n'
    )
    for values in VALUES_FILES:
        result = run(
            helm, "template", "infercycle", copy, "--namespace", "infercycle-system",
            "--kube-version", KUBE_VERSION, "--values", values,
            "--show-only", "templates/zz-notes.yaml",
        )  # fmt: skip
        text = yaml.safe_load(result.stdout)["notes"]
        assert "deployment/infercycle-operator" in text
        assert "llm-serving" in text
    basic = yaml.safe_load(
        run(
            helm,
            "template",
            "infercycle",
            copy,
            "--namespace",
            "infercycle-system",
            "--kube-version",
            KUBE_VERSION,
            "--values",
            VALUES / "basic-auth.yaml",
            "--show-only",
            "templates/zz-notes.yaml",
        ).stdout
    )["notes"]
    assert "DRY RUN" in basic


def test_chart_and_app_versions_match_the_package() -> None:
    import tomllib  # noqa: PLC0415

    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["appVersion"] == version
    manifests_image = yaml.safe_load((REPO / "manifests" / "deployment.yaml").read_text())
    (container,) = manifests_image["spec"]["template"]["spec"]["containers"]
    assert container["image"].endswith(f":{version}")


def test_metrics_peers_restrict_the_metrics_port_only(helm: Path) -> None:
    objects = documents(helm_template(helm, VALUES / "basic-auth.yaml").stdout)
    metrics, health = one(objects, "NetworkPolicy")["spec"]["ingress"]
    assert metrics["ports"] == [{"port": 8080, "protocol": "TCP"}]
    assert metrics["from"] == [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
    ]
    assert health == {"ports": [{"port": 8081, "protocol": "TCP"}]}, "kubelet probes stay open"
    egress = one(objects, "NetworkPolicy")["spec"]["egress"][0]
    assert egress["to"] == [
        {"ipBlock": {"cidr": "10.96.0.1/32"}},
        {"ipBlock": {"cidr": "172.18.0.2/32"}},
    ]


def test_rbac_and_service_account_can_be_brought_by_the_user(helm: Path) -> None:
    objects = documents(
        helm_template(
            helm,
            sets=("rbac.create=false", "serviceAccount.create=false", "serviceAccount.name=ops"),
        ).stdout
    )
    assert not by_kind(objects, "ClusterRole")
    assert not by_kind(objects, "ClusterRoleBinding")
    assert not by_kind(objects, "ServiceAccount")
    assert one(objects, "Deployment")["spec"]["template"]["spec"]["serviceAccountName"] == "ops"
    refused = helm_template(helm, check=False, sets=("serviceAccount.create=false",))
    assert "serviceAccount.name is required when serviceAccount.create is false" in refused.stderr
