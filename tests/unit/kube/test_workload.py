"""The owned objects built from an InferenceDeployment (pure builders, no cluster)."""

from typing import Any

from infercycle.api.resolver import resolve_policy
from infercycle.api.resources import InferenceDeploymentSpec
from infercycle.kube import workload

SPEC = InferenceDeploymentSpec.model_validate(
    {
        "replicas": 4,
        "template": {
            "metadata": {"labels": {"app": "llm"}},
            "spec": {
                "containers": [
                    {
                        "name": "vllm",
                        "image": "vllm/vllm-openai",
                        "ports": [{"name": "http", "containerPort": 8000}],
                    }
                ]
            },
        },
        "sessionStore": {"size": "5Gi", "storageClassName": "fast"},
        "agent": {"sessionHook": "http://127.0.0.1:8000/sessions", "keepCheckpoints": 4},
    }
)


def test_statefulset_carries_labels_volume_and_agent() -> None:
    sts = workload.stateful_set("llm", "ns", "uid-1", SPEC, "img:1")
    assert sts["metadata"]["ownerReferences"][0]["uid"] == "uid-1"
    assert sts["spec"]["replicas"] == 4
    template = sts["spec"]["template"]
    labels = template["metadata"]["labels"]
    assert labels == {
        "app": "llm",
        workload.DEPLOYMENT_LABEL: "llm",
        workload.SERVING_LABEL: "true",
    }
    assert sts["spec"]["selector"]["matchLabels"] == {workload.DEPLOYMENT_LABEL: "llm"}
    containers = {c["name"]: c for c in template["spec"]["containers"]}
    assert set(containers) == {"vllm", workload.AGENT_CONTAINER}
    assert {"name": "sessions", "mountPath": workload.DEFAULT_MOUNT_PATH} in containers["vllm"][
        "volumeMounts"
    ]
    agent_args = containers[workload.AGENT_CONTAINER]["args"]
    assert "--session-hook=http://127.0.0.1:8000/sessions" in agent_args
    assert "--keep=4" in agent_args
    assert "--server-process=vllm" in agent_args
    assert template["spec"]["shareProcessNamespace"] is True
    claim = sts["spec"]["volumeClaimTemplates"][0]
    assert claim["spec"]["resources"]["requests"]["storage"] == "5Gi"
    assert claim["spec"]["storageClassName"] == "fast"


def test_user_template_is_not_mutated_and_building_is_idempotent() -> None:
    first = workload.stateful_set("llm", "ns", "uid-1", SPEC, "img:1")
    second = workload.stateful_set("llm", "ns", "uid-1", SPEC, "img:1")
    assert first == second
    assert "volumeMounts" not in SPEC.template["spec"]["containers"][0]


def test_client_service_selects_only_serving_pods_and_headless_selects_all() -> None:
    client = workload.client_service("llm", "ns", "uid-1", SPEC)
    assert client["spec"]["selector"][workload.SERVING_LABEL] == "true"
    assert client["spec"]["ports"][0]["port"] == 8000
    headless = workload.headless_service("llm", "ns", "uid-1", SPEC)
    assert workload.SERVING_LABEL not in headless["spec"]["selector"]
    assert headless["spec"]["clusterIP"] == "None"


def test_pdb_follows_the_effective_policy() -> None:
    pdb = workload.disruption_budget("llm", "ns", "uid-1", SPEC, resolve_policy())
    assert pdb["spec"]["maxUnavailable"] == 1


def test_with_recreate_the_agent_still_sees_the_server_to_restore_into_the_new_pod() -> None:
    spec = SPEC.model_copy(update={"restart_strategy": "Recreate"})
    sts = workload.stateful_set("llm", "ns", "uid-1", spec, "img:1")
    assert sts["spec"]["template"]["spec"]["shareProcessNamespace"] is True


def test_agent_can_be_turned_off_and_recreate_needs_no_shared_pid_namespace() -> None:
    spec = SPEC.model_copy(
        update={"agent": None, "restart_strategy": "Recreate", "session_store": None}
    )
    sts = workload.stateful_set("llm", "ns", "uid-1", spec, "img:1")
    names = [c["name"] for c in sts["spec"]["template"]["spec"]["containers"]]
    assert names == ["vllm"]
    assert "shareProcessNamespace" not in sts["spec"]["template"]["spec"]
    assert "volumeClaimTemplates" not in sts["spec"]


def _with_server_user(user: int | None, strategy: str = "InPlace") -> InferenceDeploymentSpec:
    data = SPEC.model_dump(by_alias=True, exclude_none=True)
    container = data["template"]["spec"]["containers"][0]
    if user is not None:
        container["securityContext"] = {"runAsUser": user, "runAsGroup": user + 1}
    data["restartStrategy"] = strategy
    return InferenceDeploymentSpec.model_validate(data)


def _agent_and_pod(spec: InferenceDeploymentSpec) -> tuple[dict[str, Any], dict[str, Any]]:
    pod = workload.pod_template("llm", spec, "img:1")["spec"]
    (agent,) = [c for c in pod["containers"] if c["name"] == workload.AGENT_CONTAINER]
    return agent, pod


def _meets_restricted(container: dict[str, Any], pod: dict[str, Any]) -> list[str]:
    """The restricted Pod Security Standard's container checks (v1.30), as far as the agent
    sets them; the API server's own check runs in tests/integration."""
    context = container.get("securityContext") or {}
    pod_context = pod.get("securityContext") or {}
    problems = []
    if context.get("allowPrivilegeEscalation") is not False:
        problems.append("allowPrivilegeEscalation")
    if "ALL" not in context.get("capabilities", {}).get("drop", []):
        problems.append("capabilities.drop")
    if set(context.get("capabilities", {}).get("add", [])) - {"NET_BIND_SERVICE"}:
        problems.append("capabilities.add")
    if context.get("runAsNonRoot", pod_context.get("runAsNonRoot")) is not True:
        problems.append("runAsNonRoot")
    if context.get("runAsUser", pod_context.get("runAsUser")) == 0:
        problems.append("runAsUser")
    seccomp = context.get("seccompProfile") or pod_context.get("seccompProfile") or {}
    if seccomp.get("type") not in ("RuntimeDefault", "Localhost"):
        problems.append("seccompProfile")
    return problems


def test_the_agent_runs_as_the_servers_user_without_capabilities_or_fs_group() -> None:
    agent, pod = _agent_and_pod(_with_server_user(1000))
    assert _meets_restricted(agent, pod) == []
    assert agent["securityContext"]["runAsUser"] == 1000
    assert agent["securityContext"]["runAsGroup"] == 1001
    assert "add" not in agent["securityContext"]["capabilities"]
    assert "fsGroup" not in (pod.get("securityContext") or {})
    assert pod["shareProcessNamespace"] is True
    token = next(v for v in pod["volumes"] if v["name"] == "agent-token")
    assert token["secret"]["defaultMode"] == 0o444  # readable without a group


def test_the_pods_user_counts_when_the_server_container_names_none() -> None:
    data = SPEC.model_dump(by_alias=True, exclude_none=True)
    data["template"]["spec"]["securityContext"] = {"runAsUser": 2000, "fsGroup": 3000}
    agent, pod = _agent_and_pod(InferenceDeploymentSpec.model_validate(data))
    assert agent["securityContext"]["runAsUser"] == 2000
    assert pod["securityContext"]["fsGroup"] == 3000  # the user's own, untouched


def test_an_unknown_or_root_server_user_keeps_the_kill_capability_for_in_place_only() -> None:
    for user in (None, 0):
        agent, pod = _agent_and_pod(_with_server_user(user))
        assert agent["securityContext"]["capabilities"]["add"] == ["KILL"]
        assert agent["securityContext"]["runAsUser"] == workload.AGENT_UID
        assert _meets_restricted(agent, pod) == ["capabilities.add"]
        assert pod["securityContext"]["fsGroup"] == workload.AGENT_UID
    agent, pod = _agent_and_pod(_with_server_user(None, "Recreate"))
    assert _meets_restricted(agent, pod) == []
    # No signal to send, but the agent still watches for the new pod's server to restore into.
    assert pod["shareProcessNamespace"] is True


def test_the_agent_port_is_open_to_the_operator_only_and_declared_ports_to_all() -> None:
    data = SPEC.model_dump(by_alias=True, exclude_none=True)
    data["template"]["spec"]["containers"].append(
        {"name": "exporter", "image": "x", "ports": [{"containerPort": 9400}]}
    )
    spec = InferenceDeploymentSpec.model_validate(data)
    policy = workload.agent_network_policy("llm", "ml", "uid-1", spec, "infercycle-system")
    assert policy["metadata"]["ownerReferences"][0]["uid"] == "uid-1"
    assert policy["spec"]["podSelector"] == {"matchLabels": {workload.DEPLOYMENT_LABEL: "llm"}}
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    agent_rule, open_rule = policy["spec"]["ingress"]
    assert agent_rule["ports"] == [{"port": workload.DEFAULT_AGENT_PORT, "protocol": "TCP"}]
    (peer,) = agent_rule["from"]
    assert peer["namespaceSelector"] == {
        "matchLabels": {"kubernetes.io/metadata.name": "infercycle-system"}
    }
    assert peer["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "operator"
    assert "from" not in open_rule
    assert open_rule["ports"] == [
        {"port": 8000, "protocol": "TCP"},
        {"port": 9400, "protocol": "TCP"},
    ]


def test_a_template_that_declares_the_agent_port_does_not_open_it_to_everyone() -> None:
    data = SPEC.model_dump(by_alias=True, exclude_none=True)
    data["template"]["spec"]["containers"][0]["ports"] = [{"containerPort": 8089}]
    spec = InferenceDeploymentSpec.model_validate(data)
    policy = workload.agent_network_policy("llm", "ml", "uid-1", spec, "infercycle-system")
    open_ports = [p for rule in policy["spec"]["ingress"][1:] for p in rule["ports"]]
    assert {"port": 8089, "protocol": "TCP"} not in open_ports
