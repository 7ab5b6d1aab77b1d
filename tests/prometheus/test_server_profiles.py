"""Every profile's queries against a real Prometheus scraping each server's metrics.

No cluster: a Prometheus of its own on free ports (so no cluster lock is needed).

The expositions are the simulator's renderings of each server (names, types, labels and buckets
of the server's own definitions) plus hand-written kube-state-metrics and dcgm-exporter series in
each of dcgm-exporter's three label layouts. The real ``prometheus`` binary (the one the local
cluster harness runs) scrapes them every second; each built-in query must then return exactly one
value per pod, in the signal's unit.
"""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import yaml

from infercycle.api.servers import INFRASTRUCTURE, PROFILES, WINDOW, ServerKind, profile_for
from infercycle_sim.servers import MEAN_SHARE, OUTPUT_TOKENS, TOKEN_SHARE, TTFT_SHARE, EngineState
from infercycle_sim.servers import render as render_server

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SERVERS = [s for s in ServerKind if s is not ServerKind.CUSTOM]
PODS = ("llm-0", "llm-1", "llm-2")
SAMPLE = {"latency_p99": 0.6, "request_rate": 5.0, "error_rate": 0.02, "kv_cache": 0.4}
GIB = 2**30
MIB = 2**20

EXPECTED: dict[str, float] = {
    "latency_p99": 0.6,
    "ttft_p99": 0.6 * TTFT_SHARE,
    "token_latency_p99": 0.6 * TOKEN_SHARE,
    "kv_cache": 0.4,
    "requests_running": round(5.0 * 0.6 * MEAN_SHARE),
    "request_rate": 5.0 / 0.98,
    "error_rate": 0.02,
    "requests_waiting": 0.0,  # the simulated servers never queue
    "requests_pending": round(5.0 * 0.6 * MEAN_SHARE),
}
COUNTERS = {"progress"}
"""Cumulative counts (tokens, forward passes): any positive value is in the contract's unit."""
MEANS: dict[tuple[ServerKind, str], float] = {
    (ServerKind.TRITON, "latency_p99"): 0.6 * MEAN_SHARE,
    (ServerKind.LLAMACPP, "token_latency_p99"): 0.6 * MEAN_SHARE * (1 - TTFT_SHARE) / OUTPUT_TOKENS,
}
"""Signals a server only has as a mean (sum over count), not as a quantile."""
SUCCESS_ONLY = {ServerKind.SGLANG, ServerKind.TGI, ServerKind.TRITON}
"""Servers whose request counter leaves out failed requests."""


class Metrics:
    """Each server's pods, their counters advancing in real time between scrapes."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.last = time.monotonic()
        self.engines = {
            server: [
                ({"namespace": f"ns-{server.value}", "pod": pod}, EngineState.new(server))
                for pod in PODS
            ]
            for server in SERVERS
        }

    def page(self, path: str) -> str:
        with self.lock:
            now = time.monotonic()
            step, self.last = now - self.last, now
            for pods in self.engines.values():
                for _, engine in pods:
                    engine.accumulate(SAMPLE, step)
            name = path.strip("/").removeprefix("metrics/")
            if name in STATIC:
                return STATIC[name]
            return render_server(name, self.engines[ServerKind(name)])


def _series(name: str, labels: dict[str, str], value: float) -> str:
    body = ",".join(f'{k}="{v}"' for k, v in labels.items())
    return f"{name}{{{body}}} {value!r}\n"


def _kube_state() -> str:
    """Three pods: a server with a native sidecar and a classic init container, a server
    without a limit, a server alone."""
    ns = "ns-ksm"
    lines = [
        "# TYPE kube_pod_container_resource_limits gauge\n",
        "# TYPE kube_pod_container_info gauge\n",
        "# TYPE kube_pod_init_container_resource_limits gauge\n",
        "# TYPE kube_pod_init_container_info gauge\n",
        "# TYPE container_memory_working_set_bytes gauge\n",
        "# TYPE container_cpu_usage_seconds_total counter\n",
    ]
    pods: dict[str, dict[str, Any]] = {
        "sidecar-0": {
            "server": 8 * GIB,
            "init": {"agent": (1 * GIB, "Always"), "setup": (4 * GIB, "")},
        },
        "nolimit-0": {"server": None, "init": {}},
        "plain-0": {"server": 8 * GIB, "init": {}},
    }
    for pod, spec in pods.items():
        base = {"namespace": ns, "pod": pod, "uid": f"uid-{pod}"}
        server = {**base, "container": "server"}
        lines.append(_series("kube_pod_container_info", {**server, "image": "srv:1"}, 1.0))
        lines.append(_series("container_memory_working_set_bytes", server, 3.0 * GIB))
        lines.append(
            _series("container_cpu_usage_seconds_total", server, 100.0 + time.time() % 1e4)
        )
        if spec["server"] is not None:
            limit = {**server, "resource": "memory", "unit": "byte"}
            lines.append(_series("kube_pod_container_resource_limits", limit, spec["server"]))
        for name, (limit, policy) in spec["init"].items():
            init = {**base, "container": name}
            info = {**init, "restart_policy": policy} if policy else init
            lines.append(_series("kube_pod_init_container_info", info, 1.0))
            limits = {**init, "resource": "memory", "unit": "byte"}
            lines.append(_series("kube_pod_init_container_resource_limits", limits, limit))
    return "".join(lines)


def _dcgm(namespace: str, pod_label: str, namespace_label: str, *, reserved: bool) -> str:
    lines = [f"# TYPE DCGM_FI_DEV_FB_{kind} gauge\n" for kind in ("USED", "FREE", "RESERVED")]
    for index, pod in enumerate(PODS):
        gpu = {"gpu": str(index), "UUID": f"GPU-{index}", "modelName": "NVIDIA H100 80GB HBM3"}
        owned = {**gpu, pod_label: pod, namespace_label: namespace, "container": "server"}
        lines.append(_series("DCGM_FI_DEV_FB_USED", owned, 1000.0 * (index + 1)))
        lines.append(_series("DCGM_FI_DEV_FB_FREE", owned, 80000.0 - 1000.0 * (index + 1)))
        if reserved:
            lines.append(_series("DCGM_FI_DEV_FB_RESERVED", owned, 500.0))
    idle = {"gpu": "7", "UUID": "GPU-7", "modelName": "NVIDIA H100 80GB HBM3"}
    lines.append(_series("DCGM_FI_DEV_FB_USED", idle, 0.0))  # no pod holds it: left out
    return "".join(lines)


STATIC = {
    "ksm": _kube_state(),
    "dcgm-pod": _dcgm("ns-dcgm-pod", "pod", "namespace", reserved=True),
    "dcgm-podname": _dcgm("ns-dcgm-podname", "pod_name", "pod_namespace", reserved=False),
    "dcgm-exported": _dcgm("ns-dcgm-exported", "pod", "namespace", reserved=True),
}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="module")
def exporter() -> Iterator[str]:
    metrics = Metrics()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = metrics.page(self.path).encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def _job(
    name: str, target: str, *, honor: bool = True, labels: dict[str, str] | None = None
) -> dict[str, Any]:
    static: dict[str, Any] = {"targets": [target]}
    if labels:
        static["labels"] = labels
    return {
        "job_name": name,
        "metrics_path": f"/metrics/{name}",
        "honor_labels": honor,
        "static_configs": [static],
    }


@pytest.fixture(scope="module")
def prometheus(exporter: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    # The harness's pinned Prometheus 3 (built from its Go module by `hack/cluster build`),
    # never an older one that happens to be on PATH.
    from localcluster.build import prometheus_binary  # noqa: PLC0415

    pinned = prometheus_binary("prometheus")
    binary = str(pinned) if pinned.exists() else None
    if binary is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"no Prometheus at {pinned}: run `hack/cluster build` first")
        pytest.skip(f"no Prometheus at {pinned} (`hack/cluster build` builds it)")
    state = tmp_path_factory.mktemp("prometheus")
    jobs = [_job(s.value, exporter) for s in SERVERS]
    jobs += [_job(name, exporter) for name in ("ksm", "dcgm-pod", "dcgm-podname")]
    # Behind a ServiceMonitor with honorLabels: false the exporter's own pod is the target.
    exporter_pod = {"namespace": "gpu-operator", "pod": "dcgm-exporter-x7k2p"}
    jobs.append(_job("dcgm-exported", exporter, honor=False, labels=exporter_pod))
    config = {"global": {"scrape_interval": "1s", "scrape_timeout": "1s"}, "scrape_configs": jobs}
    (state / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = _free_port()
    process = subprocess.Popen(
        [
            binary,
            f"--config.file={state / 'prometheus.yml'}",
            f"--storage.tsdb.path={state / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=(state / "prometheus.log").open("w"),
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{url}/-/ready", timeout=2):
                    break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    pytest.fail((state / "prometheus.log").read_text()[-2000:])
                time.sleep(0.3)
        # rate() needs two samples of every counter: wait for seven scrapes of every target.
        while True:
            scraped = _query(url, "min(count_over_time(up[1m]))")
            if scraped and min(scraped.values()) >= 7:
                break
            if time.monotonic() > deadline:
                pytest.fail("Prometheus did not scrape every target seven times in 60 s")
            time.sleep(0.5)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


def _query(url: str, promql: str) -> dict[tuple[str, str], float]:
    address = f"{url}/api/v1/query?{urllib.parse.urlencode({'query': promql})}"
    with urllib.request.urlopen(address, timeout=10) as answer:
        body = json.load(answer)
    assert body["status"] == "success", body
    assert body["data"]["resultType"] == "vector", body["data"]["resultType"]
    values: dict[tuple[str, str], float] = {}
    for row in body["data"]["result"]:
        key = (row["metric"].get("namespace", ""), row["metric"].get("pod", ""))
        assert key not in values, f"two series for {key}"
        values[key] = float(row["value"][1])
    return values


def _expected(server: ServerKind, signal: str) -> float:
    if (server, signal) in MEANS:
        return MEANS[(server, signal)]
    if signal == "request_rate" and server in SUCCESS_ONLY:
        return 5.0
    return EXPECTED[signal]


ENGINE_QUERIES = [
    pytest.param(server, signal, id=f"{server.value}-{signal}")
    for server in SERVERS
    for signal, source in PROFILES[server].sources.items()
    if source.query is not None and signal not in INFRASTRUCTURE
]


@pytest.mark.parametrize(("server", "signal"), ENGINE_QUERIES)
def test_engine_query_returns_one_value_per_pod_in_its_unit(
    prometheus: str, server: ServerKind, signal: str
) -> None:
    query = profile_for(server).queries[signal]
    assert set(_query(prometheus, query)) == {(f"ns-{server.value}", pod) for pod in PODS}, query
    # The profile's 5 m windows divide a few seconds of counting by 300 s: read the unit over a
    # window the test has filled.
    short = query.replace(f"[{WINDOW}]", "[5s]")
    values = _query(prometheus, short)
    assert set(values) == {(f"ns-{server.value}", pod) for pod in PODS}, short
    if signal in COUNTERS:
        assert all(math.isfinite(v) and v > 0 for v in values.values()), (values, short)
        return
    expected = _expected(server, signal)
    tolerance = 0.2 if signal == "request_rate" else 0.12
    slack = 0.6 if signal in ("requests_running", "requests_pending") else 0.0
    for key, value in values.items():
        assert math.isfinite(value), key
        assert value == pytest.approx(expected, rel=tolerance, abs=slack), (key, short)


@pytest.mark.parametrize(
    ("namespace", "total_mib"),
    [("ns-dcgm-pod", 80500.0), ("ns-dcgm-podname", 80000.0), ("ns-dcgm-exported", 80500.0)],
)
def test_gpu_memory_reads_every_dcgm_label_layout(
    prometheus: str, namespace: str, total_mib: float
) -> None:
    profile = profile_for("vllm")
    used = {
        k: v
        for k, v in _query(prometheus, profile.queries["gpu_memory"]).items()
        if k[0] == namespace
    }
    total = {
        k: v
        for k, v in _query(prometheus, profile.queries["gpu_memory_total"]).items()
        if k[0] == namespace
    }
    assert set(used) == set(total) == {(namespace, pod) for pod in PODS}
    for index, pod in enumerate(PODS):
        assert used[(namespace, pod)] == 1000.0 * (index + 1) * MIB
        assert total[(namespace, pod)] == total_mib * MIB


def test_the_exporter_pod_is_never_given_a_workload_gpu(prometheus: str) -> None:
    """Behind honorLabels: false a GPU no pod holds carries only the exporter's own pod label;
    the exporter's pod (never part of an InferenceDeployment) gets that idle GPU, nothing else."""
    used = _query(prometheus, profile_for("vllm").queries["gpu_memory"])
    assert used.get(("gpu-operator", "dcgm-exporter-x7k2p"), 0.0) == 0.0
    assert not any(pod == "" for _, pod in used)


def test_memory_limit_counts_native_sidecars_and_skips_pods_without_a_limit(
    prometheus: str,
) -> None:
    limits = {
        k: v
        for k, v in _query(prometheus, profile_for("vllm").queries["memory_limit"]).items()
        if k[0] == "ns-ksm"
    }
    assert limits == {("ns-ksm", "sidecar-0"): 9.0 * GIB, ("ns-ksm", "plain-0"): 8.0 * GIB}


def test_infrastructure_queries_return_one_value_per_pod(prometheus: str) -> None:
    for signal in ("cpu", "memory"):
        values = {
            k: v
            for k, v in _query(prometheus, profile_for("vllm").queries[signal]).items()
            if k[0] == "ns-ksm"
        }
        assert set(values) == {("ns-ksm", p) for p in ("sidecar-0", "nolimit-0", "plain-0")}, signal
