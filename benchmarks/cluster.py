"""The operator on the real local control plane: 1,000 pods in 50 InferenceDeployments.

    python benchmarks/cluster.py [--deployments 50] [--replicas 20] [--cycle-interval 10s]
                                 [--cycles 8] [--speed 10] [--policy builtin|compressed]
                                 [--warmup 30s]

``hack/cluster up`` starts etcd, kube-apiserver, kube-controller-manager and kube-scheduler
(built from source) with enough KWOK fake nodes for every pod (110 pods per node) and
Prometheus; the fleet simulator (``infercycle_sim.fleetsim``) serves cAdvisor, dcgm-exporter
and vLLM metrics for every Running pod, scraped every 2 s. The operator runs as a real process
(``infercycle run``, as the end-to-end tests start it), then the InferenceDeployments are applied
(``infercycle_sim.fleets.deployment_manifest``: healthy simulated pods). Their health policy
is the built-in one with only the warm-up shortened (``--warmup``; the built-in 10 min would keep
every verdict WarmingUp for the whole run), or with ``--policy compressed`` the end-to-end tests'
policy on a clock of seconds as ``deployment_manifest`` builds it.

Measured: the time from the operator's start and from applying the resources until it has
settled (every deployment's children exist, its status has the current observedGeneration and
all pods ready, every pod is Ready and has a verdict past warm-up, and one more cycle has
finished), then, in steady state, from the operator's ``/metrics`` and ``/proc/<pid>`` once per
cycle: Kubernetes API requests, Prometheus queries, cycle duration, CPU seconds and RSS, and that
no pod was recycled. The report goes to ``docs/benchmarks/cluster.md``; logs (the operator's, the
simulator's, every cluster component's) to ``benchmarks/out/cluster/``. Everything started here
is stopped at the end, also on an error, Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import kubernetes
from prometheus_client.parser import text_string_to_metric_families

from infercycle.api.resolver import resolve_policy
from infercycle.api.resources import GROUP, MAX_POD_SUMMARIES, VERSION, InferenceDeploymentSpec
from infercycle.api.units import parse_duration
from infercycle.kube.api import load_config
from infercycle_sim.fleets import deployment_manifest

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.e2e.operator_process import OperatorProcess
from tests.fixtures.cluster import (
    FLEETSIM_PORT,
    FLEETSIM_TARGET,
    Cluster,
    FleetSim,
    start_fleetsim,
    start_local_cluster,
    stop_local_cluster,
)

from fleet import machine_line

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "out" / "cluster"
DOCS = ROOT / "docs" / "benchmarks"
PODS_PER_NODE = 110
"""``pods`` capacity of every KWOK node hack/cluster creates."""
NAMESPACES = 5
DEPLOYMENT_LABEL = "infercycle.io/deployment"
APISERVER_PORT = 16443
PROMETHEUS_PORT = 19090
RSS_LIMIT_MB = 500.0
EVALUATED = ("Healthy", "Degraded")
"""Verdicts of a pod whose rules were judged (past warm-up, with data)."""
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def log(text: str) -> None:
    print(f"[cluster-bench {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------
# the operator's own figures


@dataclass(frozen=True)
class Sample:
    """One reading of the operator: its /metrics (summed over labels) and /proc."""

    metrics: dict[str, float]
    series: dict[str, int]
    cpu_s: float
    rss_kib: int
    hwm_kib: int

    def get(self, name: str) -> float:
        return self.metrics.get(name, 0.0)

    @property
    def cycles(self) -> float:
        return self.get("infercycle_evaluation_duration_seconds_count")


def proc_usage(pid: int) -> tuple[float, int, int]:
    """(user + system CPU seconds, VmRSS KiB, VmHWM KiB) of a process."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rfind(")") + 2 :].split()
    cpu = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    status = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
    )
    return cpu, int(status["VmRSS"].split()[0]), int(status["VmHWM"].split()[0])


def sample(operator: OperatorProcess) -> Sample:
    if operator.process is None or operator.process.poll() is not None:
        msg = f"the operator is not running:\n{operator.tail()}"
        raise RuntimeError(msg)
    totals: dict[str, float] = {}
    series: dict[str, int] = {}
    for family in text_string_to_metric_families(operator.metrics()):
        for point in family.samples:
            totals[point.name] = totals.get(point.name, 0.0) + float(point.value)
            series[point.name] = series.get(point.name, 0) + 1
    cpu, rss, hwm = proc_usage(operator.process.pid)
    return Sample(totals, series, cpu, rss, hwm)


@dataclass(frozen=True)
class Window:
    """What changed between two samples, per cycle."""

    cycles: int
    requests: float
    cycle_s: float
    queries: float
    query_s: float
    query_errors: float
    cpu_s: float
    rss_mib: float


def window(before: Sample, after: Sample) -> Window | None:
    cycles = round(after.cycles - before.cycles)
    if cycles <= 0:
        return None

    def delta(name: str) -> float:
        return after.get(name) - before.get(name)

    queries = delta("infercycle_prometheus_query_duration_seconds_count")
    return Window(
        cycles=cycles,
        requests=delta("infercycle_kubernetes_requests_total") / cycles,
        cycle_s=delta("infercycle_evaluation_duration_seconds_sum") / cycles,
        queries=queries / cycles,
        query_s=delta("infercycle_prometheus_query_duration_seconds_sum") / max(queries, 1.0),
        query_errors=delta("infercycle_prometheus_query_errors_total"),
        cpu_s=(after.cpu_s - before.cpu_s) / cycles,
        rss_mib=after.rss_kib / 1024,
    )


# --------------------------------------------------------------------------------------------
# the cluster's view


@dataclass
class Progress:
    """Where the fleet stands, from the API server."""

    at: float
    statefulsets: int = 0
    budgets: int = 0
    pods_ready: int = 0
    pods_seen: int = 0
    status_current: int = 0
    evaluated_pods: int = 0
    verdicts: dict[str, int] = field(default_factory=dict)
    history: int = 0
    uids: dict[tuple[str, str], str] = field(default_factory=dict)
    waiting: str = ""


class Workload:
    """The benchmark's InferenceDeployments: names, manifests and how to read their state."""

    def __init__(
        self, deployments: int, replicas: int, policy: str, warmup: str, cycle_interval: str
    ) -> None:
        self.replicas = replicas
        self.cycle_interval = cycle_interval
        # status.pods lists at most MAX_POD_SUMMARIES pods of a deployment.
        self.listed = deployments * min(replicas, MAX_POD_SUMMARIES)
        count = min(NAMESPACES, deployments)
        self.namespaces = [f"bench-{index}" for index in range(count)]
        self.keys = [(f"bench-{d % count}", f"llm-{d:03d}") for d in range(deployments)]
        self.policy = policy
        self.warmup = warmup

    @property
    def pods(self) -> int:
        return len(self.keys) * self.replicas

    def manifests(self) -> list[dict[str, Any]]:
        items = []
        for namespace, name in self.keys:
            manifest = deployment_manifest(
                name,
                namespace,
                replicas=self.replicas,
                cycle_interval_s=parse_duration(self.cycle_interval),
            )
            if self.policy == "builtin":
                manifest["spec"]["health"] = {"warmup": self.warmup}
            items.append(manifest)
        return items

    def expected_queries(self) -> int:
        """Distinct queries of one cycle (every signal and requests_running) + freshness."""
        spec = InferenceDeploymentSpec.model_validate(self.manifests()[0]["spec"])
        health = resolve_policy(spec.policy_layer()).health
        texts = {health.queries.get(s) for s in (*health.signals, "requests_running")}
        return len(texts - {None}) + 1

    def progress(self, api: kubernetes.client.ApiClient) -> Progress:
        core = kubernetes.client.CoreV1Api(api)
        apps = kubernetes.client.AppsV1Api(api)
        policy = kubernetes.client.PolicyV1Api(api)
        custom = kubernetes.client.CustomObjectsApi(api)
        wanted = set(self.keys)
        state = Progress(at=time.time())

        def raw(response: Any) -> list[dict[str, Any]]:
            return list(json.loads(response.data)["items"])

        selector = "app.kubernetes.io/managed-by=infercycle"
        for sts in raw(
            apps.list_stateful_set_for_all_namespaces(
                label_selector=selector, _preload_content=False
            )
        ):
            meta = sts["metadata"]
            state.statefulsets += int((meta["namespace"], meta["name"]) in wanted)
        for pdb in raw(
            policy.list_pod_disruption_budget_for_all_namespaces(
                label_selector=selector, _preload_content=False
            )
        ):
            meta = pdb["metadata"]
            state.budgets += int((meta["namespace"], meta["name"]) in wanted)
        for pod in raw(
            core.list_pod_for_all_namespaces(
                label_selector=DEPLOYMENT_LABEL, _preload_content=False
            )
        ):
            meta = pod["metadata"]
            owner = (meta["namespace"], meta["labels"][DEPLOYMENT_LABEL])
            if owner not in wanted:
                continue
            state.pods_seen += 1
            conditions = {c["type"]: c["status"] for c in pod["status"].get("conditions") or []}
            if (
                pod["status"].get("phase") == "Running"
                and conditions.get("Ready") == "True"
                and not meta.get("deletionTimestamp")
            ):
                state.pods_ready += 1
                state.uids[(meta["namespace"], meta["name"])] = meta["uid"]
        for namespace in self.namespaces:
            for item in raw(
                custom.list_namespaced_custom_object(
                    GROUP, VERSION, namespace, "inferencedeployments", _preload_content=False
                )
            ):
                key = (namespace, item["metadata"]["name"])
                if key in wanted:
                    self._judge(item, state)
        return state

    def _judge(self, item: dict[str, Any], state: Progress) -> None:
        status = item.get("status") or {}
        conditions = {c["type"]: c for c in status.get("conditions") or []}
        current = (
            status.get("observedGeneration") == item["metadata"].get("generation")
            and status.get("readyReplicas") == self.replicas
            and conditions.get("Ready", {}).get("status") == "True"
        )
        state.status_current += int(current)
        pods = status.get("pods") or []
        metrics_ok = conditions.get("MetricsAvailable", {}).get("status") == "True"
        for pod in pods:
            verdict = str(pod.get("verdict"))
            state.verdicts[verdict] = state.verdicts.get(verdict, 0) + 1
            state.evaluated_pods += int(metrics_ok and verdict in EVALUATED)
        state.history += len(status.get("history") or [])
        if not current and not state.waiting:
            ready = conditions.get("Ready", {})
            state.waiting = (
                f"{item['metadata']['name']}: observedGeneration "
                f"{status.get('observedGeneration')}/{item['metadata'].get('generation')}, "
                f"Ready {ready.get('status')} ({ready.get('message')})"
            )

    def milestones(self, state: Progress) -> dict[str, bool]:
        """Which steps towards settled the fleet has reached; settled is all of them."""
        deployments = len(self.keys)
        return {
            "children": state.statefulsets == deployments and state.budgets == deployments,
            "pods_ready": state.pods_ready == self.pods,
            "status_current": state.status_current == deployments,
            "evaluated": state.evaluated_pods == self.listed,
        }


def describe(state: Progress, workload: Workload) -> str:
    deployments = len(workload.keys)
    verdicts = ", ".join(f"{k} {v}" for k, v in sorted(state.verdicts.items())) or "none"
    return (
        f"StatefulSets {state.statefulsets}/{deployments}, PDBs {state.budgets}/{deployments}, "
        f"pods Ready {state.pods_ready}/{workload.pods} ({state.pods_seen} created), status "
        f"current {state.status_current}/{deployments}, pods evaluated "
        f"{state.evaluated_pods}/{workload.listed} (verdicts: {verdicts})"
    )


# --------------------------------------------------------------------------------------------
# running it


class Interrupted(KeyboardInterrupt):
    """SIGTERM, turned into what Ctrl-C raises so that the same teardown runs."""


def on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise Interrupted


def port_taken(port: int) -> bool:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


@dataclass
class Run:
    """Everything measured; None where the run did not get that far."""

    args: argparse.Namespace
    workload: Workload
    started: float = field(default_factory=time.time)
    cluster: Cluster | None = None
    cluster_owned: bool = True
    cluster_up_s: float | None = None
    nodes: int = 0
    pod_capacity: int = 0
    operator_start: float | None = None
    operator_healthy_s: float | None = None
    apply_start: float | None = None
    apply_s: float | None = None
    milestones: dict[str, float] = field(default_factory=dict)
    settled_cycle: float | None = None
    settle_cpu_s: float | None = None
    last_progress: Progress | None = None
    settled_progress: Progress | None = None
    final_progress: Progress | None = None
    windows: list[Window] = field(default_factory=list)
    last: Sample | None = None
    load: list[float] = field(default_factory=list)
    scrape: dict[str, float] = field(default_factory=dict)
    prometheus_rss_mib: float | None = None
    fleetsim_rss_mib: float | None = None
    failure: str | None = None
    operator_ports: list[int] = field(default_factory=list)
    leftovers: list[str] = field(default_factory=list)
    teardown_s: float | None = None
    total_s: float | None = None


def cluster_up(run: Run, stack: contextlib.ExitStack) -> Cluster:
    if port_taken(FLEETSIM_PORT):
        msg = f"127.0.0.1:{FLEETSIM_PORT} is in use (a fleet simulator of another run?)"
        raise RuntimeError(msg)
    owned = not port_taken(APISERVER_PORT)
    if owned:
        # Registered before `up`: a failure or Ctrl-C half-way still stops what was started.
        stack.callback(cluster_down, run)
    nodes = math.ceil(run.workload.pods / PODS_PER_NODE) + 1
    started = time.monotonic()
    log(f"hack/cluster up --nodes {nodes} --real-node off")
    # KWOK nodes only: the figures measure the control plane and the operator at scale, and a
    # real node's kubelet would share the same two cores.
    cluster = start_local_cluster(
        "--nodes", str(nodes), "--real-node", "off", log=OUT / "hack-cluster.log"
    )
    run.cluster_up_s = time.monotonic() - started
    run.cluster = cluster
    if cluster.started_here and not owned:
        stack.callback(cluster_down, run)
    elif not cluster.started_here:
        log("the cluster was already up: it is used and left running, its bench-* namespaces go")
        run.cluster_owned = False
        stack.callback(remove_namespaces, cluster, run.workload)
    listing = json.loads(cluster.kubectl("get", "nodes", "-o", "json").stdout)["items"]
    ready = [
        node
        for node in listing
        if any(
            c["type"] == "Ready" and c["status"] == "True"
            for c in node["status"].get("conditions") or []
        )
    ]
    run.nodes = len(ready)
    run.pod_capacity = sum(int(n["status"]["allocatable"].get("pods", 0)) for n in ready)
    if run.pod_capacity < run.workload.pods:
        msg = (
            f"{run.nodes} Ready nodes hold {run.pod_capacity} pods, fewer than {run.workload.pods}"
        )
        raise RuntimeError(msg)
    return cluster


def cluster_down(run: Run) -> None:
    """Keep the components' logs, then ``hack/cluster down`` (which removes the state)."""
    state = run.cluster.state_dir if run.cluster is not None else None
    if state is not None and (state / "logs").is_dir():
        shutil.copytree(state / "logs", OUT / "cluster-logs", dirs_exist_ok=True)
    ok, message = stop_local_cluster(OUT / "hack-cluster.log")
    log("hack/cluster down: " + ("done" if ok else message))


def remove_namespaces(cluster: Cluster, workload: Workload) -> None:
    cluster.kubectl(
        "delete",
        "namespace",
        *workload.namespaces,
        "--wait=false",
        "--ignore-not-found",
        check=False,
    )


def prepare(cluster: Cluster, workload: Workload) -> None:
    log("CRDs and namespaces")
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(ROOT / "crds"))
    cluster.wait_established(
        "crd/inferencedeployments.infercycle.io", "crd/recyclepolicies.infercycle.io"
    )
    namespaces = {
        "apiVersion": "v1",
        "kind": "List",
        "items": [
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
            for name in workload.namespaces
        ],
    }
    cluster.kubectl("apply", "-f", "-", input=json.dumps(namespaces))

    def accounts() -> bool:
        found = cluster.kubectl("get", "serviceaccounts", "-A", "-o", "json").stdout
        have = {
            item["metadata"]["namespace"]
            for item in json.loads(found)["items"]
            if item["metadata"]["name"] == "default"
        }
        return have >= set(workload.namespaces)

    cluster.wait_for("the default ServiceAccount of every namespace", accounts, timeout=60)


def start_operator(run: Run, cluster: Cluster, stack: contextlib.ExitStack) -> OperatorProcess:
    assert cluster.prometheus_url is not None
    operator = OperatorProcess(
        str(cluster.kubeconfig),
        cluster.prometheus_url,
        OUT,
        namespaces=run.workload.namespaces,
        cycle_interval=run.args.cycle_interval,
        # The operator's own default, not the end-to-end tests' short one.
        extra_env={"INFERCYCLE_QUERY_TIMEOUT": "10s"},
    )
    stack.callback(stop_operator, operator, cluster, run.workload)
    run.operator_ports = [operator.metrics_port, operator.health_port]
    log(f"operator: infercycle run --cycle-interval {run.args.cycle_interval}")
    run.operator_start = time.time()
    operator.start()
    run.operator_healthy_s = time.time() - run.operator_start
    return operator


def stop_operator(operator: OperatorProcess, cluster: Cluster, workload: Workload) -> None:
    if not cluster.started_here and operator.process is not None:
        # On a cluster that stays up, the operator releases its finalizers before it goes.
        for namespace in workload.namespaces:
            cluster.kubectl(
                "delete",
                "inferencedeployments",
                "--all",
                f"--namespace={namespace}",
                "--wait=true",
                "--timeout=120s",
                check=False,
                timeout=150,
            )
    operator.stop()
    log(f"operator stopped (log {operator.log_path})")


def apply_deployments(run: Run, cluster: Cluster) -> None:
    workload = run.workload
    manifests = {"apiVersion": "v1", "kind": "List", "items": workload.manifests()}
    log(f"applying {len(workload.keys)} InferenceDeployments of {workload.replicas} replicas")
    run.apply_start = time.time()
    cluster.kubectl("apply", "-f", "-", input=json.dumps(manifests), timeout=300)
    run.apply_s = time.time() - run.apply_start


def wait_settled(
    run: Run, operator: OperatorProcess, api: kubernetes.client.ApiClient
) -> Progress | None:
    """Poll until every milestone is reached; the settle time is the end of the next cycle."""
    assert run.apply_start is not None
    workload = run.workload
    deadline = time.monotonic() + run.args.settle_timeout
    reported = 0.0
    while time.monotonic() < deadline:
        state = workload.progress(api)
        run.last_progress = state
        marks = workload.milestones(state)
        for name, reached in marks.items():
            if reached and name not in run.milestones:
                run.milestones[name] = state.at - run.apply_start
                log(f"{name} after {run.milestones[name]:.1f}s")
        if time.monotonic() - reported > 15:
            reported = time.monotonic()
            log(describe(state, workload))
        if all(marks.values()):
            seen = sample(operator)
            deadline_cycle = time.monotonic() + 3 * parse_duration(run.args.cycle_interval) + 60
            while time.monotonic() < deadline_cycle:
                time.sleep(0.5)
                now = sample(operator)
                if now.cycles > seen.cycles:
                    run.settled_cycle = now.get("infercycle_last_cycle_timestamp_seconds")
                    run.settle_cpu_s = now.cpu_s
                    return state
            msg = "every pod was evaluated but no further cycle finished"
            raise RuntimeError(msg)
        if operator.process is not None and operator.process.poll() is not None:
            msg = f"the operator exited with {operator.process.returncode}:\n{operator.tail()}"
            raise RuntimeError(msg)
        time.sleep(2.0)
    return None


def steady_state(run: Run, operator: OperatorProcess) -> None:
    """One sample between cycle ends, once per interval; per-cycle values from the deltas."""
    interval = parse_duration(run.args.cycle_interval)
    first = sample(operator)
    mid = first.get("infercycle_last_cycle_timestamp_seconds") + interval / 2
    if mid > time.time():
        time.sleep(mid - time.time())
        first = sample(operator)
    run.load.append(os.getloadavg()[0])
    previous = first
    start = time.monotonic()
    for index in range(run.args.cycles):
        time.sleep(max(0.0, start + (index + 1) * interval - time.monotonic()))
        current = sample(operator)
        measured = window(previous, current)
        if measured is not None:
            run.windows.append(measured)
            log(
                f"cycle: {measured.requests:.0f} API requests, {measured.queries:.0f} queries, "
                f"{measured.cycle_s:.2f}s, CPU {measured.cpu_s:.2f}s, RSS {measured.rss_mib:.0f}"
                " MiB"
            )
        previous = current
    run.last = previous
    run.load.append(os.getloadavg()[0])


def context_figures(run: Run, cluster: Cluster, sim: FleetSim) -> None:
    for name, promql in (
        ("duration", f'scrape_duration_seconds{{instance="{sim.address}"}}'),
        ("samples", f'scrape_samples_scraped{{instance="{sim.address}"}}'),
        ("duration_avg", f'avg_over_time(scrape_duration_seconds{{instance="{sim.address}"}}[1m])'),
    ):
        with contextlib.suppress(AssertionError, IndexError, KeyError, ValueError):
            run.scrape[name] = float(cluster.prometheus_query(promql)[0]["value"][1])
    with contextlib.suppress(OSError, ValueError, AssertionError):
        run.prometheus_rss_mib = proc_usage(cluster.pid("prometheus"))[1] / 1024
    if sim.process is not None:
        with contextlib.suppress(OSError):
            run.fleetsim_rss_mib = proc_usage(sim.process.pid)[1] / 1024


def measure(run: Run, stack: contextlib.ExitStack) -> None:
    shutil.rmtree(OUT, ignore_errors=True)
    OUT.mkdir(parents=True)
    cluster = cluster_up(run, stack)
    prepare(cluster, run.workload)
    log(f"fleet simulator on :{FLEETSIM_PORT} at {run.args.speed:g}x")
    sim = start_fleetsim(
        cluster, run.args.speed, log_path=OUT / "fleetsim.log", parent_pid=os.getpid()
    )
    stack.callback(sim.stop)
    stack.callback(cluster.remove_scrape_target, FLEETSIM_TARGET)
    operator = start_operator(run, cluster, stack)
    apply_deployments(run, cluster)
    api = load_config(str(cluster.kubeconfig))
    stack.callback(api.close)
    settled = wait_settled(run, operator, api)
    if settled is None:
        last = run.last_progress
        run.failure = (
            f"not settled within {run.args.settle_timeout:.0f}s: "
            + (describe(last, run.workload) if last else "no progress read")
            + (f"; first deployment not current: {last.waiting}" if last and last.waiting else "")
        )
        log(run.failure)
        run.final_progress = last
        context_figures(run, cluster, sim)
        run.last = sample(operator)
        return
    run.settled_progress = settled
    log(f"settled: {describe(settled, run.workload)}")
    steady_state(run, operator)
    run.final_progress = run.workload.progress(api)
    context_figures(run, cluster, sim)


# --------------------------------------------------------------------------------------------
# the report


def summary(values: Sequence[float], fmt: str) -> str:
    """Median (min, max)."""
    if not values:
        return "not measured"
    low, high = min(values), max(values)
    return (
        f"{fmt.format(statistics.median(values))} (min {fmt.format(low)}, max {fmt.format(high)})"
    )


def replaced_pods(run: Run) -> int | None:
    """Pods Ready when the fleet settled that are gone or have a new UID at the end."""
    before, after = run.settled_progress, run.final_progress
    if before is None or after is None:
        return None
    return sum(1 for key, uid in before.uids.items() if after.uids.get(key) != uid)


def rows(run: Run) -> list[tuple[str, str]]:
    workload = run.workload
    args = run.args
    out: list[tuple[str, str]] = [
        (
            "pods / InferenceDeployments / namespaces",
            f"{workload.pods:,} / {len(workload.keys)} ({workload.replicas} replicas each) / "
            f"{len(workload.namespaces)}",
        ),
        ("KWOK nodes (Ready) / pod capacity", f"{run.nodes} / {run.pod_capacity:,}"),
    ]
    if run.cluster_up_s is not None:
        out.append(("`hack/cluster up` (binaries cached)", f"{run.cluster_up_s:.1f} s"))
    if run.operator_healthy_s is not None:
        out.append(("operator start to /healthz answering", f"{run.operator_healthy_s:.1f} s"))
    if run.apply_s is not None:
        out.append(
            (
                f"`kubectl apply` of the {len(workload.keys)} InferenceDeployments",
                f"{run.apply_s:.1f} s",
            )
        )
    names = {
        "children": "every StatefulSet and PodDisruptionBudget created",
        "pods_ready": f"all {workload.pods:,} pods Ready",
        "status_current": "every status current (observedGeneration, all replicas ready)",
        "evaluated": "every pod has a verdict past warm-up in status (Healthy or Degraded)",
    }
    for key, text in names.items():
        value = run.milestones.get(key)
        out.append((f"apply to {text}", f"{value:.1f} s" if value is not None else "not reached"))
    if run.settled_cycle is not None and run.operator_start and run.apply_start:
        out.append(
            (
                "settled (end of the first cycle after that): from operator start / from apply",
                f"{run.settled_cycle - run.operator_start:.1f} s / "
                f"{run.settled_cycle - run.apply_start:.1f} s",
            )
        )
    else:
        out.append(("settled", "not reached"))
    if run.settle_cpu_s is not None:
        out.append(("operator CPU time from start to settled", f"{run.settle_cpu_s:.1f} s"))
    windows = run.windows
    if windows:
        cycles = sum(w.cycles for w in windows)
        interval = parse_duration(args.cycle_interval)
        out += [
            (
                "steady state sampled",
                f"{cycles} cycles at `--cycle-interval {args.cycle_interval}` "
                f"({len(windows)} samples, one between cycle ends)",
            ),
            (
                "Kubernetes API requests per cycle (`infercycle_kubernetes_requests_total`)",
                summary([w.requests for w in windows], "{:.0f}"),
            ),
            (
                "Prometheus queries per cycle (query-duration histogram count)",
                summary([w.queries for w in windows], "{:.0f}"),
            ),
            (
                "mean time of one Prometheus query",
                summary([w.query_s * 1000 for w in windows], "{:.0f} ms"),
            ),
            (
                "Prometheus query errors during the steady state",
                f"{sum(w.query_errors for w in windows):.0f}",
            ),
            (
                "cycle duration (`infercycle_evaluation_duration_seconds`)",
                summary([w.cycle_s for w in windows], "{:.2f} s"),
            ),
            (
                "operator CPU time per cycle (/proc/<pid>/stat, whole process)",
                summary([w.cpu_s for w in windows], "{:.2f} s")
                + f"; {statistics.median(w.cpu_s for w in windows) / interval:.0%} of a core",
            ),
            (
                "operator RSS in steady state",
                summary([w.rss_mib for w in windows], "{:.0f} MiB"),
            ),
        ]
    if run.last is not None:
        out.append(("operator peak RSS (VmHWM)", f"{run.last.hwm_kib / 1024:.0f} MiB"))
        out.append(
            (
                "`infercycle_pod_degraded` series / pods reported degraded",
                f"{run.last.series.get('infercycle_pod_degraded', 0):,} / "
                f"{run.last.get('infercycle_pod_degraded'):.0f}",
            )
        )
        out.append(
            (
                "recycles since the operator started (`infercycle_recycles_total`)",
                f"{run.last.get('infercycle_recycles_total'):.0f}",
            )
        )
    final = run.final_progress
    if final is not None:
        verdicts = ", ".join(f"{k} {v:,}" for k, v in sorted(final.verdicts.items())) or "none"
        out.append(("verdicts in status at the end", verdicts))
        out.append(("status.history records at the end", f"{final.history}"))
        replaced = replaced_pods(run)
        if replaced is not None:
            out.append(("pods replaced (new UID) between settled and the end", f"{replaced}"))
    if run.scrape:
        out.append(
            (
                "Prometheus scrape of the simulator (samples / duration, 1 min mean)",
                f"{run.scrape.get('samples', 0):,.0f} / "
                f"{run.scrape.get('duration_avg', run.scrape.get('duration', 0)):.2f} s "
                "every 2 s",
            )
        )
    if run.prometheus_rss_mib is not None:
        out.append(("Prometheus RSS at the end", f"{run.prometheus_rss_mib:.0f} MiB"))
    if run.fleetsim_rss_mib is not None:
        out.append(("fleet simulator RSS at the end", f"{run.fleetsim_rss_mib:.0f} MiB"))
    if run.load:
        out.append(
            (
                "1-min load average at the start / end of the steady state (2 cores, shared)",
                " / ".join(f"{value:.1f}" for value in run.load),
            )
        )
    if run.teardown_s is not None:
        out.append(
            ("teardown (operator, simulator, `hack/cluster down`)", f"{run.teardown_s:.0f} s")
        )
    if run.total_s is not None:
        out.append(("script wall time", f"{run.total_s:.0f} s"))
    return out


def checks(run: Run) -> list[tuple[str, bool]]:
    workload = run.workload
    result: list[tuple[str, bool]] = [
        (
            f"settled: every deployment reconciled and all {workload.pods:,} pods evaluated within "
            f"{run.args.settle_timeout:.0f} s",
            run.settled_cycle is not None,
        )
    ]
    peak = run.last.hwm_kib / 1024 if run.last is not None else math.inf
    result.append(
        (
            f"operator RSS < {RSS_LIMIT_MB:.0f} MB (peak {peak:.0f} MiB)",
            peak * 1.048576 < RSS_LIMIT_MB,
        )
    )
    if run.windows:
        expected = workload.expected_queries()
        result.append(
            (
                f"one query per distinct signal query per cycle ({expected}, whatever the "
                "pod count)",
                all(round(w.queries) == expected for w in run.windows),
            )
        )
    final = run.final_progress
    recycles = run.last.get("infercycle_recycles_total") if run.last is not None else None
    replaced = replaced_pods(run)
    if final is not None and recycles is not None and replaced is not None:
        result.append(
            (
                "no pod recycled in the healthy fleet (recycles metric, status history, pod UIDs)",
                recycles == 0 and final.history == 0 and replaced == 0,
            )
        )
    if run.teardown_s is not None:
        ports = "16443 / 19090 / 19100" if run.cluster_owned else "19100 (the cluster stays up)"
        result.append(
            (f"nothing left listening on {ports} or the operator's ports", not run.leftovers)
        )
    return result


def report(run: Run) -> None:
    args = run.args
    table = "| measure | value |\n|---|---|\n" + "".join(f"| {a} | {b} |\n" for a, b in rows(run))
    results = checks(run)
    versions = subprocess.run(
        ["prometheus", "--version"], capture_output=True, text=True, check=False
    ).stdout.splitlines()[:1]
    interval = parse_duration(args.cycle_interval)
    policy = (
        "the end-to-end tests' compressed policy (`deployment_manifest`'s `health`: every "
        "built-in rule with windows of seconds, warm-up 10 s)"
        if args.policy == "compressed"
        else "the built-in rules, windows and queries with only `health.warmup` set, to "
        f"{args.warmup} (the built-in 10 min would keep every verdict WarmingUp for the whole "
        "run); the rest as `deployment_manifest` builds it"
    )
    lines = [
        f"# Cluster benchmark: {run.workload.pods:,} pods on the local control plane",
        "",
        f"Machine: {machine_line()}. {versions[0] if versions else 'prometheus'}.",
        "",
        f"Command: `python benchmarks/cluster.py --deployments {len(run.workload.keys)} --replicas "
        f"{run.workload.replicas} --cycle-interval {args.cycle_interval} --cycles {args.cycles} "
        f"--speed {args.speed:g} --policy {args.policy}"
        + (f" --warmup {args.warmup}" if args.policy == "builtin" else "")
        + "`",
        "",
        "Setup: `hack/cluster up` (etcd, kube-apiserver, kube-controller-manager and "
        f"kube-scheduler built from source, KWOK) with {run.nodes} fake nodes of "
        f"{PODS_PER_NODE} pods. Its Prometheus scrapes the fleet simulator "
        f"(`infercycle_sim.fleetsim`, {args.speed:g} simulated seconds per second) every "
        "2 s; the simulator exports cAdvisor, dcgm-exporter and vLLM series for every Running "
        "pod, all in its `healthy` scenario. The operator runs as a real process (`infercycle "
        "run`, started as `tests/e2e/operator_process.py` does) with `--cycle-interval "
        f"{args.cycle_interval}` and the default query timeout (10 s), watching the "
        f"{len(run.workload.namespaces)} benchmark namespaces. Once its `/healthz` answers, "
        f"{len(run.workload.keys)} InferenceDeployments of {run.workload.replicas} replicas "
        "(`infercycle_sim.fleets.deployment_manifest`: `Recreate`, no session store) are "
        f"applied with one `kubectl apply`. Health policy: {policy}. kube-controller-manager "
        "runs with its default client rate limit (20 requests/s, burst 30), which paces the "
        "StatefulSet controller's pod creations.",
        "",
        "Settled: every StatefulSet and PodDisruptionBudget exists, every pod is Ready, every "
        "status has the current `observedGeneration` and all replicas ready, every pod has a "
        "verdict past warm-up (Healthy or Degraded) in `status.pods` with "
        "`MetricsAvailable=True`, and then one more cycle has finished; that cycle's end "
        "(`infercycle_last_cycle_timestamp_seconds`) is the settle time. Until then the "
        "benchmark lists pods, StatefulSets, PDBs and InferenceDeployments every 2 s.",
        "",
        "Steady state: the operator's `/metrics` and `/proc/<pid>` are read once per "
        f"{interval:g} s interval, between cycle ends; per-cycle figures are the deltas divided "
        "by the cycles finished (`infercycle_evaluation_duration_seconds_count`). "
        "`infercycle_kubernetes_requests_total` counts the cycle's own requests (one read of "
        "each deployment, status patches when a status changed or every 5 min, recycle steps, "
        "events), not kopf's watch streams or its handler patches. CPU time is the whole "
        f"operator process: the cycles, kopf's watches of {run.workload.pods:,} pods and the "
        "metrics endpoint. The health engines hold only the minutes of history this run "
        "produces; the cost of full 1.5 h histories is in [scale.md](scale.md).",
        "",
        table,
        "Targets:",
        "",
        *[f"- {'PASS' if ok else 'FAIL'}: {text}" for text, ok in results],
        "",
    ]
    if run.failure:
        lines += ["Failure:", "", "```", run.failure, "```", ""]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "cluster.md").write_text("\n".join(lines))
    print(table)
    for text, ok in results:
        print(f"{'PASS' if ok else 'FAIL'}: {text}")


# --------------------------------------------------------------------------------------------


def leftovers(run: Run) -> list[str]:
    """What still listens of what this run started."""
    ports = {FLEETSIM_PORT: "fleet simulator"}
    if run.cluster_owned:
        ports.update({APISERVER_PORT: "kube-apiserver", PROMETHEUS_PORT: "Prometheus"})
    ports.update(dict.fromkeys(run.operator_ports, "operator"))
    return [f"{name} :{port}" for port, name in ports.items() if port_taken(port)]


@contextlib.contextmanager
def uninterruptible() -> Iterator[None]:
    """Ctrl-C and SIGTERM wait while the teardown runs."""
    previous = (
        signal.signal(signal.SIGINT, signal.SIG_IGN),
        signal.signal(signal.SIGTERM, signal.SIG_IGN),
    )
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous[0])
        signal.signal(signal.SIGTERM, previous[1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--deployments", type=int, default=50)
    parser.add_argument("--replicas", type=int, default=20, help="pods per deployment")
    parser.add_argument("--cycle-interval", default="10s", help="the operator's cycle interval")
    parser.add_argument("--cycles", type=int, default=8, help="steady-state cycles to sample")
    parser.add_argument("--speed", type=float, default=10.0, help="simulator clock speed")
    parser.add_argument(
        "--policy",
        choices=["builtin", "compressed"],
        default="builtin",
        help="built-in rules with a short warm-up, or the end-to-end tests' compressed policy",
    )
    parser.add_argument("--warmup", default="30s", help="health.warmup with --policy builtin")
    parser.add_argument("--settle-timeout", type=float, default=600.0, help="seconds")
    parser.add_argument("--out", type=Path, default=DOCS)
    args = parser.parse_args(argv)
    parse_duration(args.cycle_interval)
    parse_duration(args.warmup)
    run = Run(
        args=args,
        workload=Workload(
            args.deployments, args.replicas, args.policy, args.warmup, args.cycle_interval
        ),
    )
    signal.signal(signal.SIGTERM, on_sigterm)
    stack = contextlib.ExitStack()
    completed = False
    try:
        measure(run, stack)
        completed = True
    except KeyboardInterrupt:
        log("interrupted; tearing down")
    except Exception as error:
        log(f"failed: {error}; tearing down")
        raise
    finally:
        with uninterruptible():
            started = time.monotonic()
            try:
                stack.close()
            finally:
                run.teardown_s = time.monotonic() - started
                time.sleep(0.5)
                run.leftovers = leftovers(run)
                if run.leftovers:
                    log(f"still listening after the teardown: {', '.join(run.leftovers)}")
    if not completed:
        return 130
    run.total_s = time.time() - run.started
    report(run)
    return 0 if all(ok for _, ok in checks(run)) else 1


if __name__ == "__main__":
    raise SystemExit(main())
