"""The operator end to end: real API server, real Prometheus, simulated fleet metrics, and the
operator as a real process. Policies run on a compressed clock (see conftest.fast_health)."""

from __future__ import annotations

import json
import subprocess
import time
from typing import Any

import pytest

from infercycle_sim.fleets import collector_sawtooth
from tests.e2e.conftest import EndpointWatch, Fleet
from tests.e2e.operator_process import OperatorProcess
from tests.fixtures.cluster import Cluster, FleetSim

pytestmark = [pytest.mark.e2e, pytest.mark.integration, pytest.mark.timeout(600)]

LEAK = {"rate": 36000.0, "onset": 0.0}  # MiB per simulated hour: ~350 GiB/h on the real clock


def _succeeded(fleet: Fleet) -> list[dict[str, Any]]:
    return [r for r in fleet.history() if r["result"] in ("Succeeded", "Escalated")]


def test_two_leaking_pods_of_eight_are_recycled_one_at_a_time(
    make_fleet: Any, operator: OperatorProcess, cluster: Cluster, prometheus_query: Any
) -> None:
    fleet: Fleet = make_fleet("llm", replicas=8)
    before = fleet.wait_ready(8)
    leaky = sorted(before)[2], sorted(before)[5]
    # Ready pods reach the client Service's EndpointSlice a moment later; measure from there.
    cluster.wait_for("8 serving endpoints", lambda: fleet.serving_endpoints() == 8, timeout=60)
    with EndpointWatch(fleet) as endpoints:
        for pod in leaky:
            fleet.set_scenario(pod, "leak", LEAK)
        seen_operations: list[tuple[str, str]] = []

        def both_done() -> bool:
            status = fleet.status()
            operation = status.get("operation")
            if operation and (operation["pod"], operation["step"]) not in seen_operations:
                seen_operations.append((operation["pod"], operation["step"]))
            return len(_succeeded(fleet)) >= 2

        cluster.wait_for("both leaking pods recycled", both_done, timeout=300, interval=1.0)
        time.sleep(4)  # a few more cycles: nothing else may be touched
    records = fleet.history()
    assert sorted(r["pod"] for r in records) == sorted(leaky), records
    assert all(r["strategy"] == "Recreate" for r in records)
    assert all(any("memory-leak" in reason for reason in r["reasons"]) for r in records), records
    # One at a time: the second recycle started after the first finished.
    first, second = sorted(records, key=lambda r: r["startedAt"])
    assert second["startedAt"] >= first["finishedAt"]
    # The rules held for their windows: no recycle before warm-up + window + sustain.
    after = fleet.wait_ready(8)
    for name, uid in after.items():
        if name in leaky:
            assert uid != before[name], f"{name} was not recreated"
        else:
            assert uid == before[name], f"healthy pod {name} was restarted"
    assert endpoints.samples > 10
    assert endpoints.minimum is not None
    assert endpoints.minimum >= 7, endpoints.minimum
    # The new pods do not leak: the simulator started them fresh (new UID, healthy scenario).
    sims = {p["name"]: p for p in _sim_pods(cluster) if p["namespace"] == fleet.namespace}
    for name in leaky:
        assert sims[name]["uid"] == after[name]
        assert sims[name]["scenario"] == "healthy"
    assert (
        operator.metric_value(
            "infercycle_recycles_total", namespace=fleet.namespace, result="Succeeded"
        )
        == 2
    )
    reasons = {event["reason"] for event in fleet.events()}
    assert {"RecycleStarted", "Draining", "Restarting", "RecycleSucceeded"} <= reasons


def _sim_pods(cluster: Cluster) -> list[dict[str, Any]]:
    import urllib.request  # noqa: PLC0415

    with urllib.request.urlopen("http://127.0.0.1:19100/pods", timeout=5) as answer:
        return list(json.loads(answer.read()))


def test_healthy_fleet_with_spikes_and_a_surge_is_never_recycled(
    make_fleet: Any, operator: OperatorProcess, cluster: Cluster, fleetsim: FleetSim
) -> None:
    # The surge rides on every pod, the three that turn peculiar too: were it on half the
    # fleet, that half would carry 2.5x its peers' load and be, rightly, an outlier.
    fleet: Fleet = make_fleet("calm", replicas=6, scenario="surge", surge=True)
    before = fleet.wait_ready(6)
    names = sorted(before)
    fleet.set_scenario(names[0], "spikes")
    fleet.set_scenario(names[1], "cleanup_spikes")
    # Teeth that climb at 4.8x the leak level, two in every growth window (see there why).
    fleet.set_scenario(names[2], "gc_sawtooth", collector_sawtooth(fleetsim.speed))
    deadline = time.monotonic() + 75  # warm-up, every window, several times over
    while time.monotonic() < deadline:
        status = fleet.status()
        assert not status.get("operation"), status.get("operation")
        time.sleep(2)
    status = fleet.status()
    assert status.get("history") in (None, []), status.get("history")
    assert fleet.ready_pods() == before
    assert fleet.condition("MetricsAvailable").get("status") == "True", fleet.condition(
        "MetricsAvailable"
    )
    assert fleet.condition("Degraded").get("status") == "False"
    assert status["observedGeneration"] == fleet.get()["metadata"]["generation"]
    assert len(status["pods"]) == 6


def test_operator_killed_in_every_step_finishes_the_recycle_once(
    make_fleet: Any, operator: OperatorProcess, cluster: Cluster
) -> None:
    fleet: Fleet = make_fleet(
        "crashy",
        replicas=4,
        extra_spec={
            "recycle": {"drainTimeout": "8s", "readyTimeout": "60s", "verifyWindow": "8s"},
        },
    )
    before = fleet.wait_ready(4)
    victim = sorted(before)[1]
    fleet.set_scenario(victim, "leak", LEAK)
    killed_in: list[str] = []

    def step() -> str | None:
        operation = fleet.status().get("operation")
        return operation["step"] if operation else None

    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and not _succeeded(fleet):
        current = step()
        if current and current not in killed_in:
            operator.kill()
            killed_in.append(current)
            time.sleep(1)
            operator.start()
        time.sleep(0.5)
    assert _succeeded(fleet), f"recycle did not finish; killed in {killed_in}\n{operator.tail()}"
    assert "Draining" in killed_in, killed_in
    assert len(killed_in) >= 3, killed_in
    records = fleet.history()
    assert [r["pod"] for r in records] == [victim], records
    after = fleet.wait_ready(4)
    for name, uid in after.items():
        assert (uid != before[name]) == (name == victim)
    assert all(
        pod["metadata"]["labels"].get("infercycle.io/serving") == "true" for pod in fleet.pods()
    ), "a pod stayed drained"


def test_prometheus_down_means_no_action_and_says_so(
    make_fleet: Any, operator: OperatorProcess, cluster: Cluster
) -> None:
    fleet: Fleet = make_fleet("blind", replicas=4)
    before = fleet.wait_ready(4)
    cluster.wait_for(
        "metrics available",
        lambda: fleet.condition("MetricsAvailable").get("status") == "True",
        timeout=60,
    )
    assert cluster.state_dir is not None
    pid = int((cluster.state_dir / "run" / "prometheus.pid").read_text())
    subprocess.run(["kill", "-STOP", str(pid)], check=True)
    try:
        fleet.set_scenario(sorted(before)[0], "leak", LEAK)
        condition = cluster.wait_for(
            "MetricsAvailable=False",
            lambda: (c := fleet.condition("MetricsAvailable")).get("status") == "False" and c,
            timeout=60,
        )
        # A stopped (hung) server accepts connections and never answers: a timeout, not a
        # refused connection (that one reads PrometheusUnreachable; see tests/unit/prom).
        assert condition["reason"] == "PrometheusError", condition
        assert "timed out" in condition["message"], condition
        time.sleep(30)
        assert not fleet.status().get("operation")
        assert fleet.ready_pods() == before
        assert operator.metric_value("infercycle_metrics_available", namespace=fleet.namespace) == 0
        assert "MetricsUnavailable" in {event["reason"] for event in fleet.events()}
    finally:
        subprocess.run(["kill", "-CONT", str(pid)], check=True)
    cluster.wait_for(
        "metrics available again",
        lambda: fleet.condition("MetricsAvailable").get("status") == "True",
        timeout=90,
    )
    cluster.wait_for("the leak recycled after recovery", lambda: _succeeded(fleet), timeout=240)


def test_a_pdb_that_forbids_eviction_makes_the_operator_wait(
    make_fleet: Any, operator: OperatorProcess, cluster: Cluster, namespace: str
) -> None:
    fleet: Fleet = make_fleet(
        "guarded",
        replicas=3,
        extra_spec={"disruption": {"minAvailable": 1, "maxDegradedPercent": 50}},
    )
    before = fleet.wait_ready(3)
    # Someone tightens the deployment's budget to forbid any eviction.
    cluster.kubectl(
        "patch",
        "pdb",
        "guarded",
        "-n",
        namespace,
        "--type=merge",
        "-p",
        '{"spec": {"maxUnavailable": 0}}',
    )
    fleet.set_scenario(sorted(before)[0], "leak", LEAK)
    cluster.wait_for(
        "an EvictionBlocked event",
        lambda: "EvictionBlocked" in {event["reason"] for event in fleet.events()},
        timeout=240,
    )
    time.sleep(10)
    assert fleet.ready_pods() == before, "a pod was removed around the PodDisruptionBudget"
    operation = fleet.status().get("operation")
    assert operation
    assert operation["step"] == "Restarting", operation
    cluster.kubectl(
        "patch",
        "pdb",
        "guarded",
        "-n",
        namespace,
        "--type=merge",
        "-p",
        '{"spec": {"maxUnavailable": 1}}',
    )
    cluster.wait_for("the recycle after the PDB is lifted", lambda: _succeeded(fleet), timeout=180)


def test_circuit_breaker_pauses_when_most_of_the_fleet_degrades(
    make_fleet: Any, operator: OperatorProcess, cluster: Cluster
) -> None:
    fleet: Fleet = make_fleet("storm", replicas=4, scenario="leak")
    cluster.kubectl(
        "annotate",
        "inferencedeployment",
        "storm",
        "-n",
        fleet.namespace,
        "--overwrite",
        "note=storm",
    )
    before = fleet.wait_ready(4)
    # The storm strikes every pod at once: one kubectl call, not four in a row a second apart.
    fleet.set_scenarios(before, "leak", LEAK)
    paused = cluster.wait_for(
        "Paused=True",
        lambda: (c := fleet.condition("Paused")).get("status") == "True" and c,
        timeout=180,
    )
    assert paused["reason"] == "CircuitBreakerOpen", paused
    time.sleep(8)
    assert not fleet.history()
    assert fleet.ready_pods() == before
    assert operator.metric_value("infercycle_circuit_breaker_open", namespace=fleet.namespace) == 1


def test_dry_run_decides_and_reports_but_touches_nothing(
    make_fleet: Any, cluster: Cluster, namespace: str, crds: None, tmp_path: Any
) -> None:
    assert cluster.prometheus_url is not None
    process = OperatorProcess(
        str(cluster.kubeconfig),
        cluster.prometheus_url,
        tmp_path / "logs",
        namespaces=[namespace],
        dry_run=True,
    )
    process.start()
    try:
        fleet: Fleet = make_fleet("rehearsal", replicas=4)
        before = fleet.wait_ready(4)
        victim = sorted(before)[3]
        fleet.set_scenario(victim, "leak", LEAK)
        cluster.wait_for(
            "a DryRun record",
            lambda: any(r["result"] == "DryRun" for r in fleet.history()),
            timeout=180,
        )
        records = fleet.history()
        assert {r["pod"] for r in records} == {victim}
        assert "DryRunRecycle" in {event["reason"] for event in fleet.events()}
        assert process.metric_value("infercycle_recycles_total", result="DryRun") >= 1
        time.sleep(6)
        assert fleet.ready_pods() == before
        assert all(
            pod["metadata"]["labels"].get("infercycle.io/serving") == "true" for pod in fleet.pods()
        )
        assert "(dry-run)" in fleet.status()["policy"]
    finally:
        process.stop()


def test_children_follow_the_spec_and_scale_subresource(
    make_fleet: Any, operator: OperatorProcess, cluster: Cluster, namespace: str
) -> None:
    fleet: Fleet = make_fleet("shape", replicas=2)
    fleet.wait_ready(2)
    for kind, name in (
        ("statefulset", "shape"),
        ("service", "shape"),
        ("service", "shape-pods"),
        ("poddisruptionbudget", "shape"),
    ):
        out = json.loads(cluster.kubectl("get", kind, name, "-n", namespace, "-o", "json").stdout)
        owners = out["metadata"]["ownerReferences"]
        assert owners[0]["kind"] == "InferenceDeployment", (kind, owners)
        assert owners[0]["controller"], (kind, owners)
    cluster.kubectl("scale", "inferencedeployment", "shape", "-n", namespace, "--replicas=3")
    fleet.wait_ready(3)
    cluster.wait_for(
        "status.replicas == 3 through the scale subresource",
        lambda: (
            json.loads(
                cluster.kubectl(
                    "get",
                    "--raw",
                    f"/apis/infercycle.io/v1alpha1/namespaces/{namespace}/inferencedeployments/shape/scale",
                ).stdout
            )["status"].get("replicas")
            == 3
        ),
        timeout=60,
    )
    spec = fleet.get()["spec"]
    assert spec["replicas"] == 3  # the operator never writes spec; only the scale did
    cluster.kubectl(
        "delete", "inferencedeployment", "shape", "-n", namespace, "--wait=true", timeout=120
    )
    cluster.wait_for(
        "children garbage-collected",
        lambda: (
            not json.loads(
                cluster.kubectl("get", "statefulsets", "-n", namespace, "-o", "json").stdout
            )["items"]
        ),
        timeout=120,
    )
