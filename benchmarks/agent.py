"""Recycle agent benchmark: checkpoint and restore times, and restart-to-Ready of the stand-in.

    python benchmarks/agent.py [--repeat 3] [--big-mib 100] [--small 10000]

Everything runs as real processes on this machine: the stand-in server under its supervisor and
the agent, talking HTTP on localhost, checkpoints on the local disk (tmp dir, or --work-dir).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

from infercycle.agent.client import AgentClient

PYTHON = sys.executable
TOKEN = "benchmark-token"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def get_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return error.code
    except OSError:
        return 0


def wait_for(url: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while get_status(url) != 200:
        if time.monotonic() > deadline:
            raise SystemExit(f"{url} did not answer 200 within {timeout}s")
        time.sleep(0.01)


def read_state(path: Path) -> dict[str, Any]:
    try:
        loaded: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return loaded


@contextmanager
def running(command: list[str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("ab") as sink:
        process = subprocess.Popen(command, stdout=sink, stderr=sink, start_new_session=True)
    try:
        yield process
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


class Setup:
    """A supervised stand-in and an agent for one source (hook or dir)."""

    def __init__(self, work: Path, source: str, max_size: str = "1Gi") -> None:
        self.work = work
        self.source = source
        self.server_port = free_port()
        self.agent_port = free_port()
        self.state_file = work / "supervisor.json"
        self.sessions_dir = work / "volume" / "sessions"
        self.checkpoint_dir = work / "checkpoints"
        (work / "token").write_text(TOKEN)
        self.max_size = max_size

    @property
    def server_url(self) -> str:
        return f"http://127.0.0.1:{self.server_port}"

    def server_command(self) -> list[str]:
        server = [PYTHON, "-m", "infercycle_sim.standin", "--port", str(self.server_port)]
        server += ["--latency-ms", "0", "--log-level", "WARNING"]
        if self.source == "dir":
            server += ["--session-dir", str(self.sessions_dir)]
        supervise = [PYTHON, "-m", "infercycle_sim.standin", "supervise"]
        supervise += ["--restart-delay", "0", "--state-file", str(self.state_file), "--"]
        return supervise + server

    def agent_command(self) -> list[str]:
        command = [PYTHON, "-m", "infercycle.agent", "--host", "127.0.0.1"]
        command += ["--port", str(self.agent_port), "--token-file", str(self.work / "token")]
        command += ["--checkpoint-dir", str(self.checkpoint_dir), "--max-size", self.max_size]
        command += ["--server-process", f"infercycle_sim.standin --port {self.server_port}"]
        command += ["--poll-interval", "0.02", "--keep", "2", "--log-level", "WARNING"]
        if self.source == "hook":
            command += ["--session-hook", f"{self.server_url}/sessions"]
        else:
            command += ["--session-dir", str(self.sessions_dir)]
        return command

    def client(self) -> AgentClient:
        return AgentClient(f"http://127.0.0.1:{self.agent_port}", TOKEN, timeout=600)

    def server_pid(self) -> int | None:
        pid = read_state(self.state_file).get("pid")
        return int(pid) if pid is not None else None


def small_sessions(count: int) -> dict[str, Any]:
    return {
        f"session-{index:05d}": {
            "id": f"session-{index:05d}",
            "turns": 3,
            "history": [{"prompt": f"question {index}", "completion": "a short answer"}],
            "tokens": list(range(index % 50, index % 50 + 24)),
        }
        for index in range(count)
    }


def big_sessions(total_mib: int, per_session_mib: int = 1) -> dict[str, Any]:
    size = per_session_mib << 20
    return {
        f"big-{index:04d}": {"id": f"big-{index:04d}", "kv": secrets.token_hex(size // 2)}
        for index in range(total_mib // per_session_mib)
    }


def load_state(setup: Setup, sessions: dict[str, Any]) -> int:
    """Put the sessions into the stand-in (hook) or its session dir; the bytes it occupies."""
    if setup.source == "hook":
        body = json.dumps({"sessions": sessions}).encode()
        request = urllib.request.Request(
            f"{setup.server_url}/sessions",
            data=body,
            method="PUT",
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=600) as response:
            assert response.status == 200
        return len(body)
    if setup.sessions_dir.exists():
        shutil.rmtree(setup.sessions_dir)
    setup.sessions_dir.mkdir(parents=True)
    total = 0
    for session_id, session in sessions.items():
        data = json.dumps(session).encode()
        (setup.sessions_dir / f"{session_id}.json").write_bytes(data)
        total += len(data)
    return total


def time_export(url: str) -> float:
    """Seconds the server takes to answer its session hook's GET, without the agent."""
    started = time.perf_counter()
    with urllib.request.urlopen(url, timeout=600) as response:
        response.read()
    return time.perf_counter() - started


def housekeeping_done(setup: Setup) -> bool:
    """Whether the agent deleted what the last checkpoint and restore set aside."""
    trash = list(setup.checkpoint_dir.glob(".trash-*"))
    previous = list(setup.sessions_dir.parent.glob(f".{setup.sessions_dir.name}.old-*"))
    return not trash and not previous


def milliseconds(seconds: float) -> str:
    return f"{seconds * 1000:8.1f} ms"


async def measure_state(
    setup: Setup, label: str, sessions: dict[str, Any], repeat: int
) -> list[str]:
    size = load_state(setup, sessions)
    client = setup.client()
    checkpoints, restores, verify = [], [], []
    for _ in range(repeat):
        await asyncio.to_thread(poll_until, lambda: housekeeping_done(setup))
        started = time.perf_counter()
        result = await client.checkpoint()
        checkpoints.append(time.perf_counter() - started)
        started = time.perf_counter()
        restored = await client.restore()
        restores.append(time.perf_counter() - started)
        verify.append(restored.duration_ms / 1000)
        assert restored.checkpoint_id == result.id, restored
    lines = [
        f"{label:<34} {len(sessions):>6} sessions {size / 2**20:8.1f} MiB   "
        f"checkpoint {milliseconds(statistics.median(checkpoints))}   "
        f"restore {milliseconds(statistics.median(restores))}"
    ]
    if setup.source == "hook":
        exports = [time_export(f"{setup.server_url}/sessions") for _ in range(repeat)]
        lines.append(
            f"{'':<34} of which the server's own GET /sessions {milliseconds(min(exports))} "
            "(best run)"
        )
    return lines


def poll_until(condition: Callable[[], bool], timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit(f"gave up waiting after {timeout}s")
        time.sleep(0.002)


def replaced(setup: Setup, old: int | None) -> bool:
    return setup.server_pid() not in (None, old)


def ready_now(setup: Setup) -> bool:
    return get_status(f"{setup.server_url}/health") == 200


async def measure_restart(setup: Setup, repeat: int) -> list[str]:
    client = setup.client()
    ready, restored = [], []
    for _ in range(repeat):
        old = setup.server_pid()
        started = time.perf_counter()
        await client.restart()
        await asyncio.to_thread(poll_until, partial(replaced, setup, old))
        await asyncio.to_thread(poll_until, partial(ready_now, setup))
        ready.append(time.perf_counter() - started)
        pid = setup.server_pid()
        while True:
            status = await client.status()
            last = status.last_restore
            if last is not None and last.server_pid == pid and status.operation is None:
                break
            await asyncio.sleep(0.005)
        restored.append(time.perf_counter() - started)
    return [
        f"restart -> Ready (/health 200)       median {milliseconds(statistics.median(ready))}"
        f"   max {milliseconds(max(ready))}   ({repeat} restarts, supervisor delay 0)",
        f"restart -> sessions restored (hook)  median {milliseconds(statistics.median(restored))}"
        f"   max {milliseconds(max(restored))}",
    ]


async def run_source(work: Path, source: str, args: argparse.Namespace) -> list[str]:
    setup = Setup(work, source)
    lines = []
    with (
        running(setup.server_command(), work / "standin.log"),
        running(setup.agent_command(), work / "agent.log"),
    ):
        wait_for(f"{setup.server_url}/health")
        wait_for(f"http://127.0.0.1:{setup.agent_port}/healthz")
        lines += await measure_state(
            setup, f"{source}: small sessions", small_sessions(args.small), args.repeat
        )
        lines += await measure_state(
            setup, f"{source}: {args.big_mib} MiB state", big_sessions(args.big_mib), args.repeat
        )
        if source == "hook":
            load_state(setup, small_sessions(100))
            await setup.client().checkpoint()
            lines += await measure_restart(setup, args.restarts)
    return lines


async def main_async(args: argparse.Namespace) -> None:
    base = Path(args.work_dir) if args.work_dir else Path(tempfile.mkdtemp(prefix="agent-bench-"))
    print(f"work dir {base} (checkpoints on its file system); python {sys.version.split()[0]}")
    print(f"{os.cpu_count()} CPUs; median of {args.repeat} runs per figure\n")
    try:
        for source in ("hook", "dir"):
            work = base / source
            work.mkdir(parents=True, exist_ok=True)
            for line in await run_source(work, source, args):
                print(line, flush=True)
    finally:
        if not args.work_dir:
            shutil.rmtree(base, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--restarts", type=int, default=5)
    parser.add_argument("--small", type=int, default=10_000)
    parser.add_argument("--big-mib", type=int, default=100)
    parser.add_argument("--work-dir", help="keep files here instead of a temporary directory")
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
