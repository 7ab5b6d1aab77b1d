"""The agent's wire format: what its endpoints answer, shared by the server and the client.

Fields are camelCase on the wire. Unknown fields are ignored when reading, so an operator can talk
to a newer agent that adds fields.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel

StateSource = Literal["hook", "dir"]
RestoreOutcome = Literal["restored", "skipped", "failed", "none"]
Operation = Literal["checkpoint", "restart", "restore"]


class WireModel(BaseModel):
    """A frozen model with camelCase names on the wire."""

    model_config = ConfigDict(
        frozen=True,
        extra="ignore",
        alias_generator=to_camel,
        populate_by_name=True,
    )

    def to_wire(self) -> dict[str, object]:
        return self.model_dump(by_alias=True, mode="json")


class CheckpointResult(WireModel):
    """Answer of ``POST /v1/checkpoint``: the checkpoint that is now on the volume."""

    id: str
    sha256: str
    size_bytes: int
    entries: int
    duration_ms: int
    created_at: datetime | None = None


class RestartResult(WireModel):
    """Answer of ``POST /v1/restart``: the server process is gone; its container restarts."""

    pid: int
    signal: Literal["SIGTERM", "SIGKILL"]
    duration_ms: int
    grace_period_seconds: float = 0.0


class RestoreResult(WireModel):
    """What one restore did; also the ``lastRestore`` of the status."""

    result: RestoreOutcome
    message: str
    at: datetime
    checkpoint_id: str | None = None
    duration_ms: int = 0
    server_pid: int | None = None
    skipped: tuple[str, ...] = ()


class CheckpointSummary(WireModel):
    """The newest checkpoint on the volume, as the status shows it."""

    id: str
    created_at: datetime
    size_bytes: int
    sha256: str
    entries: int


class ServerProcess(WireModel):
    """Whether the agent sees the inference server process right now."""

    found: bool
    pid: int | None = None
    started_at: datetime | None = None


class AgentStatus(WireModel):
    """Answer of ``GET /v1/status``."""

    source: StateSource
    pod_uid: str
    server: ServerProcess
    operation: Operation | None = None
    operation_started_at: datetime | None = None
    checkpoint_in_progress: bool = False
    restart_in_progress: bool = False
    restore_in_progress: bool = False
    last_checkpoint: CheckpointSummary | None = None
    last_restore: RestoreResult | None = None
    checkpoints: int = 0


class ErrorBody(WireModel):
    """Every error answer: a stable code and a message that names the problem and the fix."""

    error: str
    message: str
