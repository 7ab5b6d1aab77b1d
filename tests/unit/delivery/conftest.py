"""Fixtures of the delivery tests: external tools and the rendered installs."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.unit.delivery.support import (
    MANIFESTS,
    NAMESPACED_OVERLAY,
    REPO,
    VALUES_FILES,
    Manifest,
    documents,
    helm_template,
    missing_tool,
    run,
)


@pytest.fixture(scope="session")
def helm() -> Path:
    """Helm, built from source into the tool cache on first use (a few minutes, once)."""
    if shutil.which("go") is None and not Path("/usr/local/go/bin/go").exists():
        missing_tool("Helm is built from source and Go was not found")
    result = run(REPO / "hack" / "tools.sh", "helm", check=False, timeout=1800)
    if result.returncode != 0:
        missing_tool(f"hack/tools.sh helm failed:\n{result.stderr[-3000:]}")
    return Path(result.stdout.strip())


@pytest.fixture(scope="session")
def promtool() -> Path:
    """promtool of the pinned Prometheus 3.x, built from source on first use (once)."""
    if shutil.which("go") is None and not Path("/usr/local/go/bin/go").exists():
        missing_tool("promtool is built from source and Go was not found")
    result = run(REPO / "hack" / "tools.sh", "promtool", check=False, timeout=1800)
    if result.returncode != 0:
        missing_tool(f"hack/tools.sh promtool failed:\n{result.stderr[-3000:]}")
    return Path(result.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="session")
def kubectl() -> Path:
    result = run(REPO / "hack" / "tools.sh", "kubectl", check=False)
    if result.returncode != 0:
        missing_tool(result.stderr.strip())
    return Path(result.stdout.strip())


@pytest.fixture(scope="session")
def chart_default(helm: Path) -> list[Manifest]:
    return documents(helm_template(helm).stdout)


@pytest.fixture(scope="session", params=VALUES_FILES, ids=lambda path: path.stem)
def chart_with_values(request: pytest.FixtureRequest, helm: Path) -> list[Manifest]:
    return documents(helm_template(helm, request.param).stdout)


RENDERINGS = [
    "manifests",
    "manifests-monitoring",
    "manifests-namespaced",
    "chart-default",
    *(f"chart-{path.stem}" for path in VALUES_FILES),
]


@pytest.fixture(scope="session", params=RENDERINGS)
def rendering(request: pytest.FixtureRequest) -> list[Manifest]:
    """Each way the install can be rendered: kustomize, and the chart with each values file."""
    name: str = request.param
    if name.startswith("manifests"):
        kubectl: Path = request.getfixturevalue("kubectl")
        folders = {
            "manifests-monitoring": MANIFESTS / "monitoring",
            "manifests-namespaced": NAMESPACED_OVERLAY,
        }
        folder = folders.get(name, MANIFESTS)
        return documents(run(kubectl, "kustomize", folder).stdout)
    helm: Path = request.getfixturevalue("helm")
    files = [path for path in VALUES_FILES if f"chart-{path.stem}" == name]
    return documents(helm_template(helm, *files).stdout)


@pytest.fixture(scope="session")
def kustomized(kubectl: Path) -> list[Manifest]:
    return documents(run(kubectl, "kustomize", MANIFESTS).stdout)


@pytest.fixture(scope="session")
def kustomized_monitoring(kubectl: Path) -> list[Manifest]:
    return documents(run(kubectl, "kustomize", MANIFESTS / "monitoring").stdout)
