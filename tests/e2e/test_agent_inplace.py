"""The operator -> agent protocol end to end, with real processes standing in for the pods.

An InferenceDeployment with ``restartStrategy: InPlace`` runs on the local control plane; its
(KWOK) pods have IPs that are local to this host, so each pod is played by real processes bound
to its IP: the stand-in inference server under a restarting supervisor (the container runtime)
and the recycle agent on the pod IP's agent port. One stand-in really leaks memory, Prometheus
really scrapes it, and the operator recycles that pod in place: drain, checkpoint through the
agent, restart through the agent, restore into the new server process. This test plays the
kubelet's one remaining part: it reports the server container's restart in the pod status.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import json
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import pytest

from infercycle.api.defaults import DEFAULT_RULES
from tests.e2e.conftest import Fleet
from tests.e2e.operator_process import OperatorProcess, free_port
from tests.fixtures.cluster import Cluster

pytestmark = [pytest.mark.e2e, pytest.mark.integration, pytest.mark.timeout(600)]

REPO = Path(__file__).resolve().parents[2]
NAME = "llm"
REPLICAS = 3
VICTIM = f"{NAME}-1"
AGENT_PORT = 8089
LEAK_MB_PER_MIN = 100.0  # ~6 GiB/h on the real clock; the rule's threshold is 2 GiB/h
SESSIONS = 5


def _manifest(namespace: str) -> dict[str, Any]:
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
            "window": "20s",
            "sustain": "6s",
        }
    )
    return {
        "apiVersion": "infercycle.io/v1alpha1",
        "kind": "InferenceDeployment",
        "metadata": {"name": NAME, "namespace": namespace},
        "spec": {
            "replicas": REPLICAS,
            "restartStrategy": "InPlace",
            "sessionStore": {"size": "1Gi", "storageClassName": "standard"},
            "agent": {"sessionHook": "http://127.0.0.1:8000/sessions", "restartGracePeriod": "5s"},
            "health": {
                "warmup": "5s",
                "staleAfter": "20s",
                "queries": {"memory": "sum by (namespace, pod) (process_resident_memory_bytes)"},
                "rules": rules,
            },
            "disruption": {
                "maxUnavailable": 1,
                "minAvailable": 1,
                "cooldown": "10m",
                "maxRecyclesPerHour": 10,
                "maxDegradedPercent": 50,
            },
            "recycle": {
                "drainTimeout": "4s",
                "readyTimeout": "60s",
                "verifyWindow": "6s",
                "fallbackToRecreate": False,
            },
            "template": {
                "spec": {
                    "containers": [
                        {
                            "name": "server",
                            "image": "registry.invalid/inference-server:1",
                            "ports": [{"name": "http", "containerPort": 8000}],
                        }
                    ]
                }
            },
        },
    }


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(REPO / "operator"), str(REPO / "sim"), *filter(None, [env.get("PYTHONPATH")])]
    )
    return env


def _http(
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


def _answers(url: str) -> bool:
    try:
        _http("GET", url, timeout=2)
    except (OSError, ValueError):
        return False
    return True


class LocalProcess:
    """One real process in its own session, its output in a log file."""

    def __init__(self, command: list[str], log_path: Path) -> None:
        self.log_path = log_path
        self._log: IO[bytes] = log_path.open("wb")
        self.process = subprocess.Popen(
            command,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=_env(),
            start_new_session=True,
        )

    def alive(self) -> bool:
        return self.process.poll() is None

    def tail(self, lines: int = 30) -> str:
        text = self.log_path.read_text(errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        """SIGTERM to the leader (a supervisor passes it on), SIGKILL to what is left."""
        if self.alive():
            self.process.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=10)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)
        self._log.close()


class PodStandIn:
    """The processes that play one pod: a supervised stand-in server and the agent."""

    def __init__(self, name: str, ip: str, token_file: Path, work: Path, *, leak: bool) -> None:
        self.name = name
        self.ip = ip
        self.port = free_port()
        self.work = work
        work.mkdir(parents=True, exist_ok=True)
        self.state_file = work / "supervisor.json"
        # Unique to this pod's server: the supervisor keeps its command out of its own command
        # line, so this matches the server process and nothing else on the host.
        self.pattern = f"infercycle_sim.standin --host 127.0.0.1 --port {self.port}"
        server = [sys.executable, "-m", "infercycle_sim.standin"]
        server += ["--host", "127.0.0.1", "--port", str(self.port)]
        if leak:
            server += ["--leak-mb-per-min", str(LEAK_MB_PER_MIN)]
        supervisor = [sys.executable, "-m", "infercycle_sim.standin", "supervise"]
        supervisor += ["--restart-delay", "0.3", "--state-file", str(self.state_file), "--"]
        self.supervisor = LocalProcess(supervisor + server, work / "supervisor.log")
        self.agent: LocalProcess | None = None
        self.token_file = token_file

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def agent_url(self) -> str:
        return f"http://{self.ip}:{AGENT_PORT}"

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start_agent(self) -> None:
        command = [sys.executable, "-m", "infercycle.agent"]
        command += ["--host", self.ip, "--port", str(AGENT_PORT)]
        command += ["--token-file", str(self.token_file)]
        command += ["--checkpoint-dir", str(self.work / "checkpoints")]
        command += ["--session-hook", f"{self.url}/sessions"]
        command += ["--server-process", self.pattern]
        command += ["--grace-period", "5", "--poll-interval", "0.1", "--restore-timeout", "60"]
        self.agent = LocalProcess(command, self.work / "agent.log")

    def supervisor_state(self) -> dict[str, Any]:
        try:
            return dict(json.loads(self.state_file.read_text()))
        except (OSError, ValueError):
            return {}

    def agent_status(self, token: str) -> dict[str, Any]:
        return dict(_http("GET", f"{self.agent_url}/v1/status", token=token))

    def sessions(self) -> dict[str, Any]:
        return dict(_http("GET", f"{self.url}/sessions")["sessions"])

    def check_alive(self) -> None:
        for process in (self.supervisor, self.agent):
            if process is not None and not process.alive():
                msg = f"{process.log_path} exited:\n{process.tail()}"
                raise AssertionError(msg)

    def stop(self) -> None:
        if self.agent is not None:
            self.agent.stop()
        self.supervisor.stop()


def _stamp(moment: datetime | None = None) -> str:
    return (moment or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%SZ")


class Kubelet:
    """Reports the victim's server container restarts (seen by its supervisor) in pod status."""

    def __init__(self, cluster: Cluster, namespace: str, pod: PodStandIn) -> None:
        self.cluster = cluster
        self.namespace = namespace
        self.pod = pod
        self.patches = 0
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Kubelet:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=15)

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            state = self.pod.supervisor_state()
            restarts = int(state.get("restarts") or 0)
            if restarts == 0 or state.get("pid") is None:
                continue  # not restarted yet, or the new server is not started yet
            try:
                self._report(restarts, int(state.get("lastExitCode") or 0))
            except (AssertionError, subprocess.TimeoutExpired, KeyError, ValueError) as error:
                self.errors.append(str(error))

    def _report(self, restarts: int, exit_code: int) -> None:
        out = self.cluster.kubectl("get", "pod", self.pod.name, "-n", self.namespace, "-o", "json")
        statuses = list(json.loads(out.stdout)["status"]["containerStatuses"])
        server = next(s for s in statuses if s["name"] == "server")
        if int(server.get("restartCount") or 0) >= restarts:
            return
        previous = ((server.get("state") or {}).get("running") or {}).get("startedAt")
        now = _stamp()
        server["restartCount"] = restarts
        server["lastState"] = {
            "terminated": {
                "exitCode": exit_code,
                "reason": "Completed" if exit_code == 0 else "Error",
                "startedAt": previous or now,
                "finishedAt": now,
            }
        }
        server["state"] = {"running": {"startedAt": now}}
        patch = {"status": {"containerStatuses": statuses}}
        self.cluster.kubectl(
            "patch",
            "pod",
            self.pod.name,
            "-n",
            self.namespace,
            "--subresource=status",
            "--type=merge",
            "-p",
            json.dumps(patch),
        )
        self.patches += 1


def _pod_table(fleet: Fleet) -> dict[str, dict[str, Any]]:
    return {pod["metadata"]["name"]: pod for pod in fleet.pods()}


def _server_restarts(pod: dict[str, Any]) -> int:
    for status in pod["status"].get("containerStatuses") or []:
        if status["name"] == "server":
            return int(status.get("restartCount") or 0)
    return 0


def _up(pod: PodStandIn, url: str) -> bool:
    pod.check_alive()
    return _answers(url)


@pytest.fixture
def own_namespace(cluster: Cluster) -> Iterator[str]:
    """A namespace of this test alone, outside any sweep of shared test namespaces."""
    name = f"agent-inplace-{secrets.token_hex(3)}"
    cluster.kubectl("create", "namespace", name)
    cluster.wait_for(
        f"the default ServiceAccount in {name}",
        lambda: (
            cluster.kubectl("get", "serviceaccount", "default", "-n", name, check=False).returncode
            == 0
        ),
        timeout=30,
        interval=0.2,
    )
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


def test_leaking_server_is_restarted_in_place_and_keeps_its_sessions(
    cluster: Cluster, own_namespace: str, crds: None, tmp_path: Path
) -> None:
    namespace = own_namespace
    assert cluster.prometheus_url is not None
    operator = OperatorProcess(
        str(cluster.kubeconfig),
        cluster.prometheus_url,
        tmp_path / "logs",
        namespaces=[namespace],
        extra_env={
            "INFERCYCLE_FRESHNESS_QUERY": (
                "max by (namespace, pod) (timestamp(process_resident_memory_bytes))"
            ),
            "INFERCYCLE_AGENT_TIMEOUT": "20s",
        },
    )
    fleet = Fleet(cluster, namespace, NAME)
    stand_ins: dict[str, PodStandIn] = {}
    targets: list[str] = []
    operator.start()
    try:
        fleet.apply(_manifest(namespace))

        def running_with_ips() -> dict[str, str]:
            ips = {
                name: str(pod["status"].get("podIP") or "")
                for name, pod in _pod_table(fleet).items()
                if pod["status"].get("phase") == "Running"
            }
            ready = len(fleet.ready_pods()) == REPLICAS
            return ips if ready and len(ips) == REPLICAS and all(ips.values()) else {}

        try:
            ips: dict[str, str] = cluster.wait_for(
                f"{REPLICAS} running pods with IPs", running_with_ips, timeout=120
            )
        except AssertionError as error:
            pods = cluster.kubectl("get", "pods,pvc", "-n", namespace, "-o", "wide", check=False)
            msg = f"{error}\n{pods.stdout}{pods.stderr}\n--- operator:\n{operator.tail()}"
            raise AssertionError(msg) from None
        before = _pod_table(fleet)

        def secret_token() -> str:
            return cluster.kubectl(
                "get",
                "secret",
                f"{NAME}-agent-token",
                "-n",
                namespace,
                "-o",
                "jsonpath={.data.token}",
            ).stdout.strip()

        secret = cluster.wait_for("the agent token Secret", secret_token, timeout=60)
        token = base64.b64decode(secret).decode()
        token_file = tmp_path / "agent-token"
        token_file.write_text(token)

        for name, ip in sorted(ips.items()):
            stand_ins[name] = PodStandIn(
                name, ip, token_file, tmp_path / "pods" / name, leak=name == VICTIM
            )
        for pod in stand_ins.values():
            cluster.wait_for(
                f"the stand-in of {pod.name}",
                functools.partial(_up, pod, f"{pod.url}/health"),
                timeout=60,
            )
            pod.start_agent()
        for pod in stand_ins.values():
            cluster.wait_for(
                f"the agent of {pod.name} on {pod.agent_url}",
                functools.partial(_up, pod, f"{pod.agent_url}/healthz"),
                timeout=60,
            )
            target = f"{namespace}-{pod.name}"
            cluster.add_scrape_target(
                target, pod.address, {"namespace": namespace, "pod": pod.name}
            )
            targets.append(target)
        for pod in stand_ins.values():
            cluster.wait_for_target(pod.address, timeout=60)

        victim = stand_ins[VICTIM]
        for index in range(SESSIONS):
            for turn in range(2):
                _http(
                    "POST",
                    f"{victim.url}/v1/completions",
                    {"session_id": f"chat-{index}", "prompt": f"turn {turn} of chat {index}"},
                )
        sessions_before = victim.sessions()
        assert len(sessions_before) == SESSIONS
        first_server_pid = victim.supervisor_state()["pid"]

        operations: list[dict[str, Any]] = []
        with Kubelet(cluster, namespace, victim) as kubelet:

            def recycled() -> bool:
                for pod in stand_ins.values():
                    pod.check_alive()
                status = fleet.status()
                operation = status.get("operation")
                if operation and operation not in operations:
                    operations.append(operation)
                return bool(status.get("history"))

            try:
                cluster.wait_for("the in-place recycle", recycled, timeout=300, interval=0.5)
            except AssertionError as error:
                msg = (
                    f"{error}\noperations: {operations}\nstatus: {fleet.status()}\n"
                    f"kubelet errors: {kubelet.errors}\n--- operator:\n{operator.tail()}\n"
                    f"--- victim agent:\n{victim.agent.tail() if victim.agent else ''}"
                )
                raise AssertionError(msg) from None
            time.sleep(6)  # three more cycles: nothing else may be touched
            assert kubelet.patches == 1, kubelet.errors

        history = fleet.history()
        assert len(history) == 1, history
        record = history[0]
        assert record["pod"] == VICTIM
        assert record["result"] == "Succeeded", record
        assert record["strategy"] == "InPlace"
        assert any("memory-leak" in reason for reason in record["reasons"]), record
        assert fleet.status().get("operation") is None

        # The operator walked the steps and recorded the agent's checkpoint on the operation.
        steps = [operation["step"] for operation in operations]
        assert "Restarting" in steps, steps
        checkpoints = {
            operation["checkpoint"]["id"] for operation in operations if operation.get("checkpoint")
        }
        assert len(checkpoints) == 1, operations
        checkpoint_id = checkpoints.pop()
        assert all(operation["strategy"] == "InPlace" for operation in operations), operations
        assert not any(operation.get("escalated") for operation in operations), operations

        # The same pod, its server container restarted once; the others untouched.
        after = _pod_table(fleet)
        assert set(after) == set(before)
        for name, live in after.items():
            assert live["metadata"]["uid"] == before[name]["metadata"]["uid"], name
            assert live["metadata"]["labels"].get("infercycle.io/serving") == "true", name
            assert _server_restarts(live) == (1 if name == VICTIM else 0), name
            restarts = stand_ins[name].supervisor_state()["restarts"]
            assert restarts == (1 if name == VICTIM else 0), (name, restarts)
        assert victim.supervisor_state()["pid"] != first_server_pid

        # The agent gave the checkpoint back to the new server process.
        def restored() -> dict[str, Any]:
            last = victim.agent_status(token).get("lastRestore") or {}
            return last if last.get("result") == "restored" else {}

        last_restore = cluster.wait_for("the restore into the new server", restored, timeout=60)
        assert last_restore["checkpointId"] == checkpoint_id
        assert last_restore["serverPid"] == victim.supervisor_state()["pid"]
        status = victim.agent_status(token)
        assert status["lastCheckpoint"]["id"] == checkpoint_id
        assert status["server"]["found"] is True
        assert victim.sessions() == sessions_before

        reasons = {event["reason"] for event in fleet.events()}
        assert {"RecycleStarted", "Checkpointing", "Restarting", "RecycleSucceeded"} <= reasons
        assert "RecycleEscalated" not in reasons
        assert "AgentUnavailable" not in reasons
    finally:
        for target in targets:
            cluster.remove_scrape_target(target)
        for pod in stand_ins.values():
            pod.stop()
        cluster.kubectl(
            "delete",
            "inferencedeployment",
            NAME,
            "-n",
            namespace,
            "--ignore-not-found",
            "--timeout=60s",
            check=False,
        )
        operator.stop()
