"""KWOK: fake nodes and the lifecycle of their pods, from the stages in ``data/kwok-stages.yaml``.

Only nodes annotated ``kwok.x-k8s.io/node=fake`` are managed; their pods get addresses from the
node's /24 of the pod CIDR.
"""

from __future__ import annotations

import json

from localcluster import data
from localcluster.addresses import HOST, KWOK_SERVER_PORT
from localcluster.components.context import Context
from localcluster.process import Component

NODE_SELECTOR = "kwok.x-k8s.io/node=fake"
NODE_RESOURCES = {
    "cpu": "32",
    "memory": "256Gi",
    "pods": "110",
    "nvidia.com/gpu": "8",
    "ephemeral-storage": "1Ti",
}


def config_path(ctx: Context) -> str:
    return str(ctx.state / "kwok" / "kwok.yaml")


def component(ctx: Context) -> Component:
    return Component(
        "kwok",
        [
            str(ctx.bin / "kwok"),
            f"--config={config_path(ctx)}",
            f"--kubeconfig={ctx.kubeconfig}",
            "--manage-all-nodes=false",
            f"--manage-nodes-with-annotation-selector={NODE_SELECTOR}",
            f"--cidr={ctx.pod_cidr}",
            f"--node-ip={HOST}",
            f"--server-address={HOST}:{KWOK_SERVER_PORT}",
        ],
        f"http://{HOST}:{KWOK_SERVER_PORT}/healthz",
        KWOK_SERVER_PORT,
    )


def render_config(pod_cidr: str) -> str:
    """KWOK's configuration document followed by the stages (one multi-document YAML)."""
    options = {
        "apiVersion": "config.kwok.x-k8s.io/v1alpha1",
        "kind": "KwokConfiguration",
        "options": {
            "cidr": pod_cidr,
            "nodeIP": HOST,
            "manageAllNodes": False,
            "manageNodesWithAnnotationSelector": NODE_SELECTOR,
            "serverAddress": f"{HOST}:{KWOK_SERVER_PORT}",
            "nodeLeaseDurationSeconds": 40,
            # A config file replaces KWOK's defaults rather than merging with them: every
            # option it needs is spelled out.
            "nodeLeaseParallelism": 4,
            "podPlayStageParallelism": 4,
            "nodePlayStageParallelism": 4,
            "podsOnNodeSyncParallelism": 2,
            "enablePodsOnNodeSyncListPager": True,
            "enablePodsOnNodeSyncStreamWatch": False,
            "enableDebuggingHandlers": False,
            "enableContentionProfiling": False,
            "enableProfilingHandler": False,
        },
    }
    return json.dumps(options, indent=2) + "\n---\n" + stages() + "\n"


def stages() -> str:
    """The stages, without the file's leading comment."""
    lines = data.read("kwok-stages.yaml").splitlines()
    while lines and lines[0].startswith("#"):
        lines.pop(0)
    return "\n".join(lines).strip()


def node_manifest(index: int, pod_cidr: str) -> dict[str, object]:
    """The Node object of fake node ``kwok-node-<index>`` with its /24 of pod addresses."""
    name = f"kwok-node-{index}"
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
            "labels": {
                "type": "kwok",
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "node-role.kubernetes.io/agent": "",
                "nvidia.com/gpu.present": "true",
            },
        },
        "spec": {"podCIDR": pod_cidr, "podCIDRs": [pod_cidr]},
        "status": {"capacity": dict(NODE_RESOURCES), "allocatable": dict(NODE_RESOURCES)},
    }
