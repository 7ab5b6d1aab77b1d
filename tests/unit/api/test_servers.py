"""Server profiles: every signal answered or explained, and rules on missing signals switched
off with their reason, never silently."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from infercycle.api.resolver import PolicyError, resolve_policy, switched_off_rules
from infercycle.api.resources import InferenceDeploymentSpec
from infercycle.api.servers import (
    BUILTIN_SIGNALS,
    ENGINE_SIGNALS,
    INFRASTRUCTURE,
    PROFILES,
    ServerKind,
    profile_for,
)
from infercycle.api.spec import HealthSpec, RecyclePolicySpec, SignalRuleSpec
from infercycle.api.values import RESTART_SIGNALS, Rule, RuleKind


@pytest.mark.parametrize("server", list(ServerKind))
def test_every_profile_answers_or_explains_every_builtin_signal(server: ServerKind) -> None:
    profile = PROFILES[server]
    assert set(profile.sources) == set(BUILTIN_SIGNALS)
    for signal, source in profile.sources.items():
        assert source.signal == signal
        if source.query is None:
            assert source.note, f"{server}: {signal} is unavailable without a reason"
        else:
            assert "namespace, pod" in source.query, f"{server}: {signal} is not per pod"
    for signal in INFRASTRUCTURE:
        assert profile.sources[signal] is INFRASTRUCTURE[signal]
    assert profile.checked_against
    assert profile.endpoint


def test_what_each_server_lacks() -> None:
    lacks = {server.value: sorted(p.unavailable) for server, p in PROFILES.items()}
    assert lacks == {
        "vllm": [],
        "sglang": ["progress"],
        "tgi": ["kv_cache", "ttft_p99"],
        "llamacpp": ["error_rate", "kv_cache", "latency_p99", "request_rate", "ttft_p99"],
        "triton": ["progress", "requests_pending", "token_latency_p99", "ttft_p99"],
        "dynamo": ["progress", "requests_waiting", "token_latency_p99", "ttft_p99"],
        "custom": sorted(ENGINE_SIGNALS),
    }


def test_vllm_reads_errors_from_the_finished_reason_and_both_kv_cache_names() -> None:
    vllm = profile_for("vllm")
    assert 'vllm:request_success_total{finished_reason="error"}' in vllm.queries["error_rate"]
    assert "request_failure" not in vllm.queries["error_rate"]
    kv = vllm.queries["kv_cache"]
    assert "vllm:kv_cache_usage_perc" in kv
    assert "vllm:gpu_cache_usage_perc" in kv
    assert kv.index("kv_cache_usage_perc") < kv.index("gpu_cache_usage_perc")  # new name wins
    assert vllm.floors["latency_p99"] == 0.3


def test_gpu_memory_reads_all_three_dcgm_label_layouts_and_the_reserved_memory() -> None:
    query = profile_for(None).queries["gpu_memory_total"]
    for label in ("pod_name", "pod_namespace", "exported_pod", "exported_namespace"):
        assert f'"{label}"' in query
    assert "DCGM_FI_DEV_FB_RESERVED" in query


def test_memory_limit_counts_native_sidecars() -> None:
    query = profile_for(None).queries["memory_limit"]
    assert 'kube_pod_init_container_info{restart_policy="Always"}' in query
    assert "kube_pod_init_container_resource_limits" in query


def test_server_chooses_the_queries_and_the_deployment_overrides_the_policy() -> None:
    policy = RecyclePolicySpec(server=ServerKind.TGI)
    deployment = InferenceDeploymentSpec.model_validate(
        {"replicas": 1, "template": {"spec": {"containers": []}}, "server": "sglang"}
    )
    assert resolve_policy(policy).server == "tgi"
    resolved = resolve_policy(policy, deployment.policy_layer())
    assert resolved.server == "sglang"
    assert resolved.health.queries["kv_cache"] == profile_for("sglang").queries["kv_cache"]


def test_an_unknown_server_is_refused_naming_the_choices() -> None:
    with pytest.raises(ValidationError, match="vllm") as caught:
        RecyclePolicySpec.model_validate({"server": "ollama"})
    assert "server" in str(caught.value)


def test_rules_on_missing_signals_are_switched_off_with_the_reason() -> None:
    policy = resolve_policy(RecyclePolicySpec(server=ServerKind.LLAMACPP))
    off = {entry.rule: entry for entry in policy.switched_off}
    assert set(off) == {
        "latency-creep",
        "latency-outlier",
        "error-rate",
        "kv-cache-pressure",
        "kv-cache-saturation",
    }
    assert off["error-rate"].signal == "error_rate"
    assert "no error counter" in off["error-rate"].reason
    assert "kv_cache_usage_ratio" in off["kv-cache-pressure"].reason
    running = {rule.name for rule in policy.health.rules}
    assert running.isdisjoint(off)
    assert {"memory-leak", "gpu-memory-leak", "cpu-outlier"} <= running
    text = off["error-rate"].describe(policy.server)
    assert text.startswith("rule error-rate is off: llamacpp does not provide error_rate")


def test_a_rule_that_needs_traffic_is_off_where_request_rate_is_missing() -> None:
    profile = profile_for("llamacpp")
    rule = Rule("token-creep", "token_latency_p99", RuleKind.BASELINE, 1.5, 1.2, 600.0)
    gated = Rule(
        "token-creep-busy", "token_latency_p99", RuleKind.BASELINE, 1.5, 1.2, 600.0,
        requires_traffic=True,
    )  # fmt: skip
    off = switched_off_rules([rule, gated], profile.queries, profile)
    assert [(o.rule, o.signal) for o in off] == [("token-creep-busy", "request_rate")]
    assert "counts only under traffic" in off[0].reason


def test_a_query_of_your_own_switches_a_rule_back_on() -> None:
    own = "max by (namespace, pod) (llamacpp:kv_cache_usage_ratio)"
    rate = "sum by (namespace, pod) (rate(llamacpp:n_decode_total[5m]))"
    only_kv = RecyclePolicySpec(
        server=ServerKind.LLAMACPP, health=HealthSpec(queries={"kv_cache": own})
    )
    off = {o.rule: o.signal for o in resolve_policy(only_kv).switched_off}
    assert off["kv-cache-pressure"] == "request_rate"  # it also counts only under traffic
    both = RecyclePolicySpec(
        server=ServerKind.LLAMACPP,
        health=HealthSpec(queries={"kv_cache": own, "request_rate": rate}),
    )
    policy = resolve_policy(both)
    assert "kv-cache-pressure" not in {o.rule for o in policy.switched_off}
    assert policy.health.queries["kv_cache"] == own
    assert "kv_cache" not in policy.health.floors


def test_a_quorum_out_of_reach_after_switching_off_names_the_server() -> None:
    layer = RecyclePolicySpec(
        server=ServerKind.CUSTOM,
        health=HealthSpec(
            quorum=3,
            rules=[
                SignalRuleSpec(name="memory-leak", enabled=False),
                SignalRuleSpec(name="gpu-memory-leak", enabled=False),
                SignalRuleSpec(name="oom-kills", enabled=False),
            ],
        ),
    )
    with pytest.raises(PolicyError, match="server custom lacks their signals"):
        resolve_policy(layer)


def test_custom_server_keeps_infrastructure_rules_only() -> None:
    policy = resolve_policy(RecyclePolicySpec(server=ServerKind.CUSTOM))
    assert set(policy.health.queries) == set(INFRASTRUCTURE)
    # and the OOM kills the engine counts from the pods' status, whatever the server
    assert {r.signal for r in policy.health.rules} <= set(INFRASTRUCTURE) | RESTART_SIGNALS


def test_the_documented_override_moves_the_latency_rules_to_per_token_latency() -> None:
    layer = RecyclePolicySpec(
        health=HealthSpec(
            rules=[
                SignalRuleSpec(name="latency-creep", signal="token_latency_p99"),
                SignalRuleSpec(name="latency-outlier", signal="token_latency_p99"),
            ]
        )
    )
    policy = resolve_policy(layer)
    latency = {r.name: r for r in policy.health.rules if r.name.startswith("latency-")}
    assert {r.signal for r in latency.values()} == {"token_latency_p99"}
    assert latency["latency-creep"].kind is RuleKind.BASELINE
    assert policy.health.floors["token_latency_p99"] == 0.01
