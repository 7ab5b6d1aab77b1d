"""The policy blocks of both resources as they are written in a spec (the wire form).

A ``RecyclePolicy`` holds cluster-wide defaults; an ``InferenceDeployment`` overrides them field by
field. Every field is optional so that "not set" stays distinguishable from "set to the default";
:mod:`infercycle.api.resolver` layers them and turns them into :mod:`infercycle.api.values`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Annotated

from pydantic import AfterValidator, Field, model_validator

from infercycle.api.base import ApiModel
from infercycle.api.servers import ServerKind
from infercycle.api.units import (
    QUANTITY_PATTERN,
    Duration,
    Quantity,
    camel,
    parse_int_or_percent,
    parse_quantity,
)
from infercycle.api.values import MAX_RECYCLES_PER_HOUR, RuleKind

SIGNAL_NAME_PATTERN = r"^[a-z][a-z0-9_]{0,62}$"
RULE_NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"
PERCENT_OR_INT_PATTERN = r"^([0-9]+|[0-9]{1,3}%)$"
LIMIT_PATTERN = f"^({QUANTITY_PATTERN[1:-1]}|{SIGNAL_NAME_PATTERN[1:-1]})$"


def is_signal_name(text: str) -> bool:
    """Whether a ``limit`` names a signal (``memory_limit``) rather than a level (``24Gi``)."""
    return text[:1].isalpha()


def _check_limit(text: str) -> str:
    if not is_signal_name(text):
        parse_quantity(text)
    elif not re.fullmatch(SIGNAL_NAME_PATTERN, text):
        msg = (
            f'{text!r} is neither a level such as "24Gi" nor a signal name such as '
            '"memory_limit" (lower case letters, digits and underscores)'
        )
        raise ValueError(msg)
    return text


LimitRef = Annotated[
    str,
    Field(max_length=63, json_schema_extra={"pattern": LIMIT_PATTERN}),
    AfterValidator(_check_limit),
]

SERVER_DESCRIPTION = (
    "Inference server of the pods (vllm, sglang, tgi, llamacpp, triton, dynamo, custom): chooses "
    "the built-in queries of the engine signals. Rules on a signal the server does not export are "
    "switched off and reported; health.queries overrides any query. Default vllm."
)


class SignalRuleSpec(ApiModel):
    """One rule on one signal, keyed by ``name``: an override names the rule it changes."""

    name: Annotated[str, Field(max_length=63, json_schema_extra={"pattern": RULE_NAME_PATTERN})]
    signal: Annotated[
        str | None,
        Field(
            default=None,
            max_length=63,
            json_schema_extra={"pattern": SIGNAL_NAME_PATTERN},
            description="Signal judged by the rule: a built-in one (cpu, memory, gpu_memory, "
            "latency_p99, ttft_p99, token_latency_p99, kv_cache, requests_running, request_rate, "
            "error_rate, memory_limit, gpu_memory_total) or a custom signal with a query.",
        ),
    ] = None
    kind: Annotated[
        RuleKind | None,
        Field(
            default=None,
            description="above/below: every sample in the window beyond the threshold; growth: "
            "robust slope over the window, per hour; baseline: ratio to the pod's own early "
            "value; outlier: ratio to the fleet median at the same time; stall: a progress "
            "counter rises by at most the threshold over the window while `pending` work "
            "waits throughout; increase: a counter rises by at least the threshold within the "
            "window (restarts and OOM kills count across the pod's lives); saturation: every "
            "sample at or above the threshold while `pending` work queues and the fleet "
            "median stays clearly below the pod.",
        ),
    ] = None
    threshold: Annotated[
        Quantity | None,
        Field(
            default=None,
            description="Breach level. Units: the signal's (bytes, seconds, cores, 0..1); per "
            'hour for growth ("256Mi" = 256 MiB/h); a ratio for baseline and outlier ("1.8").',
        ),
    ] = None
    clear: Annotated[
        Quantity | None,
        Field(
            default=None,
            description="Hysteresis: once breached, the rule clears only past this level, on the "
            "healthy side of the threshold. Defaults to the threshold.",
        ),
    ] = None
    window: Annotated[
        Duration | None,
        Field(
            default=None,
            description="Sustain window (above/below/baseline/outlier) or fit window (growth).",
        ),
    ] = None
    sustain: Annotated[
        Duration | None,
        Field(default=None, description="growth only: how long the slope must stay breached."),
    ] = None
    sufficient: Annotated[
        bool | None,
        Field(default=None, description="This rule alone condemns a pod, whatever the quorum."),
    ] = None
    requires_traffic: Annotated[
        bool | None,
        Field(
            default=None,
            description="Count this rule only while the pod serves at least minRequestRate.",
        ),
    ] = None
    limit: Annotated[
        LimitRef | None,
        Field(
            default=None,
            description='growth only: level the signal must not reach, either fixed ("24Gi") '
            "or the name of a signal whose latest value is each pod's own limit "
            '("memory_limit"). A pod with a known limit is judged by time to limit instead '
            "of by `threshold`; a pod without one (no sample of the limit signal yet) by "
            "`threshold`.",
        ),
    ] = None
    time_to_limit: Annotated[
        Duration | None,
        Field(
            default=None,
            description="growth only: breach when the fitted trend reaches `limit` within this.",
        ),
    ] = None
    baseline_window: Annotated[
        Duration | None,
        Field(
            default=None,
            description="baseline only: length of the reference period right after warm-up.",
        ),
    ] = None
    min_fleet: Annotated[
        int | None,
        Field(
            default=None,
            ge=2,
            le=10000,
            description="outlier and saturation only: pods with data needed.",
        ),
    ] = None
    pending: Annotated[
        str | None,
        Field(
            default=None,
            max_length=63,
            json_schema_extra={"pattern": SIGNAL_NAME_PATTERN},
            description="stall and saturation only: the signal counting work that waits "
            '(default "requests_pending" for stall, "requests_waiting" for saturation).',
        ),
    ] = None
    enabled: Annotated[
        bool | None, Field(default=None, description="false switches an inherited rule off.")
    ] = None


class HealthSpec(ApiModel):
    """When a pod counts as degraded."""

    quorum: Annotated[
        int | None,
        Field(default=None, ge=1, le=16, description="Distinct signals that must breach at once."),
    ] = None
    warmup: Annotated[
        Duration | None,
        Field(default=None, description="Grace period after a pod starts: nothing breaches."),
    ] = None
    min_request_rate: Annotated[
        Quantity | None,
        Field(
            default=None,
            description="Requests/s a pod must serve before traffic-dependent rules count.",
        ),
    ] = None
    stale_after: Annotated[
        Duration | None,
        Field(default=None, description="Samples older than this are no data, never a breach."),
    ] = None
    queries: Annotated[
        dict[str, Annotated[str, Field(max_length=4096)]] | None,
        Field(
            default=None,
            max_length=32,
            description="PromQL per signal, returning one series per (namespace, pod). "
            "Overrides a built-in signal's query or defines a custom signal.",
        ),
    ] = None
    rules: Annotated[
        list[SignalRuleSpec] | None,
        Field(default=None, max_length=32, description="Rules keyed by name."),
    ] = None

    @model_validator(mode="after")
    def _unique_rule_names(self) -> HealthSpec:
        names = [rule.name for rule in self.rules or ()]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            msg = f"health.rules: rule names must be unique, repeated: {', '.join(duplicates)}"
            raise ValueError(msg)
        return self


IntOrPercent = Annotated[
    int | str,
    Field(json_schema_extra={"x-kubernetes-int-or-string": True}),
]


class DisruptionSpec(ApiModel):
    """How much recycling the fleet tolerates."""

    max_unavailable: Annotated[
        IntOrPercent | None,
        Field(default=None, description='Pods out of service at once by recycling ("1", "25%").'),
    ] = None
    min_available: Annotated[
        IntOrPercent | None,
        Field(default=None, description="Ready pods that must remain before a recycle starts."),
    ] = None
    cooldown: Annotated[
        Duration | None,
        Field(default=None, description="Minimum time between two recycles of the same pod."),
    ] = None
    max_recycles_per_hour: Annotated[
        int | None,
        Field(
            default=None,
            ge=0,
            le=MAX_RECYCLES_PER_HOUR,
            description="Recycles per deployment per hour. At most "
            f"{MAX_RECYCLES_PER_HOUR}: the budget is counted from status.history, which keeps "
            f"the last {MAX_RECYCLES_PER_HOUR} recycles.",
        ),
    ] = None
    max_degraded_percent: Annotated[
        int | None,
        Field(
            default=None,
            ge=1,
            le=100,
            description="Circuit breaker: pause when more of the fleet than this looks degraded.",
        ),
    ] = None
    flap_window: Annotated[
        Duration | None,
        Field(
            default=None,
            description="A pod degraded again this soon after its recycle is not recycled again "
            "(restarting will not fix it); the deployment is Paused for it.",
        ),
    ] = None

    @model_validator(mode="after")
    def _percent_forms(self) -> DisruptionSpec:
        for name in ("max_unavailable", "min_available"):
            value = getattr(self, name)
            if isinstance(value, str):
                parse_int_or_percent(value, f"disruption.{camel(name)}")
        return self


class RecycleSpec(ApiModel):
    """Timeouts and behaviour of the recycle steps."""

    drain_timeout: Annotated[
        Duration | None,
        Field(default=None, description="Longest wait for in-flight requests to finish."),
    ] = None
    checkpoint_timeout: Annotated[
        Duration | None, Field(default=None, description="Longest wait for the agent checkpoint.")
    ] = None
    ready_timeout: Annotated[
        Duration | None,
        Field(default=None, description="Longest wait for the restarted pod to become Ready."),
    ] = None
    verify_window: Annotated[
        Duration | None,
        Field(default=None, description="Time the restarted pod has to look healthy again."),
    ] = None
    fallback_to_recreate: Annotated[
        bool | None,
        Field(
            default=None,
            description="When the agent is missing or fails, evict the pod instead (InPlace).",
        ),
    ] = None


class LabelSelectorRequirement(ApiModel):
    key: Annotated[str, Field(max_length=317)]
    operator: Annotated[
        str, Field(json_schema_extra={"enum": ["In", "NotIn", "Exists", "DoesNotExist"]})
    ]
    values: Annotated[list[Annotated[str, Field(max_length=63)]] | None, Field(max_length=64)] = (
        None
    )


class LabelSelector(ApiModel):
    """A metav1.LabelSelector."""

    match_labels: Annotated[
        dict[str, Annotated[str, Field(max_length=63)]] | None, Field(max_length=64)
    ] = None
    match_expressions: Annotated[list[LabelSelectorRequirement] | None, Field(max_length=16)] = None

    def matches(self, labels: Mapping[str, str]) -> bool:
        for key, value in (self.match_labels or {}).items():
            if labels.get(key) != value:
                return False
        for requirement in self.match_expressions or ():
            present = requirement.key in labels
            current = labels.get(requirement.key)
            values = requirement.values or []
            if requirement.operator == "In" and current not in values:
                return False
            if requirement.operator == "NotIn" and present and current in values:
                return False
            if requirement.operator == "Exists" and not present:
                return False
            if requirement.operator == "DoesNotExist" and present:
                return False
        return True

    def to_query(self) -> str:
        """The selector in the form of the API's ``labelSelector`` parameter."""
        parts = [f"{key}={value}" for key, value in sorted((self.match_labels or {}).items())]
        for requirement in self.match_expressions or ():
            values = ",".join(requirement.values or [])
            parts.append(
                {
                    "In": f"{requirement.key} in ({values})",
                    "NotIn": f"{requirement.key} notin ({values})",
                    "Exists": requirement.key,
                }.get(requirement.operator, f"!{requirement.key}")
            )
        return ",".join(parts)


class RecyclePolicySpec(ApiModel):
    """Cluster-wide defaults, chosen by ``policyRef`` or by selectors."""

    namespace_selector: Annotated[
        LabelSelector | None,
        Field(default=None, description="Namespaces (by their labels) this policy applies to."),
    ] = None
    selector: Annotated[
        LabelSelector | None,
        Field(default=None, description="InferenceDeployments (by labels) this policy applies to."),
    ] = None
    priority: Annotated[
        int | None,
        Field(default=None, ge=0, le=1000, description="Highest wins when several policies match."),
    ] = None
    server: Annotated[
        ServerKind | None,
        Field(default=None, description=SERVER_DESCRIPTION),
    ] = None
    health: HealthSpec | None = None
    disruption: DisruptionSpec | None = None
    recycle: RecycleSpec | None = None
    dry_run: Annotated[
        bool | None, Field(default=None, description="Decide and report, never act.")
    ] = None
