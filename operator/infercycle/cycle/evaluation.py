"""Evaluation: Prometheus answers into the health engine, verdicts out.

A new engine starts from Prometheus' history (``backfill``), not from nothing: after an operator
restart a leak that was 50 minutes into its 1 h window is still 50 minutes in. ``evaluate`` feeds
one snapshot to a deployment's engine and returns an ``Evaluation``; when the data cannot be
trusted (Prometheus unreachable, a query failed, no samples, stale samples) it returns no
verdicts and says why, so nothing is condemned on missing data.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence

from infercycle.cycle.inputs import REQUESTS_RUNNING
from infercycle.cycle.state import (
    DeploymentContext,
    Evaluation,
    MetricsState,
    QuerySet,
    container_restarts,
    pod_key,
)
from infercycle.health.engine import HealthEngine
from infercycle.health.resolution import blind_rules
from infercycle.prom.reader import FleetSnapshot

log = logging.getLogger("infercycle.cycle")
Series = dict[tuple[str, str], list[tuple[float, float]]]
RangeQuery = Callable[[str, float, float, float], Awaitable[Series]]
# A rule needs several samples in its window; history is read at least this finely, even when
# cycles are further apart, so that a short window is judged on the first cycle too.
SAMPLES_PER_SHORTEST_WINDOW = 12


def backfill_step(engine: HealthEngine, cycle_interval_s: float) -> float:
    """The range-query step for history: the cycle interval, finer for short windows."""
    windows = [rule.window_s for rule in engine.policy.rules if rule.window_s > 0]
    shortest = min(windows, default=cycle_interval_s * SAMPLES_PER_SHORTEST_WINDOW)
    return max(1.0, min(cycle_interval_s, shortest / SAMPLES_PER_SHORTEST_WINDOW))


async def backfill(
    targets: Sequence[tuple[DeploymentContext, HealthEngine]],
    read_range: RangeQuery,
    now: float,
    cycle_interval_s: float,
) -> None:
    """Load each new engine's history, one range query per distinct PromQL text."""
    if not targets:
        return
    wanted: dict[tuple[str, float], list[tuple[DeploymentContext, HealthEngine, str]]] = {}
    longest = 0.0
    for context, engine in targets:
        assert context.policy is not None
        health = context.policy.health
        longest = max(longest, health.longest_window_s)
        step = backfill_step(engine, cycle_interval_s)
        for signal in health.signals:
            promql = health.queries.get(signal)
            if promql:
                wanted.setdefault((promql, step), []).append((context, engine, signal))
    start = now - longest

    async def one(promql: str, step: float) -> Series:
        try:
            return await read_range(promql, start, now, step)
        except Exception as error:  # history is a head start, never a reason to stop
            log.warning("history not loaded for %s: %s", promql[:80], error)
            return {}

    keys = list(wanted)
    answers = await asyncio.gather(*(one(promql, step) for promql, step in keys))
    for key, series in zip(keys, answers, strict=True):
        for context, engine, signal in wanted[key]:
            for pod in context.pods:
                points = series.get((context.key[0], pod.name), [])
                started = pod.started_at or now
                usable = [(t, v) for t, v in points if t >= started]
                if usable and pod.running:
                    engine.observe_series(pod_key(pod), started, signal, usable)


def requests_running(
    context: DeploymentContext, snapshot: FleetSnapshot | None, queries: QuerySet
) -> dict[str, float]:
    """In-flight requests per pod name, from whichever query this deployment reads them by."""
    if snapshot is None or context.policy is None:
        return {}
    promql = context.policy.health.queries.get(REQUESTS_RUNNING, "")
    query = queries.find(REQUESTS_RUNNING, promql)
    values = snapshot.signals.get(query.label, {}) if query is not None else {}
    namespace = context.key[0]
    return {pod: value for (ns, pod), value in values.items() if ns == namespace}


def evaluate(  # noqa: PLR0917 - the cycle's inputs, each distinct
    context: DeploymentContext,
    engine: HealthEngine,
    snapshot: FleetSnapshot | None,
    queries: QuerySet,
    now: float,
    prometheus_url: str,
) -> Evaluation:
    """Feed this cycle's answers for the deployment's running pods and judge them."""
    assert context.policy is not None
    health = context.policy.health
    namespace = context.key[0]
    running = [pod for pod in context.pods if pod.running and not pod.terminating]
    engine.retain([pod_key(pod) for pod in running])
    in_flight = requests_running(context, snapshot, queries)

    def without(reason: str, message: str, available: bool = False) -> Evaluation:
        return Evaluation({}, MetricsState(available, reason, message), in_flight)

    if snapshot is None or not running:
        return without("NoData", "no running pods to evaluate", available=True)
    if snapshot.unreachable:
        error = next(iter(snapshot.errors.values()), "unreachable")
        return without(
            "PrometheusUnreachable", f"Prometheus at {prometheus_url} is unreachable: {error}"
        )
    labels: dict[str, str] = {}
    for signal in health.signals:
        query = queries.find(signal, health.queries.get(signal, ""))
        labels[signal] = query.label if query is not None else signal
    problem = snapshot.problem_for(
        labels.values(), [(namespace, pod.name) for pod in running]
    )  # a failed query, or several series for a pod of this deployment
    if problem is not None:
        failed, cause = problem
        signal = next(signal for signal, label in labels.items() if label == failed)
        return without("PrometheusError", f"query for {signal} failed: {cause}")
    sample_times = [
        snapshot.sample_time[(namespace, pod.name)]
        for pod in running
        if (namespace, pod.name) in snapshot.sample_time
    ]
    if not sample_times:
        return without("NoData", "Prometheus has no samples for these pods yet")
    newest = max(sample_times)
    if now - newest > health.stale_after_s:
        return without(
            "StaleData",
            f"newest sample is {now - newest:.0f}s old (staleAfter {health.stale_after_s:.0f}s)",
        )
    by_signal: dict[str, Mapping[tuple[str, str], float]] = {
        signal: snapshot.signals.get(label, {}) for signal, label in labels.items()
    }
    for pod in running:
        ref = (namespace, pod.name)
        sampled = snapshot.sample_time.get(ref)
        fresh = sampled is not None and now - sampled <= health.stale_after_s
        signals = {
            signal: (values.get(ref) if fresh else None) for signal, values in by_signal.items()
        }
        engine.observe(now, pod_key(pod), pod.started_at or now, signals, container_restarts(pod))
    verdicts = engine.evaluate(now)
    latest = {
        signal: {pod.name: values.get((namespace, pod.name)) for pod in running}
        for signal, values in by_signal.items()
    }
    return Evaluation(
        verdicts,
        MetricsState(True, "Queried", f"{snapshot.queries} queries, {len(running)} pods"),
        in_flight,
        blind_rules(health, latest),
        {pod_key(pod): pod.restart_count for pod in running},
    )
