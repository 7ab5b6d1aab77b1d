"""A fleet metrics simulator: what cAdvisor, dcgm-exporter and the inference server would export
for every pod.

    python -m infercycle_sim.fleetsim --kubeconfig K --port P --speed S [--config FILE]

It watches the pods of the cluster (list, then watch from the list's resourceVersion; it lists
again after any error) and serves Prometheus text on ``/metrics`` for every Running pod:

- cAdvisor: ``container_cpu_usage_seconds_total`` (counter, CPU seconds) and
  ``container_memory_working_set_bytes`` (gauge, bytes), labelled ``namespace``, ``pod``,
  ``container`` (the pod's first container; no pod-level ``container=""`` series);
- dcgm-exporter: ``DCGM_FI_DEV_FB_USED`` and ``DCGM_FI_DEV_FB_FREE`` (gauges, **MiB**, as the
  exporter reports them), labelled ``namespace``, ``pod``, ``container``, ``gpu``, ``UUID``,
  ``modelName``, ``Hostname``;
- the inference server's own families, as :mod:`infercycle_sim.servers` writes them for the
  pod's server (vLLM unless the pod annotation ``sim.infercycle.io/server`` or the config's
  ``defaults.server`` names sglang, tgi, llamacpp, triton or dynamo), labelled ``namespace``
  and ``pod`` besides the server's own labels.

Each pod follows a scenario of :mod:`infercycle_sim.scenarios`, chosen by the pod annotation
``sim.infercycle.io/scenario``, else by the first rule of the config file whose glob matches
``namespace/name`` or ``name``, else ``healthy``. ``sim.infercycle.io/params`` (a JSON object)
overrides scenario parameters; ``sim.infercycle.io/age-offset`` (seconds) starts the pod older;
``sim.infercycle.io/disabled: "true"`` hides the pod; ``sim.infercycle.io/fleet-load: surge``
drives it with the fleet-wide surge curve whatever its scenario (as a load balancer spreads a
surge over every pod of a fleet; a ``surge`` pod has it anyway). The config file (YAML or
JSON)::

    defaults: {scenario: healthy}
    fleetLoad: surge            # optional: drive every pod with the fleet-wide surge curve
    rules:
      - match: "leaky-*"        # fnmatch glob on "namespace/name" or on "name"
        scenario: leak
        params: {rate: 4096, onset: 600}
        ageOffset: 0

A simpler ``{glob: scenario}`` mapping is accepted too.

Time runs ``--speed`` times faster than real time: a pod's age is
``age_offset + (now - start) * speed`` where ``start`` is the pod's ``status.startTime`` (its
creation time before that). Rates are not scaled: counters grow at the model's per-second values
in real time, so ``rate()`` over a real window reads the model's CPU cores, requests per second
and failures per second at the pod's simulated age. State is keyed by pod UID, so a recreated
pod (same name, new UID) starts again at age zero with fresh counters; counters never decrease
for one UID.

The latency histograms are synthesised so that ``histogram_quantile(0.99, rate(...))`` returns
the scenario's p99 (see :func:`infercycle_sim.servers.cumulative_shares`); errors grow so that
errors / finished requests is the model's ``error_rate``; finished requests grow at
``request_rate``.

``GET /healthz`` answers ``ok``; ``GET /pods`` returns the simulated pods as JSON; ``GET /info``
the simulator's settings. ``--parent-pid`` stops it when that process is gone.
"""

from __future__ import annotations

import argparse
import fnmatch
import hashlib
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType
from typing import Any, Protocol

import yaml

from infercycle.api.servers import ServerKind
from infercycle_sim.servers import EngineState, Family, PodEngine
from infercycle_sim.servers import render as render_server

log = logging.getLogger("infercycle.fleetsim")

ANNOTATION_SCENARIO = "sim.infercycle.io/scenario"
ANNOTATION_PARAMS = "sim.infercycle.io/params"
ANNOTATION_AGE_OFFSET = "sim.infercycle.io/age-offset"
ANNOTATION_DISABLED = "sim.infercycle.io/disabled"
ANNOTATION_SERVER = "sim.infercycle.io/server"
ANNOTATION_FLEET_LOAD = "sim.infercycle.io/fleet-load"


MIB = float(2**20)
GPU_TOTAL_MIB = 81920.0
GPU_MODEL = "NVIDIA H100 80GB HBM3"
MAX_STEP_S = 2.0
"""Counters are integrated in real-time steps of at most this length."""


class PodModelLike(Protocol):
    def sample(self, age_s: float, fleet_load: float = 1.0) -> dict[str, float | None]: ...


def _scenarios() -> ModuleType:
    from infercycle_sim import scenarios  # noqa: PLC0415 - loaded on first use

    return scenarios


# --------------------------------------------------------------------------------------------
# configuration


@dataclass(frozen=True)
class Rule:
    match: str
    scenario: str
    params: dict[str, float] = field(default_factory=dict)
    age_offset: float = 0.0


@dataclass(frozen=True)
class SimConfig:
    default_scenario: str = "healthy"
    default_params: dict[str, float] = field(default_factory=dict)
    rules: tuple[Rule, ...] = ()
    fleet_surge: bool = False
    default_server: str = ServerKind.VLLM.value

    @classmethod
    def load(cls, path: str | None) -> SimConfig:
        if not path:
            return cls()
        raw = yaml.safe_load(Path(path).read_text()) or {}
        if not isinstance(raw, dict):
            msg = f"{path}: expected a mapping"
            raise ValueError(msg)
        if "rules" not in raw and "defaults" not in raw and "fleetLoad" not in raw:
            rules = tuple(Rule(match=str(k), scenario=str(v)) for k, v in raw.items())
            return cls(rules=rules)
        defaults = raw.get("defaults") or {}
        rules = tuple(
            Rule(
                match=str(item["match"]),
                scenario=str(item.get("scenario", "healthy")),
                params={str(k): float(v) for k, v in (item.get("params") or {}).items()},
                age_offset=float(item.get("ageOffset", 0.0)),
            )
            for item in raw.get("rules") or []
        )
        return cls(
            default_scenario=str(defaults.get("scenario", "healthy")),
            default_params={str(k): float(v) for k, v in (defaults.get("params") or {}).items()},
            rules=rules,
            fleet_surge=str(raw.get("fleetLoad", "")).lower() == "surge",
            default_server=str(defaults.get("server", ServerKind.VLLM.value)),
        )

    def choose(self, namespace: str, name: str) -> tuple[str, dict[str, float], float]:
        for rule in self.rules:
            if fnmatch.fnmatchcase(f"{namespace}/{name}", rule.match) or fnmatch.fnmatchcase(
                name, rule.match
            ):
                return rule.scenario, dict(rule.params), rule.age_offset
        return self.default_scenario, dict(self.default_params), 0.0


# --------------------------------------------------------------------------------------------
# per-pod state


def _spec_key(pod: Any) -> str:
    annotations = dict(pod.metadata.annotations or {})
    keys = (ANNOTATION_SCENARIO, ANNOTATION_PARAMS)
    return json.dumps([annotations.get(key) for key in keys])


def _serving(pod: Any) -> bool:
    return bool(dict(pod.metadata.labels or {}).get("infercycle.io/serving", "true") == "true")


def stable_seed(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "big")


@dataclass
class PodSim:
    uid: str
    namespace: str
    name: str
    container: str
    node: str
    scenario: str
    params: dict[str, float]
    age_offset: float
    start: float
    model: PodModelLike
    server: str = "vllm"
    engine: EngineState = field(default_factory=lambda: EngineState.new(ServerKind.VLLM))
    running: bool = True
    serving: bool = True
    spec_key: str = ""
    surge: bool = False
    last_step: float | None = None
    last_sample: dict[str, float | None] = field(default_factory=dict)
    cpu_seconds: float = 0.0

    def age(self, now: float, speed: float) -> float:
        return self.age_offset + max(0.0, now - self.start) * speed

    def advance(self, now: float, speed: float, load_of: Callable[[PodSim], float]) -> None:
        """Integrate the counters up to ``now`` (wall-clock seconds)."""
        if self.last_step is None:
            self.last_step = now
            self.last_sample = self.model.sample(self.age(now, speed), load_of(self))
            return
        while self.last_step < now:
            step = min(MAX_STEP_S, now - self.last_step)
            t = self.last_step + step
            sample = self.model.sample(self.age(t, speed), load_of(self))
            self._accumulate(sample, step)
            self.last_step = t
            self.last_sample = sample

    def _accumulate(self, sample: Mapping[str, float | None], dt: float) -> None:
        cpu = sample.get("cpu")
        if cpu is not None:
            self.cpu_seconds += max(cpu, 0.0) * dt
        self.engine.accumulate(sample, dt)

    def describe(self, now: float, speed: float) -> dict[str, Any]:
        return {
            "uid": self.uid,
            "namespace": self.namespace,
            "pod": self.name,
            "name": self.name,
            "node": self.node,
            "scenario": self.scenario,
            "params": self.params,
            "age_s": round(self.age(now, speed), 3),
            "running": self.running,
            "sample": self.last_sample,
            "server": self.server,
            "counters": {
                "cpu_seconds": self.cpu_seconds,
                "finished": self.engine.finished,
                "errors": self.engine.errors,
            },
        }


# --------------------------------------------------------------------------------------------
# fleet


class Fleet:
    """Simulated pods by UID, fed by the pod watch, read by the exporter."""

    def __init__(
        self,
        config: SimConfig,
        speed: float,
        age_offset: float = 0.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.speed = speed
        self.age_offset = age_offset
        self.clock = clock
        self.started = clock()
        self.pods: dict[str, PodSim] = {}
        self.lock = threading.Lock()
        self.synced = threading.Event()

    def fleet_load(self, pod: PodSim) -> float:
        scenarios = _scenarios()
        fleet_t = self.age_offset + (self.clock() - self.started) * self.speed
        if not pod.serving:
            return 0.0  # drained: the client Service sends it nothing
        if self.config.fleet_surge or pod.surge or pod.scenario == "surge":
            return float(scenarios.surge_load(fleet_t))
        return 1.0

    def _build(self, pod: Any) -> PodSim | None:
        meta = pod.metadata
        annotations = dict(meta.annotations or {})
        if annotations.get(ANNOTATION_DISABLED, "").lower() == "true":
            return None
        scenario, params, offset = self.config.choose(meta.namespace, meta.name)
        scenario = annotations.get(ANNOTATION_SCENARIO, scenario)
        if ANNOTATION_PARAMS in annotations:
            try:
                extra = json.loads(annotations[ANNOTATION_PARAMS])
                params.update({str(k): float(v) for k, v in dict(extra).items()})
            except (ValueError, TypeError):
                log.warning(
                    "pod %s/%s: ignoring invalid %s", meta.namespace, meta.name, ANNOTATION_PARAMS
                )
        if ANNOTATION_AGE_OFFSET in annotations:
            try:
                offset = float(annotations[ANNOTATION_AGE_OFFSET])
            except ValueError:
                log.warning(
                    "pod %s/%s: ignoring invalid %s",
                    meta.namespace,
                    meta.name,
                    ANNOTATION_AGE_OFFSET,
                )
        server = annotations.get(ANNOTATION_SERVER, self.config.default_server)
        try:
            engine = EngineState.new(server)
        except ValueError:
            log.warning(
                "pod %s/%s: unknown server %r; using vllm", meta.namespace, meta.name, server
            )
            server, engine = ServerKind.VLLM.value, EngineState.new(ServerKind.VLLM)
        seed = stable_seed(f"{meta.namespace}/{meta.name}")
        try:
            model = _scenarios().make_pod_model(scenario, seed, params or None)
        except ValueError as exc:
            log.warning("pod %s/%s: %s; using healthy", meta.namespace, meta.name, exc)
            scenario, params = "healthy", {}
            model = _scenarios().make_pod_model("healthy", seed, None)
        status = pod.status
        began = status.start_time if status and status.start_time else meta.creation_timestamp
        start = began.timestamp() if isinstance(began, datetime) else self.clock()
        containers = pod.spec.containers or []
        return PodSim(
            serving=_serving(pod),
            spec_key=_spec_key(pod),
            uid=meta.uid,
            namespace=meta.namespace,
            name=meta.name,
            container=containers[0].name if containers else "main",
            node=pod.spec.node_name or "",
            scenario=scenario,
            params=params,
            age_offset=self.age_offset + offset,
            start=start,
            model=model,
            server=server,
            engine=engine,
            surge=annotations.get(ANNOTATION_FLEET_LOAD, "").lower() == "surge",
        )

    def upsert(self, pod: Any) -> None:
        running = bool(pod.status and pod.status.phase == "Running")
        uid = pod.metadata.uid
        with self.lock:
            current = self.pods.get(uid)
            if current is None:
                if not running:
                    return
                sim = self._build(pod)
                if sim is not None:
                    self.pods[uid] = sim
                    log.info(
                        "pod %s/%s (%s): scenario %s",
                        sim.namespace,
                        sim.name,
                        uid[:8],
                        sim.scenario,
                    )
                return
            current.running = running
            current.serving = _serving(pod)
            if pod.spec.node_name:
                current.node = pod.spec.node_name
            if _spec_key(pod) != current.spec_key:
                rebuilt = self._build(pod)
                if rebuilt is not None:
                    # A new scenario from now on; counters carry over so they stay monotonic.
                    rebuilt.start = current.start
                    rebuilt.age_offset = current.age_offset
                    for counter in ("cpu_seconds", "engine", "server", "last_step", "last_sample"):
                        setattr(rebuilt, counter, getattr(current, counter))
                    self.pods[uid] = rebuilt
                    log.info(
                        "pod %s/%s: scenario now %s",
                        rebuilt.namespace,
                        rebuilt.name,
                        rebuilt.scenario,
                    )

    def remove(self, uid: str) -> None:
        with self.lock:
            self.pods.pop(uid, None)

    def replace_all(self, pods: Iterable[Any]) -> None:
        seen: set[str] = set()
        for pod in pods:
            seen.add(pod.metadata.uid)
            self.upsert(pod)
        with self.lock:
            for uid in list(self.pods):
                if uid not in seen:
                    del self.pods[uid]
        self.synced.set()

    def snapshot(self) -> list[PodSim]:
        now = self.clock()
        with self.lock:
            pods = [p for p in self.pods.values() if p.running]
            for pod in pods:
                pod.advance(now, self.speed, self.fleet_load)
            return sorted(pods, key=lambda p: (p.namespace, p.name))

    def describe(self) -> list[dict[str, Any]]:
        now = self.clock()
        with self.lock:
            return [p.describe(now, self.speed) for p in self.pods.values()]


# --------------------------------------------------------------------------------------------
# exposition


def render(pods: Iterable[PodSim]) -> str:
    cpu = Family(
        "container_cpu_usage_seconds_total", "counter", "Cumulative cpu time consumed in seconds."
    )
    mem = Family("container_memory_working_set_bytes", "gauge", "Current working set in bytes.")
    fb_used = Family("DCGM_FI_DEV_FB_USED", "gauge", "Framebuffer memory used (in MiB).")
    fb_free = Family("DCGM_FI_DEV_FB_FREE", "gauge", "Framebuffer memory free (in MiB).")
    engines: dict[str, list[PodEngine]] = {}
    for pod in pods:
        sample = pod.last_sample
        if sample and all(v is None for v in sample.values()):
            continue  # a scrape gap: the target answers nothing for this pod
        base = {"namespace": pod.namespace, "pod": pod.name}
        cont = {**base, "container": pod.container}
        cpu.add(cont, pod.cpu_seconds)
        if sample.get("memory") is not None:
            mem.add(cont, float(sample["memory"] or 0.0))
        gpu = sample.get("gpu_memory")
        if gpu is not None:
            gpu_labels = {
                **cont,
                "gpu": "0",
                "UUID": "GPU-" + pod.uid,
                "modelName": GPU_MODEL,
                "Hostname": pod.node,
            }
            used = max(gpu, 0.0) / MIB
            fb_used.add(gpu_labels, round(used))
            fb_free.add(gpu_labels, round(max(GPU_TOTAL_MIB - used, 0.0)))
        engines.setdefault(pod.server, []).append((base, pod.engine))
    text = "".join(f.render() for f in (cpu, mem, fb_used, fb_free))
    return text + "".join(render_server(server, group) for server, group in engines.items())


def make_handler(fleet: Fleet) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "infercycle-fleetsim"

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                body = render(fleet.snapshot()).encode()
                self._send(200, body, "text/plain; version=0.0.4; charset=utf-8")
            elif path == "/healthz":
                self._send(200, b"ok\n", "text/plain")
            elif path == "/readyz":
                ok = fleet.synced.is_set()
                self._send(200 if ok else 503, b"ok\n" if ok else b"syncing\n", "text/plain")
            elif path == "/pods":
                body = json.dumps(fleet.describe(), indent=1, default=str).encode()
                self._send(200, body, "application/json")
            elif path == "/info":
                info = {
                    "simulator": "infercycle-fleetsim",
                    "pid": os.getpid(),
                    "speed": fleet.speed,
                    "age_offset": fleet.age_offset,
                    "started": fleet.started,
                    "pods": len(fleet.pods),
                }
                self._send(200, json.dumps(info).encode(), "application/json")
            else:
                self._send(404, b"not found\n", "text/plain")

        def _send(self, code: int, body: bytes, ctype: str) -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("%s " + format, self.address_string(), *args)

    return Handler


# --------------------------------------------------------------------------------------------
# pod watch


def watch_pods(fleet: Fleet, kubeconfig: str | None, stop: threading.Event) -> None:
    """List and watch pods in every namespace until ``stop``; relist after any failure."""
    from kubernetes import client, config, watch  # noqa: PLC0415 - heavy, only for the CLI

    backoff = 0.5
    while not stop.is_set():
        try:
            if kubeconfig:
                config.load_kube_config(config_file=kubeconfig)  # type: ignore[no-untyped-call]
            else:
                config.load_config()  # type: ignore[no-untyped-call]
            api = client.CoreV1Api()
            listing = api.list_pod_for_all_namespaces(timeout_seconds=30)
            fleet.replace_all(listing.items)
            version = listing.metadata.resource_version if listing.metadata else None
            log.info("listed %d pods at resourceVersion %s", len(listing.items), version)
            backoff = 0.5
            while not stop.is_set():
                w = watch.Watch()  # type: ignore[no-untyped-call]
                for event in w.stream(  # type: ignore[no-untyped-call]
                    api.list_pod_for_all_namespaces,
                    resource_version=version,
                    timeout_seconds=60,
                    allow_watch_bookmarks=True,
                ):
                    kind = event.get("type")
                    obj = event.get("object")
                    if kind == "ERROR":
                        raise RuntimeError(f"watch error: {event.get('raw_object')}")
                    if obj is None or not hasattr(obj, "metadata"):
                        continue
                    if obj.metadata and obj.metadata.resource_version:
                        version = obj.metadata.resource_version
                    if kind in ("ADDED", "MODIFIED"):
                        fleet.upsert(obj)
                    elif kind == "DELETED":
                        fleet.remove(obj.metadata.uid)
                    if stop.is_set():
                        w.stop()  # type: ignore[no-untyped-call]
                        break
        except Exception as exc:  # any failure means: list again
            if stop.is_set():
                break
            log.warning("pod watch failed (%s); listing again in %.1fs", exc, backoff)
            stop.wait(backoff)
            backoff = min(backoff * 2, 10.0)


# --------------------------------------------------------------------------------------------
# CLI


def _exit_with_parent(pid: int, stop: threading.Event) -> None:
    while not stop.wait(2.0):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            log.info("parent process %d is gone; stopping", pid)
            stop.set()
        except PermissionError:
            pass  # alive, owned by someone else


def serve(fleet: Fleet, host: str, port: int) -> ThreadingHTTPServer:
    server = ThreadingHTTPServer((host, port), make_handler(fleet))
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="fleetsim-http", daemon=True).start()
    return server


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m infercycle_sim.fleetsim",
        description="Simulated cAdvisor, dcgm-exporter and inference-server metrics for every "
        "Running pod.",
    )
    parser.add_argument("--kubeconfig", help="kubeconfig (default: in-cluster or ~/.kube)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=19100)
    parser.add_argument(
        "--speed", type=float, default=1.0, help="simulated seconds per real second (default 1)"
    )
    parser.add_argument(
        "--age-offset",
        type=float,
        default=0.0,
        help="simulated seconds added to every pod's age (default 0)",
    )
    parser.add_argument("--config", help="YAML/JSON file mapping pod globs to scenarios")
    parser.add_argument(
        "--parent-pid",
        type=int,
        help="exit when this process is gone (a test session that died without cleaning up)",
    )
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    if args.speed <= 0:
        parser.error("--speed must be positive")
    config = SimConfig.load(args.config)
    fleet = Fleet(config, speed=args.speed, age_offset=args.age_offset)
    stop = threading.Event()
    server = serve(fleet, args.host, args.port)
    log.info("serving on http://%s:%d/metrics (speed %gx)", args.host, args.port, args.speed)

    def on_signal(signum: int, frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    watcher = threading.Thread(
        target=watch_pods, args=(fleet, args.kubeconfig, stop), name="pod-watch", daemon=True
    )
    watcher.start()
    if args.parent_pid:
        threading.Thread(
            target=_exit_with_parent, args=(args.parent_pid, stop), name="parent", daemon=True
        ).start()
    stop.wait()
    server.shutdown()
    log.info("stopped at %s", datetime.now(UTC).isoformat(timespec="seconds"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
