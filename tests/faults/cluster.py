"""kube-apiserver and etcd restarted mid-recycle on the local cluster: runs the end-to-end test
``tests/e2e/test_control_plane_restarts.py`` (which starts and stops the cluster) and reads the
counts it records. Hold /tmp/infercycle-cluster.lock around the whole command."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from tests.faults.outcome import FaultResult

ROOT = Path(__file__).resolve().parents[2]
TEST = "tests/e2e/test_control_plane_restarts.py"


async def restarts_mid_recycle() -> FaultResult:
    total = FaultResult("API server and etcd restarted mid-recycle", sessions_lost=None)
    with tempfile.TemporaryDirectory(prefix="infercycle-faults-") as scratch:
        out = Path(scratch) / "counts.jsonl"
        env = {**os.environ, "INFERCYCLE_FAULTS_OUT": str(out)}
        command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", TEST]
        done = await asyncio.to_thread(
            subprocess.run, command, cwd=ROOT, env=env, capture_output=True, text=True, check=False
        )
        lines = out.read_text().splitlines() if out.exists() else []
    for line in lines:
        counts = json.loads(line)
        run = FaultResult(counts["component"], runs=1, faults=counts["restarts"])
        run.restarted_twice = counts["restarted_twice"]
        run.beyond_guards = counts["beyond_guards"]
        run.left_drained = counts["left_drained"]
        run.sessions_lost = None
        run.findings.append(
            f"{counts['component']} restarted {counts['restarts']} times mid-recycle;"
            f" the recycle ended {counts['finished']}"
        )
        total.add(run)
    if done.returncode != 0 or len(lines) < 2:
        tail = (done.stdout + done.stderr).strip().splitlines()[-1:] or ["no output"]
        total.findings.append(f"the end-to-end run failed (exit {done.returncode}): {tail[0]}")
        total.failed = True
    return total
