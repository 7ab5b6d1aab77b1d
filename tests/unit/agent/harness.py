"""Real processes for the agent tests: the stand-in server, its supervisor and the agent."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from infercycle.agent.client import AgentClient, AgentStatus

PYTHON = sys.executable
TOKEN = "test-token-6f1d2c"
START_TIMEOUT = 20.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_until(predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"condition not met within {timeout}s: {predicate}")
        time.sleep(interval)


def http_json(method: str, url: str, body: Any = None, timeout: float = 10.0) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method)
    request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null")


def healthy(url: str) -> bool:
    try:
        status, _ = http_json("GET", url, timeout=1.0)
    except (OSError, ValueError):
        return False
    return status == 200


@dataclass
class Processes:
    """Every process a test starts, each in its own process group, stopped at teardown."""

    directory: Path
    started: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def spawn(
        self, name: str, command: list[str], env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        environment = {**os.environ, **(env or {})}
        with (
            (self.directory / f"{name}.out").open("ab") as out,
            (self.directory / f"{name}.err").open("ab") as err,
        ):
            process = subprocess.Popen(
                command, stdout=out, stderr=err, env=environment, start_new_session=True
            )
        self.started.append(process)
        return process

    def stop_all(self) -> None:
        for process in reversed(self.started):
            stop_group(process)


def stop_group(process: subprocess.Popen[bytes], timeout: float = 2.0) -> None:
    if process.poll() is None:
        try:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=timeout)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            pass
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=timeout)


@dataclass
class StandIn:
    """The stand-in server, under the supervisor unless told otherwise."""

    port: int
    process: subprocess.Popen[bytes]
    state_file: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pattern(self) -> str:
        return f"infercycle_sim.standin --port {self.port}"

    def state(self) -> dict[str, Any]:
        try:
            loaded: dict[str, Any] = json.loads(self.state_file.read_text())
        except (OSError, ValueError):
            return {}
        return loaded

    def restarts(self) -> int:
        return int(self.state().get("restarts", 0))

    def pid(self) -> int | None:
        pid = self.state().get("pid")
        return int(pid) if pid is not None else None

    def wait_ready(self, timeout: float = START_TIMEOUT) -> None:
        wait_until(lambda: healthy(f"{self.url}/health"), timeout)

    def complete(self, session_id: str, prompt: str) -> dict[str, Any]:
        status, body = http_json(
            "POST",
            f"{self.url}/v1/completions",
            {"session_id": session_id, "prompt": prompt, "max_tokens": 8},
        )
        assert status == 200, body
        return dict(body)

    def sessions(self) -> dict[str, Any]:
        status, body = http_json("GET", f"{self.url}/sessions")
        assert status == 200, body
        return dict(body["sessions"])

    def fill(self, count: int, prefix: str = "s") -> dict[str, Any]:
        for index in range(count):
            self.complete(f"{prefix}{index}", f"prompt number {index} for {prefix}")
        return self.sessions()


def start_standin(
    processes: Processes,
    *args: str,
    supervised: bool = True,
    name: str = "standin",
) -> StandIn:
    port = free_port()
    state_file = processes.directory / f"{name}-state.json"
    server = [PYTHON, "-m", "infercycle_sim.standin", "--port", str(port), "--latency-ms", "0"]
    server += list(args)
    if supervised:
        command = [PYTHON, "-m", "infercycle_sim.standin", "supervise"]
        command += ["--restart-delay", "0.2", "--state-file", str(state_file), "--", *server]
    else:
        command = server
    process = processes.spawn(name, command)
    standin = StandIn(port=port, process=process, state_file=state_file)
    standin.wait_ready()
    return standin


@dataclass
class Agent:
    port: int
    process: subprocess.Popen[bytes]
    checkpoint_dir: Path
    log_file: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client(self, token: str = TOKEN, timeout: float = 30.0) -> AgentClient:
        return AgentClient(self.url, token, timeout=timeout)

    def log_records(self) -> list[dict[str, Any]]:
        records = []
        for line in self.log_file.read_text().splitlines():
            try:
                records.append(json.loads(line))
            except ValueError:
                continue
        return records

    def alive(self) -> bool:
        return self.process.poll() is None and healthy(f"{self.url}/healthz")


def agent_command(
    port: int,
    checkpoint_dir: Path,
    *,
    server_pattern: str,
    hook: str | None = None,
    session_dir: Path | None = None,
    token_file: Path | None = None,
    state_dir: Path | None = None,
    extra: tuple[str, ...] = (),
) -> list[str]:
    command = [PYTHON, "-m", "infercycle.agent", "--host", "127.0.0.1", "--port", str(port)]
    command += ["--checkpoint-dir", str(checkpoint_dir), "--server-process", server_pattern]
    command += ["--poll-interval", "0.05", "--grace-period", "5"]
    if hook is not None:
        command += ["--session-hook", hook]
    if session_dir is not None:
        command += ["--session-dir", str(session_dir)]
    if token_file is not None:
        command += ["--token-file", str(token_file)]
    if state_dir is not None:
        command += ["--state-dir", str(state_dir)]
    return [*command, *extra]


def start_agent(
    processes: Processes,
    checkpoint_dir: Path,
    *,
    server_pattern: str,
    hook: str | None = None,
    session_dir: Path | None = None,
    extra: tuple[str, ...] = (),
    env: dict[str, str] | None = None,
    wrapper: tuple[str, ...] = (),
    name: str = "agent",
    state_dir: Path | None = None,
) -> Agent:
    token_file = processes.directory / "token"
    token_file.write_text(f"{TOKEN}\n")
    port = free_port()
    command = agent_command(
        port,
        checkpoint_dir,
        server_pattern=server_pattern,
        hook=hook,
        session_dir=session_dir,
        token_file=token_file,
        state_dir=state_dir,
        extra=extra,
    )
    process = processes.spawn(name, [*wrapper, *command], env=env)
    agent = Agent(port, process, checkpoint_dir, processes.directory / f"{name}.err")
    wait_until(lambda: process.poll() is not None or healthy(f"{agent.url}/healthz"), START_TIMEOUT)
    assert process.poll() is None, agent.log_file.read_text()
    return agent


async def wait_for_status(client: AgentClient, check: Any, timeout: float = 15.0) -> AgentStatus:
    deadline = time.monotonic() + timeout
    while True:
        status = await client.status()
        if check(status):
            return status
        if time.monotonic() >= deadline:
            raise AssertionError(f"status never matched: {status}")
        await asyncio.sleep(0.05)


async def restored_into(client: AgentClient, pid: int) -> AgentStatus:
    return await wait_for_status(
        client,
        lambda status: (
            status.last_restore is not None
            and status.last_restore.server_pid == pid
            and status.last_restore.result in ("restored", "failed")
        ),
    )


def hook_agent(processes: Processes, standin: StandIn, tmp_path: Path, **options: Any) -> Agent:
    """An agent whose session hook is the stand-in's, checkpointing under ``tmp_path/ckpt``."""
    return start_agent(
        processes,
        tmp_path / "ckpt",
        server_pattern=standin.pattern,
        hook=f"{standin.url}/sessions",
        **options,
    )


def new_server_pid(standin: StandIn, old: int, restarts: int) -> int:
    wait_until(lambda: standin.restarts() == restarts and standin.pid() not in (None, old))
    standin.wait_ready()
    pid = standin.pid()
    assert pid is not None
    return pid


def can_mount() -> bool:
    """Whether this process may mount in a private namespace (root with unshare)."""
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        return False
    probe = subprocess.run(
        ["unshare", "-m", "sh", "-c", "mount -t tmpfs -o size=16k tmpfs /mnt"],
        capture_output=True,
        check=False,
    )
    return probe.returncode == 0


def mounted(script: str) -> tuple[str, ...]:
    """Run the agent in a private mount namespace after ``script`` prepared its mounts."""
    return ("unshare", "-m", "sh", "-c", f'{script} && exec "$@"', "sh")


def small_volume(checkpoint_dir: Path, size: str = "256k") -> tuple[str, ...]:
    """A wrapper that gives the agent a checkpoint volume of ``size`` (a private tmpfs)."""
    return mounted(f"mount -t tmpfs -o size={size} tmpfs {checkpoint_dir}")
