"""The state directory of a running cluster and the settings it was created with.

``$INFERCYCLE_CLUSTER_DIR``, else ``<repo>/.cluster``: certificates (``pki/``), the admin
kubeconfig, each component's data, logs (``logs/``) and pid files (``run/``), and
``cluster.json`` (node count, Prometheus port, pod CIDR, whether ``up`` added the local route).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from localcluster.addresses import auto_pod_cidr

REPO = Path(__file__).resolve().parent.parent


def state_dir() -> Path:
    env = os.environ.get("INFERCYCLE_CLUSTER_DIR")
    return Path(env).resolve() if env else REPO / ".cluster"


def load_settings(state: Path) -> dict[str, object]:
    try:
        settings = json.loads((state / "cluster.json").read_text())
    except (OSError, ValueError):
        return {}
    return settings if isinstance(settings, dict) else {}


def save_settings(state: Path, settings: dict[str, object]) -> None:
    (state / "cluster.json").write_text(json.dumps(settings) + "\n")


def state_pod_cidr(state: Path) -> str:
    return str(load_settings(state).get("pod_cidr") or auto_pod_cidr())
