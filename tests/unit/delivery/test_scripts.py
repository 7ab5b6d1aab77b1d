"""The delivery scripts behave: they say what is missing instead of failing obscurely."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from tests.unit.delivery.support import REPO


def _run(command: list[str], path: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": path}
    return subprocess.run(
        command, capture_output=True, text=True, env=env, cwd=REPO, timeout=60, check=False
    )


def _path_without_docker(folder: Path) -> str:
    """A PATH holding only what the script needs before it looks for Docker."""
    for tool in ("bash", "dirname"):
        found = shutil.which(tool)
        assert found is not None
        (folder / tool).symlink_to(found)
    return str(folder)


def test_kind_e2e_fails_clearly_without_docker(tmp_path: Path) -> None:
    path = _path_without_docker(tmp_path)
    result = _run([f"{path}/bash", str(REPO / "hack" / "kind-e2e")], path=path)
    assert result.returncode != 0
    assert "Docker is required" in result.stderr
    assert "not on PATH" in result.stderr


def test_kind_e2e_fails_clearly_when_the_docker_engine_does_not_answer(tmp_path: Path) -> None:
    path = _path_without_docker(tmp_path)
    fake = tmp_path / "docker"
    fake.write_text(f"#!{path}/bash\necho 'Cannot connect to the Docker daemon' >&2\nexit 1\n")
    fake.chmod(0o755)
    result = _run([f"{path}/bash", str(REPO / "hack" / "kind-e2e")], path=path)
    assert result.returncode != 0
    assert "Docker engine does not answer" in result.stderr


def test_tools_script_names_its_tools() -> None:
    result = _run(["bash", str(REPO / "hack" / "tools.sh")], path=os.environ["PATH"])
    assert result.returncode != 0
    assert "usage: hack/tools.sh helm|kind|checkov|promtool|kubectl" in result.stderr


def test_scripts_are_executable() -> None:
    for name in ("tools.sh", "check-delivery", "kind-e2e", "sync-manifests", "gen-config-docs"):
        assert os.access(REPO / "hack" / name, os.X_OK), f"hack/{name} is not executable"
