"""Helpers for end-to-end tests on the real (kubelet + containerd) node of the local cluster:
the workload (``localcluster.workload``), the operator as a Helm release, HTTP, measurements."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

import pytest

from infercycle.api.defaults import DEFAULT_RULES
from infercycle.runner import LEASE_NAME
from localcluster import workload
from localcluster.components.kubelet import NODE_LABEL, NODE_TAINT
from localcluster.workload import SERVER, on_real_node
from tests.fixtures.cluster import Cluster

REPO = Path(__file__).resolve().parents[2]
MEASUREMENTS = REPO / ".cache" / "real-node-measurements.json"


def deployment(
    name: str,
    namespace: str,
    image: str,
    *,
    strategy: str,
    replicas: int,
    leaking_pod: str | None,
) -> dict[str, Any]:
    """The stand-in InferenceDeployment with every built-in rule but the fast leak rule off."""
    return workload.deployment(
        name,
        namespace,
        image,
        strategy=strategy,
        replicas=replicas,
        leaking_pod=leaking_pod,
        other_rules=[rule.name for rule in DEFAULT_RULES],
    )


def require_real_node(cluster: Cluster) -> str:
    """The real node's name; skips, with the launcher's one-line reason, where there is none."""
    if cluster.real_node is None:
        reason = cluster.real_node_off_reason or "this cluster was not started with one"
        pytest.skip(f"no real node: {reason}")
    assert cluster.real_node_image, "the real node runs but no image was loaded into it"
    assert cluster.real_node_standin_image, "the real node runs without the stand-in's image"
    return cluster.real_node


def http(
    method: str, url: str, body: Any = None, token: str | None = None, timeout: float = 10.0
) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(request, timeout=timeout) as answer:
        return json.loads(answer.read().decode())


def answers(url: str) -> bool:
    try:
        http("GET", url, timeout=2)
    except (OSError, ValueError, urllib.error.URLError):
        return False
    return True


def container_status(pod: dict[str, Any], name: str) -> dict[str, Any]:
    for status in pod["status"].get("containerStatuses") or []:
        if status["name"] == name:
            return dict(status)
    return {}


def restarts(pod: dict[str, Any], name: str = SERVER) -> int:
    return int(container_status(pod, name).get("restartCount") or 0)


def ready_since(pod: dict[str, Any]) -> datetime | None:
    for condition in pod["status"].get("conditions") or []:
        if condition["type"] == "Ready" and condition["status"] == "True":
            return parse_time(condition["lastTransitionTime"])
    return None


def parse_time(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))


def event_time(event: dict[str, Any]) -> datetime:
    stamp = event.get("eventTime") or event.get("firstTimestamp") or event.get("lastTimestamp")
    return parse_time(str(stamp))


def pvc_host_path(cluster: Cluster, namespace: str, claim: str) -> Path:
    """The directory on the node behind a bound claim (a local PersistentVolume)."""
    volume = cluster.kubectl(
        "get", "pvc", claim, "-n", namespace, "-o", "jsonpath={.spec.volumeName}"
    ).stdout.strip()
    assert volume, f"claim {claim} is not bound"
    path = cluster.kubectl("get", "pv", volume, "-o", "jsonpath={.spec.local.path}").stdout.strip()
    return Path(path)


@dataclass
class Measurements:
    """Figures the real-node tests measure, merged into one JSON file for the report."""

    values: dict[str, Any] = field(default_factory=dict)

    def record(self, **values: Any) -> None:
        self.values.update(values)
        MEASUREMENTS.parent.mkdir(parents=True, exist_ok=True)
        try:
            merged = json.loads(MEASUREMENTS.read_text())
        except (OSError, ValueError):
            merged = {}
        merged.update(values)
        merged["updated"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        MEASUREMENTS.write_text(json.dumps(merged, indent=2, sort_keys=True) + "\n")


class Operator(Protocol):
    """The operator under test: a host process or a Helm release on the real node."""

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def tail(self, lines: int = 60) -> str: ...


def helm_binary() -> str:
    result = subprocess.run(
        [str(REPO / "hack" / "tools.sh"), "helm"],
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    if result.returncode != 0:
        pytest.fail(f"hack/tools.sh helm failed:\n{result.stderr[-3000:]}")
    return result.stdout.strip().splitlines()[-1]


class HelmOperator:
    """``helm install charts/infercycle`` with the image built here, pinned to the real node."""

    def __init__(
        self, cluster: Cluster, watch: list[str], tmp_path: Path, *, replicas: int = 1
    ) -> None:
        self.cluster = cluster
        self.replicas = replicas
        self.release = f"ic-{secrets.token_hex(3)}"
        self.namespace = f"{self.release}-system"
        self.watch = watch
        self.values = tmp_path / "values.yaml"
        self.installed = False
        self.final_rss: float | None = None
        self.final_restarts = 0
        self.errors: list[str] = []
        self.helm = helm_binary()

    def _helm(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [self.helm, f"--kubeconfig={self.cluster.kubeconfig}", *args],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"helm {' '.join(args)} failed:\n{result.stderr}")
        return result

    def start(self) -> None:
        image = self.cluster.real_node_image
        assert image is not None
        assert self.cluster.real_node_prometheus_url is not None
        repository, tag = image.rsplit(":", 1)
        values = {
            "image": {"repository": repository, "tag": tag, "pullPolicy": "Never"},
            "prometheus": {"url": self.cluster.real_node_prometheus_url, "queryTimeout": "3s"},
            "watchNamespaces": self.watch,
            "cycleInterval": "2s",
            "logFormat": "text",
            "agent": {"timeout": "30s"},
            "nodeSelector": {NODE_LABEL: "real"},
            "tolerations": [{"key": NODE_TAINT, "operator": "Exists", "effect": "NoSchedule"}],
            "replicaCount": self.replicas,
            "leaderElection": {"enabled": self.replicas > 1},
        }
        self.values.write_text(json.dumps(values))
        self._helm(
            "install", self.release, str(REPO / "charts" / "infercycle"),
            f"--namespace={self.namespace}", "--create-namespace", f"--values={self.values}",
            "--wait", "--timeout=180s",
        )  # fmt: skip
        self.installed = True

    def pods(self) -> list[dict[str, Any]]:
        out = self.cluster.kubectl(
            "get", "pods", "-n", self.namespace, "-o", "json",
            "-l", f"app.kubernetes.io/instance={self.release}",
        ).stdout  # fmt: skip
        return [dict(pod) for pod in json.loads(out)["items"]]

    def lease(self) -> dict[str, Any]:
        """The leader Lease's spec (empty before any replica took it)."""
        out = self.cluster.kubectl(
            "get", "lease", LEASE_NAME, "-n", self.namespace, "-o", "json", check=False
        )
        return dict(json.loads(out.stdout).get("spec") or {}) if out.returncode == 0 else {}

    def pod(self) -> dict[str, Any]:
        """The operator's pod; with several replicas, the one holding the leader Lease."""
        pods = self.pods()
        if self.replicas == 1:
            assert len(pods) == 1, [p["metadata"]["name"] for p in pods]
            return pods[0]
        holder = str(self.lease().get("holderIdentity") or "")
        # A replica's identity in the Lease is its pod name and process id.
        leading = [p for p in pods if holder.rsplit("-", 1)[0] == p["metadata"]["name"]]
        assert leading, f"no operator pod holds the Lease (holder {holder!r})"
        return leading[0]

    def restarts(self) -> int:
        return restarts(self.pod(), "operator")

    def delete_leader(self) -> str:
        """Delete the leading replica's pod, as a node drain or a rollout would; its name."""
        name = str(self.pod()["metadata"]["name"])
        self.cluster.kubectl("delete", "pod", name, "-n", self.namespace, "--wait=false")
        return name

    def kill_container(self) -> None:
        """SIGKILL the operator's container through the runtime, as an OOM kill would."""
        state = self.cluster.state_dir
        assert state is not None
        container = container_status(self.pod(), "operator")["containerID"].split("://", 1)[1]
        socket = state / "containerd" / "containerd.sock"
        subprocess.run(
            ["ctr", f"--address={socket}", "--namespace=k8s.io", "tasks", "kill",
             "--signal=SIGKILL", container],
            check=True, capture_output=True, timeout=30,
        )  # fmt: skip

    def rss_bytes(self) -> float:
        """The operator process's resident memory, from its own metrics port."""
        pod = self.pod()
        (container,) = pod["spec"]["containers"]
        port = next(p["containerPort"] for p in container["ports"] if p["name"] == "metrics")
        url = f"http://{pod['status']['podIP']}:{port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as answer:
            text = answer.read().decode()
        for line in text.splitlines():
            if line.startswith("process_resident_memory_bytes "):
                return float(line.split()[1])
        raise AssertionError("the operator exports no process_resident_memory_bytes")

    def tail(self, lines: int = 60) -> str:
        out = self.cluster.kubectl(
            "logs", "-n", self.namespace, "-l", f"app.kubernetes.io/instance={self.release}",
            "-c", "operator", "--prefix", f"--tail={lines}", check=False,
        )  # fmt: skip
        return out.stdout + out.stderr

    def stop(self) -> None:
        if not self.installed:
            return
        try:
            self.final_restarts = self.restarts()
        except (AssertionError, KeyError) as error:
            self.errors.append(f"restart count: {error}")
        try:
            self.final_rss = self.rss_bytes()
        except (OSError, AssertionError, KeyError, StopIteration, urllib.error.URLError) as error:
            self.errors.append(f"resident memory: {error}")
        self._helm("uninstall", self.release, f"--namespace={self.namespace}", check=False)
        self.cluster.kubectl("delete", "namespace", self.namespace, "--wait=false", check=False)
        self.installed = False


class KustomizeOperator:
    """``kubectl apply -k`` of ``manifests/`` through an overlay that only swaps in the image
    built here, the Prometheus Service and the real node's selector (the CRDs are left out:
    the tests' own copy stays)."""

    NAMESPACE = "infercycle-system"
    DEPLOYMENT = "infercycle-operator"

    def __init__(self, cluster: Cluster, watch: list[str], tmp_path: Path) -> None:
        self.cluster = cluster
        self.watch = watch
        self.overlay = tmp_path / "overlay"
        self.applied = False

    def _write_overlay(self) -> None:
        image = self.cluster.real_node_image
        assert image is not None
        assert self.cluster.real_node_prometheus_url is not None
        repository, tag = image.rsplit(":", 1)
        self.overlay.mkdir(parents=True, exist_ok=True)
        base = os.path.relpath(REPO / "manifests", self.overlay)
        env = {
            "INFERCYCLE_PROMETHEUS_URL": self.cluster.real_node_prometheus_url,
            "INFERCYCLE_NAMESPACES": ",".join(self.watch),
            "INFERCYCLE_CYCLE_INTERVAL": "2s",
            "INFERCYCLE_AGENT_IMAGE": image,
        }
        crd_deletions = [
            {
                "patch": json.dumps(
                    {
                        "$patch": "delete",
                        "apiVersion": "apiextensions.k8s.io/v1",
                        "kind": "CustomResourceDefinition",
                        "metadata": {"name": name},
                    }
                )
            }
            for name in ("inferencedeployments.infercycle.io", "recyclepolicies.infercycle.io")
        ]
        deployment_patch = {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": self.DEPLOYMENT, "namespace": self.NAMESPACE},
            "spec": {
                "template": {
                    "spec": on_real_node(
                        {
                            "containers": [
                                {
                                    "name": "operator",
                                    "imagePullPolicy": "Never",
                                    "env": [{"name": k, "value": v} for k, v in env.items()],
                                }
                            ]
                        }
                    )
                }
            },
        }
        kustomization = {
            "apiVersion": "kustomize.config.k8s.io/v1beta1",
            "kind": "Kustomization",
            "resources": [base],
            "images": [
                {"name": "ghcr.io/infercycle/infercycle", "newName": repository, "newTag": tag}
            ],
            "patches": [*crd_deletions, {"patch": json.dumps(deployment_patch)}],
        }
        (self.overlay / "kustomization.yaml").write_text(json.dumps(kustomization, indent=2))

    def start(self) -> None:
        self._write_overlay()
        self.cluster.kubectl("apply", "--server-side", "-k", str(self.overlay))
        self.applied = True
        self.cluster.kubectl(
            "rollout", "status", f"deployment/{self.DEPLOYMENT}", "-n", self.NAMESPACE,
            "--timeout=180s", timeout=200,
        )  # fmt: skip

    def pod(self) -> dict[str, Any]:
        out = self.cluster.kubectl(
            "get", "pods", "-n", self.NAMESPACE, "-o", "json",
            "-l", "app.kubernetes.io/name=infercycle",
        ).stdout  # fmt: skip
        pods = [p for p in json.loads(out)["items"] if not p["metadata"].get("deletionTimestamp")]
        assert len(pods) == 1, [p["metadata"]["name"] for p in pods]
        return dict(pods[0])

    def tail(self, lines: int = 60) -> str:
        out = self.cluster.kubectl(
            "logs", "-n", self.NAMESPACE, f"deployment/{self.DEPLOYMENT}", f"--tail={lines}",
            check=False,
        )  # fmt: skip
        return out.stdout + out.stderr

    def stop(self) -> None:
        if self.applied:
            self.cluster.kubectl("delete", "-k", str(self.overlay), "--wait=false", check=False)
            self.applied = False
