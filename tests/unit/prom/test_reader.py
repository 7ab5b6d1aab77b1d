"""The Prometheus reader against real sockets: a closed port and a small HTTP server."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import pytest

from infercycle.prom.reader import (
    DuplicateSeriesError,
    InstantAnswer,
    PrometheusReader,
    UnexpectedAnswerError,
    parse_instant_vector,
    parse_range_vector,
)
from infercycle.settings import OperatorSettings


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_a_refused_connection_is_unreachable_at_once() -> None:
    url = f"http://127.0.0.1:{_closed_port()}"
    reader = PrometheusReader(OperatorSettings(prometheus_url=url, query_timeout="10s"))
    started = time.perf_counter()
    snapshot = asyncio.run(reader.snapshot({"memory": "up"}))
    assert snapshot.unreachable
    assert "Connection refused" in snapshot.errors["memory"]
    assert time.perf_counter() - started < 3.0  # not the client's back-off outlasting a timeout


def _answer(kind: str, result: object) -> str:
    return json.dumps({"status": "success", "data": {"resultType": kind, "result": result}})


def _series(pod: str, value: str, **labels: str) -> dict[str, object]:
    return {"metric": {"namespace": "ml", "pod": pod, **labels}, "value": [1, value]}


# What the stand-in Prometheus answers to particular queries (every other query: a vector).
_ANSWERS = {
    "up[5m]": _answer(
        "matrix", [{"metric": {"namespace": "ml", "pod": "llm-0"}, "values": [[1, "1"], [2, "2"]]}]
    ),
    "time()": _answer("scalar", [1, "1700000000"]),
    '"text"': _answer("string", [1, "text"]),
    "garbage": "<html>not json</html>",
    "no data": json.dumps({"status": "success"}),
    "wrong value": _answer("vector", [_series("llm-0", "lots")]),
    "doubled": _answer(
        "vector",
        [
            _series("llm-0", "1", container="a"),
            _series("llm-0", "2", container="b"),
            _series("llm-1", "3"),
        ],
    ),
}


class _Handler(BaseHTTPRequestHandler):
    seen: list[dict[str, list[str]]] = []
    failures_left = 0

    def do_GET(self) -> None:
        query = parse_qs(urlparse(self.path).query)
        type(self).seen.append(query)
        if type(self).failures_left > 0:
            type(self).failures_left -= 1
            self.send_response(503)
            self.end_headers()
            return
        promql = query.get("query", [""])[0]
        if promql in _ANSWERS:
            body = _ANSWERS[promql]
        else:
            result = [
                {"metric": {"namespace": "ml", "pod": "llm-0"}, "value": [1, "1.5"]},
                {"metric": {"namespace": "ml", "pod": "llm-1"}, "value": [1, "NaN"]},
                {"metric": {"job": "no-pod-label"}, "value": [1, "7"]},
            ]
            body = _answer("vector", result)
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body.encode())

    def log_message(self, *_: object) -> None:
        return


@pytest.fixture
def prometheus() -> Iterator[str]:
    _Handler.seen = []
    _Handler.failures_left = 0
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_answers_keep_finite_values_of_pods_only(prometheus: str) -> None:
    reader = PrometheusReader(OperatorSettings(prometheus_url=prometheus))
    reader.evaluation_time = 1_700_000_000.0
    assert reader.query_now("up").values == {("ml", "llm-0"): 1.5}
    assert _Handler.seen[-1]["time"] == ["1700000000.000"]


def test_one_retry_on_a_passing_server_error(prometheus: str) -> None:
    reader = PrometheusReader(OperatorSettings(prometheus_url=prometheus))
    _Handler.failures_left = 1
    assert reader.query_now("up").values == {("ml", "llm-0"): 1.5}
    _Handler.failures_left = 5
    snapshot = asyncio.run(reader.snapshot({"memory": "up"}))
    assert not snapshot.unreachable
    assert "memory" in snapshot.errors
    assert _Handler.failures_left == 5 - 2 * 2  # two queries (memory, freshness), two tries each


@pytest.mark.parametrize(
    ("promql", "expected"),
    [
        ("up[5m]", "answered a range vector; a range selector such as [5m] needs a function"),
        ("time()", "answered a scalar; it must return an instant vector"),
        ('"text"', "answered a string; it must return an instant vector"),
        ("garbage", "not a Prometheus API answer"),
        ("no data", "not a Prometheus API answer"),
        ("wrong value", "answered a sample value that is not a number"),
    ],
)
def test_an_answer_of_the_wrong_shape_fails_its_own_query_only(
    prometheus: str, promql: str, expected: str
) -> None:
    reader = PrometheusReader(OperatorSettings(prometheus_url=prometheus))
    snapshot = asyncio.run(reader.snapshot({"memory": "up", "custom": promql}))
    assert not snapshot.unreachable
    assert expected in snapshot.errors["custom"]
    assert isinstance(snapshot.results["custom"].error, UnexpectedAnswerError)
    assert snapshot.signals["memory"] == {("ml", "llm-0"): 1.5}
    assert "memory" not in snapshot.errors
    assert snapshot.sample_time == {("ml", "llm-0"): 1.5}  # the freshness query still answered
    ml_pods = [("ml", "llm-0"), ("ml", "llm-1")]
    problem = snapshot.problem_for(["memory", "custom"], ml_pods)
    assert problem is not None
    assert problem[0] == "custom"
    assert isinstance(problem[1], UnexpectedAnswerError)
    assert snapshot.problem_for(["memory"], ml_pods) is None


def test_several_series_for_one_pod_are_reported_and_give_that_pod_no_value(
    prometheus: str,
) -> None:
    reader = PrometheusReader(OperatorSettings(prometheus_url=prometheus))
    answer = reader.query_now("doubled")
    assert answer.values == {("ml", "llm-1"): 3.0}
    assert answer.duplicates == {("ml", "llm-0"): 2}
    snapshot = asyncio.run(reader.snapshot({"memory": "doubled"}))
    assert "memory" not in snapshot.errors
    problem = snapshot.problem_for(["memory"], [("ml", "llm-0"), ("ml", "llm-1")])
    assert problem is not None
    label, error = problem
    assert label == "memory"
    assert isinstance(error, DuplicateSeriesError)
    assert "returned 2 series for pod ml/llm-0" in str(error)
    assert "max by (namespace, pod)" in str(error)
    # A deployment whose pods have one series each is not affected.
    assert snapshot.problem_for(["memory"], [("ml", "llm-1"), ("other", "x-0")]) is None


def test_a_failed_query_is_a_problem_only_for_the_labels_that_use_it(prometheus: str) -> None:
    reader = PrometheusReader(OperatorSettings(prometheus_url=prometheus))
    results = asyncio.run(reader.results(["up", "time()", "up"]))
    assert list(results) == ["up", "time()"]  # each distinct query once
    assert results["up"].error is None
    assert isinstance(results["time()"].error, UnexpectedAnswerError)


def test_a_range_answer_keeps_one_series_per_pod_and_refuses_other_shapes() -> None:
    ok = [
        {"metric": {"namespace": "ml", "pod": "llm-0"}, "values": [[1, "1"], [2, "NaN"]]},
        {"metric": {"namespace": "ml", "pod": "llm-1"}, "values": [[1, "5"]]},
        {"metric": {"namespace": "ml", "pod": "llm-1"}, "values": [[1, "6"]]},
    ]
    assert parse_range_vector(ok) == {("ml", "llm-0"): [(1.0, 1.0)]}
    with pytest.raises(UnexpectedAnswerError, match="not a range vector"):
        parse_range_vector([_series("llm-0", "1")])
    with pytest.raises(UnexpectedAnswerError, match="not a list"):
        parse_range_vector({"resultType": "scalar"})
    with pytest.raises(UnexpectedAnswerError, match="not a number"):
        parse_range_vector([{"metric": {"namespace": "ml", "pod": "a"}, "values": [["x", "1"]]}])


def test_instant_vector_parsing_refuses_native_histograms_and_odd_samples() -> None:
    histogram = {"metric": {"namespace": "ml", "pod": "a"}, "histogram": [1, {"count": "2"}]}
    with pytest.raises(UnexpectedAnswerError, match="native histograms"):
        parse_instant_vector([histogram])
    with pytest.raises(UnexpectedAnswerError, match=r"not \[time, value\]"):
        parse_instant_vector([{"metric": {}, "value": [1]}])
    with pytest.raises(UnexpectedAnswerError, match="not a series"):
        parse_instant_vector([1, 2, 3])
    assert parse_instant_vector([]) == InstantAnswer({})
