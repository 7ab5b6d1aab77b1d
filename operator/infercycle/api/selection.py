"""Which RecyclePolicy applies to an InferenceDeployment: by reference, else by selectors."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from infercycle.api.spec import RecyclePolicySpec


@dataclass(frozen=True, slots=True)
class PolicyChoice:
    name: str | None
    spec: RecyclePolicySpec | None
    error: str | None = None


def choose_policy(
    *,
    policy_ref: str | None,
    deployment_labels: Mapping[str, str],
    namespace_labels: Mapping[str, str],
    policies: Mapping[str, RecyclePolicySpec],
) -> PolicyChoice:
    """``policyRef`` wins; else the highest-priority policy whose selectors all match.

    A policy with neither selector matches nothing by selection (it must be referenced), so
    adding a policy never silently changes deployments that did not ask for it. Ties on priority
    go to the alphabetically first name, so the choice is stable.
    """
    if policy_ref is not None:
        if policy_ref in policies:
            return PolicyChoice(policy_ref, policies[policy_ref])
        return PolicyChoice(
            policy_ref,
            None,
            f"spec.policyRef.name: RecyclePolicy {policy_ref!r} does not exist; create it or "
            "remove policyRef to use the matching or built-in policy",
        )
    matching = [
        (name, spec)
        for name, spec in policies.items()
        if (spec.namespace_selector is not None or spec.selector is not None)
        and (spec.namespace_selector is None or spec.namespace_selector.matches(namespace_labels))
        and (spec.selector is None or spec.selector.matches(deployment_labels))
    ]
    if not matching:
        return PolicyChoice(None, None)
    name, spec = min(matching, key=lambda item: (-(item[1].priority or 0), item[0]))
    return PolicyChoice(name, spec)
