"""The report-shaped pods the quality benchmark uses, and the engine on a few of them."""

from __future__ import annotations

import numpy as np
import pytest

from infercycle.api.resolver import resolve_policy
from infercycle_sim.reported import ReportedPod, histogram_p99, run_reported


def test_histogram_p99_interpolates_within_the_bucket_like_prometheus() -> None:
    latencies = np.full(100, 3.0)  # all in the (2.5, 5.0] bucket
    assert histogram_p99(latencies) == pytest.approx(2.5 + 2.5 * 0.99)
    assert histogram_p99(np.array([])) is None
    assert histogram_p99(np.full(10, 9000.0)) == 7680.0  # past the last bound


def test_a_leaking_pod_is_oom_killed_at_its_limit_and_restarts() -> None:
    pod = ReportedPod("fast_oom_leak", 5, {"onset": 600.0})
    kills = []
    for step in range(4 * 120):
        signals, status = pod.sample(step * 30.0)
        assert signals["memory"] is not None
        assert signals["memory_limit"] is not None
        assert signals["memory"] < signals["memory_limit"]
        if status.count > len(kills):
            kills.append(status.last_reason)
    assert len(kills) >= 2
    assert set(kills) == {"OOMKilled"}
    assert pod.limit_reached is not None


def test_hung_engines_are_flagged_within_five_minutes_and_healthy_pods_never() -> None:
    outcomes = run_reported("hung_engine", 1, resolve_policy().health)
    for pod in outcomes:
        if pod.degrading:
            assert pod.onset_s is not None
            assert pod.first_degraded_s is not None
            assert 0 < pod.first_degraded_s - pod.onset_s <= 300
            assert any(reason.startswith("engine-stall:") for reason in pod.reasons)
        else:
            assert pod.first_degraded_s is None, pod.reasons


def test_a_fleet_at_the_knee_of_its_load_curve_condemns_no_pod() -> None:
    outcomes = run_reported("knee_load", 2, resolve_policy().health, hours=8.0)
    assert [pod.reasons for pod in outcomes if pod.first_degraded_s is not None] == []
