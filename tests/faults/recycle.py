"""Recycles driven through the real executor against the in-memory API server, with the
operator killed at a chosen port call, or two operator replicas sharing one API server.

Every port call (Kubernetes reads and writes, agent checkpoints and restarts) goes through
``Ports``, which counts it, checks the guards at that instant, and can kill the operator there:
before the call reaches the server, or after the server acted and before the answer arrives.
A killed operator is replaced by a fresh ``Executor`` that knows only what the API server holds.
"""

from __future__ import annotations

import asyncio
import copy
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from infercycle.api.resources import CheckpointRecord
from infercycle.cycle import inputs
from infercycle.cycle.execution import Executor
from infercycle.cycle.ports import AgentConnector, AgentPort, EvictionOutcome
from infercycle.cycle.reporting import Reporter
from infercycle.cycle.state import DeploymentState, Evaluation, MetricsState, Registry
from infercycle.health.engine import HealthEngine
from infercycle.recycle.planner import Candidate
from tests.faults.outcome import FaultResult
from tests.unit.cycle.fakes import (
    NAME,
    NAMESPACE,
    SERVING,
    Clock,
    FakeAgents,
    FakeKube,
    deployment,
    pod,
)

PODS = ("llama-0", "llama-1")
MAX_UNAVAILABLE = 1  # two replicas, the default disruption budget
TICK_S = 10.0
MAX_TICKS = 80  # far beyond any recycle's timeouts at TICK_S a cycle
HEALTHY = MetricsState(True, "Queried", "ok")


class OperatorKilledError(Exception):
    """The operator process died at this port call."""


class AgentAnswerLostError(Exception):
    """Raised by an agent that restarted its server and then lost the connection."""


@dataclass(frozen=True)
class Scenario:
    """One recycle to walk: its strategy and how the agent and the PDB behave."""

    name: str
    strategy: str = "InPlace"
    agent: dict[str, Any] = field(default_factory=dict)
    refused_ticks: int = 0  # the PDB refuses evictions for this many cycles


SCENARIOS = (
    Scenario("InPlace"),
    Scenario("Recreate", "Recreate"),
    Scenario("InPlace, agent restart failing", agent={"fail_restart": "no answer within 30s"}),
    Scenario("InPlace, restart answer lost", agent={"lose_restart_answer": True}),
    Scenario(
        "InPlace, restart answer lost, counted late",
        agent={"lose_restart_answer": True, "restart_counted_late": True},
    ),
    Scenario("InPlace, checkpoint failing", agent={"fail_checkpoint": "agent unreachable"}),
    Scenario("Recreate, eviction refused", "Recreate", refused_ticks=4),
)


@dataclass(frozen=True)
class Kill:
    """Kill the operator at port call ``at`` (1-based), before or after the server acts."""

    at: int
    after: bool


class Guards:
    """What the cluster looked like at every port call: pods out of service, pod disruptions."""

    def __init__(self, kube: FakeKube) -> None:
        self.kube = kube
        self.most_out = 0
        self.disruptions: Counter[str] = Counter()
        self.slowest_agent_call_s = 0.0

    def look(self) -> None:
        out = sum(1 for name in PODS if not self._in_service(name))
        self.most_out = max(self.most_out, out)

    def _in_service(self, name: str) -> bool:
        found = self.kube.pods.get(name)
        if found is None:
            return False
        ready = any(
            c["type"] == "Ready" and c["status"] == "True" for c in found["status"]["conditions"]
        )
        return ready and found["metadata"]["labels"].get(SERVING) == "true"

    def restarts(self, name: str) -> int:
        """The pod's restarts, with those the kubelet has not counted yet."""
        found = self.kube.pods.get(name)
        late = self.kube.late_restarts.count(name)
        if found is None:
            return late
        return late + int(found["status"]["containerStatuses"][0]["restartCount"])


class Ports:
    """The KubePort and AgentConnector one operator replica uses, with counting and kills.

    ``gate`` (optional) is called before every call: the race runs two replicas' calls one at
    a time through it."""

    def __init__(
        self,
        kube: FakeKube,
        agents: AgentConnector,
        guards: Guards,
        kill: Kill | None = None,
        gate: Callable[[], None] | None = None,
    ) -> None:
        self.kube = kube
        self.agents = agents
        self.guards = guards
        self.kill = kill
        self.gate = gate
        self.calls = 0

    @property
    def requests(self) -> int:
        return self.kube.requests

    def _call(self, name: str, pod_name: str | None, action: Callable[[], Any]) -> Any:
        if self.gate is not None:
            self.gate()
        self.calls += 1
        killed = self.kill is not None and self.kill.at == self.calls
        if killed and self.kill is not None and not self.kill.after:
            raise OperatorKilledError(f"before call {self.calls} ({name})")
        restarts = self.guards.restarts(pod_name or "")
        try:
            result = action()
        finally:
            if name == "restart" and pod_name is not None:
                # Counted even when the call then fails: the server restarted all the same.
                self.guards.disruptions[pod_name] += self.guards.restarts(pod_name) - restarts
            self.guards.look()
        if name == "evict" and result is EvictionOutcome.EVICTED and pod_name is not None:
            self.guards.disruptions[pod_name] += 1
        if killed:
            raise OperatorKilledError(f"after call {self.calls} ({name})")
        return result

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.kube, name)

        def call(*args: Any) -> Any:
            pod_name = args[1] if name in {"evict", "set_serving"} else None
            return self._call(name, pod_name, lambda: method(*args))

        return call

    def __call__(self, deployment: dict[str, Any], pod_ip: str | None) -> CountedAgent | None:
        agent = self.agents(deployment, pod_ip)
        if agent is None or pod_ip is None:
            return None
        return CountedAgent(self, agent, pod_ip.removeprefix("ip-of-"))


class CountedAgent:
    """A pod's agent whose calls go through ``Ports``; each runs on its own event loop in a
    worker thread, as the port calls of the Kubernetes client do."""

    def __init__(self, ports: Ports, agent: AgentPort, pod_name: str) -> None:
        self.ports = ports
        self.agent = agent
        self.pod_name = pod_name

    async def checkpoint(self) -> CheckpointRecord:
        record: CheckpointRecord = await self._through("checkpoint", self.agent.checkpoint)
        return record

    async def restart(self) -> None:
        await self._through("restart", self.agent.restart)

    async def _through(self, name: str, action: Callable[[], Any]) -> Any:
        def run() -> Any:
            started = time.monotonic()
            try:
                return asyncio.run(action())
            finally:
                took = time.monotonic() - started
                guards = self.ports.guards
                guards.slowest_agent_call_s = max(guards.slowest_agent_call_s, took)

        return await asyncio.to_thread(self.ports._call, name, self.pod_name, run)


class Operator:
    """One operator replica: a fresh executor, its own engine state, and the watch cache it
    reads (a copy of the API server's objects taken when it looks)."""

    def __init__(self, ports: Ports, clock: Clock) -> None:
        self.ports = ports
        self.clock = clock
        self.executor = Executor(
            ports,  # type: ignore[arg-type]
            ports,
            Reporter(ports, clock),  # type: ignore[arg-type]
            lambda context, name: inputs.read_unit(ports, context, name),  # type: ignore[arg-type]
            clock,
        )
        self.state: DeploymentState | None = None

    def context(self) -> Any:
        kube = self.ports.kube
        registry = Registry()
        registry.deployments[(NAMESPACE, NAME)] = kube.body
        for raw in kube.pods.values():
            registry.put_pod(raw, deleted=False)
        context = inputs.context_for(registry, (NAMESPACE, NAME), copy.deepcopy(kube.body))
        assert context.policy is not None, context.error
        if self.state is None:
            self.state = DeploymentState(HealthEngine(context.policy.health), None)
        return context

    async def cycle(self, victim: str | None) -> None:
        """One cycle for the deployment: advance the recycle in flight, or start one on
        ``victim`` when the cache shows none and nothing has been recycled yet."""
        context = self.context()
        assert self.state is not None
        evaluation = Evaluation({}, HEALTHY, dict.fromkeys(PODS, 0.0))
        status = context.body.get("status") or {}
        if status.get("operation"):
            await self.executor.advance(context, self.state, evaluation)
        elif victim is not None and not status.get("history"):
            condemned = next(p for p in context.pods if p.name == victim)
            candidate = Candidate(condemned, ("memory-leak: growth 2Gi/h",))
            await self.executor.start(
                context, self.state, evaluation, candidate, dry_run=False, now=self.clock()
            )


def kubelet(kube: FakeKube) -> None:
    """Between cycles the kubelet counts the restarts it has seen, and every pod that is not
    Ready becomes Ready."""
    for name in kube.late_restarts:
        if name in kube.pods:
            kube.restart_container(name)
    kube.late_restarts.clear()
    for name in list(kube.pods):
        kube.make_ready(name)


def new_world(scenario: Scenario) -> tuple[FakeKube, FakeAgents, Guards]:
    kube = FakeKube(
        deployment(scenario.strategy),
        {name: pod(name, f"uid-{name[-1]}") for name in PODS},
    )
    return kube, FakeAgents(kube, template=dict(scenario.agent)), Guards(kube)


def judge(name: str, kube: FakeKube, guards: Guards, finished: bool, fault: int) -> FaultResult:
    """One run's counts from what the API server and the guards saw."""
    result = FaultResult(name, runs=1, faults=fault, sessions_lost=None)
    result.restarted_twice = sum(1 for count in guards.disruptions.values() if count > 1)
    disrupted = [name for name, count in guards.disruptions.items() if count > 0]
    result.beyond_guards = int(guards.most_out > MAX_UNAVAILABLE) + int(len(disrupted) > 1)
    drained = [n for n, p in kube.pods.items() if p["metadata"]["labels"].get(SERVING) != "true"]
    result.left_drained = len(drained)
    if not finished:
        result.findings.append(f"{name}: the recycle never finished")
        result.left_drained += 1 if kube.operation is not None else 0
    if result.harmed():
        result.findings.append(
            f"{name}: disruptions {dict(guards.disruptions)}, most pods out {guards.most_out},"
            f" drained {drained}"
        )
    return result


# -- the operator killed at one port call ------------------------------------------------------


@dataclass
class Walk:
    """One recycle walked to its end: the API server, the guards, and the port calls made."""

    kube: FakeKube
    guards: Guards
    calls: int

    @property
    def finished(self) -> bool:
        return self.kube.operation is None and bool(self.kube.history)


async def walk(
    scenario: Scenario, kill: Kill | None = None, agents: AgentConnector | None = None
) -> Walk:
    """Walk one recycle of ``llama-0`` to its end, the operator killed once at ``kill``, its
    agents the fakes or ``agents``."""
    kube, fakes, guards = new_world(scenario)
    connector = agents or fakes
    clock = Clock()
    ports = Ports(kube, connector, guards, kill)
    operator = Operator(ports, clock)
    calls = 0
    for tick in range(MAX_TICKS):
        kube.evictions_refused = tick < scenario.refused_ticks
        try:
            await operator.cycle("llama-0")
        except OperatorKilledError:
            calls += ports.calls
            ports = Ports(kube, connector, guards)
            operator = Operator(ports, clock)  # a new process: only the API server remembers
        if kube.operation is None and kube.history:
            break
        kubelet(kube)
        clock.advance(TICK_S)
    return Walk(kube, guards, calls + ports.calls)


async def run_killed(scenario: Scenario, kill: Kill | None) -> tuple[FaultResult, int]:
    """One walk, the operator killed at ``kill``: the counts and how many port calls it made."""
    done = await walk(scenario, kill)
    where = "no kill" if kill is None else f"killed {'after' if kill.after else 'at'} {kill.at}"
    name = f"{scenario.name}, {where}"
    return judge(name, done.kube, done.guards, done.finished, int(kill is not None)), done.calls


async def kill_everywhere(scenarios: tuple[Scenario, ...] = SCENARIOS) -> FaultResult:
    """Every scenario, the operator killed before and after each of its port calls in turn."""
    total = FaultResult("Operator killed at every port call of a recycle", sessions_lost=None)
    for scenario in scenarios:
        clean, calls = await run_killed(scenario, None)
        total.add(clean)
        harmed = total.harmed()
        for at in range(1, calls + 1):
            for after in (False, True):
                result, _ = await run_killed(scenario, Kill(at, after))
                total.add(result)
        kept = "every one kept every guard" if total.harmed() == harmed else "some did harm"
        total.findings.append(f"{scenario.name}: {calls} port calls, {2 * calls} kills; {kept}")
    return total


# -- two replicas racing -----------------------------------------------------------------------


class Turns:
    """Lets two replicas' port calls through one at a time, in an order drawn from a seed."""

    def __init__(self, seed: int, replicas: int) -> None:
        self.random = random.Random(seed)
        self.lock = threading.Condition()
        self.waiting: set[int] = set()
        self.done: set[int] = set()
        self.turn: int | None = None
        self.replicas = replicas

    def gate_for(self, replica: int) -> Callable[[], None]:
        def gate() -> None:
            with self.lock:
                self.waiting.add(replica)
                self.lock.notify_all()
                self.lock.wait_for(lambda: self.turn == replica)
                self.turn = None
                self.waiting.discard(replica)

        return gate

    def finish(self, replica: int) -> None:
        with self.lock:
            self.done.add(replica)
            self.lock.notify_all()

    def pick(self) -> bool:
        """Wait until every live replica is at a call, then let one of them on; False when all
        are done."""
        with self.lock:
            self.lock.wait_for(
                lambda: self.turn is None and len(self.waiting | self.done) == self.replicas
            )
            if not self.waiting:
                return False
            self.turn = self.random.choice(sorted(self.waiting))
            self.lock.notify_all()
            return True


async def race_once(scenario: Scenario, seed: int) -> FaultResult:
    """Two replicas, each sure from its cache that no recycle is in flight, condemn a pod each
    (``llama-0`` and ``llama-1``) in the same cycle, then both keep cycling; their port calls
    interleave one at a time in the order the seed draws."""
    kube, agents, guards = new_world(scenario)
    clock = Clock()
    victims: list[str | None] = ["llama-0", "llama-1"]
    for tick in range(MAX_TICKS):
        kube.evictions_refused = tick < scenario.refused_ticks
        turns = Turns(seed * 1000 + tick, len(victims))
        replicas = [
            Operator(Ports(kube, agents, guards, gate=turns.gate_for(i)), clock)
            for i in range(len(victims))
        ]

        async def run(
            index: int, replica: Operator, turns: Turns = turns, victim: str | None = None
        ) -> None:
            try:
                await replica.cycle(victim)
            finally:
                turns.finish(index)

        tasks = [asyncio.create_task(run(i, r, victim=victims[i])) for i, r in enumerate(replicas)]
        while await asyncio.to_thread(turns.pick):
            pass
        await asyncio.gather(*tasks)
        victims = [None, None]  # the planner condemned once; after that, the caches are fresh
        if kube.operation is None and kube.history:
            break
        kubelet(kube)
        clock.advance(TICK_S)
    finished = kube.operation is None and bool(kube.history)
    return judge(f"{scenario.name}, race seed {seed}", kube, guards, finished, 1)


async def race(seeds: int, scenarios: tuple[Scenario, ...] = SCENARIOS) -> FaultResult:
    total = FaultResult("Two operator replicas racing", sessions_lost=None)
    for scenario in scenarios:
        harmed = total.harmed()
        for seed in range(seeds):
            total.add(await race_once(scenario, seed))
        kept = "every one kept every guard" if total.harmed() == harmed else "some did harm"
        total.findings.append(f"{scenario.name}: {seeds} interleavings; {kept}")
    return total
