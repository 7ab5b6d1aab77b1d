"""Reporting builds status from the typed models, and what it writes is what the CRD accepts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from infercycle.api.resources import Condition, PodVerdict
from infercycle.api.values import RuleKind
from infercycle.cycle import inputs
from infercycle.cycle.reporting import (
    Pause,
    Reporter,
    build_status,
    invalid_status,
    set_condition,
)
from infercycle.cycle.state import (
    DeploymentState,
    Evaluation,
    MetricsState,
    RecyclingState,
    Registry,
    pod_key,
)
from infercycle.health.engine import HealthEngine
from infercycle.health.model import Reason, Verdict

from .fakes import NAME, NAMESPACE, Clock, FakeKube, deployment, pod

CRD = Path(__file__).resolve().parents[3] / "crds" / "infercycle.io_inferencedeployments.yaml"
T0 = 1_800_000_000.0


def status_schema() -> dict[str, Any]:
    crd = yaml.safe_load(CRD.read_text())
    version = next(v for v in crd["spec"]["versions"] if v["name"] == "v1alpha1")
    schema: dict[str, Any] = version["schema"]["openAPIV3Schema"]["properties"]["status"]
    return schema


def scene() -> tuple[Any, DeploymentState, Evaluation]:
    kube = FakeKube(
        deployment(), {"llama-0": pod("llama-0", "u0"), "llama-1": pod("llama-1", "u1")}
    )
    registry = Registry()
    for raw in kube.pods.values():
        registry.put_pod(raw, deleted=False)
    context = inputs.context_for(registry, (NAMESPACE, NAME), kube.body)
    assert context.policy is not None
    state = DeploymentState(HealthEngine(context.policy.health), None)
    sick = context.pods[0]
    reason = Reason(
        rule="memory-leak",
        signal="memory",
        kind=RuleKind.GROWTH,
        observed=2.0,
        threshold=1.0,
        window_s=3600.0,
        text="memory-leak: memory growth 2.0Gi/h over 1h",
    )
    verdicts = {
        pod_key(sick): Verdict(pod_key(sick), True, False, True, (reason,)),
        pod_key(context.pods[1]): Verdict(pod_key(context.pods[1]), False, False, True),
    }
    return context, state, Evaluation(verdicts, MetricsState(True, "Queried", "2 pods"))


def test_the_status_a_cycle_writes_validates_against_the_crds_own_schema() -> None:
    context, state, evaluation = scene()
    status = build_status(
        context,
        state,
        evaluation,
        RecyclingState(True, "InProgress", "draining llama-0"),
        Pause("NotPaused", "recycling is enabled"),
        current={},
        dry_run=False,
        now=T0,
    )
    wire = status.to_api()
    jsonschema.validate(wire, status_schema())
    assert wire["degradedReplicas"] == 1
    assert wire["pods"][0] == {
        "name": "llama-0",
        "uid": "u0",
        "verdict": "Degraded",
        "since": wire["pods"][0]["since"],
        "reasons": ["memory-leak: memory growth 2.0Gi/h over 1h"],
    }
    assert [c["type"] for c in wire["conditions"]] == [
        "Ready",
        "Degraded",
        "Recycling",
        "MetricsAvailable",
        "RulesActive",
        "Paused",
        "Drainable",
    ]
    assert wire["selector"] == "infercycle.io/deployment=llama"


def test_a_status_the_schema_refuses_is_caught_by_the_same_check() -> None:
    context, state, evaluation = scene()
    wire = build_status(
        context,
        state,
        evaluation,
        RecyclingState(False, "Idle", "no recycle"),
        Pause("NotPaused", "ok"),
        current={},
        dry_run=False,
        now=T0,
    ).to_api()
    wire["conditions"][0]["reason"] = "not a CamelCase reason"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(wire, status_schema())


def test_invalid_spec_status_validates_and_keeps_other_conditions() -> None:
    current = {
        "conditions": [
            {
                "type": "Degraded",
                "status": "False",
                "reason": "AllHealthy",
                "message": "",
                "lastTransitionTime": "2027-01-15T08:00:00Z",
            }
        ]
    }
    wire = invalid_status(current, "health.rules[0].window: must be positive", T0, 4).to_api()
    jsonschema.validate(wire, status_schema())
    ready = next(c for c in wire["conditions"] if c["type"] == "Ready")
    assert ready["reason"] == "ReconcileFailed"
    assert ready["observedGeneration"] == 4
    assert any(c["type"] == "Degraded" for c in wire["conditions"])


def test_a_condition_keeps_its_transition_time_until_its_status_changes() -> None:
    first = set_condition(
        [], type_="Degraded", status=False, reason="AllHealthy", message="", now=T0, generation=1
    )
    again = set_condition(
        first,
        type_="Degraded",
        status=False,
        reason="AllHealthy",
        message="still",
        now=T0 + 60,
        generation=1,
    )
    flipped = set_condition(
        again,
        type_="Degraded",
        status=True,
        reason="PodsDegraded",
        message="llama-0",
        now=T0 + 120,
        generation=1,
    )
    assert again[0].last_transition_time == first[0].last_transition_time
    assert flipped[0].last_transition_time != first[0].last_transition_time
    assert isinstance(flipped[0], Condition)


def test_the_since_of_a_pod_moves_only_when_its_verdict_changes() -> None:
    context, state, evaluation = scene()
    pause = Pause("NotPaused", "ok")
    idle = RecyclingState(False, "Idle", "")
    first = build_status(context, state, evaluation, idle, pause, current={}, dry_run=False, now=T0)
    later = build_status(
        context, state, evaluation, idle, pause, current={}, dry_run=False, now=T0 + 90
    )
    assert first.pods is not None
    assert later.pods is not None
    assert first.pods[0].since == later.pods[0].since
    assert later.pods[0].verdict == PodVerdict.DEGRADED


async def test_an_unchanged_status_is_written_once_then_refreshed_after_five_minutes() -> None:
    context, state, evaluation = scene()
    kube = FakeKube(deployment(), {})
    reporter = Reporter(kube, Clock(T0))
    pause = Pause("NotPaused", "ok")
    idle = RecyclingState(False, "Idle", "")

    async def write(now: float) -> bool:
        current = dict(kube.body.get("status") or {})
        status = build_status(
            context, state, evaluation, idle, pause, current=current, dry_run=False, now=now
        )
        return await reporter.write_status(context, state, status, now)

    assert await write(T0)
    assert not await write(T0 + 30)
    assert await write(T0 + 301)
    assert kube.status_writes == 2


def test_rules_a_server_cannot_feed_are_named_in_a_condition_and_a_warning_each() -> None:
    from infercycle.cycle.reporting import rule_warnings, rules_active_condition  # noqa: PLC0415

    kube = FakeKube(deployment(), {"llama-0": pod("llama-0", "u0")})
    kube.body["spec"]["server"] = "tgi"
    registry = Registry()
    registry.put_pod(kube.pods["llama-0"], deleted=False)
    context = inputs.context_for(registry, (NAMESPACE, NAME), kube.body)
    assert context.policy is not None, context.error
    evaluation = Evaluation({}, MetricsState(True, "Queried", "1 pod"))
    active, reason, message = rules_active_condition(context, evaluation)
    assert (active, reason) == (False, "RulesSwitchedOff")
    assert "kv_cache" in message
    warnings = rule_warnings(context, evaluation)
    assert warnings
    assert {event.reason for event in warnings} == {"RuleSwitchedOff"}
    assert len(warnings) == len(context.policy.switched_off)
