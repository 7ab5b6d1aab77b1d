"""``infercycle run``: settings, logging, metrics endpoint, then kopf, standalone."""

from __future__ import annotations

import argparse
import logging
import os
import socket
import sys
from collections.abc import Sequence

from pydantic import ValidationError

from infercycle.settings import OperatorSettings

LEASE_NAME = "infercycle-operator-leader"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="infercycle run",
        description="Run the operator. Flags override the INFERCYCLE_* environment variables.",
    )
    parser.add_argument("--kubeconfig", help="kubeconfig file (default: in-cluster or KUBECONFIG)")
    parser.add_argument("--prometheus-url", help="Prometheus base URL")
    parser.add_argument("--namespace", action="append", help="namespace to watch (repeatable)")
    parser.add_argument("--cycle-interval", help='time between cycles, e.g. "30s"')
    parser.add_argument("--dry-run", action="store_true", default=None, help="never act")
    parser.add_argument("--metrics-port", type=int, help="port of /metrics")
    parser.add_argument("--health-port", type=int, help="port of /healthz")
    parser.add_argument("--agent-image", help="image of the agent sidecar")
    parser.add_argument("--log-format", choices=["json", "text"])
    return parser


def load_settings(args: argparse.Namespace) -> OperatorSettings:
    overrides = {
        key: value
        for key, value in {
            "prometheus_url": args.prometheus_url,
            "namespaces": args.namespace,
            "cycle_interval": args.cycle_interval,
            "dry_run": args.dry_run,
            "metrics_port": args.metrics_port,
            "health_port": args.health_port,
            "agent_image": args.agent_image,
            "log_format": args.log_format,
        }.items()
        if value is not None
    }
    return OperatorSettings(**overrides)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = load_settings(args)
    except ValidationError as error:
        for problem in error.errors():
            field = ".".join(str(part) for part in problem["loc"])
            env = f"INFERCYCLE_{field.upper()}"
            print(f"error: setting {field} ({env}): {problem['msg']}", file=sys.stderr)
        return 2
    if args.kubeconfig:
        os.environ["KUBECONFIG"] = args.kubeconfig

    import kopf  # noqa: PLC0415 - imported late so `--help` and setting errors stay fast
    from prometheus_client import start_http_server  # noqa: PLC0415

    from infercycle import handlers  # noqa: PLC0415
    from infercycle.cycle.controller import FleetController  # noqa: PLC0415
    from infercycle.kube.api import KubeApi, load_config  # noqa: PLC0415
    from infercycle.prom.reader import PrometheusReader  # noqa: PLC0415

    kopf.configure(
        log_format=kopf.LogFormat.JSON if settings.log_format == "json" else kopf.LogFormat.PLAIN,
        verbose=False,
    )
    logging.getLogger("infercycle").setLevel(logging.INFO)
    # kopf reports every watch event it handles; the cycle's own log says what matters.
    logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    try:
        reader = PrometheusReader(settings)
    except OSError as error:
        print(f"error: Prometheus credentials could not be read: {error}", file=sys.stderr)
        return 2
    kube = KubeApi(load_config(args.kubeconfig))
    controller = FleetController(settings, kube, reader)
    elector = None
    if settings.leader_election:
        from infercycle.kube.lease import LeaseElector  # noqa: PLC0415

        identity = f"{os.environ.get('POD_NAME') or socket.gethostname()}-{os.getpid()}"
        elector = LeaseElector(
            kube.client, settings.operator_namespace, LEASE_NAME, identity=identity
        )
    start_http_server(settings.metrics_port)
    # With namespaces listed, kopf watches only those (cluster-scoped resources stay
    # cluster-wide), so a Role in each of them is all the operator needs there.
    kopf.run(
        memo=handlers.memo_for(controller, elector),
        standalone=True,
        clusterwide=not settings.namespaces,
        namespaces=settings.namespaces,
        liveness_endpoint=f"http://0.0.0.0:{settings.health_port}/healthz",
    )
    return 0
