"""Attach mode against an in-memory API server: pods of a Deployment or a LeaderWorkerSet that
the user manages are found by the workload's selector, drained through the readiness gate,
evicted, and followed to their replacement; a group is recycled as one unit."""

from __future__ import annotations

from typing import Any

from infercycle.api.resources import TargetKind
from infercycle.api.spec import LabelSelector
from infercycle.cycle import inputs
from infercycle.cycle.children import release_attached
from infercycle.cycle.execution import Executor
from infercycle.cycle.reporting import Reporter, drainable_condition
from infercycle.cycle.state import (
    DeploymentContext,
    DeploymentState,
    Evaluation,
    MetricsState,
    Registry,
    TargetLookup,
)
from infercycle.health.engine import HealthEngine
from infercycle.recycle.fleet import PodJudgement, Target
from infercycle.recycle.planner import plan_recycle
from infercycle.recycle.units import judge_units

from .fakes import (
    GATE,
    NAME,
    NAMESPACE,
    Clock,
    FakeAgents,
    FakeKube,
    attached_deployment,
    attached_pod,
)

HEALTHY = MetricsState(True, "Queried", "ok")
WEB = {"app": "web"}
LWS_LABELS = "leaderworkerset.sigs.k8s.io/"
T_NEW = "2027-01-15T09:00:00Z"


def lws_member(group: int, worker: int, *, uid_suffix: str = "", created: str = "") -> Any:
    name = f"big-{group}" if worker == 0 else f"big-{group}-{worker}"
    labels = {
        f"{LWS_LABELS}name": "big",
        f"{LWS_LABELS}group-index": str(group),
        f"{LWS_LABELS}worker-index": str(worker),
    }
    extra = {"created": created} if created else {}
    return attached_pod(name, f"uid-{name}{uid_suffix}", labels, **extra)


class AttachedWorld:
    """One attached InferenceDeployment, its workload's pods, and the executor."""

    def __init__(self, kind: str, target: Target, pods: dict[str, Any]) -> None:
        self.clock = Clock()
        self.kube = FakeKube(attached_deployment(kind, target.name), pods)
        self.target = target
        self.agents = FakeAgents(self.kube)
        self.executor = Executor(
            self.kube,
            self.agents,
            Reporter(self.kube, self.clock),
            lambda context, name: inputs.read_unit(self.kube, context, name),
            self.clock,
        )
        self.state: DeploymentState | None = None

    def context(self) -> DeploymentContext:
        registry = Registry()
        registry.deployments[(NAMESPACE, NAME)] = self.kube.body
        registry.targets[(NAMESPACE, NAME)] = TargetLookup(self.target)
        for raw in self.kube.pods.values():
            registry.put_pod(raw, deleted=False)
        context = inputs.context_for(registry, (NAMESPACE, NAME), self.kube.read_deployment("", ""))
        assert context.policy is not None, context.error
        if self.state is None:
            self.state = DeploymentState(HealthEngine(context.policy.health), None)
        return context

    async def start(self, condemned: str, in_flight: float = 2) -> Any:
        """Plan from one condemned pod, as the controller does, and start that recycle."""
        context = self.context()
        assert self.state is not None
        pod = next(p for p in context.pods if p.name == condemned)
        units = context.units
        judged = judge_units(
            units, [PodJudgement(pod.name, pod.uid, True, ("memory-leak: growth 2Gi/h",), 1.0)]
        )
        assert context.policy is not None
        plan = plan_recycle(
            now=self.clock(),
            replicas=context.desired,
            pods=units,
            judgements=judged,
            history=[],
            disruption=context.policy.disruption,
        )
        assert plan.candidate is not None, plan.summary
        evaluation = Evaluation({}, HEALTHY, {plan.candidate.pod.name: in_flight})
        return await self.executor.start(
            context, self.state, evaluation, plan.candidate, dry_run=False, now=self.clock()
        )

    async def cycle(self) -> Any:
        self.clock.advance(5)
        context = self.context()
        assert self.state is not None
        await self.executor.admit(context)
        if self.kube.operation is None:
            return None
        idle = dict.fromkeys(self.kube.pods, 0.0)  # nothing in flight anywhere
        return await self.executor.advance(context, self.state, Evaluation({}, HEALTHY, idle))

    def step(self) -> str | None:
        operation = self.kube.operation
        return None if operation is None else str(operation["step"])

    def touched(self, prefix: str) -> list[tuple[str, ...]]:
        return [call for call in self.kube.calls if call[1].startswith(prefix)]


def web_world(*, gated: bool = True) -> AttachedWorld:
    pods = {
        name: attached_pod(name, f"uid-{name}", WEB, gated=gated)
        for name in ("web-7d9-a", "web-7d9-b", "web-7d9-c")
    }
    pods["other"] = attached_pod("other", "uid-other", {"app": "other"})
    target = Target(
        TargetKind.DEPLOYMENT, "web", LabelSelector(match_labels=WEB), desired=3, generation=4
    )
    world = AttachedWorld("Deployment", target, pods)

    def replicaset(kube: FakeKube, evicted: dict[str, Any]) -> None:
        # A ReplicaSet replaces an evicted pod under a new name; the gate waits for us.
        fresh = attached_pod("web-7d9-z", "uid-web-7d9-z", WEB, gated=gated, ready=False)
        if gated:
            fresh["status"]["conditions"] = [
                c for c in fresh["status"]["conditions"] if c["type"] != GATE
            ]
        kube.pods["web-7d9-z"] = fresh

    world.kube.on_evict = replicaset
    return world


def test_an_attached_deployment_finds_its_pods_by_the_targets_selector() -> None:
    world = web_world()
    context = world.context()
    assert [pod.name for pod in context.pods] == ["web-7d9-a", "web-7d9-b", "web-7d9-c"]
    assert context.attached
    assert not context.named
    assert context.desired == 3
    assert all(pod.drainable and pod.serving for pod in context.pods)
    assert drainable_condition(context, context.units)[:2] == (True, "ReadinessGate")


def test_a_target_that_cannot_be_read_makes_the_context_say_so() -> None:
    world = web_world()
    registry = Registry()
    registry.deployments[(NAMESPACE, NAME)] = world.kube.body
    registry.targets[(NAMESPACE, NAME)] = TargetLookup(None, "Deployment 'web' does not exist")
    context = inputs.context_for(registry, (NAMESPACE, NAME), world.kube.body)
    assert context.error == "spec.targetRef: Deployment 'web' does not exist"
    assert context.error_reason == "TargetUnavailable"
    assert context.pods == ()


async def test_a_deployment_pod_is_drained_by_its_gate_evicted_and_followed_to_its_successor() -> (
    None
):
    world = web_world()
    victim = "web-7d9-b"
    state = await world.start(victim)
    assert state.active
    assert world.step() == "Draining"
    assert ("gate", victim, "false") in world.kube.calls
    assert not any(call[0] == "serving" for call in world.kube.calls)  # no label of ours

    await world.cycle()  # nothing in flight: evicted, without a checkpoint (no agent)
    assert ("evict", victim, f"uid-{victim}") in world.kube.calls
    assert victim not in world.kube.pods
    await world.cycle()
    assert world.step() == "WaitingReady"
    # The replacement carries the gate: admitted at once, then Ready with its containers.
    assert ("gate", "web-7d9-z", "true") in world.kube.calls
    await world.cycle()
    assert world.step() == "WaitingReady"
    for condition in world.kube.pods["web-7d9-z"]["status"]["conditions"]:
        if condition["type"] in ("Ready", "ContainersReady"):
            condition["status"] = "True"
    await world.cycle()
    assert world.step() == "Verifying"
    world.clock.advance(121)
    state = await world.cycle()
    assert not state.active
    assert [r["result"] for r in world.kube.history] == ["Succeeded"]
    assert [r["pod"] for r in world.kube.history] == [victim]
    assert world.touched("web-7d9-a") == []
    assert world.touched("web-7d9-c") == []
    assert world.touched("other") == []
    assert sum(call[0] == "evict" for call in world.kube.calls) == 1


async def test_pods_without_the_gate_are_evicted_undrained_and_the_condition_says_how() -> None:
    world = web_world(gated=False)
    context = world.context()
    ok, reason, message = drainable_condition(context, context.units)
    assert (ok, reason) == (False, "ReadinessGateMissing")
    assert "readinessGates: [{conditionType: infercycle.io/serving}]" in message
    assert "Deployment/web" in message
    await world.start("web-7d9-a", in_flight=7)
    assert ("evict", "web-7d9-a", "uid-web-7d9-a") in world.kube.calls
    assert not any(call[0] in ("gate", "serving") for call in world.kube.calls)
    assert "NotDrained" in world.kube.reasons()


def lws_world() -> AttachedWorld:
    pods = {}
    for group in (0, 1):
        for worker in (0, 1, 2):
            raw = lws_member(group, worker)
            pods[raw["metadata"]["name"]] = raw
    target = Target(
        TargetKind.LEADER_WORKER_SET,
        "big",
        LabelSelector(match_labels={f"{LWS_LABELS}name": "big"}),
        desired=2,
        group_size=3,
    )
    world = AttachedWorld("LeaderWorkerSet", target, pods)

    def recreate_group(kube: FakeKube, evicted: dict[str, Any]) -> None:
        # The leader's workers go with it; the leader comes back first, its workers later.
        group = evicted["metadata"]["labels"][f"{LWS_LABELS}group-index"]
        for name in [n for n in kube.pods if n.startswith(f"big-{group}-")]:
            del kube.pods[name]
        leader = lws_member(int(group), 0, uid_suffix="-new", created=T_NEW)
        kube.pods[leader["metadata"]["name"]] = leader

    world.kube.on_evict = recreate_group
    return world


async def test_one_leaking_worker_recycles_its_whole_group_once_and_no_other_group() -> None:
    world = lws_world()
    context = world.context()
    assert [unit.name for unit in context.units] == ["big-0", "big-1"]
    await world.start("big-1-2")  # a worker leaks: its group is condemned
    operation = world.kube.operation
    assert operation is not None
    assert operation["pod"] == "big-1"
    assert operation["uid"] == "uid-big-1"
    assert any("big-1-2: memory-leak" in reason for reason in operation["reasons"])
    assert ("gate", "big-1", "false") in world.kube.calls  # the leader's endpoint is drained

    await world.cycle()
    assert [call for call in world.kube.calls if call[0] == "evict"] == [
        ("evict", "big-1", "uid-big-1")
    ]
    await world.cycle()
    assert world.step() == "WaitingReady"
    await world.cycle()
    assert world.step() == "WaitingReady"  # the leader alone is not the group
    for worker in (1, 2):
        raw = lws_member(1, worker, uid_suffix="-new", created=T_NEW)
        world.kube.pods[raw["metadata"]["name"]] = raw
    await world.cycle()
    assert world.step() == "Verifying"
    assert world.kube.operation is not None
    assert world.kube.operation["newUid"] == "uid-big-1-new"
    world.clock.advance(121)
    await world.cycle()
    assert [(r["pod"], r["result"]) for r in world.kube.history] == [("big-1", "Succeeded")]
    assert world.touched("big-0") == []
    assert sum(call[0] == "evict" for call in world.kube.calls) == 1


async def test_group_budgets_count_groups_not_pods() -> None:
    world = lws_world()
    # One member of the other group is not Ready: that group is unavailable, and
    # maxUnavailable (1 by default) is spent on it, whatever the pod count says.
    world.kube.pods["big-0-1"]["status"]["conditions"][0]["status"] = "False"
    context = world.context()
    units = context.units
    judged = judge_units(
        units, [PodJudgement("big-1-2", "uid-big-1-2", True, ("memory-leak",), 1.0)]
    )
    assert context.policy is not None
    plan = plan_recycle(
        now=world.clock(),
        replicas=context.desired,
        pods=units,
        judgements=judged,
        history=[],
        disruption=context.policy.disruption,
        noun="groups",
    )
    assert plan.candidate is None
    assert plan.holds[0].guard == "MaxUnavailable"
    assert "1 groups already unavailable" in plan.holds[0].message


async def test_an_attached_statefulset_with_the_agent_restarts_in_place_through_its_gate() -> None:
    pods = {
        name: attached_pod(name, f"uid-{name}", {"app": "kv"}) for name in ("kv-0", "kv-1", "kv-2")
    }
    target = Target(
        TargetKind.STATEFUL_SET, "kv", LabelSelector(match_labels={"app": "kv"}), desired=3
    )
    world = AttachedWorld("StatefulSet", target, pods)
    world.kube.body["spec"]["restartStrategy"] = "InPlace"
    assert world.context().agent_enabled  # the user's agent sidecar checkpoints first
    await world.start("kv-1")
    assert ("gate", "kv-1", "false") in world.kube.calls
    # Drained: the gate is False, so the pod is not Ready, while its containers are.
    conditions = world.kube.pods["kv-1"]["status"]["conditions"]
    for condition in conditions:
        if condition["type"] == "Ready":
            condition["status"] = "False"
    await world.cycle()  # checkpoint, then the in-place restart, in one cycle
    agent = world.agents.agents["kv-1"]
    assert (agent.checkpoints, agent.restarts) == (1, 1)
    await world.cycle()
    # Ready by its containers despite the drained gate: the machine undrains it.
    assert world.step() == "Verifying"
    assert ("gate", "kv-1", "true") in world.kube.calls
    assert not any(call[0] == "evict" for call in world.kube.calls)
    world.clock.advance(121)
    await world.cycle()
    assert [(r["pod"], r["result"]) for r in world.kube.history] == [("kv-1", "Succeeded")]
    assert world.touched("kv-0") == []
    assert world.touched("kv-2") == []


def test_deleting_an_attached_deployment_returns_its_drained_pods_and_nothing_else() -> None:
    world = web_world()
    world.kube.objects[("deployments", "web")] = {
        "metadata": {"generation": 4},
        "spec": {"replicas": 3, "selector": {"matchLabels": WEB}},
    }
    world.kube.set_readiness_gate(NAMESPACE, "web-7d9-b", "uid-web-7d9-b", False)
    world.kube.calls.clear()
    returned = release_attached(world.kube, world.kube.body)  # type: ignore[arg-type]
    assert returned == ["web-7d9-b"]
    assert world.kube.calls == [("gate", "web-7d9-b", "true")]
    del world.kube.objects[("deployments", "web")]
    assert release_attached(world.kube, world.kube.body) == []  # type: ignore[arg-type]
