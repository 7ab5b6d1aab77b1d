"""``infercycle replay TRACE [--policy POLICY.yaml] [--output OUT]``: the health engine offline.

TRACE is JSON Lines sorted by time, one sample per line::

    {"t": 120.0, "pod": "llm-0", "signals": {"cpu": 2.1, "memory": 1.3e10, "latency_p99": null}}

A missing signal or ``null`` is no data; a pod's first sample is its start time; all pods of a
trace are one deployment. Samples are grouped by ``t`` into cycles and each cycle is observed
and evaluated exactly as the live operator does.

Three optional fields carry what the pod's status says about its containers' restarts, as the
live operator reads them::

    {"t": 7260.0, "pod": "llm-0", "signals": {...}, "restarts": 1,
     "last_terminated_reason": "OOMKilled", "last_terminated_at": 7215.0}

``restarts`` is the containers' restart count (an integer, 0 or more); a rise starts a new life
of the process (trends are fitted per life) and, with ``last_terminated_reason`` "OOMKilled",
counts as an OOM kill; ``last_terminated_at`` (same clock as ``t``) is when the previous life
ended. Without them a restart is seen in the samples: a fall of a progress counter (the signal
of a stall rule, ``progress`` by default), or host memory that was within 10 % of its
``memory_limit`` and falls below half of that; after such a level it counts as an OOM kill.

The output is JSON Lines, one line per verdict change (every pod starts healthy)::

    {"t": 4500.0, "pod": "llm-0", "verdict": "degraded", "reasons": ["memory-leak: ..."]}

POLICY is a RecyclePolicy, as a full resource or just its spec; without it the built-in policy
applies. Malformed input stops the replay with a message naming the line (exit status 2): a line
longer than ``MAX_LINE_BYTES``, a number with too many digits, a negative value of a built-in
signal (they are all amounts, never below zero). A trace none of whose signals a rule reads is
malformed too (it could only ever give no verdicts); signals that no rule reads beside ones that
are read give a warning on stderr.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

import yaml
from pydantic import ValidationError

from infercycle import errors
from infercycle.api.resolver import PolicyError, resolve_policy
from infercycle.api.servers import BUILTIN_SIGNALS
from infercycle.api.spec import RecyclePolicySpec
from infercycle.api.values import HealthPolicy
from infercycle.health import ContainerRestarts, HealthEngine, PodKey

EXIT_OK = 0
EXIT_BAD_INPUT = 2
# One sample per line: even hundreds of signals stay far below this.
MAX_LINE_BYTES = 1 << 20


ReplayError = errors.TraceError


Sample = tuple[float, str, dict[str, float | None], ContainerRestarts | None]
TRACE_HELP = """\
trace format (JSON Lines, sorted by t):
  {"t": 120.0, "pod": "llm-0", "signals": {"memory": 1.3e10, "latency_p99": null}}
optional fields of a line (the pod's container restarts, as its status reports them):
  "restarts": 2                      restart count of the pod's containers (integer >= 0);
                                     a rise starts a new life of the process
  "last_terminated_reason": "OOMKilled"   reason of the newest termination
  "last_terminated_at": 7215.0       when it ended (same clock as t)
without them a restart shows as a fall of the progress counter or a collapse of memory
from near its limit.
output: one JSON line per verdict change: {"t", "pod", "verdict", "reasons"}."""


def load_policy(path: str) -> HealthPolicy:
    """The health policy of a RecyclePolicy file, merged over the built-in defaults."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ReplayError(f"{path}: no such policy file") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ReplayError(f"{path}: cannot read the policy: {error}") from None
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ReplayError(f"{path}: not valid YAML: {error}") from None
    if not isinstance(document, dict):
        raise ReplayError(
            f"{path}: expected a RecyclePolicy (a mapping with apiVersion, kind and spec) "
            "or its spec"
        )
    prefix = ""
    spec: Any = document
    if {"apiVersion", "kind", "metadata", "spec"} & set(document):
        kind = document.get("kind")
        if kind is not None and kind != "RecyclePolicy":
            raise ReplayError(f"{path}: kind is {kind!r}; expected RecyclePolicy")
        if "spec" not in document:
            raise ReplayError(f"{path}: the RecyclePolicy has no spec")
        spec, prefix = document["spec"], "spec"
    if spec is None:
        spec = {}
    try:
        model = RecyclePolicySpec.model_validate(spec)
    except ValidationError as error:
        problems = "; ".join(_validation_problem(prefix, item) for item in error.errors())
        raise ReplayError(f"{path}: {problems}") from None
    try:
        return resolve_policy(model, sources=(path,)).health
    except (PolicyError, ValueError) as error:
        raise ReplayError(f"{path}: {error}") from None


def _validation_problem(prefix: str, item: Any) -> str:
    where = prefix
    for part in item.get("loc", ()):
        if isinstance(part, int):
            where += f"[{part}]"
        else:
            where = f"{where}.{part}" if where else str(part)
    where = where or "spec"
    if item.get("type") == "extra_forbidden":
        return f"{where}: unknown field"
    return f"{where}: {item.get('msg', 'invalid')}"


def _finite(value: object) -> bool:
    """A JSON number (not a boolean) that is a usable float."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def bounded_lines(stream: BinaryIO, limit: int = MAX_LINE_BYTES) -> Iterator[bytes]:
    """The lines of a stream, each read at most ``limit + 1`` bytes at a time, so that input
    without line breaks (``/dev/zero``) is refused instead of filling memory."""
    while line := stream.readline(limit + 1):
        yield line


def read_trace(lines: Iterable[bytes], name: str) -> Iterator[tuple[int, Sample]]:
    """Validated samples with their line numbers; raises :class:`ReplayError` at the first
    malformed line."""
    previous = -math.inf
    for number, line in enumerate(lines, start=1):
        if len(line.rstrip(b"\r\n")) > MAX_LINE_BYTES:
            raise ReplayError(
                f"{name}:{number}: line longer than {MAX_LINE_BYTES} bytes; a trace has one "
                "sample per line"
            )
        try:
            record = json.loads(line.decode())
        except json.JSONDecodeError as error:
            if not line.strip():
                continue
            problem = f"not valid JSON: {error.msg} (column {error.colno})"
            raise ReplayError(f"{name}:{number}: {problem}") from None
        except UnicodeDecodeError:
            raise ReplayError(f"{name}:{number}: not UTF-8 text") from None
        except RecursionError:
            raise ReplayError(f"{name}:{number}: JSON nested too deeply") from None
        except ValueError as error:  # an integer beyond the interpreter's digit limit
            raise ReplayError(f"{name}:{number}: a number is too long to read: {error}") from None
        try:
            t = record["t"]
            pod = record["pod"]
            signals = record["signals"]
        except (KeyError, TypeError):
            raise ReplayError(f"{name}:{number}: {_record_problem(record)}") from None
        if not (type(t) is float and t - t == 0.0) and not _finite(t):
            raise ReplayError(
                f"{name}:{number}: field 't' must be a number of seconds, got {_short(t)}"
            )
        if type(pod) is not str or not pod:
            raise ReplayError(
                f"{name}:{number}: field 'pod' must be a non-empty string, got {pod!r}"
            )
        if type(signals) is not dict:
            raise ReplayError(
                f"{name}:{number}: field 'signals' must be an object, got {signals!r}"
            )
        for signal, value in signals.items():
            if value is None:
                continue
            if not (type(value) is float and value - value == 0.0) and not _finite(value):
                raise ReplayError(
                    f"{name}:{number}: signal {signal!r} must be a number or null, got "
                    f"{_short(value)}"
                )
            if signal in BUILTIN_SIGNALS and value < 0:
                raise ReplayError(
                    f"{name}:{number}: signal {signal!r} is {value}, but it is an amount "
                    "(bytes, seconds, a rate or a ratio) and never below zero"
                )
        if t < previous:
            raise ReplayError(f"{name}:{number}: time goes backwards: t={t} after t={previous}")
        previous = t
        yield number, (float(t), pod, signals, _restarts(record, f"{name}:{number}"))


def _restarts(record: dict[str, Any], where: str) -> ContainerRestarts | None:
    """The optional restart fields of one line, checked."""
    count = record.get("restarts")
    reason = record.get("last_terminated_reason")
    at = record.get("last_terminated_at")
    if count is None:
        if reason is not None or at is not None:
            raise ReplayError(
                f"{where}: last_terminated_reason and last_terminated_at need 'restarts' "
                "(the containers' restart count) on the same line"
            )
        return None
    if type(count) is not int or count < 0:
        raise ReplayError(
            f"{where}: field 'restarts' must be a whole number of restarts (0 or more), "
            f"got {count!r}"
        )
    if reason is not None and (type(reason) is not str or not reason):
        raise ReplayError(
            f"{where}: field 'last_terminated_reason' must be a reason such as \"OOMKilled\", "
            f"got {reason!r}"
        )
    if at is not None and not _finite(at):
        raise ReplayError(
            f"{where}: field 'last_terminated_at' must be a number of seconds, got {at!r}"
        )
    return ContainerRestarts(count, reason, None if at is None else float(at))


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else f"{text[:40]}... ({len(text)} characters)"


def _record_problem(record: object) -> str:
    if not isinstance(record, dict):
        return "expected a JSON object with t, pod and signals"
    missing = next(field for field in ("t", "pod", "signals") if field not in record)
    return f"missing field {missing!r}"


def unread_signals(seen: Iterable[str], policy: HealthPolicy, name: str) -> list[str]:
    """The trace's signals no rule reads, sorted; ``ReplayError`` when that is all of them."""
    seen = set(seen)
    read = set(policy.signals)
    unread = sorted(seen - read)
    if seen and not seen & read:
        raise ReplayError(
            f"{name}: no rule reads any signal of the trace ({', '.join(unread)}); the rules "
            f"read {', '.join(sorted(read))}. Rename the trace's signals or give a --policy "
            "whose rules read them"
        )
    return unread


def replay(
    trace: Iterable[bytes],
    name: str,
    policy: HealthPolicy,
    warn: Callable[[str], None] | None = None,
) -> list[str]:
    """The verdict changes of a trace, as output lines; ``warn`` (a callable taking a text)
    hears of signals no rule reads."""
    engine = HealthEngine(policy)
    seen: set[str] = set()
    output: list[str] = []
    started: dict[str, float] = {}
    keys: dict[str, PodKey] = {}
    degraded: dict[str, bool] = {}
    cycle: dict[str, tuple[dict[str, float | None], ContainerRestarts | None]] = {}
    cycle_t = math.nan

    def run_cycle() -> None:
        for pod, (signals, restarts) in cycle.items():
            engine.observe(cycle_t, keys[pod], started[pod], signals, restarts)
        for key, verdict in engine.evaluate(cycle_t).items():
            if verdict.degraded == degraded.get(key.name, False):
                continue
            degraded[key.name] = verdict.degraded
            reasons = [reason.text for reason in verdict.reasons] if verdict.degraded else []
            output.append(
                json.dumps(
                    {
                        "t": cycle_t,
                        "pod": key.name,
                        "verdict": "degraded" if verdict.degraded else "healthy",
                        "reasons": reasons,
                    }
                )
            )

    for number, (t, pod, signals, restarts) in read_trace(trace, name):
        if t != cycle_t:
            if cycle:
                run_cycle()
            cycle = {}
            cycle_t = t
        if pod in cycle:
            raise ReplayError(f"{name}:{number}: pod {pod!r} appears twice at t={t}")
        seen.update(signals)
        if pod not in keys:
            keys[pod] = PodKey(pod, pod)
            started[pod] = t
        cycle[pod] = (signals, restarts)
    if cycle:
        run_cycle()
    unread = unread_signals(seen, policy, name)
    if unread and warn is not None:
        warn(
            f"{name}: no rule reads {', '.join(unread)}; those samples were ignored "
            "(a misspelt signal, or a rule missing from the policy?)"
        )
    return output


def _write(lines: list[str], output: str | None) -> None:
    text = "".join(f"{line}\n" for line in lines)
    if output is None or output == "-":
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    target = Path(output)
    handle, temporary = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent or ".")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write(text)
        Path(temporary).replace(target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="infercycle replay",
        description="Run the health engine over a recorded trace and print verdict changes.",
        epilog=TRACE_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("trace", help="JSON Lines trace, sorted by t (- for stdin)")
    parser.add_argument("--policy", help="RecyclePolicy YAML (full resource or spec)")
    parser.add_argument("--output", help="where to write verdict changes (default stdout)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        policy = load_policy(args.policy) if args.policy else resolve_policy().health

        def warn(text: str) -> None:
            print(f"infercycle replay: warning: {text}", file=sys.stderr)

        if args.trace == "-":
            lines = replay(bounded_lines(sys.stdin.buffer), "<stdin>", policy, warn)
        else:
            try:
                trace = Path(args.trace).open("rb")  # noqa: SIM115 - closed below
            except FileNotFoundError:
                raise ReplayError(f"{args.trace}: no such trace file") from None
            except OSError as error:
                raise ReplayError(f"{args.trace}: cannot read the trace: {error}") from None
            with trace:
                lines = replay(bounded_lines(trace), args.trace, policy, warn)
        _write(lines, args.output)
    except ReplayError as error:
        print(f"infercycle replay: error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except OSError as error:
        print(f"infercycle replay: error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
