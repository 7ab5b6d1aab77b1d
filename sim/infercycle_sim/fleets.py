"""InferenceDeployments for the demo and the end-to-end tests: policies on a compressed clock
(seconds instead of hours) over pods of the fleet simulator."""

from __future__ import annotations

from typing import Any

from infercycle.api.defaults import DEFAULT_RULES
from infercycle.api.units import format_duration
from infercycle.api.values import MIN_SAMPLES, RuleKind
from infercycle_sim.fleetsim import (
    ANNOTATION_AGE_OFFSET,
    ANNOTATION_FLEET_LOAD,
    ANNOTATION_SCENARIO,
    ANNOTATION_SERVER,
)

SIM_AGE_OFFSET = "600"  # simulated pods start ten minutes old: past their model-loading ramp
GROWTH_WINDOW_S = 60.0
"""The growth rules' window in :func:`fast_health` (longer only when three cycles are)."""


def collector_sawtooth(speed: float) -> dict[str, float]:
    """``gc_sawtooth`` parameters for a healthy collector under :func:`fast_health`: teeth of
    2 GiB over half the growth window in real seconds (so 4.8x the 50 GiB/h leak level), at a
    simulator running ``speed`` times real time.

    Every window then holds falls, as a real 1 h window holds several of a 2-12 min collector
    cycle. A much longer tooth, started after flat ground, shows a window of flat ground and
    then one rise: no fit can tell that from a leak that has just started."""
    return {"saw_period": GROWTH_WINDOW_S / 2 * speed, "saw_amplitude": 2.0 * 2**30}


def fast_health(cycle_interval_s: float = 2.0) -> dict[str, Any]:
    """Every built-in rule, with windows short enough for a test and leak levels set for the
    simulator's compressed clock (a healthy pod's settling growth stays far below them).

    Windows are never shorter than the operator's policy check allows: three cycles."""

    def window(seconds: float) -> str:
        return format_duration(max(seconds, MIN_SAMPLES * cycle_interval_s))

    rules = []
    for rule in DEFAULT_RULES:
        override: dict[str, Any] = {"name": rule.name, "window": window(20)}
        if rule.kind == RuleKind.GROWTH:
            # Enough samples per fit bucket that a few seconds' spike cannot tilt the slope.
            override.update(
                threshold="50Gi", clear="10Gi", window=window(GROWTH_WINDOW_S), sustain="10s"
            )
            if rule.time_to_limit is not None:
                override["timeToLimit"] = "1m"
        if rule.kind == RuleKind.BASELINE:
            override["baselineWindow"] = window(10)
        rules.append(override)
    return {"warmup": "10s", "staleAfter": "20s", "rules": rules}


def deployment_manifest(
    name: str,
    namespace: str,
    *,
    replicas: int = 8,
    scenario: str = "healthy",
    server: str = "vllm",
    extra_spec: dict[str, Any] | None = None,
    cycle_interval_s: float = 2.0,
    surge: bool = False,
) -> dict[str, Any]:
    """A simulated fleet of ``server`` pods (the simulator writes that server's metrics);
    with ``surge``, every pod rides the fleet-wide traffic surge, whatever its scenario."""
    annotations = {
        ANNOTATION_SCENARIO: scenario,
        ANNOTATION_SERVER: server,
        ANNOTATION_AGE_OFFSET: SIM_AGE_OFFSET,
    }
    if surge:
        annotations[ANNOTATION_FLEET_LOAD] = "surge"
    spec: dict[str, Any] = {
        "replicas": replicas,
        "server": server,
        "restartStrategy": "Recreate",
        "agent": {"enabled": False},
        "health": fast_health(cycle_interval_s),
        "disruption": {
            "maxUnavailable": 1,
            "minAvailable": replicas - 2,
            "cooldown": "10m",
            "maxRecyclesPerHour": 10,
            "maxDegradedPercent": 50,
            "flapWindow": "1m",
        },
        "recycle": {"drainTimeout": "6s", "readyTimeout": "60s", "verifyWindow": "6s"},
        "template": {
            "metadata": {"annotations": annotations},
            "spec": {
                "containers": [
                    {
                        "name": "server",
                        "image": "registry.invalid/inference-server:1",
                        "ports": [{"name": "http", "containerPort": 8000}],
                    }
                ]
            },
        },
    }
    spec.update(extra_spec or {})
    return {
        "apiVersion": "infercycle.io/v1alpha1",
        "kind": "InferenceDeployment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }
