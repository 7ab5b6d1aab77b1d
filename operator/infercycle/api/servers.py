"""Server profiles: where each signal comes from on each inference server.

A profile maps every built-in signal to the PromQL that reads it on one server, or says why the
server cannot provide it. Each query returns one series per ``(namespace, pod)`` in the signal's
unit (seconds, bytes, requests per second, a fraction 0..1). The engine metrics were checked
against the servers' own metric definitions at the version given in ``checked_against``: names,
types, labels and histogram buckets. Infrastructure signals (cAdvisor, kube-state-metrics,
dcgm-exporter) are the same for every server.

Version differences inside one profile are handled in the query itself: ``A or B`` reads the new
metric where it exists and the old one elsewhere (vLLM's KV-cache gauge was renamed in 0.9, its
time-per-output-token histogram in 0.11).

A signal read through ``histogram_quantile`` carries the histogram's lowest finite bucket bound
(``floor``): below it the quantile cannot move (it interpolates between 0 and that bound), so a
rule comparing such values is blind (see :func:`infercycle.health.resolution.blind_rules`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType


class ServerKind(StrEnum):
    """The inference server a deployment runs; chooses the profile of signal queries."""

    VLLM = "vllm"
    SGLANG = "sglang"
    TGI = "tgi"
    LLAMACPP = "llamacpp"
    TRITON = "triton"
    DYNAMO = "dynamo"
    CUSTOM = "custom"


DEFAULT_SERVER = ServerKind.VLLM

ENGINE_SIGNALS = (
    "latency_p99",
    "ttft_p99",
    "token_latency_p99",
    "kv_cache",
    "requests_running",
    "request_rate",
    "error_rate",
    "requests_waiting",
    "requests_pending",
    "progress",
)
"""Signals the inference server itself exports; a profile gives each a query or a reason.

``progress`` is a raw counter (not a rate: a rate over minutes would keep a hung engine looking
busy) that rises with every step of work the engine does; a counter that rises only when a
request finishes does not qualify, since one long generation would look like a hang.
``requests_pending`` is the work the engine holds, running or waiting."""

INFRASTRUCTURE_SIGNALS = ("cpu", "memory", "memory_limit", "gpu_memory", "gpu_memory_total")
"""Signals from cAdvisor, kube-state-metrics and dcgm-exporter: the same for every server."""

BUILTIN_SIGNALS = (*INFRASTRUCTURE_SIGNALS, *ENGINE_SIGNALS)

WINDOW = "5m"


@dataclass(frozen=True, slots=True)
class SignalSource:
    """One signal on one server: its query, or ``None`` and the reason it is unavailable."""

    signal: str
    query: str | None
    metrics: tuple[str, ...] = ()
    """The metric families the query reads (documentation and the expositions of the tests)."""
    note: str = ""
    """What the value is where it differs from the signal's name (a mean, not a p99), or why
    the server cannot provide the signal."""
    floor: float | None = None
    """Lowest finite bucket bound of the histogram behind a quantile, in the signal's unit."""

    @property
    def available(self) -> bool:
        return self.query is not None


@dataclass(frozen=True, slots=True)
class ServerProfile:
    server: ServerKind
    title: str
    checked_against: str
    """Version and source files the engine metrics were checked against."""
    endpoint: str
    """Where the server serves its metrics and what turns them on."""
    sources: Mapping[str, SignalSource] = field(default_factory=dict)

    def source(self, signal: str) -> SignalSource | None:
        return self.sources.get(signal)

    @property
    def queries(self) -> dict[str, str]:
        """Signal -> PromQL for every signal this server provides."""
        return {name: s.query for name, s in self.sources.items() if s.query is not None}

    @property
    def unavailable(self) -> dict[str, str]:
        """Signal -> why this server cannot provide it."""
        return {name: s.note for name, s in self.sources.items() if s.query is None}

    @property
    def floors(self) -> dict[str, float]:
        """Signal -> lowest finite bucket of the histogram it is a quantile of."""
        return {name: s.floor for name, s in self.sources.items() if s.floor is not None}


# ---------------------------------------------------------------------------------------------
# Query builders


def by_pod(expression: str, how: str = "sum") -> str:
    return f"{how} by (namespace, pod) ({expression})"


def rate_by_pod(selector: str) -> str:
    return by_pod(f"rate({selector}[{WINDOW}])")


def p99(*bucket_selectors: str) -> str:
    """The 0.99 quantile per pod of one histogram (several: the first that exists, per pod)."""
    inner = " or ".join(
        f"sum by (namespace, pod, le) (rate({selector}[{WINDOW}]))" for selector in bucket_selectors
    )
    return f"histogram_quantile(0.99, {inner})"


def ratio(part: str, whole: str) -> str:
    """``part / whole`` per pod, 0 while ``part`` has no series yet (a counter created on its
    first increment), no value while ``whole`` is zero (no traffic: no ratio)."""
    return f"({part} or ({whole}) * 0) / (({whole}) > 0)"


def mean(total: str, count: str, scale: float = 1.0) -> str:
    """A per-pod mean from a sum counter and a count counter, no value without events."""
    scaled = f" / {scale:g}" if scale != 1.0 else ""
    return f"{rate_by_pod(total)} / ({rate_by_pod(count)} > 0){scaled}"


def _unavailable(signal: str, note: str) -> SignalSource:
    return SignalSource(signal, None, (), note)


# ---------------------------------------------------------------------------------------------
# Infrastructure: cAdvisor, kube-state-metrics, dcgm-exporter

DCGM_LAYOUTS = (
    # dcgm-exporter with its default Kubernetes labels, scraped with honorLabels: true.
    ('{pod!="", pod_name="", exported_pod=""}', None),
    # dcgm-exporter with its older label names (pod_name/pod_namespace).
    ('{pod_name!=""}', ("pod_name", "pod_namespace")),
    # Default labels behind a ServiceMonitor with honorLabels: false: Prometheus moved them.
    ('{exported_pod!=""}', ("exported_pod", "exported_namespace")),
)
"""dcgm-exporter labels a GPU with the pod it is allocated to (only then) in one of three ways;
each layout is read and renamed to ``namespace``/``pod``. A GPU no pod holds has no pod label
and is left out. Checked against dcgm-exporter 4.2 (``internal/pkg/transformation/kubernetes.go``:
``pod``/``namespace``/``container``, or ``pod_name``/``pod_namespace``/``container_name`` with
its older label names)."""


def dcgm_by_pod(metric: str) -> str:
    """``sum by (namespace, pod)`` of a dcgm-exporter gauge over every label layout, in MiB."""
    parts = []
    for selector, rename in DCGM_LAYOUTS:
        series = f"{metric}{selector}"
        if rename is not None:
            pod_label, namespace_label = rename
            series = (
                f'label_replace(label_replace({series}, "pod", "$1", "{pod_label}", "(.+)"), '
                f'"namespace", "$1", "{namespace_label}", "(.+)")'
            )
        parts.append(by_pod(series))
    return "(" + " or ".join(parts) + ")"


MIB = 1048576

_SIDECARS = 'kube_pod_init_container_info{restart_policy="Always"}'
_MEMORY_LIMITS = 'kube_pod_container_resource_limits{resource="memory"}'
_SIDECAR_LIMITS = (
    'kube_pod_init_container_resource_limits{resource="memory"} '
    f"* on (namespace, pod, container) group_left () {_SIDECARS}"
)


def plus_optional(required: str, optional: str) -> str:
    """``required + optional`` per pod, ``optional`` counting 0 where it has no series."""
    return f"({required} + ({optional} or ({required}) * 0))"


MEMORY_LIMIT_QUERY = (
    plus_optional(by_pod(_MEMORY_LIMITS), by_pod(_SIDECAR_LIMITS))
    + " unless on (namespace, pod) ("
    + plus_optional(by_pod("kube_pod_container_info", "count"), by_pod(_SIDECARS, "count"))
    + " > "
    + plus_optional(by_pod(_MEMORY_LIMITS, "count"), by_pod(_SIDECAR_LIMITS, "count"))
    + ")"
)
"""The pod's memory limit: its containers' plus its native sidecars' (init containers with
``restartPolicy: Always``, which run beside the server and whose working set cAdvisor counts),
only where every one of them has a limit, so a server running without one is never judged
against its sidecar's. kube-state-metrics 2.10+ (``kube_pod_init_container_info`` carries
``restart_policy``); checked against ``internal/store/pod.go`` of 2.13."""

INFRASTRUCTURE: Mapping[str, SignalSource] = MappingProxyType(
    {
        "cpu": SignalSource(
            "cpu",
            rate_by_pod('container_cpu_usage_seconds_total{container!="", container!="POD"}'),
            ("container_cpu_usage_seconds_total",),
            "cAdvisor (kubelet /metrics/cadvisor), cores",
        ),
        "memory": SignalSource(
            "memory",
            by_pod('container_memory_working_set_bytes{container!="", container!="POD"}'),
            ("container_memory_working_set_bytes",),
            "cAdvisor, bytes; every running container, native sidecars included",
        ),
        "memory_limit": SignalSource(
            "memory_limit",
            MEMORY_LIMIT_QUERY,
            (
                "kube_pod_container_resource_limits",
                "kube_pod_init_container_resource_limits",
                "kube_pod_container_info",
                "kube_pod_init_container_info",
            ),
            "kube-state-metrics, bytes",
        ),
        "gpu_memory": SignalSource(
            "gpu_memory",
            f"{dcgm_by_pod('DCGM_FI_DEV_FB_USED')} * {MIB}",
            ("DCGM_FI_DEV_FB_USED",),
            "dcgm-exporter (MiB, turned into bytes)",
        ),
        "gpu_memory_total": SignalSource(
            "gpu_memory_total",
            "("
            + plus_optional(
                f"{dcgm_by_pod('DCGM_FI_DEV_FB_USED')} + {dcgm_by_pod('DCGM_FI_DEV_FB_FREE')}",
                dcgm_by_pod("DCGM_FI_DEV_FB_RESERVED"),
            )
            + f") * {MIB}",
            ("DCGM_FI_DEV_FB_USED", "DCGM_FI_DEV_FB_FREE", "DCGM_FI_DEV_FB_RESERVED"),
            "dcgm-exporter: used + free + reserved (reserved where the exporter's counters "
            "include it) MiB, turned into bytes",
        ),
    }
)


# ---------------------------------------------------------------------------------------------
# Histogram bucket layouts, as the servers define them (upper bounds, seconds)

VLLM_E2E_BUCKETS = (
    0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0,
    240.0, 480.0, 960.0, 1920.0, 7680.0,
)  # fmt: skip
VLLM_TTFT_BUCKETS = (
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
    20.0, 40.0, 80.0, 160.0, 640.0, 2560.0,
)  # fmt: skip
VLLM_TOKEN_BUCKETS = (
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
    20.0, 40.0, 80.0,
)  # fmt: skip
SGLANG_TTFT_BUCKETS = (
    0.1, 0.2, 0.4, 0.6, 0.8, 1.0, 2.0, 4.0, 6.0, 8.0, 10.0, 20.0, 40.0, 60.0, 80.0, 100.0,
    200.0, 400.0,
)  # fmt: skip
SGLANG_E2E_BUCKETS = (
    0.1, 0.2, 0.4, 0.6, 0.8, 1.0, 2.0, 4.0, 6.0, 8.0, 10.0, 20.0, 40.0, 60.0, 80.0, 100.0,
    200.0, 400.0, 600.0, 1200.0, 1800.0, 2400.0,
)  # fmt: skip
SGLANG_TOKEN_BUCKETS = (
    0.002, 0.004, 0.006, 0.008, 0.010, 0.015, 0.020, 0.025, 0.030, 0.035, 0.040, 0.060, 0.080,
    0.100, 0.200, 0.400, 0.600, 0.800, 1.0, 2.0, 4.0, 6.0, 8.0,
)  # fmt: skip
TGI_DURATION_BUCKETS = tuple(0.0001 * 1.5**k for k in range(1, 36))
"""TGI's router gives every ``*duration`` histogram 35 geometric buckets from 0.1 ms x 1.5."""
PROMETHEUS_DEFAULT_BUCKETS = (
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
)  # fmt: skip


def _profile(
    server: ServerKind,
    title: str,
    checked_against: str,
    endpoint: str,
    engine: Mapping[str, SignalSource],
) -> ServerProfile:
    missing = set(ENGINE_SIGNALS) - set(engine)
    if missing:
        msg = f"profile {server.value} says nothing of {', '.join(sorted(missing))}"
        raise ValueError(msg)
    sources = MappingProxyType({**INFRASTRUCTURE, **engine})
    return ServerProfile(server, title, checked_against, endpoint, sources)


VLLM = _profile(
    ServerKind.VLLM,
    "vLLM",
    "vLLM 0.10-0.11 (V1 engine): vllm/v1/metrics/loggers.py (PrometheusStatLogger: names, "
    "model_name/engine labels, buckets), vllm/v1/engine/__init__.py (FinishReason, whose "
    '"error" reason newer releases add)',
    "the API server's own port (8000 by default), path /metrics; always on",
    {
        "latency_p99": SignalSource(
            "latency_p99",
            p99("vllm:e2e_request_latency_seconds_bucket"),
            ("vllm:e2e_request_latency_seconds",),
            "end-to-end p99; moves with output length, lowest bucket 0.3 s",
            floor=VLLM_E2E_BUCKETS[0],
        ),
        "ttft_p99": SignalSource(
            "ttft_p99",
            p99("vllm:time_to_first_token_seconds_bucket"),
            ("vllm:time_to_first_token_seconds",),
            floor=VLLM_TTFT_BUCKETS[0],
        ),
        "token_latency_p99": SignalSource(
            "token_latency_p99",
            p99(
                "vllm:inter_token_latency_seconds_bucket",
                "vllm:time_per_output_token_seconds_bucket",
            ),
            ("vllm:inter_token_latency_seconds", "vllm:time_per_output_token_seconds"),
            "inter-token latency (0.11+), time per output token before",
            floor=VLLM_TOKEN_BUCKETS[0],
        ),
        "kv_cache": SignalSource(
            "kv_cache",
            f"{by_pod('vllm:kv_cache_usage_perc', 'max')} or "
            f"{by_pod('vllm:gpu_cache_usage_perc', 'max')}",
            ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc"),
            "kv_cache_usage_perc from 0.9, gpu_cache_usage_perc before",
        ),
        "requests_running": SignalSource(
            "requests_running",
            by_pod("vllm:num_requests_running"),
            ("vllm:num_requests_running",),
        ),
        "request_rate": SignalSource(
            "request_rate",
            rate_by_pod("vllm:request_success_total"),
            ("vllm:request_success_total",),
            "every finished request, whatever its finished_reason",
        ),
        "error_rate": SignalSource(
            "error_rate",
            # vLLM labels every finished reason at startup, so the error series exists from the
            # start where the version has that reason; before, this reads no data, not zero.
            rate_by_pod('vllm:request_success_total{finished_reason="error"}')
            + f" / ({rate_by_pod('vllm:request_success_total')} > 0)",
            ("vllm:request_success_total",),
            'finished_reason="error" over all finished requests (vLLM has no failure counter); '
            "no data on a release without that reason",
        ),
        "requests_waiting": SignalSource(
            "requests_waiting",
            by_pod("vllm:num_requests_waiting"),
            ("vllm:num_requests_waiting",),
        ),
        "requests_pending": SignalSource(
            "requests_pending",
            plus_optional(by_pod("vllm:num_requests_running"), by_pod("vllm:num_requests_waiting")),
            ("vllm:num_requests_running", "vllm:num_requests_waiting"),
            "running plus waiting requests",
        ),
        "progress": SignalSource(
            "progress",
            plus_optional(
                by_pod("vllm:generation_tokens_total"), by_pod("vllm:request_success_total")
            ),
            ("vllm:generation_tokens_total", "vllm:request_success_total"),
            "tokens generated (counted every engine step) plus requests finished",
        ),
    },
)

_SGLANG_RESPONSES = 'sglang:http_responses_total{endpoint=~"/generate|/v1/.+"}'

SGLANG = _profile(
    ServerKind.SGLANG,
    "SGLang",
    "SGLang 0.5 (--enable-metrics): python/sglang/srt/metrics/collector.py "
    "(TokenizerMetricsCollector, SchedulerMetricsCollector), python/sglang/srt/utils/common.py "
    "(add_prometheus_track_response_middleware)",
    "the server port (30000 by default), path /metrics; only with --enable-metrics",
    {
        "latency_p99": SignalSource(
            "latency_p99",
            p99("sglang:e2e_request_latency_seconds_bucket"),
            ("sglang:e2e_request_latency_seconds",),
            "end-to-end p99, lowest bucket 0.1 s",
            floor=SGLANG_E2E_BUCKETS[0],
        ),
        "ttft_p99": SignalSource(
            "ttft_p99",
            p99("sglang:time_to_first_token_seconds_bucket"),
            ("sglang:time_to_first_token_seconds",),
            "lowest bucket 0.1 s: a faster first token reads as at most 0.1 s",
            floor=SGLANG_TTFT_BUCKETS[0],
        ),
        "token_latency_p99": SignalSource(
            "token_latency_p99",
            p99("sglang:inter_token_latency_seconds_bucket"),
            ("sglang:inter_token_latency_seconds",),
            floor=SGLANG_TOKEN_BUCKETS[0],
        ),
        "kv_cache": SignalSource(
            "kv_cache",
            by_pod("sglang:token_usage", "max"),
            ("sglang:token_usage",),
            "token pool usage, 0..1",
        ),
        "requests_running": SignalSource(
            "requests_running",
            by_pod("sglang:num_running_reqs"),
            ("sglang:num_running_reqs",),
        ),
        "request_rate": SignalSource(
            "request_rate",
            rate_by_pod("sglang:num_requests_total"),
            ("sglang:num_requests_total",),
            "finished requests (aborted ones are counted apart)",
        ),
        "error_rate": SignalSource(
            "error_rate",
            ratio(
                rate_by_pod(_SGLANG_RESPONSES.replace("}", ', status_code=~"5.."}')),
                rate_by_pod(_SGLANG_RESPONSES),
            ),
            ("sglang:http_responses_total",),
            "5xx responses of the generation endpoints over all their responses "
            "(sglang:num_aborted_requests_total also counts client cancellations)",
        ),
        "requests_waiting": SignalSource(
            "requests_waiting",
            by_pod("sglang:num_queue_reqs"),
            ("sglang:num_queue_reqs",),
        ),
        "requests_pending": SignalSource(
            "requests_pending",
            plus_optional(by_pod("sglang:num_running_reqs"), by_pod("sglang:num_queue_reqs")),
            ("sglang:num_running_reqs", "sglang:num_queue_reqs"),
            "running plus queued requests",
        ),
        "progress": _unavailable(
            "progress",
            "SGLang counts generated tokens and requests only when a request finishes "
            "(observe_one_finished_request), so one long generation would look like a hang; "
            "add health.queries.progress with a counter that rises every step",
        ),
    },
)

TGI = _profile(
    ServerKind.TGI,
    "Text Generation Inference (TGI)",
    "text-generation-inference 3.x: router/src/server.rs (bucket setup), "
    "router/src/infer/mod.rs, router/src/infer/v3 queue and scheduler (counters, gauges)",
    "the router's port (80 in the container image, 3000 otherwise), path /metrics; always on",
    {
        "latency_p99": SignalSource(
            "latency_p99",
            p99("tgi_request_duration_bucket"),
            ("tgi_request_duration",),
            "end-to-end p99; 35 geometric buckets from 0.15 ms",
            floor=TGI_DURATION_BUCKETS[0],
        ),
        "ttft_p99": _unavailable(
            "ttft_p99",
            "TGI has no time-to-first-token metric: tgi_request_queue_duration and "
            'tgi_batch_inference_duration{method="prefill"} are parts of it, per batch',
        ),
        "token_latency_p99": SignalSource(
            "token_latency_p99",
            p99("tgi_request_mean_time_per_token_duration_bucket"),
            ("tgi_request_mean_time_per_token_duration",),
            "p99 over requests of each request's mean time per token",
            floor=TGI_DURATION_BUCKETS[0],
        ),
        "kv_cache": _unavailable(
            "kv_cache", "TGI exports no KV-cache usage (only the batch's token budget)"
        ),
        "requests_running": SignalSource(
            "requests_running",
            by_pod("tgi_batch_current_size"),
            ("tgi_batch_current_size",),
        ),
        "request_rate": SignalSource(
            "request_rate",
            rate_by_pod("tgi_request_success"),
            ("tgi_request_success",),
        ),
        "error_rate": SignalSource(
            "error_rate",
            ratio(
                rate_by_pod('tgi_request_failure{err!~"validation|dropped"}'),
                plus_optional(
                    rate_by_pod("tgi_request_success"), rate_by_pod("tgi_request_failure")
                ),
            ),
            ("tgi_request_failure", "tgi_request_success"),
            "failures other than bad input (validation) and client disconnects (dropped) "
            "over all finished requests",
        ),
        "requests_waiting": SignalSource(
            "requests_waiting",
            by_pod("tgi_queue_size"),
            ("tgi_queue_size",),
        ),
        "requests_pending": SignalSource(
            "requests_pending",
            plus_optional(by_pod("tgi_batch_current_size"), by_pod("tgi_queue_size")),
            ("tgi_batch_current_size", "tgi_queue_size"),
            "the running batch plus the queue",
        ),
        "progress": SignalSource(
            "progress",
            by_pod("tgi_batch_inference_count"),
            ("tgi_batch_inference_count",),
            "forward passes (prefill and decode), counted as each starts",
        ),
    },
)

LLAMACPP = _profile(
    ServerKind.LLAMACPP,
    "llama.cpp server",
    "llama.cpp server (--metrics), tools/server/server.cpp of the b6xxx releases "
    "(after llamacpp:kv_cache_usage_ratio was removed)",
    "the server port (8080 by default), path /metrics; only with --metrics",
    {
        "latency_p99": _unavailable(
            "latency_p99", "llama.cpp exports no request latency (no histogram, no timings)"
        ),
        "ttft_p99": _unavailable("ttft_p99", "llama.cpp exports no time to first token"),
        "token_latency_p99": SignalSource(
            "token_latency_p99",
            mean("llamacpp:tokens_predicted_seconds_total", "llamacpp:tokens_predicted_total"),
            ("llamacpp:tokens_predicted_seconds_total", "llamacpp:tokens_predicted_total"),
            "the mean seconds per generated token over the window, not a p99",
        ),
        "kv_cache": _unavailable(
            "kv_cache",
            "llama.cpp no longer exports KV-cache usage (kv_cache_usage_ratio was removed); "
            "on an older build add health.queries.kv_cache",
        ),
        "requests_running": SignalSource(
            "requests_running",
            by_pod("llamacpp:requests_processing"),
            ("llamacpp:requests_processing",),
        ),
        "request_rate": _unavailable(
            "request_rate",
            "llama.cpp counts tokens, not requests; rules that need traffic are switched off",
        ),
        "error_rate": _unavailable("error_rate", "llama.cpp exports no error counter"),
        "requests_waiting": SignalSource(
            "requests_waiting",
            by_pod("llamacpp:requests_deferred"),
            ("llamacpp:requests_deferred",),
        ),
        "requests_pending": SignalSource(
            "requests_pending",
            plus_optional(
                by_pod("llamacpp:requests_processing"), by_pod("llamacpp:requests_deferred")
            ),
            ("llamacpp:requests_processing", "llamacpp:requests_deferred"),
            "processing plus deferred requests",
        ),
        "progress": SignalSource(
            "progress",
            by_pod("llamacpp:n_decode_total"),
            ("llamacpp:n_decode_total",),
            "llama_decode() calls (tokens_predicted_total rises only when a request finishes)",
        ),
    },
)

TRITON = _profile(
    ServerKind.TRITON,
    "Triton Inference Server / TensorRT-LLM",
    "Triton Inference Server 2.5x: core src/metrics.cc (model-level counters); TensorRT-LLM "
    "backend custom metrics (nv_trt_llm_request_metrics, nv_trt_llm_kv_cache_block_metrics)",
    "port 8002, path /metrics; on by default (--allow-metrics)",
    {
        "latency_p99": SignalSource(
            "latency_p99",
            rate_by_pod("nv_inference_request_duration_us")
            + " / ("
            + plus_optional(
                rate_by_pod("nv_inference_request_success"),
                rate_by_pod("nv_inference_request_failure"),
            )
            + " > 0) / 1e6",
            (
                "nv_inference_request_duration_us",
                "nv_inference_request_success",
                "nv_inference_request_failure",
            ),
            "the mean request duration over the window, not a p99: Triton's latencies are "
            "counters unless histograms are enabled",
        ),
        "ttft_p99": _unavailable(
            "ttft_p99",
            "nv_inference_first_response_histogram_ms exists only for decoupled models with "
            "--metrics-config histogram_latencies=true; add health.queries.ttft_p99 then",
        ),
        "token_latency_p99": _unavailable(
            "token_latency_p99", "Triton and TensorRT-LLM export no per-token latency"
        ),
        "kv_cache": SignalSource(
            "kv_cache",
            by_pod('nv_trt_llm_kv_cache_block_metrics{kv_cache_block_type="used"}')
            + " / ("
            + by_pod('nv_trt_llm_kv_cache_block_metrics{kv_cache_block_type="max"}')
            + " > 0)",
            ("nv_trt_llm_kv_cache_block_metrics",),
            "TensorRT-LLM backend only: used over max KV-cache blocks",
        ),
        "requests_running": SignalSource(
            "requests_running",
            by_pod('nv_trt_llm_request_metrics{request_type="active"}')
            + " or "
            + by_pod("nv_inference_pending_request_count"),
            ("nv_trt_llm_request_metrics", "nv_inference_pending_request_count"),
            "TensorRT-LLM's active requests, else Triton's pending ones",
        ),
        "request_rate": SignalSource(
            "request_rate",
            rate_by_pod("nv_inference_request_success"),
            ("nv_inference_request_success",),
        ),
        "error_rate": SignalSource(
            "error_rate",
            ratio(
                rate_by_pod("nv_inference_request_failure"),
                plus_optional(
                    rate_by_pod("nv_inference_request_success"),
                    rate_by_pod("nv_inference_request_failure"),
                ),
            ),
            ("nv_inference_request_failure", "nv_inference_request_success"),
        ),
        "requests_waiting": SignalSource(
            "requests_waiting",
            by_pod("nv_inference_pending_request_count"),
            ("nv_inference_pending_request_count",),
            "requests queued in Triton's scheduler",
        ),
        "requests_pending": _unavailable(
            "requests_pending",
            "Triton has no count of requests in execution that holds for every backend; add "
            "health.queries.requests_pending",
        ),
        "progress": _unavailable(
            "progress",
            "Triton counts executions per request or batch, not per generation step; add "
            "health.queries.progress with a counter that rises every step",
        ),
    },
)

DYNAMO = _profile(
    ServerKind.DYNAMO,
    "NVIDIA Dynamo",
    "NVIDIA Dynamo 0.5: lib/runtime/src/metrics/prometheus_names.rs (work_handler, kvstats); "
    "worker pods, not the frontend",
    "each worker's system port (DYN_SYSTEM_PORT, e.g. 8081), path /metrics; "
    "with DYN_SYSTEM_ENABLED=true",
    {
        "latency_p99": SignalSource(
            "latency_p99",
            p99("dynamo_component_request_duration_seconds_bucket"),
            ("dynamo_component_request_duration_seconds",),
            "the worker's request handling time; its buckets are taken to be the Prometheus "
            "client's defaults (lowest 5 ms), not confirmed in the source",
            floor=PROMETHEUS_DEFAULT_BUCKETS[0],
        ),
        "ttft_p99": _unavailable(
            "ttft_p99",
            "time to first token is measured by the frontend (dynamo_frontend_*), which "
            "serves every worker: no per-worker value",
        ),
        "token_latency_p99": _unavailable(
            "token_latency_p99",
            "inter-token latency is measured by the frontend (dynamo_frontend_*): no "
            "per-worker value; a worker running vLLM or SGLang also exports that engine's "
            "metrics, reachable with health.queries",
        ),
        "kv_cache": SignalSource(
            "kv_cache",
            by_pod("dynamo_component_kvstats_gpu_cache_usage_percent", "max"),
            ("dynamo_component_kvstats_gpu_cache_usage_percent",),
            "0..1 despite its name",
        ),
        "requests_running": SignalSource(
            "requests_running",
            by_pod("dynamo_component_inflight_requests"),
            ("dynamo_component_inflight_requests",),
        ),
        "request_rate": SignalSource(
            "request_rate",
            rate_by_pod("dynamo_component_requests_total"),
            ("dynamo_component_requests_total",),
        ),
        "error_rate": SignalSource(
            "error_rate",
            ratio(
                rate_by_pod("dynamo_component_errors_total"),
                rate_by_pod("dynamo_component_requests_total"),
            ),
            ("dynamo_component_errors_total", "dynamo_component_requests_total"),
        ),
        "requests_waiting": _unavailable(
            "requests_waiting",
            "Dynamo workers export no queue length; the engine a worker runs may (health.queries)",
        ),
        "requests_pending": SignalSource(
            "requests_pending",
            by_pod("dynamo_component_inflight_requests"),
            ("dynamo_component_inflight_requests",),
            "requests in flight on the worker",
        ),
        "progress": _unavailable(
            "progress",
            "Dynamo counts requests, not generation steps; the engine a worker runs may "
            "(health.queries.progress)",
        ),
    },
)

CUSTOM = _profile(
    ServerKind.CUSTOM,
    "Any other server",
    "no server metrics: every engine signal needs a health.queries entry",
    "wherever the server serves them",
    {
        signal: _unavailable(
            signal, f"server: custom has no query for {signal}; add health.queries.{signal}"
        )
        for signal in ENGINE_SIGNALS
    },
)

PROFILES: Mapping[ServerKind, ServerProfile] = MappingProxyType(
    {p.server: p for p in (VLLM, SGLANG, TGI, LLAMACPP, TRITON, DYNAMO, CUSTOM)}
)


def profile_for(server: ServerKind | str | None) -> ServerProfile:
    """The profile of ``server`` (vLLM when unset)."""
    return PROFILES[ServerKind(server) if server is not None else DEFAULT_SERVER]
