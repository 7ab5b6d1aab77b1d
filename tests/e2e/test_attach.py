"""Attach mode end to end: InferenceDeployments that point at workloads the user manages — a
Deployment run by kube-controller-manager, and a LeaderWorkerSet run by its own controller
built from its Go module — with simulated metrics and the operator as a real process. The
operator recycles exactly the condemned pod (or group) and never changes the workload."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import pytest

from infercycle_sim.fleets import SIM_AGE_OFFSET, fast_health
from tests.e2e.operator_process import OperatorProcess
from tests.fixtures.cluster import Cluster
from tests.fixtures.lws import LwsController

pytestmark = [pytest.mark.e2e, pytest.mark.integration, pytest.mark.timeout(600)]

LEAK = {"rate": 36000.0, "onset": 0.0}
GATE = "infercycle.io/serving"
LWS = "leaderworkerset.sigs.k8s.io/"


def pod_template(labels: dict[str, str], *, gated: bool = True) -> dict[str, Any]:
    """A simulated server's pod with the one line attach mode asks for: the readiness gate."""
    template: dict[str, Any] = {
        "metadata": {
            "labels": labels,
            "annotations": {
                "sim.infercycle.io/scenario": "healthy",
                "sim.infercycle.io/age-offset": SIM_AGE_OFFSET,
            },
        },
        "spec": {
            "readinessGates": [{"conditionType": GATE}],
            "containers": [
                {
                    "name": "server",
                    "image": "registry.invalid/inference-server:1",
                    "ports": [{"name": "http", "containerPort": 8000}],
                }
            ],
        },
    }
    if not gated:
        del template["spec"]["readinessGates"]
    return template


def attached(name: str, namespace: str, kind: str, target: str) -> dict[str, Any]:
    api = "leaderworkerset.x-k8s.io/v1" if kind == "LeaderWorkerSet" else "apps/v1"
    return {
        "apiVersion": "infercycle.io/v1alpha1",
        "kind": "InferenceDeployment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "targetRef": {"apiVersion": api, "kind": kind, "name": target},
            "health": fast_health(),
            "disruption": {
                "maxUnavailable": 1,
                "minAvailable": 1,
                "cooldown": "10m",
                "maxRecyclesPerHour": 10,
                "maxDegradedPercent": 50,
                "flapWindow": "1m",
            },
            "recycle": {"drainTimeout": "6s", "readyTimeout": "90s", "verifyWindow": "6s"},
        },
    }


class Workload:
    """kubectl around one namespace: the target object, its pods, the InferenceDeployment."""

    def __init__(self, cluster: Cluster, namespace: str) -> None:
        self.cluster = cluster
        self.namespace = namespace

    def apply(self, manifest: dict[str, Any]) -> None:
        self.cluster.kubectl("apply", "-n", self.namespace, "-f", "-", input=json.dumps(manifest))

    def get(self, kind: str, name: str) -> dict[str, Any]:
        out = self.cluster.kubectl("get", kind, name, "-n", self.namespace, "-o", "json").stdout
        return dict(json.loads(out))

    def pods(self, selector: str) -> list[dict[str, Any]]:
        out = self.cluster.kubectl(
            "get", "pods", "-n", self.namespace, "-l", selector, "-o", "json"
        ).stdout
        return list(json.loads(out)["items"])

    def ready(self, selector: str) -> dict[str, str]:
        """name -> uid of Running, Ready pods that are not terminating."""
        found = {}
        for pod in self.pods(selector):
            conditions = {c["type"]: c["status"] for c in pod["status"].get("conditions") or []}
            if (
                pod["status"].get("phase") == "Running"
                and conditions.get("Ready") == "True"
                and not pod["metadata"].get("deletionTimestamp")
            ):
                found[pod["metadata"]["name"]] = pod["metadata"]["uid"]
        return found

    def wait_ready(self, selector: str, count: int, timeout: float = 120) -> dict[str, str]:
        self.cluster.wait_for(
            f"{count} ready pods ({selector})",
            lambda: len(self.ready(selector)) == count,
            timeout=timeout,
        )
        return self.ready(selector)

    def infd(self, name: str) -> dict[str, Any]:
        return self.get("inferencedeployment", name)

    def history(self, name: str) -> list[dict[str, Any]]:
        return list((self.infd(name).get("status") or {}).get("history") or [])

    def condition(self, name: str, kind: str) -> dict[str, Any]:
        for condition in (self.infd(name).get("status") or {}).get("conditions") or []:
            if condition["type"] == kind:
                return dict(condition)
        return {}

    def event_reasons(self, name: str) -> list[str]:
        out = self.cluster.kubectl(
            "get",
            "events",
            "-n",
            self.namespace,
            "-o",
            "json",
            f"--field-selector=involvedObject.name={name}",
        ).stdout
        return [event["reason"] for event in json.loads(out)["items"]]

    def annotate(self, pod: str, scenario: str, params: dict[str, float]) -> None:
        self.cluster.kubectl(
            "annotate",
            "pod",
            pod,
            "-n",
            self.namespace,
            "--overwrite",
            f"sim.infercycle.io/scenario={scenario}",
            f"sim.infercycle.io/params={json.dumps(params)}",
        )


class GateWatch:
    """Samples one pod's readiness gate condition in the background: did it go False?"""

    def __init__(self, workload: Workload, pod: str, interval: float = 0.5) -> None:
        self.workload = workload
        self.pod = pod
        self.interval = interval
        self.seen: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> GateWatch:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.is_set():
            out = self.workload.cluster.kubectl(
                "get", "pod", self.pod, "-n", self.workload.namespace, "-o", "json", check=False
            )
            if out.returncode == 0:
                for condition in json.loads(out.stdout)["status"].get("conditions") or []:
                    if condition["type"] == GATE:
                        self.seen.add(condition["status"])
            time.sleep(self.interval)


def untouched(before: dict[str, Any], after: dict[str, Any]) -> None:
    """The workload object as the user wrote it: same spec, same generation."""
    assert after["spec"] == before["spec"]
    assert after["metadata"]["generation"] == before["metadata"]["generation"]


def recycled(workload: Workload, name: str) -> list[dict[str, Any]]:
    return [r for r in workload.history(name) if r["result"] in ("Succeeded", "Escalated")]


def test_a_leaking_pod_of_an_existing_deployment_is_recycled_and_the_deployment_untouched(
    cluster: Cluster, namespace: str, crds: None, fleetsim: Any, operator: OperatorProcess
) -> None:
    workload = Workload(cluster, namespace)
    workload.apply(
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "web"},
            "spec": {
                "replicas": 4,
                "selector": {"matchLabels": {"app": "web"}},
                "template": pod_template({"app": "web"}),
            },
        }
    )
    before = workload.wait_ready("app=web", 4)
    target_before = workload.get("deployment", "web")
    workload.apply(attached("web-health", namespace, "Deployment", "web"))
    cluster.wait_for(
        "the attached deployment judged",
        lambda: workload.condition("web-health", "MetricsAvailable").get("status") == "True",
        timeout=90,
    )
    drainable = workload.condition("web-health", "Drainable")
    assert (drainable["status"], drainable["reason"]) == ("True", "ReadinessGate"), drainable
    victim = sorted(before)[1]
    with GateWatch(workload, victim) as gate:
        workload.annotate(victim, "leak", LEAK)
        cluster.wait_for(
            "the leaking pod recycled",
            lambda: recycled(workload, "web-health"),
            timeout=300,
            interval=1.0,
        )
    # Drained through its status before the eviction: the gate condition went False.
    assert "False" in gate.seen, gate.seen
    time.sleep(4)  # a few more cycles: nothing else may be touched
    records = workload.history("web-health")
    assert [(r["pod"], r["strategy"]) for r in records] == [(victim, "Recreate")], records
    assert any("memory-leak" in reason for reason in records[0]["reasons"]), records
    after = workload.wait_ready("app=web", 4)
    assert victim not in after
    for name, uid in before.items():
        if name != victim:
            assert after.get(name) == uid, f"healthy pod {name} was restarted"
    # Every pod came into service through its gate, the replacement included.
    for pod in workload.pods("app=web"):
        gates = {c["type"]: c["status"] for c in pod["status"]["conditions"]}
        assert gates.get(GATE) == "True", pod["metadata"]["name"]
    untouched(target_before, workload.get("deployment", "web"))
    reasons = set(workload.event_reasons("web-health"))
    assert {"RecycleStarted", "Draining", "Restarting", "RecycleSucceeded"} <= reasons


def test_a_statefulset_without_the_gate_is_recycled_undrained_and_the_condition_says_so(
    cluster: Cluster, namespace: str, crds: None, fleetsim: Any, operator: OperatorProcess
) -> None:
    workload = Workload(cluster, namespace)
    workload.apply(
        {
            "apiVersion": "apps/v1",
            "kind": "StatefulSet",
            "metadata": {"name": "kv"},
            "spec": {
                "replicas": 3,
                "serviceName": "kv",
                "podManagementPolicy": "Parallel",
                "selector": {"matchLabels": {"app": "kv"}},
                "template": pod_template({"app": "kv"}, gated=False),
            },
        }
    )
    before = workload.wait_ready("app=kv", 3)
    target_before = workload.get("statefulset", "kv")
    workload.apply(attached("kv-health", namespace, "StatefulSet", "kv"))
    cluster.wait_for(
        "Drainable=False",
        lambda: workload.condition("kv-health", "Drainable").get("status") == "False",
        timeout=90,
    )
    drainable = workload.condition("kv-health", "Drainable")
    assert drainable["reason"] == "ReadinessGateMissing", drainable
    assert "readinessGates: [{conditionType: infercycle.io/serving}]" in drainable["message"]
    workload.annotate("kv-1", "leak", LEAK)
    cluster.wait_for(
        "the leaking pod recycled", lambda: recycled(workload, "kv-health"), timeout=300
    )
    time.sleep(4)
    records = workload.history("kv-health")
    assert [r["pod"] for r in records] == ["kv-1"], records
    after = workload.wait_ready("app=kv", 3)
    assert after["kv-1"] != before["kv-1"]  # the same name, a new pod
    assert {n: u for n, u in after.items() if n != "kv-1"} == {
        n: u for n, u in before.items() if n != "kv-1"
    }
    reasons = workload.event_reasons("kv-health")
    assert "NotDrained" in reasons, reasons
    assert "Draining" not in reasons, reasons
    untouched(target_before, workload.get("statefulset", "kv"))


def test_a_leaking_member_of_an_lws_group_restarts_that_group_once_and_no_other(
    cluster: Cluster,
    namespace: str,
    crds: None,
    fleetsim: Any,
    lws: LwsController,
    operator: OperatorProcess,
) -> None:
    workload = Workload(cluster, namespace)
    workload.apply(
        {
            "apiVersion": "leaderworkerset.x-k8s.io/v1",
            "kind": "LeaderWorkerSet",
            "metadata": {"name": "big"},
            "spec": {
                "replicas": 3,
                "leaderWorkerTemplate": {
                    "size": 3,
                    "workerTemplate": pod_template({"app": "big"}),
                },
            },
        }
    )
    selector = f"{LWS}name=big"
    before = workload.wait_ready(selector, 9, timeout=180)
    target_before = workload.get("leaderworkerset", "big")
    workload.apply(attached("big-health", namespace, "LeaderWorkerSet", "big"))
    cluster.wait_for(
        "the groups judged",
        lambda: workload.condition("big-health", "MetricsAvailable").get("status") == "True",
        timeout=90,
    )
    assert "3/3 groups ready" in workload.condition("big-health", "Ready").get("message", "")
    with GateWatch(workload, "big-1") as gate:
        workload.annotate("big-1-2", "leak", LEAK)  # one worker of group 1
        cluster.wait_for(
            "the group recycled",
            lambda: recycled(workload, "big-health"),
            timeout=300,
            interval=1.0,
        )
    assert "False" in gate.seen, gate.seen  # the leader's endpoint was drained first
    time.sleep(4)
    records = workload.history("big-health")
    assert [(r["pod"], r["result"]) for r in records] == [("big-1", "Succeeded")], records
    assert any(reason.startswith("big-1-2: memory-leak") for reason in records[0]["reasons"])
    after = workload.wait_ready(selector, 9, timeout=120)
    for name, uid in before.items():
        if name.startswith("big-1"):
            assert after[name] != uid, f"{name} of the condemned group was not restarted"
        else:
            assert after[name] == uid, f"{name} of a healthy group was restarted"
    for pod in workload.pods(selector):
        if not pod["metadata"]["name"].startswith("big-1"):
            statuses = pod["status"].get("containerStatuses") or []
            assert all(s.get("restartCount", 0) == 0 for s in statuses)
    reasons = workload.event_reasons("big-health")
    assert reasons.count("RecycleStarted") == 1, reasons
    untouched(target_before, workload.get("leaderworkerset", "big"))
