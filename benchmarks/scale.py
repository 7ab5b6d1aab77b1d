"""10,000 pods in 100 deployments against a real Prometheus: the cost of one evaluation cycle.

    python benchmarks/scale.py [--deployments 100] [--pods 100] [--minutes 10] [--cycles 5]

The metrics the default queries read (cAdvisor, dcgm-exporter, vLLM) are written as
OpenMetrics text for every pod, backfilled into a TSDB with ``promtool tsdb
create-blocks-from openmetrics`` and served by a local ``prometheus`` (127.0.0.1:19190, data
under ``benchmarks/out/scale/``, stopped at the end). Backfilled data lies in the past, so the
cycle queries Prometheus at a time inside the backfilled range: ``PrometheusReader`` is used
as the operator uses it (``snapshot`` of the same query map, one instant query per distinct
query, run concurrently) with only ``query_now`` changed to pass that evaluation time.

Each cycle: one snapshot, then every pod's answers are fed to its deployment's
``HealthEngine`` (100 engines of 100 pods, each pre-filled with 1.5 h of 15 s history, the
policy's longest window plus its sustain, as the operator backfills after a start) and each
engine evaluates. Wall time of each part, CPU time and the peak RSS of this process are
reported in ``docs/benchmarks/scale.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import numpy as np

from infercycle.api.resolver import resolve_policy
from infercycle.cycle.state import QuerySet
from infercycle.health import HealthEngine, PodKey
from infercycle.prom.reader import PrometheusReader
from infercycle.settings import OperatorSettings

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fleet import machine_line

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "out" / "scale"
DOCS = ROOT / "docs" / "benchmarks"
ADDRESS = "127.0.0.1:19190"
STEP_S = 15
HISTORY_S = resolve_policy().health.longest_window_s
"""Pre-filled history: the policy's longest window plus sustain (what the operator backfills)."""
GIB = float(2**30)
MIB = float(2**20)
GPU_MIB = 80 * 1024.0
MEMORY_LIMIT = 24 * GIB
BUCKETS = ("0.05", "0.1", "0.25", "0.5", "1", "+Inf")
# Cumulative share of requests at or below each bucket bound: a healthy pod (p99 ~0.1 s) and
# a slow one (p99 ~0.45 s).
HEALTHY_CDF = np.array([0.55, 0.992, 0.999, 1.0, 1.0, 1.0])
SLOW_CDF = np.array([0.2, 0.6, 0.95, 0.995, 1.0, 1.0])


def rss_kib(pid: int | str = "self") -> tuple[int, int]:
    """(VmRSS, VmHWM) of a process, KiB."""
    fields = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
    )
    return int(fields["VmRSS"].split()[0]), int(fields["VmHWM"].split()[0])


@dataclass
class Fleet:
    """Per-pod levels; a few pods leak host memory and a few are slow."""

    namespaces: list[str]
    names: list[str]
    deployment: np.ndarray  # index of each pod's deployment
    cpu: np.ndarray
    memory: np.ndarray
    gpu_mib: np.ndarray
    kv: np.ndarray
    rate: np.ndarray
    errors: np.ndarray
    leak_per_s: np.ndarray
    slow: np.ndarray

    @classmethod
    def make(cls, deployments: int, pods: int, seed: int = 1) -> Fleet:
        rng = np.random.default_rng(seed)
        total = deployments * pods
        deployment = np.repeat(np.arange(deployments), pods)
        namespaces = [f"team-{d % 10}" for d in deployment.tolist()]
        names = [f"llm-{d:03d}-{i}" for d in range(deployments) for i in range(pods)]
        leaking = rng.random(total) < 0.01
        return cls(
            namespaces=namespaces,
            names=names,
            deployment=deployment,
            cpu=rng.uniform(2.0, 2.6, total),
            # Leaking pods start close enough to their limit to be condemned within the run.
            memory=np.where(leaking, rng.uniform(20.5, 21.5, total), rng.uniform(10, 18, total))
            * GIB,
            gpu_mib=rng.uniform(0.88, 0.92, total) * GPU_MIB,
            kv=rng.uniform(0.3, 0.42, total),
            rate=rng.uniform(2.0, 6.0, total),
            errors=rng.uniform(0.0005, 0.002, total),
            leak_per_s=np.where(leaking, 1024 * MIB / 3600, 0.0),
            slow=rng.random(total) < 0.01,
        )

    @property
    def size(self) -> int:
        return len(self.names)

    def gauges(
        self, t: np.ndarray | float, rng: np.random.Generator, rows: slice = slice(None)
    ) -> dict[str, np.ndarray]:
        """Instant values the engine would get for the pods in ``rows``, at time(s) ``t``
        (seconds from the start of history), for the pre-filled history."""
        chosen = np.arange(self.size)[rows]
        shape = (len(chosen),) if np.isscalar(t) else (len(chosen), len(np.atleast_1d(t)))
        tt = np.asarray(t, dtype=np.float64)
        noise = rng.standard_normal(shape)
        col = (slice(None),) if np.isscalar(t) else (slice(None), None)

        def pick(array: np.ndarray) -> np.ndarray:
            return array[chosen][col]

        p99 = pick(np.where(self.slow, 0.45, 0.099)) * (1 + 0.04 * noise)
        values = {
            "cpu": pick(self.cpu) * (1 + 0.05 * noise),
            "memory": pick(self.memory) + pick(self.leak_per_s) * tt + 24 * MIB * noise,
            "gpu_memory": pick(self.gpu_mib) * MIB,
            "latency_p99": p99,
            "kv_cache": np.clip(pick(self.kv) + 0.02 * noise, 0, 1),
            "request_rate": pick(self.rate) * (1 + 0.04 * noise),
            "error_rate": pick(self.errors) * (1 + 0.3 * np.abs(noise)),
            "requests_running": pick(self.rate) * 0.3,
            "memory_limit": np.full(shape, MEMORY_LIMIT),
            "gpu_memory_total": np.full(shape, GPU_MIB * MIB),
        }
        return {name: np.broadcast_to(value, shape) for name, value in values.items()}


def openmetrics(fleet: Fleet, end: int, minutes: float, history_offset: float) -> Iterator[str]:
    """OpenMetrics text, one family at a time (samples of a family must be contiguous)."""
    times = np.arange(end - int(minutes * 60), end + 1, STEP_S)
    labels = [
        f'namespace="{ns}",pod="{pod}"'
        for ns, pod in zip(fleet.namespaces, fleet.names, strict=True)
    ]
    rng = np.random.default_rng(2)
    elapsed = (times - times[0]).astype(np.float64)
    since = history_offset + (times - times[0])  # engine-history seconds at each sample

    def family(
        name: str, values: np.ndarray, extra: str = "", fmt: str = "{:.6g}"
    ) -> Iterator[str]:
        yield f"# TYPE {name} unknown\n"
        for column, t in enumerate(times.tolist()):
            column_values = values[:, column].tolist()
            yield "".join(
                f"{name}{{{label}{extra}}} {fmt.format(v)} {t}\n"
                for label, v in zip(labels, column_values, strict=True)
            )

    noise = rng.standard_normal((fleet.size, len(times)))
    base = rng.uniform(1e5, 1e6, fleet.size)[:, None]
    yield from family(
        "container_cpu_usage_seconds_total",
        base + fleet.cpu[:, None] * elapsed[None, :],
        ',container="vllm"',
        "{:.3f}",
    )
    memory = fleet.memory[:, None] + fleet.leak_per_s[:, None] * since[None, :] + 24 * MIB * noise
    yield from family("container_memory_working_set_bytes", memory, ',container="vllm"', "{:.0f}")
    gpu = np.repeat(fleet.gpu_mib[:, None], len(times), axis=1)
    yield from family("DCGM_FI_DEV_FB_USED", gpu, ',gpu="0"', "{:.0f}")
    yield from family("DCGM_FI_DEV_FB_FREE", GPU_MIB - gpu, ',gpu="0"', "{:.0f}")
    ones = np.ones((fleet.size, len(times)))
    yield from family(
        "kube_pod_container_resource_limits",
        ones * MEMORY_LIMIT,
        ',container="vllm",resource="memory",unit="byte"',
        "{:.0f}",
    )
    yield from family("kube_pod_container_info", ones, ',container="vllm"', "{:.0f}")
    requests = base / 10 + fleet.rate[:, None] * elapsed[None, :]
    cdf = np.where(fleet.slow[:, None], SLOW_CDF[None, :], HEALTHY_CDF[None, :])
    yield "# TYPE vllm:e2e_request_latency_seconds_bucket unknown\n"
    for column, t in enumerate(times.tolist()):
        counts = requests[:, column : column + 1] * cdf
        chunk = []
        for index, label in enumerate(labels):
            for bound, count in zip(BUCKETS, counts[index].tolist(), strict=True):
                chunk.append(
                    f'vllm:e2e_request_latency_seconds_bucket{{{label},le="{bound}"}} '
                    f"{count:.1f} {t}\n"
                )
        yield "".join(chunk)
    kv = np.clip(fleet.kv[:, None] + 0.02 * noise, 0, 1)
    yield from family("vllm:kv_cache_usage_perc", kv, fmt="{:.4f}")
    stop = ',finished_reason="stop"'
    yield from family("vllm:request_success_total", requests, stop, fmt="{:.1f}")
    # vLLM counts failed requests in the same family, finished_reason="error".
    failures = base / 1e4 + (fleet.rate * fleet.errors)[:, None] * elapsed[None, :]
    error = ',finished_reason="error"'
    errors = family("vllm:request_success_total", failures, error, fmt="{:.2f}")
    yield from (chunk for chunk in errors if not chunk.startswith("# TYPE"))
    running = np.maximum(fleet.rate[:, None] * 0.3 + noise, 0)
    yield from family("vllm:num_requests_running", running, fmt="{:.0f}")
    yield "# EOF\n"


def wait_ready(url: str, timeout: float) -> float:
    started = time.perf_counter()
    while time.perf_counter() - started < timeout:
        try:
            with urllib.request.urlopen(f"{url}/-/ready", timeout=2) as answer:
                if answer.status == 200:
                    return time.perf_counter() - started
        except OSError:
            pass
        time.sleep(0.5)
    msg = f"Prometheus at {url} not ready after {timeout:.0f}s"
    raise RuntimeError(msg)


def prefill(fleet: Fleet, engines: list[HealthEngine], keys: list[PodKey], end: float) -> None:
    """``HISTORY_S`` of 15 s history for every pod, ending one step before ``end``."""
    rng = np.random.default_rng(3)
    times = np.arange(end - HISTORY_S, end, STEP_S, dtype=np.float64)
    started = end - 6 * HISTORY_S
    # One deployment at a time, as the operator backfills: the generated history of the whole
    # fleet at once would make this script's peak memory, not the engines'.
    for deployment, engine in enumerate(engines):
        rows = np.flatnonzero(fleet.deployment == deployment)
        first, last = int(rows[0]), int(rows[-1]) + 1
        values = fleet.gauges(times - times[0], rng, slice(first, last))
        for offset, key in enumerate(keys[first:last]):
            for signal in engine.policy.signals:
                points = np.column_stack([times, values[signal][offset]])
                engine.observe_series(key, started, signal, points)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--deployments", type=int, default=100)
    parser.add_argument("--pods", type=int, default=100, help="pods per deployment")
    parser.add_argument("--minutes", type=float, default=10.0, help="backfilled span")
    parser.add_argument("--cycles", type=int, default=5)
    parser.add_argument("--out", type=Path, default=DOCS)
    args = parser.parse_args(argv)
    for tool in ("prometheus", "promtool"):
        if shutil.which(tool) is None:
            print(f"{tool} not found: apt-get install -y prometheus", file=sys.stderr)
            return 2
    run_started = time.perf_counter()
    fleet = Fleet.make(args.deployments, args.pods)
    end = int(time.time()) - 120
    end -= end % STEP_S
    # The engine history covers [end - 1h, end); the backfilled span is its last minutes.
    history_offset = HISTORY_S - args.minutes * 60

    if OUT.exists():
        shutil.rmtree(OUT)
    data = OUT / "data"
    data.mkdir(parents=True)
    text = OUT / "metrics.om"
    started = time.perf_counter()
    with text.open("w") as handle:
        for chunk in openmetrics(fleet, end, args.minutes, history_offset):
            handle.write(chunk)
    write_s = time.perf_counter() - started
    text_mib = text.stat().st_size / MIB
    started = time.perf_counter()
    subprocess.run(
        ["promtool", "tsdb", "create-blocks-from", "openmetrics", str(text), str(data)],
        check=True,
        capture_output=True,
    )
    backfill_s = time.perf_counter() - started
    text.unlink()
    samples = len(range(end - int(args.minutes * 60), end + 1, STEP_S))
    series = fleet.size * (7 + len(BUCKETS))
    print(
        f"openmetrics {text_mib:.0f} MiB in {write_s:.0f}s, {series:,} series x {samples} samples; "
        f"promtool backfill {backfill_s:.0f}s",
        file=sys.stderr,
    )

    config = OUT / "prometheus.yml"
    config.write_text("global:\n  scrape_interval: 15s\nscrape_configs: []\n")
    log = (OUT / "prometheus.log").open("w")
    server = subprocess.Popen(
        [
            "prometheus",
            f"--config.file={config}",
            f"--storage.tsdb.path={data}",
            "--storage.tsdb.retention.time=30d",
            f"--web.listen-address={ADDRESS}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://{ADDRESS}"
    try:
        ready_s = wait_ready(url, 120)
        result = measure(args, fleet, end, url)
        prom_rss_mib = rss_kib(server.pid)[0] / 1024
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()
    total_s = time.perf_counter() - run_started
    result.update(
        text_mib=text_mib,
        write_s=write_s,
        backfill_s=backfill_s,
        ready_s=ready_s,
        prom_rss_mib=prom_rss_mib,
        series=series,
        samples=samples,
        total_s=total_s,
    )
    report(args, result)
    return 0 if result["pass_cycle"] and result["pass_rss"] and result["pass_queries"] else 1


def measure(args: argparse.Namespace, fleet: Fleet, end: int, url: str) -> dict[str, object]:
    policy = resolve_policy().health
    query_set = QuerySet()
    for signal in (*policy.signals, "requests_running"):
        promql = policy.queries.get(signal)
        if promql:
            query_set.add(signal, promql)
    queries = query_set.by_label()
    reader = PrometheusReader(OperatorSettings(prometheus_url=url, query_timeout="30s"))

    engines = [HealthEngine(policy) for _ in range(args.deployments)]
    keys = [PodKey(name, f"uid-{row}/0") for row, name in enumerate(fleet.names)]
    rows = {
        (ns, name): row
        for row, (ns, name) in enumerate(zip(fleet.namespaces, fleet.names, strict=True))
    }
    cycle_times = [float(end - STEP_S * (args.cycles - 1 - k)) for k in range(args.cycles)]
    started = time.perf_counter()
    prefill(fleet, engines, keys, cycle_times[0])
    for engine in engines:
        engine.evaluate(cycle_times[0] - STEP_S)
    prefill_s = time.perf_counter() - started
    pod_started = cycle_times[0] - 6 * HISTORY_S

    load_before = os.getloadavg()[0]
    cycles = []
    for at in cycle_times:
        cpu0 = time.process_time()
        t0 = time.perf_counter()
        reader.evaluation_time = at
        snapshot = asyncio.run(reader.snapshot(queries))
        t1 = time.perf_counter()
        if snapshot.errors:
            msg = f"query errors: {snapshot.errors}"
            raise RuntimeError(msg)
        by_signal = {signal: snapshot.signals.get(signal, {}) for signal in policy.signals}
        answered = {ref for values in by_signal.values() for ref in values}
        degraded = 0
        for ref in answered:
            row = rows[ref]
            signals = {signal: values.get(ref) for signal, values in by_signal.items()}
            engines[fleet.deployment[row]].observe(at, keys[row], pod_started, signals)
        for engine in engines:
            verdicts = engine.evaluate(at)
            degraded += sum(1 for verdict in verdicts.values() if verdict.degraded)
        t2 = time.perf_counter()
        cycles.append(
            {
                "queries": snapshot.queries,
                "prom_s": t1 - t0,
                "engine_s": t2 - t1,
                "total_s": t2 - t0,
                "cpu_s": time.process_time() - cpu0,
                "pods": len(answered),
                "per_signal": {signal: len(values) for signal, values in by_signal.items()},
                "degraded": degraded,
                "slowest_query": max(snapshot.durations.items(), key=lambda item: item[1]),
            }
        )
        print(
            f"cycle at {at:.0f}: {snapshot.queries} queries, prometheus {t1 - t0:.2f}s, "
            f"engines {t2 - t1:.2f}s, {len(answered)} pods answered, {degraded} degraded",
            file=sys.stderr,
        )
    usage = resource.getrusage(resource.RUSAGE_SELF)
    rss, hwm = rss_kib()
    distinct = len(set(queries.values()))
    return {
        "cycles": cycles,
        "signals": len(queries),
        "distinct": distinct,
        "prefill_s": prefill_s,
        "rss_mib": rss / 1024,
        "hwm_mib": hwm / 1024,
        "maxrss_mib": usage.ru_maxrss / 1024,
        "cpu_total_s": usage.ru_utime + usage.ru_stime,
        "load": (load_before, os.getloadavg()[0]),
        "pass_queries": all(c["queries"] == distinct + 1 for c in cycles),
        "pass_cycle": max(cast(float, c["total_s"]) for c in cycles) < 5.0,
        "pass_rss": hwm / 1024 < 500,
    }


def report(args: argparse.Namespace, r: dict[str, object]) -> None:
    cycles = r["cycles"]
    assert isinstance(cycles, list)

    def stat(name: str) -> str:
        values = [c[name] for c in cycles]
        return f"{statistics.median(values):.2f} s (max {max(values):.2f} s)"

    pods = args.deployments * args.pods
    slowest = max((c["slowest_query"] for c in cycles), key=lambda item: item[1])
    rows = [
        ("pods / deployments", f"{pods:,} / {args.deployments}"),
        (
            "series backfilled",
            f"{r['series']:,} x {r['samples']} samples ({args.minutes:g} min at {STEP_S} s); "
            f"OpenMetrics {r['text_mib']:.0f} MiB written in {r['write_s']:.0f} s, "
            f"`promtool` backfill {r['backfill_s']:.0f} s",
        ),
        (
            "queries per cycle",
            f"{cycles[0]['queries']} = {r['distinct']} signal queries (one per signal: "
            f"{r['signals']} signals) + 1 freshness query",
        ),
        ("Prometheus time per cycle", stat("prom_s")),
        ("slowest single query", f"{slowest[0]} {slowest[1]:.2f} s"),
        (
            f"engine time per cycle (observe + evaluate, {args.deployments} engines)",
            stat("engine_s"),
        ),
        ("total cycle, end to end", stat("total_s")),
        ("CPU time per cycle (this process)", stat("cpu_s")),
        (
            "pods answered / degraded per cycle",
            f"{cycles[-1]['pods']:,} / {cycles[-1]['degraded']}",
        ),
        (
            "pods answered per signal",
            ", ".join(f"{k} {v:,}" for k, v in cycles[-1]["per_signal"].items()),
        ),
        (
            f"pre-fill of {HISTORY_S / 3600:g} h history (observe_series + first evaluate)",
            f"{r['prefill_s']:.0f} s",
        ),
        ("peak RSS of this process (VmHWM)", f"{r['hwm_mib']:.0f} MiB"),
        ("CPU time of this process, whole run", f"{r['cpu_total_s']:.0f} s"),
        ("Prometheus RSS after the cycles", f"{r['prom_rss_mib']:.0f} MiB"),
        ("script wall time", f"{r['total_s']:.0f} s"),
        (
            "1-min load average before / after the cycles (2 cores, shared)",
            "{:.1f} / {:.1f}".format(*r["load"]),  # type: ignore[misc]
        ),
    ]
    table = "| measure | value |\n|---|---|\n" + "\n".join(f"| {a} | {b} |" for a, b in rows) + "\n"
    checks = [
        ("one query per signal per cycle", bool(r["pass_queries"])),
        ("total cycle < 5 s", bool(r["pass_cycle"])),
        ("RSS < 500 MB", bool(r["pass_rss"])),
    ]
    version = subprocess.run(
        ["prometheus", "--version"], capture_output=True, text=True, check=False
    ).stdout.splitlines()[:1]
    lines = [
        "# Scale benchmark: 10,000 pods against a real Prometheus",
        "",
        f"Machine: {machine_line()}. {version[0] if version else 'prometheus'}.",
        "",
        f"Command: `python benchmarks/scale.py --deployments {args.deployments} --pods "
        f"{args.pods} --minutes {args.minutes:g} --cycles {args.cycles}`",
        "",
        "Series for every metric the default queries read (cAdvisor CPU and working set with a "
        "`container` label, `DCGM_FI_DEV_FB_USED` and `DCGM_FI_DEV_FB_FREE`, kube-state-metrics' "
        "`kube_pod_container_resource_limits` and `kube_pod_container_info`, "
        "`vllm:e2e_request_latency_seconds_bucket` "
        f"with {len(BUCKETS)} buckets, `vllm:kv_cache_usage_perc`, `vllm:request_success_total` "
        '(`finished_reason` "stop" and "error"), `vllm:num_requests_running`), labelled with '
        "namespace "
        "and pod, are backfilled with `promtool tsdb create-blocks-from openmetrics` and served "
        f"by a local Prometheus ({ADDRESS}, retention 30d). 1 % of the pods leak host memory and "
        "1 % are slow. Each cycle runs the operator's `PrometheusReader.snapshot` over the "
        "default query map (queries run concurrently) at an evaluation time inside the "
        "backfilled range (the reader's `evaluation_time`), then "
        f"feeds the answers to {args.deployments} `HealthEngine`s of {args.pods} pods, each "
        f"pre-filled with {HISTORY_S / 3600:g} h of 15 s history (the policy's longest window "
        "plus its sustain, what the operator backfills on start), and evaluates them all.",
        "",
        table,
        "Targets:",
        "",
        *[f"- {'PASS' if ok else 'FAIL'}: {text}" for text, ok in checks],
        "",
        "Not measured: the KWOK part (1,000 simulated pods on the local cluster). The local "
        "cluster is shared with the test suite in this run, and 1,000 KWOK pods there would "
        "disturb it, so the API-server side (listing pods, status writes) is not covered here.",
        "",
    ]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "scale.md").write_text("\n".join(lines))
    print(table)
    for text, ok in checks:
        print(f"{'PASS' if ok else 'FAIL'}: {text}")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    raise SystemExit(main())
