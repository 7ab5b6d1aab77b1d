"""One module per component; each builds its ``Component`` (command line, health URL, port)
from a ``Context`` and renders its own configuration.

``all_components`` lists them in start order; ``down`` stops them in reverse.
"""

from __future__ import annotations

from pathlib import Path

from localcluster import versions
from localcluster.addresses import prometheus_port
from localcluster.components import (
    apiserver,
    containerd,
    controller_manager,
    etcd,
    kube_proxy,
    kubelet,
    kwok,
    prometheus,
    scheduler,
)
from localcluster.components.context import Context
from localcluster.process import Component
from localcluster.state import load_settings, state_pod_cidr

NODE_COMPONENTS = ("containerd", "kubelet", "kube-proxy")


def context_for(state: Path, real_node: bool | None = None) -> Context:
    """The context of the cluster in ``state``; ``real_node`` None means as it was created."""
    if real_node is None:
        real_node = bool(load_settings(state).get("real_node"))
    return Context(
        state=state,
        bin=versions.bin_dir(),
        pod_cidr=state_pod_cidr(state),
        prometheus_port=prometheus_port(),
        real_node=real_node,
    )


def all_components(ctx: Context) -> list[Component]:
    """Every component in start order: the real node's only when it runs."""
    node = (
        [containerd.component(ctx), kubelet.component(ctx), kube_proxy.component(ctx)]
        if ctx.real_node
        else []
    )
    return [
        etcd.component(ctx),
        apiserver.component(ctx),
        controller_manager.component(ctx),
        scheduler.component(ctx),
        kwok.component(ctx),
        *node,
        prometheus.component(ctx),
    ]
