"""Prometheus down, slow, or answering garbage, against real sockets: the operator's fleet cycle
(``FleetController`` with the real ``PrometheusReader``) over the in-memory API server. Every
cycle must end with no verdict, ``MetricsAvailable`` False with a reason, and nothing done to
any pod."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

from infercycle.cycle.controller import FleetController
from infercycle.prom.reader import PrometheusReader
from infercycle.settings import OperatorSettings
from tests.faults.local import serve
from tests.faults.outcome import FaultResult
from tests.faults.recycle import PODS, Scenario, new_world
from tests.unit.cycle.fakes import NAME, NAMESPACE, SERVING, Clock

QUERY_TIMEOUT_S = 1.0
CYCLES = 3


def _answer(kind: str, result: object) -> bytes:
    return json.dumps(
        {"status": "success", "data": {"resultType": kind, "result": result}}
    ).encode()


def _sample(name: str, value: str, **labels: str) -> dict[str, Any]:
    return {"metric": {"namespace": NAMESPACE, "pod": name, **labels}, "value": [1, value]}


@dataclass(frozen=True)
class Answer:
    """What the stand-in Prometheus does with every query."""

    name: str
    body: bytes = b""
    status: int = 200
    delay_s: float = 0.0
    hang_up: bool = False  # close the connection without an answer
    truncate: bool = False  # promise the whole body, send half, close


ANSWERS = (
    Answer(
        "a range vector",
        _answer(
            "matrix",
            [
                {"metric": {"namespace": NAMESPACE, "pod": p}, "values": [[1, "1"], [2, "2"]]}
                for p in PODS
            ],
        ),
    ),
    Answer("a scalar", _answer("scalar", [1, "1700000000"])),
    Answer("a string", _answer("string", [1, "text"])),
    Answer("HTML", b"<html><body>502 Bad Gateway</body></html>"),
    Answer("truncated JSON", _answer("vector", [_sample(p, "1") for p in PODS]), truncate=True),
    Answer(
        "duplicate series",
        _answer(
            "vector",
            [_sample(p, str(n), container=c) for p in PODS for n, c in ((1, "a"), (2, "b"))],
        ),
    ),
    Answer("values that are not numbers", _answer("vector", [_sample(p, "lots") for p in PODS])),
    Answer(
        "an error status",
        json.dumps({"status": "error", "errorType": "bad_data", "error": "parse error"}).encode(),
        status=400,
    ),
    Answer("HTTP 503", b"overloaded", status=503),
    Answer("a hang-up", hang_up=True),
    Answer("slow (beyond the query timeout)", _answer("vector", []), delay_s=2.5),
)


class _Handler(BaseHTTPRequestHandler):
    answer: ClassVar[Answer]

    def do_GET(self) -> None:
        answer = type(self).answer
        time.sleep(answer.delay_s)
        if answer.hang_up:
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        body = answer.body
        self.send_response(answer.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        with suppress(BrokenPipeError, ConnectionResetError):  # the reader may have given up
            self.wfile.write(body[: len(body) // 2] if answer.truncate else body)
        self.close_connection = answer.truncate

    def log_message(self, *_: object) -> None:
        return


@contextmanager
def serving(answer: Answer) -> Iterator[str]:
    handler = type("Handler", (_Handler,), {"answer": answer})
    with serve(ThreadingHTTPServer(("127.0.0.1", 0), handler)) as url:
        yield url


def closed_port_url() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{probe.getsockname()[1]}"


async def cycles_against(url: str, name: str) -> FaultResult:
    """Run the fleet cycle ``CYCLES`` times against Prometheus at ``url``; the counts, and the
    MetricsAvailable condition as a finding."""
    clock = Clock()
    kube, agents, _ = new_world(Scenario("InPlace"))
    settings = OperatorSettings(prometheus_url=url, query_timeout=f"{QUERY_TIMEOUT_S:.0f}s")
    controller = FleetController(
        settings,
        kube,  # type: ignore[arg-type]
        PrometheusReader(settings),
        agents=agents,
        clock=clock,
    )
    controller.registry.deployments[(NAMESPACE, NAME)] = kube.body
    for raw in kube.pods.values():
        controller.registry.put_pod(raw, deleted=False)
    result = FaultResult(name, restarted_twice=None, sessions_lost=None)
    for _ in range(CYCLES):
        await controller.run_cycle()
        clock.advance(30)
        result.runs += 1
        result.faults += 1
    acted = [call for call in kube.calls if call[0] != "serving" or call[2] != "true"]
    result.beyond_guards = len(acted) + len(kube.history) + int(kube.operation is not None)
    result.left_drained = sum(
        1 for p in kube.pods.values() if p["metadata"]["labels"].get(SERVING) != "true"
    )
    status = kube.body.get("status") or {}
    condition = next(
        (c for c in status.get("conditions", []) if c["type"] == "MetricsAvailable"), None
    )
    if condition is None or condition["status"] != "False":
        result.beyond_guards += 1
        result.findings.append(f"{name}: MetricsAvailable is {condition}")
    else:
        result.findings.append(f"{name}: {condition['reason']}: {condition['message'][:120]}")
    return result


async def prometheus_faults() -> FaultResult:
    total = FaultResult(
        "Prometheus down, slow or answering garbage", restarted_twice=None, sessions_lost=None
    )
    total.add(await cycles_against(closed_port_url(), "down (connection refused)"))
    for answer in ANSWERS:
        with serving(answer) as url:
            total.add(await cycles_against(url, answer.name))
    return total
