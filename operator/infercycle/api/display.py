"""Human forms of rule levels: bytes as Mi/Gi, seconds as ms, ratios as multiples."""

from __future__ import annotations

from typing import TYPE_CHECKING

from infercycle.api.units import format_duration

if TYPE_CHECKING:
    from infercycle.api.policy import Rule

BYTE_SIGNALS = frozenset({"memory", "gpu_memory"})
SECOND_SIGNALS = frozenset({"latency_p99"})
FRACTION_SIGNALS = frozenset({"kv_cache", "error_rate"})


def format_value(signal: str, value: float | None) -> str:
    """A signal value in the unit people read it in."""
    if value is None:
        return "no data"
    if signal in BYTE_SIGNALS:
        return format_bytes(value)
    if signal in SECOND_SIGNALS:
        return f"{value * 1000:.0f}ms" if abs(value) < 10 else f"{value:.1f}s"
    if signal in FRACTION_SIGNALS:
        return f"{value * 100:.1f}%"
    return f"{value:.3g}"


def format_bytes(value: float) -> str:
    magnitude = abs(value)
    for unit, size in (("Gi", 2**30), ("Mi", 2**20), ("Ki", 2**10)):
        if magnitude >= size:
            return f"{value / size:.1f}{unit}"
    return f"{value:.0f}B"


def format_level(rule: Rule, value: float) -> str:
    """A rule's threshold-like number (or an observation against it) in the rule's terms."""
    kind = rule.kind.value
    if kind in ("baseline", "outlier"):
        return f"{value:.2f}x"
    if kind == "growth":
        return f"{format_value(rule.signal, value)}/h"
    return format_value(rule.signal, value)


def describe_rule(rule: Rule) -> str:
    kind = rule.kind.value
    window = format_duration(rule.window_s)
    level = format_level(rule, rule.threshold)
    if kind == "growth":
        text = f"{rule.signal} growth > {level} over {window}"
        if rule.time_to_limit_s is None:
            return text
        within = format_duration(rule.time_to_limit_s)
        if rule.limit_signal is not None:
            return f"{text}; with a known {rule.limit_signal}: reaching it within {within}"
        if rule.limit is not None:
            limit = format_value(rule.signal, rule.limit)
            return f"{rule.signal} growth reaching {limit} within {within} (fit over {window})"
        return text
    if kind == "baseline":
        return f"{rule.signal} >= {level} own baseline for {window}"
    if kind == "outlier":
        return f"{rule.signal} >= {level} fleet median for {window}"
    symbol = ">" if kind == "above" else "<"
    return f"{rule.signal} {symbol} {level} for {window}"
