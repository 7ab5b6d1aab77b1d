"""The vectorised statistics the rules rest on."""

from __future__ import annotations

import numpy as np
import pytest

from infercycle.health.robust import lower_envelope, nanmedian_last, nanquantile_last, theil_sen


@pytest.mark.parametrize("quantile", [0.0, 0.25, 0.5, 0.9, 1.0])
def test_nanquantile_matches_numpy(quantile: float) -> None:
    rng = np.random.default_rng(7)
    values = rng.normal(size=(50, 13))
    values[rng.random(values.shape) < 0.3] = np.nan
    values[3] = np.nan
    expected = np.array(
        [np.nanquantile(row, quantile) if not np.isnan(row).all() else np.nan for row in values]
    )
    np.testing.assert_allclose(nanquantile_last(values, quantile), expected)


def test_nanmedian_of_many_short_rows_and_empty_ones() -> None:
    grouped = np.array(
        [[[1.0, 5.0, np.nan], [np.nan, np.nan, np.nan]], [[2.0, 4.0, 9.0], [3.0, np.nan, np.nan]]]
    )
    np.testing.assert_allclose(nanmedian_last(grouped), [[3.0, np.nan], [4.0, 3.0]])
    assert nanmedian_last(np.empty((4, 0))).shape == (4,)


def test_theil_sen_finds_the_slope_through_spikes() -> None:
    times = np.arange(0.0, 3600.0, 15.0)
    slope = 2.0
    values = np.vstack([slope * times + 100.0, slope * times + 100.0, np.full_like(times, 7.0)])
    values[1, ::11] += 50_000.0  # spikes every 11th sample
    trend = theil_sen(values, times, 0.0, 3600.0)
    np.testing.assert_allclose(trend.slope[:2], slope, rtol=0.01)
    np.testing.assert_allclose(trend.supported[:2], slope, rtol=0.05)
    assert trend.slope[2] == 0.0
    np.testing.assert_allclose(trend.level[0], slope * 3600 + 100.0, rtol=0.01)
    assert list(trend.buckets) == [12, 12, 12]


def test_a_step_or_a_sawtooth_is_not_a_supported_trend() -> None:
    times = np.arange(0.0, 3600.0, 15.0)
    step = np.where(times > 1700, 1000.0, 0.0)
    sawtooth = 800.0 * ((times / 420.0) % 1.0)
    trend = theil_sen(np.vstack([step, sawtooth]), times, 0.0, 3600.0)
    assert trend.slope[0] > 0  # the plain Theil-Sen slope sees the step ...
    assert trend.supported[0] <= 0.01  # ... the supported slope does not
    assert trend.supported[1] < 0.05  # the teeth rise at 1.9/s, the supported slope stays flat


def test_the_lower_envelope_of_a_sawtooth_is_flat_and_a_leak_lifts_it() -> None:
    times = np.arange(0.0, 3600.0, 30.0)
    sawtooth = 2 * 2**30 * ((times / 420.0) % 1.0)
    leak = 2**30 * times / 3600.0  # 1 GiB/h
    values = np.vstack([sawtooth, sawtooth + leak])
    envelope, centers, troughs = lower_envelope(values, times, -1.0, 3600.0)
    assert troughs.all()  # a tooth every 7 minutes: every quarter of the window holds one
    trend = theil_sen(envelope, centers, centers[0] - 1, centers[-1] + 1, quantile=0.5)
    per_hour = trend.supported * 3600 / 2**30
    assert abs(per_hour[0]) < 0.05
    assert 0.9 < per_hour[1] < 1.1
    raw = theil_sen(values, times, -1.0, 3600.0)
    assert raw.supported[1] * 3600 / 2**30 < 0.9  # the raw samples hide the leak
