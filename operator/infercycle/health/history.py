"""Recent samples of every pod of one deployment, on a shared ring of cycle columns.

All pods of a deployment are sampled in the same evaluation cycle, so one column holds one
cycle: its time is stored once, each signal keeps a (pods x columns) float32 matrix with NaN for
"no sample". Pods sampled at the same moment line up in a column, which is what fleet
comparisons need, and a window is the same set of columns for every pod. The ring holds as many
columns as the longest window needs at the observed cycle step, so memory stays bounded however
long the operator runs.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np
import numpy.typing as npt

from infercycle.health.robust import BoolArray, FloatArray, IntArray

MERGE_TOLERANCE_S = 0.5
"""Observations closer than this to the newest cycle belong to it."""
DEFAULT_STEP_S = 15.0
"""Cycle step assumed until a few cycles have been seen."""
MIN_COLUMNS = 32
MAX_COLUMNS = 2048
"""Hard bound on the ring: a cycle step under longest window / 2048 thins out the history."""
HEADROOM = 1.1
STEP_SAMPLE = 32
"""Recent cycle gaps the step estimate is the median of; it is refreshed that often."""

ValueMatrix = npt.NDArray[np.float32]


def columns_needed(history_s: float, step_s: float) -> int:
    wanted = math.ceil(history_s / max(step_s, 1e-3) * HEADROOM) + 4
    return int(min(max(wanted, MIN_COLUMNS), MAX_COLUMNS))


class CycleStore:
    """Samples per (signal, pod row, cycle column) for a fixed set of signals.

    ``data`` holds every signal in one (signals, rows, columns) float32 array so that a cycle
    is written with one assignment; ``values[name]`` is the view of one signal. ``last_time``
    and ``last_value`` keep, per signal and row, the newest sample with data.
    """

    def __init__(self, signals: Iterable[str], history_s: float, rows: int = 16) -> None:
        self.history_s = history_s
        self.capacity = columns_needed(history_s, DEFAULT_STEP_S)
        self.rows = max(rows, 1)
        self.times: FloatArray = np.full(self.capacity, np.nan)
        self.signals: tuple[str, ...] = ()
        self.data: npt.NDArray[np.float32] = np.full(
            (0, self.rows, self.capacity), np.nan, np.float32
        )
        self.newest_times: FloatArray = np.full((0, self.rows), np.nan)
        self.newest_values: FloatArray = np.full((0, self.rows), np.nan)
        self.index: dict[str, int] = {}
        self.values: dict[str, ValueMatrix] = {}
        self.last_time: dict[str, FloatArray] = {}
        self.last_value: dict[str, FloatArray] = {}
        self.dirty: BoolArray = np.zeros(self.capacity, dtype=bool)
        self.layout = 0
        """Bumped whenever columns move: anything cached per column must be rebuilt."""
        self._next = 0
        self._newest = -1
        self._appended = 0
        self._step: float | None = None
        self._order: IntArray | None = None
        self.set_signals(signals)

    # -- shape ------------------------------------------------------------------------------

    def _views(self) -> None:
        self.index = {name: index for index, name in enumerate(self.signals)}
        self.values = {name: self.data[index] for index, name in enumerate(self.signals)}
        self.last_time = {name: self.newest_times[i] for i, name in enumerate(self.signals)}
        self.last_value = {name: self.newest_values[i] for i, name in enumerate(self.signals)}

    def set_signals(self, signals: Iterable[str]) -> None:
        wanted = tuple(dict.fromkeys(signals))
        data = np.full((len(wanted), self.rows, self.capacity), np.nan, dtype=np.float32)
        times = np.full((len(wanted), self.rows), np.nan)
        values = np.full((len(wanted), self.rows), np.nan)
        for index, name in enumerate(wanted):
            if name in self.values:
                data[index] = self.values[name]
                times[index] = self.last_time[name]
                values[index] = self.last_value[name]
        self.signals, self.data = wanted, data
        self.newest_times, self.newest_values = times, values
        self._views()

    def ensure_rows(self, rows: int) -> None:
        if rows <= self.rows:
            return
        grown = max(rows, self.rows + self.rows // 4 + 16)
        data = np.full((len(self.signals), grown, self.capacity), np.nan, dtype=np.float32)
        data[:, : self.rows] = self.data
        times = np.full((len(self.signals), grown), np.nan)
        times[:, : self.rows] = self.newest_times
        values = np.full((len(self.signals), grown), np.nan)
        values[:, : self.rows] = self.newest_values
        self.data, self.newest_times, self.newest_values = data, times, values
        self.rows = grown
        self._views()

    def clear_row(self, row: int) -> None:
        self.data[:, row] = np.nan
        self.newest_times[:, row] = np.nan
        self.newest_values[:, row] = np.nan

    def write_cycle(self, column: int, rows: IntArray, t: float, table: FloatArray) -> None:
        """One cycle's samples: ``table`` is (rows, signals) with NaN for no data."""
        usable = ~np.isnan(table.T)
        self.data[:, rows, column] = table.T
        seen = self.newest_times[:, rows]
        newer = usable & ~(seen > t)
        self.newest_times[:, rows] = np.where(newer, t, seen)
        self.newest_values[:, rows] = np.where(newer, table.T, self.newest_values[:, rows])
        self.dirty[column] = True

    def set_history(self, history_s: float) -> None:
        self.history_s = history_s
        self._fit_capacity()

    # -- columns ----------------------------------------------------------------------------

    @property
    def newest_time(self) -> float:
        return float(self.times[self._newest]) if self._newest >= 0 else math.nan

    @property
    def newest_column(self) -> int:
        return self._newest

    def step(self) -> float:
        """The usual time between cycles: the median gap of the recent columns."""
        if self._step is None:
            times = np.sort(self.times[~np.isnan(self.times)])[-(STEP_SAMPLE + 1) :]
            gaps = np.diff(times)
            gaps = gaps[gaps > MERGE_TOLERANCE_S]
            self._step = float(np.median(gaps)) if len(gaps) else DEFAULT_STEP_S
        return self._step

    def column_for(self, t: float) -> int:
        """The column of the cycle at ``t``, appended when ``t`` starts a new cycle.

        -1 when ``t`` is older than everything the ring keeps.
        """
        newest = self._newest
        if newest >= 0:
            newest_t = self.times[newest]
            if abs(t - newest_t) <= MERGE_TOLERANCE_S:
                return newest
            if t < newest_t:
                return int(self.columns_for(np.array([t]), MERGE_TOLERANCE_S)[0])
        self._append(t)
        return self._newest

    def columns_for(self, times: FloatArray, tolerance: float) -> IntArray:
        """Columns for many sample times at once (backfill): the nearest cycle within
        ``tolerance``, else a new column slotted in by time. -1 for times too old to keep."""
        columns = self._match(times, tolerance)
        missing = columns == -1
        if missing.any():
            self._insert(np.unique(times[missing]))
            columns = self._match(times, tolerance)
        return columns

    def window(self, start: float, end: float) -> IntArray:
        """Columns with ``start < time <= end``, oldest first."""
        times = self.times
        with np.errstate(invalid="ignore"):
            inside = np.flatnonzero((times > start) & (times <= end))
        return inside[np.argsort(times[inside], kind="stable")]

    def _append(self, t: float) -> None:
        column = self._next
        self.data[:, :, column] = np.nan
        self.times[column] = t
        self.dirty[column] = True
        self._order = None
        self._newest = column
        self._next = (column + 1) % self.capacity
        self._appended += 1
        if self._appended <= STEP_SAMPLE or self._appended % STEP_SAMPLE == 0:
            self._step = None
        if self._appended % 32 == 0:
            self._fit_capacity()

    def _sorted_columns(self) -> IntArray:
        if self._order is None:
            known = np.flatnonzero(~np.isnan(self.times))
            self._order = known[np.argsort(self.times[known])]
        return self._order

    def _match(self, times: FloatArray, tolerance: float) -> IntArray:
        order = self._sorted_columns()
        result = np.full(len(times), -1, dtype=np.intp)
        if len(order) == 0:
            return result
        sorted_times = self.times[order]
        right = np.clip(np.searchsorted(sorted_times, times), 0, len(order) - 1)
        left = np.clip(right - 1, 0, len(order) - 1)
        pick_left = np.abs(sorted_times[left] - times) <= np.abs(sorted_times[right] - times)
        nearest = np.where(pick_left, left, right)
        close = np.abs(sorted_times[nearest] - times) <= tolerance
        result[close] = order[nearest[close]]
        full = len(order) >= self.capacity
        if full:
            too_old = (times < sorted_times[0] - tolerance) & ~close
            result[too_old] = -2
        return result

    def _insert(self, new_times: FloatArray) -> None:
        known = self.times[~np.isnan(self.times)]
        merged = np.union1d(known, new_times)
        self._relayout(merged[-self.capacity :], self.capacity)

    def _fit_capacity(self) -> None:
        wanted = columns_needed(self.history_s, self.step())
        if wanted > self.capacity or wanted < self.capacity // 2:
            known = np.sort(self.times[~np.isnan(self.times)])
            self._relayout(known[-wanted:], wanted)

    def _relayout(self, kept_times: FloatArray, capacity: int) -> None:
        """Rewrite every matrix with the columns at ``kept_times`` (sorted), oldest first."""
        old_times = self.times
        known = np.flatnonzero(~np.isnan(old_times))
        sources, targets = known[:0], known[:0]
        if len(kept_times):
            position = np.clip(
                np.searchsorted(kept_times, old_times[known]), 0, len(kept_times) - 1
            )
            keep = kept_times[position] == old_times[known]
            sources, targets = known[keep], position[keep]
        data = np.full((len(self.signals), self.rows, capacity), np.nan, dtype=np.float32)
        data[:, :, targets] = self.data[:, :, sources]
        self.data = data
        self._views()
        self.times = np.full(capacity, np.nan)
        self.times[: len(kept_times)] = kept_times
        self.dirty = np.zeros(capacity, dtype=bool)
        self.dirty[: len(kept_times)] = True
        self.capacity = capacity
        self._newest = len(kept_times) - 1
        self._next = len(kept_times) % capacity
        self._step = None
        self._order = None
        self.layout += 1
