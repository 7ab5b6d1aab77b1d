"""Durations and quantities as they appear in specs: strings such as ``"5m"`` and ``"512Mi"``.

The spec never carries floats (Kubernetes API conventions); these helpers turn the strings into
numbers once, at the edge, and give errors that say which form is expected.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Annotated

from pydantic import AfterValidator, Field

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
DURATION_PATTERN = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$"
QUANTITY_PATTERN = (
    r"^[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+|Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E)?$"
)
_QUANTITY = re.compile(QUANTITY_PATTERN)
_DURATION_SECONDS = {"ms": Decimal("0.001"), "s": Decimal(1), "m": Decimal(60), "h": Decimal(3600)}
_SUFFIX_MULTIPLIER = {
    "": Decimal(1),
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "k": Decimal("1e3"),
    "M": Decimal("1e6"),
    "G": Decimal("1e9"),
    "T": Decimal("1e12"),
    "P": Decimal("1e15"),
    "E": Decimal("1e18"),
    "Ki": Decimal(2**10),
    "Mi": Decimal(2**20),
    "Gi": Decimal(2**30),
    "Ti": Decimal(2**40),
    "Pi": Decimal(2**50),
    "Ei": Decimal(2**60),
}


def parse_duration(text: str) -> float:
    """Seconds in a Go-style duration (``"90s"``, ``"1h30m"``, ``"250ms"``)."""
    value = text.strip()
    position = 0
    total = Decimal(0)
    for match in _DURATION_PART.finditer(value):
        if match.start() != position:
            break
        total += Decimal(match.group(1)) * _DURATION_SECONDS[match.group(2)]
        position = match.end()
    if not value or position != len(value):
        msg = (
            f"{text!r} is not a duration: write a number with a unit of ms, s, m or h, "
            'for example "30s", "5m" or "1h30m"'
        )
        raise ValueError(msg)
    return float(total)


def format_duration(seconds: float) -> str:
    """The shortest Go-style duration for a number of seconds (whole seconds and above)."""
    if seconds < 1:
        return f"{round(seconds * 1000)}ms"
    remaining = round(seconds)
    parts = []
    for unit, size in (("h", 3600), ("m", 60), ("s", 1)):
        count, remaining = divmod(remaining, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts) or "0s"


def parse_quantity(text: str) -> float:
    """The value of a Kubernetes quantity (``"512Mi"``, ``"250m"``, ``"1.5"``, ``"2e3"``)."""
    value = text.strip()
    match = _QUANTITY.match(value)
    if not match:
        msg = (
            f"{text!r} is not a Kubernetes quantity: write a number with an optional suffix "
            '(Ki, Mi, Gi, Ti, k, M, G, T, m for thousandths), for example "512Mi", "0.9" or "250m"'
        )
        raise ValueError(msg)
    suffix = match.group(3) or ""
    number_text = value[: len(value) - len(suffix)] if suffix and suffix[0] not in "eE" else value
    try:
        number = Decimal(number_text)
    except InvalidOperation as error:  # the regex admits only valid decimals; keep the message
        msg = f"{text!r} is not a Kubernetes quantity"
        raise ValueError(msg) from error
    if suffix and suffix[0] in "eE":
        return float(number)
    return float(number * _SUFFIX_MULTIPLIER[suffix])


def _check_duration(text: str) -> str:
    parse_duration(text)
    return text


def _check_quantity(text: str) -> str:
    parse_quantity(text)
    return text


Duration = Annotated[
    str,
    Field(max_length=32, json_schema_extra={"pattern": DURATION_PATTERN}),
    AfterValidator(_check_duration),
]
Quantity = Annotated[
    str,
    Field(max_length=32, json_schema_extra={"pattern": QUANTITY_PATTERN}),
    AfterValidator(_check_quantity),
]


def to_timestamp(seconds: float) -> str:
    """RFC 3339 UTC with second precision, as Kubernetes writes times."""
    moment = datetime.fromtimestamp(seconds, tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def from_timestamp(text: str) -> float:
    """Seconds since the epoch of an RFC 3339 time (``Z`` or an offset)."""
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def camel(name: str) -> str:
    """The wire spelling of a field name for messages: ``max_unavailable`` -> ``maxUnavailable``."""
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def parse_int_or_percent(value: str, where: str) -> tuple[int, bool]:
    """``"2"`` -> ``(2, False)``, ``"25%"`` -> ``(25, True)``; ``where`` names the field."""
    text = value.strip()
    if text.endswith("%") and text[:-1].isdigit() and int(text[:-1]) <= 100:
        return int(text[:-1]), True
    if text.isdigit():
        return int(text), False
    msg = f'{where}: {value!r} is neither a count nor a percentage; write "2" or "25%"'
    raise ValueError(msg)
