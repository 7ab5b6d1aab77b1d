"""Evaluation hands the engine what the pods' status says of their restarts: repeated OOM kills
of one pod condemn it, across the lives of its server process, and no other pod."""

from __future__ import annotations

from typing import Any

from infercycle.cycle import inputs
from infercycle.cycle.evaluation import evaluate
from infercycle.cycle.state import QuerySet, Registry
from infercycle.health.engine import HealthEngine
from infercycle.kube.api import pod_state
from infercycle.prom.reader import FleetSnapshot

from .fakes import NAME, NAMESPACE, deployment, pod

T0 = 1_800_000_000.0
STEP = 30.0


def oom_killed(raw: dict[str, Any], times: int, at: float) -> None:
    status = raw["status"]["containerStatuses"][0]
    status["restartCount"] = times
    finished = f"2027-01-15T{8 + int((at - T0) // 3600):02d}:{int((at - T0) % 3600 // 60):02d}:00Z"
    status["lastState"] = {"terminated": {"reason": "OOMKilled", "finishedAt": finished}}


def test_pod_state_reads_the_server_containers_last_termination() -> None:
    raw = pod("llama-0", "u0")
    oom_killed(raw, 1, T0 + 600)
    state = pod_state(raw, "server")
    assert state.restart_count == 1
    assert state.last_terminated_reason == "OOMKilled"
    assert state.last_terminated_at is not None


def test_two_oom_kills_condemn_the_pod_they_happened_to_and_no_other() -> None:
    pods = {"llama-0": pod("llama-0", "u0"), "llama-1": pod("llama-1", "u1")}
    body = deployment()
    registry = Registry()
    queries = QuerySet()
    engine: HealthEngine | None = None
    verdicts: dict[str, bool] = {}
    reasons: list[str] = []
    for step in range(int(3 * 3600 / STEP)):
        now = T0 + step * STEP
        if step == int(3600 / STEP):
            oom_killed(pods["llama-0"], 1, now)
        if step == int(2 * 3600 / STEP):
            oom_killed(pods["llama-0"], 2, now)
        for raw in pods.values():
            registry.put_pod(raw, deleted=False)
        context = inputs.context_for(registry, (NAMESPACE, NAME), body)
        assert context.policy is not None, context.error
        if engine is None:
            engine = HealthEngine(context.policy.health)
            queries = inputs.query_set([context])
        refs = [(NAMESPACE, name) for name in pods]
        healthy = {
            "memory": 12 * 2**30,
            "gpu_memory": 30 * 2**30,
            "error_rate": 0.0,
            "progress": 1000.0 * step,
            "requests_pending": 2.0,
            "requests_waiting": 0.0,
            "request_rate": 3.0,
        }
        snapshot = FleetSnapshot(
            at=now,
            signals={
                query.label: {ref: healthy.get(query.signal, 1.0) for ref in refs}
                for query in queries
            },
            sample_time=dict.fromkeys(refs, now),
            queries=len(queries),
        )
        result = evaluate(context, engine, snapshot, queries, now, "http://prometheus")
        assert result.metrics.available, result.metrics.message
        for state in context.pods:
            verdict = result.verdict(state)
            verdicts[state.name] = verdicts.get(state.name, False) or bool(
                verdict and verdict.degraded
            )
            if verdict is not None and verdict.degraded:
                reasons.extend(f"{state.name} {reason.text}" for reason in verdict.reasons)
    assert verdicts == {"llama-0": True, "llama-1": False}, sorted(set(reasons))
    assert any(text.startswith("llama-0 oom-kills") for text in reasons), sorted(set(reasons))


def test_a_p99_stuck_in_the_lowest_bucket_is_reported_blind_for_its_pod() -> None:
    pods = {"llama-0": pod("llama-0", "u0"), "llama-1": pod("llama-1", "u1")}
    registry = Registry()
    for raw in pods.values():
        registry.put_pod(raw, deleted=False)
    context = inputs.context_for(registry, (NAMESPACE, NAME), deployment())
    assert context.policy is not None, context.error
    floor = context.policy.health.floors["latency_p99"]
    queries = inputs.query_set([context])
    engine = HealthEngine(context.policy.health)
    latency = {(NAMESPACE, "llama-0"): floor * 0.99, (NAMESPACE, "llama-1"): 1.5}
    snapshot = FleetSnapshot(
        at=T0,
        signals={
            query.label: latency if query.signal == "latency_p99" else dict.fromkeys(latency, 1.0)
            for query in queries
        },
        sample_time=dict.fromkeys(latency, T0),
        queries=len(queries),
    )
    result = evaluate(context, engine, snapshot, queries, T0, "http://prometheus")
    blind = {(item.rule, item.pod) for item in result.blind}
    assert ("latency-creep", "llama-0") in blind
    assert not any(pod_name == "llama-1" for _, pod_name in blind)
