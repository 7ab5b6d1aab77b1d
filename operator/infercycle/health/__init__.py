"""Pure health decisions: samples in, verdicts with reasons out (no I/O)."""

from infercycle.health.engine import HealthEngine
from infercycle.health.model import PodKey, Reason, RuleEvaluation, RuleState, Verdict

__all__ = ["HealthEngine", "PodKey", "Reason", "RuleEvaluation", "RuleState", "Verdict"]
