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

from infercycle.prom.reader import PrometheusReader
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
        result = [
            {"metric": {"namespace": "ml", "pod": "llm-0"}, "value": [1, "1.5"]},
            {"metric": {"namespace": "ml", "pod": "llm-1"}, "value": [1, "NaN"]},
            {"metric": {"job": "no-pod-label"}, "value": [1, "7"]},
        ]
        body = json.dumps({"status": "success", "data": {"resultType": "vector", "result": result}})
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
    assert reader.query_now("up") == {("ml", "llm-0"): 1.5}
    assert _Handler.seen[-1]["time"] == ["1700000000.000"]


def test_one_retry_on_a_passing_server_error(prometheus: str) -> None:
    reader = PrometheusReader(OperatorSettings(prometheus_url=prometheus))
    _Handler.failures_left = 1
    assert reader.query_now("up") == {("ml", "llm-0"): 1.5}
    _Handler.failures_left = 5
    snapshot = asyncio.run(reader.snapshot({"memory": "up"}))
    assert not snapshot.unreachable
    assert "memory" in snapshot.errors
    assert _Handler.failures_left == 5 - 2 * 2  # two queries (memory, freshness), two tries each
