"""The real node: whether this machine can run one, its network, its images, its teardown.

A real node needs root, containerd, runc, the CNI plugins, the kubelet and kube-proxy built,
the memory cgroup and a bridge link. ``unsupported_reason`` says in one line why not, and the
cluster then runs on KWOK nodes alone.

Network: the node's address lives on ``infercycle0``, a bridge with no ports (this kernel has no
dummy links); pods get addresses on the CNI bridge ``icbr0``. Teardown removes both, the pod
network namespaces, every container and mount the node made, and kube-proxy's rules.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import string
import subprocess
import time
from pathlib import Path

from localcluster import data
from localcluster.addresses import (
    NODE_BRIDGE,
    NODE_IP,
    NODE_LINK,
    NODE_NAME,
    PROMETHEUS_SERVICE_IP,
)
from localcluster.client import kubectl
from localcluster.components import containerd
from localcluster.errors import ClusterError, log
from localcluster.process import find_processes

NODE_BINARIES = ("kubelet", "kube-proxy")
HOST_TOOLS = ("containerd", "ctr", "runc", "iptables", "buildah")


def unsupported_reason(bin_dir: Path) -> str | None:
    """Why this machine cannot run the real node, or None when it can."""
    reason = host_unsupported_reason()
    if reason is not None:
        return reason
    absent = [name for name in NODE_BINARIES if not (bin_dir / name).is_file()]
    if absent:
        return f"{', '.join(absent)} not built (run `hack/cluster build`)"
    return None


def host_unsupported_reason() -> str | None:
    """Why this machine cannot run containers for the real node, or None when it can."""
    if os.geteuid() != 0:
        return "not root (the kubelet and containerd need root)"
    missing = [tool for tool in HOST_TOOLS if shutil.which(tool) is None]
    if missing:
        return (
            f"{', '.join(missing)} not installed (apt-get install containerd runc "
            "containernetworking-plugins buildah debootstrap iptables)"
        )
    if containerd.cni_bin_dir() is None:
        return "no CNI plugins in /usr/lib/cni (apt-get install containernetworking-plugins)"
    if (
        not Path("/sys/fs/cgroup/memory").is_dir()
        and not Path("/sys/fs/cgroup/cgroup.controllers").is_file()
    ):
        return "no memory cgroup at /sys/fs/cgroup"
    return None


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if check and proc.returncode != 0:
        raise ClusterError(f"ip {' '.join(args)} failed: {proc.stderr.strip()}")
    return proc


def setup_network() -> None:
    """The node's own address on its own link, and forwarding for Service traffic."""
    if _ip("link", "show", NODE_LINK, check=False).returncode != 0:
        _ip("link", "add", NODE_LINK, "type", "bridge")
    if NODE_IP not in _ip("-o", "addr", "show", "dev", NODE_LINK).stdout:
        _ip("addr", "add", f"{NODE_IP}/32", "dev", NODE_LINK)
    _ip("link", "set", NODE_LINK, "up")
    Path("/proc/sys/net/ipv4/ip_forward").write_text("1\n")


def ctr(state: Path, *args: str, stdin_file: Path | None = None) -> str:
    command = ["ctr", f"--address={containerd.socket_path(state)}", "--namespace=k8s.io", *args]
    if stdin_file is not None:
        with stdin_file.open("rb") as stream:
            proc = subprocess.run(command, stdin=stream, capture_output=True, check=False)
    else:
        proc = subprocess.run(command, capture_output=True, check=False)
    if proc.returncode != 0:
        raise ClusterError(f"ctr {' '.join(args)} failed: {proc.stderr.decode().strip()}")
    return proc.stdout.decode()


def wait_for_containerd(state: Path, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        try:
            ctr(state, "version")
        except ClusterError as exc:
            last = str(exc)
            time.sleep(0.2)
        else:
            return
    raise ClusterError(f"containerd did not answer within {timeout:.0f}s: {last}")


def import_images(state: Path, archives: list[Path]) -> None:
    """Load OCI archives into the node's containerd (namespace k8s.io, where the kubelet looks)."""
    for archive in archives:
        started = time.monotonic()
        ctr(state, "images", "import", "--no-unpack=false", str(archive))
        log(f"imported {archive.name} into containerd in {time.monotonic() - started:.1f}s")


def remove_containers(state: Path) -> None:
    """Kill and delete every task and container of the node's containerd."""
    if not containerd.socket_path(state).exists():
        return
    try:
        tasks = ctr(state, "tasks", "list", "--quiet").split()
    except ClusterError:
        return
    for task in tasks:
        with contextlib.suppress(ClusterError):
            ctr(state, "tasks", "kill", "--signal=SIGKILL", task)
    for task in tasks:
        for _ in range(50):
            try:
                ctr(state, "tasks", "delete", "--force", task)
                break
            except ClusterError:
                time.sleep(0.1)
    with contextlib.suppress(ClusterError):
        for container in ctr(state, "containers", "list", "--quiet").split():
            with contextlib.suppress(ClusterError):
                ctr(state, "containers", "delete", container)


def unmount_under(*roots: Path) -> int:
    """Lazily unmount everything mounted below these directories, deepest first."""
    prefixes = [str(root).rstrip("/") + "/" for root in roots]
    points = []
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/mounts").read_text().splitlines():
            point = line.split()[1].replace("\\040", " ")
            if any(point.startswith(prefix) for prefix in prefixes):
                points.append(point)
    for point in sorted(set(points), key=len, reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True, check=False)
    return len(points)


def remove_network() -> None:
    for link in (NODE_BRIDGE, NODE_LINK):
        _ip("link", "del", link, check=False)
    netns = Path("/var/run/netns")
    if netns.is_dir():
        for entry in netns.glob("cni-*"):
            subprocess.run(["umount", "-l", str(entry)], capture_output=True, check=False)
            with contextlib.suppress(OSError):
                entry.unlink()


def cleanup_kube_proxy(bin_dir: Path) -> None:
    binary = bin_dir / "kube-proxy"
    if binary.is_file():
        subprocess.run([str(binary), "--cleanup"], capture_output=True, check=False)


def remove_pod_cgroups() -> None:
    """The kubelet's cgroups (``kubepods``) in every v1 hierarchy, innermost first."""
    for hierarchy in Path("/sys/fs/cgroup").iterdir():
        top = hierarchy / "kubepods"
        if not top.is_dir():
            continue
        for folder in sorted(
            (p for p in top.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True
        ):
            with contextlib.suppress(OSError):
                folder.rmdir()
        with contextlib.suppress(OSError):
            top.rmdir()


LOCAL_VOLUMES = 16
LOCAL_VOLUME_SIZE = "10Gi"
STORAGE_CLASS = "infercycle-local"


def volumes_dir(state: Path) -> Path:
    return state / "volumes"


def local_volumes(state: Path, count: int = LOCAL_VOLUMES) -> list[dict[str, object]]:
    """Local PersistentVolumes on the real node, one directory each, writable by any user.

    The pods' users are not root and a local volume gets no fsGroup ownership change, hence
    the open mode; the directories live in the cluster's state and go with it.
    """
    volumes: list[dict[str, object]] = []
    for index in range(count):
        path = volumes_dir(state) / f"pv-{index:02d}"
        volumes.append(
            {
                "apiVersion": "v1",
                "kind": "PersistentVolume",
                "metadata": {
                    "name": f"infercycle-local-{index:02d}",
                    "labels": {"infercycle.io/local-volume": "true"},
                },
                "spec": {
                    "capacity": {"storage": LOCAL_VOLUME_SIZE},
                    "accessModes": ["ReadWriteOnce"],
                    "persistentVolumeReclaimPolicy": "Retain",
                    "storageClassName": STORAGE_CLASS,
                    "volumeMode": "Filesystem",
                    "local": {"path": str(path)},
                    "nodeAffinity": {
                        "required": {
                            "nodeSelectorTerms": [
                                {
                                    "matchExpressions": [
                                        {
                                            "key": "kubernetes.io/hostname",
                                            "operator": "In",
                                            "values": [NODE_NAME],
                                        }
                                    ]
                                }
                            ]
                        }
                    },
                },
            }
        )
    return volumes


def make_volume_dirs(state: Path, count: int = LOCAL_VOLUMES) -> None:
    for index in range(count):
        path = volumes_dir(state) / f"pv-{index:02d}"
        path.mkdir(parents=True, exist_ok=True)
        path.chmod(0o1777)


def reclaim_released(state: Path) -> list[str]:
    """Empty every local volume whose claim is gone (phase ``Released``) and make it
    ``Available`` again, as a provisioner with a Delete policy would; the names reclaimed.

    The volumes keep ``Retain`` so that a pod recreated on its claim finds its data; a claim
    deleted with its namespace, though, would hold its volume forever, and a long test session
    would run out of the sixteen.
    """
    listed = json.loads(
        kubectl(state, "get", "pv", "-l", "infercycle.io/local-volume=true", "-o", "json")
    )
    root = volumes_dir(state).resolve()
    reclaimed: list[str] = []
    for volume in listed.get("items", []):
        if (volume.get("status") or {}).get("phase") != "Released":
            continue
        name = volume["metadata"]["name"]
        path = Path(volume["spec"]["local"]["path"]).resolve()
        if not path.is_relative_to(root):
            log(f"volume {name}: {path} is outside {root}; left alone")
            continue
        for child in path.iterdir() if path.is_dir() else ():
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child)
            else:
                child.unlink()
        patch = '[{"op": "remove", "path": "/spec/claimRef"}]'
        kubectl(state, "patch", "pv", name, "--type=json", "-p", patch)
        reclaimed.append(name)
    return reclaimed


def bootstrap_manifests(prometheus_port: int) -> str:
    text = string.Template(data.read("real-node.yaml")).substitute(
        node_ip=NODE_IP,
        prometheus_ip=PROMETHEUS_SERVICE_IP,
        prometheus_port=str(prometheus_port),
    )
    lines = text.splitlines()
    while lines and lines[0].startswith("#"):
        lines.pop(0)
    return "\n".join(lines) + "\n"


def kill_shims(state: Path) -> None:
    """containerd's shims outlive containerd; those of this node name its socket."""
    marker = str(containerd.socket_path(state))
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if (
            argv
            and argv[0].endswith(b"containerd-shim-runc-v2")
            and any(marker.encode() in arg for arg in argv)
        ):
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(entry.name), 9)


def running(state: Path) -> bool:
    """Whether any process of this state's real node runs (its settings may be lost)."""
    from localcluster.components import NODE_COMPONENTS, all_components, context_for  # noqa: PLC0415

    ctx = context_for(state, real_node=True)
    return any(
        find_processes(state, comp) for comp in all_components(ctx) if comp.name in NODE_COMPONENTS
    )


# Debian packages of the real node, by the command (or file) that shows each is installed.
NODE_PACKAGES = {
    "containerd": "containerd",
    "runc": "runc",
    "/usr/lib/cni/bridge": "containernetworking-plugins",
    "buildah": "buildah",
    "debootstrap": "debootstrap",
    "iptables": "iptables",
}


def missing_packages() -> list[str]:
    missing = []
    for probe, package in NODE_PACKAGES.items():
        present = Path(probe).exists() if probe.startswith("/") else shutil.which(probe)
        if not present:
            missing.append(package)
    return missing


def ensure_packages() -> str | None:
    """Install the real node's Debian packages when missing; the reason when that cannot be."""
    missing = missing_packages()
    if not missing:
        return None
    apt = shutil.which("apt-get")
    if os.geteuid() != 0 or apt is None:
        return f"{', '.join(missing)} not installed and this is not a root Debian machine"
    log(f"installing the real node's packages: {' '.join(missing)}")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    # No package's own service may start: the cluster runs its own containerd.
    policy = Path("/usr/sbin/policy-rc.d")
    created = not policy.exists()
    if created:
        policy.write_text("#!/bin/sh\nexit 101\n")
        policy.chmod(0o755)
    try:
        install = [apt, "install", "-y", "-qq", "--no-install-recommends", *missing]
        if subprocess.run(install, env=env, check=False).returncode != 0:
            subprocess.run([apt, "update", "-qq"], env=env, check=False)
            if subprocess.run(install, env=env, check=False).returncode != 0:
                return f"apt-get install {' '.join(missing)} failed"
    finally:
        if created:
            policy.unlink(missing_ok=True)
    return None
