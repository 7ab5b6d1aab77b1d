"""The fault-injection suite, and its report.

    python benchmarks/faults.py [--write docs/reliability.md] [--seeds 40] [--kills 12]
                                [--cluster]

Each fault class drives real parts of the operator (the executor, the fleet cycle, the
Prometheus reader, the agent client, the agent process) and counts, for every run: pods
restarted twice, actions beyond the guards, pods left drained, sessions lost. Any of those
above 0 makes the command exit 1. ``--cluster`` adds the API server and etcd restarts on the
local cluster (hold /tmp/infercycle-cluster.lock around the command); without it the report says
that class was not run and how to run it. ``make faults`` runs everything and writes the report.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import re
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.faults import agent, prometheus, recycle  # noqa: E402
from tests.faults.outcome import FaultResult  # noqa: E402

CLUSTER_COMMAND = (
    "flock /tmp/infercycle-cluster.lock .venv/bin/python benchmarks/faults.py --cluster"
    " --write docs/reliability.md"
)

WHAT = {
    "kill": (
        "The executor walks whole recycles of one pod against the in-memory API server "
        "(`tests/unit/cycle/fakes.py`: 409 on a stale resourceVersion, 429 on a refused eviction)"
        " in seven scenarios: InPlace; Recreate; InPlace whose agent cannot restart (escalation "
        "to an eviction); InPlace whose restart call fails after the server restarted, the pod "
        "showing the restart at once, or only at the kubelet's next pass; InPlace whose "
        "checkpoint fails; Recreate whose evictions the PDB refuses for four cycles. For "
        "each, the operator is killed at every port call in turn (every Kubernetes read and "
        "write and every agent call), once before the call reaches the server and once after "
        "the server acted but before the answer arrived; a fresh executor, knowing only what "
        "the API server holds, carries on. Guards are checked at every call: pods out of "
        "service at once (not Ready, drained or absent) at most maxUnavailable (1), one pod "
        "disrupted per recycle, each pod restarted or evicted at most once, every recycle "
        "finished, no pod drained at the end."
    ),
    "race": (
        "Two replicas share one API server. In the same cycle each, sure from its watch cache "
        "that no recycle is in flight, condemns a different pod; then both keep cycling. "
        "Their port calls are let through one at a time in an order drawn from a seed (one "
        "run per seed and scenario, the seven scenarios above), with the version-checked writes "
        "of the real executor. Checked as above: never two pods out of service, no pod "
        "restarted twice, one recycle in flight."
    ),
    "prometheus": (
        "The fleet cycle (`FleetController` with the real `PrometheusReader`, query timeout 1 s) "
        "against Prometheus on a real socket that refuses connections, is slower than the "
        "timeout, hangs up, or answers a range vector, a scalar, a string, HTML, truncated "
        "JSON, duplicate series for a pod, non-numeric values, an error status or HTTP 503; "
        "three cycles each. Checked: MetricsAvailable is False with the reason, no drain, no "
        "eviction, no operation or history written."
    ),
    "agent-wire": (
        "A whole InPlace recycle whose agent (the real `AgentClient` behind the executor, "
        "timeout 1 s, over a real socket) hangs, sends headers and hangs, floods 64 MiB "
        "declaring 1 GiB, floods chunked, answers JSON of the wrong shape, or resets "
        "mid-answer, on both the checkpoint and the restart. Checked: every call ends within "
        "its timeout (plus 1 s) with a typed error, the executor reports it (a CheckpointFailed "
        "Event with the error) and falls back to one eviction; the guards as above."
    ),
    "agent-process": (
        "The real agent process and the stand-in server under its supervisor: five sessions "
        "checkpointed (acknowledged), the table replaced by 2,000 sessions of 2 KB, a "
        "checkpoint started and the agent killed with SIGKILL 0 to 100 ms into it; a new agent "
        "restarts the server, which restores. Sessions lost counts sessions of the last "
        "acknowledged checkpoint that did not come back, or any mix that is no complete "
        "checkpoint. Then the session volume full (a 256 KiB tmpfs in a private mount "
        "namespace): the too-big checkpoint is refused (HTTP 507), the previous one restored."
    ),
    "cluster": (
        "On the local cluster (real etcd and kube-apiserver): a recycle started by the operator "
        "process, then kube-apiserver restarted, and in another run etcd restarted, while the "
        "recycle is in flight. Checked: the recycle finishes once, the pod restarted once, no "
        "pod left drained."
    ),
}


LOCAL_URL = re.compile(r"http://127\.0\.0\.1:\d+")
FOUND = (
    "- Two replicas: a recycle was started from the watch cache's view with a version-checked "
    "write of a fresh read, but that read was not checked for an operation in flight, so the "
    "second replica replaced the first one's operation and drained a second pod (10 of 25 "
    "seeded races had two pods out of service at once). `Executor.start` now starts only when "
    "the fresh status has no operation and the history the cache showed.",
    "- A restart call that failed after the agent had restarted the server (a reset or a "
    "timeout on the answer) was escalated to an eviction: the pod restarted twice (116 of the "
    "129 runs of that scenario in the first class). The machine escalated only when the pod "
    "did not show the restart, which still failed when the kubelet counted the restart a "
    'moment later (the scenario "restart answer lost, counted late"). Now a call that may '
    "have reached the agent and got no answer is never escalated at once: the recycle waits "
    "for the restart to show, and escalates only when none shows within half of "
    "`readyTimeout`; a refused call escalates at once.",
    "- An agent answering JSON of the wrong shape put the whole validation error (several "
    "lines) into the CheckpointFailed Event's message; it is now the first problem and how "
    "many more, and an agent's own error text is cut to 300 characters.",
)


def row(result: FaultResult) -> str:
    def cell(count: int | None) -> str:
        return "-" if count is None else str(count)

    counts = (result.restarted_twice, result.beyond_guards, result.left_drained)
    cells = [str(result.runs), str(result.faults), *map(cell, counts)]
    name = f"{result.name} (failed to run; see below)" if result.failed else result.name
    return f"| {name} | " + " | ".join([*cells, cell(result.sessions_lost)]) + " |"


def report(results: list[tuple[str, FaultResult]], seconds: float, cluster_run: bool) -> str:
    lines = [
        "# Reliability: the fault-injection report",
        "",
        "Generated by `make faults` (`python benchmarks/faults.py --write docs/reliability.md`)"
        f" in {seconds:.0f} s. The fast part of each class runs in the unit tests"
        " (`tests/unit/faults`). The last four columns must be 0; the command exits 1"
        " otherwise. A dash: the fault cannot cause that harm there (no session is touched by"
        " a Prometheus fault, say).",
        "",
        "| fault class | runs | faults injected | pods restarted twice"
        " | actions beyond the guards | pods left drained | sessions lost |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    lines += [row(result) for _, result in results]
    if not cluster_run:
        lines.append("| API server and etcd restarted mid-recycle | not run here | | | | | |")
    lines += ["", "## What each class does, and what it saw", ""]
    for key, result in results:
        lines += [f"### {result.name}", "", WHAT[key], ""]
        for finding in result.findings:
            first = LOCAL_URL.sub("http://127.0.0.1:PORT", finding.splitlines()[0])
            lines.append(f"- {first[:240]}")
        lines.append("")
    if not cluster_run:
        lines += [
            "### API server and etcd restarted mid-recycle",
            "",
            WHAT["cluster"],
            "",
            f"Not run for this report. To run it: `{CLUSTER_COMMAND}`.",
            "",
        ]
    lines += ["## Defects these faults found", "", *FOUND]
    return "\n".join(lines)


async def run_all(seeds: int, kills: int, cluster: bool) -> list[tuple[str, FaultResult]]:
    classes: list[tuple[str, Callable[[], Awaitable[FaultResult]]]] = [
        ("kill", recycle.kill_everywhere),
        ("race", lambda: recycle.race(seeds)),
        ("prometheus", prometheus.prometheus_faults),
        ("agent-wire", agent.misbehaving_agents),
        ("agent-process", lambda: agent.agent_process_faults(kills)),
    ]
    if cluster:
        from tests.faults import cluster as cluster_faults  # noqa: PLC0415 - needs the cluster

        classes.append(("cluster", cluster_faults.restarts_mid_recycle))
    results = []
    for key, run in classes:
        started = time.perf_counter()
        result = await run()
        print(
            f"{result.name}: {result.runs} runs, harmed {result.harmed()},"
            f" {time.perf_counter() - started:.0f} s",
            flush=True,
        )
        results.append((key, result))
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--write", type=Path, help="write the report here (else print it)")
    parser.add_argument("--seeds", type=int, default=40, help="racing runs per scenario")
    parser.add_argument("--kills", type=int, default=12, help="SIGKILLs mid-checkpoint")
    parser.add_argument("--cluster", action="store_true", help="also restart API server, etcd")
    args = parser.parse_args(argv)
    logging.getLogger("infercycle").setLevel(logging.ERROR)  # the faults' warnings are expected
    started = time.perf_counter()
    results = asyncio.run(run_all(args.seeds, args.kills, args.cluster))
    text = report(results, time.perf_counter() - started, args.cluster)
    if args.write:
        args.write.write_text(text + "\n")
        print(f"wrote {args.write}")
    else:
        print(text)
    harmed = sum(result.harmed() for _, result in results)
    return 1 if harmed or any(result.failed for _, result in results) else 0


if __name__ == "__main__":
    sys.exit(main())
