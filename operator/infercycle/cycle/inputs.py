"""The cycle's inputs: each watched deployment with its merged policy, and the query set.

A deployment's policy is its own fields over the RecyclePolicy it names (or that selects it)
over the built-in defaults. An invalid policy or spec does not stop the cycle: the context
carries the error, and reporting says so on that deployment alone.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from pydantic import ValidationError

from infercycle.api.resolver import resolve_policy
from infercycle.api.resources import InferenceDeploymentSpec
from infercycle.api.selection import choose_policy
from infercycle.api.spec import RecyclePolicySpec
from infercycle.api.values import EffectivePolicy
from infercycle.cycle.state import DeploymentContext, DeploymentKey, QuerySet, Registry
from infercycle.errors import InvalidInputError, PolicyError
from infercycle.kube.api import pod_state
from infercycle.kube.workload import agent_enabled, server_container_name

log = logging.getLogger("infercycle.cycle")
HANDLED_ANNOTATION = "infercycle.io/last-handled-configuration"
# Read every cycle besides the rules' own signals: the state machine waits for it to drain.
REQUESTS_RUNNING = "requests_running"


def first_error(error: ValidationError) -> str:
    """The first problem pydantic found, as ``field.path: message``."""
    first = error.errors()[0]
    where = ".".join(str(part) for part in first["loc"])
    return f"{where}: {first['msg']}"


def parse_policies(registry: Registry) -> dict[str, RecyclePolicySpec]:
    """Every RecyclePolicy that parses; the others are logged and left out."""
    parsed: dict[str, RecyclePolicySpec] = {}
    for name, spec in registry.policies.items():
        try:
            parsed[name] = RecyclePolicySpec.model_validate(spec or {})
        except ValidationError as error:
            log.warning("RecyclePolicy %s is invalid and ignored: %s", name, first_error(error))
    return parsed


def resolve(
    registry: Registry,
    body: dict[str, Any],
    spec: InferenceDeploymentSpec,
    policies: dict[str, RecyclePolicySpec] | None = None,
    cycle_interval_s: float | None = None,
) -> EffectivePolicy:
    """The deployment's effective policy; ``PolicyError`` names what is wrong and the fix.

    With the operator's ``cycle_interval_s``, rule windows too short for it are refused.
    """
    metadata = body["metadata"]
    choice = choose_policy(
        policy_ref=spec.policy_ref.name if spec.policy_ref else None,
        deployment_labels=metadata.get("labels") or {},
        namespace_labels=registry.namespaces.get(metadata["namespace"], {}),
        policies=parse_policies(registry) if policies is None else policies,
    )
    if choice.error:
        raise PolicyError(choice.error)
    sources: tuple[str, ...] = (f"RecyclePolicy/{choice.name}",) if choice.name else ()
    sources += (f"InferenceDeployment/{metadata['name']}",)
    return resolve_policy(
        choice.spec, spec.policy_layer(), sources=sources, cycle_interval_s=cycle_interval_s
    )


def context_for(
    registry: Registry,
    key: DeploymentKey,
    body: dict[str, Any],
    policies: dict[str, RecyclePolicySpec] | None = None,
    cycle_interval_s: float | None = None,
) -> DeploymentContext:
    """One deployment as this cycle sees it; a bad spec or policy becomes ``error``."""
    spec: InferenceDeploymentSpec | None = None
    policy: EffectivePolicy | None = None
    error: str | None = None
    try:
        spec = InferenceDeploymentSpec.model_validate(body.get("spec") or {})
        policy = resolve(registry, body, spec, policies, cycle_interval_s)
    except ValidationError as problem:
        error = f"spec is invalid: {first_error(problem)}"
    except InvalidInputError as problem:
        error = str(problem)
    server = server_container_name(spec) if spec else ""
    pods = registry.pods.get(key, {})
    states = tuple(pod_state(pods[name], server) for name in sorted(pods))
    sessions = spec is not None and agent_enabled(spec) and spec.session_store is not None
    return DeploymentContext(key, body, spec, policy, error, states, sessions)


def handled(body: dict[str, Any]) -> bool:
    """kopf has handled the object: writing its status earlier races kopf's first patches."""
    return HANDLED_ANNOTATION in ((body.get("metadata") or {}).get("annotations") or {})


def contexts(registry: Registry, cycle_interval_s: float | None = None) -> list[DeploymentContext]:
    """Every deployment the cycle takes this time, policies parsed once for all."""
    policies = parse_policies(registry)
    return [
        context_for(registry, key, body, policies, cycle_interval_s)
        for key, body in list(registry.deployments.items())
        if handled(body)
    ]


def query_set(contexts: Iterable[DeploymentContext]) -> QuerySet:
    """One query per distinct (signal, PromQL) over all deployments, plus requests running."""
    queries = QuerySet()
    for context in contexts:
        if context.policy is None:
            continue
        health = context.policy.health
        for signal in (*health.signals, REQUESTS_RUNNING):
            promql = health.queries.get(signal)
            if promql:
                queries.add(signal, promql)
    return queries
