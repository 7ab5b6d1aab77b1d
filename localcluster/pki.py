"""The cluster's certificates (one CA, EC P-256 keys) and the admin kubeconfig.

``make_pki`` writes, with openssl: the CA; the API server's serving certificate (valid for
127.0.0.1, the real node's address, the ``kubernetes`` Service address and its DNS names); the
admin client certificate (group ``system:masters``); the front-proxy client certificate; the
API server's client certificate for kubelets; the real node's kubelet serving and client
certificates (``system:node:<name>`` in ``system:nodes``, as the Node authorizer expects);
kube-proxy's client certificate (``system:kube-proxy``, bound to ``system:node-proxier`` by a
default binding); and the service-account signing key pair. It is idempotent: an existing set
is kept.
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
from pathlib import Path

from localcluster.addresses import APISERVER_PORT, HOST, NODE_IP, NODE_NAME, SERVICE_IP
from localcluster.errors import ClusterError

CA_SUBJECT = "/CN=infercycle-local-ca"
VALID_DAYS = "3650"
_EC = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]


def apiserver_sans() -> list[str]:
    """Every name a client may use for the API server: from the host and from a pod."""
    return [
        f"IP:{HOST}",
        f"IP:{NODE_IP}",
        f"IP:{SERVICE_IP}",
        "DNS:localhost",
        "DNS:kubernetes",
        "DNS:kubernetes.default",
        "DNS:kubernetes.default.svc",
        "DNS:kubernetes.default.svc.cluster.local",
    ]


def leaf_certificates() -> dict[str, tuple[str, str]]:
    """name -> (subject, extensions) of every certificate the CA signs."""
    return {
        "apiserver": (
            "/CN=kube-apiserver",
            f"subjectAltName={','.join(apiserver_sans())}\nextendedKeyUsage=serverAuth",
        ),
        "admin": ("/O=system:masters/CN=infercycle-admin", "extendedKeyUsage=clientAuth"),
        "front-proxy-client": ("/CN=front-proxy-client", "extendedKeyUsage=clientAuth"),
        "apiserver-kubelet-client": (
            "/O=system:masters/CN=kube-apiserver-kubelet-client",
            "extendedKeyUsage=clientAuth",
        ),
        "kubelet-serving": (
            f"/CN={NODE_NAME}",
            f"subjectAltName=IP:{NODE_IP},DNS:{NODE_NAME}\nextendedKeyUsage=serverAuth",
        ),
        "kubelet-client": (
            f"/O=system:nodes/CN=system:node:{NODE_NAME}",
            "extendedKeyUsage=clientAuth",
        ),
        "kube-proxy": ("/CN=system:kube-proxy", "extendedKeyUsage=clientAuth"),
    }


def openssl(*args: str, cwd: Path) -> None:
    if not shutil.which("openssl"):
        raise ClusterError("openssl is required to create the cluster certificates")
    proc = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise ClusterError(
            f"openssl {args[0]} failed (exit {proc.returncode}): {proc.stderr.strip()}"
        )


def make_pki(pki: Path) -> None:
    """CA, API server serving cert, client certs, service-account signing key (EC P-256)."""
    expected = [f"{name}.crt" for name in leaf_certificates()] + ["sa.pub"]
    if all((pki / f).exists() for f in expected):
        return
    pki.mkdir(parents=True, exist_ok=True)
    openssl(
        "req", "-x509", *_EC, "-keyout", "ca.key", "-out", "ca.crt",
        "-days", VALID_DAYS, "-subj", CA_SUBJECT, cwd=pki,
    )  # fmt: skip
    for name, (subject, ext) in leaf_certificates().items():
        sign(pki, name, subject, ext)
    openssl(
        "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:prime256v1",
        "-out", "sa.key", cwd=pki,
    )  # fmt: skip
    openssl("pkey", "-in", "sa.key", "-pubout", "-out", "sa.pub", cwd=pki)
    for key in pki.glob("*.key"):
        key.chmod(0o600)


def sign(pki: Path, name: str, subject: str, extensions: str) -> None:
    """A new EC key and a certificate for it signed by the CA in ``pki``."""
    (pki / f"{name}.ext").write_text(
        "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\n" + extensions + "\n"
    )
    openssl(
        "req", "-new", *_EC, "-keyout", f"{name}.key", "-out", f"{name}.csr",
        "-subj", subject, cwd=pki,
    )  # fmt: skip
    openssl(
        "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
        "-CAcreateserial", "-days", VALID_DAYS, "-out", f"{name}.crt",
        "-extfile", f"{name}.ext", cwd=pki,
    )  # fmt: skip
    (pki / f"{name}.key").chmod(0o600)


def b64file(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def kubeconfig(pki: Path, user: str = "admin", server: str | None = None) -> dict[str, object]:
    """A kubeconfig for the client certificate ``<user>.crt`` in ``pki``."""
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "infercycle",
                "cluster": {
                    "server": server or f"https://{HOST}:{APISERVER_PORT}",
                    "certificate-authority-data": b64file(pki / "ca.crt"),
                },
            }
        ],
        "users": [
            {
                "name": f"infercycle-{user}",
                "user": {
                    "client-certificate-data": b64file(pki / f"{user}.crt"),
                    "client-key-data": b64file(pki / f"{user}.key"),
                },
            }
        ],
        "contexts": [
            {
                "name": "infercycle",
                "context": {
                    "cluster": "infercycle",
                    "user": f"infercycle-{user}",
                    "namespace": "default",
                },
            }
        ],
        "current-context": "infercycle",
        "preferences": {},
    }


def write_kubeconfig(path: Path, pki: Path, user: str = "admin") -> Path:
    # JSON is valid YAML, so every kubeconfig reader accepts it.
    path.write_text(json.dumps(kubeconfig(pki, user), indent=2) + "\n")
    path.chmod(0o600)
    return path
