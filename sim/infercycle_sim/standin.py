"""A stand-in for an inference server, run as a real process in tests, demos and benchmarks.

    python -m infercycle_sim.standin --port 8000 [--session-dir DIR] [--leak-mb-per-min 50]
        [--ignore-sigterm] [--startup-delay 5] [--latency-ms 2]
    python -m infercycle_sim.standin supervise [--restart-delay 0.5] [--state-file F] -- CMD...

The server keeps sessions (a history of turns and token ids per session id) and exports metrics
under vLLM's names. ``GET /sessions`` returns the session table and ``PUT /sessions`` replaces it:
the session hook of the recycle agent. With ``--session-dir`` the sessions live in files, one per
session, read and written on every request, so files put back while it runs are seen at once.

``supervise`` plays the kubelet: it restarts the command whenever it exits, counts the restarts,
prints a line per restart and keeps ``{"restarts", "pid", "lastExitCode"}`` in the state file.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import quote, unquote

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)

from infercycle.agent import jsonlog

log = logging.getLogger("infercycle.standin")
MODEL_NAME = "standin"
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_MAX_SESSION_ID = 200
_PAGE = 4096
_WORDS = ("the", "model", "answers", "with", "tokens", "from", "a", "stand", "in", "server")

Session = dict[str, Any]


class SessionTable:
    """Sessions in memory, or one JSON file per session in a directory."""

    def __init__(self, directory: Path | None) -> None:
        self.directory = directory
        self._memory: dict[str, Session] = {}
        if directory is not None:
            directory.mkdir(parents=True, exist_ok=True)

    def _file(self, session_id: str) -> Path:
        assert self.directory is not None
        return self.directory / f"{quote(session_id, safe='')}.json"

    def get(self, session_id: str) -> Session | None:
        if self.directory is None:
            return self._memory.get(session_id)
        try:
            loaded: Session = json.loads(self._file(session_id).read_bytes())
        except FileNotFoundError:
            return None
        return loaded

    def put(self, session_id: str, session: Session) -> None:
        if self.directory is None:
            self._memory[session_id] = session
            return
        _write_atomically(self._file(session_id), json.dumps(session).encode())

    def all(self) -> dict[str, Session]:
        if self.directory is None:
            return dict(self._memory)
        table: dict[str, Session] = {}
        for path in sorted(self.directory.glob("*.json")):
            with contextlib.suppress(FileNotFoundError):
                table[unquote(path.name.removesuffix(".json"))] = json.loads(path.read_bytes())
        return table

    def replace(self, table: dict[str, Session]) -> None:
        if self.directory is None:
            self._memory = dict(table)
            return
        for path in self.directory.glob("*.json"):
            path.unlink(missing_ok=True)
        for session_id, session in table.items():
            self.put(session_id, session)

    def total_tokens(self) -> int:
        if self.directory is None:
            return sum(len(session.get("tokens", ())) for session in self._memory.values())
        return sum(len(session.get("tokens", ())) for session in self.all().values())


def _write_atomically(path: Path, data: bytes) -> None:
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_bytes(data)
    temporary.replace(path)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        self.latency = Histogram(
            "vllm:e2e_request_latency_seconds",
            "End-to-end request latency in seconds.",
            ["model_name"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.running = Gauge(
            "vllm:num_requests_running",
            "Requests being processed.",
            ["model_name"],
            registry=self.registry,
        )
        self.kv_cache = Gauge(
            "vllm:kv_cache_usage_perc",
            "KV cache usage, 1 means full.",
            ["model_name"],
            registry=self.registry,
        )
        self.success = Counter(
            "vllm:request_success",
            "Requests finished successfully.",
            ["model_name", "finished_reason"],
            registry=self.registry,
        )
        self.running.labels(MODEL_NAME).set(0)
        self.kv_cache.labels(MODEL_NAME).set(0)


class StandIn:
    def __init__(self, args: argparse.Namespace) -> None:
        self.sessions = SessionTable(Path(args.session_dir) if args.session_dir else None)
        self.metrics = Metrics()
        self.startup_delay: float = args.startup_delay
        self.latency: float = args.latency_ms / 1000
        self.kv_capacity: int = args.kv_capacity_tokens
        self.leak_bytes_per_second = int(args.leak_mb_per_min * (1 << 20) / 60)
        self.leaked: list[bytearray] = []
        self.ready = False

    def app(self) -> web.Application:
        app = web.Application(client_max_size=1 << 30)
        app.router.add_get("/health", self.health)
        app.router.add_get("/metrics", self.metrics_text)
        app.router.add_post("/v1/completions", self.complete)
        app.router.add_post("/generate", self.complete)
        app.router.add_get("/sessions", self.get_sessions)
        app.router.add_put("/sessions", self.put_sessions)
        app.router.add_post("/sessions", self.put_sessions)
        return app

    def _not_ready(self) -> web.Response:
        return web.json_response({"error": "starting", "message": "still starting up"}, status=503)

    async def health(self, _request: web.Request) -> web.Response:
        if not self.ready:
            return self._not_ready()
        return web.json_response({"status": "ok", "pid": os.getpid()})

    async def metrics_text(self, _request: web.Request) -> web.Response:
        body = generate_latest(self.metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def complete(self, request: web.Request) -> web.Response:
        if not self.ready:
            return self._not_ready()
        started = time.perf_counter()
        running = self.metrics.running.labels(MODEL_NAME)
        running.inc()
        try:
            body = await request.json()
            if not isinstance(body, dict):
                raise web.HTTPBadRequest(text="the body must be a JSON object")
            session_id = str(body.get("session_id") or body.get("session") or "default")
            if len(session_id) > _MAX_SESSION_ID:
                raise web.HTTPBadRequest(text="session_id is too long")
            prompt = str(body.get("prompt", ""))
            max_tokens = max(1, min(int(body.get("max_tokens", 16)), 4096))
            await asyncio.sleep(self.latency)
            completion = _complete(prompt, max_tokens)
            now = time.time()
            session = self.sessions.get(session_id) or {
                "id": session_id,
                "created": now,
                "turns": 0,
                "history": [],
                "tokens": [],
            }
            session["turns"] += 1
            session["updated"] = now
            session["history"].append({"prompt": prompt, "completion": completion})
            session["tokens"].extend(_token_ids(prompt + completion))
            self.sessions.put(session_id, session)
            self.metrics.kv_cache.labels(MODEL_NAME).set(
                min(1.0, self.sessions.total_tokens() / self.kv_capacity)
            )
        finally:
            running.dec()
        elapsed = time.perf_counter() - started
        self.metrics.latency.labels(MODEL_NAME).observe(elapsed)
        self.metrics.success.labels(MODEL_NAME, "length").inc()
        return web.json_response(
            {
                "id": f"cmpl-{hashlib.sha256(f'{session_id}{now}'.encode()).hexdigest()[:16]}",
                "object": "text_completion",
                "created": int(now),
                "model": MODEL_NAME,
                "session_id": session_id,
                "turns": session["turns"],
                "choices": [{"index": 0, "text": completion, "finish_reason": "length"}],
                "usage": {
                    "prompt_tokens": len(prompt.split()),
                    "completion_tokens": max_tokens,
                    "total_tokens": len(session["tokens"]),
                },
            }
        )

    async def get_sessions(self, _request: web.Request) -> web.Response:
        if not self.ready:
            return self._not_ready()
        table = self.sessions.all()
        return web.Response(
            body=json.dumps({"sessions": table, "count": len(table)}).encode(),
            content_type="application/json",
        )

    async def put_sessions(self, request: web.Request) -> web.Response:
        if not self.ready:
            return self._not_ready()
        try:
            body = json.loads(await request.read())
        except ValueError:
            raise web.HTTPBadRequest(text="the body is not JSON") from None
        table = body.get("sessions") if isinstance(body, dict) else None
        if not isinstance(table, dict):
            raise web.HTTPBadRequest(text='the body must be {"sessions": {id: session, ...}}')
        self.sessions.replace(table)
        self.metrics.kv_cache.labels(MODEL_NAME).set(
            min(1.0, self.sessions.total_tokens() / self.kv_capacity)
        )
        log.info("session table replaced", extra={"fields": {"sessions": len(table)}})
        return web.json_response({"sessions": len(table)})

    async def leak(self) -> None:
        """Keep allocating and touching memory, so that the resident set really grows."""
        while True:
            await asyncio.sleep(1.0)
            block = bytearray(self.leak_bytes_per_second)
            block[::_PAGE] = b"\x01" * len(range(0, len(block), _PAGE))
            self.leaked.append(block)


def _complete(prompt: str, max_tokens: int) -> str:
    seed = hashlib.sha256(prompt.encode()).digest()
    return " ".join(_WORDS[seed[index % len(seed)] % len(_WORDS)] for index in range(max_tokens))


def _token_ids(text: str) -> list[int]:
    return [
        int.from_bytes(hashlib.blake2s(word.encode(), digest_size=2).digest())
        for word in text.split()
    ]


async def serve(args: argparse.Namespace) -> int:
    standin = StandIn(args)
    runner = web.AppRunner(standin.app(), handle_signals=False, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, args.host, args.port).start()
    log.info(
        "stand-in listening",
        extra={"fields": {"port": args.port, "pid": os.getpid(), "sessionDir": args.session_dir}},
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_sigterm() -> None:
        if args.ignore_sigterm:
            log.warning("ignoring SIGTERM (--ignore-sigterm)")
        else:
            stop.set()

    loop.add_signal_handler(signal.SIGTERM, on_sigterm)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    leak = asyncio.create_task(standin.leak()) if standin.leak_bytes_per_second > 0 else None
    if args.startup_delay > 0:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), args.startup_delay)
    standin.ready = True
    log.info("stand-in ready", extra={"fields": {"pid": os.getpid()}})
    await stop.wait()
    log.info("stand-in stopping", extra={"fields": {"pid": os.getpid()}})
    if leak is not None:
        leak.cancel()
    await runner.cleanup()
    return 0


# The supervisor


def _write_state(path: Path | None, state: dict[str, Any]) -> None:
    if path is not None:
        _write_atomically(path, json.dumps(state).encode())


class _StopRequest:
    """Set by SIGTERM or SIGINT, which are passed on to the child."""

    def __init__(self) -> None:
        self.child: subprocess.Popen[bytes] | None = None
        self.since: float | None = None

    def is_set(self) -> bool:
        return self.since is not None

    def __call__(self, signum: int, _frame: object) -> None:
        if self.since is None:
            self.since = time.monotonic()
        if self.child is not None and self.child.poll() is None:
            self.child.send_signal(signum)


@contextlib.contextmanager
def _stop_requests() -> Iterator[_StopRequest]:
    request = _StopRequest()
    previous = {
        signum: signal.signal(signum, request) for signum in (signal.SIGTERM, signal.SIGINT)
    }
    try:
        yield request
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def supervise(command: list[str], restart_delay: float, state_file: Path | None) -> int:
    """Run ``command`` and start it again whenever it exits, until told to stop."""
    restarts = 0
    last_exit: int | None = None
    with _stop_requests() as stop:
        while not stop.is_set():
            child = subprocess.Popen(command)  # noqa: S603 - the caller's own command
            stop.child = child
            _write_state(
                state_file, {"restarts": restarts, "pid": child.pid, "lastExitCode": last_exit}
            )
            print(f"supervisor: started pid={child.pid} restarts={restarts}", flush=True)
            while (code := child.poll()) is None:
                if stop.since is not None and time.monotonic() - stop.since > 5:
                    child.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    child.wait(timeout=0.1)
            last_exit = code
            if stop.is_set():
                break
            restarts += 1
            _write_state(state_file, {"restarts": restarts, "pid": None, "lastExitCode": last_exit})
            print(
                f"supervisor: child exited code={last_exit}; restarting (restarts={restarts})",
                flush=True,
            )
            deadline = time.monotonic() + restart_delay
            while not stop.is_set() and time.monotonic() < deadline:
                time.sleep(min(0.02, restart_delay))
    print(f"supervisor: stopped restarts={restarts}", flush=True)
    return 0


def _run_again_without_command(
    command: list[str], restart_delay: float, state_file: Path | None
) -> NoReturn:
    """Exec this supervisor again with the command in a file instead of on its command line.

    A process matcher that looks for the server by its command line then finds the server and
    not the supervisor whose arguments would otherwise contain the same text.
    """
    handle, name = tempfile.mkstemp(prefix="standin-command-", suffix=".json")
    with os.fdopen(handle, "w") as file:
        json.dump(command, file)
    again = [sys.executable, "-m", "infercycle_sim.standin", "supervise"]
    again += ["--restart-delay", str(restart_delay), "--command-file", name]
    if state_file is not None:
        again += ["--state-file", str(state_file)]
    os.execv(sys.executable, again)  # noqa: S606 - re-running this very module


def _supervise_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m infercycle_sim.standin supervise")
    parser.add_argument("--restart-delay", type=float, default=0.5, help="seconds before a restart")
    parser.add_argument("--state-file", type=Path, help="JSON file with the restart count and pid")
    parser.add_argument("--command-file", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- then the command to run")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if args.command_file is not None:
        command = json.loads(args.command_file.read_text())
        args.command_file.unlink(missing_ok=True)
        return supervise(command, args.restart_delay, args.state_file)
    if not command:
        parser.error("give the command to supervise after --")
    _run_again_without_command(command, args.restart_delay, args.state_file)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m infercycle_sim.standin",
        description="A stand-in inference server (or, with 'supervise', a restarting supervisor).",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--session-dir", help="keep sessions as files in this directory")
    parser.add_argument("--leak-mb-per-min", type=float, default=0.0, help="memory to leak")
    parser.add_argument("--ignore-sigterm", action="store_true", help="only SIGKILL stops it")
    parser.add_argument("--startup-delay", type=float, default=0.0, help="seconds until ready")
    parser.add_argument("--latency-ms", type=float, default=2.0, help="time per completion")
    parser.add_argument("--kv-capacity-tokens", type=int, default=1_000_000)
    parser.add_argument("--log-level", default="INFO")
    return parser


def main(argv: list[str] | None = None) -> int:
    arguments = sys.argv[1:] if argv is None else argv
    if arguments[:1] == ["supervise"]:
        return _supervise_main(arguments[1:])
    args = build_parser().parse_args(arguments)
    jsonlog.configure(args.log_level, "infercycle")
    return asyncio.run(serve(args))


if __name__ == "__main__":
    raise SystemExit(main())
