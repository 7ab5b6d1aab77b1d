"""The fast part of the fault-injection suite (``make faults`` runs all of it and writes
docs/reliability.md): each fault class on a few of its cases, and the suite's own counting
shown to catch the harm it looks for."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.faults import agent, prometheus, recycle
from tests.faults.outcome import FaultResult
from tests.unit.agent.harness import can_mount
from tests.unit.cycle.fakes import SERVING

SCENARIOS = {scenario.name: scenario for scenario in recycle.SCENARIOS}


def unharmed(result: FaultResult) -> None:
    assert result.runs > 0
    assert result.harmed() == 0, result.findings


@pytest.mark.parametrize(
    "name",
    [
        "InPlace",
        "Recreate",
        "InPlace, restart answer lost",
        "InPlace, restart answer lost, counted late",
        "Recreate, eviction refused",
    ],
)
async def test_the_operator_killed_at_every_call_of_a_recycle_keeps_every_guard(name: str) -> None:
    result = await recycle.kill_everywhere((SCENARIOS[name],))
    unharmed(result)
    assert result.faults > 100  # every port call of the walk, before and after it


async def test_two_racing_replicas_never_recycle_two_pods_or_one_pod_twice() -> None:
    unharmed(await recycle.race(seeds=4))


async def test_the_guards_count_a_second_restart_and_a_second_pod_out_of_service() -> None:
    kube, agents, guards = recycle.new_world(SCENARIOS["InPlace"])
    ports = recycle.Ports(kube, agents, guards)
    for name in ("llama-0", "llama-0", "llama-1"):
        counted = ports({}, f"ip-of-{name}")
        assert counted is not None
        await counted.restart()
    kube.pods["llama-0"]["metadata"]["labels"][SERVING] = "false"
    ports.set_serving("serving", "llama-1", "uid-1", False)
    result = recycle.judge("double", kube, guards, finished=True, fault=0)
    assert result.restarted_twice == 1
    assert result.beyond_guards == 2  # two pods out at once, two pods disrupted
    assert result.left_drained == 2


async def test_a_walk_that_never_ends_is_counted_as_harm() -> None:
    kube, _, guards = recycle.new_world(SCENARIOS["InPlace"])
    kube.body["status"] = {"operation": {"pod": "llama-0"}}
    result = recycle.judge("stuck", kube, guards, finished=False, fault=0)
    assert result.harmed() == 1
    assert "never finished" in result.findings[0]


@pytest.mark.parametrize(
    "answer", [a for a in prometheus.ANSWERS if not a.delay_s], ids=lambda a: a.name
)
async def test_prometheus_answering_garbage_leaves_metrics_unavailable_and_acts_on_nothing(
    answer: prometheus.Answer,
) -> None:
    with prometheus.serving(answer) as url:
        result = await prometheus.cycles_against(url, answer.name)
    unharmed(result)
    assert "PrometheusError" in result.findings[0] or "Unreachable" in result.findings[0]


async def test_prometheus_down_is_reported_unreachable() -> None:
    result = await prometheus.cycles_against(prometheus.closed_port_url(), "down")
    unharmed(result)
    assert "PrometheusUnreachable" in result.findings[0]


@pytest.mark.parametrize(
    "misbehaviour",
    [m for m in agent.MISBEHAVIOURS if not m.hang] + [agent.MISBEHAVIOURS[0]],
    ids=lambda m: m.name,
)
async def test_a_misbehaving_agent_gives_a_typed_error_in_time_and_one_eviction(
    misbehaviour: agent.Misbehaviour,
) -> None:
    result = await agent.misbehaving_agent(misbehaviour)
    unharmed(result)
    assert "Escalated" in result.findings[0]


@pytest.mark.timeout(90)
async def test_an_agent_killed_mid_checkpoint_loses_no_acknowledged_session(
    tmp_path: Path,
) -> None:
    result = await agent.killed_mid_checkpoint(tmp_path, delay_s=0.02)
    assert result.sessions_lost == 0, result.findings
    assert "0 staging directories left" in result.findings[0]


@pytest.mark.timeout(90)
async def test_a_full_session_volume_refuses_the_checkpoint_and_keeps_the_previous_one(
    tmp_path: Path,
) -> None:
    if not can_mount():
        pytest.skip("needs root with unshare to mount a small tmpfs")
    result = await agent.volume_full(tmp_path)
    assert result.sessions_lost == 0, result.findings
    assert "507 insufficient_storage" in result.findings[0]


def test_lost_sessions_count_what_the_acknowledged_checkpoint_had_and_any_mix() -> None:
    first, second = {"a", "b"}, {"c", "d", "e"}
    assert agent.lost_or_mixed(0, [first, second], first) == 0
    assert agent.lost_or_mixed(0, [first, second], second) == 0  # newer, not yet acknowledged
    assert agent.lost_or_mixed(1, [first, second], first) == 3  # rolled back past the answer
    assert agent.lost_or_mixed(0, [first, second], {"a", "c"}) == 2  # a partial one used
