"""The real node's configuration: containerd, CNI, kubelet, kube-proxy, addresses, volumes."""

from __future__ import annotations

import ipaddress
import json
import tomllib
from pathlib import Path

import pytest
import yaml

from localcluster import addresses, images, node, versions
from localcluster.components import all_components, apiserver, containerd, kube_proxy, kubelet
from localcluster.components.context import Context
from localcluster.errors import ClusterError

STATE = Path("/state")
BENCHMARKING = ipaddress.ip_network("198.18.0.0/15")
PRIVATE = [ipaddress.ip_network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16")]


def _context(real_node: bool = True) -> Context:
    return Context(
        state=STATE, bin=Path("/b"), pod_cidr="198.18.0.0/16", prometheus_port=19090,
        real_node=real_node,
    )  # fmt: skip


@pytest.mark.parametrize(
    "network",
    [
        addresses.SERVICE_CIDR,
        addresses.NODE_POD_CIDR,
        f"{addresses.NODE_IP}/32",
        f"{addresses.SERVICE_IP}/32",
        f"{addresses.PROMETHEUS_SERVICE_IP}/32",
        addresses.LOCAL_POD_CIDR,
    ],
)
def test_every_address_is_in_the_benchmarking_range_and_none_is_private(network: str) -> None:
    net = ipaddress.ip_network(network)
    assert net.subnet_of(BENCHMARKING)  # type: ignore[arg-type]
    assert not any(net.overlaps(private) for private in PRIVATE)


def test_the_real_node_does_not_share_addresses_with_kwok_pods_or_services() -> None:
    kwok = ipaddress.ip_network(addresses.LOCAL_POD_CIDR)
    pods = ipaddress.ip_network(addresses.NODE_POD_CIDR)
    services = ipaddress.ip_network(addresses.SERVICE_CIDR)
    node_ip = ipaddress.ip_address(addresses.NODE_IP)
    assert not pods.overlaps(kwok)
    assert not services.overlaps(pods)
    assert not services.overlaps(kwok)
    for network in (pods, services, kwok):
        assert node_ip not in network
    assert not node_ip.is_loopback
    assert ipaddress.ip_address(addresses.SERVICE_IP) == next(services.hosts())
    assert ipaddress.ip_address(addresses.PROMETHEUS_SERVICE_IP) in services


def test_containerd_runs_pods_without_cap_sys_resource_and_without_a_registry() -> None:
    config = tomllib.loads(containerd.render_config(STATE, "/usr/lib/cni"))
    cri = config["plugins"]["io.containerd.grpc.v1.cri"]
    assert config["version"] == 2
    assert cri["restrict_oom_score_adj"] is True
    assert cri["sandbox_image"] == images.PAUSE_IMAGE
    assert cri["containerd"]["runtimes"]["runc"]["options"]["SystemdCgroup"] is False
    assert cri["cni"] == {
        "bin_dir": "/usr/lib/cni",
        "conf_dir": "/state/containerd/net.d",
        "max_conf_num": 1,
    }
    assert config["grpc"]["address"] == str(containerd.socket_path(STATE))
    assert config["root"] == "/state/containerd/root"


def test_the_shim_sockets_stay_under_the_unix_socket_length_limit() -> None:
    # containerd 1.6 names shim sockets <state>/s/<64 hex digits>.
    assert len(f"unix://{containerd.RUN_STATE}/s/{'0' * 64}") < 108


def test_pods_get_a_bridge_and_addresses_from_the_node_pod_cidr() -> None:
    conflist = json.loads(containerd.render_cni(STATE))
    bridge, portmap = conflist["plugins"]
    assert bridge["type"] == "bridge"
    assert bridge["bridge"] == addresses.NODE_BRIDGE
    assert bridge["isGateway"] is True
    (subnet,) = bridge["ipam"]["ranges"][0]
    assert subnet == {"subnet": addresses.NODE_POD_CIDR, "gateway": addresses.NODE_POD_GATEWAY}
    assert bridge["ipam"]["dataDir"] == "/state/containerd/ipam"
    assert portmap["type"] == "portmap"


def test_the_kubelet_allows_cgroup_v1_and_registers_tainted_on_its_own_address() -> None:
    config = kubelet.render_config(STATE)
    assert config["failCgroupV1"] is False
    assert config["cgroupDriver"] == "cgroupfs"
    assert config["address"] == addresses.NODE_IP
    assert config["containerRuntimeEndpoint"] == f"unix://{containerd.socket_path(STATE)}"
    assert config["registerWithTaints"] == [
        {"key": kubelet.NODE_TAINT, "value": "true", "effect": "NoSchedule"}
    ]
    assert config["authorization"] == {"mode": "Webhook"}
    assert config["authentication"]["anonymous"] == {"enabled": False}  # type: ignore[index]
    assert config["readOnlyPort"] == 0


def test_the_kubelet_command_names_the_node_its_address_and_label() -> None:
    comp = kubelet.component(_context())
    assert f"--node-ip={addresses.NODE_IP}" in comp.argv
    assert f"--hostname-override={addresses.NODE_NAME}" in comp.argv
    assert f"--node-labels={kubelet.NODE_LABEL}=real" in comp.argv


def test_kube_proxy_masquerades_service_traffic_and_leaves_conntrack_sysctls_alone() -> None:
    config = kube_proxy.render_config(STATE)
    assert config["mode"] == "iptables"
    assert config["iptables"]["masqueradeAll"] is True  # type: ignore[index]
    assert config["conntrack"]["maxPerCore"] == 0  # type: ignore[index]
    assert config["clusterCIDR"] == addresses.NODE_POD_CIDR
    assert config["hostnameOverride"] == addresses.NODE_NAME


def test_with_the_real_node_the_api_server_advertises_the_node_address() -> None:
    real = apiserver.component(_context(real_node=True)).argv
    kwok_only = apiserver.component(_context(real_node=False)).argv
    assert f"--advertise-address={addresses.NODE_IP}" in real
    assert "--endpoint-reconciler-type=none" not in real
    assert any(a.startswith("--kubelet-certificate-authority=") for a in real)
    assert "--advertise-address=127.0.0.1" in kwok_only
    assert "--endpoint-reconciler-type=none" in kwok_only


def test_the_real_node_components_run_only_with_the_real_node() -> None:
    with_node = [c.name for c in all_components(_context(real_node=True))]
    without = [c.name for c in all_components(_context(real_node=False))]
    assert with_node[5:8] == ["containerd", "kubelet", "kube-proxy"]
    assert "kubelet" not in without
    assert with_node[-1] == without[-1] == "prometheus"


def test_local_volumes_are_pinned_to_the_real_node_in_the_state_directory() -> None:
    volumes = node.local_volumes(STATE, count=3)
    assert [v["metadata"]["name"] for v in volumes] == [  # type: ignore[index]
        "infercycle-local-00",
        "infercycle-local-01",
        "infercycle-local-02",
    ]
    spec = volumes[1]["spec"]
    assert isinstance(spec, dict)
    assert spec["local"] == {"path": "/state/volumes/pv-01"}
    assert spec["storageClassName"] == node.STORAGE_CLASS
    term = spec["nodeAffinity"]["required"]["nodeSelectorTerms"][0]["matchExpressions"][0]
    assert term["values"] == [addresses.NODE_NAME]


def test_volume_directories_are_writable_by_the_pods_users(tmp_path: Path) -> None:
    node.make_volume_dirs(tmp_path, count=2)
    for index in range(2):
        mode = (tmp_path / "volumes" / f"pv-{index:02d}").stat().st_mode & 0o7777
        assert mode == 0o1777


def test_the_bootstrap_objects_reach_prometheus_on_the_node_through_a_service() -> None:
    docs = {d["kind"]: d for d in yaml.safe_load_all(node.bootstrap_manifests(19555))}
    assert docs["StorageClass"]["metadata"]["name"] == node.STORAGE_CLASS
    assert docs["StorageClass"]["volumeBindingMode"] == "WaitForFirstConsumer"
    service = docs["Service"]
    assert service["spec"]["clusterIP"] == addresses.PROMETHEUS_SERVICE_IP
    assert service["spec"]["ports"][0]["port"] == 19555
    endpoints = docs["EndpointSlice"]
    assert endpoints["metadata"]["labels"]["kubernetes.io/service-name"] == "prometheus"
    assert endpoints["endpoints"][0]["addresses"] == [addresses.NODE_IP]
    assert endpoints["ports"][0]["port"] == 19555


@pytest.mark.parametrize(
    ("release", "module"),
    [("v3.16.0", "v0.316.0"), ("v3.5.2", "v0.305.2"), ("v3.10.1", "v0.310.1")],
)
def test_a_prometheus_release_maps_to_its_go_module_version(release: str, module: str) -> None:
    assert versions.prometheus_module_version(release) == module


@pytest.mark.parametrize("release", ["v2.53.0", "3.16.0", "latest"])
def test_a_prometheus_release_that_is_not_a_3x_version_is_refused(release: str) -> None:
    with pytest.raises(ClusterError, match="Prometheus"):
        versions.prometheus_module_version(release)


def test_the_pinned_prometheus_is_a_3x_release() -> None:
    assert versions.PROMETHEUS_VERSION.startswith("v3.")
    assert versions.prometheus_dir({}, home=Path("/h")) == Path(
        f"/h/.cache/infercycle/tools/prometheus-{versions.PROMETHEUS_VERSION}"
    )


def test_an_image_key_follows_the_content_and_ignores_bytecode(tmp_path: Path) -> None:
    source = tmp_path / "operator"
    source.mkdir()
    (source / "a.py").write_text("x = 1\n")
    first = images.digest_of([source], tmp_path)
    (source / "__pycache__").mkdir()
    (source / "__pycache__" / "a.cpython-311.pyc").write_bytes(b"\0")
    assert images.digest_of([source], tmp_path) == first
    (source / "a.py").write_text("x = 2\n")
    assert images.digest_of([source], tmp_path) != first
    assert images.digest_of([source], tmp_path, extra=["base-1"]) != images.digest_of(
        [source], tmp_path, extra=["base-2"]
    )


def test_without_root_the_real_node_says_why_in_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("os.geteuid", lambda: 1000)
    reason = node.unsupported_reason(Path("/nonexistent"))
    assert reason is not None
    assert "not root" in reason
    assert "\n" not in reason
