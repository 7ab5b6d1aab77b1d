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
from infercycle.api.resources import InferenceDeploymentSpec, RestartStrategy
from infercycle.api.selection import choose_policy
from infercycle.api.spec import LabelSelector, RecyclePolicySpec
from infercycle.api.values import EffectivePolicy
from infercycle.cycle.ports import KubePort
from infercycle.cycle.state import (
    DEPLOYMENT_LABEL,
    DeploymentContext,
    DeploymentKey,
    QuerySet,
    Registry,
    TargetLookup,
    UnitView,
)
from infercycle.errors import InvalidInputError, PolicyError, TargetError
from infercycle.kube.api import KubeApi, pod_state
from infercycle.kube.targets import api_path, target_of
from infercycle.kube.workload import agent_enabled, server_container_name
from infercycle.recycle.fleet import Target
from infercycle.recycle.units import ready_units, units_of

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
    target: Target | None = None
    reason = "PolicyInvalid"
    if spec is not None and spec.target_ref is not None and error is None:
        lookup = registry.targets.get(key) or TargetLookup(None, "the target was not read yet")
        target = lookup.target
        if target is None:
            error = f"spec.targetRef: {lookup.error}"
            reason = "TargetUnavailable"
    server = server_container_name(spec) if spec else ""
    attached = spec is not None and spec.attached
    if target is not None:
        pods = registry.pods_matching(key[0], target.selector)
    elif attached:
        pods = {}
    else:
        pods = registry.pods_matching(
            key[0], LabelSelector(match_labels={DEPLOYMENT_LABEL: key[1]})
        )
    states = tuple(pod_state(pods[name], server, attached=attached) for name in sorted(pods))
    return DeploymentContext(
        key, body, spec, policy, error, states, checkpoints(spec), target, reason
    )


def checkpoints(spec: InferenceDeploymentSpec | None) -> bool:
    """Whether a recycle asks the agent for a checkpoint: an owned deployment's agent writes it
    to the session volume; an attached one's only where the user added the agent (InPlace)."""
    if spec is None or not agent_enabled(spec):
        return False
    if spec.attached:
        return spec.strategy is RestartStrategy.IN_PLACE
    return spec.session_store is not None


def read_target(kube: KubeApi, key: DeploymentKey, spec: InferenceDeploymentSpec) -> TargetLookup:
    """Read an attached deployment's workload; what is wrong with it becomes ``error``."""
    ref = spec.target_ref
    assert ref is not None
    try:
        body = kube.read_object(key[0], api_path(ref), ref.name)
    except Exception as error:  # forbidden, unreachable: said on the deployment, read again
        return TargetLookup(None, f"{ref.kind}/{ref.name} could not be read: {error}")
    if body is None:
        return TargetLookup(
            None,
            f"{ref.kind} {ref.name!r} does not exist in namespace {key[0]} (or its API "
            f"{ref.api_version} is not served); create it or correct targetRef",
        )
    try:
        return TargetLookup(target_of(ref, body))
    except TargetError as error:
        return TargetLookup(None, str(error))


def read_unit(kube: KubePort, context: DeploymentContext, name: str) -> UnitView:
    """Read one unit fresh from the API: a pod by name, or a group's members by its labels;
    for an attached workload also whether all its desired units are Ready."""
    namespace = context.key[0]
    server = server_container_name(context.spec) if context.spec else ""
    target = context.target
    if target is None:
        raw = kube.read_pod(namespace, name)
        return UnitView(pod_state(raw, server) if raw is not None else None)
    members = [
        pod_state(raw, server, attached=True)
        for raw in kube.list_pods(namespace, target.selector.to_query())
    ]
    units = units_of(members, target.group_size)
    unit = next((found for found in units if found.name == name), None)
    return UnitView(unit, ready_units(units) >= target.desired)


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
