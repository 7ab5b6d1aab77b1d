"""Pods shaped like quantified public reports of long-running inference servers.

Each scenario below names the reports it is built from and the numbers it takes from them. A
pod is a small stateful simulation stepped forward in time (``sample`` must be called with
increasing ages): counters accumulate, and a container that reaches its memory limit is
OOM-killed and restarts, with its restart count, last termination reason and time reported as
the pod's status would report them.

What every pod has in common (a vLLM server on one 80 GiB GPU): model load for 1-2.5 minutes,
host working set 10-18 GiB under a memory limit 8-20 GiB above it, ~90 % of the GPU allocated
at start, 2-6 requests/s, 150-400 generated tokens per request. Latency is what the default
query computes: ``histogram_quantile(0.99, rate(vllm:e2e_request_latency_seconds_bucket[5m]))``
over vLLM's own bucket layout, from the requests that finished in the last 5 minutes (log-normal
end-to-end times around 2-4 s), so it moves in the steps the buckets allow and has no value
when nothing finished.

Degrading scenarios:

``hung_engine``
    vllm-project/vllm#2731: the engine stops after minutes to an hour of work; health and
    metrics keep answering, the log shows Running 35, Pending 115, KV cache 99 % and no token
    generated. vllm-project/vllm#39863: the EngineCore process dies silently under load, the API
    server answers 200, throughput drops to 0, Running 0, Waiting 3, KV cache 0 %. Half the pods
    freeze with their gauges (the first report), half lose their engine (the second); either way
    the progress counters stop from the onset (1-5 h) and arrivals queue up.
``fast_oom_leak``
    ggml-org/llama.cpp#27725: llama-server under one request every 10 s hits OOM "within at most
    an hour" and is killed by the system; ollama/ollama#18106 measures 5-12 MiB leaked per
    request. Host memory grows from the onset (1-3 h, or from the first request for half the
    pods) fast enough to reach the limit 40-75 minutes into each life (5-30 GiB/h); every kill
    restarts the container and the leak resumes.
``steady_leak``
    sgl-project/sglang#6914: the scheduler's RSS grows with every request until Kubernetes
    OOM-kills it near 60 GB. sgl-project/sglang#28902: a prefill server grows at a constant rate
    and was OOM-killed and restarted 6 times in 3 days. ollama/ollama#18106: a runner held
    9.35 GiB after 5.5 h against 0.30 GiB fresh (about 1.6 GiB/h). Linear host leak of
    0.5-4 GiB/h from the onset (1-3 h), reaching the limit 3-10 h later.
``sawtooth_leak``
    The leak of sgl-project/sglang#6914 (RSS growing with every request until the OOM kill)
    under the allocation-and-collection sawtooth a healthy server shows (``gc_sawtooth``):
    0.5-3 GiB/h from the onset (1-3 h) beneath teeth of 0.5-2 GiB every 2-12 minutes, reaching
    the limit 3-8 h after the onset.
``gpu_leak``
    huggingface/text-generation-inference#801: free framebuffer (DCGM_FI_DEV_FB_FREE) fell from
    1517 MiB to 337 MiB over a 5 h session on an A100-40GB, about 236 MiB/h.
    ggml-org/llama.cpp#23446: llama-server VRAM grows run after run until OOM. GPU memory grows
    0.25-0.8 GiB/h from the onset with 1.2-3 GiB of framebuffer left; at the end the CUDA
    allocation fails and the server exits with an error.
``kv_pinned``
    vllm-project/vllm#27073: after a few over-length requests the KV cache stayed near 100 %
    (97.5-99.2 %) for hours with Running 33-34, Waiting 18-47 while generation went on at
    ~720-756 tokens/s; a restart cleared it. From the onset (1-4 h) the pod's cache sits at
    97-99.5 %, 15-50 requests wait, latency roughly doubles, progress continues.
``slowdown_creep``
    ggml-org/llama.cpp#22360: a server slows down over time until it needs frequent reboots;
    1.98 tokens/s per slot against 16.8-17.4 on healthy runs at the same occupancy (8.5x), slots
    busy 98.7 % of the time. From the onset (1-3 h) the per-request time grows linearly to 8.5x
    over 6-12 h; concurrency (and the KV cache it fills) grows with it, then requests queue.

Healthy scenarios (nothing to restart; every pod of the fleet runs them):

``baseline``
    The common shape above and nothing else; the healthy pods of a degrading run are these.

``allocator_plateau``
    vllm-project/vllm#12973: with n=1 host memory "stops growing at a certain point";
    ggml-org/llama.cpp#23446 separates allocations made once ("small once", "large once") from
    growth. Host memory fills a pool of 1-2 GiB as serving starts (time constant 5-10
    minutes), then climbs in 2-4 steps of 0.3-1.5 GiB (each over 2-10 minutes, in the first
    6 h) and stays; 3-8 GiB under the limit at the end.
``gc_sawtooth``
    vllm-project/production-stack#707 states the expected shape of a healthy server's memory
    under steady traffic: up and down around a baseline. Host memory saws 0.5-2 GiB every 2-12
    minutes (allocation, then collection), 3-8 GiB under the limit at the peaks.
``knee_load``
    vllm-project/vllm#23444: close to 100 % KV cache the waiting queue spikes and throughput
    collapses. The whole fleet is driven to the knee of its load curve for 2-4 h: caches at
    90-99 %, queues bursting, p99 jumping buckets; then load returns to normal.
``transient_burst``
    ray-project/ray#54070: 1280 requests arriving at once blocked a vLLM engine past its 10 s
    health-check timeout; nothing was broken (a longer timeout fixed it). Every 1-3 h a pod
    takes a burst of 200-1300 requests: the queue drains over 3-10 minutes, progress pauses for
    up to 90 s during the prefill, p99 jumps.
``diurnal_idle``
    Traffic that stops at night (vllm-project/vllm#17972's logs show an idle server: Running 0,
    Waiting 0, 0 tokens/s, health 200): for 2-4 h no requests arrive, counters stay flat with
    nothing pending, latency has no value; then traffic returns.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from infercycle.api.servers import VLLM_E2E_BUCKETS
from infercycle.api.values import HealthPolicy
from infercycle.health import HealthEngine
from infercycle.health.model import OOM_KILLED, ContainerRestarts, PodKey
from infercycle_sim.scenarios import _hash, _uniform

MIB = float(2**20)
GIB = float(2**30)
HOUR = 3600.0
GPU_BYTES = 80 * GIB
RATE_WINDOW_S = 300.0
"""The ``rate(...[5m])`` of the default latency and request-rate queries."""
MAX_SEQS = 48
"""Concurrent sequences the simulated server schedules; the rest wait."""

DEGRADING: tuple[str, ...] = (
    "hung_engine",
    "fast_oom_leak",
    "steady_leak",
    "sawtooth_leak",
    "gpu_leak",
    "kv_pinned",
    "slowdown_creep",
)
HEALTHY: tuple[str, ...] = (
    "baseline",
    "allocator_plateau",
    "gc_sawtooth",
    "knee_load",
    "transient_burst",
    "diurnal_idle",
)
REPORTED: tuple[str, ...] = DEGRADING + HEALTHY
FLEET_WIDE = frozenset({"knee_load"})
"""Scenarios whose load shape applies to the whole fleet at the same time."""
LEAKS = frozenset({"fast_oom_leak", "steady_leak", "sawtooth_leak", "gpu_leak"})


def histogram_p99(
    latencies: npt.NDArray[np.float64], buckets: tuple[float, ...] = VLLM_E2E_BUCKETS
) -> float | None:
    """``histogram_quantile(0.99, ...)`` of these request times over ``buckets``, as Prometheus
    computes it (linear within the bucket; the highest finite bound past the last one)."""
    total = len(latencies)
    if total == 0:
        return None
    bounds = np.asarray(buckets)
    cumulative = np.searchsorted(np.sort(latencies), bounds, side="right")
    rank = 0.99 * total
    index = int(np.searchsorted(cumulative, rank, side="left"))
    if index >= len(bounds):
        return float(bounds[-1])
    lower_bound = 0.0 if index == 0 else float(bounds[index - 1])
    lower_count = 0.0 if index == 0 else float(cumulative[index - 1])
    in_bucket = float(cumulative[index]) - lower_count
    if in_bucket <= 0:
        return float(bounds[index])
    return lower_bound + (float(bounds[index]) - lower_bound) * (rank - lower_count) / in_bucket


def knee_load(t_s: float, seed: int) -> float:
    """Fleet load for ``knee_load``: 1, then 2-4 h at the knee (x2.2-2.6), then 1 again."""
    key = _hash(seed, 7, 0)
    start = (1.5 + 1.5 * _uniform(key, 1, 0)) * HOUR
    hold = (2 + 2 * _uniform(key, 2, 0)) * HOUR
    peak = 2.2 + 0.4 * _uniform(key, 3, 0)
    ramp = 900.0
    if t_s <= start or t_s >= start + hold + 2 * ramp:
        return 1.0
    if t_s < start + ramp:
        return 1 + (peak - 1) * (t_s - start) / ramp
    if t_s < start + ramp + hold:
        return peak
    return peak - (peak - 1) * (t_s - start - ramp - hold) / ramp


@dataclass
class ReportedPod:
    """One simulated pod of a reported scenario (stateful: call ``sample`` with rising ages)."""

    scenario: str
    seed: int
    params: dict[str, float] = field(default_factory=dict)
    restarts: int = 0
    last_reason: str | None = None
    last_finished: float | None = None
    life_start: float = 0.0
    leak_start: float | None = None
    limit_reached: float | None = None
    """Age at which the pod first reached its limit (leaks)."""
    _progress: float = 0.0
    _last_age: float | None = None
    _gpu_grown: float = 0.0

    def __post_init__(self) -> None:
        if self.scenario not in REPORTED:
            msg = f"unknown reported scenario {self.scenario!r}; use one of {', '.join(REPORTED)}"
            raise ValueError(msg)
        key = _hash(self.seed, REPORTED.index(self.scenario) + 101, 0)
        self._key = key
        draws = iter(range(1, 64))

        def draw(low: float, high: float) -> float:
            return low + (high - low) * _uniform(key, 99, next(draws))

        p = {
            "load_s": draw(60, 150),
            "memory": draw(10, 18) * GIB,
            "headroom": draw(8, 20) * GIB,
            "gpu_fraction": draw(0.88, 0.92),
            "cpu": draw(2.0, 2.6),
            "requests": draw(2.0, 6.0),
            "latency": draw(2.0, 4.0),
            "tokens": draw(150, 400),
            "kv": draw(0.3, 0.42),
            "errors": draw(0.0005, 0.002),
            "onset": draw(1.0, 3.0) * HOUR,
            "variant": draw(0, 1),
            "rate": 0.0,
            "span": draw(6, 12) * HOUR,
            "step_count": float(int(draw(2, 5))),
            "saw_period": draw(120, 720),
            "saw_amplitude": draw(0.5, 2.0) * GIB,
            "pinned": draw(0.97, 0.995),
            "waiting": draw(15, 50),
            "idle_at": draw(2, 4) * HOUR,
            "pool": draw(1, 2) * GIB,
            "pool_fill_s": draw(300, 600),
            "idle_for": draw(2, 4) * HOUR,
        }
        if self.scenario == "hung_engine":
            p["onset"] = draw(1.0, 5.0) * HOUR
        elif self.scenario == "fast_oom_leak":
            p["rate"] = p["headroom"] / draw(40 / 60, 75 / 60)  # bytes per hour
            if p["variant"] < 0.5:  # leaking from the first request on, as in the report
                p["onset"] = p["load_s"] + 30
        elif self.scenario == "steady_leak":
            p["rate"] = draw(0.5, 4.0) * GIB
            p["headroom"] = p["rate"] * draw(3, 10)
        elif self.scenario == "sawtooth_leak":
            p["rate"] = draw(0.5, 3.0) * GIB
            p["headroom"] = p["rate"] * draw(3, 8) + p["saw_amplitude"]
        elif self.scenario == "gpu_leak":
            p["rate"] = draw(0.25, 0.8) * GIB
            p["gpu_free"] = draw(1.2, 3.0) * GIB
            p["gpu_fraction"] = 1 - p["gpu_free"] / GPU_BYTES
        elif self.scenario == "kv_pinned":
            p["onset"] = draw(1.0, 4.0) * HOUR
        elif self.scenario == "gc_sawtooth":
            p["headroom"] = draw(3, 8) * GIB + p["saw_amplitude"]
        elif self.scenario == "allocator_plateau":
            steps = sum(self._step(index)[1] for index in range(int(p["step_count"])))
            p["headroom"] = draw(3, 8) * GIB + p["pool"] + steps
        p.update(self.params)
        self.params = p

    @property
    def degrading(self) -> bool:
        return self.scenario in DEGRADING

    @property
    def onset_s(self) -> float | None:
        return self.params["onset"] if self.degrading else None

    def _step(self, index: int) -> tuple[float, float, float]:
        """``allocator_plateau``: when one step starts, its size, how long it takes."""
        at = (0.5 + 5.5 * _uniform(self._key, 30, index)) * HOUR
        size = (0.3 + 1.2 * _uniform(self._key, 31, index)) * GIB
        return at, size, 120 + 480 * _uniform(self._key, 32, index)

    def _rng(self, age_s: float) -> np.random.Generator:
        return np.random.default_rng([self._key, int(age_s)])

    def sample(
        self, age_s: float, fleet_load: float = 1.0
    ) -> tuple[dict[str, float | None], ContainerRestarts]:
        """The signals the default queries would return at ``age_s``, and the pod's restarts."""
        p, scenario = self.params, self.scenario
        dt = 0.0 if self._last_age is None else max(age_s - self._last_age, 0.0)
        self._last_age = age_s
        rng = self._rng(age_s)
        life_age = age_s - self.life_start
        ready_at = p["load_s"] + 30
        memory_limit = p["memory"] + p["headroom"]
        restarts = ContainerRestarts(self.restarts, self.last_reason, self.last_finished)
        memory = p["memory"] * min(life_age / p["load_s"], 1.0)
        gpu = p["gpu_fraction"] * GPU_BYTES * (0.05 if life_age < p["load_s"] / 2 else 1.0)
        if life_age < ready_at:
            return self._loading(memory, memory_limit, gpu, rng), restarts

        load = fleet_load * (1.0 + 0.03 * math.sin(age_s / 1700.0 + p["variant"] * 6))
        if scenario == "diurnal_idle" and p["idle_at"] <= age_s < p["idle_at"] + p["idle_for"]:
            load = 0.0
        slow = 1.0
        stalled = False
        pinned = False
        burst_waiting = 0.0
        pause = False
        onset = p["onset"]
        after = age_s - onset
        if scenario == "hung_engine" and after >= 0:
            stalled = True
        elif scenario == "kv_pinned" and after >= 0:
            pinned = True
        elif scenario == "slowdown_creep" and after >= 0:
            slow = 1 + 7.5 * min(after / p["span"], 1.0)
        elif scenario == "transient_burst":
            period = 1.0 + 2.0 * _uniform(self._key, 5, int(age_s // (3 * HOUR)))
            phase = age_s % (period * HOUR)
            drain = 180 + 420 * _uniform(self._key, 6, int(age_s // (3 * HOUR)))
            if phase < drain and age_s > HOUR:
                size = 200 + 1100 * _uniform(self._key, 7, int(age_s // (3 * HOUR)))
                burst_waiting = size * (1 - phase / drain)
                pause = phase < 90 * _uniform(self._key, 8, int(age_s // (3 * HOUR)))
                slow = 1.5

        # Memory peculiarities and leaks.
        memory += 256 * MIB * (1 - math.exp(-life_age / 2400.0))
        memory += 24 * MIB * float(rng.standard_normal())
        if scenario in ("fast_oom_leak", "steady_leak", "sawtooth_leak") and age_s >= onset:
            if self.leak_start is None:
                self.leak_start = onset
            memory += p["rate"] * (age_s - max(self.leak_start, self.life_start + ready_at)) / HOUR
        elif scenario == "allocator_plateau":
            memory += p["pool"] * (1 - math.exp(-life_age / p["pool_fill_s"]))
            for index in range(int(p["step_count"])):
                at, size, ramp = self._step(index)
                memory += size * min(max((life_age - at) / ramp, 0.0), 1.0)
        if scenario in ("gc_sawtooth", "sawtooth_leak"):
            tooth = ((age_s + p["variant"] * 1000) / p["saw_period"]) % 1.0
            memory += p["saw_amplitude"] * tooth
        if scenario == "gpu_leak" and age_s >= onset:
            self._gpu_grown += p["rate"] * dt / HOUR
            gpu += self._gpu_grown
        gpu += 4 * MIB * float(rng.standard_normal())

        # Killed at the limit: the kernel (host memory) or a failed CUDA allocation (GPU).
        over_host = memory >= memory_limit
        over_gpu = gpu >= GPU_BYTES - 16 * MIB
        if over_host or over_gpu:
            if self.limit_reached is None:
                self.limit_reached = age_s
            self.restarts += 1
            self.last_reason = OOM_KILLED if over_host else "Error"
            self.last_finished = age_s
            self.life_start = age_s
            self._progress = 0.0
            self._gpu_grown = 0.0
            restarts = ContainerRestarts(self.restarts, self.last_reason, self.last_finished)
            return self._loading(p["memory"] * 0.05, memory_limit, 0.05 * gpu, rng), restarts

        # Traffic, queueing, progress.
        arrivals = p["requests"] * load
        latency_median = p["latency"] * slow * (1 + 0.25 * max(load - 1.0, 0.0))
        concurrency = arrivals * latency_median * 1.13
        running = min(concurrency, MAX_SEQS)
        waiting = max(concurrency - MAX_SEQS, 0.0) * 3 + burst_waiting
        kv = min(p["kv"] * running / max(p["requests"] * p["latency"] * 1.13, 1e-9), 0.99)
        if load > 2.0:
            waiting += float(rng.poisson(20 * (load - 2.0)))
            kv = min(0.9 + 0.09 * float(rng.random()), 0.99)
        if pinned:
            kv = p["pinned"]
            running = 34.0
            waiting = p["waiting"]
            latency_median *= 2.0
        finished_rate = arrivals
        if stalled:
            frozen = p["variant"] < 0.5
            finished_rate = 0.0
            running = min(p["requests"] * p["latency"], MAX_SEQS) if frozen else 0.0
            waiting = min(3 + arrivals * (age_s - onset), 500.0)
            kv = 0.99 if frozen else 0.0
        progress_rate = 0.0 if pause else finished_rate * (1 + p["tokens"]) / slow
        self._progress += progress_rate * dt
        finished_in_window = finished_rate * RATE_WINDOW_S
        if stalled:
            finished_in_window = max(arrivals * (RATE_WINDOW_S - (age_s - onset)), 0.0)
        count = int(rng.poisson(finished_in_window)) if finished_in_window > 0 else 0
        latencies = rng.lognormal(math.log(latency_median), 0.45, size=count)
        latency = histogram_p99(latencies)
        rate = count / RATE_WINDOW_S
        cpu = p["cpu"] * (0.4 + 0.6 * min(load, 3.0)) * (1 + 0.06 * float(rng.standard_normal()))
        if stalled and p["variant"] >= 0.5:
            cpu = 0.3
        noise = 0.01 * float(rng.standard_normal())
        signals: dict[str, float | None] = {
            "cpu": max(cpu, 0.01),
            "memory": memory,
            "memory_limit": None if p.get("no_limit") else memory_limit,
            "gpu_memory": gpu,
            "gpu_memory_total": GPU_BYTES,
            "latency_p99": latency,
            "kv_cache": min(max(kv + noise, 0.0), 1.0) if load > 0 or pinned else 0.0,
            "request_rate": rate,
            "error_rate": p["errors"] if count else 0.0,
            "requests_running": float(round(running)),
            "requests_waiting": float(round(waiting)),
            "requests_pending": float(round(running) + round(waiting)),
            "progress": self._progress,
        }
        return signals, restarts

    def _loading(
        self, memory: float, memory_limit: float, gpu: float, rng: np.random.Generator
    ) -> dict[str, float | None]:
        """A container loading its model: no traffic, counters at 0."""
        return {
            "cpu": 3.5 * (1 + 0.1 * float(rng.standard_normal())),
            "memory": memory,
            "memory_limit": None if self.params.get("no_limit") else memory_limit,
            "gpu_memory": gpu,
            "gpu_memory_total": GPU_BYTES,
            "latency_p99": None,
            "kv_cache": 0.0,
            "request_rate": 0.0,
            "error_rate": 0.0,
            "requests_running": 0.0,
            "requests_waiting": 0.0,
            "requests_pending": 0.0,
            "progress": self._progress,
        }


HOURS: dict[str, float] = {
    "hung_engine": 8.0,
    "fast_oom_leak": 8.0,
    "steady_leak": 14.0,
    "sawtooth_leak": 14.0,
    "gpu_leak": 16.0,
    "kv_pinned": 8.0,
    "slowdown_creep": 14.0,
}
"""How long a degrading run lasts: past the onset and (leaks) past the first kill."""
HEALTHY_HOURS = 12.0
PODS = 8
DEGRADING_PODS = 2


@dataclass(frozen=True)
class PodOutcome:
    """What the engine made of one simulated pod over a run."""

    name: str
    scenario: str
    degrading: bool
    onset_s: float | None
    """Fleet time the degradation began (None: healthy)."""
    first_degraded_s: float | None
    limit_s: float | None
    """Fleet time the pod first reached its limit (leaks), None if it never did."""
    reasons: tuple[str, ...]


def run_reported(
    scenario: str,
    seed: int,
    policy: HealthPolicy,
    *,
    hours: float | None = None,
    step_s: float = 30.0,
    restarts: bool = True,
) -> list[PodOutcome]:
    """One deployment of 8 pods through a fresh engine, as the live loop drives it.

    A degrading scenario runs on 2 pods and ``baseline`` on the others; a healthy one on every
    pod. Pods start within the first half hour. ``restarts=False`` withholds the pods'
    restart information, as a trace without it would (restarts then show as counter resets).
    """
    kinds = (
        [scenario] * DEGRADING_PODS + ["baseline"] * (PODS - DEGRADING_PODS)
        if scenario in DEGRADING
        else [scenario] * PODS
    )
    pods = [ReportedPod(kind, seed * 1000 + index) for index, kind in enumerate(kinds)]
    starts = [1800.0 * _uniform(_hash(seed, 3, index), 4, 0) for index in range(PODS)]
    starts = [round(start / step_s) * step_s for start in starts]
    names = [f"pod-{index:02d}" for index in range(PODS)]
    keys = [PodKey(name, name) for name in names]
    engine = HealthEngine(policy)
    first: dict[int, float] = {}
    reasons: dict[int, tuple[str, ...]] = {}
    length = hours if hours is not None else HOURS.get(scenario, HEALTHY_HOURS)
    for cycle in range(int(length * HOUR / step_s) + 1):
        t = cycle * step_s
        load = knee_load(t, seed) if scenario in FLEET_WIDE else 1.0
        for index, pod in enumerate(pods):
            if t < starts[index]:
                continue
            signals, status = pod.sample(t - starts[index], load)
            engine.observe(t, keys[index], starts[index], signals, status if restarts else None)
        verdicts = engine.evaluate(t)
        for index, key in enumerate(keys):
            verdict = verdicts.get(key)
            if verdict is not None and verdict.degraded and index not in first:
                first[index] = t
                reasons[index] = tuple(reason.text for reason in verdict.reasons)
    outcomes = []
    for index, pod in enumerate(pods):
        onset = pod.onset_s
        limit = pod.limit_reached
        outcomes.append(
            PodOutcome(
                name=names[index],
                scenario=pod.scenario,
                degrading=pod.degrading,
                onset_s=None if onset is None else starts[index] + onset,
                first_degraded_s=first.get(index),
                limit_s=None if limit is None else starts[index] + limit,
                reasons=reasons.get(index, ()),
            )
        )
    return outcomes
