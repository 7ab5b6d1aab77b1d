"""``infercycle explain NAMESPACE/NAME``: the effective policy and every rule's verdict, per pod."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence
from typing import Any

from pydantic import ValidationError

from infercycle.settings import OperatorSettings


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="infercycle explain",
        description="Show an InferenceDeployment's effective policy and, for each pod, every "
        "rule's current value against its level and the verdict (as the operator computes it).",
    )
    parser.add_argument("target", metavar="NAMESPACE/NAME")
    parser.add_argument("--kubeconfig", help="kubeconfig file (default: KUBECONFIG)")
    parser.add_argument("--prometheus-url", help="Prometheus base URL")
    parser.add_argument(
        "--cycle-interval",
        help='the operator\'s time between cycles, e.g. "30s" (default: INFERCYCLE_CYCLE_INTERVAL '
        "or 30s): history is read at this step, as the operator reads it",
    )
    parser.add_argument("--output", "-o", choices=["table", "json"], default="table")
    return parser


async def _report(args: argparse.Namespace, settings: OperatorSettings) -> dict[str, Any]:
    from infercycle.cycle.controller import FleetController  # noqa: PLC0415
    from infercycle.cycle.explain import explain  # noqa: PLC0415
    from infercycle.kube.api import KubeApi, load_config  # noqa: PLC0415
    from infercycle.prom.reader import PrometheusReader  # noqa: PLC0415

    namespace, name = args.target.split("/", 1)
    kube = KubeApi(load_config(args.kubeconfig))
    controller = FleetController(settings, kube, PrometheusReader(settings))
    body = kube.read_deployment(namespace, name)
    if body is None:
        msg = f"InferenceDeployment {namespace}/{name} not found"
        raise LookupError(msg)
    registry = controller.registry
    registry.deployments[(namespace, name)] = body
    for policy in kube.custom.list_cluster_custom_object(
        "infercycle.io", "v1alpha1", "recyclepolicies"
    ).get("items", []):
        registry.policies[policy["metadata"]["name"]] = policy.get("spec") or {}
    ns = kube.core.read_namespace(namespace)
    registry.namespaces[namespace] = dict(ns.metadata.labels or {})
    # Every pod of the namespace: the registry finds the deployment's own by its selector (the
    # owned pods' label, or an attached workload's selector).
    pods = kube.core.list_namespaced_pod(namespace, _preload_content=False)
    for pod in json.loads(pods.data).get("items", []):
        registry.put_pod(pod, deleted=False)
    return await explain(controller, (namespace, name))


def render_table(report: dict[str, Any]) -> str:
    lines = [f"InferenceDeployment {report['deployment']}"]
    if "error" in report:
        lines.append(f"  policy error: {report['error']}")
        return "\n".join(lines)
    policy = report["policy"]
    lines.append(
        f"  policy: {' <- '.join(policy['sources'])}" + ("  (dry-run)" if policy["dryRun"] else "")
    )
    lines.append(
        f"  quorum {policy['quorum']} distinct signals, warm-up {policy['warmupSeconds']:.0f}s, "
        f"minRequestRate {policy['minRequestRate']}/s, "
        f"staleAfter {policy['staleAfterSeconds']:.0f}s"
    )
    disruption = policy["disruption"]
    lines.append(
        "  disruption: " + ", ".join(f"{key} {value}" for key, value in disruption.items())
    )
    lines.append("  rules:")
    width = max((len(rule["name"]) for rule in policy["rules"]), default=4)
    for rule in policy["rules"]:
        flags = []
        if rule["sufficient"]:
            flags.append("sufficient")
        if rule["requiresTraffic"]:
            flags.append("needs traffic")
        suffix = f"  [{', '.join(flags)}]" if flags else ""
        lines.append(f"    {rule['name']:<{width}}  {rule['rule']}{suffix}")
    lines.append(f"  server profile: {policy.get('server', 'vllm')}")
    for text in policy.get("switchedOff") or []:
        lines.append(f"    {text}")
    metrics = report["metrics"]
    lines.append(f"  metrics: {metrics['reason']}: {metrics['message']}")
    for text in report.get("blind") or []:
        lines.append(f"  blind: {text}")
    if report.get("operation"):
        operation = report["operation"]
        lines.append(f"  recycling: {operation['pod']} at step {operation['step']}")
    for pod in report["pods"]:
        state = "ready" if pod["ready"] else "not ready"
        serving = "serving" if pod["serving"] else "drained"
        lines.append(f"\n  pod {pod['name']}  {pod['verdict'].upper()}  ({state}, {serving})")
        for rule in pod["rules"]:
            lines.append(f"    {rule['text']}")
        if not pod["rules"]:
            lines.append("    (no evaluation: no data yet)")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if "/" not in args.target:
        print("error: name the deployment as NAMESPACE/NAME, e.g. serving/llama", file=sys.stderr)
        return 2
    try:
        overrides = {
            key: value
            for key, value in {
                "prometheus_url": args.prometheus_url,
                "cycle_interval": args.cycle_interval,
            }.items()
            if value
        }
        settings = OperatorSettings(**overrides)
    except ValidationError as error:
        print(f"error: {error.errors()[0]['msg']}", file=sys.stderr)
        return 2
    try:
        report = asyncio.run(_report(args, settings))
    except LookupError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except Exception as error:
        print(f"error: could not explain {args.target}: {error}", file=sys.stderr)
        return 1
    if args.output == "json":
        print(json.dumps(report, indent=2, default=str))
    else:
        print(render_table(report))
    return 0
