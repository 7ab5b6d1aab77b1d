"""kopf wiring, thin: watches feed the registry, create/update keep the children in sync, and one
background task runs the fleet cycle. Decisions live in health/ and recycle/; I/O in kube/, prom/.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

import kopf

from infercycle import fleet_metrics as metrics
from infercycle.api.resources import GROUP, VERSION, InferenceDeploymentSpec
from infercycle.cycle.controller import FleetController
from infercycle.kube import workload
from infercycle.kube.lease import LeaseElector

log = logging.getLogger("infercycle.handlers")
INFD = (GROUP, VERSION, "inferencedeployments")
RCP = (GROUP, VERSION, "recyclepolicies")


def memo_for(controller: FleetController, elector: LeaseElector | None = None) -> kopf.Memo:
    """What ``kopf.run(memo=...)`` hands every handler: the controller, its cycle task and,
    with several replicas, the leader election that says whether this one acts."""
    return kopf.Memo(controller=controller, task=None, elector=elector, election=None)


def _controller(memo: kopf.Memo) -> FleetController:
    controller = memo.get("controller")
    if not isinstance(controller, FleetController):
        msg = "handlers used without a controller in memo: start the operator with `infercycle run`"
        raise kopf.PermanentError(msg)
    return controller


def _watched(memo: kopf.Memo, namespace: str | None) -> bool:
    wanted = set(_controller(memo).settings.namespaces or ())
    return not wanted or namespace in wanted


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    settings.persistence.finalizer = f"{GROUP}/finalizer"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration"
    )
    settings.posting.level = logging.WARNING
    settings.watching.server_timeout = 300
    settings.execution.max_workers = 8
    controller = _controller(memo)
    elector = memo.get("elector")
    if isinstance(elector, LeaseElector):
        controller.may_act = elector.is_leader
        elector.on_change = lambda leading: metrics.LEADER.set(1 if leading else 0)
        metrics.LEADER.set(0)
        memo["election"] = asyncio.create_task(elector.run(), name="infercycle-election")
    else:
        metrics.LEADER.set(1)
    memo["task"] = asyncio.create_task(_cycle_forever(controller), name="infercycle-cycle")


@kopf.on.cleanup()
async def stop(memo: kopf.Memo, **_: Any) -> None:
    for key in ("task", "election"):  # the cycle first: the Lease goes once nothing acts
        task = memo.pop(key, None)
        if isinstance(task, asyncio.Task):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def _cycle_forever(controller: FleetController) -> None:
    interval = controller.settings.cycle_interval_s
    await asyncio.sleep(min(interval, 2.0))  # let the watches list what exists first
    while True:
        started = time.monotonic()
        try:
            await controller.run_cycle()
        except Exception:
            log.exception("evaluation cycle failed; the next one starts on schedule")
        await asyncio.sleep(max(0.0, interval - (time.monotonic() - started)))


@kopf.on.probe(id="lastCycleSecondsAgo")
def last_cycle(memo: kopf.Memo, **_: Any) -> float | None:
    stamp = _controller(memo).last_cycle_at
    return round(time.time() - stamp, 1) if stamp else None


# -- watches feeding the registry ------------------------------------------------------------


@kopf.on.event(*INFD)
def deployment_event(body: kopf.Body, type: str | None, memo: kopf.Memo, **_: Any) -> None:
    namespace, name = body.metadata.namespace, body.metadata.name
    if not _watched(memo, namespace) or namespace is None or name is None:
        return
    registry = _controller(memo).registry
    if type == "DELETED":
        registry.deployments.pop((namespace, name), None)
    else:
        registry.deployments[(namespace, name)] = dict(body)


@kopf.on.event("", "v1", "pods")
def pod_event(body: kopf.Body, type: str | None, memo: kopf.Memo, **_: Any) -> None:
    """Every pod of the watched namespaces: owned pods are found by their deployment label,
    attached ones by their workload's selector, which may change at any time."""
    if _watched(memo, body.metadata.namespace):
        _controller(memo).registry.put_pod(dict(body), deleted=type == "DELETED")


@kopf.on.event(*RCP)
def policy_event(body: kopf.Body, type: str | None, memo: kopf.Memo, **_: Any) -> None:
    policies = _controller(memo).registry.policies
    name = str(body.metadata.name)
    if type == "DELETED":
        policies.pop(name, None)
    else:
        policies[name] = dict(body.get("spec") or {})


@kopf.on.event("", "v1", "namespaces")
def namespace_event(body: kopf.Body, type: str | None, memo: kopf.Memo, **_: Any) -> None:
    namespaces = _controller(memo).registry.namespaces
    name = str(body.metadata.name)
    if type == "DELETED":
        namespaces.pop(name, None)
    else:
        namespaces[name] = dict(body.metadata.labels or {})


# -- owned objects ---------------------------------------------------------------------------


@kopf.on.resume(*INFD)
@kopf.on.create(*INFD)
@kopf.on.update(*INFD, field="spec")
async def reconcile(body: kopf.Body, logger: kopf.Logger, memo: kopf.Memo, **_: Any) -> None:
    if not _watched(memo, body.metadata.namespace):
        return
    try:
        await asyncio.to_thread(_controller(memo).reconcile_children, dict(body))
        await asyncio.to_thread(_apply_agent_network_policy, _controller(memo), dict(body))
    except ValueError as error:  # invalid spec or policy: say so; retrying will not help
        kopf.warn(body, reason="PolicyInvalid", message=str(error))
        raise kopf.PermanentError(str(error)) from error
    except Exception as error:
        logger.warning("children of %s not reconciled yet: %s", body.metadata.name, error)
        raise kopf.TemporaryError(f"reconcile failed: {error}", delay=15) from error


def _apply_agent_network_policy(controller: FleetController, body: dict[str, Any]) -> None:
    """The agent port admits only the operator (see workload.agent_network_policy)."""
    settings = controller.settings
    spec = InferenceDeploymentSpec.model_validate(body.get("spec") or {})
    if not settings.workload_network_policy or not workload.agent_enabled(spec):
        return
    metadata = body["metadata"]
    controller.kube.apply(
        workload.agent_network_policy(
            metadata["name"], metadata["namespace"], metadata["uid"], spec,
            settings.operator_namespace,
        )
    )  # fmt: skip


@kopf.on.delete(*INFD)
def deleted(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """Children go with their owner (owner references); an attached workload gets back every
    pod drained through its readiness gate; the engine forgets the fleet."""
    namespace, name = body.metadata.namespace, body.metadata.name
    if namespace is not None and name is not None:
        controller = _controller(memo)
        try:
            returned = controller.release(dict(body))
        except Exception as error:
            raise kopf.TemporaryError(
                f"drained pods not returned yet: {error}", delay=10
            ) from error
        if returned:
            log.info("returned %s to service before %s/%s goes", returned, namespace, name)
        controller.forget((namespace, name))
