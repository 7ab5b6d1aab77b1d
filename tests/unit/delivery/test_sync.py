"""The copies hack/sync-manifests keeps are current, and differ from their sources only as meant."""

from __future__ import annotations

import copy

import yaml

from tests.unit.delivery.support import CHART, MANIFESTS, REPO, load_script

sync = load_script("sync-manifests")
ARGOCD_KEY = "argocd.argoproj.io/sync-options"


def test_every_copy_is_current() -> None:
    stale = sync.stale_files(sync.expected_files())
    assert not stale, (
        f"stale: {[str(p.relative_to(REPO)) for p in stale]}; run hack/sync-manifests and commit"
    )


def test_crd_copies_are_the_generated_crds_plus_the_argocd_annotation() -> None:
    sources = sorted((REPO / "crds").glob("*.yaml"))
    assert sources
    for target in (MANIFESTS / "crds", CHART / "crds"):
        assert sorted(p.name for p in target.glob("*.yaml")) == [p.name for p in sources]
        for source in sources:
            original = yaml.safe_load(source.read_text())
            synced = yaml.safe_load((target / source.name).read_text())
            assert synced["metadata"]["annotations"] == {ARGOCD_KEY: "Prune=false"}
            stripped = copy.deepcopy(synced)
            del stripped["metadata"]["annotations"]
            assert stripped == original, f"{target / source.name} differs from crds/"


def test_generated_crds_carry_no_argocd_annotation() -> None:
    """crds/ stays exactly what `infercycle crds` writes; its drift test compares only crds/."""
    for source in (REPO / "crds").glob("*.yaml"):
        assert "annotations" not in yaml.safe_load(source.read_text())["metadata"]


def test_annotation_is_added_to_the_metadata_of_a_crd() -> None:
    text = (
        "# header\napiVersion: v1\nkind: CustomResourceDefinition\nmetadata:\n  name: x\nspec: {}\n"
    )
    result = yaml.safe_load(sync.annotated_crd(text, "x.yaml"))
    assert result["metadata"] == {"name": "x", "annotations": {ARGOCD_KEY: "Prune=false"}}


def test_prometheus_rule_carries_the_rule_file() -> None:
    rule = yaml.safe_load((MANIFESTS / "monitoring" / "prometheusrule.yaml").read_text())
    rules = yaml.safe_load((CHART / "alerts" / "infercycle-rules.yaml").read_text())
    assert rule["kind"] == "PrometheusRule"
    assert rule["spec"] == rules


def test_argocd_cm_embeds_the_health_script_verbatim() -> None:
    config = yaml.safe_load((MANIFESTS / "argocd" / "argocd-cm.yaml").read_text())
    script = (MANIFESTS / "argocd" / "health-inferencedeployment.lua").read_text()
    assert config["metadata"] == {
        "name": "argocd-cm",
        "namespace": "argocd",
        "labels": {"app.kubernetes.io/name": "argocd-cm", "app.kubernetes.io/part-of": "argocd"},
    }
    assert config["data"] == {
        "resource.customizations.health.infercycle.io_InferenceDeployment": script
    }


def test_kustomization_lists_every_file_of_the_folder() -> None:
    kustomization = yaml.safe_load((MANIFESTS / "kustomization.yaml").read_text())
    listed = set(kustomization["resources"])
    present = {
        str(path.relative_to(MANIFESTS))
        for path in [*MANIFESTS.glob("*.yaml"), *(MANIFESTS / "crds").glob("*.yaml")]
        if path.name != "kustomization.yaml"
    }
    assert listed == present
    assert kustomization["namespace"] == "infercycle-system"
