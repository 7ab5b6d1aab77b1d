"""Helpers for end-to-end tests on the real (kubelet + containerd) node of the local cluster.

The pods run the project's own image, built from its Dockerfile and loaded into the node's
containerd: the stand-in inference server (``infercycle.testing.standin``) as the server
container, the recycle agent as the sidecar the operator adds. Their session volume is a local
PersistentVolume on the node; Prometheus finds the pods through the API server and reads the
containers' memory from the kubelet's cAdvisor endpoint.
"""

from __future__ import annotations

import json
import secrets
import shlex
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
from tests.fixtures.cluster import Cluster

REPO = Path(__file__).resolve().parents[2]
MEASUREMENTS = REPO / ".cache" / "real-node-measurements.json"
SERVER = "standin"
SERVER_PORT = 8000
AGENT_PORT = 8089
NODE_LABEL = "infercycle.io/node"
NODE_TAINT = "infercycle.io/real-node"
STORAGE_CLASS = "infercycle-local"
LEAK_MB_PER_MIN = 120.0  # ~7 GiB/h; the rule's threshold is 2 GiB/h


def require_real_node(cluster: Cluster) -> str:
    """The real node's name; skips, with the launcher's one-line reason, where there is none."""
    if cluster.real_node is None:
        reason = cluster.real_node_off_reason or "this cluster was not started with one"
        pytest.skip(f"no real node: {reason}")
    assert cluster.real_node_image, "the real node runs but no image was loaded into it"
    return cluster.real_node


def on_real_node(pod_spec: dict[str, Any]) -> dict[str, Any]:
    """Pin a pod spec to the real node (it carries a taint that keeps every other pod away)."""
    pod_spec["nodeSelector"] = {NODE_LABEL: "real"}
    pod_spec["tolerations"] = [{"key": NODE_TAINT, "operator": "Exists", "effect": "NoSchedule"}]
    return pod_spec


def standin_container(image: str, leaking_pod: str | None) -> dict[str, Any]:
    """The stand-in server; only ``leaking_pod`` leaks (all replicas share one template)."""
    leak = ""
    if leaking_pod:
        leak = (
            f'$( [ "$POD_NAME" = {shlex.quote(leaking_pod)} ] && '
            f"echo --leak-mb-per-min {LEAK_MB_PER_MIN:g} )"
        )
    script = (
        f"exec python3 -m infercycle.testing.standin --host 0.0.0.0 --port {SERVER_PORT} "
        f"--log-level WARNING {leak}"
    )
    return {
        "name": SERVER,
        "image": image,
        "imagePullPolicy": "Never",
        "command": ["/bin/sh", "-c", script],
        "env": [{"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
        "ports": [{"name": "http", "containerPort": SERVER_PORT}],
        "readinessProbe": {
            "httpGet": {"path": "/health", "port": SERVER_PORT},
            "periodSeconds": 1,
            "failureThreshold": 2,
        },
        "resources": {
            "requests": {"cpu": "10m", "memory": "64Mi"},
            "limits": {"memory": "1536Mi"},
        },
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
        },
    }


def deployment(
    name: str,
    namespace: str,
    image: str,
    *,
    strategy: str,
    replicas: int,
    leaking_pod: str | None,
) -> dict[str, Any]:
    """An InferenceDeployment on the real node whose only rule is a fast memory-leak rule."""
    rules: list[dict[str, Any]] = [
        {"name": rule.name, "enabled": False}
        for rule in DEFAULT_RULES
        if rule.name != "memory-leak"
    ]
    rules.append(
        {
            "name": "memory-leak",
            "threshold": "2Gi",
            "clear": "512Mi",
            "window": "40s",
            "sustain": "10s",
        }
    )
    template_spec = on_real_node(
        {"terminationGracePeriodSeconds": 10, "containers": [standin_container(image, leaking_pod)]}
    )
    return {
        "apiVersion": "infercycle.io/v1alpha1",
        "kind": "InferenceDeployment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "replicas": replicas,
            "restartStrategy": strategy,
            "sessionStore": {"size": "1Gi", "storageClassName": STORAGE_CLASS},
            "agent": {
                "sessionHook": f"http://127.0.0.1:{SERVER_PORT}/sessions",
                "restartGracePeriod": "5s",
            },
            "health": {"warmup": "20s", "staleAfter": "45s", "rules": rules},
            "disruption": {
                "maxUnavailable": 1,
                "minAvailable": 1,
                "cooldown": "10m",
                "maxRecyclesPerHour": 10,
                "maxDegradedPercent": 50,
            },
            "recycle": {
                "drainTimeout": "4s",
                "readyTimeout": "120s",
                "verifyWindow": "6s",
                "fallbackToRecreate": False,
            },
            "template": {
                "metadata": {
                    "annotations": {
                        "prometheus.io/scrape": "true",
                        "prometheus.io/port": str(SERVER_PORT),
                        "prometheus.io/path": "/metrics",
                    }
                },
                "spec": template_spec,
            },
        },
    }


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

    def __init__(self, cluster: Cluster, watch: list[str], tmp_path: Path) -> None:
        self.cluster = cluster
        self.release = f"ic-{secrets.token_hex(3)}"
        self.namespace = f"{self.release}-system"
        self.watch = watch
        self.values = tmp_path / "values.yaml"
        self.installed = False
        self.final_rss: float | None = None
        self.final_restarts = 0
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
        }
        self.values.write_text(json.dumps(values))
        self._helm(
            "install", self.release, str(REPO / "charts" / "infercycle"),
            f"--namespace={self.namespace}", "--create-namespace", f"--values={self.values}",
            "--wait", "--timeout=180s",
        )  # fmt: skip
        self.installed = True

    def pod(self) -> dict[str, Any]:
        out = self.cluster.kubectl(
            "get", "pods", "-n", self.namespace, "-o", "json",
            "-l", f"app.kubernetes.io/instance={self.release}",
        ).stdout  # fmt: skip
        pods = json.loads(out)["items"]
        assert len(pods) == 1, [p["metadata"]["name"] for p in pods]
        return dict(pods[0])

    def restarts(self) -> int:
        return restarts(self.pod(), "operator")

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
        ip = self.pod()["status"]["podIP"]
        with urllib.request.urlopen(f"http://{ip}:8080/metrics", timeout=10) as answer:
            text = answer.read().decode()
        for line in text.splitlines():
            if line.startswith("process_resident_memory_bytes "):
                return float(line.split()[1])
        raise AssertionError("the operator exports no process_resident_memory_bytes")

    def tail(self, lines: int = 60) -> str:
        out = self.cluster.kubectl(
            "logs", "-n", self.namespace, f"deployment/{self.release}-infercycle-operator",
            f"--tail={lines}", check=False,
        )  # fmt: skip
        return out.stdout + out.stderr

    def stop(self) -> None:
        if not self.installed:
            return
        try:
            self.final_rss = self.rss_bytes()
            self.final_restarts = self.restarts()
        except (OSError, AssertionError, KeyError, urllib.error.URLError):
            self.final_rss = None
        self._helm("uninstall", self.release, f"--namespace={self.namespace}", check=False)
        self.cluster.kubectl("delete", "namespace", self.namespace, "--wait=false", check=False)
        self.installed = False
