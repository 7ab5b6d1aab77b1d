"""The built-in policy judging fleets of simulated pods."""

from __future__ import annotations

import math

import pytest

from infercycle.api.resolver import resolve_policy
from infercycle_sim.scenarios import (
    DEGRADING_SCENARIOS,
    HEALTHY_SCENARIOS,
    SCENARIOS,
)
from tests.tracegen import make_fleet, run_fleet

POLICY = resolve_policy().health
STEP_S = 60.0
"""Cycle step of the fleet runs: coarser than live, still several samples per window."""

# Time compression keeps the slow creeps inside a few simulated hours.
FAST = {
    "leak": {"onset": 1800.0},
    "gpu_creep": {"onset": 1800.0},
    "latency_creep": {"compression": 4.0},
    "superlinear": {"compression": 3.0},
    "error_creep": {"compression": 3.0},
}


# -- the built-in policy on fleets ------------------------------------------------------------


@pytest.mark.parametrize("scenario", DEGRADING_SCENARIOS)
def test_every_degrading_scenario_is_flagged(scenario: str) -> None:
    fleet = make_fleet(scenario, pods=8, degrading=2, seed=1, params=FAST[scenario])
    run = run_fleet(fleet, POLICY, hours=6, step_s=STEP_S)
    for pod in fleet.pods:
        first = run.first_degraded.get(pod.name)
        if pod.model.degrading:
            assert first is not None, f"{pod.name} ({scenario}) was never flagged"
            onset = pod.start_s + (pod.model.onset_s or 0.0)
            assert first > onset, f"{pod.name} flagged before its degradation began"
            assert run.reasons[pod.name]
        else:
            assert first is None, f"healthy {pod.name} flagged: {run.reasons[pod.name]}"


@pytest.mark.parametrize("scenario", HEALTHY_SCENARIOS)
def test_no_healthy_scenario_is_ever_flagged(scenario: str) -> None:
    fleet = make_fleet(scenario, pods=8, seed=2)
    run = run_fleet(fleet, POLICY, hours=6, step_s=STEP_S)
    assert run.first_degraded == {}, run.reasons


def test_a_fleet_wide_surge_is_not_a_pod_fault() -> None:
    fleet = make_fleet("surge", pods=8, seed=3)
    peak = [pod.model.sample(3 * 3600 - pod.start_s, fleet.load(3 * 3600)) for pod in fleet.pods]
    calm = [pod.model.sample(3600 - pod.start_s, fleet.load(3600)) for pod in fleet.pods]
    rise = [
        (p["latency_p99"] or math.nan) / (c["latency_p99"] or math.nan)
        for p, c in zip(peak, calm, strict=True)
    ]
    assert min(rise) > 1.25, "the surge must really load every pod"
    run = run_fleet(fleet, POLICY, hours=7, step_s=STEP_S)
    assert run.first_degraded == {}, run.reasons


@pytest.mark.slow
@pytest.mark.parametrize("scenario", SCENARIOS)
@pytest.mark.parametrize("seed", [11, 12, 13])
def test_scenarios_over_more_seeds(scenario: str, seed: int) -> None:
    fleet = make_fleet(scenario, pods=8, degrading=2, seed=seed, params=FAST.get(scenario))
    run = run_fleet(fleet, POLICY, hours=8, step_s=30)
    flagged = set(run.first_degraded)
    degrading = {pod.name for pod in fleet.pods if pod.model.degrading}
    assert flagged == degrading, run.reasons
