"""The simulated pods: pure functions of age, vLLM-like magnitudes, cured by a restart."""

from __future__ import annotations

import itertools

import pytest

from infercycle_sim.scenarios import (
    DEGRADING_SCENARIOS,
    HEALTHY_SCENARIOS,
    SCENARIOS,
    SIGNALS,
    fleet_load,
    make_pod_model,
)

GIB = float(2**30)


def test_scenario_set() -> None:
    assert set(SCENARIOS) == set(HEALTHY_SCENARIOS) | set(DEGRADING_SCENARIOS)
    assert len(SCENARIOS) == 13


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_samples_are_a_pure_function_of_age(scenario: str) -> None:
    model = make_pod_model(scenario, 11)
    ages = [0.0, 45.0, 300.0, 7200.0, 30 * 3600.0]
    forward = [model.sample(age) for age in ages]
    backward = [model.sample(age) for age in reversed(ages)][::-1]
    again = make_pod_model(scenario, 11)
    assert forward == backward == [again.sample(age) for age in ages]
    assert all(set(sample) == set(SIGNALS) for sample in forward)
    assert forward != [make_pod_model(scenario, 12).sample(age) for age in ages]


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_magnitudes_look_like_a_vllm_pod(scenario: str) -> None:
    model = make_pod_model(scenario, 3)
    loading = model.sample(20.0)
    assert loading["latency_p99"] is None
    assert loading["request_rate"] == 0.0
    settled = next(
        sample
        for sample in (model.sample(1800.0 + 15 * n) for n in range(100))
        if None not in (sample["memory"], sample["request_rate"], sample["cpu"])
    )
    memory, gpu = settled["memory"], settled["gpu_memory"]
    assert memory is not None
    assert gpu is not None
    assert 9 * GIB < memory < 22 * GIB
    assert 68 * GIB < gpu < 80 * GIB
    if scenario != "idle":
        latency = settled["latency_p99"]
        assert latency is None or 0.05 < latency < 0.7
        assert (settled["request_rate"] or 0) > 1.0
    else:
        assert settled["latency_p99"] is None
        assert settled["request_rate"] == 0.0


@pytest.mark.parametrize("scenario", DEGRADING_SCENARIOS)
def test_degradation_is_cured_by_a_restart(scenario: str) -> None:
    model = make_pod_model(scenario, 5)
    assert model.degrading
    assert model.onset_s is not None
    healthy = make_pod_model("healthy", 5)
    assert not healthy.degrading
    assert healthy.onset_s is None
    young = model.sample(1200.0)
    old = model.sample(40 * 3600.0)
    assert young != old
    assert model.sample(1200.0) == young  # age back to 1200 s: the same young pod


def test_the_published_latency_creep() -> None:
    model = make_pod_model("latency_creep", 2)
    hours = [model.sample(h * 3600.0)["latency_p99"] for h in (1, 24, 48)]
    means = []
    for h in (1, 24, 48):
        samples = [model.sample(h * 3600.0 + 15 * n)["latency_p99"] for n in range(40)]
        means.append(sum(s for s in samples if s is not None) / 40)
    assert all(value is not None for value in hours)
    assert means[1] / means[0] == pytest.approx(198 / 85, rel=0.1)
    assert means[2] / means[0] == pytest.approx(320 / 85, rel=0.1)
    fast = make_pod_model("latency_creep", 2, {"compression": 8.0})
    assert fast.onset_s == 450.0


def test_parameters_are_checked() -> None:
    leak = make_pod_model("leak", 1, {"rate": 1000.0, "onset": 0.0})
    assert leak.onset_s == 0.0
    growth = (leak.sample(7200.0)["memory"] or 0) - (leak.sample(3600.0)["memory"] or 0)
    assert growth == pytest.approx(1000 * 2**20, rel=0.2)
    with pytest.raises(ValueError, match="unknown scenario"):
        make_pod_model("melting", 1)
    with pytest.raises(ValueError, match="takes no parameter colour"):
        make_pod_model("leak", 1, {"colour": 1.0})


def test_a_sawtooth_takes_its_period_and_amplitude() -> None:
    """The memory climbs ``saw_amplitude`` over each ``saw_period`` and falls back once."""
    saw = make_pod_model("gc_sawtooth", 3, {"saw_period": 450.0, "saw_amplitude": 2 * GIB})
    memory = [saw.sample(7200.0 + t)["memory"] or 0.0 for t in range(0, 900, 5)]
    steps = [later - earlier for earlier, later in itertools.pairwise(memory)]
    falls = [step for step in steps if step < -GIB]
    assert len(falls) == 2
    assert all(step == pytest.approx(-2 * GIB, rel=0.1) for step in falls)
    assert max(memory) - min(memory) == pytest.approx(2 * GIB, rel=0.1)


def test_surge_load_profile() -> None:
    assert fleet_load("surge", 0.0) == 1.0
    assert fleet_load("surge", 3 * 3600.0) == 2.5
    assert fleet_load("healthy", 3 * 3600.0) == 1.0
    model = make_pod_model("surge", 4)
    calm, busy = model.sample(3 * 3600.0, 1.0), model.sample(3 * 3600.0, 2.5)
    assert (busy["request_rate"] or 0) > 2 * (calm["request_rate"] or 0)
    assert (busy["latency_p99"] or 0) > (calm["latency_p99"] or 0)
    assert (busy["cpu"] or 0) > (calm["cpu"] or 0)
