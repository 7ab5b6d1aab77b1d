"""What every component's command line is built from."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Context:
    state: Path
    bin: Path
    pod_cidr: str
    prometheus_port: int
    real_node: bool = False

    @property
    def pki(self) -> Path:
        return self.state / "pki"

    @property
    def kubeconfig(self) -> Path:
        return self.state / "kubeconfig"
