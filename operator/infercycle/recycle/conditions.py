"""metav1.Condition bookkeeping: transitions keep their time, repeats do not churn status."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from infercycle.api.units import to_timestamp

CONDITION_TYPES = ("Ready", "Degraded", "Recycling", "MetricsAvailable", "Paused")


def set_condition(
    conditions: Sequence[dict[str, Any]],
    *,
    type_: str,
    status: bool | None,
    reason: str,
    message: str,
    now: float,
    generation: int | None,
) -> list[dict[str, Any]]:
    """A copy of ``conditions`` with ``type_`` set; lastTransitionTime moves only on a change."""
    text = "Unknown" if status is None else ("True" if status else "False")
    updated: list[dict[str, Any]] = []
    found = False
    for condition in conditions:
        if condition.get("type") != type_:
            updated.append(dict(condition))
            continue
        found = True
        changed = condition.get("status") != text
        updated.append(
            {
                "type": type_,
                "status": text,
                "reason": reason,
                "message": message[:2048],
                "lastTransitionTime": to_timestamp(now)
                if changed
                else condition.get("lastTransitionTime", to_timestamp(now)),
                **({"observedGeneration": generation} if generation is not None else {}),
            }
        )
    if not found:
        updated.append(
            {
                "type": type_,
                "status": text,
                "reason": reason,
                "message": message[:2048],
                "lastTransitionTime": to_timestamp(now),
                **({"observedGeneration": generation} if generation is not None else {}),
            }
        )
    order = {name: index for index, name in enumerate(CONDITION_TYPES)}
    return sorted(updated, key=lambda c: order.get(str(c.get("type")), len(order)))


def condition_status(conditions: Sequence[dict[str, Any]], type_: str) -> str | None:
    for condition in conditions:
        if condition.get("type") == type_:
            return str(condition.get("status"))
    return None
