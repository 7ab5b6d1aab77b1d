"""The fleet cycle as a whole. A standby replica (one that does not hold the leader Lease) runs
the cycle up to evaluation: its engines see every sample, and it writes nothing, posts nothing and
acts on nothing. Deployments are handled side by side: one stuck on a slow call holds up no
other."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Mapping
from typing import Any

from infercycle.cycle.controller import FleetController
from infercycle.prom.reader import FleetSnapshot, QueryResult
from infercycle.settings import OperatorSettings

from .fakes import NAME, NAMESPACE, Clock, FakeAgents, FakeKube, deployment, pod


class StaticPrometheus:
    """Answers every query with the same value for every pod, sampled just now."""

    def __init__(self, clock: Clock, pods: list[str]) -> None:
        self.clock = clock
        self.refs = [(NAMESPACE, name) for name in pods]
        self.snapshots = 0

    async def snapshot(self, queries: Mapping[str, str]) -> FleetSnapshot:
        self.snapshots += 1
        now = self.clock()
        values = dict.fromkeys(self.refs, 1.0)
        snapshot = FleetSnapshot(
            at=now, sample_time=dict.fromkeys(self.refs, now - 1), queries=len(queries) + 1
        )
        for label, promql in queries.items():
            snapshot.signals[label] = values
            snapshot.results[label] = QueryResult(promql, 0.01, values)
        return snapshot


def _controller(leading: list[bool]) -> tuple[FleetController, FakeKube, Clock]:
    clock = Clock()
    kube = FakeKube(
        deployment(), {"llama-0": pod("llama-0", "u0"), "llama-1": pod("llama-1", "u1")}
    )
    prometheus = StaticPrometheus(clock, list(kube.pods))
    controller = FleetController(
        OperatorSettings(),
        kube,  # type: ignore[arg-type]
        prometheus,  # type: ignore[arg-type]
        agents=FakeAgents(kube),
        clock=clock,
    )
    controller.may_act = lambda: leading[0]
    controller.registry.deployments[(NAMESPACE, NAME)] = kube.body
    for raw in kube.pods.values():
        controller.registry.put_pod(raw, deleted=False)
    return controller, kube, clock


def _samples(controller: FleetController) -> Any:
    state = controller.states[(NAMESPACE, NAME)]
    return state.engine.evaluate(controller.clock())


async def test_a_standby_evaluates_every_cycle_and_writes_nothing() -> None:
    leading = [False]
    controller, kube, clock = _controller(leading)
    for _ in range(3):
        await controller.run_cycle()
        clock.advance(30)

    assert kube.status_writes == 0
    assert kube.events == []
    assert kube.calls == []  # no drain, no eviction
    assert (NAMESPACE, NAME) in controller.states  # its engine is there, and warm:
    verdicts = _samples(controller)
    assert {key.name for key in verdicts} == {"llama-0", "llama-1"}

    leading[0] = True  # it takes the Lease: the next cycle writes status
    await controller.run_cycle()
    assert kube.status_writes >= 1


async def test_one_deployment_stuck_on_a_slow_call_does_not_hold_up_the_others() -> None:
    controller, _kube, _clock = _controller([True])
    for n in range(3):
        other = copy.deepcopy(controller.registry.deployments[(NAMESPACE, NAME)])
        other["metadata"].update(name=f"other-{n}", uid=f"other-uid-{n}")
        controller.registry.deployments[(NAMESPACE, f"other-{n}")] = other
    stuck = asyncio.Event()
    handled: list[str] = []

    async def handle(context: Any, *_args: Any) -> None:
        if context.key[1] == NAME:
            await stuck.wait()  # an agent call that takes its whole timeout
        handled.append(context.key[1])

    controller._handle = handle  # type: ignore[method-assign]
    cycle = asyncio.create_task(controller.run_cycle())
    for _ in range(100):
        if len(handled) == 3:
            break
        await asyncio.sleep(0.01)
    assert sorted(handled) == ["other-0", "other-1", "other-2"]
    assert not cycle.done()  # the cycle itself still waits for the stuck one
    stuck.set()
    await asyncio.wait_for(cycle, 5)
    assert handled[-1] == NAME
