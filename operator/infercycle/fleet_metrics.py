"""The operator's own metrics, served on their own port."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

RECYCLES = Counter(
    "infercycle_recycles_total",
    "Recycles finished (or decided, in dry-run), by outcome.",
    ["namespace", "deployment", "reason", "strategy", "result"],
)
POD_DEGRADED = Gauge(
    "infercycle_pod_degraded",
    "1 when the pod's verdict is degraded.",
    ["namespace", "deployment", "pod"],
)
EVALUATION_SECONDS = Histogram(
    "infercycle_evaluation_duration_seconds",
    "Time of one evaluation cycle, queries included.",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30),
)
QUERY_SECONDS = Histogram(
    "infercycle_prometheus_query_duration_seconds",
    "Time of one Prometheus query.",
    ["signal"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
QUERY_ERRORS = Counter(
    "infercycle_prometheus_query_errors_total", "Failed Prometheus queries.", ["signal", "reason"]
)
GUARD_REFUSALS = Counter(
    "infercycle_guard_refusals_total",
    "Recycles a disruption guard held back.",
    ["namespace", "deployment", "guard"],
)
METRICS_AVAILABLE = Gauge(
    "infercycle_metrics_available",
    "1 when the last cycle had usable metrics for the deployment.",
    ["namespace", "deployment"],
)
CIRCUIT_OPEN = Gauge(
    "infercycle_circuit_breaker_open",
    "1 while the circuit breaker holds.",
    ["namespace", "deployment"],
)
OPERATION_AGE = Gauge(
    "infercycle_recycle_operation_age_seconds",
    "Age of the recycle in flight (0 when idle).",
    ["namespace", "deployment", "step"],
)
LAST_CYCLE = Gauge("infercycle_last_cycle_timestamp_seconds", "When the last cycle finished.")
CYCLE_QUERIES = Gauge("infercycle_cycle_queries", "Prometheus queries issued by the last cycle.")
API_REQUESTS = Counter("infercycle_kubernetes_requests_total", "Kubernetes API requests issued.")
LEADER = Gauge(
    "infercycle_leader",
    "1 while this replica holds the leader Lease and acts; 0 on a standby (it only evaluates).",
)
