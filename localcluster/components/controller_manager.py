"""kube-controller-manager: every controller except those of a cloud and of node IPAM
(KWOK nodes carry their pod CIDR in their manifest)."""

from __future__ import annotations

from localcluster.addresses import CONTROLLER_MANAGER_PORT, HOST, SERVICE_CIDR
from localcluster.components.context import Context
from localcluster.process import Component

DISABLED_CONTROLLERS = (
    "cloud-node-lifecycle-controller",
    "service-lb-controller",
    "node-route-controller",
    "node-ipam-controller",
)


def component(ctx: Context) -> Component:
    kubeconfig = str(ctx.kubeconfig)
    pki = ctx.pki
    return Component(
        "kube-controller-manager",
        [
            str(ctx.bin / "kube-controller-manager"),
            f"--kubeconfig={kubeconfig}",
            f"--authentication-kubeconfig={kubeconfig}",
            f"--authorization-kubeconfig={kubeconfig}",
            f"--bind-address={HOST}",
            f"--secure-port={CONTROLLER_MANAGER_PORT}",
            f"--cert-dir={ctx.state / 'kcm-certs'}",
            "--controllers=*," + ",".join(f"-{name}" for name in DISABLED_CONTROLLERS),
            "--leader-elect=false",
            "--use-service-account-credentials=true",
            f"--service-account-private-key-file={pki / 'sa.key'}",
            f"--root-ca-file={pki / 'ca.crt'}",
            f"--cluster-signing-cert-file={pki / 'ca.crt'}",
            f"--cluster-signing-key-file={pki / 'ca.key'}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--allocate-node-cidrs=false",
            "--concurrent-statefulset-syncs=5",
            "--profiling=false",
            "--v=1",
        ],
        f"https://{HOST}:{CONTROLLER_MANAGER_PORT}/healthz",
        CONTROLLER_MANAGER_PORT,
    )
