"""The merge: built-in defaults <- RecyclePolicy <- InferenceDeployment, field by field.

``resolve_policy`` layers the spec models (:mod:`infercycle.api.spec`) over the built-in defaults
(:mod:`infercycle.api.defaults`) and returns the plain values the decision code reads
(:mod:`infercycle.api.values`); a merged policy that cannot work raises ``PolicyError``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, TypeVar

from infercycle import errors
from infercycle.api.base import ApiModel
from infercycle.api.defaults import DEFAULT_POLICY_SPEC
from infercycle.api.servers import BUILTIN_SIGNALS, ServerProfile, profile_for
from infercycle.api.spec import (
    DisruptionSpec,
    HealthSpec,
    RecyclePolicySpec,
    RecycleSpec,
    SignalRuleSpec,
    is_signal_name,
)
from infercycle.api.units import (
    camel,
    format_duration,
    parse_duration,
    parse_int_or_percent,
    parse_quantity,
)
from infercycle.api.values import (
    MIN_SAMPLES,
    RESTART_SIGNALS,
    DisruptionPolicy,
    EffectivePolicy,
    HealthPolicy,
    RecycleTimings,
    Rule,
    RuleKind,
    SwitchedOffRule,
    breaches_upward,
)

_M = TypeVar("_M", bound=ApiModel)
_T = TypeVar("_T")


PolicyError = errors.PolicyError


def merge_health(base: HealthSpec | None, override: HealthSpec | None) -> HealthSpec | None:
    if base is None or override is None:
        return override or base
    merged: dict[str, Any] = {
        name: getattr(override, name) if name in override.model_fields_set else getattr(base, name)
        for name in HealthSpec.model_fields
        if name not in ("queries", "rules")
    }
    merged["queries"] = {**(base.queries or {}), **(override.queries or {})} or None
    merged["rules"] = _merge_rules(base.rules or [], override.rules or []) or None
    return HealthSpec.model_validate(merged)


def _merge_rules(
    base: Iterable[SignalRuleSpec], override: Iterable[SignalRuleSpec]
) -> list[SignalRuleSpec]:
    by_name = {rule.name: rule for rule in base}
    for rule in override:
        by_name[rule.name] = _overlay(by_name.get(rule.name), rule) or rule
    return list(by_name.values())


def _overlay(base: _M | None, override: _M | None) -> _M | None:
    """Fields set in ``override`` win; others come from ``base``."""
    if base is None or override is None:
        return override or base
    values = {name: getattr(base, name) for name in base.model_fields_set}
    values.update({name: getattr(override, name) for name in override.model_fields_set})
    return type(base).model_validate(values)


def merge_policy_specs(*layers: RecyclePolicySpec | None) -> RecyclePolicySpec:
    """Later layers override earlier ones, field by field (rules by name, queries by signal)."""
    result = RecyclePolicySpec()
    for layer in layers:
        if layer is None:
            continue
        result = RecyclePolicySpec(
            namespace_selector=layer.namespace_selector or result.namespace_selector,
            selector=layer.selector or result.selector,
            priority=layer.priority if layer.priority is not None else result.priority,
            health=merge_health(result.health, layer.health),
            disruption=_overlay(result.disruption, layer.disruption),
            recycle=_overlay(result.recycle, layer.recycle),
            server=layer.server if layer.server is not None else result.server,
            dry_run=layer.dry_run if layer.dry_run is not None else result.dry_run,
        )
    return result


def _resolve_rule(
    spec: SignalRuleSpec, known_signals: set[str], cycle_interval_s: float | None = None
) -> Rule | None:
    where = f"health.rules[{spec.name}]"
    if spec.enabled is False:
        return None
    missing = [
        camel(name)
        for name in ("signal", "kind", "threshold", "window")
        if getattr(spec, name) is None
    ]
    if missing:
        msg = (
            f"{where}: missing {', '.join(missing)}; a rule that is not inherited from a "
            "RecyclePolicy must set signal, kind, threshold and window"
        )
        raise PolicyError(msg)
    assert spec.signal is not None
    assert spec.kind is not None
    assert spec.threshold is not None
    assert spec.window is not None
    if spec.signal not in known_signals:
        msg = (
            f"{where}.signal: {spec.signal!r} has no query; use one of "
            f"{', '.join(sorted(known_signals))} or add health.queries.{spec.signal}"
        )
        raise PolicyError(msg)
    kind = RuleKind(spec.kind)
    threshold = parse_quantity(spec.threshold)
    clear = parse_quantity(spec.clear) if spec.clear is not None else threshold
    _check_levels(spec, where)
    _check_windows(spec, where, cycle_interval_s)
    if not breaches_upward(kind) and clear < threshold:
        msg = (
            f"{where}.clear: {spec.clear} must be at or above the threshold "
            f"{spec.threshold} for a '{kind.value}' rule"
        )
        raise PolicyError(msg)
    if breaches_upward(kind) and clear > threshold:
        msg = (
            f"{where}.clear: {spec.clear} must be at or below the threshold "
            f"{spec.threshold} for a '{kind.value}' rule"
        )
        raise PolicyError(msg)
    if kind in (RuleKind.BASELINE, RuleKind.OUTLIER) and threshold <= 1:
        msg = f'{where}.threshold: a {kind.value} threshold is a ratio above 1, such as "1.5"'
        raise PolicyError(msg)
    pending: str | None = None
    if kind in (RuleKind.STALL, RuleKind.SATURATION):
        pending = spec.pending or (
            "requests_pending" if kind is RuleKind.STALL else "requests_waiting"
        )
        if pending not in known_signals:
            msg = (
                f"{where}.pending: signal {pending!r} has no query; add "
                f"health.queries.{pending} or name a signal that counts waiting work"
            )
            raise PolicyError(msg)
    elif spec.pending is not None:
        msg = f"{where}.pending: only stall and saturation rules read a pending signal"
        raise PolicyError(msg)
    if (spec.limit is None) != (spec.time_to_limit is None):
        msg = f"{where}: limit and timeToLimit go together; set both or neither"
        raise PolicyError(msg)
    limit: float | None = None
    limit_signal: str | None = None
    if spec.limit is not None:
        if kind is not RuleKind.GROWTH:
            msg = f"{where}.limit: only a growth rule has a limit; remove limit and timeToLimit"
            raise PolicyError(msg)
        if is_signal_name(spec.limit):
            limit_signal = spec.limit
            if limit_signal not in known_signals:
                msg = (
                    f"{where}.limit: signal {limit_signal!r} has no query; add "
                    f'health.queries.{limit_signal} or give a level such as "24Gi"'
                )
                raise PolicyError(msg)
        else:
            limit = parse_quantity(spec.limit)
    return Rule(
        name=spec.name,
        signal=spec.signal,
        kind=kind,
        threshold=threshold,
        clear=clear,
        window_s=parse_duration(spec.window),
        sustain_s=parse_duration(spec.sustain) if spec.sustain else 0.0,
        sufficient=bool(spec.sufficient),
        requires_traffic=bool(spec.requires_traffic),
        limit=limit,
        limit_signal=limit_signal,
        time_to_limit_s=parse_duration(spec.time_to_limit) if spec.time_to_limit else None,
        baseline_window_s=parse_duration(spec.baseline_window) if spec.baseline_window else 600.0,
        min_fleet=spec.min_fleet or 3,
        pending_signal=pending,
    )


def _check_levels(spec: SignalRuleSpec, where: str) -> None:
    levels = {"threshold": spec.threshold, "clear": spec.clear}
    if spec.limit is not None and not is_signal_name(spec.limit):
        levels["limit"] = spec.limit
    for name, text in levels.items():
        if text is not None and parse_quantity(text) < 0:
            msg = (
                f"{where}.{name}: {text} is negative; signals are never below zero, so every "
                'pod would breach it. Write a level such as "512Mi" or "0.9"'
            )
            raise PolicyError(msg)


def _check_windows(spec: SignalRuleSpec, where: str, cycle_interval_s: float | None) -> None:
    """Every window a rule judges must be able to hold ``MIN_SAMPLES`` samples."""
    windows = {
        "window": spec.window,
        "baselineWindow": spec.baseline_window,
        "timeToLimit": spec.time_to_limit,
    }
    for name, text in windows.items():
        if text is None:
            continue
        seconds = parse_duration(text)
        if seconds <= 0:
            msg = (
                f"{where}.{name}: {text} is empty, so the rule would never breach; "
                'write a duration such as "5m"'
            )
            raise PolicyError(msg)
        shortest = MIN_SAMPLES * (cycle_interval_s or 0.0)
        if name != "timeToLimit" and seconds < shortest:
            msg = (
                f"{where}.{name}: {text} is shorter than {MIN_SAMPLES} evaluation cycles "
                f"({format_duration(shortest)} at the operator's "
                f"{format_duration(cycle_interval_s or 0.0)} cycle interval), so it can never "
                f"hold the {MIN_SAMPLES} samples a rule needs and the rule would never breach; "
                f"make it at least {format_duration(shortest)} or shorten the cycle interval"
            )
            raise PolicyError(msg)


def resolve_policy(
    *layers: RecyclePolicySpec | None,
    sources: tuple[str, ...] = (),
    cycle_interval_s: float | None = None,
) -> EffectivePolicy:
    """Merge the layers over the built-in defaults and resolve every string to a number.

    With ``cycle_interval_s`` (the operator's, or a replayed trace's step), a window too short
    to hold ``MIN_SAMPLES`` samples is refused instead of silently never breaching.
    """
    spec = merge_policy_specs(DEFAULT_POLICY_SPEC, *layers)
    health = spec.health or HealthSpec()
    profile = profile_for(spec.server)
    own_queries = dict(health.queries or {})
    queries = {**profile.queries, **own_queries}
    known = set(BUILTIN_SIGNALS) | set(queries) | RESTART_SIGNALS
    wanted = [
        rule
        for rule in (_resolve_rule(r, known, cycle_interval_s) for r in health.rules or ())
        if rule
    ]
    switched_off = switched_off_rules(wanted, queries, profile)
    off = {entry.rule for entry in switched_off}
    rules = tuple(rule for rule in wanted if rule.name not in off)
    quorum = health.quorum or 2
    distinct = len({rule.signal for rule in rules if not rule.sufficient})
    if quorum > max(distinct, 1) and not any(rule.sufficient for rule in rules):
        because = (
            f" ({len(off)} rules are off: server {profile.server.value} lacks their signals)"
            if off
            else ""
        )
        msg = (
            f"health.quorum: {quorum} distinct signals can never breach at once with rules on "
            f"only {distinct} signals{because}; lower the quorum or add rules"
        )
        raise PolicyError(msg)
    disruption = spec.disruption or DisruptionSpec()
    recycle = spec.recycle or RecycleSpec()
    defaults_d = DisruptionPolicy()
    defaults_r = RecycleTimings()
    return EffectivePolicy(
        health=HealthPolicy(
            rules=rules,
            quorum=quorum,
            warmup_s=parse_duration(health.warmup) if health.warmup else 600.0,
            min_request_rate=(
                parse_quantity(health.min_request_rate) if health.min_request_rate else 0.1
            ),
            stale_after_s=parse_duration(health.stale_after) if health.stale_after else 120.0,
            queries=queries,
            floors={k: v for k, v in profile.floors.items() if k not in own_queries},
        ),
        disruption=DisruptionPolicy(
            max_unavailable=_int_or_percent(disruption.max_unavailable, defaults_d.max_unavailable),
            min_available=_int_or_percent(disruption.min_available, defaults_d.min_available),
            cooldown_s=_seconds(disruption.cooldown, defaults_d.cooldown_s),
            max_recycles_per_hour=_pick(
                disruption.max_recycles_per_hour, defaults_d.max_recycles_per_hour
            ),
            max_degraded_percent=_pick(
                disruption.max_degraded_percent, defaults_d.max_degraded_percent
            ),
            flap_window_s=_seconds(disruption.flap_window, defaults_d.flap_window_s),
        ),
        recycle=RecycleTimings(
            drain_timeout_s=_seconds(recycle.drain_timeout, defaults_r.drain_timeout_s),
            checkpoint_timeout_s=_seconds(
                recycle.checkpoint_timeout, defaults_r.checkpoint_timeout_s
            ),
            ready_timeout_s=_seconds(recycle.ready_timeout, defaults_r.ready_timeout_s),
            verify_window_s=_seconds(recycle.verify_window, defaults_r.verify_window_s),
            fallback_to_recreate=_pick(
                recycle.fallback_to_recreate, defaults_r.fallback_to_recreate
            ),
        ),
        dry_run=bool(spec.dry_run),
        sources=("built-in defaults", *sources),
        server=profile.server.value,
        switched_off=switched_off,
    )


def switched_off_rules(
    rules: Iterable[Rule], queries: Mapping[str, str], profile: ServerProfile
) -> tuple[SwitchedOffRule, ...]:
    """The rules that cannot run because a signal they read has no query, and why.

    A rule reads its own signal, its limit signal (growth with a per-pod limit), its pending
    signal (stall, saturation) and, when it counts only under traffic, ``request_rate``. The
    restart counters the engine keeps itself (``oom_kills``, ``restarts``) need no query. The
    reason is the profile's note on the missing signal (what the server lacks and how to supply
    a query). The caller reports every entry (a condition and a Warning Event): a rule is never
    dropped silently.
    """
    unavailable = profile.unavailable
    result = []
    for rule in rules:
        needed = [
            rule.signal,
            rule.limit_signal,
            rule.pending_signal,
            "request_rate" if rule.requires_traffic else None,
        ]
        missing = next(
            (s for s in needed if s is not None and s not in queries and s not in RESTART_SIGNALS),
            None,
        )
        if missing is not None:
            reason = unavailable.get(missing) or f"no query for {missing}"
            if rule.requires_traffic and missing == "request_rate":
                reason = f"the rule counts only under traffic and request_rate is missing: {reason}"
            result.append(SwitchedOffRule(rule.name, missing, reason))
    return tuple(result)


def _seconds(value: str | None, default: float) -> float:
    return parse_duration(value) if value is not None else default


def _pick(value: _T | None, default: _T) -> _T:
    return value if value is not None else default


def _int_or_percent(value: int | str | None, default: int | str) -> int | str:
    if value is None:
        return default
    if isinstance(value, str):
        number, is_percent = parse_int_or_percent(value, "disruption")
        return value.strip() if is_percent else number
    return value
