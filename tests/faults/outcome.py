"""What one fault class measured: the counts the reliability report prints."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class FaultResult:
    """One fault class. The last four counts must be 0; ``None`` means the class cannot cause
    that harm (no pod is restarted by a Prometheus fault, say), and the report prints a dash."""

    name: str
    runs: int = 0
    faults: int = 0
    restarted_twice: int | None = 0
    beyond_guards: int | None = 0
    left_drained: int | None = 0
    sessions_lost: int | None = 0
    findings: list[str] = field(default_factory=list)
    failed: bool = False  # the class could not be run to the end: its counts are incomplete

    def harmed(self) -> int:
        counts = (self.restarted_twice, self.beyond_guards, self.left_drained, self.sessions_lost)
        return sum(count or 0 for count in counts)

    def add(self, other: FaultResult) -> None:
        """Fold one run's counts into the class's."""
        self.runs += other.runs
        self.faults += other.faults
        for name in ("restarted_twice", "beyond_guards", "left_drained", "sessions_lost"):
            mine, theirs = getattr(self, name), getattr(other, name)
            if mine is not None and theirs is not None:
                setattr(self, name, mine + theirs)
        self.findings.extend(other.findings)
