"""The local cluster is real: scheduling, StatefulSets, PDB-guarded eviction, Prometheus."""

from __future__ import annotations

import ipaddress
import json
import math
import socket
from pathlib import Path
from typing import Any

import pytest
import yaml

from infercycle.api.servers import profile_for
from tests.fixtures.cluster import Cluster, FleetSim

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
P99_QUERY = (
    "histogram_quantile(0.99, sum by (namespace, pod, le) "
    "(rate(vllm:e2e_request_latency_seconds_bucket[30s])))"
)


def statefulset(
    name: str,
    replicas: int,
    *,
    annotations: dict[str, str] | None = None,
    resources: dict[str, Any] | None = None,
    volume_size: str | None = None,
) -> dict[str, Any]:
    labels = {"app": name}
    container: dict[str, Any] = {"name": "server", "image": "example.invalid/vllm:sim"}
    if resources:
        container["resources"] = resources
    spec: dict[str, Any] = {
        "serviceName": name,
        "replicas": replicas,
        "podManagementPolicy": "Parallel",
        "selector": {"matchLabels": labels},
        "template": {
            "metadata": {"labels": labels, "annotations": annotations or {}},
            "spec": {"containers": [container], "terminationGracePeriodSeconds": 5},
        },
    }
    if volume_size:
        container["volumeMounts"] = [{"name": "sessions", "mountPath": "/sessions"}]
        spec["volumeClaimTemplates"] = [
            {
                "metadata": {"name": "sessions"},
                "spec": {
                    "accessModes": ["ReadWriteOnce"],
                    "resources": {"requests": {"storage": volume_size}},
                },
            }
        ]
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": name},
        "spec": spec,
    }


def apply(cluster: Cluster, namespace: str, *objects: dict[str, Any]) -> None:
    body = {"apiVersion": "v1", "kind": "List", "items": list(objects)}
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(body))


def pods(cluster: Cluster, namespace: str, selector: str) -> list[dict[str, Any]]:
    out = cluster.kubectl("get", "pods", "-n", namespace, "-l", selector, "-o", "json").stdout
    items: list[dict[str, Any]] = json.loads(out)["items"]
    return items


def is_ready(pod: dict[str, Any]) -> bool:
    conditions = pod.get("status", {}).get("conditions") or []
    return pod.get("status", {}).get("phase") == "Running" and any(
        c["type"] == "Ready" and c["status"] == "True" for c in conditions
    )


def wait_ready_pods(
    cluster: Cluster, namespace: str, selector: str, count: int, timeout: float = 60
) -> list[dict[str, Any]]:
    def check() -> list[dict[str, Any]] | None:
        items = [p for p in pods(cluster, namespace, selector) if is_ready(p)]
        alive = [p for p in items if not p["metadata"].get("deletionTimestamp")]
        return alive if len(alive) == count else None

    result: list[dict[str, Any]] = cluster.wait_for(
        f"{count} Ready pods {selector} in {namespace}", check, timeout=timeout
    )
    return result


def test_statefulset_pods_become_ready_on_kwok_nodes(cluster: Cluster, namespace: str) -> None:
    apply(cluster, namespace, statefulset("web", 3, volume_size="1Gi"))

    ready = wait_ready_pods(cluster, namespace, "app=web", 3)

    nodes = json.loads(cluster.kubectl("get", "nodes", "-l", "type=kwok", "-o", "json").stdout)
    kwok_nodes = {n["metadata"]["name"] for n in nodes["items"]}
    assert {p["spec"]["nodeName"] for p in ready} <= kwok_nodes
    ips = [ipaddress.ip_address(p["status"]["podIP"]) for p in ready]
    assert len(set(ips)) == 3
    if cluster.pod_cidr:
        network = ipaddress.ip_network(cluster.pod_cidr)
        assert all(ip in network for ip in ips), (ips, network)
        # A test can serve on a pod's address, as the pod's server would.
        with socket.socket() as server:
            server.bind((str(ips[0]), 0))
            server.listen()
            with socket.create_connection(server.getsockname(), timeout=5):
                pass
    claims = json.loads(cluster.kubectl("get", "pvc", "-n", namespace, "-o", "json").stdout)
    assert sorted(c["status"]["phase"] for c in claims["items"]) == ["Bound"] * 3
    sts = json.loads(
        cluster.kubectl("get", "statefulset", "web", "-n", namespace, "-o", "json").stdout
    )
    assert sts["status"].get("readyReplicas") == 3


def test_eviction_respects_pod_disruption_budget(
    cluster: Cluster, namespace: str, k8s_client: Any
) -> None:
    from kubernetes import client  # noqa: PLC0415
    from kubernetes.client.exceptions import ApiException  # noqa: PLC0415

    pdb = {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": {"name": "guard"},
        "spec": {"maxUnavailable": 0, "selector": {"matchLabels": {"app": "guarded"}}},
    }
    apply(cluster, namespace, statefulset("guarded", 2), pdb)
    ready = wait_ready_pods(cluster, namespace, "app=guarded", 2)
    policy = client.PolicyV1Api(k8s_client)
    core = client.CoreV1Api(k8s_client)

    def pdb_status() -> Any:
        status = policy.read_namespaced_pod_disruption_budget("guard", namespace).status
        return status if status and status.current_healthy == 2 else None

    cluster.wait_for("the disruption controller to observe the PDB", pdb_status, timeout=30)
    victim = ready[0]["metadata"]["name"]
    eviction = client.V1Eviction(metadata=client.V1ObjectMeta(name=victim, namespace=namespace))

    with pytest.raises(ApiException) as refused:
        core.create_namespaced_pod_eviction(victim, namespace, eviction)
    assert refused.value.status == 429, refused.value.body

    # Once the budget allows one disruption the same eviction goes through, and the
    # StatefulSet replaces the pod (same name, new UID) once KWOK has removed the old one.
    old_uid = ready[0]["metadata"]["uid"]
    policy.patch_namespaced_pod_disruption_budget(
        "guard", namespace, {"spec": {"maxUnavailable": 1}}
    )
    cluster.wait_for(
        "the PDB to allow one disruption",
        lambda: (
            (
                policy.read_namespaced_pod_disruption_budget("guard", namespace).status
            ).disruptions_allowed
            == 1
        ),
        timeout=30,
    )
    core.create_namespaced_pod_eviction(victim, namespace, eviction)
    cluster.wait_for(
        f"{victim} to be recreated",
        lambda: any(
            p["metadata"]["name"] == victim and p["metadata"]["uid"] != old_uid and is_ready(p)
            for p in pods(cluster, namespace, "app=guarded")
        ),
        timeout=60,
    )


def test_gpu_requests_are_scheduled_against_node_capacity(cluster: Cluster, namespace: str) -> None:
    fits = statefulset(
        "gpu", 2, resources={"limits": {"nvidia.com/gpu": "4"}, "requests": {"cpu": "2"}}
    )
    too_big = statefulset("huge", 1, resources={"limits": {"nvidia.com/gpu": "9"}})
    apply(cluster, namespace, fits, too_big)

    ready = wait_ready_pods(cluster, namespace, "app=gpu", 2)
    assert all(
        p["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "4" for p in ready
    )

    def unschedulable() -> bool:
        items = pods(cluster, namespace, "app=huge")
        if not items:
            return False
        conditions = items[0].get("status", {}).get("conditions") or []
        return any(
            c["type"] == "PodScheduled"
            and c["status"] == "False"
            and c.get("reason") == "Unschedulable"
            for c in conditions
        )

    cluster.wait_for("the 9-GPU pod to be reported Unschedulable", unschedulable, timeout=30)
    pod = pods(cluster, namespace, "app=huge")[0]
    assert pod["status"]["phase"] == "Pending"
    assert not pod["spec"].get("nodeName")


def running_pods(cluster: Cluster) -> set[tuple[str, str]]:
    out = cluster.kubectl(
        "get", "pods", "-A", "--field-selector=status.phase=Running", "-o", "json"
    ).stdout
    return {
        (p["metadata"]["namespace"], p["metadata"]["name"])
        for p in json.loads(out)["items"]
        if not p["metadata"].get("deletionTimestamp")
    }


def test_prometheus_p99_query_covers_every_running_pod(
    cluster: Cluster, namespace: str, fleetsim: FleetSim
) -> None:
    # Ten simulated minutes old: past the model's loading phase, so the pods serve traffic.
    annotations = {"sim.infercycle.io/age-offset": "600"}
    creep = {
        "sim.infercycle.io/age-offset": "600",
        "sim.infercycle.io/scenario": "latency_creep",
        "sim.infercycle.io/params": json.dumps({"compression": 200}),
    }
    apply(
        cluster,
        namespace,
        statefulset("serve", 3, annotations=annotations),
        statefulset("creep", 1, annotations=creep),
    )
    wait_ready_pods(cluster, namespace, "app=serve", 3)
    wait_ready_pods(cluster, namespace, "app=creep", 1)
    mine = {(namespace, f"serve-{i}") for i in range(3)} | {(namespace, "creep-0")}

    def covered() -> dict[tuple[str, str], float] | None:
        expected = running_pods(cluster)
        assert mine <= expected
        result = cluster.prometheus_query(P99_QUERY)
        values = {
            (r["metric"]["namespace"], r["metric"]["pod"]): float(r["value"][1]) for r in result
        }
        missing = expected - set(values)
        if missing or not all(math.isfinite(values[key]) for key in mine):
            return None
        return values

    values = cluster.wait_for("a p99 series for every Running pod", covered, timeout=60)

    simulated = {
        (p["namespace"], p["pod"]): p["sample"]["latency_p99"]
        for p in fleetsim.pods()
        if p["namespace"] == namespace
    }
    for i in range(3):
        key = (namespace, f"serve-{i}")
        assert simulated[key] is not None
        assert values[key] == pytest.approx(simulated[key], rel=0.35), key
    healthy = [values[(namespace, f"serve-{i}")] for i in range(3)]
    assert all(0.05 < v < 0.3 for v in healthy), healthy
    # 200x compression puts the creeping pod ~30 simulated hours in: well above its peers.
    assert values[(namespace, "creep-0")] > 1.5 * max(healthy)


def test_crds_apply_server_side(cluster: Cluster) -> None:
    files = sorted((REPO / "crds").glob("*.yaml"))
    if not files:
        pytest.skip("crds/ is empty; nothing to apply")
    for path in files:
        cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(path))
    names = [
        f"crd/{document['metadata']['name']}"
        for path in files
        for document in yaml.safe_load_all(path.read_text())
        if document
    ]
    cluster.wait_established(*names, timeout=30)


def test_an_sglang_fleet_is_read_through_the_sglang_profile(
    cluster: Cluster, namespace: str, fleetsim: FleetSim
) -> None:
    """Pods the simulator serves as SGLang: the harness's Prometheus scrapes SGLang's families
    and every SGLang query that needs no more than the run's minutes answers for each pod."""
    annotations = {"sim.infercycle.io/age-offset": "600", "sim.infercycle.io/server": "sglang"}
    apply(cluster, namespace, statefulset("sgl", 2, annotations=annotations))
    wait_ready_pods(cluster, namespace, "app=sgl", 2)
    mine = {(namespace, f"sgl-{i}") for i in range(2)}
    profile = profile_for("sglang")

    def answered() -> dict[str, dict[tuple[str, str], float]] | None:
        found = {}
        for signal in ("latency_p99", "token_latency_p99", "kv_cache", "request_rate"):
            rows = cluster.prometheus_query(profile.queries[signal])
            values = {
                (r["metric"]["namespace"], r["metric"]["pod"]): float(r["value"][1]) for r in rows
            }
            if not mine <= set(values) or not all(math.isfinite(values[k]) for k in mine):
                return None
            found[signal] = values
        return found

    found = cluster.wait_for("every SGLang signal for both pods", answered, timeout=90)
    vllm = cluster.prometheus_query("vllm:num_requests_running")
    assert mine.isdisjoint((r["metric"]["namespace"], r["metric"]["pod"]) for r in vllm)
    for key in mine:
        assert 0 < found["kv_cache"][key] <= 1
        assert found["request_rate"][key] > 0
        assert found["token_latency_p99"][key] < found["latency_p99"][key]
