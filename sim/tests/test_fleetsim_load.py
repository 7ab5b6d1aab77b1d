"""The simulator's fleet load: the surge rides on the pods that are meant to carry it."""

from __future__ import annotations

from datetime import UTC, datetime

from kubernetes.client import (
    V1Container,
    V1ObjectMeta,
    V1Pod,
    V1PodCondition,
    V1PodSpec,
    V1PodStatus,
)

from infercycle_sim.fleetsim import ANNOTATION_FLEET_LOAD, ANNOTATION_SCENARIO, Fleet, SimConfig


def pod(name: str, scenario: str, fleet_load: str | None = None) -> V1Pod:
    annotations = {ANNOTATION_SCENARIO: scenario}
    if fleet_load is not None:
        annotations[ANNOTATION_FLEET_LOAD] = fleet_load
    started = datetime(2026, 1, 1, tzinfo=UTC)
    return V1Pod(
        metadata=V1ObjectMeta(
            name=name,
            namespace="ns",
            uid=f"uid-{name}",
            annotations=annotations,
            creation_timestamp=started,
        ),
        spec=V1PodSpec(containers=[V1Container(name="server")], node_name="node-1"),
        status=V1PodStatus(
            phase="Running",
            start_time=started,
            conditions=[V1PodCondition(type="Ready", status="True")],
        ),
    )


def test_the_surge_rides_on_surge_pods_and_on_pods_annotated_for_it() -> None:
    now = [0.0]
    fleet = Fleet(SimConfig(), speed=1.0, age_offset=3 * 3600.0, clock=lambda: now[0])
    for item in (
        pod("plain", "gc_sawtooth"),
        pod("carried", "gc_sawtooth", fleet_load="surge"),
        pod("surging", "surge"),
    ):
        fleet.upsert(item)
    loads = {sim.name: fleet.fleet_load(sim) for sim in fleet.pods.values()}
    assert loads == {"plain": 1.0, "carried": 2.5, "surging": 2.5}
