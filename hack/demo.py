#!/usr/bin/env python3
"""The main job on a local default: a local control plane, Prometheus, a simulated fleet of
eight inference pods, and the operator. One pod starts leaking; watch it get recycled.

    make demo            (or: .venv/bin/python hack/demo.py [--keep-running])
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
NAMESPACE = "demo"
NAME = "llama"
SIM_PORT = 19100


def say(text: str) -> None:
    print(f"\n\033[1m==> {text}\033[0m", flush=True)


def run(*args: str, check: bool = True, capture: bool = False, stdin: str | None = None) -> str:
    result = subprocess.run(
        args, check=False, text=True, capture_output=capture, input=stdin, env=ENV
    )
    if check and result.returncode != 0:
        detail = (result.stderr or "") if capture else ""
        sys.exit(f"demo: {' '.join(args)} failed ({result.returncode}) {detail}")
    return result.stdout or ""


def kubectl(*args: str, capture: bool = True, stdin: str | None = None) -> str:
    return run("kubectl", f"--kubeconfig={KUBECONFIG}", *args, capture=capture, stdin=stdin)


CYCLE_INTERVAL = "2s"


def explain(prometheus: str) -> None:
    target = f"{NAMESPACE}/{NAME}"
    print(
        run(
            sys.executable,
            "-m",
            "infercycle.cli",
            "explain",
            target,
            "--prometheus-url",
            prometheus,
            "--cycle-interval",
            CYCLE_INTERVAL,
            capture=True,
        )
    )


def status() -> dict[str, Any]:
    out = kubectl("get", "infd", NAME, "-n", NAMESPACE, "-o", "json")
    return dict(json.loads(out).get("status") or {})


def ready_pods() -> dict[str, str]:
    pods = json.loads(
        kubectl(
            "get", "pods", "-n", NAMESPACE, "-l", f"infercycle.io/deployment={NAME}", "-o", "json"
        )
    )["items"]
    ready = {}
    for pod in pods:
        conditions = {c["type"]: c["status"] for c in pod["status"].get("conditions") or []}
        if conditions.get("Ready") == "True" and not pod["metadata"].get("deletionTimestamp"):
            ready[pod["metadata"]["name"]] = pod["metadata"]["uid"]
    return ready


def wait(what: str, check: Any, timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(1)
    sys.exit(f"demo: timed out after {timeout:.0f}s waiting for {what}")


def start(name: str, args: list[str], log: Path) -> subprocess.Popen[bytes]:
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        return subprocess.Popen(
            args, stdout=out, stderr=subprocess.STDOUT, env=ENV, start_new_session=True
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--keep-running", action="store_true", help="leave the operator running")
    parser.add_argument(
        "--server",
        default="vllm",
        choices=["vllm", "sglang", "tgi", "llamacpp", "triton", "dynamo"],
        help="inference server the simulated fleet speaks (spec.server; default vllm)",
    )
    args = parser.parse_args()
    global ENV, KUBECONFIG  # noqa: PLW0603 - set once, read by the helpers above
    ENV = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    ENV["PYTHONPATH"] = os.pathsep.join([str(REPO / "operator"), str(REPO / "sim")])

    say("Local control plane (etcd, apiserver, controller-manager, scheduler, KWOK) + Prometheus")
    run(str(REPO / "hack" / "cluster"), "build")
    run(str(REPO / "hack" / "cluster"), "up")
    exports = run(str(REPO / "hack" / "cluster"), "env", capture=True)
    values = dict(
        line.removeprefix("export ").split("=", 1)
        for line in exports.splitlines()
        if line.startswith("export ")
    )
    KUBECONFIG = values["KUBECONFIG"]
    ENV["KUBECONFIG"] = KUBECONFIG
    prometheus = values.get("INFERCYCLE_PROMETHEUS_URL", "http://127.0.0.1:19090")
    targets = Path(values["INFERCYCLE_PROMETHEUS_TARGETS"])
    logs = REPO / ".cluster" / "logs"

    say("CustomResourceDefinitions from crds/")
    kubectl("apply", "--server-side", "--force-conflicts", "-f", str(REPO / "crds"), capture=False)
    kubectl("wait", "--for=condition=Established", "crd/inferencedeployments.infercycle.io")

    say(f"Fleet simulator on :{SIM_PORT} (10 simulated seconds per second), scraped by Prometheus")
    processes = []
    sim = None
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{SIM_PORT}/readyz", timeout=1):
            print("simulator already running")
    except OSError:
        sim = start(
            "fleetsim",
            [
                sys.executable,
                "-m",
                "infercycle_sim.fleetsim",
                "--kubeconfig",
                KUBECONFIG,
                "--port",
                str(SIM_PORT),
                "--speed",
                "10",
            ],
            logs / "fleetsim-demo.log",
        )
        processes.append(sim)
    targets.mkdir(parents=True, exist_ok=True)
    (targets / "fleetsim.json").write_text(
        json.dumps([{"targets": [f"127.0.0.1:{SIM_PORT}"], "labels": {"source": "fleetsim"}}])
    )

    say(f"InferenceDeployment {NAMESPACE}/{NAME}: 8 replicas, policy windows compressed to seconds")
    from infercycle_sim.fleets import deployment_manifest  # noqa: PLC0415

    run(
        "kubectl",
        f"--kubeconfig={KUBECONFIG}",
        "apply",
        "-f",
        "-",
        stdin=kubectl("create", "namespace", NAMESPACE, "--dry-run=client", "-o", "json"),
    )
    kubectl(
        "apply",
        "-f",
        "-",
        stdin=json.dumps(deployment_manifest(NAME, NAMESPACE, replicas=8, server=args.server)),
        capture=False,
    )

    say("The operator (infercycle run)")
    operator_log = logs / "operator-demo.log"
    operator = start(
        "operator",
        [
            sys.executable,
            "-m",
            "infercycle.cli",
            "run",
            "--namespace",
            NAMESPACE,
            "--prometheus-url",
            prometheus,
            "--cycle-interval",
            CYCLE_INTERVAL,
            "--log-format",
            "text",
        ],
        operator_log,
    )
    processes.append(operator)
    try:
        pods = wait("8 ready pods", lambda: len(p := ready_pods()) == 8 and p, timeout=180)
        print(kubectl("get", "infd,statefulset,svc,pdb", "-n", NAMESPACE))
        victim = sorted(pods)[3]
        say(f"{victim} starts leaking host memory (~350 GiB/h on this compressed clock)")
        kubectl(
            "annotate",
            "pod",
            victim,
            "-n",
            NAMESPACE,
            "--overwrite",
            "sim.infercycle.io/scenario=leak",
            'sim.infercycle.io/params={"rate": 36000, "onset": 0}',
        )
        say("Waiting for the rules to hold for their windows (warm-up 10s, fit 60s, sustain 10s)")
        wait("the leak to be judged", lambda: status().get("degradedReplicas"), timeout=240)
        explain(prometheus)
        say("Recycle steps as the operator records them in status.operation")
        last = None
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            current = status()
            operation = current.get("operation")
            step = (operation["pod"], operation["step"]) if operation else None
            if step and step != last:
                print(f"  {time.strftime('%H:%M:%S')}  {step[0]}: {step[1]}")
                last = step
            done = [r for r in current.get("history") or [] if r["result"] != "DryRun"]
            if done:
                record = done[-1]
                print(
                    f"  {record['finishedAt']}  {record['pod']}: {record['result']} "
                    f"({'; '.join(record['reasons'])})"
                )
                break
            time.sleep(1)
        else:
            sys.exit(f"demo: no recycle within 300s; see {operator_log}")
        after = wait("8 ready pods again", lambda: len(p := ready_pods()) == 8 and p, timeout=120)
        changed = sorted(name for name in after if after[name] != pods.get(name))
        print(f"\n  pods with a new UID: {changed} (only the leaking one)")
        say("Events")
        print(
            kubectl(
                "get",
                "events",
                "-n",
                NAMESPACE,
                f"--field-selector=involvedObject.name={NAME}",
                "--sort-by=.lastTimestamp",
            )
        )
        say("Fleet after the recycle (infercycle explain)")
        time.sleep(4)
        explain(prometheus)
        if args.keep_running:
            say(f"Operator left running (log {operator_log}); hack/cluster down stops everything")
            processes.clear()
    finally:
        for process in processes:
            process.terminate()
    say("Done; the cluster stays up (`hack/cluster env` for KUBECONFIG, `hack/cluster down`).")
    return 0


ENV: dict[str, str] = {}
KUBECONFIG = ""

if __name__ == "__main__":
    sys.exit(main())
