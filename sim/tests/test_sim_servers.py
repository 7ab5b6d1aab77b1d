"""The simulator writes each server's families as that server does, and its histograms put the
p99 where the scenario says."""

from __future__ import annotations

import math

import pytest
from prometheus_client.parser import text_string_to_metric_families

from infercycle.api.servers import PROFILES, ServerKind
from infercycle_sim.servers import (
    FINE_E2E_BUCKETS,
    EngineState,
    Histogram,
    cumulative_shares,
    render,
)

SAMPLE = {"latency_p99": 0.6, "request_rate": 5.0, "error_rate": 0.02, "kv_cache": 0.4}


def _quantile(histogram: Histogram, q: float) -> float:
    """Prometheus's histogram_quantile on one histogram (linear inside the bucket)."""
    rank = q * histogram.count
    previous_bound, previous_count = 0.0, 0.0
    for bound, count in zip(histogram.buckets, histogram.counts, strict=True):
        if count >= rank:
            return previous_bound + (bound - previous_bound) * (rank - previous_count) / (
                count - previous_count
            )
        previous_bound, previous_count = bound, count
    return math.inf


def _families(server: ServerKind) -> dict[str, str]:
    state = EngineState.new(server, fine_e2e=False)
    for _ in range(10):
        state.accumulate(SAMPLE, 2.0)
    text = render(server, [({"namespace": "ns", "pod": "p-0"}, state)])
    return {family.name: family.type for family in text_string_to_metric_families(text)}


@pytest.mark.parametrize("server", [s for s in ServerKind if s is not ServerKind.CUSTOM])
def test_every_metric_a_profile_reads_is_written_with_a_type(server: ServerKind) -> None:
    written = _families(server)
    wanted = {
        metric
        for source in PROFILES[server].sources.values()
        if source.query is not None
        and not source.metrics[0].startswith(("container_", "kube_"))
        and not source.metrics[0].startswith("DCGM")
        for metric in source.metrics
    }
    # prometheus_client's parser names a counter family without its _total suffix.
    names = set(written) | {f"{name}_total" for name, kind in written.items() if kind == "counter"}
    missing = {m for m in wanted if m not in names}
    optional = {"vllm:gpu_cache_usage_perc", "vllm:time_per_output_token_seconds"}
    optional |= {"nv_inference_pending_request_count"} if server is ServerKind.TRITON else set()
    assert missing <= optional, sorted(missing)


def test_the_histogram_puts_the_p99_where_the_scenario_says() -> None:
    histogram = Histogram(FINE_E2E_BUCKETS)
    histogram.observe(1000.0, 0.085)
    assert _quantile(histogram, 0.99) == pytest.approx(0.085, rel=1e-6)


def test_a_p99_under_the_lowest_real_bucket_reads_as_the_bucket() -> None:
    vllm = EngineState.new("vllm", fine_e2e=False).histograms["e2e"]
    assert vllm.buckets[0] == 0.3
    vllm.observe(1000.0, 0.085)
    assert _quantile(vllm, 0.99) == pytest.approx(0.297)


def test_shares_never_decrease() -> None:
    for p99 in (0.004, 0.3, 0.61, 7.0):
        shares = cumulative_shares(p99, FINE_E2E_BUCKETS)
        assert shares == sorted(shares)


def test_errors_and_finished_requests_follow_the_sample() -> None:
    state = EngineState.new("sglang")
    state.accumulate(SAMPLE, 10.0)
    assert state.finished == pytest.approx(50.0)
    assert state.errors / (state.finished + state.errors) == pytest.approx(0.02)
    assert state.histograms["token"].count == pytest.approx(50.0 * 64)


def test_vllm_labels_every_finished_reason_from_the_start() -> None:
    text = render("vllm", [({"namespace": "ns", "pod": "p"}, EngineState.new("vllm"))])
    for reason in ("stop", "length", "abort", "error"):
        assert f'finished_reason="{reason}"' in text
    assert "request_failure" not in text


def test_the_fleet_simulator_writes_each_pods_own_server() -> None:
    from infercycle_sim import fleetsim, scenarios  # noqa: PLC0415

    pods = []
    for name, server in (("a-0", "vllm"), ("b-0", "sglang"), ("c-0", "llamacpp")):
        pod = fleetsim.PodSim(
            uid=f"uid-{name}",
            namespace="ns",
            name=name,
            container="server",
            node="node-1",
            scenario="healthy",
            params={},
            age_offset=3600.0,
            start=0.0,
            model=scenarios.make_pod_model("healthy", 1),
            server=server,
            engine=EngineState.new(server),
        )
        pod.advance(0.0, 1.0, lambda _: 1.0)
        pod.advance(30.0, 1.0, lambda _: 1.0)
        pods.append(pod)
    families = {f.name: f for f in text_string_to_metric_families(fleetsim.render(pods))}
    assert {s.labels["pod"] for s in families["vllm:num_requests_running"].samples} == {"a-0"}
    assert {s.labels["pod"] for s in families["sglang:num_running_reqs"].samples} == {"b-0"}
    assert {s.labels["pod"] for s in families["llamacpp:requests_processing"].samples} == {"c-0"}
    memory = families["container_memory_working_set_bytes"]
    assert {s.labels["pod"] for s in memory.samples} == {"a-0", "b-0", "c-0"}
    assert "vllm:request_failure_total" not in families
