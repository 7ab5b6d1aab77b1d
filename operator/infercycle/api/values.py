"""Resolved policy values: what the decision code reads.

Plain frozen dataclasses with every duration in seconds and every level a float. They are built
from the spec models by :mod:`infercycle.api.resolver` and know nothing of the wire form.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from infercycle.api.display import format_value
from infercycle.api.units import format_duration, parse_int_or_percent

# A rule judges a window only when it holds at least this many samples, one per evaluation
# cycle: a window shorter than this many cycles could never breach.
MIN_SAMPLES = 3


# The per-hour budget is counted from status.history, which keeps this many records; a larger
# budget could never be reached, so it is the largest one a policy may set.
MAX_RECYCLES_PER_HOUR = 20


class RuleKind(StrEnum):
    """How a rule judges a signal."""

    ABOVE = "above"
    BELOW = "below"
    GROWTH = "growth"
    BASELINE = "baseline"
    OUTLIER = "outlier"
    STALL = "stall"
    INCREASE = "increase"
    SATURATION = "saturation"


RESTART_SIGNALS = frozenset({"oom_kills", "restarts"})
"""Counters the engine keeps itself from each pod's container restarts: no query reads them."""


def breaches_upward(kind: RuleKind) -> bool:
    """Whether a rule of this kind breaches above its threshold (below and stall: under it)."""
    return kind not in (RuleKind.BELOW, RuleKind.STALL)


@dataclass(frozen=True, slots=True)
class Rule:
    name: str
    signal: str
    kind: RuleKind
    threshold: float
    clear: float
    window_s: float
    sustain_s: float = 0.0
    sufficient: bool = False
    requires_traffic: bool = False
    limit: float | None = None
    limit_signal: str | None = None
    time_to_limit_s: float | None = None
    baseline_window_s: float = 600.0
    min_fleet: int = 3
    pending_signal: str | None = None
    """stall and saturation: the signal counting work that waits."""

    @property
    def judges_time_to_limit(self) -> bool:
        """A growth rule with a limit (fixed or per pod) and a horizon to reach it."""
        return self.time_to_limit_s is not None and (
            self.limit is not None or self.limit_signal is not None
        )

    @property
    def breaches_upward(self) -> bool:
        return breaches_upward(self.kind)

    def format_level(self, value: float) -> str:
        """A threshold-like number (or an observation against it) in this rule's terms."""
        if self.kind in (RuleKind.BASELINE, RuleKind.OUTLIER):
            return f"{value:.2f}x"
        if self.kind is RuleKind.GROWTH:
            return f"{format_value(self.signal, value)}/h"
        return format_value(self.signal, value)

    def describe(self) -> str:
        """A short human form such as ``memory growth > 256Mi/h over 1h``."""
        window = format_duration(self.window_s)
        level = self.format_level(self.threshold)
        if self.kind is RuleKind.GROWTH:
            text = f"{self.signal} growth > {level} over {window}"
            if self.time_to_limit_s is None:
                return text
            within = format_duration(self.time_to_limit_s)
            if self.limit_signal is not None:
                return f"{text}; with a known {self.limit_signal}: reaching it within {within}"
            if self.limit is not None:
                limit = format_value(self.signal, self.limit)
                return f"{self.signal} growth reaching {limit} within {within} (fit over {window})"
            return text
        if self.kind is RuleKind.BASELINE:
            return f"{self.signal} >= {level} own baseline for {window}"
        if self.kind is RuleKind.OUTLIER:
            return f"{self.signal} >= {level} fleet median for {window}"
        if self.kind is RuleKind.STALL:
            return f"{self.signal} rising <= {level} over {window} while {self.pending_signal} > 0"
        if self.kind is RuleKind.INCREASE:
            return f"{self.signal} rising >= {level} within {window}"
        if self.kind is RuleKind.SATURATION:
            return (
                f"{self.signal} >= {level} for {window} while {self.pending_signal} > 0, "
                "well above the fleet median"
            )
        symbol = ">" if self.kind is RuleKind.ABOVE else "<"
        return f"{self.signal} {symbol} {level} for {window}"


@dataclass(frozen=True, slots=True)
class HealthPolicy:
    rules: tuple[Rule, ...]
    quorum: int = 2
    warmup_s: float = 600.0
    min_request_rate: float = 0.1
    stale_after_s: float = 120.0
    queries: Mapping[str, str] = field(default_factory=dict)
    floors: Mapping[str, float] = field(default_factory=dict)
    """Signal -> the lowest finite bucket of the histogram its built-in query is a quantile of
    (none for a query the user wrote): at or under it the value cannot move."""

    @property
    def signals(self) -> tuple[str, ...]:
        """Every signal a rule reads (its own, its limit signal, its pending signal), plus
        request_rate (traffic gating needs it)."""
        seen = dict.fromkeys(rule.signal for rule in self.rules)
        seen.update(dict.fromkeys(r.limit_signal for r in self.rules if r.limit_signal))
        seen.update(dict.fromkeys(r.pending_signal for r in self.rules if r.pending_signal))
        seen.setdefault("request_rate", None)
        return tuple(seen)

    @property
    def longest_window_s(self) -> float:
        """The history the sample ring must keep; restart counts the engine keeps itself (a
        day of OOM kills costs a few numbers per pod) do not need it."""
        longest = max(
            [
                rule.sustain_s + rule.window_s
                for rule in self.rules
                if rule.signal not in RESTART_SIGNALS
            ]
            or [0.0]
        )
        return max(longest, self.warmup_s)


@dataclass(frozen=True, slots=True)
class DisruptionPolicy:
    max_unavailable: int | str = 1
    min_available: int | str = "75%"
    cooldown_s: float = 3600.0
    max_recycles_per_hour: int = 4
    max_degraded_percent: int = 50
    flap_window_s: float = 1800.0

    def max_unavailable_for(self, replicas: int) -> int:
        return _scale(self.max_unavailable, replicas, round_up=False, floor=1)

    def min_available_for(self, replicas: int) -> int:
        return _scale(self.min_available, replicas, round_up=True, floor=0)


@dataclass(frozen=True, slots=True)
class RecycleTimings:
    drain_timeout_s: float = 120.0
    checkpoint_timeout_s: float = 60.0
    ready_timeout_s: float = 600.0
    verify_window_s: float = 900.0
    fallback_to_recreate: bool = True


@dataclass(frozen=True, slots=True)
class SwitchedOffRule:
    """A rule the policy asks for that cannot run: a signal it reads has no query."""

    rule: str
    signal: str
    reason: str
    """Why the signal has no query, in the server profile's words."""

    def describe(self, server: str) -> str:
        return f"rule {self.rule} is off: {server} does not provide {self.signal} ({self.reason})"


@dataclass(frozen=True, slots=True)
class EffectivePolicy:
    health: HealthPolicy
    disruption: DisruptionPolicy
    recycle: RecycleTimings
    dry_run: bool = False
    sources: tuple[str, ...] = ("built-in defaults",)
    server: str = "vllm"
    switched_off: tuple[SwitchedOffRule, ...] = ()
    """Rules left out of ``health.rules`` because the server lacks a signal they read: to be
    reported (a condition and a Warning Event), never skipped silently."""


def _scale(value: int | str, replicas: int, *, round_up: bool, floor: int) -> int:
    if isinstance(value, int):
        return max(value, floor)
    number, is_percent = parse_int_or_percent(value, "disruption")
    if not is_percent:
        return max(number, floor)
    scaled = number * replicas
    result = -(-scaled // 100) if round_up else scaled // 100
    return max(result, floor)
