"""Two operator processes with leader election against the real API server: only the leader
acts, and when it is killed the standby takes over and finishes the work.

Prints the failover time (``-s``): from SIGKILL of the leader to the standby reporting
``infercycle_leader 1``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import Fleet
from tests.e2e.operator_process import OperatorProcess
from tests.fixtures.cluster import Cluster

pytestmark = [pytest.mark.e2e, pytest.mark.integration, pytest.mark.timeout(600)]

LEAK = {"rate": 36000.0, "onset": 0.0}


@pytest.fixture
def replicas(
    cluster: Cluster, namespace: str, crds: None, tmp_path: Path
) -> Iterator[list[OperatorProcess]]:
    assert cluster.prometheus_url is not None
    processes = [
        OperatorProcess(
            str(cluster.kubeconfig),
            cluster.prometheus_url,
            tmp_path / f"logs-{name}",
            namespaces=[namespace],
            extra_env={
                "INFERCYCLE_LEADER_ELECTION": "true",
                "INFERCYCLE_OPERATOR_NAMESPACE": namespace,
                "POD_NAME": name,
            },
        )
        for name in ("replica-a", "replica-b")
    ]
    for process in processes:
        process.start()
    yield processes
    survivors = [p for p in processes if p.process is not None and p.process.poll() is None]
    if survivors:  # a running operator releases the finalizers
        cluster.kubectl(
            "delete", "inferencedeployments", "--all", "-n", namespace,
            "--wait=true", "--timeout=60s", check=False, timeout=90,
        )  # fmt: skip
    for process in processes:
        process.stop()


def _leading(process: OperatorProcess) -> bool:
    try:
        return process.metric_value("infercycle_leader") == 1
    except OSError:
        return False


def _recycled(fleet: Fleet) -> list[dict[str, Any]]:
    return [r for r in fleet.history() if r["result"] in ("Succeeded", "Escalated")]


def test_only_the_leader_acts_and_the_standby_takes_over_when_it_is_killed(
    make_fleet: Any, replicas: list[OperatorProcess], cluster: Cluster
) -> None:
    cluster.wait_for("a leader", lambda: any(_leading(p) for p in replicas), timeout=60)
    leader, standby = replicas if _leading(replicas[0]) else replicas[::-1]
    assert not _leading(standby)

    fleet: Fleet = make_fleet("llm", replicas=4)
    pods = sorted(fleet.wait_ready(4))
    fleet.set_scenario(pods[1], "leak", LEAK)
    cluster.wait_for("the first recycle", lambda: len(_recycled(fleet)) >= 1, timeout=300)
    assert leader.metric_value("infercycle_recycles_total", result="Succeeded") == 1
    assert standby.metric_value("infercycle_recycles_total") == 0  # it evaluated, never acted

    leader.kill()
    killed = time.monotonic()
    cluster.wait_for("the standby leads", lambda: _leading(standby), timeout=60, interval=0.2)
    failover = time.monotonic() - killed
    print(f"\nfailover with two operator processes: {failover:.1f}s")
    assert failover < 30

    fleet.wait_ready(4)
    fleet.set_scenario(pods[3], "leak", LEAK)
    cluster.wait_for("the second recycle", lambda: len(_recycled(fleet)) >= 2, timeout=300)
    records = _recycled(fleet)
    assert sorted(r["pod"] for r in records) == [pods[1], pods[3]]
    assert standby.metric_value("infercycle_recycles_total", result="Succeeded") == 1
    first, second = sorted(records, key=lambda r: r["startedAt"])
    assert second["startedAt"] >= first["finishedAt"]
