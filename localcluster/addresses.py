"""Where everything listens, and the pod addresses.

Every component listens on 127.0.0.1 at a fixed port (one cluster per machine). Pod addresses
come from a pod CIDR split into one /24 per node:

- as root: 198.18.0.0/16 (RFC 2544 benchmarking range), made local to this host with
  ``ip route add local 198.18.0.0/16 dev lo table local`` (removed again by ``down``);
- otherwise, or when asked: loopback addresses (127.10.0.0/16). Kubernetes refuses loopback
  addresses in Endpoints and EndpointSlices, so Services then list no endpoints.

The real node (kubelet, containerd, kube-proxy) and the Services live in the other half of the
benchmarking range, 198.19.0.0/16, never in a private range: the node's own address
198.19.255.1 sits on a port-less bridge of its own (``infercycle0``; the kernel here has no
dummy links), its pods get 198.19.0.0/24 on the CNI bridge ``icbr0``, and Service addresses come
from 198.19.128.0/20.
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import subprocess

from localcluster.errors import ClusterError, log

HOST = "127.0.0.1"
ETCD_CLIENT_PORT = 12379
ETCD_PEER_PORT = 12380
APISERVER_PORT = 16443
CONTROLLER_MANAGER_PORT = 16257
SCHEDULER_PORT = 16259
KWOK_SERVER_PORT = 16270
DEFAULT_PROMETHEUS_PORT = 19090
SERVICE_CIDR = "198.19.128.0/20"
SERVICE_IP = "198.19.128.1"
NODE_NAME = "infercycle-node"
NODE_IP = "198.19.255.1"
NODE_LINK = "infercycle0"
NODE_POD_CIDR = "198.19.0.0/24"
NODE_POD_GATEWAY = "198.19.0.1"
NODE_BRIDGE = "icbr0"
PROMETHEUS_SERVICE_IP = "198.19.128.90"
KUBELET_PORT = 10250
KUBELET_HEALTHZ_PORT = 10248
KUBE_PROXY_HEALTHZ_PORT = 10256
KUBE_PROXY_METRICS_PORT = 10249
LOOPBACK_POD_CIDR = "127.10.0.0/16"
LOCAL_POD_CIDR = "198.18.0.0/16"
LOOPBACK = ipaddress.IPv4Network("127.0.0.0/8")


def prometheus_port() -> int:
    return int(os.environ.get("INFERCYCLE_PROMETHEUS_PORT", str(DEFAULT_PROMETHEUS_PORT)))


def node_cidrs(pod_cidr: str, count: int) -> list[str]:
    """One /24 of the pod CIDR per node, in order."""
    net = ipaddress.ip_network(pod_cidr)
    if net.version != 4 or net.prefixlen > 24:
        raise ClusterError(f"pod CIDR {pod_cidr} must be IPv4 with a prefix of /24 or shorter")
    subnets = net.subnets(new_prefix=24)
    cidrs = [str(next(subnets, None) or "") for _ in range(count)]
    if not all(cidrs):
        raise ClusterError(f"pod CIDR {pod_cidr} has fewer than {count} /24 subnets")
    return cidrs


def auto_pod_cidr() -> str:
    """Non-loopback pod addresses when this user can make them local, else loopback ones."""
    if os.geteuid() == 0 and shutil.which("ip"):
        return LOCAL_POD_CIDR
    return LOOPBACK_POD_CIDR


def ensure_local_route(pod_cidr: str) -> bool:
    """Make every address of a non-loopback pod CIDR bindable on this host (AnyIP).

    Returns whether a route was added. Loopback CIDRs need nothing: 127.0.0.0/8 is local.
    """
    net = ipaddress.ip_network(pod_cidr)
    if isinstance(net, ipaddress.IPv4Network) and net.subnet_of(LOOPBACK):
        return False
    ip = shutil.which("ip")
    if not ip:
        raise ClusterError(f"pod CIDR {pod_cidr} is not loopback and `ip` (iproute2) is missing")
    shown = subprocess.run(
        [ip, "route", "show", "table", "local", "type", "local", str(net)],
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    if str(net) in shown:
        return False
    proc = subprocess.run(
        [ip, "route", "add", "local", str(net), "dev", "lo", "table", "local"],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise ClusterError(
            f"pod CIDR {pod_cidr} is not loopback, so its addresses must be made local with "
            f"`ip route add local {net} dev lo table local`, which failed (needs root or "
            f"CAP_NET_ADMIN): {proc.stderr.strip()}"
        )
    log(f"added local route {net} dev lo (pod addresses are bindable on this host)")
    return True


def remove_local_route(pod_cidr: str) -> None:
    ip = shutil.which("ip")
    if ip:
        subprocess.run(
            [ip, "route", "del", "local", pod_cidr, "dev", "lo", "table", "local"],
            capture_output=True,
            check=False,
        )
