"""Prometheus reads: one instant query per distinct signal query per cycle, for every pod at once.

prometheus-api-client is blocking, so each query runs in a worker thread under a timeout; the
queries of one cycle run concurrently. Any failure is reported per query, never raised into the
cycle: the caller turns missing answers into "no data", which never condemns a pod.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import requests
from prometheus_api_client import PrometheusConnect
from prometheus_api_client.exceptions import PrometheusApiClientException
from urllib3.util.retry import Retry

from infercycle.settings import OperatorSettings

PodRef = tuple[str, str]  # (namespace, pod)


@dataclass(frozen=True)
class QueryOutcome:
    values: dict[PodRef, float]
    seconds: float
    error: str | None = None
    unreachable: bool = False


@dataclass(frozen=True)
class FleetSnapshot:
    """Every signal for every pod, as of one moment."""

    at: float
    signals: dict[str, dict[PodRef, float]] = field(default_factory=dict)
    sample_time: dict[PodRef, float] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    durations: dict[str, float] = field(default_factory=dict)
    unreachable: bool = False
    queries: int = 0

    def newest_sample(self) -> float | None:
        return max(self.sample_time.values(), default=None)


class PrometheusReader:
    def __init__(self, settings: OperatorSettings) -> None:
        headers: dict[str, str] = {}
        if settings.prometheus_token_file is not None:
            token = settings.prometheus_token_file.read_text().strip()
            headers["Authorization"] = f"Bearer {token}"
        auth = None
        if settings.prometheus_username and settings.prometheus_password_file is not None:
            password = settings.prometheus_password_file.read_text().strip()
            auth = (settings.prometheus_username, password)
        self._client = PrometheusConnect(
            url=settings.prometheus_url,
            headers=headers or None,
            disable_ssl=not settings.prometheus_tls_verify,
            auth=auth,
            timeout=max(1, math.ceil(settings.query_timeout_s)),
            # One quick retry at most: the cycle itself is the retry loop, and the client's own
            # default (three, with growing back-off) outlasts the query timeout, so a refused
            # connection would read as a timeout instead of as Prometheus being unreachable.
            retry=Retry(
                total=1,
                backoff_factor=0.1,
                status_forcelist=(502, 503, 504),
                allowed_methods=("GET", "POST"),
                respect_retry_after_header=False,
            ),
        )
        if settings.prometheus_ca_file is not None and settings.prometheus_tls_verify:
            self._client._session.verify = str(settings.prometheus_ca_file)
        self._timeout = settings.query_timeout_s
        self._freshness = settings.freshness_query
        self.evaluation_time: float | None = None

    def query_now(self, promql: str) -> dict[PodRef, float]:
        """One instant query; series without namespace and pod labels are ignored.

        ``evaluation_time`` (seconds) pins the query to a past instant instead of "now".
        """
        params = None if self.evaluation_time is None else {"time": f"{self.evaluation_time:.3f}"}
        result = self._client.custom_query(query=promql, params=params)
        values: dict[PodRef, float] = {}
        for series in result:
            ref = _pod_ref(series)
            value = float(series["value"][1])
            if ref is not None and math.isfinite(value):
                values[ref] = value
        return values

    async def _timed(self, promql: str) -> QueryOutcome:
        started = time.perf_counter()
        try:
            values = await asyncio.wait_for(
                asyncio.to_thread(self.query_now, promql), timeout=self._timeout
            )
        except TimeoutError:
            return QueryOutcome({}, time.perf_counter() - started, "query timed out", False)
        except requests.exceptions.ConnectionError as error:
            return QueryOutcome({}, time.perf_counter() - started, _short(error), True)
        except (PrometheusApiClientException, requests.RequestException, ValueError) as error:
            return QueryOutcome({}, time.perf_counter() - started, _short(error), False)
        return QueryOutcome(values, time.perf_counter() - started)

    async def snapshot(self, queries: Mapping[str, str]) -> FleetSnapshot:
        """Run each distinct query once; signals sharing a query share its answer."""
        by_query: dict[str, list[str]] = {}
        for signal, promql in queries.items():
            by_query.setdefault(promql, []).append(signal)
        by_query.setdefault(self._freshness, []).append("_freshness")
        texts = list(by_query)
        outcomes = await asyncio.gather(*(self._timed(text) for text in texts))
        snapshot = FleetSnapshot(at=time.time(), queries=len(texts))
        for text, outcome in zip(texts, outcomes, strict=True):
            for signal in by_query[text]:
                snapshot.durations[signal] = outcome.seconds
                if outcome.error is not None:
                    snapshot.errors[signal] = outcome.error
                elif signal == "_freshness":
                    snapshot.sample_time.update(outcome.values)
                else:
                    snapshot.signals[signal] = outcome.values
        unreachable = all(outcome.unreachable for outcome in outcomes)
        if unreachable:
            return FleetSnapshot(
                at=snapshot.at,
                errors=snapshot.errors,
                durations=snapshot.durations,
                unreachable=True,
                queries=len(texts),
            )
        return snapshot


def _short(error: BaseException) -> str:
    text = str(error) or type(error).__name__
    return text if len(text) < 300 else text[:297] + "..."


def range_series(
    reader: PrometheusReader, promql: str, start: float, end: float, step_s: float
) -> dict[PodRef, list[tuple[float, float]]]:
    """A range query: every pod's points between ``start`` and ``end`` (blocking)."""
    from datetime import UTC, datetime  # noqa: PLC0415

    result = reader._client.custom_query_range(
        query=promql,
        start_time=datetime.fromtimestamp(start, tz=UTC),
        end_time=datetime.fromtimestamp(end, tz=UTC),
        step=f"{max(1, round(step_s))}s",
    )
    series: dict[PodRef, list[tuple[float, float]]] = {}
    for item in result:
        ref = _pod_ref(item)
        if ref is None:
            continue
        points = [(float(t), float(v)) for t, v in item.get("values", [])]
        series[ref] = [(t, v) for t, v in points if math.isfinite(v)]
    return series


def _pod_ref(series: dict[str, Any]) -> PodRef | None:
    labels = series.get("metric", {})
    namespace, pod = labels.get("namespace"), labels.get("pod")
    return (namespace, pod) if namespace and pod else None
