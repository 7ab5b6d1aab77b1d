#!/usr/bin/env python3
"""The main job on a local default: a local control plane, Prometheus, three inference pods
and the operator. One pod leaks memory; watch it get recycled.

Where the machine can run containers, the pods are real: the stand-in inference server and the
recycle agent in the project's own image on the real kubelet node, sessions on a local volume,
the leak seen by the kubelet's cAdvisor, the container restarted in place by the kubelet. Where
it cannot, one line says why and the demo runs eight simulated pods on KWOK nodes instead.

    make demo            (or: .venv/bin/python hack/demo.py [--keep-running] [--kwok])
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


def wait_established(*crds: str, timeout: float = 60.0) -> None:
    """Wait for each CRD's ``Established`` condition (``kubectl wait`` fails on a CRD that has
    no conditions yet, as one created a moment ago)."""
    query = '{.status.conditions[?(@.type=="Established")].status}'
    deadline = time.monotonic() + timeout
    for crd in crds:
        while (
            run(
                "kubectl",
                f"--kubeconfig={KUBECONFIG}",
                "get",
                crd,
                "-o",
                f"jsonpath={query}",
                check=False,
                capture=True,
            ).strip()
            != "True"
        ):
            if time.monotonic() > deadline:
                sys.exit(f"demo: {crd} was not established within {timeout:.0f}s")
            time.sleep(0.5)


def show_progress(
    current: dict[str, Any], last: tuple[str, str] | None, label: str = ""
) -> tuple[tuple[str, str] | None, bool]:
    """Print the recycle's step when it changes, and its record once it is done; the step
    shown last, and whether the recycle is done."""
    operation = current.get("operation")
    step = (operation["pod"], operation["step"]) if operation else None
    if step and step != last:
        print(f"  {time.strftime('%H:%M:%S')}  {label}{step[0]}: {step[1]}")
        last = step
    done = [r for r in current.get("history") or [] if r["result"] != "DryRun"]
    if done:
        record = done[-1]
        print(
            f"  {record['finishedAt']}  {record['pod']}: {record['result']} "
            f"({'; '.join(record['reasons'])})"
        )
    return last, bool(done)


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
    parser.add_argument("--kwok", action="store_true", help="simulated pods even on a real node")
    args = parser.parse_args()
    global ENV, KUBECONFIG  # noqa: PLW0603 - set once, read by the helpers above
    ENV = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    ENV["PYTHONPATH"] = os.pathsep.join([str(REPO / "operator"), str(REPO / "sim")])

    say("Local control plane (etcd, apiserver, controller-manager, scheduler, KWOK) + Prometheus")
    run(str(REPO / "hack" / "cluster"), "build")
    run(
        str(REPO / "hack" / "cluster"), "up", "--real-node=off" if args.kwok else "--real-node=auto"
    )
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
    wait_established("crd/inferencedeployments.infercycle.io", "crd/recyclepolicies.infercycle.io")

    if values.get("INFERCYCLE_REAL_NODE"):
        return real_node_demo(values, prometheus, logs, keep_running=args.keep_running)
    reason = values.get("INFERCYCLE_REAL_NODE_OFF_REASON", "").strip("'") or "turned off"
    print(f"real node: off ({reason}); the demo runs simulated pods on KWOK nodes instead")

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
            last, finished = show_progress(current, last)
            if finished:
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


POD_COLUMNS = "{:<10} {:<7} {:<12} {:<9} {:<15} {:<16} {}"


def pod_rows(selector: str) -> list[str]:
    """One kubectl-get-style line per pod: ready containers, phase, restarts, IP, node, UID."""
    pods = json.loads(kubectl("get", "pods", "-n", NAMESPACE, "-l", selector, "-o", "json"))
    rows = []
    for pod in sorted(pods["items"], key=lambda p: p["metadata"]["name"]):
        statuses = pod["status"].get("containerStatuses") or []
        ready = f"{sum(1 for c in statuses if c.get('ready'))}/{len(pod['spec']['containers'])}"
        phase = (
            "Terminating" if pod["metadata"].get("deletionTimestamp") else pod["status"]["phase"]
        )
        restarts = sum(int(c.get("restartCount") or 0) for c in statuses)
        rows.append(
            POD_COLUMNS.format(
                pod["metadata"]["name"],
                ready,
                phase,
                restarts,
                pod["status"].get("podIP") or "-",
                pod["spec"].get("nodeName") or "-",
                pod["metadata"]["uid"][:8],
            )
        )
    return rows


def real_node_demo(
    values: dict[str, str], prometheus: str, logs: Path, *, keep_running: bool
) -> int:
    """Three real pods on the kubelet node; the leaking one is restarted in place."""
    from infercycle.api.defaults import DEFAULT_RULES  # noqa: PLC0415

    sys.path.insert(0, str(REPO))
    from localcluster import workload  # noqa: PLC0415

    image = values["INFERCYCLE_REAL_NODE_IMAGE"]
    standin = values["INFERCYCLE_REAL_NODE_STANDIN_IMAGE"]
    node = values["INFERCYCLE_REAL_NODE"]
    victim = f"{NAME}-1"
    say(f"Real node {node}: kubelet + containerd, pods run the image {image} built here")
    run(
        "kubectl",
        f"--kubeconfig={KUBECONFIG}",
        "apply",
        "-f",
        "-",
        stdin=kubectl("create", "namespace", NAMESPACE, "--dry-run=client", "-o", "json"),
    )
    manifest = workload.deployment(
        NAME,
        NAMESPACE,
        standin,
        strategy="InPlace",
        replicas=3,
        leaking_pod=victim,
        other_rules=[rule.name for rule in DEFAULT_RULES],
    )
    say(f"InferenceDeployment {NAMESPACE}/{NAME}: 3 stand-in servers, {victim} leaks ~7 GiB/h")
    kubectl("apply", "-f", "-", stdin=json.dumps(manifest), capture=False)
    operator_log = logs / "operator-demo.log"
    say("The operator (infercycle run) on the host, agents as sidecars in the pods")
    operator = start(
        "operator",
        [
            sys.executable, "-m", "infercycle.cli", "run", "--namespace", NAMESPACE,
            "--prometheus-url", prometheus, "--cycle-interval", "2s", "--log-format", "text",
            "--agent-image", image,
        ],
        operator_log,
    )  # fmt: skip
    selector = f"infercycle.io/deployment={NAME}"
    try:
        wait("3 ready pods", lambda: len(p := ready_pods()) == 3 and p, timeout=240)
        ip = json.loads(kubectl("get", "pod", victim, "-n", NAMESPACE, "-o", "json"))["status"][
            "podIP"
        ]
        for index in range(5):
            request = urllib.request.Request(
                f"http://{ip}:{workload.SERVER_PORT}/v1/completions",
                data=json.dumps({"session_id": f"chat-{index}", "prompt": "hello"}).encode(),
                headers={"Content-Type": "application/json"},
            )
            urllib.request.urlopen(request, timeout=10).close()
        print(f"  5 chat sessions opened on {victim}")
        say("Pods, live (NAME READY STATUS RESTARTS IP NODE UID)")
        print("  " + POD_COLUMNS.format("NAME", "READY", "STATUS", "RESTARTS", "IP", "NODE", "UID"))
        shown: list[str] = []
        explained = False
        last_step = None
        deadline = time.monotonic() + 420
        while time.monotonic() < deadline:
            rows = pod_rows(selector)
            for row in rows:
                if row not in shown:
                    print(f"  {row}")
            shown = rows
            current = status()
            if current.get("degradedReplicas") and not explained:
                say("The leak is judged (infercycle explain)")
                explain(prometheus)
                explained = True
            last_step, finished = show_progress(current, last_step, "recycle ")
            if finished:
                break
            time.sleep(1)
        else:
            sys.exit(f"demo: no recycle within 420s; see {operator_log}")
        wait("3 ready pods again", lambda: len(p := ready_pods()) == 3 and p, timeout=120)
        for row in pod_rows(selector):
            print(f"  {row}")
        sessions = json.loads(
            urllib.request.urlopen(
                f"http://{ip}:{workload.SERVER_PORT}/sessions", timeout=10
            ).read()
        )["sessions"]
        print(f"\n  {victim}: same pod, server container restarted; {len(sessions)} sessions back")
        say("Events")
        print(
            kubectl(
                "get", "events", "-n", NAMESPACE,
                f"--field-selector=involvedObject.name={NAME}", "--sort-by=.lastTimestamp",
            )
        )  # fmt: skip
        say("Fleet after the recycle (infercycle explain)")
        time.sleep(4)
        explain(prometheus)
        if keep_running:
            say(f"Operator left running (log {operator_log}); hack/cluster down stops everything")
            return 0
    finally:
        if not keep_running:
            operator.terminate()
    say("Done; the cluster stays up (`hack/cluster env` for KUBECONFIG, `hack/cluster down`).")
    return 0


ENV: dict[str, str] = {}
KUBECONFIG = ""

if __name__ == "__main__":
    sys.exit(main())
