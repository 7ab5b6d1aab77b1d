"""The cluster's certificates: one CA signs a serving certificate and the client certificates."""

from __future__ import annotations

import base64
import shutil
import subprocess
from pathlib import Path

import pytest

from localcluster import pki

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is not installed")


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("pki")
    pki.make_pki(folder)
    return folder


def _openssl(*args: str) -> str:
    result = subprocess.run(["openssl", *args], capture_output=True, text=True, check=True)
    return result.stdout


def test_every_certificate_is_signed_by_the_cluster_ca(made: Path) -> None:
    for name in pki.leaf_certificates():
        out = _openssl("verify", "-CAfile", str(made / "ca.crt"), str(made / f"{name}.crt"))
        assert out.strip().endswith(": OK"), out


def test_the_serving_certificate_is_valid_for_the_host_and_the_kubernetes_service(
    made: Path,
) -> None:
    text = _openssl("x509", "-in", str(made / "apiserver.crt"), "-noout", "-ext", "subjectAltName")
    for name in (
        "IP Address:127.0.0.1",
        "IP Address:198.19.255.1",  # the real node's address, which pods reach
        "IP Address:198.19.128.1",  # the kubernetes Service
        "DNS:kubernetes.default.svc",
    ):
        assert name in text
    usage = _openssl(
        "x509", "-in", str(made / "apiserver.crt"), "-noout", "-ext", "extendedKeyUsage"
    )
    assert "TLS Web Server Authentication" in usage


def test_the_admin_is_a_cluster_admin_by_its_group(made: Path) -> None:
    subject = _openssl("x509", "-in", str(made / "admin.crt"), "-noout", "-subject")
    assert "O = system:masters" in subject
    assert "CN = infercycle-admin" in subject


def test_the_real_node_gets_a_serving_certificate_and_a_node_identity(made: Path) -> None:
    serving = _openssl(
        "x509", "-in", str(made / "kubelet-serving.crt"), "-noout", "-ext", "subjectAltName"
    )
    assert "IP Address:198.19.255.1" in serving
    assert "DNS:infercycle-node" in serving
    client = _openssl("x509", "-in", str(made / "kubelet-client.crt"), "-noout", "-subject")
    assert "O = system:nodes" in client
    assert "CN = system:node:infercycle-node" in client
    proxy = _openssl("x509", "-in", str(made / "kube-proxy.crt"), "-noout", "-subject")
    assert "CN = system:kube-proxy" in proxy


def test_keys_are_readable_by_their_owner_only(made: Path) -> None:
    keys = sorted(made.glob("*.key"))
    assert {k.name for k in keys} >= {"ca.key", "apiserver.key", "admin.key", "sa.key"}
    for key in keys:
        assert key.stat().st_mode & 0o777 == 0o600, key.name


def test_the_service_account_public_key_matches_its_private_key(made: Path) -> None:
    derived = _openssl("pkey", "-in", str(made / "sa.key"), "-pubout")
    assert derived == (made / "sa.pub").read_text()


def test_an_existing_set_is_kept(made: Path) -> None:
    before = (made / "ca.crt").read_bytes()
    pki.make_pki(made)
    assert (made / "ca.crt").read_bytes() == before


def test_the_kubeconfig_embeds_the_ca_and_the_client_certificate(made: Path) -> None:
    config = pki.kubeconfig(made)
    (cluster,) = config["clusters"]  # type: ignore[misc]
    (user,) = config["users"]  # type: ignore[misc]
    ca = base64.b64decode(cluster["cluster"]["certificate-authority-data"])
    assert ca == (made / "ca.crt").read_bytes()
    assert cluster["cluster"]["server"] == "https://127.0.0.1:16443"
    cert = base64.b64decode(user["user"]["client-certificate-data"])
    assert cert == (made / "admin.crt").read_bytes()
