from infercycle.api.selection import choose_policy
from infercycle.api.spec import LabelSelector, LabelSelectorRequirement, RecyclePolicySpec

TEAM = RecyclePolicySpec(namespace_selector=LabelSelector(match_labels={"team": "ml"}), priority=1)
GPU = RecyclePolicySpec(
    selector=LabelSelector(
        match_expressions=[LabelSelectorRequirement(key="gpu", operator="In", values=["a100"])]
    ),
    priority=5,
)
UNSELECTED = RecyclePolicySpec()
POLICIES = {"team": TEAM, "gpu": GPU, "manual": UNSELECTED}


def test_policy_ref_wins_and_a_missing_one_is_an_error_naming_the_fix() -> None:
    choice = choose_policy(
        policy_ref="manual", deployment_labels={}, namespace_labels={}, policies=POLICIES
    )
    assert choice.name == "manual"
    missing = choose_policy(
        policy_ref="nope", deployment_labels={}, namespace_labels={}, policies=POLICIES
    )
    assert missing.error is not None
    assert "spec.policyRef.name" in missing.error


def test_highest_priority_matching_policy() -> None:
    choice = choose_policy(
        policy_ref=None,
        deployment_labels={"gpu": "a100"},
        namespace_labels={"team": "ml"},
        policies=POLICIES,
    )
    assert choice.name == "gpu"
    choice = choose_policy(
        policy_ref=None,
        deployment_labels={"gpu": "h100"},
        namespace_labels={"team": "ml"},
        policies=POLICIES,
    )
    assert choice.name == "team"


def test_policy_without_selectors_is_never_picked_implicitly() -> None:
    choice = choose_policy(
        policy_ref=None, deployment_labels={}, namespace_labels={}, policies=POLICIES
    )
    assert choice.name is None
    assert choice.spec is None
