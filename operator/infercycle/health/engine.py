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
    the one the data supports throughout: the lower quartile of the pairwise bucket slopes,
    over the whole window and over each half alone, whichever is smallest. A steady leak shows
    in all three; spikes vanish in the bucket medians; a one-off step, a self-healing bump or a
    GC sawtooth leave a quarter of the pairs flat or falling. With ``limit`` and
    ``timeToLimit``, a pod whose limit is known (a fixed level, or the newest sample of a limit
    signal such as the container's memory limit) is judged by time to limit instead: it
    breaches when the fitted line, rising, reaches its limit within ``timeToLimit``, so a slow
    leak far from its limit is left to run and a restart is spent only when it would otherwise
    end in an OOM kill; a pod with no known limit is judged by ``threshold``. The
    condition must hold continuously for ``sustain`` (the breach start is kept, and restored
    from the history after a backfill). The fit is refreshed each time the window has moved on
    by one bucket (5 minutes for a 1 h window); in between it barely moves.
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
from infercycle.api.values import MIN_SAMPLES, HealthPolicy, Rule, RuleKind
from infercycle.health.history import MERGE_TOLERANCE_S, CycleStore
from infercycle.health.model import (
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
    AnyFloatArray,
    BoolArray,
    FloatArray,
    IntArray,
    Trend,
    nanmedian_last,
    theil_sen,
)

__all__ = ["HealthEngine", "PodKey", "Reason", "RuleEvaluation", "RuleState", "Verdict"]

REQUEST_RATE = "request_rate"
MIN_COVERAGE = 0.8
"""Share of a window's expected cycles that must hold a sample."""
GROWTH_MIN_BUCKETS = math.ceil(MIN_COVERAGE * GROWTH_BUCKETS)
COMPARABLE_LOAD_RATIO = 1.5
"""A baseline rule compares only while the request rate is at most this times the baseline's."""
BASELINE_MIN_COVERAGE = 0.5
RETRO_SUSTAIN_STEPS = 6
"""Past instants checked after a backfill to restore how long a growth rule has been breached."""

_Scalar = TypeVar("_Scalar", bound=np.generic)
StateArray = npt.NDArray[np.int8]

_STATES = tuple(RuleState)
_CODE = {state: np.int8(index) for index, state in enumerate(_STATES)}
BREACH, OK, NO_DATA = _CODE[RuleState.BREACH], _CODE[RuleState.OK], _CODE[RuleState.NO_DATA]
WARMING_UP, LOW_TRAFFIC = _CODE[RuleState.WARMING_UP], _CODE[RuleState.LOW_TRAFFIC]
NOT_COMPARABLE = _CODE[RuleState.NOT_COMPARABLE]
INSUFFICIENT_FLEET = _CODE[RuleState.INSUFFICIENT_FLEET]

# NO_DATA details, kept in the per-rule ``aux`` numbers (coverage fractions are 0..1).
_NO_BASELINE = -1.0
_NO_TRAFFIC_DATA = -2.0


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
    fit: _Fit | None = None

    def __post_init__(self) -> None:
        self.breached = np.zeros(self.rows, dtype=bool)
        self.since = np.full(self.rows, np.nan)
        self.baseline = np.full(self.rows, np.nan)
        self.baseline_rate = np.full(self.rows, np.nan)
        self.baseline_start = np.full(self.rows, np.nan)
        self.baseline_after = np.full(self.rows, np.nan)

    def grow(self, rows: int) -> None:
        self.breached = _grow(self.breached, rows, fill=False)
        for name in ("since", "baseline", "baseline_rate", "baseline_start", "baseline_after"):
            setattr(self, name, _grow(getattr(self, name), rows, np.nan))
        self.rows = rows

    def reset(self, row: int) -> None:
        self.breached[row] = False
        self.since[row] = np.nan
        self.baseline[row] = np.nan
        self.baseline_rate[row] = np.nan
        self.baseline_start[row] = np.nan
        self.baseline_after[row] = np.nan

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
    initial: dict[tuple[str, bool], tuple[StateArray, FloatArray]] = field(default_factory=dict)


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
        self._store = CycleStore(policy.signals, policy.longest_window_s)
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
        self._memory = {rule.name: _RuleMemory(rule, self._capacity) for rule in policy.rules}
        self._fleet: _FleetColumns | None = None
        self._explanation = _Explanation(self._rows)
        self._verdicts_now: dict[PodKey, Verdict] = {}
        self._pending: list[tuple[int, float, float, Mapping[str, float | None]]] = []
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
        self._store.set_signals(policy.signals)
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
        self, t: float, pod: PodKey, started_at: float, signals: Mapping[str, float | None]
    ) -> None:
        """One instant sample of one pod; all pods of a cycle are observed with the same ``t``
        (observations less than half a second apart count as one cycle).

        A missing signal or ``None`` is no data; signals no rule reads are ignored. Observing a
        pod twice in a cycle keeps the later sample.
        """
        row = self._rows.get(pod)
        if row is None:
            row = self._row(pod, started_at)
        self._pending.append((row, t, started_at, signals))

    def _flush(self) -> None:
        """Write the observations gathered since the last flush, one cycle at a time.

        Observations are queued by ``observe`` and written column-wise here: a cycle of
        thousands of pods costs a few array assignments instead of one per sample.
        """
        pending = self._pending
        if not pending:
            return
        self._pending = []
        cycles: dict[float, dict[int, tuple[float, Mapping[str, float | None]]]] = {}
        for row, t, started_at, signals in pending:
            cycles.setdefault(t, {})[row] = (started_at, signals)
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
                [[signals.get(name) for name in names] for _, signals in entries],
                dtype=np.float64,
            ).reshape(len(entries), len(names))
            table[~np.isfinite(table)] = np.nan
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
            warm_end=self._started[:rows] + policy.warmup_s,
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
                    if rule.kind is RuleKind.OUTLIER
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
            values = self._store.values[rule.signal][: cycle.rows, window.columns]
            cached = (values, ~np.isnan(values) & window.settled)
            window.signals[rule.signal] = cached
        values, present = cached
        if not rule.requires_traffic:
            return values, present.copy()
        if window.traffic is None:
            window.traffic = self._traffic(window.columns, cycle.rows)
        return values, present & window.traffic

    def _judge_all(self, cycle: _Cycle) -> list[_Outcome]:
        """Every rule's outcome, in policy order; sustained rules are judged in one batch."""
        rules = self._policy.rules
        outcomes: dict[str, _Outcome] = {}
        sustained = [
            self._prepare(rule, cycle) for rule in rules if rule.kind is not RuleKind.GROWTH
        ]
        if sustained:
            for prepared, outcome in zip(sustained, self._sustained(sustained, cycle), strict=True):
                outcomes[prepared.rule.name] = outcome
        for rule in rules:
            if rule.kind is RuleKind.GROWTH:
                state, aux = self._initial_state(rule, cycle)
                outcomes[rule.name] = self._growth(
                    rule, cycle, memory=self._memory[rule.name], state=state, aux=aux
                )
        for rule in rules:
            self._memory[rule.name].breached[: cycle.rows] = outcomes[rule.name].breached
        return [outcomes[rule.name] for rule in rules]

    def _initial_state(self, rule: Rule, cycle: _Cycle) -> tuple[StateArray, FloatArray]:
        """States every rule on this signal starts from: warming up, no data, low traffic.

        The same for all rules on a signal with the same traffic gating, so built once a cycle.
        """
        key = (rule.signal, rule.requires_traffic)
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

    def _trend(
        self, rule: Rule, cycle: _Cycle, at: float | None = None
    ) -> tuple[Trend, BoolArray, FloatArray]:
        """The fit at ``at`` (default now), whether the window holds enough for it, coverage."""
        end = cycle.now if at is None else at
        window = self._window(cycle, rule.window_s, at)
        values, usable = self._samples(rule, cycle, window)
        trend = theil_sen(np.where(usable, values, np.nan), window.times, end - rule.window_s, end)
        counts = np.count_nonzero(usable, axis=1)
        needed = max(MIN_SAMPLES, math.ceil(MIN_COVERAGE * rule.window_s / cycle.step))
        enough = (counts >= needed) & (trend.buckets >= GROWTH_MIN_BUCKETS)
        coverage = counts / max(rule.window_s / cycle.step, 1.0)
        return trend, enough, coverage

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
        headroom = limits - trend.level
        needed = headroom / rule.time_to_limit_s * 3600.0
        with np.errstate(divide="ignore", invalid="ignore"):
            left = np.where(slope > 0, headroom / slope * 3600.0, np.inf)
        left = np.where(known, left, np.nan)
        by_limit = enough & known & (slope > 0) & (left <= rule.time_to_limit_s)
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
        since = np.where(condition & eligible, np.where(np.isnan(since), now, since), np.nan)
        memory.since[:rows] = since
        enter = condition & eligible & (now - since >= rule.sustain_s)
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
        trend, enough, coverage = self._trend(rule, cycle)
        limits = self._limits(rule, rows)
        slope, condition, by_limit, needed, left = self._growth_condition(
            rule, trend, enough, limits
        )
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
        holds_since = np.full(rows, np.nan)
        unbroken = backfilled.copy()
        for at in instants[::-1]:
            trend, enough, _ = self._trend(rule, cycle, float(at))
            _, condition, _, _, _ = self._growth_condition(rule, trend, enough, limits)
            condition &= float(at) >= cycle.warm_end
            unbroken &= condition
            holds_since[unbroken] = at
        memory.since[:rows] = np.where(
            backfilled & ~np.isnan(holds_since), holds_since, memory.since[:rows]
        )

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
