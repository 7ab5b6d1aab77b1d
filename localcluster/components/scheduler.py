"""kube-scheduler, with its defaults."""

from __future__ import annotations

from localcluster.addresses import HOST, SCHEDULER_PORT
from localcluster.components.context import Context
from localcluster.process import Component


def component(ctx: Context) -> Component:
    kubeconfig = str(ctx.kubeconfig)
    return Component(
        "kube-scheduler",
        [
            str(ctx.bin / "kube-scheduler"),
            f"--kubeconfig={kubeconfig}",
            f"--authentication-kubeconfig={kubeconfig}",
            f"--authorization-kubeconfig={kubeconfig}",
            f"--bind-address={HOST}",
            f"--secure-port={SCHEDULER_PORT}",
            f"--cert-dir={ctx.state / 'scheduler-certs'}",
            "--leader-elect=false",
            "--profiling=false",
            "--v=1",
        ],
        f"https://{HOST}:{SCHEDULER_PORT}/healthz",
        SCHEDULER_PORT,
    )
