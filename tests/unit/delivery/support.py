"""Helpers of the delivery tests: the repository's paths, external tools, rendered installs.

Tools that do not come with the Python dev extras (Helm, promtool) are found or built through
hack/tools.sh. When one is missing, a developer's run skips the tests that need it and says how
to get it; a CI run (CI set) fails instead, so a missing install step cannot pass unseen.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any, NoReturn

import pytest
import yaml

REPO = Path(__file__).resolve().parents[3]
CHART = REPO / "charts" / "infercycle"
MANIFESTS = REPO / "manifests"
# manifests/ with the namespaced component, as docs/install.md shows it.
NAMESPACED_OVERLAY = Path(__file__).resolve().parent / "overlays" / "namespaced"
VALUES = Path(__file__).resolve().parent / "values"
VALUES_FILES = sorted(VALUES.glob("*.yaml"))
RELEASE = "infercycle"
NAMESPACE = "infercycle-system"
# A version the chart's kubeVersion accepts; `helm template` assumes v1.20 without a cluster.
KUBE_VERSION = "1.31.0"

Manifest = dict[str, Any]

# Every kind the install may contain, with the only apiVersion it may use.
KNOWN_KINDS = {
    "Namespace": "v1",
    "ServiceAccount": "v1",
    "Service": "v1",
    "ConfigMap": "v1",
    "Deployment": "apps/v1",
    "ClusterRole": "rbac.authorization.k8s.io/v1",
    "ClusterRoleBinding": "rbac.authorization.k8s.io/v1",
    "Role": "rbac.authorization.k8s.io/v1",
    "RoleBinding": "rbac.authorization.k8s.io/v1",
    "NetworkPolicy": "networking.k8s.io/v1",
    "CustomResourceDefinition": "apiextensions.k8s.io/v1",
    "ServiceMonitor": "monitoring.coreos.com/v1",
    "PrometheusRule": "monitoring.coreos.com/v1",
}
# The Kubernetes client's model of each built-in kind, to find misspelt or misplaced fields.
CLIENT_MODELS = {
    "Namespace": "V1Namespace",
    "ServiceAccount": "V1ServiceAccount",
    "Service": "V1Service",
    "ConfigMap": "V1ConfigMap",
    "Deployment": "V1Deployment",
    "ClusterRole": "V1ClusterRole",
    "ClusterRoleBinding": "V1ClusterRoleBinding",
    "Role": "V1Role",
    "RoleBinding": "V1RoleBinding",
    "NetworkPolicy": "V1NetworkPolicy",
    "CustomResourceDefinition": "V1CustomResourceDefinition",
}


def missing_tool(message: str) -> NoReturn:
    if os.environ.get("CI"):
        pytest.fail(f"{message} (CI must provide it)")
    pytest.skip(message)


def load_script(name: str) -> ModuleType:
    """A hack/ script (no .py suffix) loaded as a module, to test its functions."""
    module_name = "hack_" + name.replace("-", "_")
    if module_name in sys.modules:
        return sys.modules[module_name]
    loader = importlib.machinery.SourceFileLoader(module_name, str(REPO / "hack" / name))
    spec = importlib.util.spec_from_loader(module_name, loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    loader.exec_module(module)
    return module


def run(
    *command: str | Path, check: bool = True, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [str(part) for part in command],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
        check=False,
    )
    if check and result.returncode != 0:
        pytest.fail(
            f"{' '.join(str(p) for p in command)} exited {result.returncode}\n"
            f"stdout:\n{result.stdout[-5000:]}\nstderr:\n{result.stderr[-5000:]}"
        )
    return result


def documents(text: str) -> list[Manifest]:
    return [doc for doc in yaml.safe_load_all(text) if doc]


def by_kind(objects: list[Manifest], kind: str) -> list[Manifest]:
    return [obj for obj in objects if obj.get("kind") == kind]


def one(
    objects: list[Manifest], kind: str, name: str | None = None, namespace: str | None = None
) -> Manifest:
    found = [
        obj
        for obj in by_kind(objects, kind)
        if (name is None or obj["metadata"]["name"] == name)
        and (namespace is None or obj["metadata"].get("namespace") == namespace)
    ]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def helm_template(
    helm: Path, *values_files: Path, check: bool = True, sets: tuple[str, ...] = ()
) -> subprocess.CompletedProcess[str]:
    command: list[str | Path] = [
        helm,
        "template",
        RELEASE,
        CHART,
        "--namespace",
        NAMESPACE,
        "--kube-version",
        KUBE_VERSION,
        "--include-crds",
    ]
    for values in values_files:
        command += ["--values", values]
    for assignment in sets:
        command += ["--set", assignment]
    return run(*command, check=check)


def pod_containers(workload: Manifest) -> Iterator[Manifest]:
    spec = workload["spec"]["template"]["spec"]
    yield from spec.get("initContainers") or []
    yield from spec.get("containers") or []


class _Response:
    """What older Kubernetes clients' ``deserialize`` reads: an object with ``.data``."""

    def __init__(self, text: str) -> None:
        self.data = text


def unknown_fields(obj: Manifest) -> list[str]:
    """Lines of a diff between the object and its round trip through the client's model.

    The model keeps only the fields the API defines, so a misspelt or misplaced key shows up as
    a line missing after the round trip.
    """
    import difflib  # noqa: PLC0415

    from kubernetes.client import ApiClient  # noqa: PLC0415

    client: Any = ApiClient()
    text = json.dumps(obj)
    try:
        model = client.deserialize(text, CLIENT_MODELS[obj["kind"]], "application/json")
    except TypeError:  # kubernetes < 34 takes a response object and no content type
        model = client.deserialize(_Response(text), CLIENT_MODELS[obj["kind"]])
    back = client.sanitize_for_serialization(model)
    if back == obj:
        return []
    before = json.dumps(obj, indent=1, sort_keys=True).splitlines()
    after = json.dumps(back, indent=1, sort_keys=True).splitlines()
    return list(difflib.unified_diff(before, after, lineterm="", n=2))[2:]
