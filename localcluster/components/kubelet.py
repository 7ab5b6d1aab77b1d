"""The real node's kubelet: registers ``infercycle-node`` with a taint, so only pods that ask for
the real node (tests, the demo) land on it and every KWOK-sized workload stays on KWOK nodes.

What this machine needs, spelled out in the configuration: cgroup v1 allowed explicitly
(``failCgroupV1: false``) with the cgroupfs driver; the node address 198.19.255.1 (the kubelet
refuses a loopback one, and the API server needs it for ``logs``, ``exec`` and the node proxy);
a serving certificate from the cluster CA, so the API server and Prometheus verify it; webhook
authentication and authorization, so a missing permission fails as it would in production.
"""

from __future__ import annotations

import json
from pathlib import Path

from localcluster.addresses import (
    HOST,
    KUBELET_HEALTHZ_PORT,
    KUBELET_PORT,
    NODE_IP,
    NODE_NAME,
    NODE_POD_CIDR,
)
from localcluster.components import containerd
from localcluster.components.context import Context
from localcluster.process import Component

NODE_LABEL = "infercycle.io/node"
NODE_TAINT = "infercycle.io/real-node"


def folder(state: Path) -> Path:
    return state / "kubelet"


def render_config(state: Path) -> dict[str, object]:
    pki = state / "pki"
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "address": NODE_IP,
        "port": KUBELET_PORT,
        "readOnlyPort": 0,
        "healthzBindAddress": HOST,
        "healthzPort": KUBELET_HEALTHZ_PORT,
        "tlsCertFile": str(pki / "kubelet-serving.crt"),
        "tlsPrivateKeyFile": str(pki / "kubelet-serving.key"),
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True, "cacheTTL": "10s"},
            "x509": {"clientCAFile": str(pki / "ca.crt")},
        },
        "authorization": {"mode": "Webhook"},
        "containerRuntimeEndpoint": f"unix://{containerd.socket_path(state)}",
        "cgroupDriver": "cgroupfs",
        "failCgroupV1": False,
        "failSwapOn": False,
        "podCIDR": NODE_POD_CIDR,
        "maxPods": 40,
        "resolvConf": "/etc/resolv.conf",
        "registerWithTaints": [{"key": NODE_TAINT, "value": "true", "effect": "NoSchedule"}],
        # The test machine's disk and memory are shared: evict only when really short.
        "evictionHard": {
            "memory.available": "100Mi",
            "nodefs.available": "1%",
            "nodefs.inodesFree": "1%",
            "imagefs.available": "1%",
        },
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "serializeImagePulls": False,
        "nodeStatusUpdateFrequency": "5s",
        "nodeStatusReportFrequency": "30s",
        "syncFrequency": "10s",
        "fileCheckFrequency": "10s",
        "volumePluginDir": str(folder(state) / "volume-plugins"),
        "localStorageCapacityIsolation": True,
        "protectKernelDefaults": False,
        "makeIPTablesUtilChains": True,
        "shutdownGracePeriod": "0s",
    }


def write_config(state: Path) -> None:
    folder(state).mkdir(parents=True, exist_ok=True)
    (folder(state) / "config.yaml").write_text(json.dumps(render_config(state), indent=2) + "\n")


def component(ctx: Context) -> Component:
    return Component(
        "kubelet",
        [
            str(ctx.bin / "kubelet"),
            f"--config={folder(ctx.state) / 'config.yaml'}",
            f"--kubeconfig={ctx.state / 'kubeconfig-kubelet'}",
            f"--root-dir={folder(ctx.state) / 'root'}",
            f"--cert-dir={folder(ctx.state) / 'pki'}",
            f"--hostname-override={NODE_NAME}",
            f"--node-ip={NODE_IP}",
            f"--node-labels={NODE_LABEL}=real",
            "--v=1",
        ],
        f"http://{HOST}:{KUBELET_HEALTHZ_PORT}/healthz",
        KUBELET_HEALTHZ_PORT,
    )
