"""Closed-loop fleet benchmark: restart strategies side by side on the same seeded fleet.

    python benchmarks/fleet.py [--days 3] [--step 60] [--seed 7]

A deployment of 24 simulated vLLM pods (``infercycle_sim.scenarios``) runs for a few
simulated days. A restart really resets a pod: after a stop (drain, checkpoint, exit: 60 s) its
age goes back to 0, it loads the model again and serves once ready, and its scenario stays, so
a leaking pod leaks again from zero while a healthy pod stays healthy. A pod whose host memory
reaches its limit, or whose GPU fills up, crashes (OOM): an unplanned restart with a longer
outage (crash-loop back-off and GPU release, 5 min, before the reload).

Strategies, each on its own copy of the same fleet:

- liveness: a latency liveness probe, restart after 3 consecutive probes with p99 above the
  SLO (kubelet defaults: a probe every 10 s; the same rule with a probe every 60 s is shown
  as a second row);
- alert: Prometheus alerting rules ``memory > 90 % of limit for: 5m`` and
  ``p99 > SLO for: 5m``, evaluated every 60 s, wired to a pod restart;
- periodic: recycle every pod older than 24 h (plus up to 1 h of jitter), evictions respect
  a PodDisruptionBudget of maxUnavailable 1 (descheduler PodLifeTime);
- infercycle: ``HealthEngine`` with the built-in default policy and the real ``plan_recycle``
  guards, evaluated every step; a recycle stays in flight until the pod is ready again and
  its verify window has passed, as in the operator.

Results go to ``docs/benchmarks/fleet.md`` and ``docs/benchmarks/fleet.png``.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import functools
import math
import platform
import random
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from infercycle.api.resolver import resolve_policy
from infercycle.api.spec import RecyclePolicySpec
from infercycle.api.values import EffectivePolicy
from infercycle.health import HealthEngine, PodKey
from infercycle.recycle.fleet import PastRecycle, PodJudgement, PodState
from infercycle.recycle.planner import plan_recycle
from infercycle_sim.scenarios import (
    GIB,
    GPU_BYTES,
    HOUR,
    PodModel,
    make_pod_model,
    surge_load,
)

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs" / "benchmarks"

SLO_P99_S = 0.250
MEMORY_LIMIT = 24 * GIB
GPU_OOM_AT = GPU_BYTES - 0.5 * GIB
PLANNED_STOP_S = 60.0
OOM_OUTAGE_S = 300.0
SURGE_AT_S = 34 * HOUR
"""The fleet-wide traffic surge starts on day 2 at 10:00 (2.5x load for ~2.5 h)."""
INCIDENT_AT_S = 58 * HOUR
INCIDENT_S = 40 * 60.0
INCIDENT_P99_S = 0.300
"""Day 3 at 10:00, a shared dependency of every pod slows down for 40 minutes and adds 300 ms
to each pod's p99: a fleet-wide event that no restart can cure."""
INITIAL_AGE_MAX_S = 2 * HOUR
PERIODIC_LIFETIMES_H = (6, 12, 24)
PERIODIC_JITTER_S = HOUR
LIVENESS_FAILURES = 3
ALERT_FOR_S = 300.0
ALERT_MEMORY_FRACTION = 0.9
LIMIT_RULES = ("memory-leak", "gpu-memory-leak")

# (scenario, parameters): 9 degrading pods, 15 healthy ones.
FLEET: tuple[tuple[str, dict[str, float]], ...] = (
    ("leak", {"rate": 384.0}),
    ("leak", {"rate": 768.0}),
    ("leak", {"rate": 1536.0}),
    ("leak", {"rate": 3072.0}),
    ("gpu_creep", {"rate": 768.0}),
    ("gpu_creep", {"rate": 2048.0}),
    ("latency_creep", {}),
    ("superlinear", {}),
    ("error_creep", {}),
    ("healthy", {}),
    ("healthy", {}),
    ("healthy", {}),
    ("healthy", {}),
    ("healthy", {}),
    ("spikes", {}),
    ("spikes", {}),
    ("spikes", {}),
    ("cleanup_spikes", {}),
    ("cleanup_spikes", {}),
    ("cleanup_spikes", {}),
    ("gc_sawtooth", {}),
    ("gc_sawtooth", {}),
    ("transient_bump", {}),
    ("transient_bump", {}),
)


def fleet_load_at(t: float) -> float:
    return surge_load(t, start_s=SURGE_AT_S)


def observe(pod: Pod, t: float, load: float) -> dict[str, float | None]:
    """What Prometheus would show for ``pod`` at ``t`` under ``load`` (its share of the
    traffic relative to normal)."""
    sample = pod.model.sample(pod.age(t), load)
    p99 = sample.get("latency_p99")
    if p99 is not None and INCIDENT_AT_S <= t < INCIDENT_AT_S + INCIDENT_S:
        sample["latency_p99"] = p99 + INCIDENT_P99_S
    # What kube-state-metrics and DCGM report: the container's memory limit and the GPU size.
    sample.update(memory_limit=MEMORY_LIMIT, gpu_memory_total=GPU_BYTES)
    return sample


# ---------------------------------------------------------------------------------------------
# The simulated fleet.


@dataclass
class Life:
    """One process lifetime of one pod, from start to a restart, a crash or the end."""

    pod: int
    start: float
    onset: float | None
    end: float | None = None
    end_kind: str | None = None  # "restart" | "oom" | None (still running at the end)
    first_breach: float | None = None


@dataclass
class Pod:
    index: int
    name: str
    model: PodModel
    start: float
    generation: int = 0
    down_until: float | None = None
    life: Life | None = None
    sample: dict[str, float | None] = field(default_factory=dict)

    @property
    def running(self) -> bool:
        return self.down_until is None

    def age(self, t: float) -> float:
        return t - self.start

    def serving_at(self, t: float) -> bool:
        return self.running and self.age(t) >= self.model.params["ready_s"]

    @property
    def key(self) -> PodKey:
        return PodKey(self.name, f"uid-{self.index}/{self.generation}")


class Fleet:
    def __init__(self, seed: int) -> None:
        rng = random.Random(seed)
        self.pods: list[Pod] = []
        self.load = 1.0
        """Each serving pod's load this step: the fleet's traffic spread over the pods serving."""
        self.lives: list[Life] = []
        for index, (scenario, params) in enumerate(FLEET):
            model = make_pod_model(scenario, seed * 1000 + index, params)
            start = -rng.uniform(0.0, INITIAL_AGE_MAX_S)
            pod = Pod(index, f"pod-{index:02d}", model, start)
            self.pods.append(pod)
            self._begin(pod, start)

    def _begin(self, pod: Pod, t: float) -> None:
        pod.start = t
        pod.down_until = None
        onset = None if pod.model.onset_s is None else t + pod.model.onset_s
        pod.life = Life(pod.index, t, onset)
        self.lives.append(pod.life)

    def _end(self, pod: Pod, t: float, kind: str, outage: float) -> None:
        assert pod.life is not None
        pod.life.end, pod.life.end_kind = t, kind
        pod.down_until = t + outage
        pod.sample = {}

    def revive(self, t: float) -> None:
        for pod in self.pods:
            if pod.down_until is not None and pod.down_until <= t:
                pod.generation += 1
                self._begin(pod, pod.down_until)

    def restart(self, pod: Pod, t: float) -> None:
        self._end(pod, t, "restart", PLANNED_STOP_S)

    def crash(self, pod: Pod, t: float) -> None:
        self._end(pod, t, "oom", OOM_OUTAGE_S)


# ---------------------------------------------------------------------------------------------
# Strategies.


class Strategy:
    name = ""
    label = ""

    def __init__(self) -> None:
        self._generation: dict[int, int] = {}

    def decide(self, t: float, fleet: Fleet) -> list[Pod]:
        raise NotImplementedError

    def new_life(self, pod: Pod) -> bool:
        """Whether ``pod`` restarted since this strategy last looked at it (its per-pod
        state then starts over)."""
        if self._generation.get(pod.index) == pod.generation:
            return False
        self._generation[pod.index] = pod.generation
        return True


class Liveness(Strategy):
    def __init__(self, period_s: float) -> None:
        super().__init__()
        self.period = period_s
        self.name = f"liveness ({period_s:g} s probe)"
        self.label = f"liveness\n{period_s:g} s"
        self.failures: dict[int, int] = {}

    def decide(self, t: float, fleet: Fleet) -> list[Pod]:
        chosen = []
        for pod in fleet.pods:
            if not pod.running:
                continue
            if self.new_life(pod):
                self.failures[pod.index] = 0
            probes = max(1, round(fleet_step(fleet) / self.period))
            for back in range(probes - 1, -1, -1):
                at = t - back * self.period
                if at < pod.start or not pod.serving_at(at):
                    continue
                if back == 0:
                    p99 = pod.sample.get("latency_p99")
                else:
                    p99 = observe(pod, at, fleet.load).get("latency_p99")
                bad = p99 is not None and p99 > SLO_P99_S
                self.failures[pod.index] = self.failures[pod.index] + 1 if bad else 0
                if self.failures[pod.index] >= LIVENESS_FAILURES:
                    chosen.append(pod)
                    break
        return chosen


_STEP: dict[int, float] = {}


def fleet_step(fleet: Fleet) -> float:
    return _STEP[id(fleet)]


class Alert(Strategy):
    name = "alert (for: 5m)"
    label = "alert\nfor: 5m"

    def __init__(self) -> None:
        super().__init__()
        self.since: dict[tuple[int, str], float] = {}

    def decide(self, t: float, fleet: Fleet) -> list[Pod]:
        chosen = []
        for pod in fleet.pods:
            if not pod.running:
                continue
            if self.new_life(pod):
                self.since = {k: v for k, v in self.since.items() if k[0] != pod.index}
            memory = pod.sample.get("memory")
            p99 = pod.sample.get("latency_p99") if pod.serving_at(t) else None
            conditions = {
                "memory": memory is not None and memory > ALERT_MEMORY_FRACTION * MEMORY_LIMIT,
                "latency": p99 is not None and p99 > SLO_P99_S,
            }
            firing = False
            for rule, holds in conditions.items():
                key = (pod.index, rule)
                if not holds:
                    self.since.pop(key, None)
                    continue
                since = self.since.setdefault(key, t)
                firing |= t - since >= ALERT_FOR_S
            if firing:
                chosen.append(pod)
        return chosen


class Periodic(Strategy):
    def __init__(self, seed: int, lifetime_h: float) -> None:
        super().__init__()
        self.name = f"periodic ({lifetime_h:g} h)"
        self.label = f"periodic\n{lifetime_h:g} h"
        self.lifetime = lifetime_h * HOUR
        self.rng = random.Random(seed ^ 0x5EED)
        self.deadline: dict[tuple[int, int], float] = {}

    def decide(self, t: float, fleet: Fleet) -> list[Pod]:
        down = sum(1 for pod in fleet.pods if not pod.serving_at(t))
        for pod in fleet.pods:
            if not pod.running:
                continue
            key = (pod.index, pod.generation)
            if key not in self.deadline:
                jitter = self.rng.uniform(0.0, PERIODIC_JITTER_S)
                self.deadline[key] = pod.start + self.lifetime + jitter
            if t >= self.deadline[key] and down == 0:
                return [pod]
        return []


class InferCycle(Strategy):
    name = "infercycle (default policy)"
    label = "InferCycle\ndefault"

    def __init__(self, policy: EffectivePolicy, name: str = "") -> None:
        super().__init__()
        self.name = name or self.name
        self.policy = policy
        self.engine = HealthEngine(policy.health)
        self.history: list[PastRecycle] = []
        self.operation: tuple[Pod, int, float] | None = None  # pod, its generation, started
        self.holds: dict[str, int] = {}
        self.engine_seconds = 0.0

    def decide(self, t: float, fleet: Fleet) -> list[Pod]:
        started = time.process_time()
        running = [pod for pod in fleet.pods if pod.running]
        for pod in running:
            self.engine.observe(t, pod.key, pod.start, pod.sample)
        self.engine.retain([pod.key for pod in running])
        verdicts = self.engine.evaluate(t)
        self.engine_seconds += time.process_time() - started
        in_flight = self._advance(t)
        states = [
            PodState(
                name=pod.name,
                uid=f"uid-{pod.index}",
                ready=pod.serving_at(t),
                serving=True,
                running=pod.running,
                started_at=pod.start,
                restart_count=pod.generation,
            )
            for pod in fleet.pods
        ]
        judgements = []
        for pod in running:
            verdict = verdicts.get(pod.key)
            if verdict is None:
                continue
            reasons = tuple(reason.text for reason in verdict.reasons)
            judgements.append(
                PodJudgement(
                    pod.name, f"uid-{pod.index}", verdict.degraded, reasons, float(len(reasons))
                )
            )
        plan = plan_recycle(
            now=t,
            replicas=len(fleet.pods),
            pods=states,
            judgements=judgements,
            history=self.history,
            disruption=self.policy.disruption,
            in_flight=in_flight,
        )
        for hold in plan.holds:
            self.holds[hold.guard.value] = self.holds.get(hold.guard.value, 0) + 1
        if plan.candidate is None:
            return []
        pod = fleet.pods[int(plan.candidate.pod.uid.removeprefix("uid-"))]
        self.operation = (pod, pod.generation + 1, t)
        return [pod]

    def _advance(self, t: float) -> bool:
        """Whether the recycle in flight is still going: it ends once the restarted pod has
        served for the verify window."""
        if self.operation is None:
            return False
        pod, generation, started = self.operation
        verify = self.policy.recycle.verify_window_s
        if pod.generation > generation:  # crashed again meanwhile: the operation is over
            done = True
        else:
            ready_at = pod.start + pod.model.params["ready_s"]
            done = pod.generation == generation and pod.running and t >= ready_at + verify
        if not done:
            return True
        self.history.append(PastRecycle(pod.name, started, t))
        self.operation = None
        return False


# ---------------------------------------------------------------------------------------------
# The run and its measures.


@dataclass
class Result:
    strategy: str
    label: str
    slo_minutes: float
    planned: int
    unnecessary: int
    ooms: int
    episodes: int
    missed: int
    median_delay_h: float | None
    min_capacity: float
    mean_capacity: float
    restarts_per_hour: float
    down_minutes: float
    serving: list[float]
    times: list[float]
    seconds: float
    extra: str = ""
    by_scenario: dict[str, tuple[int, int]] = field(default_factory=dict)
    incident_minutes: float = 0.0
    """SLO-violation pod-minutes while the shared dependency was slow (no restart helps)."""

    @property
    def restarts(self) -> int:
        """Every restart a pod went through: the planned ones and the OOM kills."""
        return self.planned + self.ooms


def run(strategy: Strategy, seed: int, days: float, step: float) -> Result:
    clock = time.perf_counter()
    fleet = Fleet(seed)
    _STEP[id(fleet)] = step
    steps = int(days * 86400 / step)
    slo_minutes = down_minutes = incident_minutes = 0.0
    serving_series: list[float] = []
    times: list[float] = []
    size = len(fleet.pods)
    for index in range(steps + 1):
        t = index * step
        fleet.revive(t)
        ready = sum(1 for pod in fleet.pods if pod.serving_at(t))
        fleet.load = fleet_load_at(t) * size / max(ready, 1)
        for pod in fleet.pods:
            if not pod.running:
                continue
            pod.sample = observe(pod, t, fleet.load)
            memory = pod.sample.get("memory") or 0.0
            gpu = pod.sample.get("gpu_memory") or 0.0
            if memory >= MEMORY_LIMIT or gpu >= GPU_OOM_AT:
                fleet.crash(pod, t)
        serving = 0
        for pod in fleet.pods:
            if not pod.serving_at(t):
                down_minutes += step / 60
                continue
            serving += 1
            p99 = pod.sample.get("latency_p99")
            if p99 is not None and p99 > SLO_P99_S:
                slo_minutes += step / 60
                if INCIDENT_AT_S <= t < INCIDENT_AT_S + INCIDENT_S:
                    incident_minutes += step / 60
                life = pod.life
                assert life is not None
                if life.first_breach is None and life.onset is not None and t >= life.onset:
                    life.first_breach = t
        serving_series.append(serving / size)
        times.append(t)
        for pod in strategy.decide(t, fleet):
            fleet.restart(pod, t)
    end = steps * step
    result = summarise(
        strategy, fleet, end, slo_minutes, down_minutes, serving_series, times, clock
    )
    return dataclasses.replace(result, incident_minutes=incident_minutes)


def summarise(
    strategy: Strategy,
    fleet: Fleet,
    end: float,
    slo_minutes: float,
    down_minutes: float,
    serving: list[float],
    times: list[float],
    clock: float,
) -> Result:
    planned = unnecessary = ooms = episodes = missed = 0
    delays: list[float] = []
    by_scenario: dict[str, tuple[int, int]] = {}
    for life in fleet.lives:
        model = fleet.pods[life.pod].model
        name = scenario_name(life.pod)
        restarted, crashed = by_scenario.get(name, (0, 0))
        by_scenario[name] = (
            restarted + (life.end_kind == "restart"),
            crashed + (life.end_kind == "oom"),
        )
        if life.end_kind == "restart":
            assert life.end is not None
            planned += 1
            if not model.degrading or (life.onset is not None and life.end < life.onset):
                unnecessary += 1
            elif life.onset is not None:
                delays.append(life.end - max(life.onset, 0.0))
        elif life.end_kind == "oom":
            ooms += 1
        if life.onset is None or life.onset > (end if life.end is None else life.end):
            continue
        episodes += 1
        stop = life.end if life.end is not None else math.inf
        breached = life.first_breach is not None and life.first_breach <= stop
        if life.end_kind == "oom" or breached:
            missed += 1
    extra = ""
    if isinstance(strategy, InferCycle) and strategy.holds:
        extra = ", ".join(f"{k} {v}" for k, v in sorted(strategy.holds.items()))
    # Capacity is measured once the fleet has settled (the first hour is the initial rollout).
    settled = [value for value, t in zip(serving, times, strict=True) if t >= HOUR]
    return Result(
        strategy=strategy.name,
        label=strategy.label,
        slo_minutes=slo_minutes,
        planned=planned,
        unnecessary=unnecessary,
        ooms=ooms,
        episodes=episodes,
        missed=missed,
        median_delay_h=statistics.median(delays) / HOUR if delays else None,
        min_capacity=min(settled),
        mean_capacity=statistics.fmean(settled),
        restarts_per_hour=(planned + ooms) / (end / HOUR),
        down_minutes=down_minutes,
        serving=serving,
        times=times,
        seconds=time.perf_counter() - clock,
        extra=extra,
        by_scenario=by_scenario,
    )


def scenario_name(index: int) -> str:
    scenario, params = FLEET[index]
    return scenario + (f" {params['rate']:g} MiB/h" if "rate" in params else "")


# ---------------------------------------------------------------------------------------------
# Report.


def machine_line() -> str:
    cpu = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    nproc = subprocess.run(["nproc"], capture_output=True, text=True, check=False).stdout.strip()
    today = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return f"nproc {nproc}, {cpu}, Python {platform.python_version()}, {today}"


def table(results: Sequence[Result]) -> str:
    head = (
        "| strategy | SLO-violation pod-min | of which in the incident "
        "| restarts (planned + OOM) | planned | unnecessary "
        "| OOM kills | missed/late (of episodes) | median onset→restart | min capacity "
        "| mean capacity | restarts/h | pod-min not serving |\n"
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n"
    )
    rows = []
    for r in results:
        delay = "-" if r.median_delay_h is None else f"{r.median_delay_h:.1f} h"
        rows.append(
            f"| {r.strategy} | {r.slo_minutes:,.0f} | {r.incident_minutes:,.0f} | {r.restarts} "
            f"| {r.planned} | {r.unnecessary} | {r.ooms} "
            f"| {r.missed} of {r.episodes} | {delay} | {r.min_capacity:.0%} "
            f"| {r.mean_capacity:.1%} | {r.restarts_per_hour:.2f} | {r.down_minutes:,.0f} |"
        )
    return head + "\n".join(rows) + "\n"


def scenario_table(results: Sequence[Result]) -> str:
    names = list(dict.fromkeys(scenario_name(index) for index in range(len(FLEET))))
    head = "| scenario (pods) | " + " | ".join(r.strategy for r in results) + " |\n"
    head += "|---|" + "--:|" * len(results) + "\n"
    rows = []
    for name in names:
        pods = sum(1 for index in range(len(FLEET)) if scenario_name(index) == name)
        cells = ["{} / {}".format(*r.by_scenario.get(name, (0, 0))) for r in results]
        rows.append(f"| {name} ({pods}) | " + " | ".join(cells) + " |")
    return head + "\n".join(rows) + "\n"


def targets(results: Sequence[Result]) -> list[tuple[str, bool, str]]:
    ours = next(r for r in results if r.strategy.startswith("infercycle"))
    singles = [r for r in results if r.strategy.startswith(("liveness", "alert"))]
    checks = []
    for periodic in (r for r in results if r.strategy.startswith("periodic")):
        checks += [
            (
                f"InferCycle has at most half the SLO-violation pod-minutes of {periodic.strategy}",
                ours.slo_minutes <= 0.5 * periodic.slo_minutes,
                f"{ours.slo_minutes:,.0f} vs {periodic.slo_minutes:,.0f} "
                f"(limit {0.5 * periodic.slo_minutes:,.0f})",
            ),
            (
                f"InferCycle restarts pods fewer times than {periodic.strategy} (planned "
                "restarts and OOM kills)",
                ours.restarts < periodic.restarts,
                f"{ours.restarts} vs {periodic.restarts}; planned alone {ours.planned} vs "
                f"{periodic.planned}",
            ),
        ]
    checks.append(
        ("InferCycle makes zero unnecessary restarts", ours.unnecessary == 0, f"{ours.unnecessary}")
    )
    for other in singles:
        checks.append(
            (
                f"InferCycle makes fewer unnecessary restarts than {other.strategy}",
                ours.unnecessary < other.unnecessary,
                f"{ours.unnecessary} vs {other.unnecessary}",
            )
        )
    return checks


def plot(results: Sequence[Result], path: Path) -> None:
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.8), gridspec_kw={"width_ratios": [1, 1, 1.6]})
    labels = [r.label for r in results]
    palette = {"liveness": ("#8c8c8c", "#b0b0b0"), "alert": ("#d08c3c",)}
    palette["periodic"] = ("#e0a090", "#c87a66", "#b5573b")
    palette["infercycle"] = ("#2f7d4f",)
    used: dict[str, int] = {}
    colors = []
    for r in results:
        family = r.strategy.split(" ", 1)[0]
        shades = palette.get(family, ("#555555",))
        colors.append(shades[min(used.get(family, 0), len(shades) - 1)])
        used[family] = used.get(family, 0) + 1
    ax = axes[0]
    ax.bar(labels, [r.slo_minutes for r in results], color=colors)
    ax.set_title(f"SLO-violation pod-minutes (p99 > {SLO_P99_S * 1000:.0f} ms)")
    ax.tick_params(axis="x", labelsize=8)
    ax = axes[1]
    needed = [r.planned - r.unnecessary for r in results]
    wasted = [r.unnecessary for r in results]
    ooms = [r.ooms for r in results]
    ax.bar(labels, needed, color="#2f7d4f", label="restarts of degrading pods")
    ax.bar(labels, wasted, bottom=needed, color="#d0a03c", label="unnecessary restarts")
    bottoms = [a + b for a, b in zip(needed, wasted, strict=True)]
    ax.bar(labels, ooms, bottom=bottoms, color="#b5373b", label="OOM kills")
    ax.set_title("Restarts")
    ax.legend(fontsize=8)
    ax.tick_params(axis="x", labelsize=8)
    ax = axes[2]
    for r, color in zip(results, colors, strict=True):
        hours = [t / HOUR for t in r.times]
        ax.plot(hours, [100 * s for s in r.serving], color=color, lw=0.8, label=r.strategy)
    ax.axvspan(SURGE_AT_S / HOUR, SURGE_AT_S / HOUR + 2.6, color="#dde6f5", label="traffic surge")
    incident = (INCIDENT_AT_S / HOUR, (INCIDENT_AT_S + INCIDENT_S) / HOUR)
    ax.axvspan(*incident, color="#f5dede", label="slow shared dependency")
    ax.set_title("Pods serving (%)")
    ax.set_xlabel("hours")
    ax.set_ylim(70, 101)
    ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def sensitivity_table(results: Sequence[Result]) -> str:
    head = (
        "| InferCycle | SLO-violation pod-min | restarts (planned + OOM) | planned | OOM kills "
        "| missed/late (of episodes) |\n|---|--:|--:|--:|--:|--:|\n"
    )
    rows = [
        f"| {r.strategy} | {r.slo_minutes:,.0f} | {r.restarts} | {r.planned} | {r.ooms} "
        f"| {r.missed} of {r.episodes} |"
        for r in results
    ]
    return head + "\n".join(rows) + "\n"


def with_time_to_limit(horizon: str) -> EffectivePolicy:
    rules = [{"name": name, "timeToLimit": horizon} for name in LIMIT_RULES]
    return resolve_policy(RecyclePolicySpec.model_validate({"health": {"rules": rules}}))


def write_markdown(
    results: Sequence[Result],
    checks: list[tuple[str, bool, str]],
    args: argparse.Namespace,
    sensitivity: Sequence[Result] = (),
) -> str:
    policy = resolve_policy()
    d = policy.disruption
    scenarios: dict[str, int] = {}
    for index in range(len(FLEET)):
        name = scenario_name(index)
        scenarios[name] = scenarios.get(name, 0) + 1
    fleet_text = ", ".join(f"{n}x {s}" for s, n in scenarios.items())
    lifetimes = ", ".join(f"{hours} h" for hours in PERIODIC_LIFETIMES_H)
    lines = [
        "# Fleet benchmark: restart strategies in closed loop",
        "",
        f"Machine: {machine_line()}.",
        "",
        f"Command: `python benchmarks/fleet.py --days {args.days:g} --step {args.step:g} "
        f"--seed {args.seed}`",
        "",
        "## Setup",
        "",
        f"- One deployment of {len(FLEET)} simulated vLLM pods (seeded models from "
        f"`infercycle_sim.scenarios`): {fleet_text}.",
        f"- {args.days:g} simulated days at {args.step:g} s steps; pods start with staggered "
        f"ages (0-{INITIAL_AGE_MAX_S / HOUR:.0f} h); a fleet-wide traffic surge (2.5x load for "
        f"~2.5 h) on day 2 at {SURGE_AT_S / HOUR - 24:.0f}:00; on day 3 at "
        f"{INCIDENT_AT_S / HOUR - 48:.0f}:00 a shared dependency slows down for "
        f"{INCIDENT_S / 60:.0f} min and adds {INCIDENT_P99_S * 1000:.0f} ms to every pod's p99 "
        "(no restart can cure it).",
        "- Traffic is spread over the pods serving: with k of n pods serving, each carries n/k "
        "of its normal share (and its latency rises with it).",
        f"- SLO: p99 latency ≤ {SLO_P99_S * 1000:.0f} ms. A serving pod above it for one step "
        f"counts {args.step / 60:g} SLO-violation pod-minute(s).",
        f"- A restart resets the pod's age to 0 (its scenario stays): {PLANNED_STOP_S:.0f} s to "
        "stop, then the model reloads and the pod serves once ready (1.3-3.5 min later), with "
        "the warm-up the models include.",
        f"- OOM: host memory at the {MEMORY_LIMIT / GIB:.0f} GiB limit, or the GPU within 0.5 GiB "
        f"of full, crashes the pod: an unplanned restart with {OOM_OUTAGE_S / 60:.0f} min of "
        "outage before the reload.",
        "- Unnecessary restart: a planned restart of a pod whose scenario is healthy, or of a "
        "degrading pod before its onset. An *episode* is a process lifetime of a degrading pod "
        "that reached its onset; it is *missed/late* when it ended in an OOM kill or breached "
        "the SLO before it was restarted. Median onset→restart is over planned restarts of "
        "degrading pods after their onset.",
        "- Restarts: every restart a pod goes through, planned ones and OOM kills alike (an OOM "
        "kill is a restart, and the worst kind); the planned ones are also shown alone.",
        "- Capacity: fraction of the pods serving at a step, from hour 1 on.",
        "",
        "Strategies:",
        "",
        f"- **liveness**: restart after {LIVENESS_FAILURES} consecutive probes with p99 > SLO; "
        "probe every 10 s (kubelet default `periodSeconds`) and, as a second row, every 60 s.",
        f"- **alert**: `memory > {ALERT_MEMORY_FRACTION:.0%} of limit for: 5m` or "
        "`p99 > SLO for: 5m`, evaluated every 60 s, firing restarts the pod.",
        f"- **periodic**: evict pods older than {lifetimes} (one row each; + up to "
        f"{PERIODIC_JITTER_S / HOUR:.0f} h jitter), one at a time (PDB maxUnavailable 1).",
        "- **infercycle**: `HealthEngine(resolve_policy().health)` and `plan_recycle` with the "
        f"default guards (maxUnavailable {d.max_unavailable}, minAvailable {d.min_available}, "
        f"cooldown {d.cooldown_s / 60:.0f} min, {d.max_recycles_per_hour} recycles/h, circuit "
        f"breaker at {d.max_degraded_percent} % degraded, flap window "
        f"{d.flap_window_s / 60:.0f} min); a recycle is in flight until the pod is ready again "
        f"plus the {policy.recycle.verify_window_s / 60:.0f} min verify window. The engine sees a "
        "restarted pod as a new pod started at its container start (warm-up applies). The "
        "samples carry each pod's memory limit and GPU size, as kube-state-metrics and DCGM "
        "report them, so the leak rules judge by time to limit.",
        "",
        "## Results",
        "",
        table(results),
        "Planned restarts / OOM kills per scenario (all pods of the scenario together):",
        "",
        scenario_table(results),
        "![SLO violations, restarts and capacity per strategy](fleet.png)",
        "",
        "## Targets",
        "",
    ]
    for text, ok, detail in checks:
        lines.append(f"- {'PASS' if ok else 'FAIL'}: {text} ({detail})")
    outside = ", ".join(
        f"{r.strategy} {r.slo_minutes - r.incident_minutes:,.0f}"
        for r in results
        if r.strategy.startswith(("periodic", "infercycle"))
    )
    lines += [
        "",
        "SLO-violation pod-minutes outside the slow-dependency incident, which no restart can "
        f"shorten: {outside}.",
    ]
    if sensitivity:
        lines += [
            "",
            "## Time to limit",
            "",
            "The leak rules recycle a pod whose fitted trend would reach its limit within "
            "`timeToLimit` (default 2h). The horizon must cover the sustain (15 min), a wait "
            "behind another recycle in flight (drain, reload and the 15 min verify window) and "
            "the restart itself. The same run with other horizons:",
            "",
            sensitivity_table(sensitivity),
        ]
    ours = next(r for r in results if r.strategy.startswith("infercycle"))
    if ours.extra:
        lines += [
            "",
            f"InferCycle planner holds (steps at which a guard held a recycle back): {ours.extra}.",
        ]
    lines += [
        "",
        "Run times: " + ", ".join(f"{r.strategy} {r.seconds:.0f} s" for r in results) + ".",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--days", type=float, default=3.0)
    parser.add_argument("--step", type=float, default=60.0)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", type=Path, default=DOCS)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    makers: list[Callable[[], Strategy]] = [
        lambda: Liveness(10.0),
        lambda: Liveness(60.0),
        Alert,
        *[functools.partial(Periodic, args.seed, hours) for hours in PERIODIC_LIFETIMES_H],
        lambda: InferCycle(resolve_policy()),
    ]
    results = []
    for make in makers:
        strategy = make()
        result = run(strategy, args.seed, args.days, args.step)
        print(f"{result.strategy}: {result.seconds:.1f} s", file=sys.stderr)
        results.append(result)
    checks = targets(results)
    sensitivity = [next(r for r in results if r.strategy.startswith("infercycle"))]
    for horizon in ("1h", "3h"):
        name = f"timeToLimit {horizon}"
        result = run(InferCycle(with_time_to_limit(horizon), name), args.seed, args.days, args.step)
        print(f"{result.strategy}: {result.seconds:.1f} s", file=sys.stderr)
        sensitivity.append(result)
    sensitivity[0] = dataclasses.replace(sensitivity[0], strategy="timeToLimit 2h (default)")
    args.out.mkdir(parents=True, exist_ok=True)
    markdown = write_markdown(results, checks, args, sensitivity)
    (args.out / "fleet.md").write_text(markdown)
    plot(results, args.out / "fleet.png")
    print(table(results))
    print(scenario_table(results))
    for text, ok, detail in checks:
        print(f"{'PASS' if ok else 'FAIL'}: {text} ({detail})")
    ours = results[-1]
    if ours.extra:
        print(f"InferCycle holds: {ours.extra}")
    print(sensitivity_table(sensitivity))
    print(f"total {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
