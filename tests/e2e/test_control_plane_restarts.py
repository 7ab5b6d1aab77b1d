"""kube-apiserver, or etcd, restarted while a recycle is in flight, on the local cluster: the
operator (a real process) rides out the outage, finishes the recycle once, restarts only the
condemned pod, and leaves nothing drained.

The fault-injection report (``benchmarks/faults.py --cluster``) runs this file with
``INFERCYCLE_FAULTS_OUT`` set: each test appends its counts there as one JSON line. Without it
the tests are skipped, so the normal test run does not restart the control plane.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import EndpointWatch, Fleet
from tests.e2e.operator_process import OperatorProcess
from tests.fixtures.cluster import Cluster, start_local_cluster

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.integration,
    pytest.mark.timeout(600),
    # Part of the long fault-injection run, not of every test run: it restarts the control plane.
    pytest.mark.skipif(
        not os.environ.get("INFERCYCLE_FAULTS_OUT"),
        reason="run by: flock /tmp/infercycle-cluster.lock python benchmarks/faults.py --cluster",
    ),
]

LEAK = {"rate": 36000.0, "onset": 0.0}
REPLICAS = 4


def _restart(cluster: Cluster, component: str, log: Path) -> None:
    """SIGKILL the component's process group, then ``hack/cluster up`` starts it again."""
    os.killpg(cluster.pid(component), signal.SIGKILL)
    time.sleep(2)  # an outage, not a blip
    start_local_cluster(log=log)
    cluster.wait_for(
        "the API server answers",
        lambda: cluster.kubectl("get", "--raw", "/readyz", check=False).returncode == 0,
        timeout=90,
    )


def _record(counts: dict[str, Any]) -> None:
    out = os.environ.get("INFERCYCLE_FAULTS_OUT")
    if out:
        with Path(out).open("a") as sink:
            sink.write(json.dumps(counts) + "\n")


@pytest.mark.parametrize("component", ["kube-apiserver", "etcd"])
def test_a_control_plane_restart_mid_recycle_finishes_the_recycle_once(
    component: str, make_fleet: Any, operator: OperatorProcess, cluster: Cluster, tmp_path: Path
) -> None:
    fleet: Fleet = make_fleet(
        "restarts",
        replicas=REPLICAS,
        extra_spec={
            "recycle": {"drainTimeout": "8s", "readyTimeout": "90s", "verifyWindow": "8s"},
        },
    )
    before = fleet.wait_ready(REPLICAS)
    victim = sorted(before)[1]
    fleet.set_scenario(victim, "leak", LEAK)
    restarted_in: list[str] = []
    deadline = time.monotonic() + 400
    with EndpointWatch(fleet) as endpoints:
        while time.monotonic() < deadline:
            try:
                status = fleet.status()
            except AssertionError:  # the API server is down or coming back
                time.sleep(0.5)
                continue
            operation = status.get("operation")
            if operation and len(restarted_in) < 2 and operation["step"] not in restarted_in:
                _restart(cluster, component, tmp_path / f"{component}.log")
                restarted_in.append(operation["step"])
            if not operation and status.get("history"):
                break
            time.sleep(0.5)
    records = fleet.history()
    after = fleet.wait_ready(REPLICAS, timeout=180)
    changed = [name for name, uid in after.items() if uid != before.get(name)]
    drained = [
        pod["metadata"]["name"]
        for pod in fleet.pods()
        if pod["metadata"]["labels"].get("infercycle.io/serving") != "true"
    ]
    counts = {
        "component": component,
        "restarts": len(restarted_in),
        "restarted_twice": max(0, sum(r["pod"] == victim for r in records) - 1),
        "beyond_guards": len([n for n in changed if n != victim])
        + int((endpoints.minimum or REPLICAS) < REPLICAS - 1),
        "left_drained": len(drained),
        "finished": [r["result"] for r in records],
    }
    _record(counts)
    assert restarted_in, f"the recycle finished before {component} could be restarted"
    assert [r["pod"] for r in records] == [victim], (records, operator.tail())
    assert records[0]["result"] in ("Succeeded", "Escalated"), records
    assert counts["restarted_twice"] == counts["beyond_guards"] == counts["left_drained"] == 0
