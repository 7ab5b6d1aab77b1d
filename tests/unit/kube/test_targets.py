"""Attached workloads read as the cycle uses them, and their pods reduced with the readiness
gate and the LeaderWorkerSet group labels."""

from __future__ import annotations

import pytest

from infercycle.api.resources import TargetKind, TargetReference
from infercycle.api.spec import LabelSelector
from infercycle.errors import TargetError
from infercycle.kube.api import pod_state
from infercycle.kube.targets import api_path, group_of, target_of


def ref(kind: str, name: str = "web") -> TargetReference:
    api = "leaderworkerset.x-k8s.io/v1" if kind == "LeaderWorkerSet" else "apps/v1"
    return TargetReference(api_version=api, kind=TargetKind(kind), name=name)


def test_a_deployment_is_read_for_its_selector_and_replicas() -> None:
    body = {
        "metadata": {"generation": 7},
        "spec": {
            "replicas": 4,
            "selector": {
                "matchLabels": {"app": "web"},
                "matchExpressions": [{"key": "tier", "operator": "In", "values": ["a", "b"]}],
            },
        },
    }
    target = target_of(ref("Deployment"), body)
    assert target.desired == 4
    assert target.generation == 7
    assert target.group_size is None
    assert not target.named
    assert target.selector.to_query() == "app=web,tier in (a,b)"
    assert api_path(ref("Deployment")) == ("apps", "v1", "deployments")


def test_a_statefulset_keeps_its_pod_names_and_defaults_to_one_replica() -> None:
    target = target_of(ref("StatefulSet"), {"spec": {"selector": {"matchLabels": {"a": "b"}}}})
    assert target.named
    assert target.desired == 1


def test_a_leaderworkerset_is_counted_in_groups_of_its_size() -> None:
    body = {"spec": {"replicas": 3, "leaderWorkerTemplate": {"size": 4}}}
    target = target_of(ref("LeaderWorkerSet", "big"), body)
    assert (target.desired, target.group_size) == (3, 4)
    assert target.selector.to_query() == "leaderworkerset.sigs.k8s.io/name=big"
    assert api_path(ref("LeaderWorkerSet")) == (
        "leaderworkerset.x-k8s.io",
        "v1",
        "leaderworkersets",
    )


def test_an_empty_selector_is_refused_rather_than_taking_every_pod() -> None:
    with pytest.raises(TargetError, match="empty selector"):
        target_of(ref("Deployment"), {"spec": {"selector": {}}})


def test_selector_queries_cover_every_operator() -> None:
    selector = LabelSelector.model_validate(
        {
            "matchExpressions": [
                {"key": "a", "operator": "NotIn", "values": ["x"]},
                {"key": "b", "operator": "Exists"},
                {"key": "c", "operator": "DoesNotExist"},
            ]
        }
    )
    assert selector.to_query() == "a notin (x),b,!c"


def test_group_labels_name_the_group_after_its_leader() -> None:
    labels = {
        "leaderworkerset.sigs.k8s.io/name": "big",
        "leaderworkerset.sigs.k8s.io/group-index": "2",
        "leaderworkerset.sigs.k8s.io/worker-index": "3",
    }
    assert group_of(labels) == ("big-2", False)
    labels["leaderworkerset.sigs.k8s.io/worker-index"] = "0"
    assert group_of(labels) == ("big-2", True)
    assert group_of({"app": "web"}) == (None, False)


def raw_pod(conditions: dict[str, str], *, gated: bool) -> dict[str, object]:
    spec: dict[str, object] = {"containers": [{"name": "vllm"}, {"name": "sidecar"}]}
    if gated:
        spec["readinessGates"] = [{"conditionType": "infercycle.io/serving"}]
    return {
        "metadata": {"name": "p", "uid": "u", "creationTimestamp": "2027-01-15T08:00:00Z"},
        "spec": spec,
        "status": {
            "phase": "Running",
            "conditions": [{"type": k, "status": v} for k, v in conditions.items()],
            "containerStatuses": [
                {"name": "sidecar", "restartCount": 9},
                {"name": "vllm", "restartCount": 2},
            ],
        },
    }


def test_a_drained_gated_pod_is_ready_by_its_containers_and_not_serving() -> None:
    raw = raw_pod(
        {"ContainersReady": "True", "Ready": "False", "infercycle.io/serving": "False"},
        gated=True,
    )
    pod = pod_state(raw, "", attached=True)
    assert pod.ready
    assert not pod.serving
    assert pod.drainable
    assert not pod.awaiting_gate
    assert pod.restart_count == 2  # the first container is the server when none is named
    assert pod.created_at is not None


def test_a_new_gated_pod_waits_for_its_gate_and_an_ungated_one_cannot_be_drained() -> None:
    waiting = pod_state(raw_pod({"ContainersReady": "True"}, gated=True), "", attached=True)
    assert waiting.awaiting_gate
    assert waiting.serving
    plain = pod_state(raw_pod({"Ready": "True"}, gated=False), "vllm", attached=True)
    assert not plain.drainable
    assert not plain.awaiting_gate
    assert plain.ready
