"""``hack/cluster``: a local Kubernetes test cluster (etcd, kube-apiserver,
kube-controller-manager, kube-scheduler, KWOK) and its Prometheus, on 127.0.0.1.

    hack/cluster build                  build (or reuse) the pinned binaries in the cache
    hack/cluster up [--nodes N] [--pod-cidr CIDR]
                                        start the cluster (idempotent)
    hack/cluster status                 print the state of every component
    hack/cluster env                    print shell exports (KUBECONFIG, ...)
    hack/cluster down [--keep]          stop everything; remove the state unless --keep
    hack/cluster versions               print the pinned versions and paths

Environment:
    INFERCYCLE_CACHE            cache root (default ~/.cache/infercycle); binaries go to
                                <cache>/cluster/k8s-<v>-etcd-<v>-kwok-<v>/bin
    INFERCYCLE_CLUSTER_DIR      state directory (default <repo>/.cluster)
    INFERCYCLE_PROMETHEUS_PORT  Prometheus port (default 19090)
    INFERCYCLE_POD_CIDR         default for --pod-cidr (used when the state has none)
    INFERCYCLE_K8S_VERSION, INFERCYCLE_ETCD_VERSION, INFERCYCLE_KWOK_VERSION
                                override the pinned versions (another cache directory)

Ports (all 127.0.0.1): etcd 12379/12380, kube-apiserver 16443, kube-controller-manager 16257,
kube-scheduler 16259, KWOK 16270, Prometheus 19090.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sys
import time
from collections.abc import Sequence
from functools import partial
from pathlib import Path

from localcluster import build, data, versions
from localcluster.addresses import (
    APISERVER_PORT,
    HOST,
    LOCAL_POD_CIDR,
    LOOPBACK_POD_CIDR,
    auto_pod_cidr,
    ensure_local_route,
    node_cidrs,
    prometheus_port,
    remove_local_route,
)
from localcluster.client import (
    api_get,
    find_kubectl,
    healthy,
    kubectl,
    ready_nodes,
    wait_for,
)
from localcluster.components import all_components, context_for, kwok, prometheus
from localcluster.errors import ClusterError, log
from localcluster.pki import make_pki, write_kubeconfig
from localcluster.process import Component, read_pid, start, stop
from localcluster.state import load_settings, save_settings, state_dir, state_pod_cidr


def components(state: Path) -> list[Component]:
    return all_components(context_for(state))


def binaries_present() -> None:
    bins = versions.bin_dir()
    names = ("etcd", *build.KUBE_CONTROL_PLANE, "kwok")
    missing = [n for n in names if not (bins / n).is_file()]
    if missing:
        raise ClusterError(
            f"missing binaries in {bins}: {', '.join(missing)}; run `hack/cluster build`"
        )
    if not shutil.which("prometheus"):
        raise ClusterError("prometheus is not installed; run `hack/cluster build`")


def nodes_ready(state: Path, count: int) -> bool:
    return ready_nodes(state)[0] >= count


def cmd_build(args: argparse.Namespace) -> int:
    build.build_all()
    return 0


def cmd_up(args: argparse.Namespace) -> int:
    started = time.monotonic()
    binaries_present()
    find_kubectl()
    state = state_dir()
    state.mkdir(parents=True, exist_ok=True)
    settings = load_settings(state)
    chosen = args.pod_cidr or str(settings.get("pod_cidr") or "")
    pod_cidr = chosen or auto_pod_cidr()
    comps = {c.name: c for c in components(state)}
    running = {name for name, c in comps.items() if read_pid(state, c) is not None}
    previous = settings.get("pod_cidr")
    if previous and previous != pod_cidr and (running or (state / "etcd").exists()):
        raise ClusterError(
            f"the cluster was created with pod CIDR {previous}; `hack/cluster down` (without "
            f"--keep) first to switch to {pod_cidr}"
        )
    node_cidrs(pod_cidr, args.nodes)
    if (
        running == set(comps)
        and all(healthy(state, c) for c in comps.values())
        and nodes_ready(state, args.nodes)
    ):
        print(f"cluster already up (state {state})")
        print_env(state)
        return 0

    try:
        route_added = ensure_local_route(pod_cidr) or bool(settings.get("local_route"))
    except ClusterError as exc:
        if chosen:
            raise
        log(
            f"{exc}; using loopback pod addresses {LOOPBACK_POD_CIDR} instead (Services will list "
            "no endpoints)"
        )
        pod_cidr, route_added = LOOPBACK_POD_CIDR, False
    cidrs = node_cidrs(pod_cidr, args.nodes)

    make_pki(state / "pki")
    write_kubeconfig(state / "kubeconfig", state / "pki")
    (state / "kwok").mkdir(exist_ok=True)
    (state / "kwok" / "kwok.yaml").write_text(kwok.render_config(pod_cidr))
    prometheus.targets_dir(state).mkdir(parents=True, exist_ok=True)
    (prometheus.config_dir(state) / "prometheus.yml").write_text(
        prometheus.render_config(state, prometheus_port())
    )
    save_settings(
        state,
        {
            "nodes": args.nodes,
            "prometheus_port": prometheus_port(),
            "pod_cidr": pod_cidr,
            "local_route": route_added,
        },
    )
    comps = {c.name: c for c in components(state)}

    def ensure(name: str) -> None:
        comp = comps[name]
        if read_pid(state, comp) is None:
            start(state, comp)
            log(f"started {name}")

    # Prometheus does not depend on the cluster: start it first so it is ready in parallel.
    ensure("prometheus")
    ensure("etcd")
    wait_for("etcd health", lambda: healthy(state, comps["etcd"]), 30, state, comps["etcd"])
    ensure("kube-apiserver")
    wait_for(
        "kube-apiserver /readyz",
        lambda: healthy(state, comps["kube-apiserver"]),
        60,
        state,
        comps["kube-apiserver"],
    )
    for name in ("kube-controller-manager", "kube-scheduler", "kwok"):
        ensure(name)
    nodes = {
        "apiVersion": "v1",
        "kind": "List",
        "items": [kwok.node_manifest(i, cidr) for i, cidr in enumerate(cidrs)],
    }
    kubectl(state, "apply", "-f", "-", stdin=json.dumps(nodes))
    kubectl(state, "apply", "-f", "-", stdin=data.read("bootstrap.yaml"))
    wait_for(
        "the default ServiceAccount",
        lambda: api_get(state, "/api/v1/namespaces/default/serviceaccounts/default")[0] == 200,
        60,
        state,
        comps["kube-controller-manager"],
    )
    wait_for(
        f"{args.nodes} Ready nodes",
        lambda: nodes_ready(state, args.nodes),
        60,
        state,
        comps["kwok"],
    )
    for name in ("kube-controller-manager", "kube-scheduler", "kwok", "prometheus"):
        wait_for(f"{name} health", partial(healthy, state, comps[name]), 60, state, comps[name])
    elapsed = time.monotonic() - started
    (state / "up-seconds.txt").write_text(f"{elapsed:.1f}\n")
    print(f"cluster up in {elapsed:.1f}s (state {state})")
    print_env(state)
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    state = state_dir()
    stopped = False
    # Processes are found by command line too, so even a lost state directory is cleaned up.
    for comp in reversed(components(state)):
        if stop(state, comp):
            stopped = True
            print(f"stopped {comp.name}")
    if not state.exists():
        if not stopped:
            print(f"no cluster state at {state}; nothing to stop")
        return 0
    settings = load_settings(state)
    if settings.get("local_route"):
        remove_local_route(str(settings["pod_cidr"]))
        settings["local_route"] = False
        with contextlib.suppress(OSError):
            save_settings(state, settings)
    if args.keep:
        print(f"state kept in {state}")
    else:
        shutil.rmtree(state, ignore_errors=True)
        print(f"removed {state}")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    state = state_dir()
    all_ok = True
    print(f"state: {state}{'' if state.exists() else ' (absent)'}")
    print(f"binaries: {versions.bin_dir()}")
    for comp in components(state):
        pid = read_pid(state, comp)
        if pid is None:
            desc, ok = "stopped", False
        elif healthy(state, comp):
            desc, ok = f"running (pid {pid}), healthy", True
        else:
            desc, ok = f"running (pid {pid}), NOT healthy", False
        all_ok = all_ok and ok
        print(f"  {comp.name:<24} {desc:<36} port {comp.port}")
    if all_ok:
        ready, total = ready_nodes(state)
        if total:
            print(f"  nodes: {ready}/{total} Ready, pod CIDR {state_pod_cidr(state)}")
    return 0 if all_ok else 1


def env_lines(state: Path) -> list[str]:
    return [
        f"export KUBECONFIG={state / 'kubeconfig'}",
        f"export INFERCYCLE_CLUSTER_DIR={state}",
        f"export INFERCYCLE_API_URL=https://{HOST}:{APISERVER_PORT}",
        f"export INFERCYCLE_PROMETHEUS_URL=http://{HOST}:{prometheus_port()}",
        f"export INFERCYCLE_PROMETHEUS_TARGETS={prometheus.targets_dir(state)}",
        f"export INFERCYCLE_POD_CIDR={state_pod_cidr(state)}",
    ]


def print_env(state: Path) -> None:
    for line in env_lines(state):
        print(line)


def cmd_env(args: argparse.Namespace) -> int:
    print_env(state_dir())
    return 0


def cmd_versions(args: argparse.Namespace) -> int:
    pins = versions.pinned()
    print(
        json.dumps(
            {
                "kubernetes": pins.kubernetes,
                "etcd": pins.etcd,
                "kwok": pins.kwok,
                "cache": str(versions.cache_root()),
                "bin": str(versions.bin_dir()),
                "pod_cidr": state_pod_cidr(state_dir()),
                "apiserver": f"https://{HOST}:{APISERVER_PORT}",
                "prometheus": f"http://{HOST}:{prometheus_port()}",
            },
            indent=2,
        )
    )
    return 0


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="hack/cluster",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = top.add_subparsers(dest="command", required=True)
    sub.add_parser("build", help="build or reuse the cached binaries").set_defaults(func=cmd_build)
    up = sub.add_parser("up", help="start the cluster (idempotent)")
    up.add_argument("--nodes", type=int, default=3, help="number of fake nodes (default 3)")
    up.add_argument(
        "--pod-cidr",
        default=os.environ.get("INFERCYCLE_POD_CIDR"),
        help=f"pod addresses; default {LOCAL_POD_CIDR} made local with a route on lo when "
        f"root, else {LOOPBACK_POD_CIDR} (loopback: Services list no endpoints)",
    )
    up.set_defaults(func=cmd_up)
    down = sub.add_parser("down", help="stop the cluster")
    down.add_argument("--keep", action="store_true", help="keep the state directory")
    down.set_defaults(func=cmd_down)
    sub.add_parser("status", help="show component state").set_defaults(func=cmd_status)
    sub.add_parser("env", help="print shell exports").set_defaults(func=cmd_env)
    sub.add_parser("versions", help="print pinned versions and paths").set_defaults(
        func=cmd_versions
    )
    return top


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return int(args.func(args))
    except ClusterError as exc:
        print(f"hack/cluster: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0
