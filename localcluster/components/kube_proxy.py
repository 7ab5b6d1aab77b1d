"""kube-proxy of the real node, iptables mode: Service addresses (198.19.128.0/20) reach pods and
the API server from inside pods.

``masqueradeAll`` sends every Service connection's replies back through the host, so a pod can
reach a Service whose backend sits on the same bridge; the conntrack sysctls are left alone
(``maxPerCore: 0`` and zero timeouts), since this sandbox may not allow writing them.
"""

from __future__ import annotations

import json
from pathlib import Path

from localcluster.addresses import (
    HOST,
    KUBE_PROXY_HEALTHZ_PORT,
    KUBE_PROXY_METRICS_PORT,
    NODE_NAME,
    NODE_POD_CIDR,
)
from localcluster.components.context import Context
from localcluster.process import Component


def folder(state: Path) -> Path:
    return state / "kube-proxy"


def render_config(state: Path) -> dict[str, object]:
    return {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "clientConnection": {"kubeconfig": str(state / "kubeconfig-kube-proxy")},
        "mode": "iptables",
        "hostnameOverride": NODE_NAME,
        "clusterCIDR": NODE_POD_CIDR,
        "healthzBindAddress": f"{HOST}:{KUBE_PROXY_HEALTHZ_PORT}",
        "metricsBindAddress": f"{HOST}:{KUBE_PROXY_METRICS_PORT}",
        "iptables": {"masqueradeAll": True, "syncPeriod": "10s", "minSyncPeriod": "1s"},
        "conntrack": {
            "maxPerCore": 0,
            "min": 0,
            "tcpEstablishedTimeout": "0s",
            "tcpCloseWaitTimeout": "0s",
        },
    }


def write_config(state: Path) -> None:
    folder(state).mkdir(parents=True, exist_ok=True)
    (folder(state) / "config.yaml").write_text(json.dumps(render_config(state), indent=2) + "\n")


def component(ctx: Context) -> Component:
    return Component(
        "kube-proxy",
        [
            str(ctx.bin / "kube-proxy"),
            f"--config={folder(ctx.state) / 'config.yaml'}",
            "--v=1",
        ],
        f"http://{HOST}:{KUBE_PROXY_HEALTHZ_PORT}/healthz",
        KUBE_PROXY_HEALTHZ_PORT,
    )
