"""The owned objects built from an InferenceDeployment (pure builders, no cluster)."""

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


def test_agent_can_be_turned_off_and_recreate_needs_no_shared_pid_namespace() -> None:
    spec = SPEC.model_copy(
        update={"agent": None, "restart_strategy": "Recreate", "session_store": None}
    )
    sts = workload.stateful_set("llm", "ns", "uid-1", spec, "img:1")
    names = [c["name"] for c in sts["spec"]["template"]["spec"]["containers"]]
    assert names == ["vllm"]
    assert "shareProcessNamespace" not in sts["spec"]["template"]["spec"]
    assert "volumeClaimTemplates" not in sts["spec"]
