"""End-to-end fixtures: CRDs on the real API server, the operator as a real process, and helpers
that build InferenceDeployments whose policy runs on a compressed clock (seconds, not hours)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest

from infercycle_sim.fleets import deployment_manifest
from tests.e2e.operator_process import OperatorProcess
from tests.fixtures.cluster import Cluster

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def crds(cluster: Cluster) -> None:
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(REPO / "crds"))
    cluster.wait_established(
        "crd/inferencedeployments.infercycle.io", "crd/recyclepolicies.infercycle.io"
    )


class Fleet:
    """Helpers around one InferenceDeployment under test."""

    def __init__(self, cluster: Cluster, namespace: str, name: str) -> None:
        self.cluster = cluster
        self.namespace = namespace
        self.name = name

    def apply(self, manifest: dict[str, Any]) -> None:
        self.cluster.kubectl("apply", "-f", "-", input=json.dumps(manifest))

    def get(self) -> dict[str, Any]:
        out = self.cluster.kubectl(
            "get", "inferencedeployment", self.name, "-n", self.namespace, "-o", "json"
        ).stdout
        return dict(json.loads(out))

    def status(self) -> dict[str, Any]:
        return dict(self.get().get("status") or {})

    def condition(self, kind: str) -> dict[str, Any]:
        for condition in self.status().get("conditions") or []:
            if condition["type"] == kind:
                return dict(condition)
        return {}

    def pods(self) -> list[dict[str, Any]]:
        out = self.cluster.kubectl(
            "get",
            "pods",
            "-n",
            self.namespace,
            "-l",
            f"infercycle.io/deployment={self.name}",
            "-o",
            "json",
        ).stdout
        return list(json.loads(out)["items"])

    def ready_pods(self) -> dict[str, str]:
        """name -> uid of Running, Ready pods that are not terminating."""
        ready = {}
        for pod in self.pods():
            conditions = {c["type"]: c["status"] for c in pod["status"].get("conditions") or []}
            if (
                pod["status"].get("phase") == "Running"
                and conditions.get("Ready") == "True"
                and not pod["metadata"].get("deletionTimestamp")
            ):
                ready[pod["metadata"]["name"]] = pod["metadata"]["uid"]
        return ready

    def wait_ready(self, count: int, timeout: float = 120.0) -> dict[str, str]:
        self.cluster.wait_for(
            f"{count} ready pods of {self.name}",
            lambda: len(self.ready_pods()) == count,
            timeout=timeout,
        )
        return self.ready_pods()

    def set_scenario(self, pod: str, scenario: str, params: dict[str, float] | None = None) -> None:
        self.set_scenarios([pod], scenario, params)

    def set_scenarios(
        self, pods: Iterable[str], scenario: str, params: dict[str, float] | None = None
    ) -> None:
        """Switch every pod in ``pods`` to ``scenario`` in one request each, sent together."""
        args = [
            "annotate",
            "pod",
            *pods,
            "-n",
            self.namespace,
            "--overwrite",
            f"sim.infercycle.io/scenario={scenario}",
        ]
        if params:
            args.append(f"sim.infercycle.io/params={json.dumps(params)}")
        self.cluster.kubectl(*args)

    def history(self) -> list[dict[str, Any]]:
        return list(self.status().get("history") or [])

    def events(self) -> list[dict[str, Any]]:
        out = self.cluster.kubectl(
            "get",
            "events",
            "-n",
            self.namespace,
            "-o",
            "json",
            f"--field-selector=involvedObject.name={self.name}",
        ).stdout
        return list(json.loads(out)["items"])

    def serving_endpoints(self) -> int:
        out = self.cluster.kubectl(
            "get",
            "endpointslices",
            "-n",
            self.namespace,
            "-l",
            f"kubernetes.io/service-name={self.name}",
            "-o",
            "json",
        ).stdout
        count = 0
        for item in json.loads(out)["items"]:
            for endpoint in item.get("endpoints") or []:
                if (endpoint.get("conditions") or {}).get("ready"):
                    count += 1
        return count


@pytest.fixture
def make_fleet(cluster: Cluster, namespace: str, crds: None, fleetsim: Any) -> Callable[..., Fleet]:
    def build(name: str = "llm", **kwargs: Any) -> Fleet:
        fleet = Fleet(cluster, namespace, name)
        fleet.apply(deployment_manifest(name, namespace, **kwargs))
        return fleet

    return build


@pytest.fixture
def operator(
    cluster: Cluster, namespace: str, crds: None, tmp_path: Path
) -> Iterator[OperatorProcess]:
    assert cluster.prometheus_url is not None
    process = OperatorProcess(
        str(cluster.kubeconfig), cluster.prometheus_url, tmp_path / "logs", namespaces=[namespace]
    )
    process.start()
    yield process
    # Deleting the deployments while the operator runs lets it release its finalizer, so the
    # namespace can go when the test is done.
    if process.process is not None and process.process.poll() is None:
        cluster.kubectl(
            "delete",
            "inferencedeployments",
            "--all",
            "-n",
            namespace,
            "--wait=true",
            "--timeout=60s",
            check=False,
            timeout=90,
        )
    process.stop()


class EndpointWatch:
    """Samples the client Service's ready endpoints in the background; keeps the minimum."""

    def __init__(self, fleet: Fleet, interval: float = 0.5) -> None:
        self.fleet = fleet
        self.interval = interval
        self.minimum: int | None = None
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> EndpointWatch:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                count = self.fleet.serving_endpoints()
            except AssertionError:
                count = None
            if count is not None:
                self.samples += 1
                self.minimum = count if self.minimum is None else min(self.minimum, count)
            time.sleep(self.interval)
