"""Pure health decisions: samples in, verdicts with reasons out (no I/O)."""

from infercycle.health.engine import HealthEngine
from infercycle.health.model import (
    ContainerRestarts,
    PodKey,
    Reason,
    RuleEvaluation,
    RuleState,
    Verdict,
)

__all__ = [
    "ContainerRestarts",
    "HealthEngine",
    "PodKey",
    "Reason",
    "RuleEvaluation",
    "RuleState",
    "Verdict",
]
