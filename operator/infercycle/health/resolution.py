"""Histogram resolution: when a quantile read from a histogram cannot show what a rule looks for.

``histogram_quantile`` interpolates inside the bucket that holds the quantile, between 0 and the
lowest bound for the lowest bucket. While a pod's p99 sits in that bucket the value reads as a
fixed share of the bound (vLLM's end-to-end latency, lowest bucket 0.3 s: every p99 under it reads
about 0.297 s), so a rule comparing it to a baseline, to the fleet or to a threshold under the
bound sees nothing. ``blind_rules`` names those rules and pods so that status and ``explain`` can
say so instead of reporting a healthy pod.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from infercycle.api.display import format_value
from infercycle.api.values import HealthPolicy

FLOOR_TOLERANCE = 1.0 + 1e-9


@dataclass(frozen=True, slots=True)
class Blindness:
    rule: str
    signal: str
    pod: str
    value: float
    floor: float

    def describe(self) -> str:
        value = format_value(self.signal, self.value)
        floor = format_value(self.signal, self.floor)
        return (
            f"{self.rule}: {self.signal} of {self.pod} reads {value}, inside the histogram's "
            f"lowest bucket (up to {floor}): it cannot move there, so the rule cannot see a "
            "change; judge a finer signal "
            "(token_latency_p99, ttft_p99) or give the server finer buckets"
        )


def blind_rules(
    policy: HealthPolicy, latest: Mapping[str, Mapping[str, float | None]]
) -> tuple[Blindness, ...]:
    """Every (rule, pod) whose latest value of a histogram quantile sits in the lowest bucket.

    ``latest`` maps signal -> pod -> latest value (None: no data, never blind). A signal whose
    query the user wrote has no floor and is never reported.
    """
    found = []
    for rule in policy.rules:
        floor = policy.floors.get(rule.signal)
        if floor is None:
            continue
        for pod, value in sorted(latest.get(rule.signal, {}).items()):
            if value is not None and value <= floor * FLOOR_TOLERANCE:
                found.append(Blindness(rule.name, rule.signal, pod, value, floor))
    return tuple(found)
