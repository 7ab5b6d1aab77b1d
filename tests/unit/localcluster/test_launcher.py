"""``hack/cluster`` keeps its command line: the commands, their options and their output."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from localcluster.state import REPO


def _hack_cluster(*args: str, state: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "INFERCYCLE_CLUSTER_DIR": str(state), "INFERCYCLE_POD_CIDR": ""}
    return subprocess.run(
        [sys.executable, str(REPO / "hack" / "cluster"), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


def test_the_launcher_offers_the_same_commands() -> None:
    result = _hack_cluster("--help", state=Path("/nonexistent"))
    assert result.returncode == 0
    assert "{build,up,down,status,env,versions,tool}" in result.stdout


def test_up_keeps_its_options(tmp_path: Path) -> None:
    result = _hack_cluster("up", "--help", state=tmp_path)
    assert "--nodes" in result.stdout
    assert "--pod-cidr" in result.stdout
    assert "--real-node {auto,on,off}" in result.stdout


def test_versions_prints_the_pins_and_addresses_as_json(tmp_path: Path) -> None:
    result = _hack_cluster("versions", state=tmp_path)
    assert result.returncode == 0, result.stderr
    shown = json.loads(result.stdout)
    assert shown["kubernetes"] == "v1.35.4"
    assert shown["apiserver"] == "https://127.0.0.1:16443"
    assert shown["bin"].endswith("/bin")


def test_env_prints_the_exports_the_test_fixtures_read(tmp_path: Path) -> None:
    result = _hack_cluster("env", state=tmp_path)
    exports = dict(
        line.removeprefix("export ").split("=", 1) for line in result.stdout.splitlines()
    )
    assert exports["KUBECONFIG"] == f"{tmp_path}/kubeconfig"
    assert exports["INFERCYCLE_PROMETHEUS_TARGETS"] == f"{tmp_path}/prometheus/targets"
    assert set(exports) >= {
        "INFERCYCLE_API_URL",
        "INFERCYCLE_PROMETHEUS_URL",
        "INFERCYCLE_POD_CIDR",
    }


def test_status_of_a_cluster_that_is_not_up_fails_and_says_so(tmp_path: Path) -> None:
    result = _hack_cluster("status", state=tmp_path / "absent")
    assert result.returncode == 1
    assert "(absent)" in result.stdout
    assert "kube-apiserver" in result.stdout
    assert "stopped" in result.stdout


def test_down_with_no_cluster_says_there_is_nothing_to_stop(tmp_path: Path) -> None:
    result = _hack_cluster("down", state=tmp_path / "absent")
    assert result.returncode == 0
    assert "nothing to stop" in result.stdout
