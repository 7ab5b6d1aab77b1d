"""A quantile stuck in its histogram's lowest bucket is reported, per rule and pod."""

from __future__ import annotations

from infercycle.api.resolver import resolve_policy
from infercycle.api.spec import HealthSpec, RecyclePolicySpec
from infercycle.health.resolution import blind_rules


def test_a_vllm_p99_in_the_lowest_bucket_blinds_the_latency_rules() -> None:
    health = resolve_policy().health
    latest = {"latency_p99": {"ns/fast": 0.297, "ns/slow": 0.62, "ns/quiet": None}}
    found = blind_rules(health, latest)
    assert {(b.rule, b.pod) for b in found} == {
        ("latency-creep", "ns/fast"),
        ("latency-outlier", "ns/fast"),
    }
    text = found[0].describe()
    assert "ns/fast reads 297ms" in text
    assert "lowest bucket (up to 300ms)" in text
    assert "token_latency_p99" in text


def test_a_value_just_above_the_floor_is_not_blind() -> None:
    health = resolve_policy().health
    assert blind_rules(health, {"latency_p99": {"ns/a": 0.3001}}) == ()


def test_a_query_of_your_own_has_no_floor() -> None:
    own = "histogram_quantile(0.99, sum by (namespace, pod, le) (rate(my_bucket[5m])))"
    health = resolve_policy(
        RecyclePolicySpec(health=HealthSpec(queries={"latency_p99": own}))
    ).health
    assert blind_rules(health, {"latency_p99": {"ns/a": 0.01}}) == ()


def test_a_server_with_fine_buckets_is_not_blind_at_the_same_latency() -> None:
    health = resolve_policy(RecyclePolicySpec(server="sglang")).health
    assert blind_rules(health, {"latency_p99": {"ns/a": 0.297}}) == ()
    assert len(blind_rules(health, {"latency_p99": {"ns/a": 0.08}})) == 2
