"""What the planner and the state machine know of a deployment's pods, as plain values."""

from __future__ import annotations

from dataclasses import dataclass


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
