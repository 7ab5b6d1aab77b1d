"""Robust statistics over many pods at once: NaN-aware medians and a bucketed Theil-Sen slope.

Every function works on 2-D arrays with one row per pod, so that one call judges the whole
fleet; NaN marks a missing sample.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
AnyFloatArray = npt.NDArray[np.floating[Any]]
BoolArray = npt.NDArray[np.bool_]
IntArray = npt.NDArray[np.intp]

GROWTH_BUCKETS = 12
"""Buckets a growth window is cut into; each contributes its median to the fit."""
MIN_BUCKETS_PER_HALF = 4
"""Buckets with data each half of a growth window needs before its slope counts."""


SLOPE_QUANTILE = 0.25
"""Which pairwise slope counts as the slope the data supports: the lower quartile, so that a
quarter of the bucket pairs may disagree (a step, a sawtooth drop) without raising it."""


SPREAD_QUANTILE = 0.95
"""Residual quantile taken as the reach of the samples above a fitted line: high enough for a
sawtooth's peaks, low enough that a rare spike does not count."""


def reach_above(
    values: AnyFloatArray, times: FloatArray, level: FloatArray, slope: FloatArray, end: float
) -> FloatArray:
    """How far each row's samples reach above its line (``level`` at ``end``, ``slope`` per
    second): the 95th percentile of the residuals, 0 or more, 0 without samples."""
    with np.errstate(invalid="ignore"):
        residuals = values - (level[:, None] + slope[:, None] * (times[None, :] - end))
    reach: FloatArray = np.nan_to_num(
        np.fmax(nanquantile_last(residuals, SPREAD_QUANTILE), 0.0), nan=0.0
    )
    return reach


def nanquantile_last(
    values: AnyFloatArray, quantile: float | FloatArray, counts: IntArray | None = None
) -> FloatArray:
    """Quantile along the last axis ignoring NaN (linear interpolation); NaN for empty rows.
    ``quantile`` is one number, or one per row of a 2-D ``values``.

    Sorting puts NaN last, so the valid values of a row are its first ``c``; picking by index is
    several times faster than ``np.nanquantile`` on many short rows.
    """
    shape = values.shape
    width = shape[-1]
    if width == 0:
        return np.full(shape[:-1], np.nan)
    flat = np.sort(values.reshape(-1, width), axis=-1)
    valid = np.count_nonzero(~np.isnan(flat), axis=-1) if counts is None else counts.reshape(-1)
    position = quantile * np.maximum(valid - 1, 0)
    low_index = np.floor(position).astype(np.intp)
    high_index = np.minimum(low_index + 1, np.maximum(valid - 1, 0))
    rows = np.arange(len(flat))
    low = flat[rows, low_index].astype(np.float64)
    high = flat[rows, high_index].astype(np.float64)
    result = low + (high - low) * (position - low_index)
    return np.where(valid > 0, result, np.nan).reshape(shape[:-1])


def nanmedian_last(values: AnyFloatArray, counts: IntArray | None = None) -> FloatArray:
    """Median along the last axis ignoring NaN; NaN where a row has no value."""
    return nanquantile_last(values, 0.5, counts)


@dataclass(frozen=True, slots=True)
class Trend:
    """A robust linear fit per pod over one window (slopes per second, NaN when unknown)."""

    slope: FloatArray
    """Theil-Sen slope (median of pairwise bucket slopes) over the whole window."""
    supported: FloatArray
    """The lower quartile of pairwise slopes over the whole window and over each half alone,
    whichever is smallest: a steady trend shows in all three; a step, a self-healing bump or a
    sawtooth leaves at least one of them flat or negative."""
    level: FloatArray
    """The fitted value at the end of the window."""
    buckets: IntArray
    """Buckets with at least one sample."""
    spread: FloatArray | None = None
    """How far the samples reach above the fitted line (0 or more), where someone measured it:
    a sawtooth's peaks hit a limit before its middle does."""


@cache
def _pairs(buckets: int) -> tuple[IntArray, IntArray, IntArray, IntArray]:
    """Index pairs (i < j) over all buckets, and which pairs lie within the first/second half."""
    first, second = np.triu_indices(buckets, k=1)
    half = buckets // 2
    in_first = np.flatnonzero(second < half)
    in_second = np.flatnonzero(first >= half)
    return first.astype(np.intp), second.astype(np.intp), in_first, in_second


def bucket_plan(times: FloatArray, start: float, end: float, buckets: int) -> IntArray:
    """Column positions of each bucket, padded with ``len(times)`` (a NaN column) to one width.

    ``times`` are the window's column times; bucket ``b`` covers
    ``[start + b * width, start + (b + 1) * width)``.
    """
    width = (end - start) / buckets
    index = np.clip(((times - start) // width).astype(np.intp), 0, buckets - 1)
    members = [np.flatnonzero(index == bucket) for bucket in range(buckets)]
    widest = max((len(m) for m in members), default=0) or 1
    plan = np.full((buckets, widest), len(times), dtype=np.intp)
    for bucket, member in enumerate(members):
        plan[bucket, : len(member)] = member
    return plan


def theil_sen(
    values: AnyFloatArray,
    times: FloatArray,
    start: float,
    end: float,
    *,
    buckets: int = GROWTH_BUCKETS,
    quantile: float | FloatArray = SLOPE_QUANTILE,
) -> Trend:
    """Theil-Sen fit over per-bucket medians, for every row of ``values`` at once.

    ``values`` is (pods, columns) with NaN for missing samples, ``times`` the column times.
    Bucket medians shrug off spikes; the pairwise slopes shrug off a bad bucket. ``quantile``
    is the pairwise slope ``supported`` takes over the window and over each half (one number,
    or one per row).
    """
    rows = values.shape[0]
    plan = bucket_plan(times, start, end, buckets)
    padded = np.concatenate([values, np.full((rows, 1), np.nan, dtype=values.dtype)], axis=1)
    grouped = padded[:, plan]
    counts = np.count_nonzero(~np.isnan(grouped), axis=-1)
    medians = nanmedian_last(grouped, counts)
    padded_times = np.concatenate([times, [0.0]])
    present = ~np.isnan(grouped)
    time_sums = np.where(present, padded_times[plan][None, :, :], 0.0).sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        centers = np.where(counts > 0, time_sums / counts, np.nan)
    first, second, in_first, in_second = _pairs(buckets)
    with np.errstate(invalid="ignore", divide="ignore"):
        slopes = (medians[:, second] - medians[:, first]) / (centers[:, second] - centers[:, first])
    slope = nanmedian_last(slopes)
    half = buckets // 2
    have_first = np.count_nonzero(counts[:, :half], axis=1) >= MIN_BUCKETS_PER_HALF
    have_second = np.count_nonzero(counts[:, half:], axis=1) >= MIN_BUCKETS_PER_HALF
    whole = nanquantile_last(slopes, quantile)
    first_half = np.where(have_first, nanquantile_last(slopes[:, in_first], quantile), np.nan)
    second_half = np.where(have_second, nanquantile_last(slopes[:, in_second], quantile), np.nan)
    level = nanmedian_last(medians + slope[:, None] * (end - centers))
    return Trend(
        slope=slope,
        supported=np.minimum(np.minimum(whole, first_half), second_half),
        level=level,
        buckets=np.count_nonzero(counts, axis=1),
    )


ENVELOPE_BUCKETS = 24
"""Fine buckets a window is cut into for its lower envelope."""
ENVELOPE_SPAN = 6
"""Fine buckets each envelope point is the minimum over (15 minutes of a 1 h window)."""


def lower_envelope(
    values: AnyFloatArray, times: FloatArray, start: float, end: float
) -> tuple[FloatArray, FloatArray, BoolArray]:
    """The running minimum of every row over a quarter of the window, as (rows, points)
    values and their times (the middle of each span), NaN where a span holds no sample; and
    per row whether the envelope follows troughs.

    A collector's sawtooth (allocate, then free) has its troughs at the live set: a leak lifts
    them, a healthy sawtooth leaves them flat, and a span longer than a tooth always holds one.
    A span shorter than a tooth holds part of a rising stretch instead, and its minimum is
    where that stretch began, which rises with it: a slow healthy cycle would read as a leak.
    So the envelope only follows troughs where every span holds a fall of at least half the
    largest fall of the window (the window holds several whole periods); a smooth series has no
    such falls to speak of, and its envelope is the series itself less its noise either way.
    """
    rows = values.shape[0]
    plan = bucket_plan(times, start, end, ENVELOPE_BUCKETS)
    padded = np.concatenate([values, np.full((rows, 1), np.nan, dtype=values.dtype)], axis=1)
    grouped = padded[:, plan]
    missing = np.isnan(grouped)
    minima = np.where(missing, np.inf, grouped).min(axis=-1)
    maxima = np.where(missing, -np.inf, grouped).max(axis=-1)
    width = (end - start) / ENVELOPE_BUCKETS
    points = ENVELOPE_BUCKETS - ENVELOPE_SPAN + 1
    rolled = minima[:, :points].copy()
    highest = maxima[:, :points].copy()
    fall = np.full((rows, points), -np.inf)
    for offset in range(1, ENVELOPE_SPAN):
        later = minima[:, offset : offset + points]
        # The highest sample of a bucket before this one, less the lowest of this one: the
        # largest fall within the span, to bucket resolution.
        fall = np.fmax(fall, highest - later)
        rolled = np.minimum(rolled, later)
        highest = np.maximum(highest, maxima[:, offset : offset + points])
    centers: FloatArray = start + width * (np.arange(points, dtype=np.float64) + ENVELOPE_SPAN / 2)
    envelope: FloatArray = np.where(np.isfinite(rolled), rolled, np.nan).astype(np.float64)
    held = np.isfinite(rolled)
    largest = np.where(held, fall, -np.inf).max(axis=1)
    with np.errstate(invalid="ignore"):
        falls = ~held | (fall >= 0.5 * largest[:, None])
    troughs: BoolArray = falls.all(axis=1) & (largest > 0)
    return envelope, centers, troughs
