from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid

from infercycle.agent.process import (
    ProcessMatcher,
    is_running,
    read_process,
    stop_process,
    wait_for_exit,
)
from tests.unit.agent.harness import wait_until

PARENT = (
    "import subprocess, sys, time\n"
    "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)', sys.argv[1]])\n"
    "time.sleep(60)\n"
)


def test_matcher_takes_the_topmost_match_and_never_itself() -> None:
    marker = f"server-{uuid.uuid4().hex[:8]}"
    parent = subprocess.Popen([sys.executable, "-c", PARENT, marker])
    try:
        matcher = ProcessMatcher(marker)
        wait_until(lambda: len(_all_matching(marker)) == 2)
        found = matcher.find()
        assert [process.pid for process in found] == [parent.pid]
        assert found[0].identity == (parent.pid, found[0].start_ticks)
    finally:
        parent.kill()
        parent.wait()


def _all_matching(marker: str) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            info = read_process(int(entry))
            if info is not None and marker in info.command_line and info.state != "Z":
                pids.append(info.pid)
    return pids


async def test_stop_process_escalates_to_sigkill() -> None:
    stubborn = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
            "print('ready', flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
    )
    try:
        assert stubborn.stdout is not None
        stubborn.stdout.readline()
        process = read_process(stubborn.pid)
        assert process is not None
        started = time.monotonic()
        outcome = await stop_process(process, grace_period=0.5)
        assert outcome.signal == "SIGKILL"
        assert time.monotonic() - started >= 0.5
        assert not is_running(process)
    finally:
        stubborn.kill()
        stubborn.wait()
    assert stubborn.returncode == -signal.SIGKILL


async def test_a_zombie_counts_as_gone() -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    process = read_process(child.pid)
    assert process is not None
    assert await wait_for_exit(process, within=10)
    await asyncio.sleep(0)
    child.wait()
