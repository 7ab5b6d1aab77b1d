"""Prometheus: scrapes itself and every target a test drops into its file_sd directory.

The configuration is ``data/prometheus.yml`` with its ``${name}`` placeholders filled in.
"""

from __future__ import annotations

import shutil
import string
from pathlib import Path

from localcluster import data
from localcluster.addresses import HOST
from localcluster.components.context import Context
from localcluster.process import Component


def config_dir(state: Path) -> Path:
    return state / "prometheus"


def targets_dir(state: Path) -> Path:
    return config_dir(state) / "targets"


def render_config(state: Path, port: int) -> str:
    template = string.Template(data.read("prometheus.yml"))
    body = template.substitute(listen=f"{HOST}:{port}", targets_dir=str(targets_dir(state)))
    lines = body.splitlines()
    while lines and lines[0].startswith("#"):
        lines.pop(0)
    return "\n".join(lines) + "\n"


def component(ctx: Context) -> Component:
    binary = shutil.which("prometheus") or "/usr/bin/prometheus"
    folder = config_dir(ctx.state)
    return Component(
        "prometheus",
        [
            binary,
            f"--config.file={folder / 'prometheus.yml'}",
            f"--storage.tsdb.path={folder / 'data'}",
            "--storage.tsdb.retention.time=6h",
            f"--web.listen-address={HOST}:{ctx.prometheus_port}",
            "--web.enable-lifecycle",
            "--web.enable-admin-api",
            "--log.level=warn",
        ],
        f"http://{HOST}:{ctx.prometheus_port}/-/ready",
        ctx.prometheus_port,
    )
