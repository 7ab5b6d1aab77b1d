"""The docs stay true: the configuration reference is generated and current, troubleshooting has
a section for every reason the operator can report, and install.md's links and patches work."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from tests.unit.delivery.support import MANIFESTS, REPO, load_script

DOCS = REPO / "docs"
gen_config_docs = load_script("gen-config-docs")

CONDITION_REASONS = {
    "Ready": ("Reconciled", "ReconcileFailed", "ReplicasNotReady"),
    "Degraded": ("PodsDegraded", "AllHealthy"),
    "Recycling": ("InProgress", "Idle", "DryRun", "WaitingForDisruptionBudget"),
    "MetricsAvailable": (
        "Queried",
        "PrometheusUnreachable",
        "PrometheusError",
        "StaleData",
        "NoData",
    ),
    "Paused": ("CircuitBreakerOpen", "PodFlapping", "PausedBySpec", "NotPaused"),
    "Drainable": ("ServiceLabel", "ReadinessGate", "ReadinessGateMissing"),
    "RulesActive": ("AllRulesActive", "RulesSwitchedOff", "HistogramTooCoarse"),
}
EVENT_REASONS = (
    "RecycleStarted", "Draining", "Checkpointed", "CheckpointFailed", "Restarting",
    "EvictionBlocked", "Restarted", "Verified", "RecycleSucceeded", "RecycleEscalated",
    "RecycleFailed", "DryRunRecycle", "GuardRefused", "MetricsUnavailable", "PolicyInvalid",
    "CircuitBreakerOpen", "AgentUnavailable", "NotDrained", "TargetUnavailable",
    "RuleSwitchedOff", "HistogramTooCoarse",
)  # fmt: skip
GUARDS = (
    "MaxUnavailable", "MinAvailable", "Cooldown", "HourlyBudget", "CircuitBreaker", "Flapping",
    "InFlight", "Paused",
)  # fmt: skip


def test_configuration_reference_is_current() -> None:
    expected = gen_config_docs.render()
    current = (DOCS / "configuration.md").read_text()
    assert current == expected, "docs/configuration.md is stale: run hack/gen-config-docs"


def test_configuration_reference_has_every_field() -> None:
    from infercycle.api.resources import InferenceDeploymentSpec  # noqa: PLC0415
    from infercycle.api.spec import RecyclePolicySpec  # noqa: PLC0415
    from infercycle.settings import OperatorSettings  # noqa: PLC0415

    text = (DOCS / "configuration.md").read_text()
    for model in (InferenceDeploymentSpec, RecyclePolicySpec):
        for name, field in model.model_fields.items():
            assert f"`spec.{field.alias or name}`" in text, f"{model.__name__}.{name}"
    for name in OperatorSettings.model_fields:
        assert f"`INFERCYCLE_{name.upper()}`" in text, name


def test_meanings_kept_in_the_generator_name_real_fields() -> None:
    paths = {
        row.path
        for model in (gen_config_docs.InferenceDeploymentSpec, gen_config_docs.RecyclePolicySpec)
        for row in gen_config_docs.model_rows(model)
    }
    for table in (gen_config_docs.MEANINGS, gen_config_docs.OPERATOR_DEFAULTS):
        stale = set(table) - paths
        assert not stale, f"hack/gen-config-docs names fields that no longer exist: {stale}"


def _headings(text: str) -> list[str]:
    return [
        line.lstrip("#").strip().strip("`") for line in text.splitlines() if line.startswith("#")
    ]


def _emitted_reasons() -> set[str]:
    """Event reasons the operator's code posts: ("Normal"|"Warning", "Reason") pairs."""
    pattern = re.compile(r'"(?:Normal|Warning)",\s*"([A-Z][A-Za-z]+)"')
    found: set[str] = set()
    for path in (REPO / "operator" / "infercycle").rglob("*.py"):
        found.update(pattern.findall(path.read_text()))
    return found


def test_troubleshooting_covers_every_reason() -> None:
    text = (DOCS / "troubleshooting.md").read_text()
    headings = _headings(text)
    for condition, reasons in CONDITION_REASONS.items():
        assert condition in headings, f"no section for condition {condition}"
        for reason in reasons:
            assert reason in headings, f"no section for {condition} reason {reason}"
    for reason in sorted(set(EVENT_REASONS) | _emitted_reasons()):
        assert reason in headings, f"no section for Event reason {reason}"
    for guard in GUARDS:
        assert f"| `{guard}` |" in text, f"guard {guard} is not explained"


def test_troubleshooting_knows_every_guard_of_the_planner() -> None:
    from infercycle.recycle.planner import Guard  # noqa: PLC0415

    text = (DOCS / "troubleshooting.md").read_text()
    reported = {guard.value for guard in Guard} - {"NotRunning"}
    for guard in reported:
        assert f"| `{guard}` |" in text, f"guard {guard} is not explained"


@pytest.mark.parametrize("page", sorted(DOCS.glob("*.md")), ids=lambda p: p.name)
def test_relative_links_resolve(page: Path) -> None:
    for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", page.read_text()):
        assert (page.parent / target).exists(), f"{page.name}: broken link {target}"


def test_install_patch_paths_point_at_the_right_variables() -> None:
    """install.md patches env entries by index; the indices must name what the comment says."""
    text = (DOCS / "install.md").read_text()
    deployment = yaml.safe_load((MANIFESTS / "deployment.yaml").read_text())
    env = deployment["spec"]["template"]["spec"]["containers"][0]["env"]
    patches = re.findall(r"/containers/0/env/(\d+)/value\s+# (\w+)", text)
    assert patches
    for index, name in patches:
        assert env[int(index)]["name"] == name


def test_install_mentions_every_way_to_install() -> None:
    text = (DOCS / "install.md").read_text()
    for needle in (
        "kubectl apply --server-side -k manifests/",
        "helm install infercycle charts/infercycle",
        "manifests/argocd/application.yaml",
        "manifests/argocd/argocd-cm.yaml",
        "hack/kind-e2e",
    ):
        assert needle in text, needle
