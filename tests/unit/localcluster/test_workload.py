"""The real node's stand-in InferenceDeployment is valid, and the pods the operator builds from
it land on the real node, mount their claim and let the agent see the server."""

from __future__ import annotations

import subprocess

import jsonschema
import yaml

from infercycle.api.defaults import DEFAULT_RULES
from infercycle.api.resources import InferenceDeployment
from infercycle.kube.workload import AGENT_CONTAINER, stateful_set
from infercycle_sim.fleetsim import ANNOTATION_DISABLED
from localcluster import workload
from localcluster.components.kubelet import NODE_LABEL, NODE_TAINT
from localcluster.node import STORAGE_CLASS
from localcluster.state import REPO

OTHER_RULES = [rule.name for rule in DEFAULT_RULES]


def _manifest(strategy: str = "InPlace") -> dict[str, object]:
    return workload.deployment(
        "llm",
        "ns",
        "localhost/infercycle/standin:local",
        strategy=strategy,
        replicas=3,
        leaking_pod="llm-1",
        other_rules=OTHER_RULES,
    )


def test_the_manifest_validates_with_the_model_and_the_crd_schema() -> None:
    body = _manifest()
    InferenceDeployment.model_validate(body)
    crd = yaml.safe_load((REPO / "crds" / "infercycle.io_inferencedeployments.yaml").read_text())
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    errors = [e.message for e in jsonschema.Draft7Validator(schema).iter_errors(body)]
    assert not errors


def test_only_the_fast_leak_rule_stays_on() -> None:
    spec = InferenceDeployment.model_validate(_manifest()).spec
    assert spec.health is not None
    rules = {rule.name: rule for rule in spec.health.rules or []}
    enabled = [name for name, rule in rules.items() if rule.enabled is not False]
    assert enabled == ["memory-leak"]
    assert rules["memory-leak"].threshold == "2Gi"


def test_the_operator_puts_every_replica_on_the_real_node_with_its_claim() -> None:
    deployment = InferenceDeployment.model_validate(_manifest())
    body = stateful_set(
        "llm", "ns", "uid-1", deployment.spec, "localhost/infercycle/infercycle:local"
    )
    pod = body["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {NODE_LABEL: "real"}
    assert pod["tolerations"][0]["key"] == NODE_TAINT
    assert pod["shareProcessNamespace"] is True, "the agent must see the server to restart it"
    (claim,) = body["spec"]["volumeClaimTemplates"]
    assert claim["spec"]["storageClassName"] == STORAGE_CLASS
    names = [c["name"] for c in pod["containers"]]
    assert names == [workload.SERVER, AGENT_CONTAINER]
    agent = pod["containers"][1]
    assert f"--server-process={workload.SERVER}" in agent["args"]


def test_only_the_named_pod_leaks() -> None:
    container = workload.standin_container("img", "llm-1")
    script = container["command"][2]
    for pod, leaks in (("llm-1", True), ("llm-0", False), ("llm-10", False)):
        shown = subprocess.run(
            ["/bin/sh", "-c", script.replace("exec python3", "echo python3")],
            env={"POD_NAME": pod, "PATH": "/usr/bin:/bin"},
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert ("--leak-mb-per-min" in shown) is leaks, (pod, shown)
        assert "/opt/infercycle-standin/standin.py" in shown


def test_the_fleet_simulator_leaves_the_real_pods_to_cadvisor() -> None:
    """The simulator, when the same session runs it, would add simulated memory series for
    these pods on top of the kubelet's real ones, and hide the leak under them."""
    deployment = InferenceDeployment.model_validate(_manifest())
    body = stateful_set(
        "llm", "ns", "uid-1", deployment.spec, "localhost/infercycle/infercycle:local"
    )
    annotations = body["spec"]["template"]["metadata"]["annotations"]
    assert annotations[ANNOTATION_DISABLED] == "true"
