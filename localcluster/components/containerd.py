"""containerd with runc and the CNI plugins: the real node's container runtime.

Its configuration is ``data/containerd.toml`` and its pod network ``data/cni.conflist`` (a
bridge with host-local addresses from the node's pod CIDR), both with placeholders filled in
here. Its root (images, snapshots) and state live under the cluster's state directory, so
``down`` leaves nothing behind; images are imported again from the image cache at ``up``.
"""

from __future__ import annotations

import shutil
import string
from pathlib import Path

from localcluster import data
from localcluster.addresses import NODE_BRIDGE, NODE_POD_CIDR, NODE_POD_GATEWAY
from localcluster.components.context import Context
from localcluster.process import Component

PAUSE_IMAGE = "localhost/infercycle/pause:local"
CNI_BIN_DIRS = ("/usr/lib/cni", "/opt/cni/bin")
# containerd keeps shim sockets under its state; a short path keeps them under the 108-byte
# limit of a unix socket address whatever the checkout's path.
RUN_STATE = Path("/run/infercycle-containerd")


def folder(state: Path) -> Path:
    return state / "containerd"


def socket_path(state: Path) -> Path:
    return folder(state) / "containerd.sock"


def cni_bin_dir() -> str | None:
    """Where the CNI plugins are installed (Debian: /usr/lib/cni), or None."""
    for candidate in CNI_BIN_DIRS:
        if (Path(candidate) / "bridge").is_file() and (Path(candidate) / "host-local").is_file():
            return candidate
    return None


def _strip_comments(text: str) -> str:
    lines = text.splitlines()
    while lines and lines[0].startswith("#"):
        lines.pop(0)
    return "\n".join(lines).strip() + "\n"


def render_config(state: Path, cni_bin: str) -> str:
    return _strip_comments(
        string.Template(data.read("containerd.toml")).substitute(
            root=str(folder(state) / "root"),
            state=str(RUN_STATE),
            address=str(socket_path(state)),
            pause_image=PAUSE_IMAGE,
            cni_bin_dir=cni_bin,
            cni_conf_dir=str(folder(state) / "net.d"),
        )
    )


def render_cni(state: Path) -> str:
    return string.Template(data.read("cni.conflist")).substitute(
        bridge=NODE_BRIDGE,
        subnet=NODE_POD_CIDR,
        gateway=NODE_POD_GATEWAY,
        ipam_dir=str(folder(state) / "ipam"),
    )


def write_config(state: Path) -> None:
    cni_bin = cni_bin_dir() or CNI_BIN_DIRS[0]
    (folder(state) / "net.d").mkdir(parents=True, exist_ok=True)
    (folder(state) / "config.toml").write_text(render_config(state, cni_bin))
    (folder(state) / "net.d" / "10-infercycle.conflist").write_text(render_cni(state))


def component(ctx: Context) -> Component:
    binary = shutil.which("containerd") or "/usr/bin/containerd"
    return Component(
        "containerd",
        [binary, f"--config={folder(ctx.state) / 'config.toml'}"],
        None,
        0,
    )
