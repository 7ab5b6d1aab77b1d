"""What each inference server exports for one pod, as that server writes it.

A simulated pod accumulates its traffic (finished requests, errors, latency histograms, generated
tokens) in an :class:`EngineState`; :func:`render` writes the families of one server for many
pods in the Prometheus text format. Names, types, labels and histogram buckets follow the
servers' own metric definitions at the versions of :mod:`infercycle.api.servers` (the bucket
layouts are taken from there), so a profile's queries read the simulator exactly as they read the
real server.

The scenarios give a pod's end-to-end p99 latency; its time to first token and its per-token
latency are fixed shares of it (``TTFT_SHARE``, ``TOKEN_SHARE``), so all three creep together.

One deliberate departure, for the vLLM fleets of the demo and the cluster tests only: with
``fine_e2e=True`` vLLM's end-to-end histogram gets extra buckets under its lowest real one
(0.3 s), because the scenarios' healthy latencies (about 85 ms) would otherwise all read as
0.297 s. ``fine_e2e=False`` writes vLLM's own buckets, blindness included.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from infercycle.api import servers as profiles
from infercycle.api.servers import ServerKind

TTFT_SHARE = 0.25
TOKEN_SHARE = 1 / 6
OUTPUT_TOKENS = 64.0
PROMPT_TOKENS = 512.0
MEAN_SHARE = 1 / 2.2
"""A histogram's mean as a share of its p99 (the log-normal body of :func:`cumulative_shares`)."""
QUANTILE = 0.99
QUANTILE_SPREAD = 0.01
MODEL_NAME = "sim-model"

FINE_E2E_BUCKETS: tuple[float, ...] = tuple(
    sorted({0.01, 0.025, 0.05, 0.075, 0.1, 0.125, 0.15, 0.2, 0.25, *profiles.VLLM_E2E_BUCKETS})
)
"""vLLM's end-to-end buckets plus finer ones under 0.3 s (``fine_e2e``)."""


def cumulative_shares(p99: float, buckets: tuple[float, ...]) -> list[float]:
    """Share of requests at or below each bucket bound, placing the 0.99 quantile at ``p99``.

    ``histogram_quantile`` interpolates linearly inside the bucket that holds the quantile;
    the shares at that bucket's bounds are chosen so that the interpolation lands on ``p99``.
    Below it the shares follow a log-normal body, above it the rest fills the next bucket. A
    p99 inside the lowest bucket reads as a fixed share of its bound, as on a real server.
    """
    shares = [1.0] * len(buckets)
    if p99 <= 0 or not math.isfinite(p99):
        return shares
    index = next((i for i, le in enumerate(buckets) if p99 <= le), None)
    if index is None:
        return [0.0] * len(buckets)
    lower = buckets[index - 1] if index > 0 else 0.0
    t = (p99 - lower) / (buckets[index] - lower)
    at_lower = QUANTILE - QUANTILE_SPREAD * t
    at_upper = QUANTILE + QUANTILE_SPREAD * (1 - t)
    if index == 0:
        shares[0] = min(1.0, QUANTILE / max(t, 1e-9))
        return shares
    sigma = 0.35
    median = p99 / math.exp(2.326 * sigma)

    def lognormal_cdf(x: float) -> float:
        return 0.5 * (1 + math.erf(math.log(x / median) / (sigma * math.sqrt(2))))

    body_top = lognormal_cdf(lower)
    for i in range(index):
        body = lognormal_cdf(buckets[i]) / body_top if body_top > 0 else 1.0
        shares[i] = at_lower * body
    shares[index] = at_upper
    return shares


@dataclass
class Histogram:
    buckets: tuple[float, ...]
    counts: list[float] = field(default_factory=list)
    total: float = 0.0
    count: float = 0.0

    def __post_init__(self) -> None:
        if not self.counts:
            self.counts = [0.0] * len(self.buckets)

    def observe(self, events: float, p99: float) -> None:
        for i, share in enumerate(cumulative_shares(p99, self.buckets)):
            self.counts[i] += events * share
        self.count += events
        self.total += events * p99 * MEAN_SHARE


def _layouts(server: ServerKind, fine_e2e: bool) -> dict[str, tuple[float, ...]]:
    """Histogram bucket layouts (e2e, ttft, token) the server writes."""
    if server is ServerKind.VLLM:
        e2e = FINE_E2E_BUCKETS if fine_e2e else profiles.VLLM_E2E_BUCKETS
        return {
            "e2e": e2e,
            "ttft": profiles.VLLM_TTFT_BUCKETS,
            "token": profiles.VLLM_TOKEN_BUCKETS,
        }
    if server is ServerKind.SGLANG:
        return {
            "e2e": profiles.SGLANG_E2E_BUCKETS,
            "ttft": profiles.SGLANG_TTFT_BUCKETS,
            "token": profiles.SGLANG_TOKEN_BUCKETS,
        }
    if server is ServerKind.TGI:
        return {"e2e": profiles.TGI_DURATION_BUCKETS, "token": profiles.TGI_DURATION_BUCKETS}
    if server is ServerKind.DYNAMO:
        return {"e2e": profiles.PROMETHEUS_DEFAULT_BUCKETS}
    return {}


@dataclass
class EngineState:
    """One pod's cumulative traffic as its server counts it."""

    server: ServerKind
    histograms: dict[str, Histogram]
    finished: float = 0.0
    errors: float = 0.0
    latency_total: float = 0.0
    in_flight: float = 0.0
    kv_cache: float | None = None

    @classmethod
    def new(cls, server: ServerKind | str, *, fine_e2e: bool = True) -> EngineState:
        kind = ServerKind(server)
        layouts = _layouts(kind, fine_e2e)
        return cls(kind, {name: Histogram(buckets) for name, buckets in layouts.items()})

    def accumulate(self, sample: Mapping[str, float | None], dt: float) -> None:
        """Add ``dt`` seconds of the traffic a scenario sample describes."""
        p99 = sample.get("latency_p99")
        rate = sample.get("request_rate") or 0.0
        self.kv_cache = sample.get("kv_cache")
        self.in_flight = rate * (p99 or 0.0) * MEAN_SHARE
        if rate <= 0:
            return
        requests = rate * dt
        error = min(max(sample.get("error_rate") or 0.0, 0.0), 0.99)
        self.finished += requests
        self.errors += requests * error / (1 - error)
        if p99 is None or p99 <= 0:
            return
        self.latency_total += requests * p99 * MEAN_SHARE
        for name, share, events in (
            ("e2e", 1.0, requests),
            ("ttft", TTFT_SHARE, requests),
            ("token", TOKEN_SHARE, requests * OUTPUT_TOKENS),
        ):
            histogram = self.histograms.get(name)
            if histogram is not None:
                histogram.observe(events, p99 * share)

    @property
    def tokens(self) -> float:
        return self.finished * OUTPUT_TOKENS

    @property
    def token_seconds(self) -> float:
        return self.latency_total * (1 - TTFT_SHARE)


# ---------------------------------------------------------------------------------------------
# Exposition


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(labels: Mapping[str, str]) -> str:
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items()) + "}"


def number(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


class Family:
    """One metric family: HELP, TYPE and its samples, written together."""

    def __init__(self, name: str, kind: str, help_text: str) -> None:
        self.name = name
        self.header = f"# HELP {name} {help_text}\n# TYPE {name} {kind}\n"
        self.lines: list[str] = []

    def add(self, labels: Mapping[str, str], value: float, suffix: str = "") -> None:
        self.lines.append(f"{self.name}{suffix}{_labels(labels)} {number(value)}\n")

    def histogram(self, labels: Mapping[str, str], histogram: Histogram) -> None:
        for le, count in zip(histogram.buckets, histogram.counts, strict=True):
            self.add({**labels, "le": number(le)}, count, "_bucket")
        self.add({**labels, "le": "+Inf"}, histogram.count, "_bucket")
        self.add(labels, histogram.total, "_sum")
        self.add(labels, histogram.count, "_count")

    def render(self) -> str:
        return self.header + "".join(self.lines) if self.lines else ""


PodEngine = tuple[Mapping[str, str], EngineState]
"""A pod's own labels (``namespace``, ``pod``) and its state."""


def render(server: ServerKind | str, pods: Iterable[PodEngine]) -> str:
    """The families ``server`` writes, for every pod (its labels first on each series)."""
    writer = _WRITERS[ServerKind(server)]
    return writer(list(pods))


def _vllm(pods: list[PodEngine]) -> str:
    e2e = Family(
        "vllm:e2e_request_latency_seconds", "histogram", "Histogram of e2e request latency."
    )
    ttft = Family(
        "vllm:time_to_first_token_seconds", "histogram", "Histogram of time to first token."
    )
    itl = Family(
        "vllm:inter_token_latency_seconds", "histogram", "Histogram of inter-token latency."
    )
    running = Family("vllm:num_requests_running", "gauge", "Number of requests in model execution.")
    waiting = Family("vllm:num_requests_waiting", "gauge", "Number of requests waiting.")
    kv = Family("vllm:kv_cache_usage_perc", "gauge", "KV-cache usage. 1 means 100 percent usage.")
    finished = Family(
        "vllm:request_success_total", "counter", "Count of successfully processed requests."
    )
    generated = Family(
        "vllm:generation_tokens_total", "counter", "Number of generation tokens processed."
    )
    for base, state in pods:
        labels = {**base, "model_name": MODEL_NAME, "engine": "0"}
        generated.add(labels, state.tokens)
        e2e.histogram(labels, state.histograms["e2e"])
        ttft.histogram(labels, state.histograms["ttft"])
        itl.histogram(labels, state.histograms["token"])
        running.add(labels, round(state.in_flight))
        waiting.add(labels, 0.0)
        if state.kv_cache is not None:
            kv.add(labels, state.kv_cache)
        # Every finished reason exists from the start, as vLLM labels them all at startup.
        for reason, value in (
            ("stop", state.finished),
            ("length", 0.0),
            ("abort", 0.0),
            ("error", state.errors),
        ):
            finished.add({**labels, "finished_reason": reason}, value)
    families = (e2e, ttft, itl, running, waiting, kv, finished, generated)
    return "".join(f.render() for f in families)


def _sglang(pods: list[PodEngine]) -> str:
    e2e = Family(
        "sglang:e2e_request_latency_seconds",
        "histogram",
        "Histogram of End-to-end request latency in seconds",
    )
    ttft = Family(
        "sglang:time_to_first_token_seconds", "histogram", "Histogram of time to first token."
    )
    itl = Family(
        "sglang:inter_token_latency_seconds", "histogram", "Histogram of inter-token latency."
    )
    running = Family("sglang:num_running_reqs", "gauge", "The number of running requests.")
    queued = Family(
        "sglang:num_queue_reqs", "gauge", "The number of requests in the waiting queue."
    )
    usage = Family("sglang:token_usage", "gauge", "The token usage.")
    requests = Family("sglang:num_requests_total", "counter", "Number of requests processed.")
    aborted = Family("sglang:num_aborted_requests_total", "counter", "Number of requests aborted.")
    responses = Family(
        "sglang:http_responses_total",
        "counter",
        "Total number of HTTP responses by endpoint and status code",
    )
    for base, state in pods:
        labels = {**base, "model_name": MODEL_NAME}
        e2e.histogram(labels, state.histograms["e2e"])
        ttft.histogram(labels, state.histograms["ttft"])
        itl.histogram(labels, state.histograms["token"])
        running.add(labels, round(state.in_flight))
        queued.add(labels, 0.0)
        if state.kv_cache is not None:
            usage.add(labels, state.kv_cache)
        requests.add(labels, state.finished)
        aborted.add(labels, 0.0)
        chat = {**base, "endpoint": "/v1/chat/completions", "method": "POST"}
        responses.add({**chat, "status_code": "200"}, state.finished)
        if state.errors > 0:  # the counter's 5xx series appears with the first 5xx
            responses.add({**chat, "status_code": "500"}, state.errors)
        scrapes = {**base, "endpoint": "/metrics", "method": "GET", "status_code": "200"}
        responses.add(scrapes, state.finished)  # never part of the error rate
    families = (e2e, ttft, itl, running, queued, usage, requests, aborted, responses)
    return "".join(f.render() for f in families)


def _tgi(pods: list[PodEngine]) -> str:
    duration = Family("tgi_request_duration", "histogram", "Request duration")
    per_token = Family(
        "tgi_request_mean_time_per_token_duration", "histogram", "Mean time per token per request"
    )
    batch = Family("tgi_batch_current_size", "gauge", "Current batch size")
    queue = Family("tgi_queue_size", "gauge", "Current queue size")
    passes = Family("tgi_batch_inference_count", "counter", "Inference calls per method")
    success = Family("tgi_request_success", "counter", "Number of successful requests")
    failure = Family("tgi_request_failure", "counter", "Number of failed requests")
    for base, state in pods:
        duration.histogram(base, state.histograms["e2e"])
        per_token.histogram(base, state.histograms["token"])
        batch.add(base, round(state.in_flight))
        queue.add(base, 0.0)
        passes.add({**base, "method": "prefill"}, state.finished)
        passes.add({**base, "method": "decode"}, state.tokens)
        success.add(base, state.finished)
        if state.errors > 0:  # the metrics crate creates a labelled counter on first use
            failure.add({**base, "err": "generation"}, state.errors)
        failure.add({**base, "err": "validation"}, state.finished * 0.01)
    families = (duration, per_token, batch, queue, passes, success, failure)
    return "".join(f.render() for f in families)


def _llamacpp(pods: list[PodEngine]) -> str:
    prompt = Family("llamacpp:prompt_tokens_total", "counter", "Number of prompt tokens processed.")
    predicted = Family(
        "llamacpp:tokens_predicted_total", "counter", "Number of generation tokens processed."
    )
    predicted_s = Family(
        "llamacpp:tokens_predicted_seconds_total", "counter", "Predict process time"
    )
    decode = Family("llamacpp:n_decode_total", "counter", "Total number of llama_decode() calls")
    processing = Family("llamacpp:requests_processing", "gauge", "Number of requests processing.")
    deferred = Family("llamacpp:requests_deferred", "gauge", "Number of requests deferred.")
    for base, state in pods:
        prompt.add(base, state.finished * PROMPT_TOKENS)
        predicted.add(base, state.tokens)
        predicted_s.add(base, state.token_seconds)
        decode.add(base, state.tokens)
        processing.add(base, round(state.in_flight))
        deferred.add(base, 0.0)
    families = (prompt, predicted, predicted_s, decode, processing, deferred)
    return "".join(f.render() for f in families)


def _triton(pods: list[PodEngine]) -> str:
    success = Family(
        "nv_inference_request_success", "counter", "Number of successful inference requests"
    )
    failure = Family("nv_inference_request_failure", "counter", "Number of failed requests")
    duration = Family(
        "nv_inference_request_duration_us", "counter", "Cumulative inference request duration"
    )
    pending = Family(
        "nv_inference_pending_request_count", "gauge", "Instantaneous pending requests"
    )
    requests = Family("nv_trt_llm_request_metrics", "gauge", "TRT LLM request metrics")
    blocks = Family("nv_trt_llm_kv_cache_block_metrics", "gauge", "TRT LLM KV cache block metrics")
    max_blocks = 4096.0
    for base, state in pods:
        model = {**base, "model": "tensorrt_llm", "version": "1"}
        success.add(model, state.finished)
        failure.add({**model, "reason": "BACKEND"}, state.errors)
        duration.add(model, state.latency_total * 1e6)
        pending.add(model, 0.0)
        requests.add({**model, "request_type": "active"}, round(state.in_flight))
        requests.add({**model, "request_type": "max"}, 256.0)
        used = round((state.kv_cache or 0.0) * max_blocks)
        blocks.add({**model, "kv_cache_block_type": "used"}, used)
        blocks.add({**model, "kv_cache_block_type": "free"}, max_blocks - used)
        blocks.add({**model, "kv_cache_block_type": "max"}, max_blocks)
    return "".join(f.render() for f in (success, failure, duration, pending, requests, blocks))


def _dynamo(pods: list[PodEngine]) -> str:
    requests = Family(
        "dynamo_component_requests_total", "counter", "Total number of requests processed"
    )
    errors = Family("dynamo_component_errors_total", "counter", "Total number of errors")
    duration = Family(
        "dynamo_component_request_duration_seconds", "histogram", "Time spent processing requests"
    )
    inflight = Family(
        "dynamo_component_inflight_requests", "gauge", "Number of requests being processed"
    )
    kv = Family(
        "dynamo_component_kvstats_gpu_cache_usage_percent", "gauge", "GPU cache usage (0..1)"
    )
    for base, state in pods:
        labels = {
            **base,
            "dynamo_namespace": "sim",
            "dynamo_component": "backend",
            "dynamo_endpoint": "generate",
            "model": MODEL_NAME,
        }
        requests.add(labels, state.finished + state.errors)  # every request, failed ones too
        if state.errors > 0:
            errors.add({**labels, "error_type": "generate"}, state.errors)
        duration.histogram(labels, state.histograms["e2e"])
        inflight.add(labels, round(state.in_flight))
        if state.kv_cache is not None:
            kv.add(labels, state.kv_cache)
    return "".join(f.render() for f in (requests, errors, duration, inflight, kv))


def _custom(pods: list[PodEngine]) -> str:
    return ""


_WRITERS = {
    ServerKind.VLLM: _vllm,
    ServerKind.SGLANG: _sglang,
    ServerKind.TGI: _tgi,
    ServerKind.LLAMACPP: _llamacpp,
    ServerKind.TRITON: _triton,
    ServerKind.DYNAMO: _dynamo,
    ServerKind.CUSTOM: _custom,
}
