"""LeaderWorkerSet groups folded into units: one condemned member condemns the group, and a
group is Ready only with its leader and a full set of workers of its present life."""

from dataclasses import replace

from infercycle.recycle.fleet import PodJudgement, PodState
from infercycle.recycle.units import group_unit, judge_units, ready_units, units_of


def member(name: str, group: str, *, leader: bool = False, created: float = 100.0) -> PodState:
    return PodState(
        name,
        f"uid-{name}",
        ready=True,
        serving=True,
        running=True,
        group=group,
        leader=leader,
        created_at=created,
    )


def fleet() -> list[PodState]:
    pods = []
    for group in ("lws-0", "lws-1"):
        pods.append(member(group, group, leader=True))
        pods += [member(f"{group}-{index}", group) for index in (1, 2)]
    return pods


def test_pods_stay_pods_without_groups() -> None:
    pods = fleet()
    assert units_of(pods, None) == tuple(pods)


def test_each_group_is_one_unit_named_and_identified_by_its_leader() -> None:
    units = units_of(fleet(), 3)
    assert [unit.name for unit in units] == ["lws-0", "lws-1"]
    first = units[0]
    assert first.uid == "uid-lws-0"
    assert [pod.name for pod in first.members] == ["lws-0", "lws-0-1", "lws-0-2"]
    assert first.ready
    assert ready_units(units) == 2


def test_a_group_missing_a_worker_or_with_one_unready_is_not_ready() -> None:
    pods = [pod for pod in fleet() if pod.name != "lws-1-2"]
    pods = [replace(pod, ready=False) if pod.name == "lws-0-1" else pod for pod in pods]
    units = units_of(pods, 3)
    assert not units[0].ready
    assert not units[1].ready
    assert ready_units(units) == 0


def test_workers_of_the_previous_life_do_not_make_a_recreated_group_ready() -> None:
    leader = member("lws-0", "lws-0", leader=True, created=500.0)
    old = [member("lws-0-1", "lws-0", created=100.0), member("lws-0-2", "lws-0", created=100.0)]
    assert not group_unit("lws-0", [leader, *old], 3).ready
    new = [replace(pod, uid=pod.uid + "-new", created_at=510.0) for pod in old]
    assert group_unit("lws-0", [leader, *new], 3).ready


def test_a_group_whose_leader_is_gone_is_a_unit_without_uid_that_is_not_ready() -> None:
    pods = [pod for pod in fleet() if pod.name != "lws-0"]
    unit = units_of(pods, 3)[0]
    assert unit.name == "lws-0"
    assert unit.uid == ""
    assert not unit.ready
    assert not unit.running


def test_one_condemned_worker_condemns_its_group_and_no_other() -> None:
    units = units_of(fleet(), 3)
    judgements = [
        PodJudgement("lws-1-2", "uid-lws-1-2", True, ("memory-leak: growth 2Gi/h",), 1.0),
        PodJudgement("lws-0-1", "uid-lws-0-1", False),
    ]
    judged = {j.name: j for j in judge_units(units, judgements)}
    assert not judged["lws-0"].degraded
    assert judged["lws-1"].degraded
    assert judged["lws-1"].uid == "uid-lws-1"
    assert judged["lws-1"].reasons == ("lws-1-2: memory-leak: growth 2Gi/h",)
    assert judged["lws-1"].severity == 1.0


def test_a_verdict_on_an_earlier_pod_of_the_same_name_does_not_count() -> None:
    units = units_of(fleet(), 3)
    stale = [PodJudgement("lws-0-1", "uid-of-a-pod-long-gone", True, ("x",), 1.0)]
    assert not any(j.degraded for j in judge_units(units, stale))
