"""Version pins select the cache directory; overrides are checked before anything is built."""

from __future__ import annotations

from pathlib import Path

import pytest

from localcluster import versions
from localcluster.errors import ClusterError


def test_the_pins_are_release_versions_of_kubernetes_1_35() -> None:
    pins = versions.pinned({})
    assert pins == versions.Versions(kubernetes="v1.35.4", etcd="v3.6.16", kwok="v0.8.0")


def test_staging_modules_are_published_as_v0_minor_patch() -> None:
    assert versions.Versions("v1.35.4", "v3.6.16", "v0.8.0").staging_version == "v0.35.4"
    assert versions.Versions("v1.36.0", "v3.6.16", "v0.8.0").staging_version == "v0.36.0"


def test_each_combination_of_versions_builds_into_its_own_cache_directory(tmp_path: Path) -> None:
    default = versions.cache_root({}, home=tmp_path)
    other = versions.cache_root({"INFERCYCLE_K8S_VERSION": "v1.34.2"}, home=tmp_path)
    assert default == tmp_path / ".cache/infercycle/cluster/k8s-v1.35.4-etcd-v3.6.16-kwok-v0.8.0"
    assert other.name == "k8s-v1.34.2-etcd-v3.6.16-kwok-v0.8.0"
    assert versions.bin_dir({}, home=tmp_path) == default / "bin"


def test_the_cache_root_follows_infercycle_cache(tmp_path: Path) -> None:
    root = versions.cache_root({"INFERCYCLE_CACHE": str(tmp_path / "c")}, home=Path("/nowhere"))
    assert root.parent == tmp_path / "c" / "cluster"


@pytest.mark.parametrize("value", ["1.35.4", "v1.35", "latest", "v1.35.4; rm -rf /"])
def test_a_malformed_override_names_the_variable_and_the_expected_form(value: str) -> None:
    with pytest.raises(ClusterError, match=r"INFERCYCLE_ETCD_VERSION=.*use the form v1\.2\.3"):
        versions.pinned({"INFERCYCLE_ETCD_VERSION": value})


def test_an_empty_override_means_the_pin() -> None:
    assert versions.pinned({"INFERCYCLE_KWOK_VERSION": ""}).kwok == versions.KWOK_VERSION
