"""The agent as a real process against the stand-in server as a real process."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import aiohttp
import pytest

from infercycle.agent.client import AgentClient, AgentError, AgentUnavailable
from infercycle.agent.config import FAULT_PAUSE_BEFORE_COMMIT
from infercycle.agent.core import RESTORE_MEMO
from tests.unit.agent.harness import (
    TOKEN,
    Processes,
    agent_command,
    can_mount,
    free_port,
    hook_agent,
    mounted,
    new_server_pid,
    restored_into,
    small_volume,
    start_agent,
    start_standin,
    wait_for_status,
    wait_until,
)

pytestmark = pytest.mark.timeout(60)


async def test_sessions_survive_an_in_place_restart(processes: Processes, tmp_path: Path) -> None:
    standin = start_standin(processes)
    agent = hook_agent(processes, standin, tmp_path)
    client = agent.client()
    before = standin.fill(50)
    old_pid = standin.pid()
    assert old_pid is not None

    checkpoint = await client.checkpoint()
    assert checkpoint.entries == 1
    assert len(checkpoint.sha256) == 64
    restart = await client.restart()
    assert (restart.pid, restart.signal) == (old_pid, "SIGTERM")

    pid = new_server_pid(standin, old_pid, restarts=1)
    status = await restored_into(client, pid)
    assert status.last_restore is not None
    assert status.last_restore.result == "restored"
    assert status.last_restore.checkpoint_id == checkpoint.id
    assert status.server.pid == pid
    assert standin.sessions() == before
    assert len(before) == 50


async def test_session_dir_comes_back_in_a_new_pod(processes: Processes, tmp_path: Path) -> None:
    sessions = tmp_path / "volume" / "sessions"
    standin = start_standin(processes, "--session-dir", str(sessions), supervised=False)
    agent = start_agent(
        processes, tmp_path / "ckpt", server_pattern=standin.pattern, session_dir=sessions
    )
    before = standin.fill(20)
    checkpoint = await agent.client().checkpoint()
    assert checkpoint.entries == 20
    for process in (agent.process, standin.process):
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=10)

    shutil.rmtree(sessions)
    fresh = start_agent(
        processes,
        tmp_path / "ckpt",
        server_pattern=standin.pattern,
        session_dir=sessions,
        name="agent-new-pod",
    )
    status = await wait_for_status(fresh.client(), lambda status: status.last_restore is not None)
    assert status.last_restore is not None
    assert status.last_restore.result == "restored", status.last_restore.message
    restarted = start_standin(
        processes, "--session-dir", str(sessions), supervised=False, name="standin-new-pod"
    )
    assert restarted.sessions() == before


async def test_session_dir_is_restored_after_an_in_place_restart(
    processes: Processes, tmp_path: Path
) -> None:
    sessions = tmp_path / "volume" / "sessions"
    standin = start_standin(processes, "--session-dir", str(sessions))
    agent = start_agent(
        processes, tmp_path / "ckpt", server_pattern=standin.pattern, session_dir=sessions
    )
    client = agent.client()
    before = standin.fill(10)
    checkpoint = await client.checkpoint()
    (sessions / "half-written-on-shutdown.json").write_text('{"turns": -1}')
    first_pid = standin.pid()
    assert first_pid is not None

    await client.restart()
    status = await wait_for_status(
        client,
        lambda status: (
            status.last_restore is not None and status.last_restore.checkpoint_id == checkpoint.id
        ),
    )
    second_pid = new_server_pid(standin, first_pid, restarts=1)
    assert standin.sessions() == before
    assert status.last_restore is not None
    assert "restarted" in status.last_restore.message

    standin.complete("after-restart", "newer than the checkpoint")
    await client.restart()
    new_server_pid(standin, second_pid, restarts=2)
    status = await wait_for_status(
        client,
        lambda status: status.last_restore is not None and status.last_restore.result == "skipped",
    )
    assert status.last_restore is not None
    assert "older than the server process" in status.last_restore.message
    assert "after-restart" in standin.sessions()


async def test_crash_while_writing_keeps_the_previous_checkpoint(
    processes: Processes, tmp_path: Path
) -> None:
    standin = start_standin(processes)
    first_agent = hook_agent(processes, standin, tmp_path, name="agent-first")
    first_sessions = standin.fill(10, "first")
    previous = await first_agent.client().checkpoint()
    first_agent.process.send_signal(signal.SIGTERM)
    first_agent.process.wait(timeout=10)

    crashing = hook_agent(
        processes, standin, tmp_path, name="agent-crashing", env={FAULT_PAUSE_BEFORE_COMMIT: "30"}
    )
    standin.fill(10, "second")
    attempt = asyncio.create_task(crashing.client().checkpoint())
    checkpoint_dir = tmp_path / "ckpt"

    def staged() -> list[Path]:
        return [path for path in checkpoint_dir.glob(".tmp-*") if (path / "manifest.json").exists()]

    await asyncio.to_thread(wait_until, staged)
    os.killpg(crashing.process.pid, signal.SIGKILL)
    crashing.process.wait(timeout=10)
    with pytest.raises(AgentUnavailable):
        await attempt
    assert staged(), "the interrupted checkpoint should have left its temporary directory"

    agent = hook_agent(processes, standin, tmp_path, name="agent-after-crash")
    client = agent.client()
    status = await client.status()
    assert status.last_checkpoint is not None
    assert status.last_checkpoint.id == previous.id
    assert status.checkpoints == 1
    assert not list(checkpoint_dir.glob(".tmp-*"))

    old_pid = standin.pid()
    assert old_pid is not None
    await client.restart()
    pid = new_server_pid(standin, old_pid, restarts=1)
    status = await restored_into(client, pid)
    assert status.last_restore is not None
    assert status.last_restore.checkpoint_id == previous.id
    assert standin.sessions() == first_sessions


async def test_corrupt_checkpoint_is_skipped_for_an_older_valid_one(
    processes: Processes, tmp_path: Path
) -> None:
    standin = start_standin(processes, supervised=False)
    agent = hook_agent(processes, standin, tmp_path)
    client = agent.client()
    older_sessions = standin.fill(5, "old")
    older = await client.checkpoint()
    standin.fill(5, "new")
    newer = await client.checkpoint()
    data = tmp_path / "ckpt" / newer.id / "data" / "sessions.json"
    corrupted = bytearray(data.read_bytes())
    corrupted[len(corrupted) // 2] ^= 0x20
    data.write_bytes(bytes(corrupted))

    result = await client.restore()

    assert result.result == "restored"
    assert result.checkpoint_id == older.id
    assert result.skipped == (newer.id,)
    assert "SHA-256" in result.message
    assert standin.sessions() == older_sessions
    warnings = [
        record
        for record in agent.log_records()
        if record["level"] == "WARNING" and record.get("checkpoint") == newer.id
    ]
    assert warnings, "skipping a corrupt checkpoint must log a warning"


async def test_state_above_max_size_is_refused(processes: Processes, tmp_path: Path) -> None:
    standin = start_standin(processes, supervised=False)
    agent = hook_agent(processes, standin, tmp_path, extra=("--max-size", "2Ki"))
    standin.fill(20)

    with pytest.raises(AgentError) as refused:
        await agent.client().checkpoint()

    assert refused.value.http_status == 413
    assert refused.value.code == "state_too_large"
    assert "--max-size" in refused.value.message
    assert "nothing was written" in refused.value.message
    assert [path.name for path in (tmp_path / "ckpt").iterdir()] == [RESTORE_MEMO]
    assert agent.alive()


async def test_requests_without_the_right_token_are_refused(
    processes: Processes, tmp_path: Path
) -> None:
    standin = start_standin(processes, supervised=False)
    agent = hook_agent(processes, standin, tmp_path)

    with pytest.raises(AgentError) as wrong:
        await agent.client(token="not-the-token").checkpoint()
    assert (wrong.value.http_status, wrong.value.code) == (401, "unauthorized")
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{agent.url}/v1/restart") as response,
    ):
        body = await response.json()
        assert response.status == 401
        assert "Authorization: Bearer" in body["message"]
    assert standin.process.poll() is None
    assert (await agent.client().status()).checkpoints == 0


def test_agent_refuses_to_start_without_a_token(tmp_path: Path) -> None:
    command = agent_command(
        free_port(), tmp_path / "ckpt", server_pattern="server", hook="http://127.0.0.1:1/s"
    )
    finished = subprocess.run(command, capture_output=True, timeout=30, check=False)
    assert finished.returncode == 2
    assert b"--token-file" in finished.stderr
    assert b"--insecure-no-auth" in finished.stderr

    missing = agent_command(
        free_port(),
        tmp_path / "ckpt",
        server_pattern="server",
        hook="http://127.0.0.1:1/s",
        token_file=tmp_path / "absent",
    )
    finished = subprocess.run(missing, capture_output=True, timeout=30, check=False)
    assert finished.returncode == 2
    assert b"token file" in finished.stderr


async def test_restart_is_refused_while_a_checkpoint_runs(
    processes: Processes, tmp_path: Path
) -> None:
    standin = start_standin(processes, supervised=False)
    agent = hook_agent(processes, standin, tmp_path, env={FAULT_PAUSE_BEFORE_COMMIT: "1.5"})
    client = agent.client()
    standin.fill(3)

    checkpoint = asyncio.create_task(client.checkpoint())
    await wait_for_status(client, lambda status: status.checkpoint_in_progress)
    with pytest.raises(AgentError) as restart:
        await client.restart()
    with pytest.raises(AgentError) as second:
        await client.checkpoint()

    assert (restart.value.http_status, restart.value.code) == (409, "checkpoint_in_progress")
    assert "restart was not started" in restart.value.message
    assert (second.value.http_status, second.value.code) == (409, "checkpoint_in_progress")
    assert standin.process.poll() is None
    written = await checkpoint
    assert (await client.status()).last_checkpoint is not None
    assert written.entries == 1


async def test_sigkill_after_the_grace_period(processes: Processes, tmp_path: Path) -> None:
    standin = start_standin(processes, "--ignore-sigterm")
    agent = hook_agent(processes, standin, tmp_path, extra=("--grace-period", "1"))
    old_pid = standin.pid()

    restart = await agent.client().restart()

    assert restart.pid == old_pid
    assert restart.signal == "SIGKILL"
    assert 1000 <= restart.duration_ms < 5000
    assert old_pid is not None
    new_server_pid(standin, old_pid, restarts=1)
    assert standin.state()["lastExitCode"] == -signal.SIGKILL


async def test_restart_without_a_server_process(processes: Processes, tmp_path: Path) -> None:
    agent = start_agent(
        processes,
        tmp_path / "ckpt",
        server_pattern="no-such-server-process-anywhere",
        hook="http://127.0.0.1:9/sessions",
    )

    with pytest.raises(AgentError) as missing:
        await agent.client().restart()

    assert (missing.value.http_status, missing.value.code) == (404, "server_process_not_found")
    assert "shareProcessNamespace" in missing.value.message
    assert not (await agent.client().status()).server.found


async def test_keeps_the_last_k_checkpoints(processes: Processes, tmp_path: Path) -> None:
    standin = start_standin(processes, supervised=False)
    agent = hook_agent(processes, standin, tmp_path, extra=("--keep", "2"))
    client = agent.client()

    ids = []
    for round_ in range(4):
        standin.fill(2, f"r{round_}-")
        ids.append((await client.checkpoint()).id)

    kept = sorted(
        path.name for path in (tmp_path / "ckpt").iterdir() if not path.name.startswith(".")
    )
    assert kept == sorted(ids[2:])
    status = await client.status()
    assert status.checkpoints == 2
    assert status.last_checkpoint is not None
    assert status.last_checkpoint.id == ids[3]


async def test_read_only_checkpoint_dir(processes: Processes, tmp_path: Path) -> None:
    checkpoint_dir = tmp_path / "ckpt"
    checkpoint_dir.mkdir()
    if can_mount():
        wrapper = mounted(
            f"mount --bind {checkpoint_dir} {checkpoint_dir} && "
            f"mount -o remount,bind,ro {checkpoint_dir}"
        )
        expected = (503, "checkpoint_dir_read_only", "read-only")
    elif os.geteuid() != 0:
        checkpoint_dir.chmod(0o555)
        wrapper = ()
        expected = (503, "checkpoint_dir_not_writable", "write")
    else:
        pytest.skip("needs a read-only mount (root with unshare) or a non-root user")
    standin = start_standin(processes, supervised=False)
    agent = start_agent(
        processes,
        checkpoint_dir,
        server_pattern=standin.pattern,
        hook=f"{standin.url}/sessions",
        wrapper=wrapper,
    )
    standin.fill(3)

    with pytest.raises(AgentError) as refused:
        await agent.client().checkpoint()

    status, code, phrase = expected
    assert (refused.value.http_status, refused.value.code) == (status, code)
    assert phrase in refused.value.message
    assert agent.alive()
    assert (await agent.client().status()).operation is None


async def test_full_volume_keeps_the_previous_checkpoint(
    processes: Processes, tmp_path: Path
) -> None:
    if not can_mount():
        pytest.skip("needs root with unshare to mount a small tmpfs")
    checkpoint_dir = tmp_path / "ckpt"
    checkpoint_dir.mkdir()
    standin = start_standin(processes, supervised=False)
    agent = hook_agent(processes, standin, tmp_path, wrapper=small_volume(checkpoint_dir))
    client = agent.client()
    small = standin.fill(3)
    previous = await client.checkpoint()
    big = {f"big{index}": {"blob": "x" * 4096} for index in range(100)}
    async with (
        aiohttp.ClientSession() as session,
        session.put(f"{standin.url}/sessions", json={"sessions": big}) as response,
    ):
        assert response.status == 200

    with pytest.raises(AgentError) as full:
        await client.checkpoint()

    assert (full.value.http_status, full.value.code) == (507, "insufficient_storage")
    assert "previous one is still valid" in full.value.message
    assert agent.alive()
    result = await client.restore()
    assert result.checkpoint_id == previous.id
    assert standin.sessions() == small


async def test_unreachable_agent_raises_agent_unavailable() -> None:
    client = AgentClient(f"http://127.0.0.1:{free_port()}", TOKEN, timeout=2)
    with pytest.raises(AgentUnavailable):
        await client.status()
    assert not await client.healthy()


def test_supervisor_counts_restarts(processes: Processes) -> None:
    standin = start_standin(processes)
    first = standin.pid()
    assert first is not None
    os.kill(first, signal.SIGKILL)
    second = new_server_pid(standin, first, restarts=1)
    os.kill(second, signal.SIGTERM)
    new_server_pid(standin, second, restarts=2)
    assert standin.state()["lastExitCode"] == 0
    out = (processes.directory / "standin.out").read_text()
    assert "restarts=2" in out


def test_standin_exports_vllm_metrics(processes: Processes) -> None:
    standin = start_standin(processes, supervised=False)
    standin.fill(3)

    with urllib.request.urlopen(f"{standin.url}/metrics", timeout=5) as response:
        text = response.read().decode()

    for name in (
        'vllm:e2e_request_latency_seconds_bucket{le="0.005",model_name="standin"}',
        'vllm:num_requests_running{model_name="standin"}',
        'vllm:kv_cache_usage_perc{model_name="standin"}',
        'vllm:request_success_total{finished_reason="length",model_name="standin"} 3.0',
        "process_resident_memory_bytes",
    ):
        assert name in text


def resident_bytes(text: str) -> float:
    line = next(line for line in text.splitlines() if line.startswith("process_resident_memory"))
    return float(line.split()[1])


def test_standin_leak_grows_resident_memory(processes: Processes) -> None:
    standin = start_standin(processes, "--leak-mb-per-min", "1200", supervised=False)

    def rss() -> float:
        with urllib.request.urlopen(f"{standin.url}/metrics", timeout=5) as response:
            return resident_bytes(response.read().decode())

    start = rss()
    wait_until(lambda: rss() - start > 30 * 2**20, timeout=10)


async def test_a_restore_the_volume_cannot_record_is_not_repeated_after_an_agent_restart(
    processes: Processes, tmp_path: Path
) -> None:
    standin = start_standin(processes)
    state_dir = tmp_path / "agent-state"  # the pod's emptyDir, off the session volume
    agent = hook_agent(processes, standin, tmp_path, state_dir=state_dir)
    client = agent.client()
    standin.fill(20)
    await client.checkpoint()
    # The volume refuses the restore record (as a full one would); checkpoints still exist.
    (tmp_path / "ckpt" / f"{RESTORE_MEMO}.tmp").mkdir()
    old_pid = standin.pid()
    assert old_pid is not None
    await client.restart()
    pid = new_server_pid(standin, old_pid, restarts=1)
    assert (await restored_into(client, pid)).last_restore is not None
    standin.complete("after-restore", "a session the checkpoint does not have")
    sessions = standin.sessions()
    assert len(sessions) == 21

    os.kill(agent.process.pid, signal.SIGKILL)
    agent.process.wait(timeout=5)
    again = hook_agent(processes, standin, tmp_path, state_dir=state_dir, name="agent-2")
    status = await wait_for_status(again.client(), lambda s: s.last_restore is not None)
    await asyncio.sleep(1.5)  # a second restore would come within a few polls

    assert status.last_restore is not None
    assert status.last_restore.server_pid == pid
    assert standin.sessions() == sessions  # not rolled back to the checkpoint's 20
    assert standin.pid() == pid


async def test_an_authorization_header_that_is_not_utf8_is_refused_with_401(
    processes: Processes, tmp_path: Path
) -> None:
    standin = start_standin(processes, supervised=False)
    agent = hook_agent(processes, standin, tmp_path)
    reader, writer = await asyncio.open_connection("127.0.0.1", agent.port)
    writer.write(
        b"GET /v1/status HTTP/1.1\r\nHost: agent\r\nAuthorization: Bearer \xff\xfe\x80\r\n"
        b"Connection: close\r\n\r\n"
    )
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(), timeout=10)
    writer.close()
    assert answer.startswith(b"HTTP/1.1 401"), answer[:200]
    assert b"internal_error" not in answer
    assert agent.alive()


async def test_idle_and_slow_connections_are_closed_after_the_idle_timeout(
    processes: Processes, tmp_path: Path
) -> None:
    standin = start_standin(processes, supervised=False)
    agent = hook_agent(processes, standin, tmp_path, extra=("--idle-timeout", "1"))
    idle = await asyncio.open_connection("127.0.0.1", agent.port)
    slow = await asyncio.open_connection("127.0.0.1", agent.port)
    slow[1].write(b"GET /v1/status HTTP/1.1\r\nHost: agent\r\n")  # never finishes
    await slow[1].drain()
    started = time.monotonic()
    for reader, writer in (idle, slow):
        assert await asyncio.wait_for(reader.read(), timeout=10) == b""  # closed by the agent
        writer.close()
    assert time.monotonic() - started < 5
    assert (await agent.client().status()).checkpoints == 0  # still answering


async def test_status_does_not_report_a_damaged_newest_checkpoint_as_the_last_one(
    processes: Processes, tmp_path: Path
) -> None:
    standin = start_standin(processes, supervised=False)
    agent = hook_agent(processes, standin, tmp_path)
    standin.fill(3)
    older = await agent.client().checkpoint()
    standin.fill(4)
    newer = await agent.client().checkpoint()
    data = tmp_path / "ckpt" / newer.id / "data" / "sessions.json"
    data.write_bytes(data.read_bytes()[:-2] + b"!}")
    agent.process.terminate()
    agent.process.wait(timeout=5)

    again = hook_agent(processes, standin, tmp_path, name="agent-2")
    status = await again.client().status()
    assert status.last_checkpoint is not None
    assert status.last_checkpoint.id == older.id
    assert status.checkpoints == 2
