"""What the health engine says about a pod: verdicts, their reasons and per-rule evaluations."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum

from infercycle.api.display import format_value
from infercycle.api.units import format_duration
from infercycle.api.values import Rule, RuleKind


@dataclass(frozen=True, slots=True, order=True)
class PodKey:
    """One incarnation of a pod: a new uid under the same name is a fresh pod."""

    name: str
    uid: str


class RuleState(StrEnum):
    """How one rule judged one pod in one cycle."""

    BREACH = "breach"
    OK = "ok"
    NO_DATA = "no-data"
    WARMING_UP = "warming-up"
    LOW_TRAFFIC = "low-traffic"
    NOT_COMPARABLE = "not-comparable"
    INSUFFICIENT_FLEET = "insufficient-fleet"


OOM_KILLED = "OOMKilled"
"""The termination reason Kubernetes gives a container the kernel killed for its memory."""


@dataclass(frozen=True, slots=True)
class ContainerRestarts:
    """What the pod's status says about its containers' restarts, as the engine takes it.

    ``count`` is the sum of ``restartCount`` over the pod's containers; ``last_reason`` and
    ``last_finished_at`` (seconds since the epoch) come from the most recent
    ``lastState.terminated`` among them (``OOMKilled``, ``Error``, ``Completed``...). A rise in
    ``count`` starts a new life of the process: trends are fitted within one life, and a rise
    whose last reason is ``OOMKilled`` is an OOM kill.
    """

    count: int
    last_reason: str | None = None
    last_finished_at: float | None = None

    def __post_init__(self) -> None:
        if self.count < 0:
            msg = f"restarts.count must be 0 or more, got {self.count}"
            raise ValueError(msg)


@dataclass(frozen=True, slots=True)
class Reason:
    """One breached rule, with the numbers that breached it.

    ``observed`` and ``threshold`` are in the rule's terms: signal units for above/below, units
    per hour for growth, a ratio for baseline and outlier. A growth rule breached by its
    time-to-limit reports as threshold the growth per hour that reaches the limit in time.
    """

    rule: str
    signal: str
    kind: RuleKind
    observed: float
    threshold: float
    window_s: float
    text: str


@dataclass(frozen=True, slots=True)
class RuleEvaluation:
    """One rule's judgement of one pod: its state, the value it looked at, the level in effect.

    ``level`` is the threshold, or the clear level while a breach holds (hysteresis).
    """

    rule: Rule
    state: RuleState
    observed: float | None
    level: float
    detail: str = ""

    @property
    def breached(self) -> bool:
        return self.state is RuleState.BREACH

    def describe(self) -> str:
        """One line for people, such as ``latency-creep  ok  1.12x (threshold 1.80x)``."""
        observed = "-" if self.observed is None else self.rule.format_level(self.observed)
        word = "clear at" if self.breached and self.level != self.rule.threshold else "threshold"
        level = self.rule.format_level(self.level)
        text = f"{self.rule.name}  {self.state.value}  {observed} ({word} {level})"
        return f"{text}: {self.detail}" if self.detail else text


@dataclass(frozen=True, slots=True)
class Verdict:
    """The engine's judgement of one pod.

    ``reasons`` lists every breached rule, whether or not the pod is degraded (one breached
    signal short of a quorum still shows). An engine hands out the same object again while a
    pod's verdict does not change.
    """

    pod: PodKey
    degraded: bool
    warming_up: bool
    has_data: bool
    reasons: tuple[Reason, ...] = ()
    _explain: Callable[[PodKey], tuple[RuleEvaluation, ...]] | None = field(
        default=None, repr=False, compare=False
    )

    @property
    def breached_signals(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(reason.signal for reason in self.reasons))

    @property
    def evaluations(self) -> tuple[RuleEvaluation, ...]:
        """Every rule's evaluation for this pod at the engine's latest evaluation (built on
        demand: verdicts are many, explanations few); empty once the pod is gone."""
        return self._explain(self.pod) if self._explain is not None else ()


def reason_text(
    rule: Rule, observed: float, threshold: float, *, limit: float | None, holding: bool
) -> str:
    """``memory-leak: memory growth 512.0Mi/h > 256.0Mi/h over 1h`` and its siblings.

    ``limit`` is the pod's limit when the rule judged it by time to limit (``threshold`` is
    then the slope that reaches it in time). A breach held by hysteresis says so, with the
    level at which it clears.
    """
    window = format_duration(rule.window_s)
    seen = rule.format_level(observed)
    level = rule.format_level(threshold)
    kind = rule.kind
    if holding:
        against = {
            RuleKind.GROWTH: f"growth {seen} over {window}",
            RuleKind.BASELINE: f"{seen} own baseline (median over {window})",
            RuleKind.OUTLIER: f"{seen} fleet median (median over {window})",
            RuleKind.STALL: f"rose by {seen} over {window}",
            RuleKind.INCREASE: f"rose by {seen} within {window}",
        }.get(kind, f"{seen} (median over {window})")
        upward = rule.breaches_upward
        return (
            f"{rule.name}: {rule.signal} {against}, breached {'>' if upward else '<'} {level}, "
            f"clears {'under' if upward else 'over'} {rule.format_level(rule.clear)}"
        )
    if kind is RuleKind.GROWTH:
        if limit is not None and rule.time_to_limit_s is not None:
            within = format_duration(rule.time_to_limit_s)
            source = f" ({rule.limit_signal})" if rule.limit_signal else ""
            return (
                f"{rule.name}: {rule.signal} growth {seen} reaches the limit "
                f"{format_value(rule.signal, limit)}{source} within {within} "
                f"(fitted over {window})"
            )
        return f"{rule.name}: {rule.signal} growth {seen} > {level} over {window}"
    if kind is RuleKind.BASELINE:
        return f"{rule.name}: {rule.signal} {seen} own baseline >= {level} for {window}"
    if kind is RuleKind.OUTLIER:
        return f"{rule.name}: {rule.signal} {seen} fleet median >= {level} for {window}"
    if kind is RuleKind.STALL:
        return (
            f"{rule.name}: {rule.signal} rose by {seen} (at most {level}) over {window} "
            f"while {rule.pending_signal} stayed above 0"
        )
    if kind is RuleKind.INCREASE:
        return f"{rule.name}: {rule.signal} rose by {seen} (at least {level}) within {window}"
    if kind is RuleKind.SATURATION:
        return (
            f"{rule.name}: {rule.signal} >= {level} for {window} while "
            f"{rule.pending_signal} stayed above 0 and the fleet median stayed well below"
        )
    symbol = "<" if kind is RuleKind.BELOW else ">"
    return f"{rule.name}: {rule.signal} {seen} {symbol} {level} for {window}"


def finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None
