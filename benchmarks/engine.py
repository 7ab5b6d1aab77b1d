"""One deployment of 10,000 pods x 7 signals with 1 h of 15 s history: cost of a cycle.

    python benchmarks/engine.py [--pods 10000] [--cycles 24]

The history is backfilled (as after an operator restart) from synthetic in-memory series:
steady pods with noise, 1 % leaking host memory, 1 % with a latency outlier. Then live cycles
run as the controller does: ``observe`` for every pod, then one ``evaluate``. Growth fits are
refreshed every 5 minutes of windows (every 20 cycles at 15 s), so both the typical cycle and
the slowest one (with refits) are reported. CPU time is process time; memory is the engine's
arrays, the tracemalloc peak of one evaluation, and the process RSS (Linux).
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import statistics
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np

from infercycle.api.resolver import resolve_policy
from infercycle.health import HealthEngine, PodKey

STEP_S = 15.0
HISTORY_S = 3600.0
GIB = float(2**30)
MIB = float(2**20)
SIGNALS = ("cpu", "memory", "gpu_memory", "latency_p99", "kv_cache", "request_rate", "error_rate")


def rss_mib() -> tuple[float, float]:
    """Current and peak resident set size of this process."""
    fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines())
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


class Fleet:
    """Per-pod levels and the synthetic value of every signal at a time."""

    def __init__(self, pods: int, seed: int = 1) -> None:
        rng = np.random.default_rng(seed)
        self.rng = rng
        self.pods = pods
        self.base = {
            "cpu": rng.uniform(2.0, 2.6, pods),
            "memory": rng.uniform(10, 18, pods) * GIB,
            "gpu_memory": rng.uniform(0.88, 0.92, pods) * 80 * GIB,
            "latency_p99": rng.uniform(0.078, 0.092, pods),
            "kv_cache": rng.uniform(0.3, 0.42, pods),
            "request_rate": rng.uniform(2, 6, pods),
            "error_rate": rng.uniform(0.0005, 0.002, pods),
        }
        self.leaking = rng.random(pods) < 0.01
        self.slow = rng.random(pods) < 0.01

    def values(self, t: float, pods: slice = slice(None)) -> dict[str, np.ndarray]:  # type: ignore[type-arg]
        size = len(range(self.pods)[pods])
        base = {name: self.base[name][pods] for name in SIGNALS}
        result = {
            name: base[name] * (1 + 0.04 * self.rng.standard_normal(size)) for name in SIGNALS
        }
        result["memory"] = base["memory"] + 24 * MIB * self.rng.standard_normal(size)
        result["memory"] += np.where(self.leaking[pods], 1024 * MIB * (t + 7200) / 3600, 0.0)
        result["gpu_memory"] = base["gpu_memory"]
        result["latency_p99"] = np.where(self.slow[pods], 2.5, 1.0) * result["latency_p99"]
        return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pods", type=int, default=10_000)
    parser.add_argument("--cycles", type=int, default=24)
    args = parser.parse_args(argv)
    policy = resolve_policy().health
    baseline, _ = rss_mib()
    fleet = Fleet(args.pods)
    keys = [PodKey(f"llm-{n:05d}", f"uid-{n}") for n in range(args.pods)]
    started = -2 * 3600.0
    engine = HealthEngine(policy)

    times = np.arange(-HISTORY_S + STEP_S, STEP_S / 2, STEP_S)
    backfill = 0.0
    chunk = 500
    for first_pod in range(0, args.pods, chunk):
        pods = slice(first_pod, min(first_pod + chunk, args.pods))
        width = len(range(args.pods)[pods])
        series = {name: np.empty((len(times), width)) for name in SIGNALS}
        for index, t in enumerate(times):
            for name, values in fleet.values(float(t), pods).items():
                series[name][index] = values
        cpu = time.process_time()
        for offset in range(width):
            for name in SIGNALS:
                points = np.column_stack([times, series[name][:, offset]])
                engine.observe_series(keys[first_pod + offset], started, name, points)
        backfill += time.process_time() - cpu
        del series
    gc.collect()
    cpu = time.process_time()
    verdicts = engine.evaluate(0.0)
    first = time.process_time() - cpu
    print(
        f"pods {args.pods}, signals {len(SIGNALS)}, rules {len(policy.rules)}, "
        f"history {len(times)} cycles of {STEP_S:.0f}s (ring of {engine._store.capacity})"
    )
    print(f"backfill of 1h: {backfill:.1f}s CPU; first evaluation after it: {first:.3f}s CPU")

    observe_cpu: list[float] = []
    evaluate_cpu: list[float] = []
    for cycle in range(1, args.cycles + 1):
        t = cycle * STEP_S
        values = {name: array.tolist() for name, array in fleet.values(t).items()}
        cpu = time.process_time()
        for index, key in enumerate(keys):
            engine.observe(t, key, started, {name: values[name][index] for name in SIGNALS})
        observe_cpu.append(time.process_time() - cpu)
        cpu = time.process_time()
        verdicts = engine.evaluate(t)
        evaluate_cpu.append(time.process_time() - cpu)
    degraded = sum(verdict.degraded for verdict in verdicts.values())
    typical, slowest = statistics.median(evaluate_cpu), max(evaluate_cpu)
    print(
        f"evaluate: median {typical * 1000:.0f}ms CPU, slowest {slowest * 1000:.0f}ms CPU "
        f"(with growth refits) over {args.cycles} cycles"
    )
    print(f"pods per second (slowest cycle): {args.pods / slowest:,.0f}")
    print(f"observe: {statistics.median(observe_cpu) * 1e6 / args.pods:.1f}us CPU per pod sample")
    print(
        f"degraded pods: {degraded} (planted: {int(fleet.leaking.sum())} leaking, "
        f"{int(fleet.slow.sum())} slow; a slow pod needs a second signal)"
    )

    held = sum(matrix.nbytes for matrix in engine._store.values.values())
    tracemalloc.start()
    engine.evaluate(args.cycles * STEP_S)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    print(
        f"engine sample arrays: {held / 2**20:.0f} MiB; tracemalloc peak of one evaluation: "
        f"{peak / 2**20:.0f} MiB"
    )
    gc.collect()
    current, high = rss_mib()
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    trimmed, _ = rss_mib()
    print(
        f"process RSS {current:.0f} MiB ({trimmed:.0f} MiB once freed heap is returned to the "
        f"OS), peak {high:.0f} MiB; {baseline:.0f} MiB before the engine was built"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
