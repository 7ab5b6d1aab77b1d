"""What the planner and the state machine know of a deployment's pods, as plain values."""

from __future__ import annotations

from dataclasses import dataclass

from infercycle.api.resources import TargetKind
from infercycle.api.spec import LabelSelector


@dataclass(frozen=True, slots=True)
class PodState:
    """One pod as the API server reports it (already reduced to what decisions need)."""

    name: str
    uid: str
    ready: bool
    serving: bool
    running: bool
    terminating: bool = False
    started_at: float | None = None
    restart_count: int = 0
    pod_ip: str | None = None
    node: str | None = None
    # The pod can be drained: owned pods always (the client Service's label); attached pods
    # only when their template lists the readiness gate ``infercycle.io/serving``.
    drainable: bool = True
    # A gated pod whose gate condition was never set: nothing serves it until it is.
    awaiting_gate: bool = False
    # The LeaderWorkerSet group a pod belongs to (its leader's name), and whether it leads it.
    group: str | None = None
    leader: bool = False
    created_at: float | None = None
    # The server container's last termination (``lastState.terminated``): why and when.
    last_terminated_reason: str | None = None
    last_terminated_at: float | None = None
    # A group as one unit: its members, the leader first (empty for a single pod).
    members: tuple[PodState, ...] = ()

    @property
    def available(self) -> bool:
        """Ready, in the client Service, and not on its way out."""
        return self.ready and self.serving and self.running and not self.terminating


@dataclass(frozen=True, slots=True)
class PodJudgement:
    """The health engine's verdict on one pod, as the planner consumes it."""

    name: str
    uid: str
    degraded: bool
    reasons: tuple[str, ...] = ()
    severity: float = 0.0


@dataclass(frozen=True, slots=True)
class PastRecycle:
    """A finished (or dry-run) recycle, from ``status.history``."""

    pod: str
    started_at: float
    finished_at: float
    dry_run: bool = False


@dataclass(frozen=True, slots=True)
class Target:
    """The workload an attached InferenceDeployment judges, as read this cycle."""

    kind: TargetKind
    name: str
    selector: LabelSelector
    desired: int  # replicas: pods, or groups for a LeaderWorkerSet
    group_size: int | None = None  # pods per group (LeaderWorkerSet)
    generation: int | None = None

    @property
    def named(self) -> bool:
        """A recreated pod keeps its name (StatefulSet, LeaderWorkerSet), or not (Deployment)."""
        return self.kind is not TargetKind.DEPLOYMENT
