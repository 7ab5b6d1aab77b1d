"""Agent faults: an agent that hangs, floods or lies, as the operator meets it (the real
``AgentClient`` behind the executor, over a real socket); and the real agent process killed with
SIGKILL mid-checkpoint, or its session volume full, as the sessions meet it."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import socket
import socketserver
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from infercycle.agent.client import AgentClient, AgentClientError, AgentError
from infercycle.cycle.agents import PodAgent
from tests.faults.local import ThreadingServer, serve
from tests.faults.outcome import FaultResult
from tests.faults.recycle import Scenario, judge, walk
from tests.unit.agent.harness import (
    Processes,
    StandIn,
    can_mount,
    hook_agent,
    http_json,
    new_server_pid,
    restored_into,
    small_volume,
    start_standin,
)

AGENT_TIMEOUT_S = 1.0
# How much longer than its timeout one agent call may take (connection set-up, the thread).
SLACK_S = 1.0
FLOOD_LIMIT = 64 << 20  # the misbehaving agent stops after this many bytes, read or not
CHUNK = b"x" * (64 << 10)


# -- agents that misbehave on the wire ---------------------------------------------------------


@dataclass(frozen=True)
class Misbehaviour:
    name: str
    head: bytes = b""  # sent as soon as the request has arrived
    flood: bool = False  # then stream CHUNKs, chunked when the head says so
    hang: bool = False  # then say nothing until the client goes away


def _head(*headers: str) -> bytes:
    return ("HTTP/1.1 200 OK\r\n" + "".join(f"{h}\r\n" for h in headers) + "\r\n").encode()


MISBEHAVIOURS = (
    Misbehaviour("hangs", hang=True),
    Misbehaviour("answers headers, then hangs", _head("Content-Length: 100"), hang=True),
    Misbehaviour("floods, declaring 1 GiB", _head("Content-Length: 1073741824"), flood=True),
    Misbehaviour("floods, chunked", _head("Transfer-Encoding: chunked"), flood=True),
    Misbehaviour(
        "lies (an answer of the wrong shape)",
        _head("Content-Type: application/json", "Content-Length: 17") + b'{"unexpected": 1}',
    ),
    Misbehaviour("resets mid-answer", _head("Content-Length: 100") + b'{"id": "c'),
)


class _Handler(socketserver.BaseRequestHandler):
    misbehaviour: Misbehaviour

    def handle(self) -> None:
        connection: socket.socket = self.request
        connection.settimeout(AGENT_TIMEOUT_S * 10)
        with suppress(OSError):
            request = b""
            while b"\r\n\r\n" not in request:
                data = connection.recv(4096)
                if not data:
                    return
                request += data
            connection.sendall(self.misbehaviour.head)
            if self.misbehaviour.flood:
                chunked = b"chunked" in self.misbehaviour.head
                for _ in range(FLOOD_LIMIT // len(CHUNK)):
                    frame = b"%x\r\n%s\r\n" % (len(CHUNK), CHUNK) if chunked else CHUNK
                    connection.sendall(frame)
            if self.misbehaviour.hang:
                connection.recv(1)  # returns when the client closes, or at the timeout


@contextmanager
def misbehaving(misbehaviour: Misbehaviour) -> Iterator[str]:
    handler = type("Handler", (_Handler,), {"misbehaviour": misbehaviour})
    with serve(ThreadingServer(("127.0.0.1", 0), handler)) as url:
        yield url


async def misbehaving_agent(misbehaviour: Misbehaviour) -> FaultResult:
    """A whole InPlace recycle against one misbehaving agent: every call ends within its
    timeout with a typed error, the executor reports it, and the recycle still ends once."""
    with misbehaving(misbehaviour) as url:

        def connector(deployment: dict[str, Any], pod_ip: str | None) -> PodAgent:
            return PodAgent(AgentClient(url, "token", timeout=AGENT_TIMEOUT_S))

        done = await walk(Scenario(misbehaviour.name), agents=connector)
    result = judge(misbehaviour.name, done.kube, done.guards, done.finished, fault=2)
    slowest = done.guards.slowest_agent_call_s
    reported = [m for _, reason, m in done.kube.events if reason == "CheckpointFailed"]
    if slowest > AGENT_TIMEOUT_S + SLACK_S or not reported:
        result.beyond_guards = (result.beyond_guards or 0) + 1
    outcome = done.kube.history[-1]["result"] if done.kube.history else "unfinished"
    note = reported[0] if reported else "no CheckpointFailed event"
    result.findings.append(
        f"{misbehaviour.name}: slowest call {slowest:.2f}s, {outcome}; reported: {note}"
    )
    return result


async def misbehaving_agents() -> FaultResult:
    total = FaultResult("Agent hangs, floods or lies (operator side)", sessions_lost=None)
    for misbehaviour in MISBEHAVIOURS:
        total.add(await misbehaving_agent(misbehaviour))
    return total


# -- the real agent, killed mid-checkpoint, or its volume full ---------------------------------


def put_sessions(standin: StandIn, count: int, size: int) -> dict[str, Any]:
    sessions = {f"bulk{i}": {"blob": "y" * size} for i in range(count)}
    status, body = http_json("PUT", f"{standin.url}/sessions", {"sessions": sessions})
    assert status == 200, body
    return standin.sessions()


async def restart_and_read(standin: StandIn, client: AgentClient, restarts: int) -> set[str]:
    """Restart the server through the agent and return the sessions it came back with."""
    old = standin.pid()
    assert old is not None
    await client.restart()
    pid = await asyncio.to_thread(new_server_pid, standin, old, restarts)
    await restored_into(client, pid)
    return set(standin.sessions())


def lost_or_mixed(acknowledged: int, complete: list[set[str]], restored: set[str]) -> int:
    """Sessions lost, given the sessions of each complete checkpoint oldest first and the index
    of the last one acknowledged: 0 when what came back is that checkpoint or a newer complete
    one; what the acknowledged one had and did not come back when an older one was restored;
    everything that differs when what came back is no complete checkpoint (a partial one)."""
    newest = complete[acknowledged]
    if restored in complete[acknowledged:]:
        return 0
    if restored in complete:
        return len(newest - restored)
    return len(newest ^ restored) or 1


async def killed_mid_checkpoint(work: Path, delay_s: float) -> FaultResult:
    """Checkpoint a small state (acknowledged), grow it, SIGKILL the agent ``delay_s`` into the
    next checkpoint, start a new agent, restart the server through it."""
    result = FaultResult(f"kill -9 {delay_s * 1000:.0f} ms into a checkpoint", runs=1, faults=1)
    result.restarted_twice = result.beyond_guards = result.left_drained = None
    logs = work / "logs"
    logs.mkdir(parents=True)
    processes = Processes(logs)
    try:
        standin = start_standin(processes)
        agent = hook_agent(processes, standin, work, name="agent-1")
        first = set(standin.fill(5, "first"))
        await agent.client().checkpoint()
        acknowledged = 0
        second = set(put_sessions(standin, 2000, 2000))
        attempt = asyncio.create_task(agent.client().checkpoint())
        await asyncio.sleep(delay_s)
        os.killpg(agent.process.pid, signal.SIGKILL)
        await asyncio.to_thread(agent.process.wait, 10)
        try:
            await attempt
            acknowledged = 1  # it finished before the kill: the newer one counts
        except AgentClientError:
            pass
        again = hook_agent(processes, standin, work, name="agent-2")
        restored = await restart_and_read(standin, again.client(), restarts=1)
        result.sessions_lost = lost_or_mixed(acknowledged, [first, second], restored)
        leftovers = list((work / "ckpt").glob(".tmp-*"))
        which = "the newer" if restored == second else "the older"
        result.findings.append(
            f"{result.name}: {which} checkpoint restored, {len(restored)} sessions,"
            f" {len(leftovers)} staging directories left"
        )
    finally:
        processes.stop_all()
    return result


async def volume_full(work: Path) -> FaultResult:
    """A 256 KiB session volume: a checkpoint too big for it is refused with a typed error, the
    previous one stays, and a restart restores it."""
    result = FaultResult("session volume full", runs=1, faults=1)
    result.restarted_twice = result.beyond_guards = result.left_drained = None
    checkpoint_dir = work / "ckpt"
    checkpoint_dir.mkdir(parents=True)
    (work / "logs").mkdir()
    processes = Processes(work / "logs")
    try:
        standin = start_standin(processes)
        agent = hook_agent(processes, standin, work, wrapper=small_volume(checkpoint_dir))
        client = agent.client()
        small = set(standin.fill(3))
        await client.checkpoint()
        put_sessions(standin, 100, 4096)
        try:
            await client.checkpoint()
            result.findings.append("session volume full: the too-big checkpoint was accepted")
            result.sessions_lost = 1
            return result
        except AgentError as full:
            refusal = f"{full.http_status} {full.code}"
        restored = await restart_and_read(standin, client, restarts=1)
        result.sessions_lost = lost_or_mixed(0, [small], restored)
        result.findings.append(
            f"session volume full: refused with {refusal}; {len(restored)}"
            " sessions of the previous checkpoint restored"
        )
    finally:
        processes.stop_all()
    return result


async def agent_process_faults(kills: int, seed: int = 7) -> FaultResult:
    """``kills`` SIGKILLs at delays spread over a checkpoint, then the full volume."""
    total = FaultResult("Agent kill -9 mid-checkpoint; session volume full")
    total.restarted_twice = total.beyond_guards = total.left_drained = None
    draw = random.Random(seed)
    with tempfile.TemporaryDirectory(prefix="infercycle-faults-") as scratch:
        for index in range(kills):
            delay = draw.uniform(0.0, 0.1) if index else 0.0
            total.add(await killed_mid_checkpoint(Path(scratch) / f"kill-{index}", delay))
        if can_mount():
            total.add(await volume_full(Path(scratch) / "full"))
        else:
            total.findings.append("session volume full: not run (needs root with unshare)")
    return total
