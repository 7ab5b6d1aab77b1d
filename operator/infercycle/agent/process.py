"""Finding and stopping the inference server process in the pod's shared PID namespace.

The agent and the server run in separate containers of one pod with ``shareProcessNamespace:
true``, so the server's processes show up under ``/proc``. A process is identified by its pid and
its start time, so a recycled pid is never mistaken for the server that was there before.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from infercycle import errors

PROC = Path("/proc")
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


class ProcessError(errors.AgentSideError):
    """The server process could not be signalled; ``message`` says why and what to do."""

    code = "server_process_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class SignalNotPermittedError(ProcessError):
    code = "signal_not_permitted"


class ProcessDidNotExitError(ProcessError):
    code = "server_did_not_exit"


@dataclass(frozen=True)
class ProcessInfo:
    """One process as ``/proc`` shows it."""

    pid: int
    parent_pid: int
    name: str
    command_line: str
    state: str
    start_ticks: int

    @property
    def identity(self) -> tuple[int, int]:
        return self.pid, self.start_ticks

    @property
    def start_boot_seconds(self) -> float:
        """When the process started, in seconds since boot."""
        return self.start_ticks / _CLOCK_TICKS

    def started_at(self) -> datetime:
        """When the process started, as wall-clock time (to about a second)."""
        age = max(0.0, time.clock_gettime(time.CLOCK_BOOTTIME) - self.start_boot_seconds)
        return datetime.fromtimestamp(time.time() - age, tz=UTC)


@dataclass(frozen=True)
class StopOutcome:
    pid: int
    signal: str
    duration_seconds: float


def read_process(pid: int, proc: Path = PROC) -> ProcessInfo | None:
    """The process with this pid, or ``None`` when there is none (any more)."""
    try:
        raw_stat = (proc / str(pid) / "stat").read_bytes().decode(errors="replace")
        raw_command = (proc / str(pid) / "cmdline").read_bytes()
    except OSError:
        return None
    opening, closing = raw_stat.find("("), raw_stat.rfind(")")
    if opening < 0 or closing < opening:
        return None
    fields = raw_stat[closing + 2 :].split()
    if len(fields) < 20:
        return None
    return ProcessInfo(
        pid=pid,
        parent_pid=int(fields[1]),
        name=raw_stat[opening + 1 : closing],
        command_line=raw_command.rstrip(b"\0").replace(b"\0", b" ").decode(errors="replace"),
        state=fields[0],
        start_ticks=int(fields[19]),
    )


def list_processes(proc: Path = PROC) -> list[ProcessInfo]:
    processes = []
    for entry in os.listdir(proc):
        if entry.isdigit():
            info = read_process(int(entry), proc)
            if info is not None:
                processes.append(info)
    return processes


def is_running(process: ProcessInfo) -> bool:
    """Whether this very process (same pid, same start) is still alive and not a zombie."""
    current = read_process(process.pid)
    return (
        current is not None
        and current.start_ticks == process.start_ticks
        and current.state not in ("Z", "X", "x")
    )


class ProcessMatcher:
    """Finds the server: its process name equals the pattern, or its command line contains it.

    The agent itself and its ancestors never match (their command lines may well contain the
    pattern). Of a tree of matching processes only the topmost counts, so forked workers that
    inherit the server's command line are not taken for the server.
    """

    def __init__(self, pattern: str, proc: Path = PROC) -> None:
        if not pattern.strip():
            msg = "the server process pattern is empty"
            raise ValueError(msg)
        self.pattern = pattern
        self._proc = proc

    def matches(self, process: ProcessInfo) -> bool:
        return process.name == self.pattern or self.pattern in process.command_line

    def find(self) -> list[ProcessInfo]:
        """The matching processes, oldest first; exactly one is the normal case."""
        processes = {info.pid: info for info in list_processes(self._proc)}
        excluded = _self_and_ancestors(processes)
        candidates = {
            pid: info
            for pid, info in processes.items()
            if pid not in excluded and info.state not in ("Z", "X", "x") and self.matches(info)
        }
        topmost = [
            info
            for info in candidates.values()
            if not _has_ancestor_in(info, candidates, processes)
        ]
        return sorted(topmost, key=lambda info: (info.start_ticks, info.pid))


def _self_and_ancestors(processes: dict[int, ProcessInfo]) -> set[int]:
    chain = set()
    pid = os.getpid()
    while pid > 0 and pid not in chain:
        chain.add(pid)
        parent = processes.get(pid)
        pid = parent.parent_pid if parent is not None else 0
    return chain


def _has_ancestor_in(
    process: ProcessInfo, candidates: dict[int, ProcessInfo], processes: dict[int, ProcessInfo]
) -> bool:
    seen = {process.pid}
    pid = process.parent_pid
    while pid > 0 and pid not in seen:
        if pid in candidates:
            return True
        seen.add(pid)
        parent = processes.get(pid)
        pid = parent.parent_pid if parent is not None else 0
    return False


async def wait_for_exit(process: ProcessInfo, within: float, poll: float = 0.02) -> bool:
    """Whether the process is gone within ``within`` seconds."""
    deadline = time.monotonic() + within
    while is_running(process):
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(poll)
    return True


def _send(process: ProcessInfo, signum: signal.Signals) -> None:
    if not is_running(process):
        return
    try:
        os.kill(process.pid, signum)
    except ProcessLookupError:
        return
    except PermissionError as error:
        msg = (
            f"the agent may not send {signum.name} to the server process {process.pid} "
            f"({error.strerror}); run the agent container as the same user as the server, or "
            "add the KILL capability to the agent's securityContext"
        )
        raise SignalNotPermittedError(msg) from error


async def stop_process(
    process: ProcessInfo, grace_period: float, kill_timeout: float = 10.0
) -> StopOutcome:
    """SIGTERM, wait up to the grace period, then SIGKILL; returns once the process is gone."""
    started = time.monotonic()
    _send(process, signal.SIGTERM)
    if await wait_for_exit(process, grace_period):
        return StopOutcome(process.pid, "SIGTERM", time.monotonic() - started)
    _send(process, signal.SIGKILL)
    if await wait_for_exit(process, kill_timeout):
        return StopOutcome(process.pid, "SIGKILL", time.monotonic() - started)
    msg = (
        f"the server process {process.pid} is still there {kill_timeout:.0f}s after SIGKILL "
        "(it is probably stuck in the kernel, for example on a GPU driver call); recreate the "
        "pod or drain the node"
    )
    raise ProcessDidNotExitError(msg)
