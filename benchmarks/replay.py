"""Time ``infercycle replay`` on 100 pods x 48 h at 15 s (1.15 M samples).

    python benchmarks/replay.py [--pods 100] [--hours 48] [--step 15]

The trace (every scenario in turn, under the surge profile) is written once to
``benchmarks/out/`` and reused while its parameters stay the same. The replay runs as a
subprocess, as other tools run it; its wall time, CPU time and peak RSS are reported.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.tracegen import make_fleet, write_trace  # noqa: E402

from infercycle_sim.scenarios import SCENARIOS  # noqa: E402

OUT = ROOT / "benchmarks" / "out"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pods", type=int, default=100)
    parser.add_argument("--hours", type=float, default=48.0)
    parser.add_argument("--step", type=float, default=15.0)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    OUT.mkdir(parents=True, exist_ok=True)
    trace = OUT / f"trace-{args.pods}p-{args.hours:g}h-{args.step:g}s-{args.seed}.jsonl"
    if not trace.exists():
        started = time.perf_counter()
        fleet = make_fleet(list(SCENARIOS), pods=args.pods, seed=args.seed)
        partial = trace.with_suffix(".partial")
        with partial.open("w") as out:
            samples = write_trace(out, fleet, args.hours, args.step)
        partial.replace(trace)
        print(f"wrote {trace.name}: {samples:,} samples in {time.perf_counter() - started:.0f}s")
    lines = sum(1 for _ in trace.open("rb"))
    size = trace.stat().st_size / 2**20
    output = OUT / f"{trace.stem}.verdicts.jsonl"
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "infercycle.replay", str(trace), "--output", str(output)],
        check=False,
        capture_output=True,
        text=True,
    )
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if result.returncode != 0:
        print(result.stderr, file=sys.stderr)
        return result.returncode
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    changes = [json.loads(line) for line in output.read_text().splitlines()]
    flagged = sorted({change["pod"] for change in changes if change["verdict"] == "degraded"})
    print(f"trace: {lines:,} samples, {size:.0f} MiB")
    print(
        f"replay: {wall:.1f}s wall, {cpu:.1f}s CPU, {lines / cpu:,.0f} samples per CPU second, "
        f"peak RSS {after.ru_maxrss / 1024:.0f} MiB"
    )
    print(f"verdict changes: {len(changes)}; pods ever degraded: {len(flagged)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
