"""Attached workloads: how a Deployment, StatefulSet or LeaderWorkerSet is read (no API calls).

The operator reads the target's selector and replica count and never writes to it. A
LeaderWorkerSet's pods carry the group labels its controller sets: the group index, and the
worker index (0 for the leader); a group is named after its leader pod, ``<lws>-<group>``.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from infercycle.api.resources import TARGET_API_VERSIONS, TargetKind, TargetReference
from infercycle.api.spec import LabelSelector
from infercycle.errors import TargetError
from infercycle.recycle.fleet import Target

LWS_NAME_LABEL = "leaderworkerset.sigs.k8s.io/name"
LWS_GROUP_LABEL = "leaderworkerset.sigs.k8s.io/group-index"
LWS_WORKER_LABEL = "leaderworkerset.sigs.k8s.io/worker-index"
LWS_PLURAL = "leaderworkersets"


def api_path(ref: TargetReference) -> tuple[str, str, str]:
    """(group, version, plural) of the target's kind."""
    group, _, version = TARGET_API_VERSIONS[TargetKind(ref.kind)].rpartition("/")
    plural = {
        TargetKind.DEPLOYMENT: "deployments",
        TargetKind.STATEFUL_SET: "statefulsets",
        TargetKind.LEADER_WORKER_SET: LWS_PLURAL,
    }[TargetKind(ref.kind)]
    return group, version, plural


def target_of(ref: TargetReference, body: dict[str, Any]) -> Target:
    """The target as the cycle uses it; ``TargetError`` when it cannot be judged."""
    kind = TargetKind(ref.kind)
    spec = body.get("spec") or {}
    metadata = body.get("metadata") or {}
    replicas = spec.get("replicas")
    desired = 1 if replicas is None else int(replicas)  # both APIs default to 1
    generation = metadata.get("generation")
    if kind is TargetKind.LEADER_WORKER_SET:
        size = int(((spec.get("leaderWorkerTemplate") or {}).get("size")) or 1)
        return Target(
            kind,
            ref.name,
            LabelSelector(match_labels={LWS_NAME_LABEL: ref.name}),
            desired,
            group_size=size,
            generation=generation,
        )
    raw = spec.get("selector") or {}
    try:
        selector = LabelSelector.model_validate(raw)
    except ValidationError as error:
        msg = f"{kind}/{ref.name} has a selector the operator cannot read: {error.errors()[0]}"
        raise TargetError(msg) from error
    if not selector.match_labels and not selector.match_expressions:
        msg = f"{kind}/{ref.name} has an empty selector: it would select every pod"
        raise TargetError(msg)
    return Target(kind, ref.name, selector, desired, generation=generation)


def group_of(labels: dict[str, str]) -> tuple[str | None, bool]:
    """The LeaderWorkerSet group of a pod (its leader's name) and whether it is the leader."""
    name = labels.get(LWS_NAME_LABEL)
    index = labels.get(LWS_GROUP_LABEL)
    if not name or index is None:
        return None, False
    return f"{name}-{index}", labels.get(LWS_WORKER_LABEL, "0") == "0"
