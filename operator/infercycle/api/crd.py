"""CustomResourceDefinitions generated from the resource models.

Pydantic's JSON Schema is not a Kubernetes structural schema: it uses ``$ref``, ``anyOf`` with
``null`` for optional fields, titles and defaults. ``structural_schema`` rewrites it into the
form the API server accepts, and the CRDs add what Kubernetes needs beyond types: CEL rules,
list-map keys, the status and scale subresources, printer columns and categories.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import yaml

from infercycle.api.resources import (
    CEL_RULE_CHECKS,
    GROUP,
    GROUPS_RECREATE,
    REPLICAS_WITH_TEMPLATE,
    TEMPLATE_OR_TARGET,
    VERSION,
    InferenceDeploymentSpec,
    InferenceDeploymentStatus,
)
from infercycle.api.spec import RecyclePolicySpec

Schema = dict[str, Any]

_DROPPED_KEYS = frozenset({"title", "default", "examples", "$defs"})
_LIST_MAP_KEYS = {"rules": "name", "conditions": "type", "pods": "name"}

_MODEL_VALIDATIONS: dict[str, list[dict[str, str]]] = {
    "SignalRuleSpec": CEL_RULE_CHECKS,
    "AgentSpec": [
        {
            "rule": "!(has(self.sessionHook) && has(self.sessionDir))",
            "message": "set agent.sessionHook or agent.sessionDir, not both",
        }
    ],
    "InferenceDeploymentSpec": [
        {
            "rule": "!has(self.disruption) || !has(self.disruption.minAvailable) || "
            "type(self.disruption.minAvailable) != int || !has(self.replicas) || "
            "self.replicas == 0 || self.disruption.minAvailable < self.replicas",
            "message": "disruption.minAvailable must be below replicas, or no pod could ever "
            "be recycled; lower minAvailable or add replicas",
            "fieldPath": ".disruption.minAvailable",
            "reason": "FieldValueInvalid",
        },
        {
            "rule": "!has(self.template) || (has(self.template.spec) && "
            "has(self.template.spec.containers) && size(self.template.spec.containers) > 0)",
            "message": "template.spec.containers must list the inference server container",
            "fieldPath": ".template",
            "reason": "FieldValueRequired",
        },
        {
            "rule": "has(self.template) != has(self.targetRef)",
            "message": TEMPLATE_OR_TARGET,
        },
        {
            "rule": "!has(self.template) || has(self.replicas)",
            "message": REPLICAS_WITH_TEMPLATE,
            "fieldPath": ".replicas",
            "reason": "FieldValueRequired",
        },
        {
            "rule": "!has(self.targetRef) || self.targetRef.kind != 'LeaderWorkerSet' || "
            "!has(self.restartStrategy) || self.restartStrategy == 'Recreate'",
            "message": GROUPS_RECREATE,
            "fieldPath": ".restartStrategy",
            "reason": "FieldValueInvalid",
        },
    ],
    "TargetReference": [
        {
            "rule": "(self.kind == 'LeaderWorkerSet') == "
            "(self.apiVersion == 'leaderworkerset.x-k8s.io/v1')",
            "message": "targetRef.apiVersion must be apps/v1 for Deployment and StatefulSet, "
            "leaderworkerset.x-k8s.io/v1 for LeaderWorkerSet",
            "fieldPath": ".apiVersion",
            "reason": "FieldValueInvalid",
        }
    ],
}


def structural_schema(model_schema: Mapping[str, Any], root_name: str | None = None) -> Schema:
    """Inline references, drop nullable unions and annotations, add CEL rules by model name."""
    definitions: Mapping[str, Any] = model_schema.get("$defs", {})
    return _convert(model_schema, definitions, root_name)


def _convert(node: Mapping[str, Any], definitions: Mapping[str, Any], name: str | None) -> Schema:
    if "$ref" in node:
        ref_name = str(node["$ref"]).rsplit("/", 1)[-1]
        converted = _convert(definitions[ref_name], definitions, ref_name)
        if "description" in node:
            converted["description"] = node["description"]
        return converted
    if "anyOf" in node:
        options = [option for option in node["anyOf"] if option.get("type") != "null"]
        merged = {key: value for key, value in node.items() if key != "anyOf"}
        if len(options) == 1:
            inner = _convert(options[0], definitions, None)
            inner.update({key: value for key, value in merged.items() if key not in _DROPPED_KEYS})
            if inner.get("x-kubernetes-int-or-string"):
                inner.pop("anyOf", None)
            return inner
        if merged.get("x-kubernetes-int-or-string") or _is_int_or_string(options):
            result: Schema = {"x-kubernetes-int-or-string": True}
            if "description" in merged:
                result["description"] = merged["description"]
            return result
        msg = f"cannot express a union in a structural schema: {node}"
        raise ValueError(msg)
    result = {}
    for key, value in node.items():
        if key in _DROPPED_KEYS:
            continue
        if key == "properties":
            result["properties"] = {
                prop: _convert(sub, definitions, None) for prop, sub in value.items()
            }
            for prop, list_key in _LIST_MAP_KEYS.items():
                if (
                    prop in result["properties"]
                    and result["properties"][prop].get("type") == "array"
                ):
                    result["properties"][prop]["x-kubernetes-list-type"] = "map"
                    result["properties"][prop]["x-kubernetes-list-map-keys"] = [list_key]
        elif key == "items":
            result["items"] = _convert(value, definitions, None)
        elif key == "additionalProperties":
            if isinstance(value, Mapping):
                result["additionalProperties"] = _convert(value, definitions, None)
        elif key == "maxLength" and node.get("type") == "object":
            result["maxProperties"] = value
        else:
            result[key] = copy.deepcopy(value)
    if result.get("x-kubernetes-preserve-unknown-fields"):
        result["type"] = "object"
    if name in _MODEL_VALIDATIONS:
        result["x-kubernetes-validations"] = copy.deepcopy(_MODEL_VALIDATIONS[name])
    return result


def _is_int_or_string(options: list[Mapping[str, Any]]) -> bool:
    return sorted(str(option.get("type")) for option in options) == ["integer", "string"]


def _root(spec: Schema, status: Schema | None) -> Schema:
    properties: Schema = {
        "apiVersion": {"type": "string"},
        "kind": {"type": "string"},
        "metadata": {"type": "object"},
        "spec": spec,
    }
    if status is not None:
        properties["status"] = status
    return {"type": "object", "required": ["spec"], "properties": properties}


POD_TEMPLATE_SCHEMA: Schema = {
    "type": "object",
    "description": "Pod template (a core/v1 PodTemplateSpec) of the inference server: the "
    "operator owns a StatefulSet made from it. Exactly one of template and targetRef.",
    "x-kubernetes-preserve-unknown-fields": True,
    "properties": {
        "metadata": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
        "spec": {
            "type": "object",
            "x-kubernetes-preserve-unknown-fields": True,
            "properties": {
                "containers": {
                    "type": "array",
                    "maxItems": 64,
                    "items": {
                        "type": "object",
                        "x-kubernetes-preserve-unknown-fields": True,
                        "required": ["name"],
                        "properties": {"name": {"type": "string", "maxLength": 63}},
                    },
                }
            },
        },
    },
}


def inference_deployment_crd() -> Schema:
    spec = structural_schema(
        InferenceDeploymentSpec.model_json_schema(by_alias=True), "InferenceDeploymentSpec"
    )
    # The pod template stays open (core/v1 is the kubelet's to validate), but the fields our
    # CEL rules read are declared so the rules compile.
    spec["properties"]["template"] = copy.deepcopy(POD_TEMPLATE_SCHEMA)
    status = structural_schema(InferenceDeploymentStatus.model_json_schema(by_alias=True))
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"inferencedeployments.{GROUP}",
            "labels": {"app.kubernetes.io/part-of": "infercycle"},
        },
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": "InferenceDeployment",
                "listKind": "InferenceDeploymentList",
                "plural": "inferencedeployments",
                "singular": "inferencedeployment",
                "shortNames": ["infd"],
                "categories": ["all", "infercycle"],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {
                        "status": {},
                        "scale": {
                            "specReplicasPath": ".spec.replicas",
                            "statusReplicasPath": ".status.replicas",
                            "labelSelectorPath": ".status.selector",
                        },
                    },
                    "additionalPrinterColumns": [
                        {"name": "Replicas", "type": "integer", "jsonPath": ".status.replicas"},
                        {
                            "name": "Target",
                            "type": "string",
                            "priority": 1,
                            "jsonPath": ".spec.targetRef.name",
                        },
                        {
                            "name": "Ready",
                            "type": "string",
                            "jsonPath": '.status.conditions[?(@.type=="Ready")].status',
                        },
                        {
                            "name": "Degraded",
                            "type": "integer",
                            "jsonPath": ".status.degradedReplicas",
                        },
                        {
                            "name": "Recycling",
                            "type": "string",
                            "jsonPath": ".status.operation.pod",
                        },
                        {
                            "name": "Age",
                            "type": "date",
                            "jsonPath": ".metadata.creationTimestamp",
                        },
                    ],
                    "schema": {"openAPIV3Schema": _root(spec, status)},
                }
            ],
        },
    }


def recycle_policy_crd() -> Schema:
    spec = structural_schema(RecyclePolicySpec.model_json_schema(by_alias=True))
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"recyclepolicies.{GROUP}",
            "labels": {"app.kubernetes.io/part-of": "infercycle"},
        },
        "spec": {
            "group": GROUP,
            "scope": "Cluster",
            "names": {
                "kind": "RecyclePolicy",
                "listKind": "RecyclePolicyList",
                "plural": "recyclepolicies",
                "singular": "recyclepolicy",
                "shortNames": ["rcp"],
                "categories": ["infercycle"],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "additionalPrinterColumns": [
                        {"name": "Priority", "type": "integer", "jsonPath": ".spec.priority"},
                        {"name": "DryRun", "type": "boolean", "jsonPath": ".spec.dryRun"},
                        {
                            "name": "Age",
                            "type": "date",
                            "jsonPath": ".metadata.creationTimestamp",
                        },
                    ],
                    "schema": {"openAPIV3Schema": _root(spec, None)},
                }
            ],
        },
    }


CRD_FILES = {
    "infercycle.io_inferencedeployments.yaml": inference_deployment_crd,
    "infercycle.io_recyclepolicies.yaml": recycle_policy_crd,
}

HEADER = "# Generated by `infercycle crds` from the resource models. Do not edit by hand.\n"


def render_crds() -> dict[str, str]:
    """File name -> YAML text of every CRD, byte for byte what ``crds/`` must hold."""
    return {
        name: HEADER + yaml.safe_dump(build(), sort_keys=False, width=100)
        for name, build in CRD_FILES.items()
    }
