"""Pinned component versions and the cache directory each combination builds into.

A version can be overridden from the environment (``INFERCYCLE_K8S_VERSION``,
``INFERCYCLE_ETCD_VERSION``, ``INFERCYCLE_KWOK_VERSION``); another combination builds into another
cache directory, so switching back costs nothing.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from localcluster.errors import ClusterError

K8S_VERSION = "v1.35.4"
ETCD_VERSION = "v3.6.16"
KWOK_VERSION = "v0.8.0"
# Prometheus and promtool, built from the Go module github.com/prometheus/prometheus.
PROMETHEUS_VERSION = "v3.16.0"

_SEMVER = re.compile(r"v\d+\.\d+\.\d+")


@dataclass(frozen=True)
class Versions:
    """The versions one cluster runs."""

    kubernetes: str
    etcd: str
    kwok: str

    @property
    def cache_name(self) -> str:
        return f"k8s-{self.kubernetes}-etcd-{self.etcd}-kwok-{self.kwok}"

    @property
    def staging_version(self) -> str:
        """The version of k8s.io/api, client-go, ... published with this Kubernetes release."""
        _, minor, patch = self.kubernetes.lstrip("v").split(".")[:3]
        return f"v0.{minor}.{patch}"


def pinned(environ: Mapping[str, str] | None = None) -> Versions:
    """The pinned versions, with the environment's overrides; a malformed one is refused."""
    env = os.environ if environ is None else environ
    chosen = {
        "INFERCYCLE_K8S_VERSION": env.get("INFERCYCLE_K8S_VERSION") or K8S_VERSION,
        "INFERCYCLE_ETCD_VERSION": env.get("INFERCYCLE_ETCD_VERSION") or ETCD_VERSION,
        "INFERCYCLE_KWOK_VERSION": env.get("INFERCYCLE_KWOK_VERSION") or KWOK_VERSION,
    }
    for name, value in chosen.items():
        if not _SEMVER.fullmatch(value):
            raise ClusterError(
                f"{name}={value!r} is not a release version; use the form v1.2.3 or unset it"
            )
    return Versions(
        kubernetes=chosen["INFERCYCLE_K8S_VERSION"],
        etcd=chosen["INFERCYCLE_ETCD_VERSION"],
        kwok=chosen["INFERCYCLE_KWOK_VERSION"],
    )


def cache_base(environ: Mapping[str, str] | None = None, home: Path | None = None) -> Path:
    """``$INFERCYCLE_CACHE``, else ``~/.cache/infercycle``."""
    env = os.environ if environ is None else environ
    override = env.get("INFERCYCLE_CACHE")
    if override:
        return Path(override)
    return (home or Path.home()) / ".cache" / "infercycle"


def cache_root(environ: Mapping[str, str] | None = None, home: Path | None = None) -> Path:
    """Where this combination of versions is built: ``<cache>/cluster/k8s-…-etcd-…-kwok-…``."""
    return cache_base(environ, home) / "cluster" / pinned(environ).cache_name


def prometheus_module_version(release: str) -> str:
    """The Go module version that publishes a Prometheus release: v3.16.0 -> v0.316.0."""
    if not _SEMVER.fullmatch(release):
        raise ClusterError(f"Prometheus version {release!r} is not of the form v3.16.0")
    major, minor, patch = release.lstrip("v").split(".")
    if major != "3":
        raise ClusterError(f"Prometheus {release}: only 3.x releases are published this way")
    return f"v0.3{int(minor):02d}.{patch}"


def prometheus_dir(environ: Mapping[str, str] | None = None, home: Path | None = None) -> Path:
    """Where Prometheus and promtool are built: ``<cache>/tools/prometheus-<version>``."""
    return cache_base(environ, home) / "tools" / f"prometheus-{PROMETHEUS_VERSION}"


def bin_dir(environ: Mapping[str, str] | None = None, home: Path | None = None) -> Path:
    return cache_root(environ, home) / "bin"
