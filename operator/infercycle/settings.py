"""Operator settings, read from ``INFERCYCLE_*`` environment variables (set by the chart)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from infercycle.api.units import parse_duration


class OperatorSettings(BaseSettings):
    """Everything an operator deployment configures. Durations are strings such as ``"30s"``."""

    model_config = SettingsConfigDict(env_prefix="INFERCYCLE_", frozen=True, extra="ignore")

    prometheus_url: str = Field(
        default="http://prometheus-operated.monitoring.svc:9090",
        description="Base URL of the Prometheus HTTP API.",
    )
    prometheus_token_file: Path | None = Field(
        default=None, description="File holding a bearer token for Prometheus (mounted Secret)."
    )
    prometheus_username: str | None = Field(default=None, description="Basic-auth user.")
    prometheus_password_file: Path | None = Field(
        default=None, description="File holding the basic-auth password (mounted Secret)."
    )
    prometheus_ca_file: Path | None = Field(
        default=None, description="CA bundle that signs Prometheus' certificate."
    )
    prometheus_tls_verify: bool = Field(default=True, description="Verify Prometheus' TLS cert.")
    query_timeout: str = Field(default="10s", description="Timeout of one Prometheus query.")
    cycle_interval: str = Field(default="30s", description="Time between evaluation cycles.")
    namespaces: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Namespaces to watch, comma-separated; empty watches the whole cluster.",
    )
    freshness_query: str = Field(
        default=(
            'max by (namespace, pod) (timestamp(container_memory_working_set_bytes{container!=""}))'
        ),
        description="PromQL giving, per (namespace, pod), the time of its newest sample; pods "
        "whose newest sample is older than staleAfter count as having no data. cAdvisor's "
        "working set exists for every container of every pod, whatever the server.",
    )
    dry_run: bool = Field(default=False, description="Decide and report everywhere; never act.")
    metrics_port: int = Field(default=8080, description="Port of the operator's /metrics.")
    health_port: int = Field(default=8081, description="Port of the liveness endpoint /healthz.")
    agent_image: str = Field(
        default="ghcr.io/infercycle/infercycle:0.1.0",
        description="Image of the recycle agent sidecar (the operator's own image).",
    )
    agent_timeout: str = Field(default="30s", description="Timeout of one call to an agent.")
    operator_namespace: str = Field(
        default="infercycle-system",
        description="The operator's own namespace: the only one whose operator pods may reach "
        "the agents' port (the deployments' NetworkPolicies).",
    )
    leader_election: bool = Field(
        default=False,
        description="Act only while holding the Lease infercycle-operator-leader in "
        "operatorNamespace, so several replicas can run: the others evaluate and stand by. "
        "Off for a single operator run by hand.",
    )
    workload_network_policy: bool = Field(
        default=True,
        description="Give each InferenceDeployment a NetworkPolicy that admits the agent port "
        "only from the operator and keeps the template's declared ports open.",
    )
    log_format: str = Field(default="json", description="json or text.")

    @field_validator("namespaces", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("query_timeout", "cycle_interval", "agent_timeout")
    @classmethod
    def _duration(cls, value: str) -> str:
        parse_duration(value)
        return value

    @field_validator("log_format")
    @classmethod
    def _log_format(cls, value: str) -> str:
        if value not in ("json", "text"):
            msg = f"log format {value!r} is not json or text"
            raise ValueError(msg)
        return value

    @property
    def cycle_interval_s(self) -> float:
        return parse_duration(self.cycle_interval)

    @property
    def query_timeout_s(self) -> float:
        return parse_duration(self.query_timeout)

    @property
    def agent_timeout_s(self) -> float:
        return parse_duration(self.agent_timeout)
