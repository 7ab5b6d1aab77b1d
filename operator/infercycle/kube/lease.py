"""One leader among the operator's replicas, by a ``coordination.k8s.io`` Lease.

Every replica watches and evaluates (its engines stay warm); only the holder of the Lease acts.
A replica holds the Lease while it renews it: every ``retry_s`` it reads the Lease and renews,
takes or leaves it, each write a compare-and-swap on the Lease's resourceVersion, so two
replicas can never both win one round. It stops counting itself leader when it has not renewed
for ``renew_deadline_s``, which is shorter than the Lease's duration: it steps down before any
other replica can take over.

Expiry is judged by this replica's own clock: a Lease whose record has not changed for its
duration, as this replica observed it, is free. The holder's clock (``renewTime``) is never
compared with ours, so clock skew between nodes cannot hand the Lease over early.

On shutdown the leader releases the Lease (empty holder), so a standby takes over on its next
round instead of after the Lease expires.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum
from typing import Any

import kubernetes
from kubernetes.client.exceptions import ApiException

log = logging.getLogger("infercycle.lease")

LEASE_DURATION_S = 15.0
RENEW_DEADLINE_S = 10.0
RETRY_S = 2.0


class Step(Enum):
    CREATE = "create"  # no Lease yet
    RENEW = "renew"  # ours
    TAKE = "take"  # free: released, or not renewed for its duration
    WAIT = "wait"  # someone else's, alive


@dataclass(frozen=True)
class LeaseRecord:
    """What a replica reads of the Lease; any change of it proves the holder is alive."""

    holder: str
    renew_time: str
    duration_s: float
    transitions: int
    resource_version: str


def next_step(record: LeaseRecord | None, me: str, unchanged_for_s: float) -> Step:
    """What to do this round, given the Lease and how long it has looked the same to us."""
    if record is None:
        return Step.CREATE
    if record.holder == me:
        return Step.RENEW
    if not record.holder or unchanged_for_s >= record.duration_s:
        return Step.TAKE
    return Step.WAIT


def _micro_time(moment: float) -> str:
    return datetime.fromtimestamp(moment, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _record(lease: dict[str, Any]) -> LeaseRecord:
    spec = lease.get("spec") or {}
    return LeaseRecord(
        holder=str(spec.get("holderIdentity") or ""),
        renew_time=str(spec.get("renewTime") or ""),
        duration_s=float(spec.get("leaseDurationSeconds") or LEASE_DURATION_S),
        transitions=int(spec.get("leaseTransitions") or 0),
        resource_version=str((lease.get("metadata") or {}).get("resourceVersion") or ""),
    )


class LeaseElector:
    """Holds, renews and releases one Lease for one replica (``identity``)."""

    def __init__(
        self,
        client: kubernetes.client.ApiClient,
        namespace: str,
        name: str,
        identity: str,
        *,
        lease_duration_s: float = LEASE_DURATION_S,
        renew_deadline_s: float = RENEW_DEADLINE_S,
        retry_s: float = RETRY_S,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if not retry_s < renew_deadline_s < lease_duration_s:
            msg = "leader election needs retry < renew deadline < lease duration"
            raise ValueError(msg)
        self._api: Any = kubernetes.client.CoordinationV1Api(client)
        self.namespace = namespace
        self.name = name
        self.identity = identity
        self.lease_duration_s = lease_duration_s
        self.renew_deadline_s = renew_deadline_s
        self.retry_s = retry_s
        self._monotonic = monotonic
        self._observed: LeaseRecord | None = None
        self._observed_at = monotonic()
        self._renewed_at: float | None = None
        self.transitions = 0
        self.on_change: Callable[[bool], None] | None = None
        self._leading = False

    # -- what the rest of the operator asks ---------------------------------------------------

    def is_leader(self) -> bool:
        """True while the last renewal is younger than the renew deadline."""
        renewed = self._renewed_at
        return renewed is not None and self._monotonic() - renewed < self.renew_deadline_s

    # -- one round -----------------------------------------------------------------------------

    def try_once(self) -> bool:
        """Read the Lease and renew, take or leave it; whether we hold it now (blocking)."""
        lease = self._read()
        record = _record(lease) if lease is not None else None
        now = self._monotonic()
        if record != self._observed:
            self._observed, self._observed_at = record, now
        step = next_step(record, self.identity, now - self._observed_at)
        if step is Step.WAIT:
            return False
        wall = time.time()
        spec: dict[str, Any] = {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": round(self.lease_duration_s),
            "renewTime": _micro_time(wall),
        }
        if step is Step.RENEW:
            assert record is not None
            spec["acquireTime"] = (lease or {}).get("spec", {}).get("acquireTime")
            spec["leaseTransitions"] = record.transitions
        else:
            spec["acquireTime"] = _micro_time(wall)
            spec["leaseTransitions"] = record.transitions + 1 if record is not None else 0
        written = self._write(spec, record.resource_version if record is not None else None)
        if written is None:
            return False  # someone else wrote first this round
        self._observed, self._observed_at = _record(written), now
        self._renewed_at = now
        if step is not Step.RENEW:
            self.transitions = spec["leaseTransitions"]
            log.info("%s took the leader lease %s/%s", self.identity, self.namespace, self.name)
        return True

    def release(self) -> None:
        """Give the Lease up now, if we hold it (blocking); a standby takes it next round."""
        if not self.is_leader() or self._observed is None:
            return
        spec = {
            "holderIdentity": "",
            "leaseDurationSeconds": 1,
            "renewTime": _micro_time(time.time()),
            "leaseTransitions": self._observed.transitions,
        }
        self._write(spec, self._observed.resource_version)
        self._renewed_at = None
        log.info("%s released the leader lease", self.identity)

    async def run(self) -> None:
        """Take part in the election until cancelled; releases the Lease when cancelled."""
        try:
            while True:
                try:
                    await asyncio.to_thread(self.try_once)
                except Exception:  # the API server is away: keep leading until the deadline
                    log.warning("leader lease round failed", exc_info=True)
                self._report()
                await asyncio.sleep(self.retry_s)
        finally:
            await asyncio.shield(asyncio.to_thread(self._release_quietly))
            self._report()

    # -- the API -------------------------------------------------------------------------------

    def _report(self) -> None:
        leading = self.is_leader()
        if leading != self._leading:
            self._leading = leading
            if not leading:
                log.warning("%s is not the leader any more", self.identity)
            if self.on_change is not None:
                self.on_change(leading)

    def _release_quietly(self) -> None:
        try:
            self.release()
        except Exception:  # shutting down: the Lease expires by itself
            log.warning("could not release the leader lease", exc_info=True)

    def _read(self) -> dict[str, Any] | None:
        try:
            response = self._api.read_namespaced_lease(
                self.name, self.namespace, _preload_content=False
            )
        except ApiException as error:
            if error.status == 404:
                return None
            raise
        return dict(json.loads(response.data))

    def _write(self, spec: dict[str, Any], resource_version: str | None) -> dict[str, Any] | None:
        """Create (no resourceVersion) or replace (compare-and-swap); None when we lost."""
        metadata: dict[str, Any] = {"name": self.name, "namespace": self.namespace}
        if resource_version is not None:
            metadata["resourceVersion"] = resource_version
        body = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": metadata,
            "spec": {key: value for key, value in spec.items() if value is not None},
        }
        try:
            if resource_version is None:
                response = self._api.create_namespaced_lease(
                    self.namespace, body, _preload_content=False
                )
            else:
                response = self._api.replace_namespaced_lease(
                    self.name, self.namespace, body, _preload_content=False
                )
        except ApiException as error:
            if error.status in (409, 404):
                return None
            raise
        return dict(json.loads(response.data))
