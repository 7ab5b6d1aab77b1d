"""What ``infercycle explain`` reports, computed by the live cycle's own inputs and evaluation."""

from __future__ import annotations

from typing import Any

from infercycle.cycle import inputs
from infercycle.cycle.controller import FleetController
from infercycle.cycle.reporting import reason_texts, verdict_label
from infercycle.cycle.state import DeploymentKey


async def explain(controller: FleetController, key: DeploymentKey) -> dict[str, Any]:
    """The effective policy and every rule's evaluation for every pod of one deployment."""
    body = controller.registry.deployments.get(key)
    if body is None:
        msg = f"InferenceDeployment {key[0]}/{key[1]} not found"
        raise LookupError(msg)
    await controller.read_targets()
    context = inputs.context_for(controller.registry, key, body)
    report: dict[str, Any] = {"deployment": f"{key[0]}/{key[1]}"}
    if context.policy is None:
        report["error"] = context.error
        return report
    policy = context.policy
    queries, snapshot = await controller.prepare([context])
    evaluation = controller.evaluate(context, snapshot, queries, controller.clock())
    report["policy"] = {
        "sources": list(policy.sources),
        "server": policy.server,
        "switchedOff": [entry.describe(policy.server) for entry in policy.switched_off],
        "dryRun": policy.dry_run or controller.settings.dry_run,
        "quorum": policy.health.quorum,
        "warmupSeconds": policy.health.warmup_s,
        "minRequestRate": policy.health.min_request_rate,
        "staleAfterSeconds": policy.health.stale_after_s,
        "rules": [
            {
                "name": rule.name,
                "signal": rule.signal,
                "kind": rule.kind.value,
                "rule": rule.describe(),
                "sufficient": rule.sufficient,
                "requiresTraffic": rule.requires_traffic,
            }
            for rule in policy.health.rules
        ],
        "disruption": {
            "maxUnavailable": policy.disruption.max_unavailable,
            "minAvailable": policy.disruption.min_available,
            "cooldownSeconds": policy.disruption.cooldown_s,
            "maxRecyclesPerHour": policy.disruption.max_recycles_per_hour,
            "maxDegradedPercent": policy.disruption.max_degraded_percent,
            "flapWindowSeconds": policy.disruption.flap_window_s,
        },
    }
    metrics = evaluation.metrics
    report["metrics"] = {
        "available": metrics.available,
        "reason": metrics.reason,
        "message": metrics.message,
    }
    pods = []
    for pod in context.pods:
        verdict = evaluation.verdict(pod)
        pods.append(
            {
                "name": pod.name,
                "uid": pod.uid,
                "ready": pod.ready,
                "serving": pod.serving,
                "verdict": verdict_label(verdict).value,
                "reasons": reason_texts(verdict),
                "rules": [
                    {
                        "rule": item.rule.name,
                        "state": item.state.value,
                        "observed": item.observed,
                        "level": item.level,
                        "text": item.describe(),
                    }
                    for item in (verdict.evaluations if verdict else ())
                ],
            }
        )
    report["pods"] = pods
    report["blind"] = [item.describe() for item in evaluation.blind]
    report["operation"] = (body.get("status") or {}).get("operation")
    return report
