"""Kubernetes reads and writes, through the official client (blocking; callers use threads)."""

from __future__ import annotations

import json
import logging
import secrets
import time
from dataclasses import dataclass
from typing import Any

import kubernetes
from kubernetes.client.exceptions import ApiException

from infercycle import errors
from infercycle.api.resources import GROUP, VERSION
from infercycle.cycle.ports import EvictionOutcome
from infercycle.kube.targets import group_of
from infercycle.kube.workload import SERVING_LABEL, TOKEN_KEY, Manifest, agent_secret_name
from infercycle.recycle.fleet import PodState
from infercycle.recycle.machine import SERVING_GATE

log = logging.getLogger(__name__)
FIELD_MANAGER = "infercycle"
PLURAL = "inferencedeployments"


ConflictError = errors.ConflictError


def load_config(kubeconfig: str | None = None) -> kubernetes.client.ApiClient:
    """In-cluster credentials when running in a pod, else the kubeconfig."""
    configuration = kubernetes.client.Configuration()
    try:
        kubernetes.config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    except kubernetes.config.ConfigException:
        kubernetes.config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=kubeconfig, client_configuration=configuration
        )
    configuration.retries = 3
    return kubernetes.client.ApiClient(configuration)


@dataclass
class KubeApi:
    client: kubernetes.client.ApiClient

    def __post_init__(self) -> None:
        # The client's generated signatures want model objects; plain dicts are what it sends.
        self.core: Any = kubernetes.client.CoreV1Api(self.client)
        self.apps: Any = kubernetes.client.AppsV1Api(self.client)
        self.policy: Any = kubernetes.client.PolicyV1Api(self.client)
        self.custom: Any = kubernetes.client.CustomObjectsApi(self.client)
        self.networking: Any = kubernetes.client.NetworkingV1Api(self.client)
        self.requests = 0

    # -- owned objects -------------------------------------------------------------------------

    def apply(self, manifest: Manifest) -> None:
        """Server-side apply under our field manager; we own exactly the fields we set."""
        self.requests += 1
        kind = manifest["kind"]
        name = manifest["metadata"]["name"]
        namespace = manifest["metadata"]["namespace"]
        options: dict[str, Any] = {
            "field_manager": FIELD_MANAGER,
            "force": True,
            "_content_type": "application/apply-patch+yaml",
        }
        if kind == "StatefulSet":
            self.apps.patch_namespaced_stateful_set(name, namespace, manifest, **options)
        elif kind == "Service":
            self.core.patch_namespaced_service(name, namespace, manifest, **options)
        elif kind == "PodDisruptionBudget":
            self.policy.patch_namespaced_pod_disruption_budget(name, namespace, manifest, **options)
        elif kind == "Secret":
            self.core.patch_namespaced_secret(name, namespace, manifest, **options)
        elif kind == "NetworkPolicy":
            self.networking.patch_namespaced_network_policy(name, namespace, manifest, **options)
        else:
            msg = f"no apply for kind {kind}"
            raise ValueError(msg)

    def ensure_agent_token(self, name: str, namespace: str, owner: Manifest) -> str:
        """The deployment's agent token: created once, never rotated behind the agents' back."""
        secret_name = agent_secret_name(name)
        self.requests += 1
        try:
            secret = self.core.read_namespaced_secret(secret_name, namespace)
            data = secret.data or {}
            if TOKEN_KEY in data:
                import base64  # noqa: PLC0415

                return base64.b64decode(data[TOKEN_KEY]).decode()
        except ApiException as error:
            if error.status != 404:
                raise
        token = secrets.token_urlsafe(32)
        body = {
            "apiVersion": "v1",
            "kind": "Secret",
            "type": "Opaque",
            "metadata": {
                "name": secret_name,
                "namespace": namespace,
                "labels": {"app.kubernetes.io/managed-by": "infercycle"},
                "ownerReferences": [owner],
            },
            "stringData": {TOKEN_KEY: token},
        }
        self.requests += 1
        try:
            self.core.create_namespaced_secret(namespace, body)
        except ApiException as error:
            if error.status == 409:  # created meanwhile: use theirs
                return self.ensure_agent_token(name, namespace, owner)
            raise
        return token

    # -- pods ----------------------------------------------------------------------------------

    def set_serving(self, namespace: str, pod: str, uid: str, serving: bool) -> bool:
        """Flip the label the client Service selects on; False when that pod UID is gone."""
        patch = {
            "metadata": {"uid": uid, "labels": {SERVING_LABEL: "true" if serving else "false"}}
        }
        self.requests += 1
        try:
            self.core.patch_namespaced_pod(pod, namespace, patch)
        except ApiException as error:
            if error.status in (404, 409, 422):
                return False
            raise
        return True

    def set_readiness_gate(self, namespace: str, pod: str, uid: str, serving: bool) -> bool:
        """Set the pod's ``infercycle.io/serving`` condition through its status: with the
        readiness gate in its template, False takes it out of every Service's endpoints.
        False when that pod UID is gone."""
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        condition = {
            "type": SERVING_GATE,
            "status": "True" if serving else "False",
            "reason": "Serving" if serving else "Draining",
            "message": "in service" if serving else "drained by infercycle for a recycle",
            "lastTransitionTime": now,
        }
        patch = {"metadata": {"uid": uid}, "status": {"conditions": [condition]}}
        self.requests += 1
        try:
            self.core.patch_namespaced_pod_status(
                pod, namespace, patch, _content_type="application/strategic-merge-patch+json"
            )
        except ApiException as error:
            if error.status in (404, 409, 422):
                return False
            raise
        return True

    def list_pods(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        """The pods a label selector finds, as plain objects."""
        self.requests += 1
        response = self.core.list_namespaced_pod(
            namespace, label_selector=selector, _preload_content=False
        )
        return list(json.loads(response.data).get("items") or [])

    def read_object(
        self, namespace: str, api_path: tuple[str, str, str], name: str
    ) -> dict[str, Any] | None:
        """Any namespaced object by (group, version, plural); None when it does not exist (or
        its kind is not served: a LeaderWorkerSet without its CRD)."""
        group, version, plural = api_path
        self.requests += 1
        try:
            return dict(
                self.custom.get_namespaced_custom_object(group, version, namespace, plural, name)
            )
        except ApiException as error:
            if error.status == 404:
                return None
            raise

    def evict(self, namespace: str, pod: str, uid: str) -> EvictionOutcome:
        """Evict through the Eviction API, only this UID: a recreated pod is never touched."""
        body = kubernetes.client.V1Eviction(
            metadata=kubernetes.client.V1ObjectMeta(name=pod, namespace=namespace),
            delete_options=kubernetes.client.V1DeleteOptions(
                preconditions=kubernetes.client.V1Preconditions(uid=uid)
            ),
        )
        self.requests += 1
        try:
            self.core.create_namespaced_pod_eviction(pod, namespace, body)
        except ApiException as error:
            if error.status == 429:
                return EvictionOutcome.BLOCKED
            if error.status == 500 and "more than one PodDisruptionBudget" in str(error.body):
                # The API server refuses evictions of pods under two budgets; so do we.
                log.warning("eviction of %s/%s refused: the pod has several PDBs", namespace, pod)
                return EvictionOutcome.BLOCKED
            if error.status in (404, 409):
                return EvictionOutcome.GONE
            raise
        return EvictionOutcome.EVICTED

    def read_pod(self, namespace: str, pod: str) -> dict[str, Any] | None:
        self.requests += 1
        try:
            response = self.core.read_namespaced_pod(pod, namespace, _preload_content=False)
        except ApiException as error:
            if error.status == 404:
                return None
            raise
        return dict(json.loads(response.data))

    # -- the custom resource -------------------------------------------------------------------

    def read_deployment(self, namespace: str, name: str) -> dict[str, Any] | None:
        self.requests += 1
        try:
            return dict(
                self.custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
            )
        except ApiException as error:
            if error.status == 404:
                return None
            raise

    def patch_status(
        self,
        namespace: str,
        name: str,
        status: dict[str, Any],
        resource_version: str | None = None,
    ) -> dict[str, Any]:
        """Merge-patch status; with a resourceVersion the write fails if anyone wrote since."""
        body: dict[str, Any] = {"status": status}
        if resource_version is not None:
            body["metadata"] = {"resourceVersion": resource_version}
        self.requests += 1
        try:
            return dict(
                self.custom.patch_namespaced_custom_object_status(
                    GROUP,
                    VERSION,
                    namespace,
                    PLURAL,
                    name,
                    body,
                    _content_type="application/merge-patch+json",
                )
            )
        except ApiException as error:
            if error.status == 409:
                raise ConflictError(f"{namespace}/{name} changed since it was read") from error
            raise

    def post_event(
        self, involved: dict[str, Any], event_type: str, reason: str, message: str
    ) -> None:
        """A core/v1 Event on the object, as `kubectl describe` shows them."""
        metadata = involved["metadata"]
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        body: dict[str, Any] = {
            "metadata": {
                "generateName": f"{metadata['name']}.",
                "namespace": metadata.get("namespace") or "default",
            },
            "involvedObject": {
                "apiVersion": involved.get("apiVersion"),
                "kind": involved.get("kind"),
                "name": metadata["name"],
                "namespace": metadata.get("namespace"),
                "uid": metadata.get("uid"),
            },
            "type": event_type,
            "reason": reason,
            "message": message[:1024],
            "source": {"component": "infercycle"},
            "reportingComponent": "infercycle.io/operator",
            "reportingInstance": "infercycle",
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        self.requests += 1
        try:
            self.core.create_namespaced_event(body["metadata"]["namespace"], body)
        except ApiException as error:  # an event is never worth failing a recycle for
            log.warning("event %s on %s not posted: %s", reason, metadata["name"], error.reason)


def pod_state(pod: dict[str, Any], server_container: str, *, attached: bool = False) -> PodState:
    """Reduce a pod object to what the decisions read.

    An owned pod serves while its serving label says so. An attached pod serves while its
    ``infercycle.io/serving`` condition is not False, and can be drained only when its template
    lists that readiness gate; its Ready then includes the gate, so readiness is read from
    ContainersReady (the pod's own health, whatever the drain)."""
    metadata = pod.get("metadata") or {}
    status = pod.get("status") or {}
    spec = pod.get("spec") or {}
    labels = metadata.get("labels") or {}
    conditions = {c.get("type"): c.get("status") for c in status.get("conditions") or []}
    if not server_container:
        server_container = str(((spec.get("containers") or [{}])[0]).get("name", ""))
    gated = any(
        gate.get("conditionType") == SERVING_GATE for gate in spec.get("readinessGates") or []
    )
    if attached:
        serving = conditions.get(SERVING_GATE) != "False"
        # With the gate, Ready includes our own drain: the pod's health is ContainersReady.
        health = "ContainersReady" if gated and "ContainersReady" in conditions else "Ready"
        ready = conditions.get(health) == "True"
    else:
        serving = labels.get(SERVING_LABEL, "true") == "true"
        ready = conditions.get("Ready") == "True"
    group, leader = group_of(labels)
    created = metadata.get("creationTimestamp")
    restarts = 0
    started = status.get("startTime")
    last_reason: str | None = None
    last_at: float | None = None
    for container in status.get("containerStatuses") or []:
        if container.get("name") == server_container:
            restarts = int(container.get("restartCount") or 0)
            terminated = (container.get("lastState") or {}).get("terminated") or {}
            last_reason = terminated.get("reason") or None
            finished = terminated.get("finishedAt")
            last_at = _seconds(finished) if finished else None
            # After an in-place restart the server is new while the pod is not: warm-up and
            # the latency baseline start from the container's own start.
            running = (container.get("state") or {}).get("running") or {}
            started = running.get("startedAt") or started
    started_at = _seconds(started) if started else None
    return PodState(
        name=metadata.get("name", ""),
        uid=metadata.get("uid", ""),
        ready=ready,
        serving=serving,
        running=status.get("phase") == "Running",
        terminating=metadata.get("deletionTimestamp") is not None,
        started_at=started_at,
        restart_count=restarts,
        pod_ip=status.get("podIP"),
        node=spec.get("nodeName"),
        drainable=gated or not attached,
        awaiting_gate=attached and gated and SERVING_GATE not in conditions,
        group=group,
        leader=leader,
        created_at=_seconds(created) if created else None,
        last_terminated_reason=last_reason,
        last_terminated_at=last_at,
    )


def _seconds(stamp: str) -> float:
    from infercycle.api.units import from_timestamp  # noqa: PLC0415

    return from_timestamp(stamp)
