"""Building the cluster's binaries from their Go modules, or reusing the cached ones.

Each builder is idempotent: a binary in the cache that answers ``--version`` is kept. Builds run
under one lock per cache directory, so two checkouts never build the same thing at once.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

from localcluster import versions
from localcluster.errors import ClusterError, log

KUBE_CONTROL_PLANE = ("kube-apiserver", "kube-controller-manager", "kube-scheduler")
KUBE_NODE = ("kubelet", "kube-proxy")


def run(
    cmd: Sequence[str],
    *,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    capture: bool = False,
    what: str = "",
) -> str:
    """Run a command; raise ClusterError naming `what` when it fails."""
    log("$ " + " ".join(cmd))
    try:
        proc = subprocess.run(
            list(cmd),
            cwd=cwd,
            env=env,
            check=False,
            text=True,
            stdout=subprocess.PIPE if capture else None,
            stderr=subprocess.PIPE if capture else None,
        )
    except FileNotFoundError as exc:
        raise ClusterError(f"{what or cmd[0]}: command not found: {cmd[0]}") from exc
    if proc.returncode != 0:
        detail = (proc.stderr or "").strip() if capture else "(see output above)"
        raise ClusterError(f"{what or cmd[0]} failed (exit {proc.returncode}): {detail}")
    return proc.stdout or ""


def find_go() -> str:
    go = shutil.which("go") or (
        "/usr/local/go/bin/go" if Path("/usr/local/go/bin/go").exists() else None
    )
    if not go:
        raise ClusterError(
            "Go is required to build etcd, Kubernetes and KWOK but `go` was not found "
            "(install Go >= 1.25 and put it on PATH)"
        )
    return go


def go_env(go: str) -> dict[str, str]:
    env = dict(os.environ)
    env["CGO_ENABLED"] = "0"
    env["GOFLAGS"] = "-buildvcs=false -mod=mod"
    env.setdefault("GOTOOLCHAIN", "local")
    # Keep go from writing to a read-only or missing HOME cache.
    for var in ("GOPATH", "GOMODCACHE", "GOCACHE", "GOPROXY"):
        if var not in env:
            value = subprocess.run(
                [go, "env", var], text=True, capture_output=True, check=False
            ).stdout.strip()
            if value:
                env[var] = value
    return env


def binary_works(path: Path, args: Sequence[str] = ("--version",)) -> str | None:
    """The binary's version output, or None when it is missing or does not run."""
    if not path.is_file() or not os.access(path, os.X_OK):
        return None
    try:
        proc = subprocess.run(
            [str(path), *args], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if proc.returncode != 0:
        return None
    return (proc.stdout + proc.stderr).strip()


def check_proxy(go: str, env: dict[str, str], module: str, version: str) -> None:
    """Fail early with a clear message when the module proxy cannot serve a module."""
    proc = subprocess.run(
        [go, "mod", "download", "-json", f"{module}@{version}"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        cwd=tempfile.gettempdir(),
    )
    if proc.returncode != 0:
        try:
            detail = str(json.loads(proc.stdout).get("Error") or "").strip()
        except ValueError:
            detail = ""
        detail = detail or " | ".join((proc.stdout + proc.stderr).strip().splitlines()[-3:])
        raise ClusterError(
            f"cannot download {module}@{version} through the Go module proxy "
            f"(GOPROXY={env.get('GOPROXY', '?')}; is the network or proxy reachable?): {detail}"
        )


def module_info(go: str, env: dict[str, str], module: str, version: str) -> dict[str, object]:
    out = run(
        [go, "mod", "download", "-json", f"{module}@{version}"],
        env=env,
        capture=True,
        cwd=Path(tempfile.gettempdir()),
        what=f"go mod download {module}@{version}",
    )
    info = json.loads(out)
    if info.get("Error"):
        raise ClusterError(f"go mod download {module}@{version}: {info['Error']}")
    return dict(info)


def staging_replaces(gomod_text: str, staging_version: str) -> list[str]:
    """Turn k8s.io/kubernetes' `k8s.io/x => ./staging/...` replaces into published versions."""
    lines = []
    for match in re.finditer(
        r"^\s*(k8s\.io/[\w.\-/]+)\s*=>\s*\./staging/\S+\s*$", gomod_text, re.M
    ):
        lines.append(f"replace {match.group(1)} => {match.group(1)} {staging_version}")
    if not lines:
        raise ClusterError("no staging replace directives found in k8s.io/kubernetes go.mod")
    return lines


def go_directive(gomod_text: str) -> str:
    match = re.search(r"^go\s+(\S+)\s*$", gomod_text, re.M)
    return match.group(1) if match else "1.25.0"


def kube_wrapper_gomod(gomod_text: str, kubernetes: str) -> str:
    """A module that requires k8s.io/kubernetes with its staging modules at published versions.

    k8s.io/kubernetes replaces its staging modules with local directories, which a dependent
    module cannot use; the wrapper pins them to the versions released with it instead.
    """
    go = go_directive(gomod_text)
    staging = versions.Versions(kubernetes=kubernetes, etcd="", kwok="").staging_version
    lines = [
        "module infercycle.local/kube-build",
        "",
        f"go {go}",
        "",
        "godebug default=go" + ".".join(go.split(".")[:2]),
        "",
        f"require k8s.io/kubernetes {kubernetes}",
        "",
        *staging_replaces(gomod_text, staging),
        "",
    ]
    return "\n".join(lines)


def kube_ldflags(kubernetes: str, commit: str, build_date: str) -> str:
    """Linker flags that stamp the version ``--version`` and the API server report."""
    major, minor = kubernetes.lstrip("v").split(".")[:2]
    stamp = {
        "gitVersion": kubernetes,
        "gitMajor": major,
        "gitMinor": minor,
        "gitCommit": commit,
        "gitTreeState": "clean",
        "buildDate": build_date,
    }
    flags = ["-s", "-w"]
    for pkg in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
        flags += [f"-X {pkg}.{key}={value}" for key, value in stamp.items()]
    return " ".join(flags)


@contextlib.contextmanager
def build_lock(root: Path) -> Iterator[None]:
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".build.lock", "w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log("another build holds the lock; waiting for it")
            fcntl.flock(fh, fcntl.LOCK_EX)
        yield


def build_etcd(go: str, env: dict[str, str], pins: versions.Versions, root: Path) -> None:
    target = root / "bin" / "etcd"
    if binary_works(target):
        log(f"etcd {pins.etcd}: cached")
        return
    check_proxy(go, env, "go.etcd.io/etcd/server/v3", pins.etcd)
    src = root / "src" / "etcd"
    shutil.rmtree(src, ignore_errors=True)
    src.mkdir(parents=True)
    run([go, "mod", "init", "infercycle.local/etcd-build"], cwd=src, env=env, what="go mod init")
    # etcd's own go.mod carries replace directives, so `go install pkg@v` refuses it; a
    # wrapper module that depends on it as a tool builds it with its published dependencies.
    run(
        [go, "get", "-tool", f"go.etcd.io/etcd/server/v3@{pins.etcd}"],
        cwd=src,
        env=env,
        what="go get etcd",
    )
    staging = root / "bin" / ".etcd.tmp"
    run(
        [go, "build", "-trimpath", "-ldflags", "-s -w", "-o", str(staging),
         "go.etcd.io/etcd/server/v3"],
        cwd=src,
        env=env,
        what="go build etcd",
    )  # fmt: skip
    staging.replace(target)
    if not binary_works(target):
        raise ClusterError(f"built {target} but `etcd --version` fails")


def build_kube(
    go: str,
    env: dict[str, str],
    pins: versions.Versions,
    root: Path,
    names: Sequence[str] = KUBE_CONTROL_PLANE,
) -> None:
    """Build Kubernetes commands (``cmd/<name>``) from k8s.io/kubernetes at the pinned version."""
    targets = [root / "bin" / name for name in names]
    if all(binary_works(t) for t in targets):
        log(f"kubernetes {pins.kubernetes} ({', '.join(names)}): cached")
        return
    check_proxy(go, env, "k8s.io/kubernetes", pins.kubernetes)
    info = module_info(go, env, "k8s.io/kubernetes", pins.kubernetes)
    gomod_text = Path(str(info["GoMod"])).read_text()
    origin = info.get("Origin")
    commit = "0" * 40
    if isinstance(origin, dict) and re.fullmatch(r"[0-9a-f]{40}", str(origin.get("Hash", ""))):
        commit = str(origin["Hash"])

    src = root / "src" / "kubernetes"
    shutil.rmtree(src, ignore_errors=True)
    src.mkdir(parents=True)
    (src / "go.mod").write_text(kube_wrapper_gomod(gomod_text, pins.kubernetes))
    packages = [f"k8s.io/kubernetes/cmd/{name}" for name in names]
    run(
        [go, "get", "-tool", *(f"{p}@{pins.kubernetes}" for p in packages)],
        cwd=src,
        env=env,
        what="go get kubernetes commands",
    )
    build_date = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    staging_dir = root / "bin" / ".kube.tmp"
    shutil.rmtree(staging_dir, ignore_errors=True)
    staging_dir.mkdir(parents=True)
    benv = dict(env)
    benv["GOFLAGS"] = benv["GOFLAGS"] + " -p=2"
    # One invocation for all commands so shared packages are compiled once.
    run(
        [go, "build", "-trimpath", "-ldflags", kube_ldflags(pins.kubernetes, commit, build_date),
         "-o", str(staging_dir) + "/", *packages],
        cwd=src,
        env=benv,
        what="go build kubernetes",
    )  # fmt: skip
    for name in names:
        (staging_dir / name).replace(root / "bin" / name)
    shutil.rmtree(staging_dir, ignore_errors=True)
    for t in targets:
        out = binary_works(t)
        if not out or pins.kubernetes not in out:
            raise ClusterError(
                f"built {t} but `--version` does not report {pins.kubernetes}: {out}"
            )


def build_kwok(go: str, env: dict[str, str], pins: versions.Versions, root: Path) -> None:
    target = root / "bin" / "kwok"
    if binary_works(target):
        log(f"kwok {pins.kwok}: cached")
        return
    check_proxy(go, env, "sigs.k8s.io/kwok", pins.kwok)
    staging = root / "bin" / ".kwok.tmp"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    ienv = dict(env)
    ienv["GOBIN"] = str(staging)
    ienv["GOFLAGS"] = "-buildvcs=false"
    run(
        [go, "install", "-trimpath", "-ldflags", "-s -w",
         f"sigs.k8s.io/kwok/cmd/kwok@{pins.kwok}"],
        cwd=Path(tempfile.gettempdir()),
        env=ienv,
        what="go install kwok",
    )  # fmt: skip
    (staging / "kwok").replace(target)
    shutil.rmtree(staging, ignore_errors=True)
    if not binary_works(target):
        raise ClusterError(f"built {target} but `kwok --version` fails")


PROMETHEUS_MODULE = "github.com/prometheus/prometheus"
# Only the service discovery the cluster uses (file, http and Kubernetes): the cloud providers'
# SDKs would triple the build time.
PROMETHEUS_TAGS = "remove_all_sd,enable_kubernetes_sd"


def prometheus_ldflags(release: str, build_date: str) -> str:
    stamp = {
        "Version": release.lstrip("v"),
        "Revision": "release",
        "Branch": "HEAD",
        "BuildUser": "infercycle",
        "BuildDate": build_date,
    }
    flags = ["-s", "-w"]
    flags += [f"-X github.com/prometheus/common/version.{k}={v}" for k, v in stamp.items()]
    return " ".join(flags)


def build_prometheus(go: str, env: dict[str, str]) -> Path:
    """Prometheus and promtool 3.x from their Go module (pinned), into the tool cache."""
    release = versions.PROMETHEUS_VERSION
    target = versions.prometheus_dir()
    names = ("prometheus", "promtool")
    outputs = [binary_works(target / n, ("--version",)) for n in names]
    if all(out and release.lstrip("v") in out for out in outputs):
        log(f"prometheus {release}: cached")
        return target
    module_version = versions.prometheus_module_version(release)
    check_proxy(go, env, PROMETHEUS_MODULE, module_version)
    staging = target.parent / f".prometheus-{release}.tmp"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    ienv = dict(env)
    ienv["GOBIN"] = str(staging)
    ienv["GOFLAGS"] = "-buildvcs=false"
    build_date = dt.datetime.now(dt.UTC).strftime("%Y%m%d-%H:%M:%S")
    run(
        [go, "install", "-trimpath", f"-tags={PROMETHEUS_TAGS}",
         f"-ldflags={prometheus_ldflags(release, build_date)}",
         *(f"{PROMETHEUS_MODULE}/cmd/{n}@{module_version}" for n in names)],
        cwd=Path(tempfile.gettempdir()),
        env=ienv,
        what=f"go install prometheus {release}",
    )  # fmt: skip
    target.mkdir(parents=True, exist_ok=True)
    for name in names:
        (staging / name).replace(target / name)
    shutil.rmtree(staging, ignore_errors=True)
    for name in names:
        out = binary_works(target / name)
        if not out or release.lstrip("v") not in out:
            raise ClusterError(f"built {target / name} but `--version` does not report {release}")
    return target


def prometheus_binary(name: str = "prometheus") -> Path:
    """The pinned build of ``prometheus`` or ``promtool``; ``hack/cluster build`` makes it."""
    return versions.prometheus_dir() / name


def build_all() -> None:
    """``hack/cluster build``: every binary the cluster runs, built or reused.

    The real node's kubelet and kube-proxy come from the same k8s.io/kubernetes module as the
    control plane, built after it so they reuse its compiled packages.
    """
    pins = versions.pinned()
    root = versions.cache_root()
    names = ["etcd", *KUBE_CONTROL_PLANE, "kwok", *KUBE_NODE]
    if all(binary_works(root / "bin" / n) for n in names) and all(
        binary_works(prometheus_binary(n)) for n in ("prometheus", "promtool")
    ):
        log(f"binaries cached in {root / 'bin'} and {versions.prometheus_dir()}")
        return
    go = find_go()
    env = go_env(go)
    (root / "bin").mkdir(parents=True, exist_ok=True)
    with build_lock(root):
        for step, builder in (
            ("kwok", lambda: build_kwok(go, env, pins, root)),
            ("etcd", lambda: build_etcd(go, env, pins, root)),
            ("control plane", lambda: build_kube(go, env, pins, root)),
            ("kubelet and kube-proxy", lambda: build_kube(go, env, pins, root, KUBE_NODE)),
            ("prometheus", lambda: build_prometheus(go, env)),
        ):
            started = dt.datetime.now(dt.UTC)
            builder()
            elapsed = (dt.datetime.now(dt.UTC) - started).total_seconds()
            with open(root / "build-seconds.txt", "a") as fh:
                stamp = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
                fh.write(f"{stamp} {step} {elapsed:.0f}\n")
            log(f"{step}: {elapsed:.0f}s")
    log(f"binaries in {root / 'bin'}")
    shutil.rmtree(root / "src", ignore_errors=True)
