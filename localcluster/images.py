"""Container images for the real node, built here without a registry and cached.

- ``debian-python``: a Debian bookworm root filesystem made with debootstrap from Debian's own
  packages (python3, the interpreter the project's image runs), with pip installed from the
  wheels Debian ships, imported as an image. It stands in for ``python:3.11-slim-bookworm``.
- ``pause``: the pod sandbox image, built from ``data/pause`` (a few lines of Go).
- ``infercycle``: the project's own ``Dockerfile``, built with buildah (daemonless) with the
  base image passed as the ``BASE_IMAGE`` build argument; the image users run.
- ``standin``: the stand-in inference server of the tests and the demo, added on top of the
  project's image (``data/standin.Containerfile``), so the product image holds the product only.

Each is kept as an OCI archive under ``<cache>/images`` named after a hash of what it is built
from, so an unchanged input is never built twice; ``up`` imports the archives into containerd.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from localcluster import versions
from localcluster.build import find_go, run
from localcluster.data import DATA
from localcluster.errors import ClusterError, log
from localcluster.state import REPO

DEBIAN_SUITE = "bookworm"
DEBIAN_MIRROR = "http://deb.debian.org/debian"
DEBIAN_PACKAGES = ("python3", "python3-venv", "ca-certificates")
BASE_IMAGE = "localhost/infercycle/debian-python:bookworm"
PAUSE_IMAGE = "localhost/infercycle/pause:local"
INFERCYCLE_IMAGE = "localhost/infercycle/infercycle:local"
STANDIN_IMAGE = "localhost/infercycle/standin:local"
# The stand-in server is one module that needs only the project's image around it.
STANDIN_SOURCE = REPO / "sim" / "infercycle_sim" / "standin.py"
# What the image's build reads (the Dockerfile's .dockerignore admits these).
IMAGE_INPUTS = ("Dockerfile", ".dockerignore", "pyproject.toml", "README.md", "operator")
# Files of no use in an image: documentation, manuals, translations, package lists.
ROOTFS_PRUNE = (
    "var/cache/apt/archives",
    "var/lib/apt/lists",
    "usr/share/doc",
    "usr/share/man",
    "usr/share/info",
    "usr/share/locale",
)


@dataclass(frozen=True)
class Built:
    name: str
    image: str
    archive: Path
    seconds: float
    cached: bool


def images_dir() -> Path:
    return versions.cache_base() / "images"


def _buildah(*args: str) -> list[str]:
    root = images_dir() / "storage"
    # Run-time state belongs to one storage: another cache directory gets its own.
    runroot = Path("/run") / f"infercycle-buildah-{hashlib.sha256(bytes(root)).hexdigest()[:8]}"
    return [
        "buildah",
        f"--root={root}",
        f"--runroot={runroot}",
        "--storage-driver=overlay",
        *args,
    ]


def digest_of(paths: Iterable[Path], root: Path, extra: Sequence[str] = ()) -> str:
    """A short hash of files' relative names and contents (directories walked, caches skipped)."""
    sha = hashlib.sha256()
    for item in extra:
        sha.update(item.encode() + b"\0")
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files += [
                p
                for p in path.rglob("*")
                if p.is_file() and "__pycache__" not in p.parts and ".egg-info" not in str(p)
            ]
        elif path.is_file():
            files.append(path)
    for file in sorted(files):
        sha.update(str(file.relative_to(root)).encode() + b"\0")
        sha.update(file.read_bytes())
    return sha.hexdigest()[:16]


def _record(name: str, seconds: float, cached: bool) -> None:
    stamp = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    with open(images_dir() / "build-seconds.txt", "a") as fh:
        fh.write(f"{stamp} {name} {'cached' if cached else 'built'} {seconds:.1f}\n")


def _push(image: str, archive: Path) -> None:
    partial = archive.with_suffix(".partial")
    partial.unlink(missing_ok=True)
    run(_buildah("push", "--quiet", image, f"oci-archive:{partial}:{image}"), what="buildah push")
    partial.replace(archive)


def _has_image(image: str) -> bool:
    proc = subprocess.run(
        _buildah("inspect", "--type=image", image), capture_output=True, check=False
    )
    return proc.returncode == 0


def base_rootfs_key() -> str:
    return hashlib.sha256(
        " ".join([DEBIAN_SUITE, DEBIAN_MIRROR, *DEBIAN_PACKAGES, *ROOTFS_PRUNE]).encode()
    ).hexdigest()[:16]


def build_base() -> Built:
    """debootstrap a Debian root filesystem with Python, then commit it as an image."""
    started = time.monotonic()
    archive = images_dir() / f"debian-python-{base_rootfs_key()}.tar"
    if archive.is_file() and _has_image(BASE_IMAGE):
        return Built("debian-python", BASE_IMAGE, archive, time.monotonic() - started, True)
    if shutil.which("debootstrap") is None:
        raise ClusterError("debootstrap is not installed (apt-get install debootstrap)")
    work = Path(tempfile.mkdtemp(prefix="rootfs-", dir=images_dir()))
    rootfs = work / "rootfs"
    try:
        run(
            ["debootstrap", "--variant=minbase", f"--include={','.join(DEBIAN_PACKAGES)}",
             DEBIAN_SUITE, str(rootfs), DEBIAN_MIRROR],
            capture=True,
            what="debootstrap",
        )  # fmt: skip
        # Like the public python image: pip in /usr/local, not managed by apt.
        (rootfs / "usr/lib/python3.11/EXTERNALLY-MANAGED").unlink(missing_ok=True)
        wheels = sorted((rootfs / "usr/share/python-wheels").glob("pip-*.whl"))
        if not wheels:
            raise ClusterError("the Debian root filesystem has no pip wheel in python-wheels")
        pip = "/" + str(wheels[-1].relative_to(rootfs)) + "/pip"
        run(
            ["chroot", str(rootfs), "python3", pip, "install", "--no-index", "--quiet",
             "--find-links=/usr/share/python-wheels", "pip", "setuptools"],
            capture=True,
            what="pip install in the root filesystem",
        )  # fmt: skip
        for relative in ROOTFS_PRUNE:
            target = rootfs / relative
            if target.is_dir():
                for child in target.iterdir():
                    if child.is_dir() and not child.is_symlink():
                        shutil.rmtree(child)
                    else:
                        child.unlink()
        tarball = work / "rootfs.tar"
        run(["tar", "-C", str(rootfs), "-cf", str(tarball), "."], what="tar the root filesystem")
        container = run(_buildah("from", "scratch"), capture=True, what="buildah from").strip()
        try:
            run(_buildah("add", container, str(tarball), "/"), capture=True, what="buildah add")
            run(
                _buildah(
                    "config",
                    "--env=PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                    "--env=LANG=C.UTF-8",
                    "--cmd=python3",
                    container,
                ),
                what="buildah config",
            )
            run(_buildah("commit", "--quiet", container, BASE_IMAGE), capture=True, what="commit")
        finally:
            subprocess.run(_buildah("rm", container), capture_output=True, check=False)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    _push(BASE_IMAGE, archive)
    return Built("debian-python", BASE_IMAGE, archive, time.monotonic() - started, False)


def build_pause() -> Built:
    started = time.monotonic()
    source = DATA / "pause"
    archive = images_dir() / f"pause-{digest_of([source], DATA)}.tar"
    if archive.is_file():
        return Built("pause", PAUSE_IMAGE, archive, time.monotonic() - started, True)
    go = find_go()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp) / "pause"
        shutil.copytree(source, work)
        env = dict(os.environ, CGO_ENABLED="0", GOFLAGS="-buildvcs=false", GOTOOLCHAIN="local")
        run(
            [go, "build", "-trimpath", "-ldflags=-s -w", "-o", str(work / "pause-bin"), "."],
            cwd=work,
            env=env,
            what="go build pause",
        )
        container = run(_buildah("from", "scratch"), capture=True, what="buildah from").strip()
        try:
            run(_buildah("copy", container, str(work / "pause-bin"), "/pause"), capture=True)
            run(
                _buildah("config", '--entrypoint=["/pause"]', "--user=65535:65535", container),
                what="buildah config",
            )
            run(_buildah("commit", "--quiet", container, PAUSE_IMAGE), capture=True)
        finally:
            subprocess.run(_buildah("rm", container), capture_output=True, check=False)
    _push(PAUSE_IMAGE, archive)
    return Built("pause", PAUSE_IMAGE, archive, time.monotonic() - started, False)


def build_infercycle(base: Built) -> Built:
    """The project's Dockerfile, as users build it, on the local base image."""
    started = time.monotonic()
    key = digest_of([REPO / p for p in IMAGE_INPUTS], REPO, extra=[base.archive.name])
    archive = images_dir() / f"infercycle-{key}.tar"
    if archive.is_file():
        return Built("infercycle", INFERCYCLE_IMAGE, archive, time.monotonic() - started, True)
    # The build fetches wheels from the package index: the host's network, CA bundle and pip
    # settings serve the build's RUN steps and never end up in a layer.
    mounts = [
        f"--volume={p}:{p}:ro" for p in ("/etc/ssl/certs", "/etc/pip.conf") if Path(p).exists()
    ]
    run(
        _buildah(
            "bud",
            "--isolation=chroot",
            "--network=host",
            "--pull-never",
            # No layer cache: buildah keys a RUN step's cache without the content of its
            # --mount=type=bind,from=builder source, so a cached final stage would keep the
            # wheels of an older build. The archive's own key already skips unchanged sources.
            "--no-cache",
            *mounts,
            f"--build-arg=BASE_IMAGE={base.image}",
            f"--tag={INFERCYCLE_IMAGE}",
            f"--file={REPO / 'Dockerfile'}",
            str(REPO),
        ),
        capture=True,
        what="buildah bud (the project's Dockerfile)",
    )
    _push(INFERCYCLE_IMAGE, archive)
    return Built("infercycle", INFERCYCLE_IMAGE, archive, time.monotonic() - started, False)


def build_standin(product: Built) -> Built:
    started = time.monotonic()
    containerfile = DATA / "standin.Containerfile"
    key = digest_of([STANDIN_SOURCE, containerfile], REPO, extra=[product.archive.name])
    archive = images_dir() / f"standin-{key}.tar"
    if archive.is_file():
        return Built("standin", STANDIN_IMAGE, archive, time.monotonic() - started, True)
    if not STANDIN_SOURCE.is_file():
        raise ClusterError(f"the stand-in server {STANDIN_SOURCE} is missing")
    with tempfile.TemporaryDirectory() as context:
        shutil.copy(STANDIN_SOURCE, Path(context) / "standin.py")
        run(
            _buildah(
                "bud", "--isolation=chroot", "--pull-never", "--no-cache",
                f"--build-arg=BASE_IMAGE={product.image}", f"--tag={STANDIN_IMAGE}",
                f"--file={containerfile}", context,
            ),
            capture=True,
            what="buildah bud (the stand-in server)",
        )  # fmt: skip
    _push(STANDIN_IMAGE, archive)
    return Built("standin", STANDIN_IMAGE, archive, time.monotonic() - started, False)


def build_all() -> list[Built]:
    """Every image the real node runs, built or reused; old archives are removed."""
    images_dir().mkdir(parents=True, exist_ok=True)
    base = build_base()
    product = build_infercycle(base)
    built = [base, build_pause(), product, build_standin(product)]
    keep = {b.archive for b in built}
    for stale in images_dir().glob("*.tar"):
        if stale not in keep:
            stale.unlink()
    # Images of earlier builds lost their tags to the new ones; their layers go with them.
    subprocess.run(_buildah("rmi", "--prune"), capture_output=True, check=False)
    for item in built:
        _record(item.name, item.seconds, item.cached)
        size = item.archive.stat().st_size / 2**20
        state = "cached" if item.cached else f"built in {item.seconds:.0f}s"
        log(f"image {item.image}: {state}, {size:.0f} MiB compressed ({item.archive.name})")
    return built


def archives() -> list[Path]:
    """The archives ``up`` imports, pause first; empty when the images were never built."""
    order = ("pause-", "infercycle-", "standin-")
    found = []
    for prefix in order:
        matches = sorted(images_dir().glob(f"{prefix}*.tar"), key=lambda p: p.stat().st_mtime)
        if matches:
            found.append(matches[-1])
    return found
