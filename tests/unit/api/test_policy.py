import pytest
from pydantic import ValidationError

from infercycle.api.defaults import DEFAULT_POLICY_SPEC
from infercycle.api.resolver import PolicyError, merge_policy_specs, resolve_policy
from infercycle.api.resources import MAX_HISTORY, InferenceDeploymentSpec, RestartStrategy
from infercycle.api.servers import VLLM
from infercycle.api.spec import DisruptionSpec, HealthSpec, RecyclePolicySpec, SignalRuleSpec
from infercycle.api.values import (
    MAX_RECYCLES_PER_HOUR,
    RESTART_SIGNALS,
    DisruptionPolicy,
    RuleKind,
)


def test_default_policy_resolves_and_reads_every_builtin_query() -> None:
    policy = resolve_policy()
    assert policy.health.quorum == 2
    read = {rule.signal for rule in policy.health.rules} - RESTART_SIGNALS
    read |= {rule.pending_signal for rule in policy.health.rules if rule.pending_signal}
    assert read <= set(policy.health.queries)
    assert policy.health.queries == VLLM.queries
    assert (DEFAULT_POLICY_SPEC.health or HealthSpec()).queries is None
    assert policy.server == "vllm"
    assert policy.switched_off == ()
    assert policy.sources == ("built-in defaults",)


def test_deployment_overrides_policy_field_by_field() -> None:
    cluster = RecyclePolicySpec(
        health=HealthSpec(
            warmup="20m", rules=[SignalRuleSpec(name="memory-leak", threshold="1Gi")]
        ),
        disruption=DisruptionSpec(cooldown="2h", max_recycles_per_hour=2),
    )
    deployment = RecyclePolicySpec(
        health=HealthSpec(rules=[SignalRuleSpec(name="memory-leak", window="2h")]),
        disruption=DisruptionSpec(max_recycles_per_hour=1),
    )
    policy = resolve_policy(cluster, deployment, sources=("rcp/fleet", "infd/ns/x"))
    leak = next(rule for rule in policy.health.rules if rule.name == "memory-leak")
    assert leak.threshold == 2**30  # from the cluster policy
    assert leak.window_s == 7200  # from the deployment
    assert leak.kind is RuleKind.GROWTH  # from the built-in default
    assert leak.sufficient  # untouched default
    assert policy.health.warmup_s == 1200
    assert policy.disruption.cooldown_s == 7200
    assert policy.disruption.max_recycles_per_hour == 1
    assert policy.sources == ("built-in defaults", "rcp/fleet", "infd/ns/x")


def test_unset_is_not_the_same_as_false() -> None:
    cluster = RecyclePolicySpec(dry_run=True)
    assert resolve_policy(cluster, RecyclePolicySpec()).dry_run is True
    assert resolve_policy(cluster, RecyclePolicySpec(dry_run=False)).dry_run is False


def test_rule_can_be_switched_off_by_an_override() -> None:
    off = RecyclePolicySpec(
        health=HealthSpec(rules=[SignalRuleSpec(name="cpu-outlier", enabled=False)])
    )
    names = {rule.name for rule in resolve_policy(off).health.rules}
    assert "cpu-outlier" not in names
    assert "memory-leak" in names


def test_queries_merge_by_signal_and_custom_signal_needs_a_query() -> None:
    custom = RecyclePolicySpec(
        health=HealthSpec(
            queries={"queue_depth": "sum by (namespace, pod) (tgi_queue_size)"},
            rules=[
                SignalRuleSpec(
                    name="queue",
                    signal="queue_depth",
                    kind=RuleKind.ABOVE,
                    threshold="50",
                    window="5m",
                )
            ],
        )
    )
    policy = resolve_policy(custom)
    assert "queue_depth" in policy.health.queries
    assert "memory" in policy.health.queries
    missing = RecyclePolicySpec(
        health=HealthSpec(
            rules=[
                SignalRuleSpec(
                    name="q", signal="nope", kind=RuleKind.ABOVE, threshold="1", window="1m"
                )
            ]
        )
    )
    with pytest.raises(PolicyError, match=r"health.rules\[q\].signal: 'nope' has no query"):
        resolve_policy(missing)


def test_new_rule_must_be_complete_and_names_what_is_missing() -> None:
    partial = RecyclePolicySpec(
        health=HealthSpec(rules=[SignalRuleSpec(name="mine", signal="cpu")])
    )
    with pytest.raises(PolicyError, match=r"health.rules\[mine\]: missing kind, threshold, window"):
        resolve_policy(partial)


@pytest.mark.parametrize(
    ("kind", "threshold", "clear", "message"),
    [
        (RuleKind.ABOVE, "10", "12", "at or below the threshold"),
        (RuleKind.BELOW, "10", "8", "at or above the threshold"),
        (RuleKind.OUTLIER, "0.8", None, "a ratio above 1"),
    ],
)
def test_clear_level_must_be_on_the_healthy_side(
    kind: RuleKind, threshold: str, clear: str | None, message: str
) -> None:
    spec = RecyclePolicySpec(
        health=HealthSpec(
            rules=[
                SignalRuleSpec(
                    name="r", signal="cpu", kind=kind, threshold=threshold, clear=clear, window="1m"
                )
            ]
        )
    )
    with pytest.raises(PolicyError, match=message):
        resolve_policy(spec)


def test_a_limit_is_a_level_or_a_signal() -> None:
    def rule(**fields: object) -> RecyclePolicySpec:
        return RecyclePolicySpec.model_validate(
            {"health": {"rules": [{"name": "memory-leak", "timeToLimit": "2h", **fields}]}}
        )

    fixed = resolve_policy(rule(limit="20Gi")).health.rules[0]
    assert (fixed.limit, fixed.limit_signal, fixed.time_to_limit_s) == (20 * 2**30, None, 7200)
    own = resolve_policy(rule(limit="memory_limit")).health.rules[0]
    assert (own.limit, own.limit_signal) == (None, "memory_limit")
    assert "memory_limit" in resolve_policy(rule(limit="memory_limit")).health.signals
    with pytest.raises(
        PolicyError, match=r"rules\[memory-leak\]\.limit: signal 'mem_limit' has no"
    ):
        resolve_policy(rule(limit="mem_limit"))
    with pytest.raises(ValidationError, match="limit"):
        rule(limit="twenty gigs")
    with pytest.raises(PolicyError, match="only a growth rule has a limit"):
        resolve_policy(rule(name="error-rate", limit="1"))


def test_an_inherited_limit_takes_a_new_horizon_alone() -> None:
    """Rules merge field by field: a layer may change timeToLimit without restating limit,
    and the pair is checked once merged."""
    layer = RecyclePolicySpec.model_validate(
        {"health": {"rules": [{"name": "memory-leak", "timeToLimit": "6h"}]}}
    )
    rule = next(r for r in resolve_policy(layer).health.rules if r.name == "memory-leak")
    assert (rule.limit_signal, rule.time_to_limit_s) == ("memory_limit", 6 * 3600)
    alone = RecyclePolicySpec.model_validate(
        {
            "health": {
                "rules": [
                    {"name": "mine", "signal": "memory", "kind": "growth", "threshold": "1Gi"}
                    | {"window": "1h", "timeToLimit": "1h"}
                ]
            }
        }
    )
    with pytest.raises(PolicyError, match=r"rules\[mine\]: limit and timeToLimit go together"):
        resolve_policy(alone)


def test_bad_strings_are_refused_with_the_field_and_the_form() -> None:
    with pytest.raises(ValidationError) as error:
        HealthSpec.model_validate({"warmup": "ten minutes"})
    assert "warmup" in str(error.value)
    assert '"5m"' in str(error.value)
    with pytest.raises(ValidationError, match="maxUnavailable"):
        DisruptionSpec.model_validate({"maxUnavailable": "lots"})
    with pytest.raises(ValidationError, match="unique"):
        HealthSpec.model_validate({"rules": [{"name": "a"}, {"name": "a"}]})
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        HealthSpec.model_validate({"quorun": 2})


@pytest.mark.parametrize(
    ("value", "replicas", "unavailable", "available"),
    [(1, 8, 1, 1), ("25%", 8, 2, 2), ("25%", 3, 1, 1), ("75%", 8, 6, 6), ("0%", 4, 1, 0)],
)
def test_percentages_scale_with_replicas(
    value: int | str, replicas: int, unavailable: int, available: int
) -> None:
    policy = DisruptionPolicy(max_unavailable=value, min_available=value)
    assert policy.max_unavailable_for(replicas) == unavailable
    assert policy.min_available_for(replicas) == available


def test_merge_is_associative_over_layers() -> None:
    a = RecyclePolicySpec(disruption=DisruptionSpec(cooldown="1h"))
    b = RecyclePolicySpec(disruption=DisruptionSpec(max_recycles_per_hour=3))
    c = RecyclePolicySpec(disruption=DisruptionSpec(cooldown="5m"))
    merged = merge_policy_specs(a, b, c)
    assert merged.disruption is not None
    assert merged.disruption.cooldown == "5m"
    assert merged.disruption.max_recycles_per_hour == 3


def test_deployment_spec_parses_camel_case_and_is_frozen() -> None:
    spec = InferenceDeploymentSpec.model_validate(
        {
            "replicas": 3,
            "template": {"spec": {"containers": [{"name": "vllm", "image": "vllm/vllm-openai"}]}},
            "restartStrategy": "Recreate",
            "sessionStore": {"size": "10Gi"},
            "disruption": {"minAvailable": 2},
            "policyRef": {"name": "fleet"},
        }
    )
    assert spec.restart_strategy == "Recreate"
    assert spec.policy_layer().disruption == DisruptionSpec(min_available=2)
    with pytest.raises(ValidationError):
        spec.replicas = 4  # type: ignore[misc]


def _override(**fields: object) -> RecyclePolicySpec:
    """The built-in memory leak rule (growth over 1h) with some fields changed."""
    rule = {"name": "memory-leak", **fields}
    return RecyclePolicySpec.model_validate({"health": {"rules": [rule]}})


@pytest.mark.parametrize("field", ["threshold", "clear"])
def test_a_negative_level_is_refused_naming_the_field(field: str) -> None:
    fields = {"threshold": "1Gi", "clear": "-1Mi"} if field == "clear" else {"threshold": "-1Mi"}
    with pytest.raises(PolicyError, match=rf"rules\[memory-leak\]\.{field}: -1Mi is negative"):
        resolve_policy(_override(**fields))


def test_a_negative_limit_is_refused() -> None:
    with pytest.raises(PolicyError, match=r"rules\[memory-leak\]\.limit: -1Gi is negative"):
        resolve_policy(_override(limit="-1Gi"))


@pytest.mark.parametrize("field", ["window", "baselineWindow", "timeToLimit"])
def test_an_empty_window_is_refused(field: str) -> None:
    with pytest.raises(PolicyError, match=rf"\.{field}: 0s is empty, so the rule would never"):
        resolve_policy(_override(**{field: "0s"}))


def test_a_window_shorter_than_three_cycles_is_refused_with_the_length_it_needs() -> None:
    assert resolve_policy(_override(window="90s"), cycle_interval_s=30).health.rules
    with pytest.raises(PolicyError) as refused:
        resolve_policy(_override(window="1m"), cycle_interval_s=30)
    message = str(refused.value)
    assert message.startswith("health.rules[memory-leak].window: 1m is shorter than 3")
    assert "make it at least 1m30s or shorten the cycle interval" in message
    # Without a cycle interval (explain, tools) only empty windows are refused.
    assert resolve_policy(_override(window="1m")).health.rules


def test_every_default_window_fits_the_default_cycle_interval() -> None:
    assert resolve_policy(cycle_interval_s=30).health.rules


def test_the_hourly_budget_cannot_exceed_what_history_can_count() -> None:
    assert DisruptionSpec(max_recycles_per_hour=MAX_RECYCLES_PER_HOUR)
    with pytest.raises(ValidationError, match="less than or equal to 20"):
        DisruptionSpec(max_recycles_per_hour=MAX_RECYCLES_PER_HOUR + 1)
    assert MAX_HISTORY >= MAX_RECYCLES_PER_HOUR


def _spec(**fields: object) -> dict[str, object]:
    return {"replicas": 2, "template": {"spec": {"containers": [{"name": "s"}]}}} | fields


def test_template_and_target_ref_are_exclusive_and_one_is_required() -> None:
    target = {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"}
    with pytest.raises(ValueError, match=r"exactly one of spec\.template"):
        InferenceDeploymentSpec.model_validate(_spec(targetRef=target))
    with pytest.raises(ValueError, match=r"exactly one of spec\.template"):
        InferenceDeploymentSpec.model_validate({})
    attached = InferenceDeploymentSpec.model_validate({"targetRef": target})
    assert attached.attached
    assert attached.strategy is RestartStrategy.RECREATE
    assert InferenceDeploymentSpec.model_validate(_spec()).strategy is RestartStrategy.IN_PLACE
    with pytest.raises(ValueError, match=r"spec\.replicas is required"):
        InferenceDeploymentSpec.model_validate({"template": {}})


def test_a_target_ref_must_pair_kind_and_api_version_and_groups_recreate() -> None:
    wrong = {"apiVersion": "apps/v1", "kind": "LeaderWorkerSet", "name": "big"}
    with pytest.raises(ValueError, match=r"leaderworkerset\.x-k8s\.io/v1 for kind LeaderWorkerSet"):
        InferenceDeploymentSpec.model_validate({"targetRef": wrong})
    lws = {"apiVersion": "leaderworkerset.x-k8s.io/v1", "kind": "LeaderWorkerSet", "name": "big"}
    with pytest.raises(ValueError, match="must be Recreate for a LeaderWorkerSet"):
        InferenceDeploymentSpec.model_validate({"targetRef": lws, "restartStrategy": "InPlace"})
