"""The built-in policy: defaults that protect an inference fleet out of the box.

The queries behind the signals come from the server profile (:mod:`infercycle.api.servers`,
vLLM unless ``server`` says otherwise); rules on a signal the server lacks are switched off and
reported by the resolver.

Leaks are what a restart cures, so a sustained, robust upward trend in host memory or GPU
memory is enough on its own. When the pod's limit is known (every container has a memory limit
in kube-state-metrics; the GPU's framebuffer size from DCGM), the leak is recycled when its
fitted trend would reach that limit within 2 h, so a slow leak runs until it matters and is
never left to end in an OOM kill; without a limit, growth above 256 MiB/h (host) or 512 MiB/h
(GPU) condemns it. A slower GPU memory creep (64 MiB/h: the pool is
preallocated, so any steady growth is a leak), latency, errors, CPU and cache pressure are
noisier or shared with causes a restart does not fix (traffic surges, a bad upstream), so they
count only when they agree: two distinct signals at once, each judged against the pod's own
past, the fleet at the same time, or (errors) a fixed ceiling.

Three failures are enough on their own because nothing else cures them: an engine that holds
work but makes no progress for 3 minutes (the hung engine whose health endpoint still answers;
it completes nothing, so it is never gated by traffic); a pod OOM-killed twice within a day;
and a KV cache pinned at 95 % or more for 30 minutes with requests queueing, while the rest of
the fleet is clearly less full (a fleet-wide surge fills every pod's cache and condemns none).
"""

from __future__ import annotations

from infercycle.api.spec import (
    DisruptionSpec,
    HealthSpec,
    RecyclePolicySpec,
    RecycleSpec,
    SignalRuleSpec,
)
from infercycle.api.values import RuleKind

DEFAULT_RULES: tuple[SignalRuleSpec, ...] = (
    SignalRuleSpec(
        name="memory-leak",
        signal="memory",
        kind=RuleKind.GROWTH,
        threshold="256Mi",
        clear="64Mi",
        window="1h",
        sustain="15m",
        sufficient=True,
        limit="memory_limit",
        time_to_limit="2h",
    ),
    SignalRuleSpec(
        name="gpu-memory-leak",
        signal="gpu_memory",
        kind=RuleKind.GROWTH,
        threshold="512Mi",
        clear="128Mi",
        window="1h",
        sustain="15m",
        sufficient=True,
        limit="gpu_memory_total",
        time_to_limit="2h",
    ),
    SignalRuleSpec(
        name="gpu-memory-creep",
        signal="gpu_memory",
        kind=RuleKind.GROWTH,
        threshold="64Mi",
        clear="16Mi",
        window="1h",
        sustain="30m",
    ),
    SignalRuleSpec(
        name="latency-creep",
        signal="latency_p99",
        kind=RuleKind.BASELINE,
        threshold="1.8",
        clear="1.4",
        window="15m",
        baseline_window="10m",
        requires_traffic=True,
    ),
    SignalRuleSpec(
        name="latency-outlier",
        signal="latency_p99",
        kind=RuleKind.OUTLIER,
        threshold="1.6",
        clear="1.3",
        window="10m",
        requires_traffic=True,
    ),
    SignalRuleSpec(
        name="error-rate",
        signal="error_rate",
        kind=RuleKind.ABOVE,
        threshold="50m",
        clear="20m",
        window="10m",
        requires_traffic=True,
    ),
    SignalRuleSpec(
        name="cpu-outlier",
        signal="cpu",
        kind=RuleKind.OUTLIER,
        threshold="1.5",
        clear="1.25",
        window="15m",
    ),
    SignalRuleSpec(
        name="kv-cache-pressure",
        signal="kv_cache",
        kind=RuleKind.OUTLIER,
        threshold="1.5",
        clear="1.2",
        window="15m",
        requires_traffic=True,
    ),
    SignalRuleSpec(
        name="engine-stall",
        signal="progress",
        kind=RuleKind.STALL,
        threshold="0",
        window="3m",
        pending="requests_pending",
        sufficient=True,
    ),
    SignalRuleSpec(
        name="oom-kills",
        signal="oom_kills",
        kind=RuleKind.INCREASE,
        threshold="2",
        window="24h",
        sufficient=True,
    ),
    SignalRuleSpec(
        name="kv-cache-saturation",
        signal="kv_cache",
        kind=RuleKind.SATURATION,
        threshold="950m",
        clear="900m",
        window="30m",
        pending="requests_waiting",
        sufficient=True,
    ),
)


DEFAULT_POLICY_SPEC = RecyclePolicySpec(
    health=HealthSpec(
        quorum=2,
        warmup="10m",
        min_request_rate="100m",
        stale_after="2m",
        rules=list(DEFAULT_RULES),
    ),
    disruption=DisruptionSpec(
        max_unavailable=1,
        min_available="75%",
        cooldown="1h",
        max_recycles_per_hour=4,
        max_degraded_percent=50,
        flap_window="30m",
    ),
    recycle=RecycleSpec(
        drain_timeout="2m",
        checkpoint_timeout="1m",
        ready_timeout="10m",
        verify_window="15m",
        fallback_to_recreate=True,
    ),
    dry_run=False,
)
