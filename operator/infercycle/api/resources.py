"""The InferenceDeployment and RecyclePolicy resources (group ``infercycle.io``, ``v1alpha1``)."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from infercycle.api.base import ApiModel
from infercycle.api.servers import ServerKind
from infercycle.api.spec import (
    SERVER_DESCRIPTION,
    DisruptionSpec,
    HealthSpec,
    RecyclePolicySpec,
    RecycleSpec,
)
from infercycle.api.units import Duration, Quantity
from infercycle.api.values import MAX_RECYCLES_PER_HOUR

GROUP = "infercycle.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
MAX_POD_SUMMARIES = 64
# Every recycle allowed in an hour must fit: the per-hour budget is counted from it.
MAX_HISTORY = MAX_RECYCLES_PER_HOUR
MAX_REASONS = 8

TEMPLATE_OR_TARGET = (
    "set exactly one of spec.template (the operator owns the workload) and spec.targetRef "
    "(attach to an existing Deployment, StatefulSet or LeaderWorkerSet)"
)
REPLICAS_WITH_TEMPLATE = "spec.replicas is required with spec.template"
GROUPS_RECREATE = (
    "spec.restartStrategy must be Recreate for a LeaderWorkerSet target: a group is restarted "
    "as one unit by recreating it"
)

CEL_RULE_CHECKS: list[dict[str, str]] = [
    {
        "rule": "!has(self.clear) || !has(self.threshold) || !has(self.kind) || "
        "!isQuantity(self.clear) || !isQuantity(self.threshold) || "
        "(self.kind == 'below' ? quantity(self.clear).compareTo(quantity(self.threshold)) >= 0 "
        ": quantity(self.clear).compareTo(quantity(self.threshold)) <= 0)",
        "message": "clear must be on the healthy side of threshold: at or below it for "
        "above/growth/baseline/outlier rules, at or above it for below rules",
        "fieldPath": ".clear",
        "reason": "FieldValueInvalid",
    },
    {
        "rule": "!has(self.kind) || !has(self.threshold) || "
        "!(self.kind in ['baseline', 'outlier']) || !isQuantity(self.threshold) || "
        "quantity(self.threshold).compareTo(quantity('1')) > 0",
        "message": 'baseline and outlier thresholds are ratios above 1, such as "1.5"',
        "fieldPath": ".threshold",
        "reason": "FieldValueInvalid",
    },
    *(
        {
            "rule": f"!has(self.{field}) || !isQuantity(self.{field}) || "
            f"quantity(self.{field}).compareTo(quantity('0')) >= 0",
            "message": f"{field} must not be negative: signals are never below zero, so a "
            f'negative level condemns every pod; write a level such as "512Mi" or "0.9"',
            "fieldPath": f".{field}",
            "reason": "FieldValueInvalid",
        }
        for field in ("threshold", "clear", "limit")
    ),
    *(
        {
            "rule": f"!has(self.{field}) || duration(self.{field}) > duration('0s')",
            "message": f"{field} must be longer than 0s: a rule judges the samples in it, and an "
            'empty one never breaches; write a duration such as "5m"',
            "fieldPath": f".{field}",
            "reason": "FieldValueInvalid",
        }
        for field in ("window", "baselineWindow", "timeToLimit")
    ),
]


class RestartStrategy(StrEnum):
    IN_PLACE = "InPlace"
    RECREATE = "Recreate"


class SessionStoreSpec(ApiModel):
    """The per-replica volume that holds session checkpoints."""

    size: Annotated[Quantity, Field(description='Capacity of each replica\'s volume ("10Gi").')]
    storage_class_name: Annotated[str | None, Field(max_length=253)] = None
    mount_path: Annotated[
        str | None,
        Field(
            max_length=4096,
            json_schema_extra={"pattern": "^/"},
            description="Where the volume is mounted (default /var/lib/infercycle/sessions).",
        ),
    ] = None
    access_modes: Annotated[
        list[Literal["ReadWriteOnce", "ReadWriteOncePod", "ReadWriteMany"]] | None,
        Field(max_length=3),
    ] = None


class AgentSpec(ApiModel):
    """The recycle agent sidecar: checkpoints sessions and restarts the server in place."""

    enabled: Annotated[bool | None, Field(description="Inject the agent (default true).")] = None
    image: Annotated[
        str | None, Field(max_length=512, description="Default: the operator's own image.")
    ] = None
    port: Annotated[int | None, Field(ge=1, le=65535, description="Default 8089.")] = None
    session_hook: Annotated[
        str | None,
        Field(
            max_length=2048,
            json_schema_extra={"pattern": "^https?://"},
            description="Server route that returns (GET) and takes back (PUT) the session table.",
        ),
    ] = None
    session_dir: Annotated[
        str | None,
        Field(
            max_length=4096,
            json_schema_extra={"pattern": "^/"},
            description="Directory the server keeps its session files in (shared volume).",
        ),
    ] = None
    keep_checkpoints: Annotated[int | None, Field(ge=1, le=100)] = None
    max_checkpoint_size: Annotated[
        Quantity | None, Field(description='Largest checkpoint (default "256Mi").')
    ] = None
    restart_grace_period: Annotated[
        Duration | None, Field(description="SIGTERM to SIGKILL delay for in-place restarts.")
    ] = None


class TargetKind(StrEnum):
    DEPLOYMENT = "Deployment"
    STATEFUL_SET = "StatefulSet"
    LEADER_WORKER_SET = "LeaderWorkerSet"


TARGET_API_VERSIONS: dict[TargetKind, str] = {
    TargetKind.DEPLOYMENT: "apps/v1",
    TargetKind.STATEFUL_SET: "apps/v1",
    TargetKind.LEADER_WORKER_SET: "leaderworkerset.x-k8s.io/v1",
}


class TargetReference(ApiModel):
    """An existing workload in the deployment's namespace whose pods are judged and recycled;
    the operator never changes its spec."""

    api_version: Annotated[
        Literal["apps/v1", "leaderworkerset.x-k8s.io/v1"],
        Field(
            description="apps/v1 for Deployment and StatefulSet, leaderworkerset.x-k8s.io/v1 "
            "for LeaderWorkerSet."
        ),
    ]
    kind: Annotated[TargetKind, Field(description="Deployment, StatefulSet or LeaderWorkerSet.")]
    name: Annotated[
        str, Field(max_length=253, description="The workload's name, in this namespace.")
    ]

    @model_validator(mode="after")
    def _api_version_of_kind(self) -> TargetReference:
        wanted = TARGET_API_VERSIONS[TargetKind(self.kind)]
        if self.api_version != wanted:
            msg = f"targetRef.apiVersion must be {wanted} for kind {self.kind}"
            raise ValueError(msg)
        return self


class PolicyReference(ApiModel):
    name: Annotated[str, Field(max_length=253, description="A RecyclePolicy's name.")]


class InferenceDeploymentSpec(ApiModel):
    replicas: Annotated[
        int | None,
        Field(
            ge=0,
            le=10000,
            description="Desired serving pods (with template; the target's own replica count "
            "counts with targetRef).",
        ),
    ] = None
    template: Annotated[
        dict[str, Any] | None,
        Field(
            description="Pod template (a core/v1 PodTemplateSpec) of the inference server: the "
            "operator owns a StatefulSet made from it. Exactly one of template and targetRef.",
            json_schema_extra={"x-kubernetes-preserve-unknown-fields": True},
        ),
    ] = None
    target_ref: Annotated[
        TargetReference | None,
        Field(
            description="An existing Deployment, StatefulSet or LeaderWorkerSet to attach to: "
            "its pods are judged and recycled, its spec is never changed. Exactly one of "
            "template and targetRef.",
        ),
    ] = None
    server_container: Annotated[
        str | None,
        Field(
            max_length=63,
            description="Container running the inference server (default: the first).",
        ),
    ] = None
    session_store: SessionStoreSpec | None = None
    restart_strategy: Annotated[
        RestartStrategy | None,
        Field(
            description="InPlace restarts the server process in the same pod through the agent; "
            "Recreate evicts the pod (default InPlace).",
        ),
    ] = None
    agent: AgentSpec | None = None
    server: Annotated[
        ServerKind | None,
        Field(default=None, description=SERVER_DESCRIPTION + " Overrides the policy's."),
    ] = None
    health: HealthSpec | None = None
    disruption: DisruptionSpec | None = None
    recycle: RecycleSpec | None = None
    policy_ref: PolicyReference | None = None
    dry_run: Annotated[
        bool | None, Field(description="Decide and report, never act (overrides the policy).")
    ] = None
    paused: Annotated[
        bool | None, Field(description="Stop recycling this deployment until set back to false.")
    ] = None

    @model_validator(mode="after")
    def _template_or_target(self) -> InferenceDeploymentSpec:
        if (self.template is None) == (self.target_ref is None):
            raise ValueError(TEMPLATE_OR_TARGET)
        if self.template is not None and self.replicas is None:
            raise ValueError(REPLICAS_WITH_TEMPLATE)
        if (
            self.target_ref is not None
            and self.target_ref.kind == TargetKind.LEADER_WORKER_SET
            and self.restart_strategy == RestartStrategy.IN_PLACE
        ):
            raise ValueError(GROUPS_RECREATE)
        return self

    @property
    def attached(self) -> bool:
        """The pods belong to a workload the user manages (``targetRef``)."""
        return self.target_ref is not None

    @property
    def strategy(self) -> RestartStrategy:
        """InPlace by default for owned pods (the agent is injected); Recreate by default for
        attached ones (InPlace needs the agent sidecar the user adds)."""
        if self.restart_strategy is not None:
            return RestartStrategy(self.restart_strategy)
        return RestartStrategy.RECREATE if self.attached else RestartStrategy.IN_PLACE

    @property
    def desired_replicas(self) -> int:
        """The owned StatefulSet's replicas; attached deployments take the target's count."""
        return self.replicas or 0

    def policy_layer(self) -> RecyclePolicySpec:
        """This deployment's own health, disruption and recycle fields as a policy layer."""
        return RecyclePolicySpec(
            server=self.server,
            health=self.health,
            disruption=self.disruption,
            recycle=self.recycle,
            dry_run=self.dry_run,
        )


class ConditionStatus(StrEnum):
    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


class Condition(ApiModel):
    """A metav1.Condition."""

    type: Annotated[str, Field(max_length=316)]
    status: ConditionStatus
    reason: Annotated[
        str,
        Field(
            max_length=1024,
            json_schema_extra={"pattern": "^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$"},
        ),
    ]
    message: Annotated[str, Field(max_length=32768)] = ""
    last_transition_time: Annotated[str, Field(json_schema_extra={"format": "date-time"})]
    observed_generation: Annotated[int | None, Field(ge=0)] = None


class PodVerdict(StrEnum):
    HEALTHY = "Healthy"
    DEGRADED = "Degraded"
    WARMING_UP = "WarmingUp"
    NO_DATA = "NoData"


class PodHealthSummary(ApiModel):
    name: Annotated[str, Field(max_length=253)]
    uid: Annotated[str | None, Field(max_length=64)] = None
    verdict: PodVerdict
    reasons: Annotated[
        list[Annotated[str, Field(max_length=512)]] | None, Field(max_length=MAX_REASONS)
    ] = None
    since: Annotated[str | None, Field(json_schema_extra={"format": "date-time"})] = None
    recycles: Annotated[int | None, Field(ge=0)] = None


class RecycleStep(StrEnum):
    DRAINING = "Draining"
    CHECKPOINTING = "Checkpointing"
    RESTARTING = "Restarting"
    WAITING_READY = "WaitingReady"
    UNDRAINING = "Undraining"
    VERIFYING = "Verifying"


class CheckpointRecord(ApiModel):
    id: Annotated[str, Field(max_length=128)]
    size_bytes: Annotated[int, Field(ge=0)]
    duration_ms: Annotated[int, Field(ge=0)]
    sha256: Annotated[str | None, Field(max_length=64)] = None


class RecycleOperation(ApiModel):
    """The recycle in flight, persisted so a restarted operator resumes it."""

    pod: Annotated[str, Field(max_length=253)]
    uid: Annotated[str, Field(max_length=64)]
    step: RecycleStep
    strategy: RestartStrategy
    started_at: Annotated[str, Field(json_schema_extra={"format": "date-time"})]
    step_started_at: Annotated[str, Field(json_schema_extra={"format": "date-time"})]
    reasons: Annotated[list[Annotated[str, Field(max_length=512)]], Field(max_length=MAX_REASONS)]
    restart_count: Annotated[
        int | None, Field(ge=0, description="Server container restarts before.")
    ] = None
    restart_requested: Annotated[bool | None, Field(description="The restart was issued.")] = None
    new_uid: Annotated[str | None, Field(max_length=64)] = None
    checkpoint: CheckpointRecord | None = None
    escalated: Annotated[bool | None, Field(description="InPlace fell back to Recreate.")] = None
    message: Annotated[str | None, Field(max_length=1024)] = None


class RecycleResult(StrEnum):
    SUCCEEDED = "Succeeded"
    ESCALATED = "Escalated"
    FAILED = "Failed"
    ABANDONED = "Abandoned"
    DRY_RUN = "DryRun"


class RecycleRecord(ApiModel):
    pod: Annotated[str, Field(max_length=253)]
    uid: Annotated[str, Field(max_length=64)]
    result: RecycleResult
    strategy: RestartStrategy
    started_at: Annotated[str, Field(json_schema_extra={"format": "date-time"})]
    finished_at: Annotated[str, Field(json_schema_extra={"format": "date-time"})]
    reasons: Annotated[list[Annotated[str, Field(max_length=512)]], Field(max_length=MAX_REASONS)]
    message: Annotated[str | None, Field(max_length=1024)] = None


class InferenceDeploymentStatus(ApiModel):
    observed_generation: Annotated[int | None, Field(ge=0)] = None
    conditions: Annotated[list[Condition] | None, Field(max_length=16)] = None
    replicas: Annotated[int | None, Field(ge=0)] = None
    ready_replicas: Annotated[int | None, Field(ge=0)] = None
    degraded_replicas: Annotated[int | None, Field(ge=0)] = None
    selector: Annotated[
        str | None, Field(max_length=1024, description="For the scale subresource.")
    ] = None
    policy: Annotated[
        str | None, Field(max_length=1024, description="Effective policy layers.")
    ] = None
    last_evaluation: Annotated[str | None, Field(json_schema_extra={"format": "date-time"})] = None
    pods: Annotated[list[PodHealthSummary] | None, Field(max_length=MAX_POD_SUMMARIES)] = None
    operation: RecycleOperation | None = None
    history: Annotated[list[RecycleRecord] | None, Field(max_length=MAX_HISTORY)] = None


class ObjectMeta(ApiModel):
    """The metadata fields the operator reads; the rest passes through untouched."""

    model_config = ApiModel.model_config | {"extra": "ignore"}

    name: str
    namespace: str | None = None
    uid: str | None = None
    generation: int | None = None
    resource_version: str | None = None
    labels: dict[str, str] | None = None
    annotations: dict[str, str] | None = None


class InferenceDeployment(ApiModel):
    api_version: Literal["infercycle.io/v1alpha1"] = "infercycle.io/v1alpha1"
    kind: Literal["InferenceDeployment"] = "InferenceDeployment"
    metadata: ObjectMeta
    spec: InferenceDeploymentSpec
    status: InferenceDeploymentStatus | None = None


class RecyclePolicy(ApiModel):
    api_version: Literal["infercycle.io/v1alpha1"] = "infercycle.io/v1alpha1"
    kind: Literal["RecyclePolicy"] = "RecyclePolicy"
    metadata: ObjectMeta
    spec: RecyclePolicySpec
