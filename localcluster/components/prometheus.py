"""Prometheus: scrapes itself and every target a test drops into its file_sd directory, and,
with the real node, the kubelet and annotated pods.

The configuration is ``data/prometheus.yml`` (plus ``data/prometheus-node.yml`` with the real
node) with its placeholders filled in. With the real node it also listens on the node's address,
so pods reach it through a Service.
"""

from __future__ import annotations

import string
from pathlib import Path

from localcluster import data
from localcluster.addresses import APISERVER_PORT, HOST
from localcluster.build import prometheus_binary
from localcluster.components.context import Context
from localcluster.process import Component


def config_dir(state: Path) -> Path:
    return state / "prometheus"


def targets_dir(state: Path) -> Path:
    return config_dir(state) / "targets"


def _without_leading_comment(text: str) -> str:
    lines = text.splitlines()
    while lines and lines[0].startswith("#"):
        lines.pop(0)
    return "\n".join(lines) + "\n"


def render_config(state: Path, port: int, real_node: bool = False) -> str:
    template = string.Template(data.read("prometheus.yml"))
    body = template.substitute(listen=f"{HOST}:{port}", targets_dir=str(targets_dir(state)))
    if real_node:
        pki = state / "pki"
        body += string.Template(data.read("prometheus-node.yml")).substitute(
            api_server=f"https://{HOST}:{APISERVER_PORT}",
            ca_file=str(pki / "ca.crt"),
            cert_file=str(pki / "admin.crt"),
            key_file=str(pki / "admin.key"),
        )
    return _without_leading_comment(body)


def component(ctx: Context) -> Component:
    binary = str(prometheus_binary("prometheus"))
    folder = config_dir(ctx.state)
    return Component(
        "prometheus",
        [
            binary,
            f"--config.file={folder / 'prometheus.yml'}",
            f"--storage.tsdb.path={folder / 'data'}",
            "--storage.tsdb.retention.time=6h",
            f"--web.listen-address={'0.0.0.0' if ctx.real_node else HOST}:{ctx.prometheus_port}",
            "--web.enable-lifecycle",
            "--web.enable-admin-api",
            "--log.level=warn",
        ],
        f"http://{HOST}:{ctx.prometheus_port}/-/ready",
        ctx.prometheus_port,
    )
