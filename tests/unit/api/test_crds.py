"""The checked-in CRDs are exactly what the models generate, and they are structural."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from infercycle.api.crd import render_crds

REPO = Path(__file__).resolve().parents[3]


def test_checked_in_crds_match_the_models() -> None:
    rendered = render_crds()
    on_disk = {path.name for path in (REPO / "crds").glob("*.yaml")}
    assert on_disk == set(rendered), "crds/ holds files the models do not generate"
    for name, text in rendered.items():
        assert (REPO / "crds" / name).read_text() == text, (
            f"crds/{name} is stale: run `infercycle crds` (or `make crds`) and commit it"
        )


def _walk(node: Any, path: str) -> Iterator[tuple[str, dict[str, Any]]]:
    if not isinstance(node, dict):
        return
    yield path, node
    for name, sub in (node.get("properties") or {}).items():
        yield from _walk(sub, f"{path}.{name}")
    if isinstance(node.get("items"), dict):
        yield from _walk(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        yield from _walk(node["additionalProperties"], f"{path}{{}}")


ALLOWED_KEYS = {
    "type", "properties", "required", "items", "additionalProperties", "description",
    "enum", "pattern", "maxLength", "minLength", "maximum", "minimum", "maxItems", "minItems",
    "maxProperties", "format", "nullable", "x-kubernetes-validations",
    "x-kubernetes-preserve-unknown-fields", "x-kubernetes-int-or-string",
    "x-kubernetes-list-type", "x-kubernetes-list-map-keys",
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(render_crds()))
def test_schema_is_structural(name: str) -> None:
    """Every node has a type, no refs/unions/defaults, list-map keys are required fields."""
    crd = yaml.safe_load(render_crds()[name])
    version = crd["spec"]["versions"][0]
    schema = version["schema"]["openAPIV3Schema"]
    for path, node in _walk(schema, ""):
        unknown = set(node) - ALLOWED_KEYS
        assert not unknown, f"{path}: keys not allowed in a structural schema: {unknown}"
        assert "type" in node or node.get("x-kubernetes-int-or-string"), f"{path}: no type"
        if node.get("x-kubernetes-list-type") == "map":
            keys = node["x-kubernetes-list-map-keys"]
            assert set(keys) <= set(node["items"].get("required", [])), f"{path}: map keys optional"
        if node.get("type") == "string":
            assert (
                "maxLength" in node
                or "enum" in node
                or "format" in node
                or path.endswith("Version")
                or path in {".apiVersion", ".kind"}
            ), f"{path}: strings need maxLength so CEL cost stays bounded"
        if node.get("type") == "array":
            assert "maxItems" in node, f"{path}: arrays need maxItems so CEL cost stays bounded"
    if crd["spec"]["names"]["kind"] == "InferenceDeployment":
        scale = version["subresources"]["scale"]
        assert scale["specReplicasPath"] == ".spec.replicas"
        columns = [column["name"] for column in version["additionalPrinterColumns"]]
        assert {"Ready", "Degraded", "Recycling", "Age"} <= set(columns)
        assert "status" in version["subresources"]
        assert crd["spec"]["names"]["shortNames"] == ["infd"]
    else:
        assert crd["spec"]["scope"] == "Cluster"
        assert crd["spec"]["names"]["shortNames"] == ["rcp"]


def test_no_defaults_in_the_schema_so_unset_fields_inherit_from_the_policy() -> None:
    for text in render_crds().values():
        schema = yaml.safe_load(text)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
        for path, node in _walk(schema, ""):
            assert "default" not in node, f"{path} has a default"
