"""Human forms of signal values: bytes as Mi/Gi, seconds as ms, fractions as percentages."""

from __future__ import annotations

BYTE_SIGNALS = frozenset({"memory", "gpu_memory"})
SECOND_SIGNALS = frozenset({"latency_p99", "ttft_p99", "token_latency_p99"})
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
