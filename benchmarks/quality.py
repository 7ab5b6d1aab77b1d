"""Precision, recall and time to detect of the built-in policy over the scenario set.

    python benchmarks/quality.py [--seeds 6] [--step 30] [--set synthetic|reported|all]

Two sets: ``synthetic`` (``infercycle_sim.scenarios``) and ``reported``, pods shaped like
quantified public issue reports of vLLM, SGLang, llama.cpp and TGI servers
(``infercycle_sim.reported``, which cites each report and its numbers): hung engines,
OOM-killed crash loops, leaks against a known limit, a KV cache pinned full, a slowdown, and
healthy-but-noisy fleets (allocator plateaus, GC sawtooth, the knee of the load curve,
transient bursts, idle nights), with latency computed as ``histogram_quantile`` over vLLM's
bucket layout and restarts reported as the pod's status reports them. For every leak the
report gives how long before the limit the call came.

Each run is one deployment of 8 pods starting within half an hour. For a degrading scenario,
2 pods degrade and 6 are healthy; for a healthy scenario every pod runs it (``surge`` under a
fleet-wide surge). Degrading scenarios run in real time (no compression). A pod counts as:

- true positive: a degrading pod first flagged after its onset;
- false positive: a healthy pod flagged at any time, or a degrading pod flagged before onset;
- false negative: a degrading pod never flagged within the run.

Time to detect is from the onset of the degradation to the first degraded verdict.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.tracegen import make_fleet, run_fleet

from infercycle.api.resolver import resolve_policy
from infercycle.api.values import HealthPolicy
from infercycle_sim import reported
from infercycle_sim.scenarios import DEGRADING_SCENARIOS, SCENARIOS

HOURS = {
    "leak": 8.0,
    "gpu_creep": 8.0,
    "latency_creep": 30.0,
    "superlinear": 14.0,
    "error_creep": 14.0,
}
HEALTHY_HOURS = 12.0
PROMISE = 0.8
"""Share of ``timeToLimit`` a leak call must come before the limit, where the leak allows it."""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=6)
    parser.add_argument("--step", type=float, default=30.0, help="seconds between cycles")
    parser.add_argument("--scenario", action="append", choices=SCENARIOS + reported.REPORTED)
    parser.add_argument("--set", choices=("synthetic", "reported", "all"), default="all")
    args = parser.parse_args(argv)
    policy = resolve_policy().health
    chosen = args.scenario or []
    started = time.process_time()
    if args.set in ("synthetic", "all") and (not chosen or set(chosen) & set(SCENARIOS)):
        synthetic(policy, args, [name for name in chosen if name in SCENARIOS] or list(SCENARIOS))
    if args.set in ("reported", "all") and (not chosen or set(chosen) & set(reported.REPORTED)):
        names = [name for name in chosen if name in reported.REPORTED] or list(reported.REPORTED)
        report_shaped(policy, args.seeds, args.step, names)
    print(f"CPU {time.process_time() - started:.0f}s")
    return 0


def synthetic(policy: HealthPolicy, args: argparse.Namespace, scenarios: list[str]) -> None:
    """The synthetic scenario set, as before."""
    tp = fp = fn = tn = 0
    detect: dict[str, list[float]] = defaultdict(list)
    print("synthetic scenarios")
    for scenario in scenarios:
        hours = HOURS.get(scenario, HEALTHY_HOURS)
        flagged = pods = early = late = 0
        false_alarms: list[str] = []
        for seed in range(1, args.seeds + 1):
            fleet = make_fleet(scenario, seed=seed)
            run = run_fleet(fleet, policy, hours, args.step)
            for pod in fleet.pods:
                first = run.first_degraded.get(pod.name)
                if pod.model.degrading:
                    pods += 1
                    onset = pod.start_s + (pod.model.onset_s or 0.0)
                    if first is None:
                        fn += 1
                        late += 1
                    elif first < onset:
                        fp += 1
                        early += 1
                    else:
                        tp += 1
                        flagged += 1
                        detect[scenario].append((first - onset) / 3600)
                elif first is None:
                    tn += 1
                else:
                    fp += 1
                    reasons = "; ".join(run.reasons[pod.name])
                    false_alarms.append(f"seed {seed} {pod.name} ({pod.model.scenario}): {reasons}")
        healthy_pods = args.seeds * 8 - pods
        lines = []
        if scenario in DEGRADING_SCENARIOS:
            ttd = detect[scenario]
            median = f"{statistics.median(ttd):.2f}h" if ttd else "-"
            spread = f"{min(ttd):.2f}-{max(ttd):.2f}h" if ttd else "-"
            lines.append(
                f"{scenario:15s} {flagged}/{pods} degrading pods flagged, {early} early, "
                f"{late} missed; time to detect median {median} (range {spread}); "
                f"{len(false_alarms)}/{healthy_pods} healthy pods flagged ({hours:.0f}h runs)"
            )
        else:
            lines.append(
                f"{scenario:15s} {len(false_alarms)}/{healthy_pods} pods flagged "
                f"({hours:.0f}h runs)"
            )
        lines.extend(f"    false positive {alarm}" for alarm in false_alarms)
        print("\n".join(lines), flush=True)
    precision = tp / (tp + fp) if tp + fp else float("nan")
    recall = tp / (tp + fn) if tp + fn else float("nan")
    print()
    print(
        f"pods: {tp} true positives, {fp} false positives, {fn} false negatives, "
        f"{tn} true negatives"
    )
    print(f"precision {precision:.3f}  recall {recall:.3f}")
    print()


def report_shaped(policy: HealthPolicy, seeds: int, step: float, scenarios: list[str]) -> None:
    """The report-shaped set: per kind, precision, recall, time to detect and, for leaks, how
    long before the limit the call came (against the policy's ``timeToLimit``)."""
    print("report-shaped scenarios (infercycle_sim.reported)")
    totals = [0, 0, 0]
    limited = [rule for rule in policy.rules if rule.time_to_limit_s is not None]
    horizon = max(rule.time_to_limit_s or 0.0 for rule in limited) / 3600
    window = max(rule.window_s for rule in limited) / 3600
    for scenario in scenarios:
        tp = fp = fn = 0
        detect: list[float] = []
        ahead: list[str] = []
        promised = kept = short = in_life = 0
        alarms: list[str] = []
        for seed in range(1, seeds + 1):
            for pod in reported.run_reported(scenario, seed, policy, step_s=step):
                first = pod.first_degraded_s
                if not pod.degrading:
                    if first is not None:
                        fp += 1
                        alarms.append(f"seed {seed} {pod.name}: {'; '.join(pod.reasons)}")
                    continue
                assert pod.onset_s is not None
                if first is None:
                    fn += 1
                    alarms.append(f"seed {seed} {pod.name} missed")
                    continue
                if first < pod.onset_s:
                    fp += 1
                    alarms.append(f"seed {seed} {pod.name} flagged before onset")
                    continue
                tp += 1
                detect.append((first - pod.onset_s) / 60)
                if scenario in reported.LEAKS:
                    if pod.limit_s is None:
                        ahead.append("limit not reached in the run")
                        continue
                    lead = (pod.limit_s - first) / 3600
                    runway = (pod.limit_s - pod.onset_s) / 3600
                    ahead.append(f"{lead:.2f}h ({lead / horizon:.2f}x) of {runway:.1f}h")
                    if runway >= horizon + window:
                        promised += 1
                        kept += lead >= PROMISE * horizon
                    else:
                        short += 1
                        in_life += lead > 0
        totals[0] += tp
        totals[1] += fp
        totals[2] += fn
        precision = tp / (tp + fp) if tp + fp else 1.0
        if scenario in reported.DEGRADING:
            recall = tp / (tp + fn) if tp + fn else float("nan")
            median = f"{statistics.median(detect):.1f} min" if detect else "-"
            print(
                f"{scenario:18s} precision {precision:.3f} recall {recall:.3f} "
                f"({tp}/{tp + fn}); time to detect median {median}"
            )
            if ahead:
                print(
                    f"    called before the limit (lead, x timeToLimit, of the time from onset "
                    f"to limit): {', '.join(ahead)}"
                )
                print(
                    f"    leaks with at least timeToLimit + window from onset to limit: called "
                    f">= {PROMISE} x timeToLimit before it: {kept}/{promised}; faster leaks "
                    f"called before their first kill: {in_life}/{short}"
                )
        else:
            print(f"{scenario:18s} {fp} of {seeds * reported.PODS} healthy pods flagged")
        for alarm in alarms:
            print(f"    {alarm}")
    tp, fp, fn = totals
    precision = tp / (tp + fp) if tp + fp else float("nan")
    recall = tp / (tp + fn) if tp + fn else float("nan")
    print(f"pods: {tp} true positives, {fp} false positives, {fn} false negatives")
    print(f"precision {precision:.3f}  recall {recall:.3f}")


if __name__ == "__main__":
    sys.exit(main())
