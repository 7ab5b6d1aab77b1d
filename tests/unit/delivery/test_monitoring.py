"""Alert rules (promtool check and unit tests) and the Grafana dashboard: every query parses and
reads only metrics the operator exports, with labels they carry."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import Counter, Gauge, Histogram

from infercycle import fleet_metrics
from tests.unit.delivery.support import CHART, REPO, run

RULES = CHART / "alerts" / "infercycle-rules.yaml"
RULE_TESTS = REPO / "tests" / "promtool" / "infercycle-rules.test.yaml"
DASHBOARD = CHART / "dashboards" / "infercycle.json"
METRIC_NAME = re.compile(r"\b(infercycle_[a-z_]+)\b")
LABEL_MATCHERS = re.compile(r"(infercycle_[a-z_]+)\{([^}]*)\}")


def exported_metrics() -> dict[str, set[str]]:
    """Name -> label names of every operator metric, with a histogram's series names."""
    metrics: dict[str, set[str]] = {}
    for value in vars(fleet_metrics).values():
        if not isinstance(value, Counter | Gauge | Histogram):
            continue
        labels = set(value._labelnames)
        name = value._name
        if isinstance(value, Counter):
            metrics[f"{name}_total"] = labels
        elif isinstance(value, Histogram):
            for suffix in ("_bucket", "_count", "_sum"):
                metrics[f"{name}{suffix}"] = labels | ({"le"} if suffix == "_bucket" else set())
        else:
            metrics[name] = labels
    return metrics


def test_the_operator_exports_the_documented_metrics() -> None:
    metrics = exported_metrics()
    assert metrics["infercycle_recycles_total"] == {
        "namespace", "deployment", "reason", "strategy", "result"
    }  # fmt: skip
    assert metrics["infercycle_pod_degraded"] == {"namespace", "deployment", "pod"}
    assert metrics["infercycle_guard_refusals_total"] == {"namespace", "deployment", "guard"}
    assert metrics["infercycle_recycle_operation_age_seconds"] == {
        "namespace", "deployment", "step"
    }  # fmt: skip
    assert metrics["infercycle_prometheus_query_errors_total"] == {"signal", "reason"}
    for name in (
        "infercycle_evaluation_duration_seconds_bucket",
        "infercycle_prometheus_query_duration_seconds_bucket",
        "infercycle_metrics_available",
        "infercycle_circuit_breaker_open",
        "infercycle_last_cycle_timestamp_seconds",
    ):
        assert name in metrics


def _check_expression(expression: str, where: str) -> None:
    metrics = exported_metrics()
    for name in METRIC_NAME.findall(expression):
        assert name in metrics, f"{where}: {name} is not an operator metric"
    for name, matchers in LABEL_MATCHERS.findall(expression):
        for label in re.findall(r"([a-zA-Z_]+)\s*(?:=~|!=|!~|=)", matchers):
            assert label in metrics[name], f"{where}: {name} has no label {label}"


def test_promtool_checks_the_rules(promtool: Path) -> None:
    result = run(promtool, "check", "rules", RULES)
    assert "SUCCESS" in result.stdout


def test_promtool_unit_tests_of_the_rules_pass(promtool: Path) -> None:
    result = run(promtool, "test", "rules", RULE_TESTS)
    assert "SUCCESS" in result.stdout


def test_every_alert_is_unit_tested_and_has_a_runbook() -> None:
    rules = yaml.safe_load(RULES.read_text())
    tests = yaml.safe_load(RULE_TESTS.read_text())
    tested = {case["alertname"] for test in tests["tests"] for case in test["alert_rule_test"]}
    troubleshooting = (REPO / "docs" / "troubleshooting.md").read_text()
    anchors = {_anchor(line) for line in troubleshooting.splitlines() if line.startswith("#")}
    for group in rules["groups"]:
        for rule in group["rules"]:
            assert rule["alert"] in tested, f"{rule['alert']} has no promtool test"
            assert rule["labels"]["severity"] in ("warning", "critical")
            _check_expression(rule["expr"], rule["alert"])
            page, _, anchor = rule["annotations"]["runbook"].partition("#")
            assert page == "docs/troubleshooting.md"
            assert anchor in anchors, f"{rule['alert']}: no section #{anchor}"


def _anchor(heading: str) -> str:
    """GitHub's anchor of a Markdown heading."""
    text = heading.lstrip("#").strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def _panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    found = []
    for panel in dashboard["panels"]:
        found.append(panel)
        found.extend(panel.get("panels", []))
    return found


def test_dashboard_is_valid_and_covers_the_operator() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] == "infercycle-operator"
    variables = {variable["name"] for variable in dashboard["templating"]["list"]}
    assert {"datasource", "namespace", "deployment"} <= variables
    panels = [panel for panel in _panels(dashboard) if panel["type"] != "row"]
    ids = [panel["id"] for panel in _panels(dashboard)]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    used: set[str] = set()
    for panel in panels:
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            _check_expression(target["expr"], panel["title"])
            used.update(METRIC_NAME.findall(target["expr"]))
    wanted = {
        "infercycle_recycles_total",
        "infercycle_pod_degraded",
        "infercycle_guard_refusals_total",
        "infercycle_evaluation_duration_seconds_bucket",
        "infercycle_prometheus_query_duration_seconds_bucket",
        "infercycle_prometheus_query_errors_total",
        "infercycle_metrics_available",
        "infercycle_circuit_breaker_open",
        "infercycle_recycle_operation_age_seconds",
        "infercycle_last_cycle_timestamp_seconds",
    }
    assert wanted <= used, f"not on the dashboard: {wanted - used}"


def test_dashboard_queries_parse(promtool: Path, tmp_path: Path) -> None:
    """promtool parses each query as a recording rule, with Grafana's variables filled in."""
    dashboard = json.loads(DASHBOARD.read_text())
    substitutions = {"$__rate_interval": "5m", "$namespace": ".*", "$deployment": ".*"}
    rules = []
    for index, panel in enumerate(p for p in _panels(dashboard) if p["type"] != "row"):
        for target in panel["targets"]:
            expression = target["expr"]
            for variable, value in substitutions.items():
                expression = expression.replace(variable, value)
            assert "$" not in expression, f"{panel['title']}: unknown variable in {expression}"
            rules.append(
                {"record": f"dashboard:panel{index}:{target['refId']}", "expr": expression}
            )
    path = tmp_path / "dashboard-rules.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = run(promtool, "check", "rules", path, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("path", [RULES, RULE_TESTS], ids=lambda p: p.name)
def test_rule_files_are_yaml(path: Path) -> None:
    assert yaml.safe_load(path.read_text())
