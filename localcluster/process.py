"""Component processes: start one, find its processes by command line, stop them.

A component's processes are recognised by their command line (the binary's name and an argument
under this state directory), so a lost pid file or state directory never leaves one running.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from localcluster.addresses import HOST
from localcluster.errors import ClusterError, log


@dataclass
class Component:
    """One process of the cluster: how it starts, how its health is asked, its port."""

    name: str
    argv: list[str]
    health: str | None  # URL, checked for HTTP 200
    port: int


def pid_file(state: Path, name: str) -> Path:
    return state / "run" / f"{name}.pid"


def _process_argv(pid: int) -> list[str] | None:
    """The command line of a live (not zombie) process, or None."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    if stat[stat.rfind(")") + 1 :].split()[:1] in (["Z"], ["X"]):
        return None
    argv = [a.decode(errors="replace") for a in raw.split(b"\0") if a]
    return argv or None


def is_component(argv: list[str], state: Path, comp: Component) -> bool:
    """Whether a command line is this component of this state directory."""
    if Path(argv[0]).name != Path(comp.argv[0]).name:
        return False
    marker = f"{state}/"
    return any(marker in arg for arg in argv[1:])


def find_processes(state: Path, comp: Component) -> list[int]:
    """Live processes of this component for this state directory, found by command line."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            argv = _process_argv(int(entry.name))
            if argv and is_component(argv, state, comp):
                found.append(int(entry.name))
    return sorted(found)


def read_pid(state: Path, comp: Component) -> int | None:
    """The component's live pid; a lost pid file is rebuilt from the process table."""
    try:
        pid: int | None = int(pid_file(state, comp.name).read_text().strip())
    except (OSError, ValueError):
        pid = None
    if pid is not None:
        argv = _process_argv(pid)
        if argv and is_component(argv, state, comp):
            return pid
    found = find_processes(state, comp)
    if len(found) != 1:
        return None
    with contextlib.suppress(OSError):
        pid_file(state, comp.name).parent.mkdir(parents=True, exist_ok=True)
        pid_file(state, comp.name).write_text(f"{found[0]}\n")
    return found[0]


def port_in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError:
            return True
    return False


def start(state: Path, comp: Component) -> int:
    if port_in_use(comp.port):
        raise ClusterError(
            f"cannot start {comp.name}: {HOST}:{comp.port} is already in use by another process "
            "(a cluster from another checkout? run `hack/cluster down` there, or free the port)"
        )
    logs = state / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    (state / "run").mkdir(parents=True, exist_ok=True)
    with open(logs / f"{comp.name}.log", "ab") as out:
        proc = subprocess.Popen(
            comp.argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=state,
            start_new_session=True,
            close_fds=True,
        )
    pid_file(state, comp.name).write_text(f"{proc.pid}\n")
    return proc.pid


def _signal(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)  # components lead their own process group
    except ProcessLookupError:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def stop(state: Path, comp: Component, grace: float = 10.0) -> bool:
    """SIGTERM every process of the component, SIGKILL what is left after ``grace``."""
    pids = set(find_processes(state, comp))
    recorded = read_pid(state, comp)
    if recorded is not None:
        pids.add(recorded)

    def alive() -> set[int]:
        return {p for p in pids if (argv := _process_argv(p)) and is_component(argv, state, comp)}

    if not pids:
        pid_file(state, comp.name).unlink(missing_ok=True)
        return False
    for pid in pids:
        _signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and alive():
        time.sleep(0.1)
    if alive():
        log(f"{comp.name} did not stop after SIGTERM; sending SIGKILL")
        for pid in alive():
            _signal(pid, signal.SIGKILL)
        for _ in range(50):
            if not alive():
                break
            time.sleep(0.1)
    pid_file(state, comp.name).unlink(missing_ok=True)
    return True


def tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
