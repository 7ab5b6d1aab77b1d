"""The pure parts of building Kubernetes from its Go module: the wrapper module and the stamp."""

from __future__ import annotations

import pytest

from localcluster import build
from localcluster.errors import ClusterError

KUBERNETES_GOMOD = """module k8s.io/kubernetes

go 1.25.0

require (
\tk8s.io/api v0.0.0
\tk8s.io/client-go v0.0.0
)

replace (
\tk8s.io/api => ./staging/src/k8s.io/api
\tk8s.io/client-go => ./staging/src/k8s.io/client-go
\tk8s.io/cri-api => ./staging/src/k8s.io/cri-api
)
"""


def test_staging_replaces_point_at_the_published_versions() -> None:
    assert build.staging_replaces(KUBERNETES_GOMOD, "v0.35.4") == [
        "replace k8s.io/api => k8s.io/api v0.35.4",
        "replace k8s.io/client-go => k8s.io/client-go v0.35.4",
        "replace k8s.io/cri-api => k8s.io/cri-api v0.35.4",
    ]


def test_a_go_mod_without_staging_replaces_is_refused() -> None:
    with pytest.raises(ClusterError, match="no staging replace directives"):
        build.staging_replaces("module k8s.io/kubernetes\n\ngo 1.25.0\n", "v0.35.4")


def test_the_go_directive_is_read_from_the_go_mod() -> None:
    assert build.go_directive(KUBERNETES_GOMOD) == "1.25.0"
    assert build.go_directive("module x\n") == "1.25.0"
    assert build.go_directive("module x\n\ngo 1.26.1\n") == "1.26.1"


def test_the_wrapper_module_requires_kubernetes_and_pins_its_staging_modules() -> None:
    text = build.kube_wrapper_gomod(KUBERNETES_GOMOD, "v1.35.4")
    lines = text.splitlines()
    assert lines[0] == "module infercycle.local/kube-build"
    assert "go 1.25.0" in lines
    assert "godebug default=go1.25" in lines
    assert "require k8s.io/kubernetes v1.35.4" in lines
    assert "replace k8s.io/client-go => k8s.io/client-go v0.35.4" in lines
    assert not any("./staging" in line for line in lines)


def test_the_version_stamp_reaches_both_version_packages() -> None:
    flags = build.kube_ldflags("v1.35.4", "a" * 40, "2026-01-01T00:00:00Z").split(" -X ")
    assert flags[0] == "-s -w"
    stamped = dict(flag.split("=", 1) for flag in flags[1:])
    for pkg in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
        assert stamped[f"{pkg}.gitVersion"] == "v1.35.4"
        assert stamped[f"{pkg}.gitMajor"] == "1"
        assert stamped[f"{pkg}.gitMinor"] == "35"
        assert stamped[f"{pkg}.gitCommit"] == "a" * 40
        assert stamped[f"{pkg}.gitTreeState"] == "clean"
