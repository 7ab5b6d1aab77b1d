"""Recycles on the real node: real containers, a real volume, the kubelet restarting them.

The operator runs as a process on the host; the pods run on the kubelet node with the project's
image (the stand-in server and the agent sidecar). One stand-in really leaks, the kubelet's
cAdvisor reports its working set, Prometheus scrapes it, and the operator recycles that pod:

- ``InPlace``: drained (it leaves the client Service's endpoints), checkpointed through the
  agent onto its PersistentVolume, its server process stopped; the kubelet restarts the
  container in the same pod, and the agent restores the sessions into the new process.
- ``Recreate``: evicted through the Eviction API; the StatefulSet creates the pod again, it
  mounts the same claim, and the agent restores the sessions from the checkpoint on it.

Healthy pods are never touched. Skipped, with the reason, where the machine cannot run
containers.
"""

from __future__ import annotations

import base64
import json
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from infercycle.kube.workload import SESSION_VOLUME
from localcluster.node import reclaim_released
from localcluster.workload import AGENT_PORT, SERVER_PORT
from tests.e2e.conftest import EndpointWatch, Fleet
from tests.e2e.operator_process import OperatorProcess
from tests.e2e.realnode import (
    HelmOperator,
    KustomizeOperator,
    Measurements,
    Operator,
    answers,
    deployment,
    event_time,
    http,
    pvc_host_path,
    ready_since,
    require_real_node,
    restarts,
)
from tests.fixtures.cluster import Cluster

pytestmark = [pytest.mark.e2e, pytest.mark.integration, pytest.mark.timeout(900)]

NAME = "llm"
REPLICAS = 3
VICTIM = f"{NAME}-1"
SESSIONS = 5


@pytest.fixture
def node_namespace(cluster: Cluster) -> Iterator[str]:
    require_real_node(cluster)
    assert cluster.state_dir is not None
    # The claims of earlier tests went with their namespaces: their volumes are free again.
    reclaim_released(cluster.state_dir)
    name = f"real-node-{secrets.token_hex(3)}"
    cluster.kubectl("create", "namespace", name)
    cluster.wait_for(
        f"the default ServiceAccount in {name}",
        lambda: cluster.kubectl("get", "sa", "default", "-n", name, check=False).returncode == 0,
        timeout=30,
        interval=0.2,
    )
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


def _pods(fleet: Fleet) -> dict[str, dict[str, Any]]:
    return {pod["metadata"]["name"]: pod for pod in fleet.pods()}


def _running_on_node(fleet: Fleet, node: str) -> dict[str, dict[str, Any]]:
    pods = _pods(fleet)
    ready = {
        name: pod
        for name, pod in pods.items()
        if pod["spec"].get("nodeName") == node
        and pod["status"].get("podIP")
        and ready_since(pod) is not None
    }
    return ready if len(ready) == REPLICAS else {}


def _token(cluster: Cluster, namespace: str) -> str:
    encoded = cluster.kubectl(
        "get", "secret", f"{NAME}-agent-token", "-n", namespace, "-o", "jsonpath={.data.token}"
    ).stdout.strip()
    return base64.b64decode(encoded).decode() if encoded else ""


def _start_sessions(ip: str) -> dict[str, Any]:
    for index in range(SESSIONS):
        for turn in range(2):
            http(
                "POST",
                f"http://{ip}:{SERVER_PORT}/v1/completions",
                {"session_id": f"chat-{index}", "prompt": f"turn {turn} of chat {index}"},
            )
    return dict(http("GET", f"http://{ip}:{SERVER_PORT}/sessions")["sessions"])


def _diagnose(cluster: Cluster, namespace: str, operator: Operator, fleet: Fleet) -> str:
    pods = cluster.kubectl("get", "pods,pvc", "-n", namespace, "-o", "wide", check=False)
    events = cluster.kubectl(
        "get", "events", "-n", namespace, "--sort-by=.lastTimestamp", check=False
    )
    agent = cluster.kubectl(
        "logs", VICTIM, "-n", namespace, "-c", "agent", "--tail=30", check=False
    )
    return (
        f"\n{pods.stdout}{pods.stderr}\n--- events:\n{events.stdout[-4000:]}\n"
        f"--- status: {fleet.status()}\n--- agent:\n{agent.stdout}{agent.stderr}\n"
        f"--- operator:\n{operator.tail()}"
    )


def _host_operator(cluster: Cluster, namespace: str, tmp_path: Path) -> OperatorProcess:
    assert cluster.prometheus_url is not None
    assert cluster.real_node_image is not None
    return OperatorProcess(
        str(cluster.kubeconfig),
        cluster.prometheus_url,
        tmp_path / "logs",
        namespaces=[namespace],
        extra_env={
            "INFERCYCLE_AGENT_IMAGE": cluster.real_node_image,
            "INFERCYCLE_AGENT_TIMEOUT": "30s",
        },
    )


def _recycle_on_the_real_node(
    cluster: Cluster,
    namespace: str,
    operator: Operator,
    strategy: str,
    on_operation: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Run one recycle of the leaking pod to the end; return the victim's agent status."""
    node = require_real_node(cluster)
    image = cluster.real_node_standin_image
    assert image is not None
    fleet = Fleet(cluster, namespace, NAME)
    measurements = Measurements()
    operator.start()
    try:
        fleet.apply(
            deployment(
                NAME, namespace, image, strategy=strategy, replicas=REPLICAS, leaking_pod=VICTIM
            )
        )
        try:
            before = cluster.wait_for(
                f"{REPLICAS} Ready pods on {node}",
                lambda: _running_on_node(fleet, node),
                timeout=240,
                interval=1,
            )
        except AssertionError as error:
            raise AssertionError(
                f"{error}{_diagnose(cluster, namespace, operator, fleet)}"
            ) from None
        token = cluster.wait_for("the agent token", lambda: _token(cluster, namespace), timeout=60)
        victim_ip = before[VICTIM]["status"]["podIP"]
        for pod in before.values():
            ip = pod["status"]["podIP"]
            assert answers(f"http://{ip}:{SERVER_PORT}/health"), pod["metadata"]["name"]
            status = http("GET", f"http://{ip}:{AGENT_PORT}/v1/status", token=token)
            if strategy == "InPlace":
                assert status["server"]["found"] is True, status
        sessions_before = _start_sessions(victim_ip)
        assert len(sessions_before) == SESSIONS

        operations: list[dict[str, Any]] = []

        def recycled() -> bool:
            status = fleet.status()
            operation = status.get("operation")
            if operation and operation not in operations:
                operations.append(operation)
                if on_operation is not None:
                    on_operation(operation)
            return bool(status.get("history"))

        with EndpointWatch(fleet, interval=0.3) as endpoints:
            try:
                cluster.wait_for(f"the {strategy} recycle", recycled, timeout=420, interval=0.5)
            except AssertionError as error:
                msg = f"{error}\noperations: {operations}"
                raise AssertionError(msg + _diagnose(cluster, namespace, operator, fleet)) from None
        history = fleet.history()
        assert len(history) == 1, history
        record = history[0]
        assert record["pod"] == VICTIM, record
        assert record["result"] == "Succeeded", (
            record,
            _diagnose(cluster, namespace, operator, fleet),
        )
        assert record["strategy"] == strategy
        assert any("memory-leak" in reason for reason in record["reasons"]), record
        assert endpoints.minimum is not None
        assert endpoints.minimum <= REPLICAS - 1, "the victim never left the client Service"

        after = cluster.wait_for(
            f"{REPLICAS} Ready pods after the recycle",
            lambda: _running_on_node(fleet, node),
            timeout=120,
        )
        victim = after[VICTIM]
        for name, pod in after.items():
            assert pod["spec"]["nodeName"] == node
            assert pod["metadata"]["labels"].get("infercycle.io/serving") == "true", name
            if name == VICTIM:
                continue
            assert pod["metadata"]["uid"] == before[name]["metadata"]["uid"], name
            assert restarts(pod) == 0, name
        if strategy == "InPlace":
            assert victim["metadata"]["uid"] == before[VICTIM]["metadata"]["uid"]
            assert restarts(victim) == 1, victim["status"]
        else:
            assert victim["metadata"]["uid"] != before[VICTIM]["metadata"]["uid"]
            assert restarts(victim) == 0, victim["status"]

        # The checkpoint is a file on the victim's own volume, and it came back.
        claim = f"{SESSION_VOLUME}-{VICTIM}"
        checkpoint_dir = pvc_host_path(cluster, namespace, claim) / "checkpoints"
        written = (
            sorted(p.name for p in checkpoint_dir.iterdir()) if checkpoint_dir.is_dir() else []
        )
        assert written, f"no checkpoint on the claim's volume {checkpoint_dir}"
        # The session hook's answer, as the agent wrote it onto the volume.
        (payload,) = checkpoint_dir.glob("*/data/sessions.json")
        saved = json.loads(payload.read_text())
        checkpointed = len(saved["sessions"])
        assert checkpointed == SESSIONS, saved
        ip = victim["status"]["podIP"]

        def restored() -> dict[str, Any]:
            last = http("GET", f"http://{ip}:{AGENT_PORT}/v1/status", token=token)
            restore = last.get("lastRestore") or {}
            return dict(last) if restore.get("result") == "restored" else {}

        agent_status = cluster.wait_for("the restore into the new server", restored, timeout=90)
        sessions_after = dict(http("GET", f"http://{ip}:{SERVER_PORT}/sessions")["sessions"])
        assert sessions_after == sessions_before

        events = fleet.events()
        started = min(event_time(e) for e in events if e["reason"] == "RecycleStarted")
        ready = ready_since(victim)
        assert ready is not None
        key = strategy.lower()
        measurements.record(
            **{
                f"{key}_decision_to_ready_seconds": (ready - started).total_seconds(),
                f"{key}_sessions_checkpointed": checkpointed,
                f"{key}_checkpoint_entries": agent_status["lastCheckpoint"]["entries"],
                f"{key}_sessions_restored": len(sessions_after),
                f"{key}_checkpoint_files": written,
            }
        )
        reasons = {event["reason"] for event in events}
        assert {"RecycleStarted", "Checkpointing", "Restarting", "RecycleSucceeded"} <= reasons
        assert "RecycleEscalated" not in reasons
        return dict(agent_status)
    finally:
        cluster.kubectl(
            "delete", "inferencedeployment", NAME, "-n", namespace, "--ignore-not-found",
            "--timeout=90s", check=False,
        )  # fmt: skip
        operator.stop()


def test_leaking_container_is_restarted_in_place_by_the_kubelet_and_keeps_its_sessions(
    cluster: Cluster, node_namespace: str, crds: None, tmp_path: Path
) -> None:
    operator = _host_operator(cluster, node_namespace, tmp_path)
    _recycle_on_the_real_node(cluster, node_namespace, operator, "InPlace")


def test_leaking_pod_is_evicted_recreated_on_its_own_volume_and_keeps_its_sessions(
    cluster: Cluster, node_namespace: str, crds: None, tmp_path: Path
) -> None:
    operator = _host_operator(cluster, node_namespace, tmp_path)
    _recycle_on_the_real_node(cluster, node_namespace, operator, "Recreate")


def test_helm_installed_operator_killed_mid_recycle_resumes_and_restarts_the_pod_once(
    cluster: Cluster, node_namespace: str, crds: None, tmp_path: Path
) -> None:
    """The chart as users install it, the operator in a pod under its own ServiceAccount and
    RBAC, Prometheus through a Service; its container is SIGKILLed by the runtime (as an OOM
    kill would) while the recycle is under way, and the restarted operator finishes it."""
    operator = HelmOperator(cluster, [node_namespace], tmp_path)
    kills: list[str] = []

    def kill_while_checkpointing(operation: dict[str, Any]) -> None:
        if not kills and operation.get("step") in ("Checkpointing", "Restarting"):
            kills.append(str(operation["step"]))
            operator.kill_container()

    try:
        _recycle_on_the_real_node(
            cluster, node_namespace, operator, "InPlace", on_operation=kill_while_checkpointing
        )
    finally:
        operator.stop()
    assert kills, "the recycle never reached a step to kill the operator in"
    assert operator.final_restarts >= 1, (
        "the operator's container was not restarted",
        operator.errors,
    )
    assert operator.final_rss is not None, operator.errors
    Measurements().record(
        operator_killed_in_step=kills[0],
        operator_pod_rss_bytes=operator.final_rss,
        operator_container_restarts=operator.final_restarts,
    )


def test_helm_installed_two_replicas_the_standby_finishes_the_recycle_when_the_leader_goes(
    cluster: Cluster, node_namespace: str, crds: None, tmp_path: Path
) -> None:
    """``leaderElection.enabled`` with two replicas: one holds the Lease and recycles; its pod is
    deleted mid-recycle (a node drain, a rollout), the other replica takes the Lease and finishes
    the recycle, and the pod is restarted once.

    (A leader whose container is killed and restarted in place keeps its identity, the pod's
    name, and resumes at once: the single-replica test above covers that.)"""
    operator = HelmOperator(cluster, [node_namespace], tmp_path, replicas=2)
    deleted: list[tuple[str, str]] = []

    def delete_the_leader(operation: dict[str, Any]) -> None:
        if not deleted and operation.get("step") in ("Checkpointing", "Restarting"):
            deleted.append((str(operation["step"]), operator.delete_leader()))

    try:
        _recycle_on_the_real_node(
            cluster, node_namespace, operator, "InPlace", on_operation=delete_the_leader
        )
        lease = operator.lease()
    finally:
        operator.stop()
    assert deleted, "the recycle never reached a step to delete the leader in"
    holder = str(lease.get("holderIdentity") or "")
    assert holder, lease
    assert not holder.startswith(f"{deleted[0][1]}-"), (lease, deleted)
    assert int(lease.get("leaseTransitions") or 0) >= 1, lease


def test_the_kubelet_reports_the_containers_memory_to_prometheus(
    cluster: Cluster, crds: None
) -> None:
    node = require_real_node(cluster)

    # The node's root cgroup ("/") is always there; pods' containers come with their labels.
    found = cluster.wait_for(
        "cAdvisor series of the real node",
        lambda: cluster.prometheus_query(
            f'container_memory_working_set_bytes{{node="{node}",id="/"}}'
        ),
        timeout=90,
    )
    assert float(found[0]["value"][1]) > 0
    resource = cluster.wait_for(
        "the kubelet's resource metrics",
        lambda: cluster.prometheus_query(f'node_memory_working_set_bytes{{node="{node}"}}'),
        timeout=90,
    )
    assert float(resource[0]["value"][1]) > 0


def test_kustomize_installed_operator_runs_under_its_service_account_and_reads_prometheus(
    cluster: Cluster, node_namespace: str, crds: None, tmp_path: Path
) -> None:
    """``kubectl apply -k manifests/`` (an overlay swaps the image for the one built here): the
    operator's pod runs on the real node under its own ServiceAccount, creates the workload's
    children and reads the pods' metrics through the Prometheus Service."""
    require_real_node(cluster)
    image = cluster.real_node_standin_image
    assert image is not None
    operator = KustomizeOperator(cluster, [node_namespace], tmp_path)
    fleet = Fleet(cluster, node_namespace, NAME)
    operator.start()
    try:
        pod = operator.pod()
        assert pod["spec"]["serviceAccountName"] == "infercycle-operator"
        assert pod["spec"]["nodeName"] == cluster.real_node
        fleet.apply(
            deployment(
                NAME, node_namespace, image, strategy="InPlace", replicas=2, leaking_pod=None
            )
        )

        def metrics_available() -> bool:
            condition = fleet.condition("MetricsAvailable")
            return condition.get("status") == "True"

        try:
            cluster.wait_for("MetricsAvailable=True", metrics_available, timeout=240, interval=1)
        except AssertionError as error:
            raise AssertionError(
                f"{error}\nstatus: {fleet.status()}\n--- operator:\n{operator.tail()}"
            ) from None
        for kind in ("statefulset", "service", "pdb"):
            cluster.kubectl("get", kind, NAME, "-n", node_namespace)
        pods = _pods(fleet)
        assert all(restarts(p) == 0 for p in pods.values()), pods
        assert not fleet.history()
    finally:
        cluster.kubectl(
            "delete", "inferencedeployment", NAME, "-n", node_namespace, "--ignore-not-found",
            "--timeout=90s", check=False,
        )  # fmt: skip
        operator.stop()
