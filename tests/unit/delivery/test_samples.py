"""The samples in manifests/samples/ are valid resources that the operator can work with."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from infercycle.agent.config import parse_config
from infercycle.api.resolver import resolve_policy
from infercycle.api.resources import InferenceDeployment, RecyclePolicy
from infercycle.kube.workload import AGENT_CONTAINER, stateful_set
from tests.unit.delivery.support import MANIFESTS, REPO

SAMPLES = sorted((MANIFESTS / "samples").glob("*.yaml"))
MODELS: dict[str, type[InferenceDeployment] | type[RecyclePolicy]] = {
    "InferenceDeployment": InferenceDeployment,
    "RecyclePolicy": RecyclePolicy,
}


def _load(path: Path) -> dict[str, Any]:
    body = yaml.safe_load(path.read_text())
    assert isinstance(body, dict)
    return body


def _of_kind(kind: str) -> list[dict[str, Any]]:
    return [body for body in map(_load, SAMPLES) if body["kind"] == kind]


def test_there_is_a_vllm_deployment_and_a_cluster_policy() -> None:
    assert len(_of_kind("InferenceDeployment")) >= 1
    assert len(_of_kind("RecyclePolicy")) >= 1
    for policy in _of_kind("RecyclePolicy"):
        assert "namespace" not in policy["metadata"], "RecyclePolicy is cluster-scoped"


@pytest.mark.parametrize("path", SAMPLES, ids=lambda path: path.name)
def test_sample_validates_with_its_model(path: Path) -> None:
    body = _load(path)
    MODELS[body["kind"]].model_validate(body)


@pytest.mark.parametrize("path", SAMPLES, ids=lambda path: path.name)
def test_sample_validates_with_the_crd_schema(path: Path) -> None:
    body = _load(path)
    plural = {"InferenceDeployment": "inferencedeployments", "RecyclePolicy": "recyclepolicies"}
    crd = yaml.safe_load((REPO / "crds" / f"infercycle.io_{plural[body['kind']]}.yaml").read_text())
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    errors = [
        f"{'.'.join(map(str, error.absolute_path))}: {error.message}"
        for error in jsonschema.Draft7Validator(schema).iter_errors(body)
    ]
    assert not errors


def test_deployment_and_its_policy_merge_into_a_usable_policy() -> None:
    policies = {
        body["metadata"]["name"]: RecyclePolicy.model_validate(body)
        for body in _of_kind("RecyclePolicy")
    }
    for body in _of_kind("InferenceDeployment"):
        deployment = InferenceDeployment.model_validate(body)
        assert deployment.spec.policy_ref is not None
        policy = policies[deployment.spec.policy_ref.name]
        effective = resolve_policy(policy.spec, deployment.spec.policy_layer())
        names = {rule.name for rule in effective.health.rules}
        assert "queue-outlier" in names, "the sample's custom rule"
        assert "kv-cache-pressure" not in names, "the sample switches this rule off"


def test_the_agent_accepts_the_flags_the_operator_gives_it_for_the_sample() -> None:
    for body in _of_kind("InferenceDeployment"):
        deployment = InferenceDeployment.model_validate(body)
        statefulset = stateful_set(
            deployment.metadata.name, "llm-serving", "uid-1", deployment.spec, "image:tag"
        )
        containers = statefulset["spec"]["template"]["spec"]["containers"]
        (agent,) = [c for c in containers if c["name"] == AGENT_CONTAINER]
        assert agent["args"][0] == "agent"
        config = parse_config(agent["args"][1:], environ={})
        assert config.port == deployment.spec.agent.port  # type: ignore[union-attr]
