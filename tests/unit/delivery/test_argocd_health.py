"""The ArgoCD health check of InferenceDeployments, run by a real Lua 5.1 (ArgoCD's gopher-lua
speaks 5.1), and the two ArgoCD Applications."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import yaml

from tests.unit.delivery.support import MANIFESTS, missing_tool

try:
    from lupa import lua51
except ImportError:  # a dev dependency; CI must have it
    lua51 = None

SCRIPT = (MANIFESTS / "argocd" / "health-inferencedeployment.lua").read_text()
NOW = datetime(2024, 3, 1, 12, 0, 0, tzinfo=UTC)


def stamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def condition(
    type_: str, status: str, reason: str, message: str = "", since: datetime = NOW
) -> dict[str, Any]:
    return {
        "type": type_,
        "status": status,
        "reason": reason,
        "message": message,
        "lastTransitionTime": stamp(since),
    }


def deployment(*conditions: dict[str, Any], generation: int = 3, observed: int | None = 3) -> Any:
    status: dict[str, Any] = {"conditions": list(conditions)}
    if observed is not None:
        status["observedGeneration"] = observed
    return {
        "apiVersion": "infercycle.io/v1alpha1",
        "kind": "InferenceDeployment",
        "metadata": {"name": "llama", "namespace": "llm", "generation": generation},
        "spec": {"replicas": 4},
        "status": status,
    }


READY = condition("Ready", "True", "Reconciled", "4/4 pods ready")
HEALTHY_FLEET = (
    READY,
    condition("Degraded", "False", "AllHealthy", "no pod is degraded"),
    condition("Recycling", "False", "Idle", "no recycle in flight"),
    condition("MetricsAvailable", "True", "Queried", "9 queries, 4 pods"),
    condition("Paused", "False", "NotPaused", "recycling is enabled"),
)


def replace(conditions: tuple[dict[str, Any], ...], *changes: dict[str, Any]) -> list[Any]:
    by_type = {c["type"]: c for c in conditions}
    for change in changes:
        by_type[change["type"]] = change
    return list(by_type.values())


def health(obj: Any, now: datetime | None = NOW) -> dict[str, str]:
    """Run the script the way ArgoCD does: `obj` global, a sandbox without io, a fixed clock."""
    if lua51 is None:
        missing_tool("lupa is not installed: pip install lupa (a dev dependency)")
    runtime = lua51.LuaRuntime(unpack_returned_tuples=True)
    lua_globals = runtime.globals()
    for name in ("io", "require", "dofile", "loadfile", "load", "loadstring", "package", "debug"):
        lua_globals[name] = None
    if now is None:
        lua_globals.os = None
    else:
        lua_globals.os = runtime.table_from({"time": lambda *_: int(now.timestamp())})
    lua_globals.obj = runtime.table_from(obj, recursive=True)
    result = runtime.execute(SCRIPT)
    return {"status": result["status"], "message": result["message"]}


CASES = [
    pytest.param(
        {**deployment(), "status": None}, "Progressing", "Waiting for the operator", id="no-status"
    ),
    pytest.param(
        deployment(*HEALTHY_FLEET, generation=4, observed=3),
        "Progressing",
        "observe generation 4",
        id="generation-not-observed",
    ),
    pytest.param(
        deployment(*HEALTHY_FLEET, generation=2, observed=None),
        "Progressing",
        "observe generation 2",
        id="never-observed",
    ),
    pytest.param(
        deployment(
            *replace(
                HEALTHY_FLEET, condition("Paused", "True", "PausedBySpec", "spec.paused is true")
            )
        ),
        "Suspended",
        "PausedBySpec: spec.paused is true",
        id="paused-by-spec",
    ),
    pytest.param(
        deployment(
            *replace(
                HEALTHY_FLEET,
                condition("Paused", "True", "CircuitBreakerOpen", "3 of 4 pods look degraded"),
                condition("Degraded", "True", "PodsDegraded", "degraded: a, b, c"),
            )
        ),
        "Suspended",
        "CircuitBreakerOpen: 3 of 4 pods look degraded",
        id="circuit-breaker-open",
    ),
    pytest.param(
        deployment(
            *replace(HEALTHY_FLEET, condition("Paused", "True", "PodFlapping", "llama-2 again"))
        ),
        "Degraded",
        "PodFlapping: llama-2 again",
        id="pod-flapping",
    ),
    pytest.param(
        deployment(
            condition("Ready", "False", "ReconcileFailed", "health.quorum: 3 can never breach")
        ),
        "Degraded",
        "ReconcileFailed: health.quorum: 3 can never breach",
        id="reconcile-failed",
    ),
    pytest.param(
        deployment(
            *replace(
                HEALTHY_FLEET,
                condition(
                    "MetricsAvailable",
                    "False",
                    "PrometheusUnreachable",
                    "connection refused",
                    since=NOW - timedelta(minutes=20),
                ),
            )
        ),
        "Degraded",
        "PrometheusUnreachable: connection refused",
        id="metrics-unavailable-for-long",
    ),
    pytest.param(
        deployment(
            *replace(
                HEALTHY_FLEET,
                condition(
                    "MetricsAvailable",
                    "False",
                    "StaleData",
                    "newest sample is 200s old",
                    since=NOW - timedelta(minutes=5),
                ),
            )
        ),
        "Healthy",
        "4/4 pods ready",
        id="metrics-unavailable-briefly",
    ),
    pytest.param(
        deployment(
            *replace(
                HEALTHY_FLEET,
                condition("Recycling", "True", "InProgress", "llama-1: Checkpointing"),
                condition("Degraded", "True", "PodsDegraded", "degraded: llama-1"),
            )
        ),
        "Progressing",
        "Recycling: llama-1: Checkpointing",
        id="recycling",
    ),
    pytest.param(deployment(*HEALTHY_FLEET), "Healthy", "4/4 pods ready", id="healthy"),
    pytest.param(
        deployment(
            *replace(
                HEALTHY_FLEET, condition("Degraded", "True", "PodsDegraded", "degraded: llama-3")
            )
        ),
        "Healthy",
        "4/4 pods ready; degraded: llama-3",
        id="healthy-with-a-degraded-pod",
    ),
    pytest.param(
        deployment(
            *replace(
                HEALTHY_FLEET, condition("Ready", "False", "ReplicasNotReady", "2/4 pods ready")
            )
        ),
        "Progressing",
        "Waiting for Ready: 2/4 pods ready",
        id="replicas-not-ready",
    ),
    pytest.param(
        deployment(condition("Degraded", "False", "AllHealthy")),
        "Progressing",
        "Waiting for Ready: no Ready condition yet",
        id="no-ready-condition",
    ),
    pytest.param(
        deployment(condition("Ready", "Unknown", "Reconciling")),
        "Progressing",
        "Waiting for Ready: Ready is Unknown (Reconciling)",
        id="ready-unknown",
    ),
    pytest.param(
        {**deployment(*HEALTHY_FLEET), "status": {"observedGeneration": 3}},
        "Progressing",
        "no Ready condition yet",
        id="status-without-conditions",
    ),
]


@pytest.mark.parametrize(("obj", "status", "message"), CASES)
def test_health(obj: Any, status: str, message: str) -> None:
    result = health(obj)
    assert result["status"] == status, result
    assert message in result["message"], result


def test_paused_while_a_new_generation_waits_is_progressing_first() -> None:
    obj = deployment(
        *replace(HEALTHY_FLEET, condition("Paused", "True", "PausedBySpec")),
        generation=5,
        observed=4,
    )
    assert health(obj)["status"] == "Progressing"


def test_without_a_clock_unavailable_metrics_never_make_it_degraded() -> None:
    obj = deployment(
        *replace(
            HEALTHY_FLEET,
            condition("MetricsAvailable", "False", "NoData", since=NOW - timedelta(days=2)),
        )
    )
    assert health(obj, now=None)["status"] == "Healthy"


@pytest.mark.parametrize(
    "moment",
    [
        datetime(1970, 1, 1, 0, 15, 0, tzinfo=UTC),
        datetime(2000, 2, 29, 23, 59, 59, tzinfo=UTC),
        datetime(2024, 2, 29, 0, 0, 0, tzinfo=UTC),
        datetime(2024, 3, 1, 0, 0, 0, tzinfo=UTC),
        datetime(2024, 12, 31, 23, 59, 59, tzinfo=UTC),
        datetime(2025, 1, 1, 0, 0, 0, tzinfo=UTC),
        datetime(2100, 3, 1, 6, 30, 0, tzinfo=UTC),
    ],
)
def test_the_15_minute_grace_is_counted_exactly_on_any_date(moment: datetime) -> None:
    """The script converts RFC 3339 times to seconds itself; off by one second would show."""
    obj = deployment(
        *replace(HEALTHY_FLEET, condition("MetricsAvailable", "False", "NoData", since=moment))
    )
    assert health(obj, now=moment + timedelta(seconds=900))["status"] == "Healthy"
    assert health(obj, now=moment + timedelta(seconds=901))["status"] == "Degraded"


def test_applications() -> None:
    crds, operator = yaml.safe_load_all((MANIFESTS / "argocd" / "application.yaml").read_text())
    assert crds["kind"] == operator["kind"] == "Application"
    assert crds["metadata"]["annotations"]["argocd.argoproj.io/sync-wave"] == "-1"
    assert int(operator["metadata"]["annotations"]["argocd.argoproj.io/sync-wave"]) > -1
    for app in (crds, operator):
        assert "ServerSideApply=true" in app["spec"]["syncPolicy"]["syncOptions"]
    assert crds["spec"]["source"]["path"] == "manifests/crds"
    assert crds["spec"]["syncPolicy"]["automated"]["prune"] is False
    source = operator["spec"]["source"]
    assert source["path"] == "charts/infercycle"
    assert source["helm"]["skipCrds"] is True, "the CRDs belong to the other Application"
    assert (MANIFESTS.parent / source["path"] / "Chart.yaml").exists()
    assert operator["spec"]["destination"]["namespace"] == "infercycle-system"
