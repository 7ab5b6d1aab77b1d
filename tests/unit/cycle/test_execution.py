"""The executor walks every move of the recycle machine against an in-memory API server: what
it persists before acting, what it performs, and what it does when a write loses a race, an
eviction is refused, an agent does not answer, or the pod disappears mid-recycle."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from infercycle.cycle import inputs
from infercycle.cycle.execution import Executor
from infercycle.cycle.reporting import Reporter
from infercycle.cycle.state import (
    DeploymentContext,
    DeploymentState,
    Evaluation,
    MetricsState,
    Registry,
)
from infercycle.health.engine import HealthEngine
from infercycle.recycle.fleet import PodState
from infercycle.recycle.planner import Candidate

from .fakes import NAME, NAMESPACE, SERVING, Clock, FakeAgents, FakeKube, deployment, pod

VICTIM = "llama-0"
HEALTHY = MetricsState(True, "Queried", "ok")


class World:
    """One deployment of two pods, the executor, and the fakes behind its ports."""

    def __init__(self, strategy: str = "InPlace", *, fallback: bool = True, **agent: Any) -> None:
        self.leading = True
        self.clock = Clock()
        self.kube = FakeKube(
            deployment(strategy, fallback=fallback),
            {VICTIM: pod(VICTIM, "uid-0"), "llama-1": pod("llama-1", "uid-1")},
        )
        self.agents = FakeAgents(self.kube, template=agent)
        self.executor = Executor(
            self.kube,
            self.agents,
            Reporter(self.kube, self.clock),
            lambda context, name: inputs.read_unit(self.kube, context, name),
            self.clock,
            may_act=lambda: self.leading,
        )
        self.state: DeploymentState | None = None

    def context(self) -> DeploymentContext:
        registry = Registry()
        registry.deployments[(NAMESPACE, NAME)] = self.kube.body
        for raw in self.kube.pods.values():
            registry.put_pod(raw, deleted=False)
        context = inputs.context_for(registry, (NAMESPACE, NAME), self.kube.read_deployment("", ""))
        assert context.policy is not None, context.error
        if self.state is None:
            self.state = DeploymentState(HealthEngine(context.policy.health), None)
        return context

    def evaluation(self, in_flight: float = 0, degraded: bool | None = None) -> Evaluation:
        del degraded  # the verifying step reads no verdict when the engine has none
        return Evaluation({}, HEALTHY, {VICTIM: in_flight})

    async def start(
        self,
        *,
        dry_run: bool = False,
        in_flight: float = 3,
        context: DeploymentContext | None = None,
    ) -> Any:
        """Start the recycle of the victim; ``context`` is the cycle's view (read now if none)."""
        context = context or self.context()
        assert self.state is not None
        victim = next(p for p in context.pods if p.name == VICTIM)
        candidate = Candidate(victim, ("memory-leak: growth 2Gi/h",))
        return await self.executor.start(
            context,
            self.state,
            self.evaluation(in_flight),
            candidate,
            dry_run=dry_run,
            now=self.clock(),
        )

    async def cycle(self, in_flight: float = 0) -> Any:
        context = self.context()
        assert self.state is not None
        return await self.executor.advance(context, self.state, self.evaluation(in_flight))

    async def start_drained(self) -> Any:
        """Start a recycle and run the cycle after the drain, when nothing is in flight."""
        await self.start(in_flight=0)
        self.clock.advance(5)
        return await self.cycle(in_flight=0)

    def step(self) -> str | None:
        operation = self.kube.operation
        return None if operation is None else str(operation["step"])

    def serving(self, name: str = VICTIM) -> bool:
        return self.kube.pods[name]["metadata"]["labels"][SERVING] == "true"


async def test_in_place_recycle_walks_every_step_and_touches_only_the_condemned_pod() -> None:
    world = World("InPlace")
    state = await world.start(in_flight=3)
    assert state.active
    assert world.step() == "Draining"
    assert not world.serving()
    assert world.kube.reasons()[:2] == ["RecycleStarted", "Draining"]

    world.clock.advance(5)
    state = await world.cycle(in_flight=3)
    assert "3 requests in flight" in state.message
    assert world.step() == "Draining"

    world.clock.advance(5)
    await world.cycle(in_flight=0)  # drained: checkpoint, then the restart, in one cycle
    agent = world.agents.agents[VICTIM]
    assert agent.checkpoints == 1
    assert agent.restarts == 1
    assert world.step() == "Restarting"
    assert world.kube.operation is not None
    assert world.kube.operation["checkpoint"]["id"] == "c1"

    world.kube.pods[VICTIM]["status"]["conditions"] = [{"type": "Ready", "status": "False"}]
    world.clock.advance(5)
    await world.cycle()
    assert world.step() == "WaitingReady"
    world.kube.make_ready(VICTIM)
    world.clock.advance(5)
    await world.cycle()
    assert world.step() == "Verifying"
    assert world.serving()

    world.clock.advance(121)
    state = await world.cycle()
    assert not state.active
    assert state.message.startswith("Succeeded for llama-0")
    assert world.kube.operation is None
    assert [record["result"] for record in world.kube.history] == ["Succeeded"]
    assert world.kube.pods[VICTIM]["metadata"]["uid"] == "uid-0"
    assert world.kube.pods["llama-1"]["status"]["containerStatuses"][0]["restartCount"] == 0
    assert not any(call[1] == "llama-1" for call in world.kube.calls)
    assert not any(call[0] == "evict" for call in world.kube.calls)
    assert "RecycleSucceeded" in world.kube.reasons()


async def test_recreate_evicts_the_uid_it_drained_and_waits_for_its_replacement() -> None:
    world = World("Recreate")
    await world.start_drained()
    assert ("evict", VICTIM, "uid-0") in world.kube.calls
    assert world.kube.pods[VICTIM]["metadata"]["uid"] == "uid-0-new"
    world.clock.advance(5)
    await world.cycle()
    assert world.step() == "WaitingReady"
    world.kube.make_ready(VICTIM)
    world.clock.advance(5)
    await world.cycle()
    assert world.step() == "Verifying"
    assert world.kube.operation is not None
    assert world.kube.operation["newUid"] == "uid-0-new"
    assert sum(call[0] == "evict" for call in world.kube.calls) == 1


async def test_a_write_that_loses_a_race_acts_on_nothing() -> None:
    world = World()
    world.kube.conflicts = 1
    state = await world.start()
    assert not state.active
    assert "changed meanwhile" in state.message
    assert world.kube.operation is None
    assert world.serving()
    assert world.kube.calls == []
    assert world.kube.events == []


async def test_a_conflict_mid_recycle_stops_the_cycle_before_the_action() -> None:
    world = World("InPlace", restarts_container=False)
    await world.start_drained()  # Restarting: checkpointed, restart asked for
    assert world.step() == "Restarting"
    world.kube.restart_container(VICTIM)  # the kubelet restarts it after the cycle
    world.kube.conflicts = 1
    before = list(world.kube.calls)
    await world.cycle()
    assert world.kube.calls == before
    assert world.step() == "Restarting"
    await world.cycle()
    assert world.step() == "Verifying"
    assert world.serving()


async def test_a_replica_that_loses_the_lease_mid_recycle_takes_no_further_step() -> None:
    world = World("InPlace")
    await world.start(in_flight=4)  # Draining: the pod left the Service, requests in flight
    assert world.step() == "Draining"
    before = list(world.kube.calls)
    world.leading = False
    world.clock.advance(5)
    state = await world.cycle(in_flight=0)  # idle now: the leader would checkpoint
    assert state.active
    assert "no longer the leader" in state.message
    assert world.step() == "Draining"
    assert world.kube.calls == before
    assert world.agents.agents.get(VICTIM) is None or world.agents.agents[VICTIM].checkpoints == 0
    world.leading = True  # whoever leads next resumes from the persisted operation
    await world.cycle(in_flight=0)
    assert world.agents.agents[VICTIM].checkpoints == 1


async def test_a_refused_eviction_is_waited_on_reported_once_and_finally_abandoned() -> None:
    world = World("Recreate")
    world.kube.evictions_refused = True
    await world.start_drained()
    world.clock.advance(30)
    await world.cycle()
    assert world.step() == "Restarting"
    assert world.kube.reasons().count("EvictionBlocked") == 1
    assert VICTIM in world.kube.pods
    world.clock.advance(301)
    state = await world.cycle()
    assert not state.active
    assert world.kube.operation is None
    assert world.kube.history[-1]["result"] == "Abandoned"
    assert world.serving()


async def test_an_agent_that_refuses_the_connection_on_restart_escalates_to_one_eviction() -> None:
    world = World("InPlace", fail_restart="POST /v1/restart failed: connection refused")
    await world.start_drained()
    assert "AgentUnavailable" in world.kube.reasons()
    assert "RecycleEscalated" in world.kube.reasons()
    assert world.kube.calls.count(("evict", VICTIM, "uid-0")) == 1
    assert world.kube.operation is not None
    assert world.kube.operation["escalated"] is True
    assert world.kube.operation["strategy"] == "Recreate"


async def test_a_restart_call_that_times_out_waits_for_the_restart_the_kubelet_counts_late() -> (
    None
):
    world = World("InPlace", restart_unanswered="POST /v1/restart got no answer within 30s")
    await world.start_drained()
    assert world.step() == "Restarting"
    assert "AgentUnavailable" in world.kube.reasons()
    assert "RecycleEscalated" not in world.kube.reasons()
    world.clock.advance(20)
    await world.cycle()
    assert world.step() == "Restarting"
    world.kube.restart_container(VICTIM)  # the restart did happen; the pod shows it now
    world.clock.advance(5)
    await world.cycle()
    assert world.step() in ("WaitingReady", "Verifying")
    assert not any(call[0] == "evict" for call in world.kube.calls)
    assert "RecycleEscalated" not in world.kube.reasons()


async def test_a_restart_call_that_times_out_and_never_restarts_escalates_once_later() -> None:
    world = World("InPlace", restart_unanswered="POST /v1/restart got no answer within 30s")
    await world.start_drained()
    world.clock.advance(100)
    await world.cycle()
    assert world.step() == "Restarting"
    assert not any(call[0] == "evict" for call in world.kube.calls)
    world.clock.advance(51)  # past half of readyTimeout (300 s) since the restart was asked
    await world.cycle()
    assert "RecycleEscalated" in world.kube.reasons()
    assert world.kube.calls.count(("evict", VICTIM, "uid-0")) == 1
    assert world.kube.operation is not None
    assert world.kube.operation["strategy"] == "Recreate"


async def test_without_fallback_a_restart_that_never_shows_ends_failed_and_undrained() -> None:
    world = World("InPlace", fallback=False, restarts_container=False)
    await world.start_drained()
    assert world.step() == "Restarting"
    world.clock.advance(151)
    await world.cycle()
    assert world.kube.operation is None
    assert world.kube.history[-1]["result"] == "Failed"
    assert "did not restart in place" in world.kube.history[-1]["message"]
    assert world.serving()
    assert not any(call[0] == "evict" for call in world.kube.calls)


async def test_without_fallback_a_failed_restart_returns_the_pod_and_records_the_failure() -> None:
    world = World("InPlace", fallback=False, fail_restart="agent timed out")
    await world.start_drained()
    assert world.kube.operation is None
    assert world.kube.history[-1]["result"] == "Failed"
    assert world.serving()
    assert not any(call[0] == "evict" for call in world.kube.calls)


async def test_a_failed_checkpoint_is_reported_and_the_restart_still_happens() -> None:
    world = World("InPlace", fail_checkpoint="agent unreachable")
    await world.start_drained()
    assert "CheckpointFailed" in world.kube.reasons()
    assert world.agents.agents[VICTIM].restarts == 1
    assert world.kube.operation is not None
    assert "checkpoint" not in world.kube.operation


async def test_a_pod_that_disappears_while_draining_is_abandoned_untouched() -> None:
    world = World("Recreate")
    await world.start(in_flight=4)
    del world.kube.pods[VICTIM]
    world.clock.advance(5)
    await world.cycle()
    assert world.kube.operation is None
    assert world.kube.history[-1]["result"] == "Abandoned"
    assert not any(call[0] == "evict" for call in world.kube.calls)


async def test_a_recreated_pod_that_never_comes_back_fails_after_the_ready_timeout() -> None:
    world = World("Recreate")
    world.kube.recreate_on_evict = False
    await world.start_drained()
    world.clock.advance(10)
    state = await world.cycle()
    assert state.active
    assert "recreated" in state.message
    world.clock.advance(301)
    state = await world.cycle()
    assert not state.active
    assert world.kube.operation is None
    assert world.kube.history[-1]["result"] == "Failed"
    assert "not recreated" in world.kube.history[-1]["message"]


async def test_dry_run_records_the_decision_and_acts_on_nothing() -> None:
    world = World()
    state = await world.start(dry_run=True)
    assert state.reason == "DryRun"
    assert world.kube.operation is None
    assert world.kube.history[-1]["result"] == "DryRun"
    assert world.kube.calls == []
    assert world.kube.reasons() == ["DryRunRecycle"]


async def test_a_pod_left_drained_without_a_recycle_is_returned_to_service(
    caplog: pytest.LogCaptureFixture,
) -> None:
    world = World()
    world.kube.pods["llama-1"]["metadata"]["labels"][SERVING] = "false"
    with caplog.at_level(logging.INFO, "infercycle.cycle"):
        await world.executor.undrain_orphans(world.context())
    assert world.serving("llama-1")
    assert world.kube.reasons() == ["Undrained"]


def test_world_pods_reduce_to_the_states_the_machine_reads() -> None:
    world = World()
    states = {p.name: p for p in world.context().pods}
    assert states[VICTIM] == PodState(
        VICTIM,
        "uid-0",
        ready=True,
        serving=True,
        running=True,
        started_at=states[VICTIM].started_at,
        restart_count=0,
        pod_ip=f"ip-of-{VICTIM}",
        node="node-1",
    )


async def test_a_recycle_written_since_the_cache_was_read_stops_a_second_one() -> None:
    world = World()
    context = world.context()  # the cycle's view: no operation
    assert world.state is not None
    world.kube.body["status"] = {"operation": {"pod": "llama-1", "step": "Draining"}}
    state = await world.start(in_flight=0, context=context)
    assert state.active
    assert world.kube.operation == {"pod": "llama-1", "step": "Draining"}
    assert world.kube.calls == []


async def test_a_recycle_finished_since_the_cache_was_read_is_planned_again_first() -> None:
    world = World()
    context = world.context()
    assert world.state is not None
    world.kube.body["status"] = {"history": [{"pod": "llama-1", "result": "Succeeded"}]}
    state = await world.start(in_flight=0, context=context)
    assert not state.active
    assert "re-planning" in state.message
    assert world.kube.operation is None
    assert world.kube.calls == []


async def test_a_drained_pod_is_left_alone_when_a_fresh_read_shows_its_recycle() -> None:
    world = World()
    world.kube.pods[VICTIM]["metadata"]["labels"][SERVING] = "false"
    context = world.context()  # a lagging watch: no operation in its copy
    world.kube.body["status"] = {"operation": {"pod": VICTIM, "step": "Draining"}}
    await world.executor.undrain_orphans(context)
    assert not world.serving()
    assert world.kube.events == []


async def test_a_verdict_from_before_an_in_place_restart_never_judges_the_new_process() -> None:
    from infercycle.cycle.state import pod_key  # noqa: PLC0415
    from infercycle.health.model import Verdict  # noqa: PLC0415

    world = World("InPlace")
    victim = next(p for p in world.context().pods if p.name == VICTIM)
    condemned = Verdict(pod_key(victim), True, False, True)
    # The cycle's evaluation condemned the pod on its first life (restart count 0).
    evaluation = Evaluation(
        {pod_key(victim): condemned}, HEALTHY, {VICTIM: 0}, (), {pod_key(victim): 0}
    )
    assert evaluation.verdict(victim) is condemned
    context = world.context()
    assert world.state is not None
    candidate = Candidate(victim, ("memory-leak: growth",))
    await world.executor.start(
        context, world.state, evaluation, candidate, dry_run=False, now=world.clock()
    )
    world.clock.advance(5)
    await world.executor.advance(world.context(), world.state, evaluation)
    assert world.step() == "Restarting"
    # The next cycle's evaluation was made from a watch cache that has not seen the restart yet:
    # its verdict is about the old process, and must not judge the new one.
    world.clock.advance(5)
    await world.executor.advance(world.context(), world.state, evaluation)
    assert world.step() == "Verifying", world.kube.reasons()
    assert "RecycleEscalated" not in world.kube.reasons()
    assert not any(call[0] == "evict" for call in world.kube.calls)
