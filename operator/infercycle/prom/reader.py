"""Prometheus reads: one instant query per distinct signal query per cycle, for every pod at once.

prometheus-api-client is blocking, so each query runs in a worker thread under a timeout; the
queries of one cycle run concurrently. Any failure is reported per query, never raised into the
cycle: the caller turns missing answers into "no data", which never condemns a pod.

A signal query must answer an instant vector with one series per (namespace, pod). Any other
answer (a range vector, a scalar, a string, native histograms, a body that is not the API's
JSON) is an ``UnexpectedAnswerError`` for that query alone, saying how to fix the PromQL. A pod
with several series in one answer gets no value from it, and ``FleetSnapshot.problem_for``
reports it to the deployment that pod belongs to.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import requests
from prometheus_api_client import PrometheusConnect
from prometheus_api_client.exceptions import PrometheusApiClientException
from urllib3.util.retry import Retry

from infercycle.errors import PrometheusError, PrometheusUnreachable
from infercycle.settings import OperatorSettings

PodRef = tuple[str, str]  # (namespace, pod)

log = logging.getLogger(__name__)


class QueryTimeoutError(PrometheusError):
    """The query did not answer within ``queryTimeout``."""


class QueryRejectedError(PrometheusError):
    """Prometheus answered with an error (bad PromQL, overload, an HTTP error status)."""


class UnexpectedAnswerError(PrometheusError):
    """Prometheus answered, but not with an instant vector of per-pod samples."""


class DuplicateSeriesError(PrometheusError):
    """The query returned more than one series for one pod, so its value is ambiguous."""


@dataclass(frozen=True)
class InstantAnswer:
    """The usable part of an instant vector.

    ``duplicates`` counts the series of each pod that had more than one; those pods have no
    value in ``values`` (an ambiguous value is no data, and no data never condemns a pod).
    """

    values: dict[PodRef, float]
    duplicates: dict[PodRef, int] = field(default_factory=dict)


@dataclass(frozen=True)
class QueryResult:
    """One query's answer, or the error that stands in for it."""

    promql: str
    seconds: float
    values: dict[PodRef, float] = field(default_factory=dict)
    duplicates: dict[PodRef, int] = field(default_factory=dict)
    error: PrometheusError | None = None

    @property
    def unreachable(self) -> bool:
        return isinstance(self.error, PrometheusUnreachable)


@dataclass(frozen=True)
class FleetSnapshot:
    """Every signal for every pod, as of one moment.

    ``results`` holds each signal label's own query result; ``errors`` is the short text of the
    failed ones. A caller judges each deployment by ``problem_for`` with the labels and pods
    that deployment uses, so a failing query marks only the deployments that use it.
    """

    at: float
    signals: dict[str, dict[PodRef, float]] = field(default_factory=dict)
    sample_time: dict[PodRef, float] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    durations: dict[str, float] = field(default_factory=dict)
    results: dict[str, QueryResult] = field(default_factory=dict)
    unreachable: bool = False
    queries: int = 0

    def newest_sample(self) -> float | None:
        return max(self.sample_time.values(), default=None)

    def problem_for(
        self, labels: Iterable[str], pods: Iterable[PodRef]
    ) -> tuple[str, PrometheusError] | None:
        """The first reason these signals cannot be trusted for these pods: the label whose
        query is at fault and why, or None.

        A query's own error comes first; then a pod of this deployment with several series in
        a query it uses (other deployments' duplicate pods do not count).
        """
        wanted = [label for label in labels if label in self.results]
        for label in wanted:
            error = self.results[label].error
            if error is not None:
                return label, error
        refs = set(pods)
        for label in wanted:
            result = self.results[label]
            for ref in sorted(refs.intersection(result.duplicates)):
                return label, DuplicateSeriesError(
                    f"it returned {result.duplicates[ref]} series for pod {ref[0]}/{ref[1]}; "
                    "aggregate it to one series per pod, e.g. max by (namespace, pod) (...)"
                )
        return None


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
        # Our own session, so the CA bundle is set through the client's constructor.
        session = requests.Session()
        session.verify = (
            str(settings.prometheus_ca_file)
            if settings.prometheus_ca_file is not None and settings.prometheus_tls_verify
            else settings.prometheus_tls_verify
        )
        self.client = PrometheusConnect(
            url=settings.prometheus_url,
            headers=headers or None,
            disable_ssl=not settings.prometheus_tls_verify,
            auth=auth,
            session=session,
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
        self._timeout = settings.query_timeout_s
        self._freshness = settings.freshness_query
        self.evaluation_time: float | None = None

    def query_now(self, promql: str) -> InstantAnswer:
        """One instant query; series without namespace and pod labels are ignored.

        ``evaluation_time`` (seconds) pins the query to a past instant instead of "now".
        Raises a ``PrometheusError``; nothing else.
        """
        params = None if self.evaluation_time is None else {"time": f"{self.evaluation_time:.3f}"}
        try:
            result = self.client.custom_query(query=promql, params=params)
        except requests.exceptions.ConnectionError as error:
            raise PrometheusUnreachable(_short(error)) from error
        except requests.exceptions.Timeout as error:
            raise QueryTimeoutError("query timed out") from error
        except (requests.exceptions.JSONDecodeError, KeyError, TypeError) as error:
            # the body is not the API's JSON
            raise UnexpectedAnswerError(f"not a Prometheus API answer: {_short(error)}") from error
        except (PrometheusApiClientException, requests.RequestException, ValueError) as error:
            raise QueryRejectedError(_short(error)) from error
        return parse_instant_vector(result)

    async def _timed(self, promql: str) -> QueryResult:
        started = time.perf_counter()
        try:
            answer = await asyncio.wait_for(
                asyncio.to_thread(self.query_now, promql), timeout=self._timeout
            )
        except TimeoutError:
            error: PrometheusError = QueryTimeoutError("query timed out")
        except PrometheusError as raised:
            error = raised
        except Exception as unexpected:  # one query's fault stays with it
            log.warning("query %.80s failed unexpectedly", promql, exc_info=True)
            error = PrometheusError(f"unexpected {type(unexpected).__name__}: {_short(unexpected)}")
        else:
            return QueryResult(
                promql, time.perf_counter() - started, answer.values, answer.duplicates
            )
        return QueryResult(promql, time.perf_counter() - started, error=error)

    async def results(self, queries: Iterable[str]) -> dict[str, QueryResult]:
        """Run each distinct query once, concurrently; every query gets a result, none raises."""
        texts = list(dict.fromkeys(queries))
        outcomes = await asyncio.gather(*(self._timed(text) for text in texts))
        return dict(zip(texts, outcomes, strict=True))

    async def snapshot(self, queries: Mapping[str, str]) -> FleetSnapshot:
        """Run each distinct query once; signals sharing a query share its answer."""
        by_query: dict[str, list[str]] = {}
        for signal, promql in queries.items():
            by_query.setdefault(promql, []).append(signal)
        by_query.setdefault(self._freshness, []).append("_freshness")
        outcomes = await self.results(by_query)
        snapshot = FleetSnapshot(at=time.time(), queries=len(outcomes))
        for text, outcome in outcomes.items():
            if outcome.duplicates:
                log.warning(
                    "query %.80s returned several series for %d pods (%s); "
                    "those pods have no value this cycle",
                    text,
                    len(outcome.duplicates),
                    ", ".join(f"{ns}/{pod}" for ns, pod in sorted(outcome.duplicates)[:3]),
                )
            for signal in by_query[text]:
                snapshot.durations[signal] = outcome.seconds
                snapshot.results[signal] = outcome
                if outcome.error is not None:
                    snapshot.errors[signal] = str(outcome.error)
                elif signal == "_freshness":
                    snapshot.sample_time.update(outcome.values)
                else:
                    snapshot.signals[signal] = outcome.values
        if all(outcome.unreachable for outcome in outcomes.values()):
            return FleetSnapshot(
                at=snapshot.at,
                errors=snapshot.errors,
                durations=snapshot.durations,
                results=snapshot.results,
                unreachable=True,
                queries=len(outcomes),
            )
        return snapshot


_SHAPE_FIXES = {
    "scalar": "it must return an instant vector with namespace and pod labels, "
    "e.g. a metric selector or an aggregation by (namespace, pod)",
    "string": "it must return an instant vector with namespace and pod labels",
    "matrix": "a range selector such as [5m] needs a function around it, "
    "e.g. max_over_time(...[5m])",
    "histogram": "native histograms need histogram_quantile, histogram_count or histogram_sum",
}


def parse_instant_vector(result: object) -> InstantAnswer:
    """The per-pod values of an instant query's ``data.result``; ``UnexpectedAnswerError`` if the
    answer is not an instant vector of plain samples."""
    if not isinstance(result, list):
        raise UnexpectedAnswerError(f"answered {type(result).__name__}, not a list of series")
    if len(result) == 2 and not isinstance(result[0], dict):  # [time, "value"]
        kind = "scalar" if _is_number(result[1]) else "string"
        raise UnexpectedAnswerError(f"answered a {kind}; {_SHAPE_FIXES[kind]}")
    values: dict[PodRef, float] = {}
    counts: dict[PodRef, int] = {}
    for series in result:
        if not isinstance(series, dict):
            raise UnexpectedAnswerError("answered something that is not a series")
        if "value" not in series:
            if "values" in series:
                raise UnexpectedAnswerError(f"answered a range vector; {_SHAPE_FIXES['matrix']}")
            if "histogram" in series:
                raise UnexpectedAnswerError(
                    f"answered native histograms; {_SHAPE_FIXES['histogram']}"
                )
            raise UnexpectedAnswerError("answered a series without a value")
        value = _sample_value(series["value"])
        ref = _pod_ref(series)
        if ref is None:
            continue
        counts[ref] = counts.get(ref, 0) + 1
        if math.isfinite(value):
            values[ref] = value
    duplicates = {ref: count for ref, count in counts.items() if count > 1}
    for ref in duplicates:
        values.pop(ref, None)
    return InstantAnswer(values, duplicates)


def _sample_value(sample: object) -> float:
    if not isinstance(sample, list | tuple) or len(sample) != 2:
        raise UnexpectedAnswerError("answered a sample that is not [time, value]")
    if not _is_number(sample[1]):
        raise UnexpectedAnswerError(
            f"answered a sample value that is not a number: {sample[1]!r:.40}"
        )
    return float(sample[1])


def _is_number(value: object) -> bool:
    if not isinstance(value, str | int | float) or isinstance(value, bool):
        return False
    try:
        float(value)
    except (ValueError, OverflowError):
        return False
    return True


def _short(error: BaseException) -> str:
    text = str(error) or type(error).__name__
    return text if len(text) < 300 else text[:297] + "..."


def range_series(
    reader: PrometheusReader, promql: str, start: float, end: float, step_s: float
) -> dict[PodRef, list[tuple[float, float]]]:
    """A range query: every pod's points between ``start`` and ``end`` (blocking).

    Pods with more than one series are left out, as in ``query_now``; an answer that is not a
    range vector raises ``UnexpectedAnswerError``.
    """
    from datetime import UTC, datetime  # noqa: PLC0415

    try:
        result = reader.client.custom_query_range(
            query=promql,
            start_time=datetime.fromtimestamp(start, tz=UTC),
            end_time=datetime.fromtimestamp(end, tz=UTC),
            step=f"{max(1, round(step_s))}s",
        )
    except requests.exceptions.ConnectionError as error:
        raise PrometheusUnreachable(_short(error)) from error
    except (requests.exceptions.JSONDecodeError, KeyError, TypeError) as error:
        raise UnexpectedAnswerError(f"not a Prometheus API answer: {_short(error)}") from error
    except (PrometheusApiClientException, requests.RequestException, ValueError) as error:
        raise QueryRejectedError(_short(error)) from error
    return parse_range_vector(result)


def parse_range_vector(result: object) -> dict[PodRef, list[tuple[float, float]]]:
    if not isinstance(result, list):
        raise UnexpectedAnswerError(f"answered {type(result).__name__}, not a list of series")
    series: dict[PodRef, list[tuple[float, float]]] = {}
    duplicated: set[PodRef] = set()
    for item in result:
        if not isinstance(item, dict) or not isinstance(item.get("values"), list):
            raise UnexpectedAnswerError("answered something that is not a range vector")
        ref = _pod_ref(item)
        if ref is None:
            continue
        points = [(_sample_time(sample), _sample_value(sample)) for sample in item["values"]]
        if ref in series:
            duplicated.add(ref)
        series[ref] = [(t, v) for t, v in points if math.isfinite(v)]
    for ref in duplicated:
        del series[ref]
    return series


def _sample_time(sample: object) -> float:
    _sample_value(sample)  # checks the shape and the value
    assert isinstance(sample, list | tuple)
    if not _is_number(sample[0]):
        raise UnexpectedAnswerError(
            f"answered a sample time that is not a number: {sample[0]!r:.40}"
        )
    return float(sample[0])


def _pod_ref(series: dict[str, Any]) -> PodRef | None:
    labels = series.get("metric")
    if not isinstance(labels, dict):
        return None
    namespace, pod = labels.get("namespace"), labels.get("pod")
    if isinstance(namespace, str) and isinstance(pod, str) and namespace and pod:
        return (namespace, pod)
    return None
