"""The health engine of one deployment: samples in, one verdict per pod out.

Live, the controller feeds one instant sample per pod per cycle (``observe``) and asks for
verdicts (``evaluate``); after an operator restart it backfills from range queries
(``observe_series``). Offline, ``infercycle replay`` drives the same calls from a trace file.

Every rule is evaluated for all pods at once with numpy, on the shared cycle columns of
:class:`~infercycle.health.history.CycleStore`. How each kind judges:

``above`` / ``below``
    Sustained: every sample in the window is beyond the threshold, and the samples cover the
    window (at least 80 % of the expected cycles and 3 samples); a gap means not sustained.
    ``observed`` is the least extreme sample (the level held throughout).
``growth``
    Theil-Sen over the medians of 12 buckets of the window, per hour. The slope that counts is
    the one the data supports throughout: the lower quartile of the pairwise bucket slopes, over
    the whole window and over each half alone, whichever is smallest. A steady leak shows in all
    three; spikes vanish in the bucket medians; a one-off step, a self-healing bump or a GC
    sawtooth leave a quarter of the pairs flat or falling. The same is fitted to the window's
    lower envelope (the running minimum over a quarter of it): a collector's sawtooth scatters
    the samples by its full height but leaves its troughs flat, and a leak under it lifts them;
    the steeper of the two counts. The envelope counts only where every quarter holds a fall of
    at least half the window's largest one: a cycle slower than that puts part of one rising
    stretch in a quarter, whose minimum rises with it. Whatever the fit, growth counts only
    while the process reaches new ground: the 95th percentile of the newest half of the window
    above the highest sample of the older half and of the window before it (a lone spike aside;
    the highs of the older half are kept from each refresh of the fit). A stationary cycle of
    any period up to that lookback climbs back only to levels it already held and fell from; a
    leak climbs past them. A pod younger than its first fall has nothing to compare with: a
    rising stretch longer than the window is then judged as the leak it looks like. With
    ``limit`` and ``timeToLimit``, a pod whose limit is known (a fixed level, or the newest
    sample of a limit signal such as the container's memory limit) is judged by time to limit
    instead: it breaches when the fitted line, rising, with the reach of the samples above it (a
    sawtooth's peaks), would reach its limit within ``timeToLimit`` plus ``sustain`` (the leak
    goes on while the breach is sustained), so a slow leak far from its limit is left to run and
    a restart is spent only when it would otherwise end in an OOM kill; a pod with no known
    limit is judged by ``threshold``. For time to limit the fit follows the current regime: the
    newest half of the window is fitted as well (median pairwise slopes, checked over it and
    each of its quarters), so samples from before a leak began do not dilute it and a young life
    of the process is judged too; the envelope takes the median there. The condition must hold
    for ``sustain`` (the breach start is kept, and restored from the history after a backfill);
    a time-to-limit estimate may wobble up to twice its horizon meanwhile, and a leak that would
    reach its limit sooner than that is called after a quarter of its time left. The fit is
    refreshed each time the window has moved on by one bucket (5 minutes for a 1 h window); in
    between it barely moves.
``baseline``
    Ratio of every sample in the window to the pod's own reference: the median over
    ``baselineWindow`` starting at the pod's first usable sample after warm-up, taken once and
    only while the pod is not degraded. The pod's request rate over that period is kept too:
    while the window's mean request rate is above 1.5x it, load is not comparable and the
    rule does not count, so a traffic surge is never taken for a creep.
``outlier``
    Ratio of every sample in the window to the fleet median of the same cycle (pods past their
    warm-up and, for traffic-gated rules, serving traffic), sustained like ``above``; cycles
    with fewer than ``minFleet`` such pods do not count.
``saturation``
    Every sample in the window at or above the threshold while the ``pending`` signal (requests
    waiting) is above 0 and the pod is at least 1.25x the fleet median of the same cycle,
    sustained like ``above``: a cache pinned full with a queue on one pod, never a surge that
    fills every pod.
``stall``
    The ``signal`` is a progress counter (tokens generated, requests finished): it rises by at
    most the threshold over a covered window while the ``pending`` signal (requests running or
    waiting) is above 0 in every sample. The hung engine whose health endpoint still answers;
    not gated by traffic (it serves nothing), judged from samples of the current life only.
``increase``
    A counter rises by at least the threshold within the window (a fall is a reset; warm-ups
    and restarts do not hide it). ``oom_kills`` and ``restarts`` are kept by the engine itself
    from each pod's container restarts, outside the sample ring, so a day-long window is cheap.

Lives of the process: ``observe`` takes each pod's container restarts (count, last termination
reason and time). A rise of the count starts a new life at the termination: every rule but
``increase`` then sees only samples from the new life after its warm-up, and an ``OOMKilled``
reason is an OOM kill. Without that information a restart is seen in the samples: a fall of a
stall rule's progress counter, or a limited growth signal (host memory) that was within 10 % of
its limit and falls below half of that; after such a level either counts as an OOM kill.

Hysteresis: a breached rule holds while the window median stays beyond ``clear`` (growth:
while the plain Theil-Sen slope does, a weaker test than the one that entered the breach).
Warm-up: no rule counts before ``warmup`` after the pod start, and samples taken during warm-up
are left out of every window. Traffic gating: a ``requiresTraffic`` rule counts only while the
pod's latest request rate is at least ``minRequestRate``, and only samples taken at that rate
enter its window. Data older than ``staleAfter`` is no data, never a breach.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np
import numpy.typing as npt

from infercycle.api.units import format_duration
from infercycle.api.values import MIN_SAMPLES, RESTART_SIGNALS, HealthPolicy, Rule, RuleKind
from infercycle.health.history import MERGE_TOLERANCE_S, CycleStore
from infercycle.health.model import (
    OOM_KILLED,
    ContainerRestarts,
    PodKey,
    Reason,
    RuleEvaluation,
    RuleState,
    Verdict,
    finite_or_none,
    reason_text,
)
from infercycle.health.robust import (
    GROWTH_BUCKETS,
    SLOPE_QUANTILE,
    SPREAD_QUANTILE,
    AnyFloatArray,
    BoolArray,
    FloatArray,
    IntArray,
    Trend,
    lower_envelope,
    nanmedian_last,
    nanquantile_last,
    reach_above,
    theil_sen,
)

__all__ = [
    "ContainerRestarts",
    "HealthEngine",
    "PodKey",
    "Reason",
    "RuleEvaluation",
    "RuleState",
    "Verdict",
]

REQUEST_RATE = "request_rate"
MIN_COVERAGE = 0.8
"""Share of a window's expected cycles that must hold a sample."""
GROWTH_MIN_BUCKETS = math.ceil(MIN_COVERAGE * GROWTH_BUCKETS)
COMPARABLE_LOAD_RATIO = 1.5
"""A baseline rule compares only while the request rate is at most this times the baseline's."""
BASELINE_MIN_COVERAGE = 0.5
RETRO_SUSTAIN_STEPS = 6
"""Past instants checked after a backfill to restore how long a growth rule has been breached."""
REACH_SLACK = 2.0
"""How far past its horizon a time-to-limit estimate may wobble before its sustain restarts."""
URGENT_SHARE = 0.25
"""A time-to-limit breach counts after ``sustain`` or after this share of its time left,
whichever comes first."""
RECENT_SHARE = 0.5
"""Share of a growth window (its newest part) the current-regime fit covers."""
PEAK_SLOTS = 32
"""Highs of the older half of a growth window remembered per pod, one per refresh of the fit
(a dozen per window): together they reach a window further back than the window itself."""
LOOKBACK_WINDOWS = 2.0
"""How far back (in windows) a growth rule looks for a level the process already held."""
EVENT_SLOTS = 16
"""Restarts and OOM kills remembered per pod (the newest ones)."""
OOM_NEAR_LIMIT = 0.9
"""A restart seen only in the samples counts as an OOM kill when the pod's last sample of a
limited signal (host memory against its memory limit) was at least this share of the limit."""
COLLAPSE_SHARE = 0.5
"""A limited signal near its limit that falls below this share of its last sample restarted."""
SATURATION_FLEET_RATIO = 1.25
"""A saturation sample counts only while the pod is at least this times the fleet median: a
fleet-wide surge fills every cache and condemns none."""

_Scalar = TypeVar("_Scalar", bound=np.generic)
StateArray = npt.NDArray[np.int8]

_SUSTAINED = frozenset(
    {RuleKind.ABOVE, RuleKind.BELOW, RuleKind.BASELINE, RuleKind.OUTLIER, RuleKind.SATURATION}
)
"""Kinds judged by every sample of a covered window, in one batch."""

_STATES = tuple(RuleState)
_CODE = {state: np.int8(index) for index, state in enumerate(_STATES)}
BREACH, OK, NO_DATA = _CODE[RuleState.BREACH], _CODE[RuleState.OK], _CODE[RuleState.NO_DATA]
WARMING_UP, LOW_TRAFFIC = _CODE[RuleState.WARMING_UP], _CODE[RuleState.LOW_TRAFFIC]
NOT_COMPARABLE = _CODE[RuleState.NOT_COMPARABLE]
INSUFFICIENT_FLEET = _CODE[RuleState.INSUFFICIENT_FLEET]

# NO_DATA details, kept in the per-rule ``aux`` numbers (coverage fractions are 0..1).
_NO_BASELINE = -1.0
_NO_TRAFFIC_DATA = -2.0
_NO_PENDING_DATA = -3.0
_NO_RESTART_DATA = -4.0


def _grow(array: npt.NDArray[_Scalar], rows: int, fill: float) -> npt.NDArray[_Scalar]:
    grown = np.full(rows, fill, dtype=array.dtype)
    grown[: len(array)] = array
    return grown


@dataclass
class _RuleMemory:
    """What a rule remembers per pod row between cycles."""

    rule: Rule
    rows: int
    breached: BoolArray = field(init=False)
    since: FloatArray = field(init=False)
    baseline: FloatArray = field(init=False)
    baseline_rate: FloatArray = field(init=False)
    baseline_start: FloatArray = field(init=False)
    baseline_after: FloatArray = field(init=False)
    peaks: FloatArray = field(init=False)
    """Highs of the older half of past windows (rows x PEAK_SLOTS), NaN where none."""
    peak_times: FloatArray = field(init=False)
    """When each of those highs was sampled."""
    peaks_recorded: float = -math.inf
    fit: _Fit | None = None

    def __post_init__(self) -> None:
        self.breached = np.zeros(self.rows, dtype=bool)
        self.since = np.full(self.rows, np.nan)
        self.baseline = np.full(self.rows, np.nan)
        self.baseline_rate = np.full(self.rows, np.nan)
        self.baseline_start = np.full(self.rows, np.nan)
        self.baseline_after = np.full(self.rows, np.nan)
        self.peaks = np.full((self.rows, PEAK_SLOTS), np.nan)
        self.peak_times = np.full((self.rows, PEAK_SLOTS), np.nan)

    def grow(self, rows: int) -> None:
        self.breached = _grow(self.breached, rows, fill=False)
        for name in ("since", "baseline", "baseline_rate", "baseline_start", "baseline_after"):
            setattr(self, name, _grow(getattr(self, name), rows, np.nan))
        for name in ("peaks", "peak_times"):
            grown = np.full((rows, PEAK_SLOTS), np.nan)
            grown[: len(getattr(self, name))] = getattr(self, name)
            setattr(self, name, grown)
        self.rows = rows

    def remember_peaks(self, at: float, highs: FloatArray, times: FloatArray) -> None:
        """Keep the older half's highs of the window ending at ``at`` (at most two dozen per
        window, the oldest forgotten first)."""
        if at - self.peaks_recorded < self.rule.window_s / (PEAK_SLOTS * 0.75):
            return
        self.peaks_recorded = at
        rows = len(highs)
        self.peaks[:rows] = np.roll(self.peaks[:rows], 1, axis=1)
        self.peak_times[:rows] = np.roll(self.peak_times[:rows], 1, axis=1)
        self.peaks[:rows, 0] = highs
        self.peak_times[:rows, 0] = times
        self.peaks[rows:, 0] = np.nan
        self.peak_times[rows:, 0] = np.nan

    def earlier_high(self, rows: int, since: FloatArray) -> FloatArray:
        """The highest remembered high of each row sampled at or after ``since``, -inf if
        none."""
        kept = self.peak_times[:rows] >= since[:, None]
        highest: FloatArray = np.where(kept, self.peaks[:rows], -np.inf).max(axis=1)
        return highest

    def reset(self, row: int) -> None:
        self.breached[row] = False
        self.since[row] = np.nan
        self.baseline[row] = np.nan
        self.baseline_rate[row] = np.nan
        self.baseline_start[row] = np.nan
        self.baseline_after[row] = np.nan
        self.peaks[row] = np.nan
        self.peak_times[row] = np.nan

    def adopt(self, previous: _RuleMemory) -> None:
        """Keep what stays true under the changed rule: a baseline is still the baseline."""
        old, new = previous.rule, self.rule
        if (old.signal, old.baseline_window_s, old.requires_traffic) == (
            new.signal,
            new.baseline_window_s,
            new.requires_traffic,
        ):
            self.baseline = previous.baseline.copy()
            self.baseline_rate = previous.baseline_rate.copy()
            self.baseline_start = previous.baseline_start.copy()
            self.baseline_after = previous.baseline_after.copy()


@dataclass
class _FleetColumns:
    """Fleet median and size per cycle column, one row per (signal, traffic-gated) pair."""

    keys: tuple[tuple[str, bool], ...]
    layout: int
    median: FloatArray
    count: IntArray

    def row(self, signal: str, gated: bool) -> int:
        return self.keys.index((signal, gated))


@dataclass
class _Outcome:
    """One rule's judgement of every row in one cycle."""

    state: StateArray
    observed: FloatArray
    level: FloatArray
    aux: FloatArray
    holding: BoolArray
    breached: BoolArray
    by_time_to_limit: BoolArray | None = None
    needed: FloatArray | None = None
    limits: FloatArray | None = None


@dataclass
class _Prepared:
    """A sustained rule's series and starting states, ready to be judged in a batch."""

    rule: Rule
    values: AnyFloatArray
    usable: BoolArray
    state: StateArray
    aux: FloatArray
    before: BoolArray
    """Whether the rule was breached at the previous evaluation (hysteresis)."""


@dataclass(frozen=True)
class _Fit:
    """A growth rule's fit for every row, reused until the window has moved a bucket on."""

    at: float
    key: tuple[int, int, int]
    slope: FloatArray
    """The supported slope per hour: what enters a breach."""
    typical: FloatArray
    """The plain Theil-Sen slope per hour: what holds a breach (hysteresis)."""
    condition: BoolArray
    by_limit: BoolArray
    needed: FloatArray
    left: FloatArray
    enough: BoolArray
    coverage: FloatArray
    limits: FloatArray
    """Each row's limit; NaN where none is known."""


@dataclass(frozen=True, slots=True)
class _Ground:
    """Whether a growth window's newest half reaches new ground, per row."""

    newest_high: FloatArray
    """The 95th percentile of the samples in the newest half of the window (NaN: none)."""
    older_high: FloatArray
    """The second highest sample in the older half (-inf: none) ..."""
    older_time: FloatArray
    """... and when it was sampled (NaN: none)."""

    def reached(self, earlier: FloatArray | None = None) -> BoolArray:
        """Whether the newest half reaches above the older half and above ``earlier``."""
        highest = self.older_high if earlier is None else np.fmax(self.older_high, earlier)
        reached: BoolArray = ~(self.newest_high <= highest)
        return reached


@dataclass
class _Window:
    """The columns of one window in one cycle, with masks every rule on it needs."""

    columns: IntArray
    times: FloatArray
    settled: BoolArray
    """(rows, columns): the sample was taken after the pod's warm-up."""
    traffic: BoolArray | None = None
    """(rows, columns): the pod served at least the minimum request rate then."""
    signals: dict[str, tuple[AnyFloatArray, BoolArray]] = field(default_factory=dict)
    """Per signal: its (rows, columns) samples, and which hold data taken after warm-up."""


@dataclass
class _Cycle:
    """Per-evaluation facts shared by every rule."""

    now: float
    rows: int
    step: float
    in_use: BoolArray
    warm_end: FloatArray
    fresh: BoolArray
    """(signals, rows): the newest sample with data is recent enough to count."""
    windows: dict[tuple[float, float], _Window] = field(default_factory=dict)
    subset: IntArray | None = None
    """The engine rows this cycle's rows stand for (None: rows 0..rows-1), when a judgement
    is redone for a few pods only."""
    initial: dict[tuple[str, bool, str | None], tuple[StateArray, FloatArray]] = field(
        default_factory=dict
    )


class _Explanation:
    """Per-rule evaluations of the latest cycle, turned into objects only when someone asks."""

    def __init__(self, rows: Mapping[PodKey, int]) -> None:
        self._rows = rows
        self._rules: Sequence[Rule] = ()
        self._outcomes: Sequence[_Outcome] = ()

    def update(self, rules: Sequence[Rule], outcomes: Sequence[_Outcome]) -> None:
        self._rules, self._outcomes = rules, outcomes

    def for_pod(self, pod: PodKey) -> tuple[RuleEvaluation, ...]:
        row = self._rows.get(pod)
        if row is None or not self._outcomes or row >= len(self._outcomes[0].state):
            return ()
        result = []
        for rule, outcome in zip(self._rules, self._outcomes, strict=True):
            state = _STATES[int(outcome.state[row])]
            observed = finite_or_none(float(outcome.observed[row]))
            level = float(outcome.level[row])
            detail = _detail(rule, state, float(outcome.aux[row]))
            result.append(RuleEvaluation(rule, state, observed, level, detail))
        return tuple(result)


def _detail(rule: Rule, state: RuleState, aux: float) -> str:
    if state is RuleState.WARMING_UP:
        return f"warm-up ends in {format_duration(max(aux, 0.0))}"
    if state is RuleState.NO_DATA:
        if aux == _NO_BASELINE:
            return "no baseline yet"
        if aux == _NO_TRAFFIC_DATA:
            return "no fresh request_rate data"
        if aux == _NO_PENDING_DATA:
            return f"no fresh {rule.pending_signal} data"
        if aux == _NO_RESTART_DATA:
            return "no restart information for the pod"
        if math.isnan(aux):
            return f"no fresh {rule.signal} data"
        return f"{aux * 100:.0f}% of the {format_duration(rule.window_s)} window covered"
    if state is RuleState.LOW_TRAFFIC:
        return f"request rate {aux:.3g}/s under the minimum"
    if state is RuleState.NOT_COMPARABLE:
        return f"request rate {aux:.2f}x the baseline period's"
    if state is RuleState.INSUFFICIENT_FLEET:
        return f"{aux:.0f} pods with data, {rule.min_fleet} needed"
    if rule.kind is RuleKind.GROWTH and rule.judges_time_to_limit and math.isfinite(aux):
        return f"fitted trend reaches the limit in {format_duration(max(aux, 0.0))}"
    return ""


class HealthEngine:
    """Judges the pods of one deployment; see the module documentation for the rules."""

    def __init__(self, policy: HealthPolicy) -> None:
        self._policy = policy
        self._store = CycleStore(_stored(policy), policy.longest_window_s)
        self._rows: dict[PodKey, int] = {}
        self._by_name: dict[str, PodKey] = {}
        self._free: list[int] = []
        self._allocated = 0
        self._capacity = self._store.rows
        self._started: FloatArray = np.full(self._capacity, np.nan)
        self._seen: FloatArray = np.full(self._capacity, np.nan)
        self._in_use: BoolArray = np.zeros(self._capacity, dtype=bool)
        self._backfilled: BoolArray = np.zeros(self._capacity, dtype=bool)
        self._degraded: BoolArray = np.zeros(self._capacity, dtype=bool)
        self._life: FloatArray = np.full(self._capacity, np.nan)
        """When the current life of the pod's process began (NaN: its first life)."""
        self._restart_count: IntArray = np.full(self._capacity, -1, dtype=np.intp)
        """The containers' restart count last reported (-1: never reported)."""
        self._restarts: FloatArray = np.full((self._capacity, EVENT_SLOTS), np.nan)
        self._ooms: FloatArray = np.full((self._capacity, EVENT_SLOTS), np.nan)
        """Times of the newest restarts and OOM kills per row, newest first (NaN: none)."""
        self._memory = {rule.name: _RuleMemory(rule, self._capacity) for rule in policy.rules}
        self._fleet: _FleetColumns | None = None
        self._explanation = _Explanation(self._rows)
        self._verdicts_now: dict[PodKey, Verdict] = {}
        self._pending: list[
            tuple[int, float, float, Mapping[str, float | None], ContainerRestarts | None]
        ] = []
        self._generation = 0
        """Bumped when pods come or go, so that cached per-row results are recomputed."""

    # -- public API --------------------------------------------------------------------------

    @property
    def policy(self) -> HealthPolicy:
        return self._policy

    @property
    def pods(self) -> tuple[PodKey, ...]:
        return tuple(self._rows)

    def set_policy(self, policy: HealthPolicy) -> None:
        """Switch rules and windows, keeping the samples (the ring is resized to fit)."""
        if policy == self._policy:
            return
        self._flush()
        self._policy = policy
        self._store.set_signals(_stored(policy))
        self._store.set_history(policy.longest_window_s)
        memory = {}
        for rule in policy.rules:
            previous = self._memory.get(rule.name)
            if previous is not None and previous.rule == rule:
                memory[rule.name] = previous
                continue
            fresh = _RuleMemory(rule, self._capacity)
            if previous is not None:
                fresh.adopt(previous)
            memory[rule.name] = fresh
        self._memory = memory
        self._fleet = None
        self._generation += 1

    def observe(
        self,
        t: float,
        pod: PodKey,
        started_at: float,
        signals: Mapping[str, float | None],
        restarts: ContainerRestarts | None = None,
    ) -> None:
        """One instant sample of one pod; all pods of a cycle are observed with the same ``t``
        (observations less than half a second apart count as one cycle).

        A missing signal or ``None`` is no data; signals no rule reads are ignored. Observing a
        pod twice in a cycle keeps the later sample. ``restarts`` is what the pod's status says
        about its containers' restarts (see :class:`ContainerRestarts`); without it, a restart
        shows only as a reset of a progress counter (the signal of a stall rule).
        """
        row = self._rows.get(pod)
        if row is None:
            row = self._row(pod, started_at)
        self._pending.append((row, t, started_at, signals, restarts))

    def _flush(self) -> None:
        """Write the observations gathered since the last flush, one cycle at a time.

        Observations are queued by ``observe`` and written column-wise here: a cycle of
        thousands of pods costs a few array assignments instead of one per sample.
        """
        pending = self._pending
        if not pending:
            return
        self._pending = []
        cycles: dict[
            float,
            dict[int, tuple[float, Mapping[str, float | None], ContainerRestarts | None]],
        ] = {}
        for row, t, started_at, signals, restarts in pending:
            cycles.setdefault(t, {})[row] = (started_at, signals, restarts)
        store = self._store
        for t, latest in cycles.items():
            column = store.column_for(t)
            if column < 0:
                continue
            rows = np.fromiter(latest, dtype=np.intp, count=len(latest))
            entries = list(latest.values())
            started = np.fromiter((entry[0] for entry in entries), dtype=np.float64)
            self._started[rows] = np.fmin(self._started[rows], started)
            self._seen[rows] = np.fmax(self._seen[rows], t)
            names = store.signals
            table = np.array(
                [[signals.get(name) for name in names] for _, signals, _ in entries],
                dtype=np.float64,
            ).reshape(len(entries), len(names))
            table[~np.isfinite(table)] = np.nan
            reported = [
                (row, entry[2])
                for row, entry in zip(rows.tolist(), entries, strict=True)
                if entry[2] is not None
            ]
            if reported:
                # Restart counts rarely move: only rows whose count changed need a look.
                counts = np.fromiter((r.count for _, r in reported), dtype=np.intp)
                where = np.fromiter((row for row, _ in reported), dtype=np.intp)
                for index in np.flatnonzero(counts != self._restart_count[where]).tolist():
                    self._take_restarts(reported[index][0], t, reported[index][1])
            self._detect_resets(rows, t, table)
            store.write_cycle(column, rows, t, table)

    def observe_series(
        self,
        pod: PodKey,
        started_at: float,
        signal: str,
        points: Sequence[tuple[float, float]] | FloatArray,
    ) -> None:
        """Backfill one signal of one pod from a range query, as after an operator restart.

        ``points`` are (time, value) pairs or an (n, 2) array; NaN values are gaps. Points land
        on the nearest known cycle within half their own step, or on new cycles. Backfill at
        least the policy's ``longest_window_s`` so that growth rules can tell how long they
        have been breached.
        """
        if len(points) == 0:
            return
        self._flush()
        row = self._row(pod, started_at)
        store = self._store
        if signal not in store.values:
            return
        data = np.asarray(points, dtype=np.float64).reshape(-1, 2)
        times, values = data[:, 0], data[:, 1]
        usable = np.isfinite(times)
        times, values = times[usable], values[usable]
        if len(times) == 0:
            return
        gaps = np.diff(np.sort(times))
        gaps = gaps[gaps > MERGE_TOLERANCE_S]
        tolerance = max(float(np.median(gaps)) / 2 if len(gaps) else 0.0, MERGE_TOLERANCE_S)
        columns = store.columns_for(times, tolerance)
        kept = columns >= 0
        matrix = store.values[signal]
        matrix[row, columns[kept]] = values[kept].astype(np.float32)
        store.dirty[columns[kept]] = True
        with_data = kept & np.isfinite(values)
        if with_data.any():
            newest = int(np.argmax(np.where(with_data, times, -np.inf)))
            if not store.last_time[signal][row] > times[newest]:
                store.last_time[signal][row] = times[newest]
                store.last_value[signal][row] = values[newest]
        latest = float(times.max())
        if not self._seen[row] >= latest:
            self._seen[row] = latest
        self._backfilled[row] = True

    def retain(self, pods: Collection[PodKey]) -> None:
        """Forget every pod not listed (pods that went away)."""
        self._flush()
        keep = set(pods)
        for key in [key for key in self._rows if key not in keep]:
            self._drop(key)

    def evaluate(self, now: float) -> dict[PodKey, Verdict]:
        """A verdict for every known pod, judged at ``now``."""
        self._flush()
        self._expire(now)
        if not self._rows:
            return {}
        policy = self._policy
        rows = max(self._rows.values()) + 1
        cycle = _Cycle(
            now=now,
            rows=rows,
            step=self._store.step(),
            in_use=self._in_use[:rows],
            warm_end=np.fmax(self._started[:rows], self._life[:rows]) + policy.warmup_s,
            fresh=(now - self._store.newest_times[:, :rows]) <= policy.stale_after_s,
        )
        with np.errstate(invalid="ignore", divide="ignore"):
            self._refresh_fleet(cycle)
            outcomes = self._judge_all(cycle)
        breached_signals: dict[str, BoolArray] = {}
        sufficient = np.zeros(rows, dtype=bool)
        for rule, outcome in zip(policy.rules, outcomes, strict=True):
            breached = outcome.breached
            previous = breached_signals.get(rule.signal)
            breached_signals[rule.signal] = breached if previous is None else previous | breached
            if rule.sufficient:
                sufficient |= breached
        distinct = np.zeros(rows, dtype=np.intp)
        for breached in breached_signals.values():
            distinct += breached
        degraded = cycle.in_use & ((distinct >= policy.quorum) | sufficient)
        self._degraded[:rows] = degraded
        with np.errstate(invalid="ignore", divide="ignore"):
            self._capture_baselines(cycle)
        self._backfilled[:rows] = False
        return self._verdicts(cycle, outcomes, degraded)

    # -- pods --------------------------------------------------------------------------------

    def _row(self, pod: PodKey, started_at: float) -> int:
        row = self._rows.get(pod)
        if row is not None:
            self._started[row] = min(self._started[row], started_at)
            return row
        previous = self._by_name.get(pod.name)
        if previous is not None:
            self._drop(previous)
        if self._free:
            row = heapq.heappop(self._free)
        else:
            row = self._allocated
            self._allocated += 1
            self._ensure_rows(self._allocated)
        self._rows[pod] = row
        self._by_name[pod.name] = pod
        self._generation += 1
        self._started[row] = started_at
        self._seen[row] = np.nan
        self._in_use[row] = True
        self._backfilled[row] = False
        self._degraded[row] = False
        self._forget_lives(row)
        self._store.clear_row(row)
        for memory in self._memory.values():
            memory.reset(row)
        return row

    def _ensure_rows(self, rows: int) -> None:
        if rows <= self._capacity:
            return
        capacity = max(rows, self._capacity + self._capacity // 4 + 16)
        self._store.ensure_rows(capacity)
        self._started = _grow(self._started, capacity, np.nan)
        self._seen = _grow(self._seen, capacity, np.nan)
        self._in_use = _grow(self._in_use, capacity, fill=False)
        self._backfilled = _grow(self._backfilled, capacity, fill=False)
        self._degraded = _grow(self._degraded, capacity, fill=False)
        self._life = _grow(self._life, capacity, np.nan)
        self._restart_count = _grow(self._restart_count, capacity, -1)
        events = np.full((capacity, EVENT_SLOTS), np.nan)
        events[: len(self._restarts)] = self._restarts
        self._restarts = events
        events = np.full((capacity, EVENT_SLOTS), np.nan)
        events[: len(self._ooms)] = self._ooms
        self._ooms = events
        for memory in self._memory.values():
            memory.grow(capacity)
        self._capacity = capacity

    def _drop(self, pod: PodKey) -> None:
        self._flush()
        row = self._rows.pop(pod)
        self._generation += 1
        if self._by_name.get(pod.name) == pod:
            del self._by_name[pod.name]
        self._in_use[row] = False
        self._seen[row] = np.nan
        self._forget_lives(row)
        self._store.clear_row(row)
        for memory in self._memory.values():
            memory.reset(row)
        heapq.heappush(self._free, row)

    def _expire(self, now: float) -> None:
        horizon = self._policy.longest_window_s
        if not (now - self._seen[: self._allocated] > horizon).any():
            return
        stale = [key for key, row in self._rows.items() if now - self._seen[row] > horizon]
        for key in stale:
            self._drop(key)

    # -- lives of the process -----------------------------------------------------------------

    def _forget_lives(self, row: int) -> None:
        self._life[row] = np.nan
        self._restart_count[row] = -1
        self._restarts[row] = np.nan
        self._ooms[row] = np.nan

    def _new_life(self, row: int, at: float, *, oom: bool) -> None:
        if not self._life[row] >= at:
            self._life[row] = at
        self._restarts[row] = np.roll(self._restarts[row], 1)
        self._restarts[row, 0] = at
        if oom:
            self._ooms[row] = np.roll(self._ooms[row], 1)
            self._ooms[row, 0] = at

    def _take_restarts(self, row: int, t: float, restarts: ContainerRestarts) -> None:
        """A rise in the restart count starts a new life at the last termination (or now).

        On the first report of a pod (a new pod, or an operator that just started) only the
        newest termination is known: it places the current life and, if it was an OOM kill,
        counts as one at its time.
        """
        previous = int(self._restart_count[row])
        self._restart_count[row] = restarts.count
        finished = restarts.last_finished_at
        known = finished is not None and finished <= t
        oom = restarts.last_reason == OOM_KILLED
        if previous < 0:
            if restarts.count > 0 and finished is not None and known:
                self._new_life(row, finished, oom=oom)
        elif restarts.count > previous:
            self._new_life(row, finished if finished is not None and known else t, oom=oom)

    def _detect_resets(self, rows: IntArray, t: float, table: FloatArray) -> None:
        """Restarts seen in the samples, for pods whose restarts are not reported.

        A progress counter (the signal of a stall rule) that falls means its process restarted.
        A limited growth signal (host memory against its memory limit) that was within 10 % of
        its limit and then falls below half of that was OOM-killed; a counter reset is an OOM
        kill too when it follows such a level. Either starts a new life.
        """
        store = self._store
        unreported = self._restart_count[rows] < 0
        if not unreported.any():
            return
        fell = np.zeros(len(rows), dtype=bool)
        oom = np.zeros(len(rows), dtype=bool)
        counters = sorted(
            {
                store.index[rule.signal]
                for rule in self._policy.rules
                if rule.kind is RuleKind.STALL and rule.signal in store.index
            }
        )
        limited = {
            (store.index[rule.signal], store.index[rule.limit_signal])
            for rule in self._policy.rules
            if rule.limit_signal is not None
            and rule.signal in store.index
            and rule.limit_signal in store.index
        }
        with np.errstate(invalid="ignore"):
            for index in counters:
                fell |= table[:, index] < store.newest_values[index, rows]
            for signal, limit in limited:
                before = store.newest_values[signal, rows]
                near = before >= OOM_NEAR_LIMIT * store.newest_values[limit, rows]
                collapsed = near & (table[:, signal] < COLLAPSE_SHARE * before)
                oom |= near & (fell | collapsed)
                fell |= collapsed
        fell &= unreported
        for position in np.flatnonzero(fell).tolist():
            self._new_life(int(rows[position]), t, oom=bool(oom[position]))

    # -- fleet -------------------------------------------------------------------------------

    def _refresh_fleet(self, cycle: _Cycle) -> None:
        """Fleet medians of the cycles written since the last evaluation, for every
        (signal, traffic-gated) pair an outlier rule reads, in one batch."""
        store = self._store
        keys = tuple(
            sorted(
                {
                    (rule.signal, rule.requires_traffic)
                    for rule in self._policy.rules
                    if rule.kind in (RuleKind.OUTLIER, RuleKind.SATURATION)
                }
            )
        )
        fleet = self._fleet
        if fleet is None or fleet.keys != keys or fleet.layout != store.layout:
            fleet = _FleetColumns(
                keys,
                store.layout,
                np.full((len(keys), store.capacity), np.nan),
                np.zeros((len(keys), store.capacity), dtype=np.intp),
            )
            self._fleet = fleet
            columns = np.flatnonzero(~np.isnan(store.times))
        else:
            columns = np.flatnonzero(store.dirty)
        store.dirty[:] = False
        if not keys or not len(columns):
            return
        rows = cycle.rows
        signals = np.array([store.index[signal] for signal, _ in keys])
        values = store.data[np.ix_(signals, np.arange(rows), columns)]
        times = store.times[columns]
        member = cycle.in_use[:, None] & (times[None, :] >= cycle.warm_end[:, None])
        gated = np.array([gated for _, gated in keys])
        if gated.any():
            traffic = self._traffic(columns, rows)
            member = member[None, :, :] & (~gated[:, None, None] | traffic[None, :, :])
        values = np.where(member, values, np.nan).transpose(0, 2, 1)
        counts = np.count_nonzero(~np.isnan(values), axis=2)
        median = nanmedian_last(values, counts)
        fleet.median[:, columns] = np.where(median > 0, median, np.nan)
        fleet.count[:, columns] = counts

    def _traffic(self, columns: IntArray, rows: int) -> BoolArray:
        rates = self._store.values.get(REQUEST_RATE)
        if rates is None:
            return np.zeros((rows, len(columns)), dtype=bool)
        return np.asarray(rates[:rows, columns] >= self._policy.min_request_rate)

    # -- rules -------------------------------------------------------------------------------

    def _window(self, cycle: _Cycle, length: float, at: float | None = None) -> _Window:
        end = cycle.now if at is None else at
        key = (length, end)
        window = cycle.windows.get(key)
        if window is None:
            columns = self._store.window(end - length, end)
            times = self._store.times[columns]
            settled = times[None, :] >= cycle.warm_end[:, None]
            window = _Window(columns, times, settled)
            if at is None:  # past windows serve one backfill check; keeping them costs memory
                cycle.windows[key] = window
        return window

    def _samples(
        self, rule: Rule, cycle: _Cycle, window: _Window
    ) -> tuple[AnyFloatArray, BoolArray]:
        """The rule's signal over the window, and which samples may be judged."""
        cached = window.signals.get(rule.signal)
        if cached is None:
            matrix = self._store.values[rule.signal]
            if cycle.subset is None:
                values = matrix[: cycle.rows, window.columns]
            else:
                values = matrix[cycle.subset][:, window.columns]
            cached = (values, ~np.isnan(values) & window.settled)
            window.signals[rule.signal] = cached
        values, present = cached
        if not rule.requires_traffic:
            return values, present.copy()
        if window.traffic is None:
            if cycle.subset is None:
                window.traffic = self._traffic(window.columns, cycle.rows)
            else:
                window.traffic = self._traffic(window.columns, self._store.rows)[cycle.subset]
        return values, present & window.traffic

    def _judge_all(self, cycle: _Cycle) -> list[_Outcome]:
        """Every rule's outcome, in policy order; sustained rules are judged in one batch."""
        rules = self._policy.rules
        outcomes: dict[str, _Outcome] = {}
        sustained = [self._prepare(rule, cycle) for rule in rules if rule.kind in _SUSTAINED]
        if sustained:
            for prepared, outcome in zip(sustained, self._sustained(sustained, cycle), strict=True):
                outcomes[prepared.rule.name] = outcome
        for rule in rules:
            memory = self._memory[rule.name]
            if rule.kind is RuleKind.GROWTH:
                state, aux = self._initial_state(rule, cycle)
                outcomes[rule.name] = self._growth(rule, cycle, memory=memory, state=state, aux=aux)
            elif rule.kind is RuleKind.STALL:
                outcomes[rule.name] = self._stall(rule, cycle, memory)
            elif rule.kind is RuleKind.INCREASE:
                outcomes[rule.name] = self._increase(rule, cycle, memory)
        for rule in rules:
            self._memory[rule.name].breached[: cycle.rows] = outcomes[rule.name].breached
        return [outcomes[rule.name] for rule in rules]

    def _initial_state(self, rule: Rule, cycle: _Cycle) -> tuple[StateArray, FloatArray]:
        """States every rule on this signal starts from: warming up, no data, low traffic.

        The same for all rules on a signal with the same traffic gating, so built once a cycle.
        """
        key = (rule.signal, rule.requires_traffic, rule.pending_signal)
        cached = cycle.initial.get(key)
        if cached is None:
            policy, store = self._policy, self._store
            now, rows = cycle.now, cycle.rows
            state = np.full(rows, OK, dtype=np.int8)
            aux = np.full(rows, np.nan)
            fresh = cycle.fresh[store.index[rule.signal]]
            state[~fresh] = NO_DATA
            if rule.requires_traffic:
                if REQUEST_RATE not in store.index:
                    rate_fresh = np.zeros(rows, dtype=bool)
                    rate = np.full(rows, np.nan)
                else:
                    rate_fresh = cycle.fresh[store.index[REQUEST_RATE]]
                    rate = store.last_value[REQUEST_RATE][:rows]
                low = fresh & rate_fresh & (rate < policy.min_request_rate)
                state[low] = LOW_TRAFFIC
                aux[low] = rate[low]
                unknown = fresh & ~rate_fresh
                state[unknown] = NO_DATA
                aux[unknown] = _NO_TRAFFIC_DATA
            pending = rule.pending_signal
            if pending is not None:
                pending_fresh = (
                    cycle.fresh[store.index[pending]]
                    if pending in store.index
                    else np.zeros(rows, dtype=bool)
                )
                unknown = (state == OK) & ~pending_fresh
                state[unknown] = NO_DATA
                aux[unknown] = _NO_PENDING_DATA
            warming = now < cycle.warm_end
            state[warming] = WARMING_UP
            aux[warming] = (cycle.warm_end - now)[warming]
            state[~cycle.in_use] = NO_DATA
            cached = (state, aux)
            cycle.initial[key] = cached
        return cached[0].copy(), cached[1].copy()

    def _prepare(self, rule: Rule, cycle: _Cycle) -> _Prepared:
        """A sustained rule's series over its window: the signal itself (above/below), or its
        ratio to the pod's baseline or to the fleet median, with the samples that count."""
        rows = cycle.rows
        memory = self._memory[rule.name]
        state, aux = self._initial_state(rule, cycle)
        window = self._window(cycle, rule.window_s)
        columns = window.columns
        values, usable = self._samples(rule, cycle, window)
        if rule.kind is RuleKind.BASELINE:
            baseline = memory.baseline[:rows]
            values = values / baseline[:, None]
            missing = (state == OK) & np.isnan(baseline)
            state[missing] = NO_DATA
            aux[missing] = _NO_BASELINE
            usable &= ~np.isnan(values)
            reference_rate = memory.baseline_rate[:rows]
            if REQUEST_RATE in self._store.values and np.isfinite(reference_rate).any():
                rates = np.where(usable, self._store.values[REQUEST_RATE][:rows, columns], 0.0)
                ratio = rates.sum(axis=1) / np.count_nonzero(usable, axis=1) / reference_rate
                surge = (state == OK) & (ratio > COMPARABLE_LOAD_RATIO)
                state[surge] = NOT_COMPARABLE
                aux[surge] = ratio[surge]
        elif rule.kind is RuleKind.SATURATION:
            values, usable = self._saturation(
                rule, cycle, window=window, values=values, usable=usable, state=state, aux=aux
            )
        elif rule.kind is RuleKind.OUTLIER:
            fleet = self._fleet
            assert fleet is not None
            index = fleet.row(rule.signal, rule.requires_traffic)
            count, median = fleet.count[index], fleet.median[index]
            enough = count[columns] >= rule.min_fleet
            values = values / median[columns][None, :]
            usable &= enough[None, :] & ~np.isnan(values)
            newest = self._store.newest_column
            size = int(count[newest]) if newest >= 0 else 0
            if size < rule.min_fleet:
                thin = state == OK
                state[thin] = INSUFFICIENT_FLEET
                aux[thin] = float(size)
        return _Prepared(rule, values, usable, state, aux, memory.breached[:rows])

    def _sustained(self, batch: Sequence[_Prepared], cycle: _Cycle) -> list[_Outcome]:
        """Judge sustained rules together: their windows are stacked (padded to the longest)
        so that the whole batch costs a fixed number of array operations.

        Below-rules are negated so that every rule breaches upward here.
        """
        rows = cycle.rows
        count = len(batch)
        width = max(prepared.values.shape[1] for prepared in batch)
        values = np.full((count, rows, width), np.nan, dtype=np.float32)
        usable = np.zeros((count, rows, width), dtype=bool)
        sign = np.array([1.0 if p.rule.breaches_upward else -1.0 for p in batch])
        for index, prepared in enumerate(batch):
            span = prepared.values.shape[1]
            values[index, :, :span] = prepared.values
            usable[index, :, :span] = prepared.usable
        values *= sign.astype(np.float32)[:, None, None]
        threshold = sign * np.array([p.rule.threshold for p in batch])
        clear = sign * np.array([p.rule.clear for p in batch])
        expected = np.array([max(p.rule.window_s / cycle.step, 1.0) for p in batch])
        needed = np.maximum(MIN_SAMPLES, np.ceil(MIN_COVERAGE * expected))
        state = np.stack([prepared.state for prepared in batch])
        aux = np.stack([prepared.aux for prepared in batch])
        before = np.stack([prepared.before for prepared in batch])
        eligible = state == OK
        counts = np.count_nonzero(usable, axis=2)
        covered = counts >= needed[:, None]
        extreme = np.min(values, axis=2, where=usable, initial=np.inf).astype(np.float64)
        enter = covered & (extreme > threshold[:, None])
        observed = np.where(counts > 0, extreme, np.nan)
        holding = before & eligible & (counts > 0) & ~enter
        hold = np.zeros_like(holding)
        if holding.any():
            which = np.nonzero(holding)
            median = nanmedian_last(np.where(usable[which], values[which], np.nan))
            hold[which] = median > clear[which[0]]
            observed[which] = median
        breached = eligible & (enter | hold)
        state[breached] = BREACH
        thin = eligible & ~breached & ~covered
        state[thin] = NO_DATA
        aux[thin] = (counts / expected[:, None])[thin]
        held = before & breached
        level = np.where(held, clear[:, None], threshold[:, None]) * sign[:, None]
        observed *= sign[:, None]
        holding = held & ~enter
        return [
            _Outcome(state[i], observed[i], level[i], aux[i], holding[i], breached[i])
            for i in range(count)
        ]

    def _saturation(
        self,
        rule: Rule,
        cycle: _Cycle,
        *,
        window: _Window,
        values: AnyFloatArray,
        usable: BoolArray,
        state: StateArray,
        aux: FloatArray,
    ) -> tuple[AnyFloatArray, BoolArray]:
        """The signal where work queues and the pod is well above the fleet median, else 0
        (a sample that cannot breach); cycles with too few pods in the fleet do not count."""
        rows, columns = cycle.rows, window.columns
        fleet = self._fleet
        assert fleet is not None
        assert rule.pending_signal is not None
        index = fleet.row(rule.signal, rule.requires_traffic)
        count, median = fleet.count[index], fleet.median[index]
        enough = count[columns] >= rule.min_fleet
        pending = self._store.values[rule.pending_signal][:rows, columns]
        typical = np.nan_to_num(median[columns], nan=0.0)[None, :]
        alone = values >= SATURATION_FLEET_RATIO * typical
        queued = pending > 0
        usable = usable & enough[None, :] & ~np.isnan(pending)
        values = np.where(queued & alone, values, 0.0)
        newest = self._store.newest_column
        size = int(count[newest]) if newest >= 0 else 0
        if size < rule.min_fleet:
            thin = state == OK
            state[thin] = INSUFFICIENT_FLEET
            aux[thin] = float(size)
        return values, usable

    def _counter_outcome(
        self,
        rule: Rule,
        memory: _RuleMemory,
        state: StateArray,
        aux: FloatArray,
        *,
        rise: FloatArray,
        enter: BoolArray,
        still: BoolArray,
    ) -> _Outcome:
        """Breach, hysteresis and bookkeeping shared by the counter kinds (stall, increase):
        ``enter`` starts a breach, ``still`` holds one."""
        rows = len(state)
        eligible = state == OK
        before = memory.breached[:rows]
        enter = eligible & enter
        hold = before & eligible & still & ~enter
        breached = enter | hold
        state[breached] = BREACH
        held = before & breached
        level = np.where(held, rule.clear, rule.threshold)
        return _Outcome(state, rise, level, aux, holding=held & ~enter, breached=breached)

    def _stall(self, rule: Rule, cycle: _Cycle, memory: _RuleMemory) -> _Outcome:
        """Progress (a counter) rises by at most the threshold over a covered window while
        the pending signal stays above 0 in every sample: the engine holds work and does none.
        Samples before warm-up or from an earlier life of the process do not count."""
        state, aux = self._initial_state(rule, cycle)
        rows = cycle.rows
        assert rule.pending_signal is not None
        window = self._window(cycle, rule.window_s)
        values, usable = self._samples(rule, cycle, window)
        if rule.pending_signal in self._store.values:
            pending = self._store.values[rule.pending_signal][:rows, window.columns]
        else:
            pending = np.full(values.shape, np.nan, dtype=np.float32)
        usable &= ~np.isnan(pending)
        counts = np.count_nonzero(usable, axis=1)
        expected = max(rule.window_s / cycle.step, 1.0)
        needed = max(MIN_SAMPLES, math.ceil(MIN_COVERAGE * expected))
        highest = np.max(values, axis=1, where=usable, initial=-np.inf).astype(np.float64)
        lowest = np.min(values, axis=1, where=usable, initial=np.inf).astype(np.float64)
        rise = np.where(counts > 0, highest - lowest, np.nan)
        waiting = np.all(~usable | (pending > 0), axis=1)
        covered = counts >= needed
        thin = (state == OK) & ~covered & ~memory.breached[:rows]
        state[thin] = NO_DATA
        aux[thin] = counts[thin] / expected
        return self._counter_outcome(
            rule,
            memory,
            state,
            aux,
            rise=rise,
            enter=covered & waiting & (rise <= rule.threshold),
            still=(counts > 0) & (rise <= rule.clear),
        )

    def _increase(self, rule: Rule, cycle: _Cycle, memory: _RuleMemory) -> _Outcome:
        """A counter rises by at least the threshold within the window, across restarts and
        warm-ups. ``oom_kills`` and ``restarts`` are the engine's own counts of the pod's
        restarts; any other signal is read from the samples (a fall is a reset to 0)."""
        rows, now = cycle.rows, cycle.now
        if rule.signal in RESTART_SIGNALS:
            events = self._ooms if rule.signal == "oom_kills" else self._restarts
            with np.errstate(invalid="ignore"):
                inside = (events[:rows] > now - rule.window_s) & (events[:rows] <= now)
            rise = np.count_nonzero(inside, axis=1).astype(np.float64)
            state = np.full(rows, OK, dtype=np.int8)
            aux = np.full(rows, np.nan)
            unknown = (self._restart_count[:rows] < 0) & np.isnan(self._restarts[:rows, 0])
            state[unknown] = NO_DATA
            aux[unknown] = _NO_RESTART_DATA
            state[~cycle.in_use] = NO_DATA
        else:
            state, aux = self._initial_state(rule, cycle)
            state[state == WARMING_UP] = OK
            window = self._window(cycle, rule.window_s)
            values = self._store.values[rule.signal][:rows, window.columns].astype(np.float64)
            rise = _counter_rise(values)
            known = np.count_nonzero(~np.isnan(values), axis=1) >= 2
            rise = np.where(known, rise, np.nan)
        return self._counter_outcome(
            rule,
            memory,
            state,
            aux,
            rise=rise,
            enter=rise >= rule.threshold,
            still=rise >= rule.clear,
        )

    def _trend(
        self,
        rule: Rule,
        cycle: _Cycle,
        at: float | None = None,
        *,
        span: float | None = None,
        quantile: float = SLOPE_QUANTILE,
    ) -> tuple[Trend, BoolArray, FloatArray]:
        """The fit over ``span`` (default the rule's window) ending at ``at`` (default now),
        whether the window holds enough for it, coverage."""
        end = cycle.now if at is None else at
        length = rule.window_s if span is None else span
        window = self._window(cycle, length, at)
        values, usable = self._samples(rule, cycle, window)
        trend = theil_sen(
            np.where(usable, values, np.nan), window.times, end - length, end, quantile=quantile
        )
        counts = np.count_nonzero(usable, axis=1)
        needed = max(MIN_SAMPLES, math.ceil(MIN_COVERAGE * length / cycle.step))
        enough = (counts >= needed) & (trend.buckets >= GROWTH_MIN_BUCKETS)
        coverage = counts / max(length / cycle.step, 1.0)
        return trend, enough, coverage

    def _regime(
        self, rule: Rule, cycle: _Cycle, limits: FloatArray, at: float | None = None
    ) -> tuple[Trend, BoolArray, FloatArray, _Ground]:
        """The fit a growth judgement uses: the current regime of the process; and how high
        the newest half of the window reaches against the older half.

        Three candidates, the steepest counts. The whole window (the supported slope). Its
        lower envelope: a collector's sawtooth scatters the samples by its full height, but its
        troughs are the live set, flat when healthy and lifted by a leak. And, for pods with a
        known limit, the newest half of the window: a window that still holds samples from
        before a leak began underestimates it, and a young life of the process (after a
        restart) does not cover the window at all. The newest half takes the plain median of
        pairwise slopes (unbiased on a straight line), checked over that half and over each of
        its quarters, so a one-off step, a self-healing bump or a sawtooth leaves it flat.
        """
        trend, enough, coverage = self._trend(rule, cycle, at)
        limited = np.isfinite(limits)
        trough, troughs_known, ground = self._trough(rule, cycle, at, limited)
        if not enough.any() and not limited.any():
            return trend, enough, coverage, ground
        whole = np.where(enough, trend.supported, -np.inf)
        troughs = np.where(enough & troughs_known, trough.supported, -np.inf)
        if not limited.any():
            pick = troughs > whole
            return _pick_trend(trend, trough, pick), enough, coverage, ground
        recent, recent_enough, _ = self._trend(
            rule, cycle, at, span=rule.window_s * RECENT_SHARE, quantile=0.5
        )
        recent_enough &= limited
        use_trough = troughs > whole
        best = np.fmax(whole, troughs)
        steeper = recent_enough & ~(best >= recent.supported)
        use_trough &= ~steeper
        chosen = _pick_trend(_pick_trend(trend, trough, use_trough), recent, steeper)
        chosen = Trend(
            chosen.slope,
            chosen.supported,
            chosen.level,
            chosen.buckets,
            self._reach(rule, cycle, at, chosen, limited),
        )
        coverage = np.where(recent_enough & ~enough, 1.0, coverage)
        return chosen, enough | recent_enough, coverage, ground

    def _reach(
        self, rule: Rule, cycle: _Cycle, at: float | None, fit: Trend, limited: BoolArray
    ) -> FloatArray:
        """How far the samples of the newest half of the window reach above the fitted line,
        for the rows with a known limit (0 elsewhere)."""
        end = cycle.now if at is None else at
        reach = np.zeros(len(limited))
        rows = np.flatnonzero(limited)
        if not len(rows):
            return reach
        window = self._window(cycle, rule.window_s * RECENT_SHARE, at)
        values, usable = self._samples(rule, cycle, window)
        raw = np.where(usable[rows], values[rows], np.nan)
        reach[rows] = reach_above(raw, window.times, fit.level[rows], fit.slope[rows], end)
        return reach

    def _trough(
        self, rule: Rule, cycle: _Cycle, at: float | None, limited: BoolArray
    ) -> tuple[Trend, BoolArray, _Ground]:
        """The fit of the window's lower envelope, whether the envelope follows troughs (the
        window holds several whole periods of whatever cycle the samples have), and the highs
        of the window's two halves.

        The envelope is smooth, so where a limit is known (the time left decides) the plain
        median of pairwise slopes counts; where the slope alone decides, the lower quartile,
        as for the raw samples."""
        end = cycle.now if at is None else at
        window = self._window(cycle, rule.window_s, at)
        values, usable = self._samples(rule, cycle, window)
        raw = np.where(usable, values, np.nan)
        envelope, centers, troughs = lower_envelope(raw, window.times, end - rule.window_s, end)
        quantile = np.where(limited, 0.5, SLOPE_QUANTILE)
        trend = theil_sen(envelope, centers, centers[0] - 1.0, centers[-1] + 1.0, quantile=quantile)
        older = window.times < end - rule.window_s * RECENT_SHARE
        earlier = np.where(np.isnan(raw[:, older]), -np.inf, raw[:, older])
        if earlier.shape[1] >= 2:
            # The second highest sample: a lone spike does not hide the growth after it.
            highest = np.argpartition(earlier, -2, axis=1)[:, -2]
            older_high = earlier[np.arange(len(earlier)), highest]
            older_time = np.where(np.isfinite(older_high), window.times[older][highest], np.nan)
        else:
            older_high = np.full(len(raw), -np.inf)
            older_time = np.full(len(raw), np.nan)
        newest_high = nanquantile_last(raw[:, ~older], SPREAD_QUANTILE)
        return trend, troughs, _Ground(newest_high, older_high, older_time)

    def _limits(self, rule: Rule, rows: int) -> FloatArray:
        """Each row's limit for a time-to-limit rule (NaN: none known)."""
        if rule.time_to_limit_s is None:
            return np.full(rows, np.nan)
        if rule.limit_signal is not None:
            newest = self._store.last_value.get(rule.limit_signal)
            if newest is None:
                return np.full(rows, np.nan)
            limits = np.asarray(newest[:rows], dtype=np.float64)
            return np.where(limits > 0, limits, np.nan)
        return np.full(rows, np.nan if rule.limit is None else rule.limit)

    def _growth_condition(
        self, rule: Rule, trend: Trend, enough: BoolArray, limits: FloatArray
    ) -> tuple[FloatArray, BoolArray, BoolArray, FloatArray, FloatArray]:
        """Slope per hour, breach condition, judged-by-time-to-limit, the slope that would
        reach the limit in time, time left (NaN without a limit)."""
        slope = trend.supported * 3600.0
        rows = len(slope)
        known = np.isfinite(limits)
        by_slope = enough & ~known & (slope > rule.threshold)
        if rule.time_to_limit_s is None or not known.any():
            unknown = np.full(rows, np.nan)
            return slope, by_slope, np.zeros(rows, dtype=bool), unknown, unknown
        reach = 0.0 if trend.spread is None else trend.spread
        headroom = limits - (trend.level + reach)
        needed = headroom / rule.time_to_limit_s * 3600.0
        with np.errstate(divide="ignore", invalid="ignore"):
            left = np.where(slope > 0, headroom / slope * 3600.0, np.inf)
        left = np.where(known, left, np.nan)
        # The breach must hold for ``sustain`` before it counts, and the leak goes on meanwhile:
        # looking that much further ahead keeps the promise of ``timeToLimit`` at the call.
        horizon = rule.time_to_limit_s + rule.sustain_s
        by_limit = enough & known & (slope > 0) & (left <= horizon)
        return slope, by_slope | by_limit, by_limit, needed, left

    def _growth(
        self,
        rule: Rule,
        cycle: _Cycle,
        *,
        memory: _RuleMemory,
        state: StateArray,
        aux: FloatArray,
    ) -> _Outcome:
        rows, now = cycle.rows, cycle.now
        eligible = state == OK
        fit = self._fit(rule, cycle, memory)
        slope, condition, by_limit, enough = fit.slope, fit.condition, fit.by_limit, fit.enough
        since = memory.since[:rows]
        started = np.where(np.isnan(since), np.where(condition, now, np.nan), since)
        # A time-to-limit estimate wobbles (a sawtooth, noise): once the limit is in reach, the
        # sustain period runs on while the limit stays within twice the horizon, and the breach
        # comes when the condition holds again at its end.
        within_reach = np.zeros(rows, dtype=bool)
        if rule.time_to_limit_s is not None:
            horizon = REACH_SLACK * (rule.time_to_limit_s + rule.sustain_s)
            within_reach = fit.enough & (np.nan_to_num(fit.left, nan=np.inf) <= horizon)
        since = np.where((condition | within_reach) & eligible, started, np.nan)
        memory.since[:rows] = since
        # A leak that would reach its limit sooner than the sustain period allows for is called
        # once it has held for a share of the time it has left.
        sustain = np.fmin(rule.sustain_s, URGENT_SHARE * np.nan_to_num(fit.left, nan=np.inf))
        enter = condition & eligible & (now - since >= sustain)
        typical = fit.typical
        hold = memory.breached[:rows] & eligible & enough & ((typical > rule.clear) | by_limit)
        breached = enter | hold
        state[breached] = BREACH
        thin = eligible & ~enough
        state[thin] = NO_DATA
        aux[thin] = fit.coverage[thin]
        judged = (state == BREACH) | (state == OK)
        aux[judged] = fit.left[judged]
        holding = memory.breached[:rows] & breached
        held = holding & ~condition
        observed = np.where(held, typical, slope)
        return _Outcome(
            state,
            np.where(np.isfinite(observed), observed, np.nan),
            np.where(holding, rule.clear, rule.threshold),
            aux,
            holding=held,
            breached=breached,
            by_time_to_limit=by_limit,
            needed=fit.needed,
            limits=fit.limits,
        )

    def _fit(self, rule: Rule, cycle: _Cycle, memory: _RuleMemory) -> _Fit:
        """The growth fit, refreshed each time the window has moved on by one bucket (a fit
        over 12 buckets barely moves in between) or when pods or columns changed."""
        now, rows = cycle.now, cycle.rows
        key = (self._generation, self._store.layout, rows)
        backfilled = self._backfilled[:rows].any()
        fit = memory.fit
        if (
            fit is not None
            and fit.key == key
            and not backfilled
            and fit.at <= now < fit.at + rule.window_s / GROWTH_BUCKETS
        ):
            return fit
        limits = self._limits(rule, rows)
        trend, enough, coverage, ground = self._regime(rule, cycle, limits)
        slope, condition, by_limit, needed, left = self._growth_condition(
            rule, trend, enough, limits
        )
        # Growth is counted only while the process reaches new ground: above every level it
        # held (and came down from) over the older half of the window and the window before.
        # A cycle of any period up to that lookback, however steep its rising stretch, climbs
        # back only to where it already was; a leak climbs past it.
        memory.remember_peaks(now, ground.older_high, ground.older_time)
        since = np.fmax(now - LOOKBACK_WINDOWS * rule.window_s, cycle.warm_end[:rows])
        new_ground = ground.reached(memory.earlier_high(rows, since))
        condition &= new_ground
        by_limit &= new_ground
        if rule.sustain_s > 0 and backfilled:
            self._restore_since(rule, cycle, memory, condition, limits)
        typical = trend.slope * 3600.0
        fit = _Fit(
            now, key, slope, typical, condition, by_limit, needed, left, enough, coverage, limits
        )
        memory.fit = fit
        return fit

    def _restore_since(
        self,
        rule: Rule,
        cycle: _Cycle,
        memory: _RuleMemory,
        condition_now: BoolArray,
        limits: FloatArray,
    ) -> None:
        """After a backfill, find how long the growth condition has held from the history."""
        rows = cycle.rows
        backfilled = self._backfilled[:rows] & np.isnan(memory.since[:rows]) & condition_now
        if not backfilled.any():
            return
        instants = cycle.now - rule.sustain_s * (
            1 - np.arange(RETRO_SUSTAIN_STEPS) / RETRO_SUSTAIN_STEPS
        )
        subset = np.flatnonzero(backfilled)
        few = _Cycle(
            now=cycle.now,
            rows=len(subset),
            step=cycle.step,
            in_use=cycle.in_use[subset],
            warm_end=cycle.warm_end[subset],
            fresh=cycle.fresh[:, subset],
            subset=subset,
        )
        holds_since = np.full(len(subset), np.nan)
        unbroken = np.ones(len(subset), dtype=bool)
        for at in instants[::-1]:
            trend, enough, _, ground = self._regime(rule, few, limits[subset], float(at))
            _, condition, _, _, _ = self._growth_condition(rule, trend, enough, limits[subset])
            condition &= ground.reached()
            condition &= float(at) >= few.warm_end
            unbroken &= condition
            if not unbroken.any():
                break
            holds_since[unbroken] = at
        restored = ~np.isnan(holds_since)
        memory.since[subset[restored]] = holds_since[restored]

    # -- baselines ---------------------------------------------------------------------------

    def _capture_baselines(self, cycle: _Cycle) -> None:
        for rule in self._policy.rules:
            if rule.kind is RuleKind.BASELINE:
                self._capture_baseline(rule, cycle, self._memory[rule.name])

    def _capture_baseline(self, rule: Rule, cycle: _Cycle, memory: _RuleMemory) -> None:
        rows, now = cycle.rows, cycle.now
        pending = cycle.in_use & np.isnan(memory.baseline[:rows]) & (now >= cycle.warm_end)
        if not pending.any():
            return
        columns = self._store.window(-math.inf, now)
        times = self._store.times[columns]
        start = memory.baseline_start[:rows]
        seek = np.flatnonzero(pending & np.isnan(start))
        if len(seek):
            values, usable = self._samples_for(rule, cycle, seek, columns, times)
            after = memory.baseline_after[seek]
            usable &= ~(times[None, :] < np.where(np.isnan(after), -np.inf, after)[:, None])
            first = np.where(usable, times[None, :], np.inf).min(axis=1, initial=np.inf)
            start[seek] = np.where(np.isfinite(first), first, np.nan)
        length = rule.baseline_window_s
        ready = np.flatnonzero(
            pending & ~np.isnan(start) & (now >= start + length) & ~self._degraded[:rows]
        )
        if not len(ready):
            return
        values, usable = self._samples_for(rule, cycle, ready, columns, times)
        begin = start[ready][:, None]
        usable &= (times[None, :] >= begin) & (times[None, :] <= begin + length)
        counts = np.count_nonzero(usable, axis=1)
        needed = max(MIN_SAMPLES, math.ceil(BASELINE_MIN_COVERAGE * length / cycle.step))
        good = counts >= needed
        reference = nanmedian_last(np.where(usable, values, np.nan), counts)
        good &= reference > 0
        rates = self._store.values.get(REQUEST_RATE)
        rate = np.full(len(ready), np.nan)
        if rates is not None:
            rate = nanmedian_last(
                np.where(usable, rates[ready][:, columns].astype(np.float64), np.nan)
            )
        memory.baseline[ready[good]] = reference[good]
        memory.baseline_rate[ready[good]] = rate[good]
        retry = ready[~good]
        memory.baseline_after[retry] = start[retry] + length / 2
        start[retry] = np.nan

    def _samples_for(
        self, rule: Rule, cycle: _Cycle, rows: IntArray, columns: IntArray, times: FloatArray
    ) -> tuple[FloatArray, BoolArray]:
        values = self._store.values[rule.signal][rows][:, columns].astype(np.float64)
        usable = ~np.isnan(values) & (times[None, :] >= cycle.warm_end[rows][:, None])
        if rule.requires_traffic:
            rates = self._store.values.get(REQUEST_RATE)
            if rates is None:
                usable[:] = False
            else:
                usable &= rates[rows][:, columns] >= self._policy.min_request_rate
        return values, usable

    # -- verdicts ----------------------------------------------------------------------------

    def _verdicts(
        self, cycle: _Cycle, outcomes: Sequence[_Outcome], degraded: BoolArray
    ) -> dict[PodKey, Verdict]:
        policy = self._policy
        rules = policy.rules
        now = cycle.now
        reasons: dict[int, list[Reason]] = {}
        breached = [outcome.breached for outcome in outcomes] or [np.zeros(cycle.rows, bool)]
        hits = np.nonzero(np.stack(breached))
        for index, row in zip(hits[0].tolist(), hits[1].tolist(), strict=True):
            rule, outcome = rules[index], outcomes[index]
            observed = float(outcome.observed[row])
            threshold = rule.threshold
            limit: float | None = None
            if outcome.by_time_to_limit is not None and bool(outcome.by_time_to_limit[row]):
                assert outcome.needed is not None
                assert outcome.limits is not None
                threshold = float(outcome.needed[row])
                limit = float(outcome.limits[row])
            holding = bool(outcome.holding[row])
            text = reason_text(rule, observed, threshold, limit=limit, holding=holding)
            reasons.setdefault(row, []).append(
                Reason(rule.name, rule.signal, rule.kind, observed, threshold, rule.window_s, text)
            )
        warming = (now < cycle.warm_end).tolist()
        fresh_list = np.asarray(cycle.fresh.any(axis=0), dtype=bool).tolist()
        degraded_list = degraded.tolist()
        self._explanation.update(rules, outcomes)
        explain = self._explanation.for_pod
        previous = self._verdicts_now
        verdicts: dict[PodKey, Verdict] = {}
        for key, row in self._rows.items():
            is_degraded, warming_up, has_data = degraded_list[row], warming[row], fresh_list[row]
            if row in reasons:
                verdicts[key] = Verdict(
                    key, is_degraded, warming_up, has_data, tuple(reasons[row]), explain
                )
                continue
            same = previous.get(key)
            if (
                same is None
                or same.reasons
                or same.degraded != is_degraded
                or same.warming_up != warming_up
                or same.has_data != has_data
            ):
                same = Verdict(key, is_degraded, warming_up, has_data, (), explain)
            verdicts[key] = same
        self._verdicts_now = verdicts
        return dict(verdicts)


def _counter_rise(values: FloatArray) -> FloatArray:
    """How much each row's counter rose over its samples, as Prometheus' ``increase`` counts
    it: a fall is a reset, after which the counter counts from 0; gaps are bridged."""
    columns = values.shape[1]
    if columns < 2:
        return np.zeros(values.shape[0])
    present = ~np.isnan(values)
    last = np.where(present, np.arange(columns), -1)
    np.maximum.accumulate(last, axis=1, out=last)
    previous = np.concatenate([np.full((values.shape[0], 1), -1), last[:, :-1]], axis=1)
    before = np.take_along_axis(values, np.maximum(previous, 0), axis=1)
    usable = present & (previous >= 0)
    step = values - before
    contribution = np.where(step >= 0, step, values)
    rise: FloatArray = np.where(usable, contribution, 0.0).sum(axis=1)
    return rise


def _pick_trend(base: Trend, other: Trend, pick: BoolArray) -> Trend:
    """``other``'s fit on the rows in ``pick``, ``base``'s elsewhere."""
    return Trend(
        slope=np.where(pick, other.slope, base.slope),
        supported=np.where(pick, other.supported, base.supported),
        level=np.where(pick, other.level, base.level),
        buckets=np.where(pick, other.buckets, base.buckets),
    )


def _stored(policy: HealthPolicy) -> tuple[str, ...]:
    """The signals the sample ring keeps: all but the restart counts the engine keeps itself."""
    return tuple(signal for signal in policy.signals if signal not in RESTART_SIGNALS)
