"""Rendered configuration: KWOK, Prometheus, nodes and the components' command lines."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml

from localcluster import addresses, data
from localcluster.build import prometheus_binary
from localcluster.components import all_components, kwok, prometheus
from localcluster.components.context import Context
from localcluster.errors import ClusterError

GOLDEN = Path(__file__).parent / "golden"
STATE = Path("/state")


def _context() -> Context:
    return Context(
        state=STATE, bin=Path("/bin-dir"), pod_cidr="198.18.0.0/16", prometheus_port=19090
    )


def test_the_prometheus_configuration_matches_its_golden_file() -> None:
    rendered = prometheus.render_config(STATE, 19090)
    assert rendered == (GOLDEN / "prometheus.yml").read_text()


def test_the_prometheus_configuration_scrapes_the_file_sd_directory_with_honored_labels() -> None:
    config = yaml.safe_load(prometheus.render_config(STATE, 19555))
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert jobs["prometheus"]["static_configs"] == [{"targets": ["127.0.0.1:19555"]}]
    assert jobs["infercycle-targets"]["honor_labels"] is True
    assert jobs["infercycle-targets"]["file_sd_configs"][0]["files"] == [
        "/state/prometheus/targets/*.json"
    ]


@pytest.mark.parametrize("real_node", [False, True])
def test_the_pinned_promtool_accepts_the_prometheus_configuration(
    tmp_path: Path, real_node: bool
) -> None:
    promtool = prometheus_binary("promtool")
    if not promtool.is_file():
        pytest.skip(f"{promtool} is not built yet (`hack/cluster build` builds it)")
    (tmp_path / "pki").mkdir()
    for name in ("ca.crt", "admin.crt", "admin.key"):
        (tmp_path / "pki" / name).write_text("")
    path = tmp_path / "prometheus.yml"
    path.write_text(prometheus.render_config(tmp_path, 19090, real_node=real_node))
    result = subprocess.run(
        [str(promtool), "check", "config", "--syntax-only", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_with_the_real_node_prometheus_finds_the_kubelet_and_pods_through_the_api() -> None:
    config = yaml.safe_load(prometheus.render_config(STATE, 19090, real_node=True))
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    cadvisor = jobs["kubelet-cadvisor"]
    assert cadvisor["metrics_path"] == "/metrics/cadvisor"
    assert cadvisor["scheme"] == "https"
    assert cadvisor["tls_config"]["ca_file"] == "/state/pki/ca.crt"
    (discovery,) = cadvisor["kubernetes_sd_configs"]
    assert discovery["role"] == "node"
    assert discovery["api_server"] == "https://127.0.0.1:16443"
    assert jobs["kubelet-resource"]["metrics_path"] == "/metrics/resource"
    pods = jobs["kubernetes-pods"]
    assert pods["kubernetes_sd_configs"][0]["role"] == "pod"
    address = next(r for r in pods["relabel_configs"] if r.get("target_label") == "__address__")
    assert address["replacement"] == "$1:$2"
    targets = {r.get("target_label") for r in pods["relabel_configs"]}
    assert {"namespace", "pod"} <= targets
    kwok_only = yaml.safe_load(prometheus.render_config(STATE, 19090))["scrape_configs"]
    assert [job["job_name"] for job in kwok_only] == ["prometheus", "infercycle-targets"]


def test_kwok_configuration_comes_first_then_every_stage() -> None:
    documents = list(yaml.safe_load_all(kwok.render_config("198.18.0.0/16")))
    options = documents[0]["options"]
    assert documents[0]["kind"] == "KwokConfiguration"
    assert options["cidr"] == "198.18.0.0/16"
    assert options["manageAllNodes"] is False
    assert options["manageNodesWithAnnotationSelector"] == "kwok.x-k8s.io/node=fake"
    assert [d["kind"] for d in documents[1:]] == ["Stage"] * (len(documents) - 1)
    assert [d["metadata"]["name"] for d in documents[1:]] == [
        "node-initialize",
        "node-heartbeat",
        "pod-ready",
        "pod-complete",
        "pod-delete",
        "pvc-provision",
        "pv-bound",
        "pv-release",
    ]


def test_the_stages_file_is_the_stages_the_configuration_carries() -> None:
    from_file = list(yaml.safe_load_all(data.read("kwok-stages.yaml")))
    rendered = list(yaml.safe_load_all(kwok.render_config("127.10.0.0/16")))[1:]
    assert rendered == from_file


def test_pods_honour_the_simulator_annotations_for_readiness_and_deletion() -> None:
    stages = {d["metadata"]["name"]: d for d in yaml.safe_load_all(data.read("kwok-stages.yaml"))}
    ready = stages["pod-ready"]["spec"]
    keys = [e["key"] for e in ready["selector"]["matchExpressions"]]
    assert '.metadata.annotations["sim.infercycle.io/never-ready"]' in keys
    assert "sim.infercycle.io/ready-delay" in ready["delay"]["durationFrom"]["expressionFrom"]
    delete = stages["pod-delete"]["spec"]["delay"]["durationFrom"]["expressionFrom"]
    assert "sim.infercycle.io/delete-delay" in delete


def test_the_bootstrap_objects_make_standard_the_default_storage_class() -> None:
    (storage_class,) = yaml.safe_load_all(data.read("bootstrap.yaml"))
    assert storage_class["kind"] == "StorageClass"
    assert storage_class["metadata"]["name"] == "standard"
    annotations = storage_class["metadata"]["annotations"]
    assert annotations["storageclass.kubernetes.io/is-default-class"] == "true"


def test_each_node_gets_the_next_slash_24_of_the_pod_cidr() -> None:
    assert addresses.node_cidrs("198.18.0.0/16", 3) == [
        "198.18.0.0/24",
        "198.18.1.0/24",
        "198.18.2.0/24",
    ]


@pytest.mark.parametrize(
    ("cidr", "count", "message"),
    [
        ("198.18.0.0/25", 1, "prefix of /24 or shorter"),
        ("fd00::/64", 1, "must be IPv4"),
        ("198.18.0.0/23", 3, "fewer than 3 /24 subnets"),
    ],
)
def test_a_pod_cidr_that_cannot_hold_the_nodes_is_refused(
    cidr: str, count: int, message: str
) -> None:
    with pytest.raises(ClusterError, match=message):
        addresses.node_cidrs(cidr, count)


def test_a_fake_node_is_annotated_for_kwok_and_carries_its_pod_cidr() -> None:
    node = kwok.node_manifest(4, "198.18.4.0/24")
    metadata = node["metadata"]
    assert isinstance(metadata, dict)
    assert metadata["name"] == "kwok-node-4"
    assert metadata["annotations"]["kwok.x-k8s.io/node"] == "fake"
    assert metadata["labels"]["type"] == "kwok"
    assert node["spec"] == {"podCIDR": "198.18.4.0/24", "podCIDRs": ["198.18.4.0/24"]}
    json.dumps(node)  # applied as JSON


def test_components_start_in_dependency_order_on_distinct_ports() -> None:
    comps = all_components(_context())
    assert [c.name for c in comps] == [
        "etcd",
        "kube-apiserver",
        "kube-controller-manager",
        "kube-scheduler",
        "kwok",
        "prometheus",
    ]
    assert len({c.port for c in comps}) == len(comps)


def test_every_component_names_the_state_directory_so_down_can_find_it() -> None:
    for comp in all_components(_context()):
        assert any(f"{STATE}/" in arg for arg in comp.argv[1:]), comp.name


def test_the_api_server_and_controller_manager_agree_on_the_service_range() -> None:
    comps = {c.name: c for c in all_components(_context())}
    flag = f"--service-cluster-ip-range={addresses.SERVICE_CIDR}"
    assert flag in comps["kube-apiserver"].argv
    assert flag in comps["kube-controller-manager"].argv
