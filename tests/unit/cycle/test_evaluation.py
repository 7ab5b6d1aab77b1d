"""Evaluation of one deployment from a fleet-wide snapshot: a query's fault stays with the
deployments that use it."""

from __future__ import annotations

import copy
from typing import Any

from infercycle.cycle import inputs
from infercycle.cycle.evaluation import evaluate
from infercycle.cycle.state import DeploymentContext, Registry
from infercycle.health.engine import HealthEngine
from infercycle.prom.reader import FleetSnapshot, QueryResult, UnexpectedAnswerError
from tests.unit.cycle import fakes

NOW = 1_800_000_000.0


def _registry(*namespaces: str) -> Registry:
    registry = Registry()
    for namespace in namespaces:
        body = copy.deepcopy(fakes.deployment())
        body["metadata"]["namespace"] = namespace
        registry.deployments[(namespace, fakes.NAME)] = body
        for index in range(2):
            pod = fakes.pod(f"{fakes.NAME}-{index}", f"{namespace}-uid-{index}")
            pod["metadata"]["namespace"] = namespace
            registry.put_pod(pod, deleted=False)
    return registry


def _snapshot(
    contexts: list[DeploymentContext], results: dict[str, QueryResult]
) -> tuple[FleetSnapshot, inputs.QuerySet]:
    queries = inputs.query_set(contexts)
    pods = [(c.key[0], p.name) for c in contexts for p in c.pods]
    snapshot = FleetSnapshot(at=NOW, sample_time=dict.fromkeys(pods, NOW - 5))
    for label, promql in queries.by_label().items():
        result = results.get(label) or QueryResult(promql, 0.01, dict.fromkeys(pods, 1.0))
        snapshot.results[label] = result
        if result.error is not None:
            snapshot.errors[label] = str(result.error)
        else:
            snapshot.signals[label] = result.values
    return snapshot, queries


def _metrics(context: DeploymentContext, snapshot: FleetSnapshot, queries: Any) -> Any:
    assert context.policy is not None
    engine = HealthEngine(context.policy.health)
    return evaluate(context, engine, snapshot, queries, NOW, "http://prometheus").metrics


def test_several_series_for_a_pod_mark_only_that_pods_deployment() -> None:
    contexts = inputs.contexts(_registry("team-a", "team-b"))
    queries = inputs.query_set(contexts)
    label = next(iter(queries)).label
    promql = queries.by_label()[label]
    values = {("team-b", f"{fakes.NAME}-{i}"): 1.0 for i in range(2)}
    values[("team-a", f"{fakes.NAME}-1")] = 1.0
    doubled = QueryResult(promql, 0.01, values, {("team-a", f"{fakes.NAME}-0"): 2})
    snapshot, queries = _snapshot(contexts, {label: doubled})

    by_namespace = {c.key[0]: _metrics(c, snapshot, queries) for c in contexts}

    assert by_namespace["team-a"].reason == "PrometheusError"
    assert f"2 series for pod team-a/{fakes.NAME}-0" in by_namespace["team-a"].message
    assert by_namespace["team-b"].reason == "Queried"


def test_a_query_that_failed_marks_the_deployments_using_it_and_names_the_signal() -> None:
    contexts = inputs.contexts(_registry("team-a"))
    queries = inputs.query_set(contexts)
    query = next(iter(queries))
    failed = QueryResult(
        queries.by_label()[query.label], 0.01, error=UnexpectedAnswerError("answered a scalar")
    )
    snapshot, queries = _snapshot(contexts, {query.label: failed})

    metrics = _metrics(contexts[0], snapshot, queries)

    assert metrics.reason == "PrometheusError"
    assert metrics.message == f"query for {query.signal} failed: answered a scalar"
