"""Seeded fleets of simulated pods: JSONL traces for ``infercycle replay``, and in-process runs.

As a command::

    python tests/tracegen.py OUT.jsonl --scenario leak --degrading 2 --pods 8 --hours 6
    python tests/tracegen.py OUT.jsonl --mix healthy,spikes,leak --pods 100 --hours 48

A fleet is one deployment: ``pods`` pods starting at seeded offsets in the first half hour,
``degrading`` of them running the scenario under test and the rest ``healthy`` (or every pod
the scenario when it is a healthy one, or the scenarios of ``--mix`` in turn).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from infercycle.api.values import HealthPolicy
from infercycle.health import HealthEngine, PodKey
from infercycle_sim.scenarios import (
    DEGRADING_SCENARIOS,
    SCENARIOS,
    PodModel,
    fleet_load,
    make_pod_model,
)

HOUR = 3600.0


@dataclass(frozen=True)
class SimPod:
    name: str
    model: PodModel
    start_s: float


@dataclass(frozen=True)
class Fleet:
    pods: tuple[SimPod, ...]
    load: Callable[[float], float]


def make_fleet(
    scenario: str | Sequence[str],
    *,
    pods: int = 8,
    degrading: int | None = None,
    seed: int = 0,
    params: dict[str, float] | None = None,
    stagger_s: float = 1800.0,
) -> Fleet:
    """A deployment of ``pods`` simulated pods.

    With one degrading scenario, ``degrading`` pods (default 2) run it and the others are
    ``healthy``; with a healthy scenario every pod runs it; with several, they take turns.
    """
    rng = random.Random(seed)
    if isinstance(scenario, str):
        if scenario in DEGRADING_SCENARIOS:
            count = 2 if degrading is None else degrading
            kinds = [scenario] * count + ["healthy"] * (pods - count)
        else:
            kinds = [scenario] * pods
        load_kind = scenario
    else:
        kinds = [scenario[index % len(scenario)] for index in range(pods)]
        load_kind = "surge" if "surge" in scenario else "healthy"
    members = []
    for index, kind in enumerate(kinds):
        model = make_pod_model(
            kind,
            seed * 1000 + index,
            params if kind in DEGRADING_SCENARIOS else None,
        )
        members.append(SimPod(f"pod-{index:04d}", model, round(rng.uniform(0, stagger_s))))
    return Fleet(tuple(members), lambda t: fleet_load(load_kind, t))


def cycles(
    fleet: Fleet, hours: float, step_s: float = 15.0
) -> Iterator[tuple[float, list[tuple[SimPod, float, dict[str, float | None]]]]]:
    """Per cycle time: the pods alive then, their start time (first sample) and their sample."""
    first_sample: dict[str, float] = {}
    steps = int(hours * HOUR / step_s)
    for index in range(steps + 1):
        t = index * step_s
        load = fleet.load(t)
        batch = []
        for pod in fleet.pods:
            if t < pod.start_s:
                continue
            started = first_sample.setdefault(pod.name, t)
            batch.append((pod, started, pod.model.sample(t - pod.start_s, load)))
        yield t, batch


def write_trace(out: TextIO, fleet: Fleet, hours: float, step_s: float = 15.0) -> int:
    """Write the fleet as JSON Lines; returns the number of samples."""
    written = 0
    for t, batch in cycles(fleet, hours, step_s):
        lines = [
            json.dumps({"t": t, "pod": pod.name, "signals": signals}, separators=(",", ":"))
            for pod, _, signals in batch
        ]
        if lines:
            out.write("\n".join(lines))
            out.write("\n")
            written += len(lines)
    return written


@dataclass(frozen=True)
class FleetRun:
    """What the engine said about each pod over a run."""

    first_degraded: dict[str, float]
    """Fleet time each pod was first judged degraded."""
    reasons: dict[str, tuple[str, ...]]
    """The reasons given that first time."""
    degraded_cycles: dict[str, int]


def run_fleet(fleet: Fleet, policy: HealthPolicy, hours: float, step_s: float = 30.0) -> FleetRun:
    """Drive a fresh engine through the fleet exactly as the live loop does."""
    engine = HealthEngine(policy)
    keys = {pod.name: PodKey(pod.name, pod.name) for pod in fleet.pods}
    first: dict[str, float] = {}
    reasons: dict[str, tuple[str, ...]] = {}
    counts: dict[str, int] = {}
    for t, batch in cycles(fleet, hours, step_s):
        for pod, started, signals in batch:
            engine.observe(t, keys[pod.name], started, signals)
        for key, verdict in engine.evaluate(t).items():
            if verdict.degraded:
                counts[key.name] = counts.get(key.name, 0) + 1
                if key.name not in first:
                    first[key.name] = t
                    reasons[key.name] = tuple(reason.text for reason in verdict.reasons)
    return FleetRun(first, reasons, counts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("output", help="trace file to write (- for stdout)")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--scenario", default="healthy", choices=SCENARIOS)
    group.add_argument("--mix", help="comma-separated scenarios the pods take in turn")
    parser.add_argument("--pods", type=int, default=8)
    parser.add_argument("--degrading", type=int, default=None)
    parser.add_argument("--hours", type=float, default=6.0)
    parser.add_argument("--step", type=float, default=15.0, help="seconds between cycles")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--param", action="append", default=[], metavar="NAME=VALUE", help="scenario parameter"
    )
    args = parser.parse_args(argv)
    params = {}
    for item in args.param:
        name, _, value = item.partition("=")
        params[name] = float(value)
    scenario: str | list[str] = args.mix.split(",") if args.mix else args.scenario
    fleet = make_fleet(
        scenario, pods=args.pods, degrading=args.degrading, seed=args.seed, params=params or None
    )
    if args.output == "-":
        count = write_trace(sys.stdout, fleet, args.hours, args.step)
    else:
        with Path(args.output).open("w") as out:
            count = write_trace(out, fleet, args.hours, args.step)
    print(f"{count} samples", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
