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
    controller_manager,
    etcd,
    kwok,
    prometheus,
    scheduler,
)
from localcluster.components.context import Context
from localcluster.process import Component
from localcluster.state import state_pod_cidr


def context_for(state: Path) -> Context:
    return Context(
        state=state,
        bin=versions.bin_dir(),
        pod_cidr=state_pod_cidr(state),
        prometheus_port=prometheus_port(),
    )


def all_components(ctx: Context) -> list[Component]:
    return [
        etcd.component(ctx),
        apiserver.component(ctx),
        controller_manager.component(ctx),
        scheduler.component(ctx),
        kwok.component(ctx),
        prometheus.component(ctx),
    ]
