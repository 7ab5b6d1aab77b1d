"""The LeaderWorkerSet controller for the local cluster: built from its Go module, its CRD
installed, its admission webhooks served on the host with a certificate of the cluster's CA.

LeaderWorkerSet's controller needs its webhooks: the pod webhook stamps the group and worker
indexes on every pod of a group, and the controllers read them. The API server runs on this
host, so the webhooks are registered by URL (``https://127.0.0.1:<port>``) with the cluster CA
as their bundle, and the pod webhooks only see pods that carry the LeaderWorkerSet name label,
so nothing else in the cluster depends on this process.

    build(root)                        the binary and the CRD into <cache>/lws/<version>/
    serving_certificate(pki, certs)    tls.crt / tls.key for 127.0.0.1, signed by the cluster CA
    controller_config(...)             the controller's Configuration file (no leader election,
                                       no internal certificate rotation)
    webhook_configurations(ca, port)   the Mutating/ValidatingWebhookConfigurations to apply
    command(binary, kubeconfig, config) the command line that runs it

Nothing here starts a process: the test fixture (``tests/fixtures/lws.py``) does, and stops it.
``python -m localcluster.lws`` builds ahead of the tests (``.ci/run`` does).
"""

from __future__ import annotations

import base64
import shutil
import stat
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from localcluster import build, versions
from localcluster.addresses import HOST
from localcluster.errors import ClusterError, log
from localcluster.pki import sign

LWS_MODULE = "sigs.k8s.io/lws"
LWS_VERSION = "v0.7.0"
WEBHOOK_PORT = 17443  # clear of every port the cluster itself uses
HEALTH_PORT = 16281
CRD_SOURCE = "config/crd/bases/leaderworkerset.x-k8s.io_leaderworkersets.yaml"
BINARY = "lws-controller"
LWS_NAME_LABEL = "leaderworkerset.sigs.k8s.io/name"


def root(environ: Mapping[str, str] | None = None) -> Path:
    """``<cache>/lws/<version>``: ``bin/lws-controller`` and ``crds/``."""
    return versions.cache_base(environ) / "lws" / LWS_VERSION


def binary_path(environ: Mapping[str, str] | None = None) -> Path:
    return root(environ) / "bin" / BINARY


def crd_path(environ: Mapping[str, str] | None = None) -> Path:
    return root(environ) / "crds" / Path(CRD_SOURCE).name


def built(environ: Mapping[str, str] | None = None) -> bool:
    """The cached binary runs and the CRD is there."""
    return (
        build.binary_works(binary_path(environ), ("--help",)) is not None
        and crd_path(environ).is_file()
    )


def build_controller(environ: Mapping[str, str] | None = None) -> Path:
    """Build the controller from its module at the pinned version, once; the binary's path.

    The module is built inside a copy of its own tree, with its own go.mod and go.sum: the
    versions its authors tested, and no query of the proxy's version list."""
    target = root(environ)
    with build.build_lock(target):
        if built(environ):
            return binary_path(environ)
        go = build.find_go()
        env = build.go_env(go)
        build.check_proxy(go, env, LWS_MODULE, LWS_VERSION)
        info = build.module_info(go, env, LWS_MODULE, LWS_VERSION)
        source = Path(str(info["Dir"]))
        with tempfile.TemporaryDirectory(prefix="lws-build-") as scratch:
            tree = Path(scratch) / "src"
            shutil.copytree(source, tree)
            for path in [tree, *tree.rglob("*")]:  # the module cache is read-only
                path.chmod(path.stat().st_mode | stat.S_IWUSR)
            staging = Path(scratch) / BINARY
            build.run(
                [go, "build", "-trimpath", "-ldflags", "-s -w", "-o", str(staging), "./cmd"],
                cwd=tree,
                env=env,
                what=f"go build {LWS_MODULE}@{LWS_VERSION}",
            )
            binary_path(environ).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(staging, binary_path(environ))
            crd_path(environ).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(tree / CRD_SOURCE, crd_path(environ))
        log(f"built {LWS_MODULE}@{LWS_VERSION} into {target}")
    if not built(environ):
        raise ClusterError(f"the {BINARY} built into {target} does not run")
    return binary_path(environ)


def serving_certificate(pki: Path, certs: Path) -> None:
    """``certs/tls.crt`` and ``tls.key``: the webhook server's certificate for 127.0.0.1,
    signed by the cluster CA in ``pki`` (the API server trusts it through the bundle)."""
    name = "lws-webhook"
    if not (pki / f"{name}.crt").exists():
        sign(pki, name, "/CN=lws-webhook", f"subjectAltName=IP:{HOST}\nextendedKeyUsage=serverAuth")
    certs.mkdir(parents=True, exist_ok=True)
    shutil.copy2(pki / f"{name}.crt", certs / "tls.crt")
    shutil.copy2(pki / f"{name}.key", certs / "tls.key")


def controller_config(certs: Path, webhook_port: int = WEBHOOK_PORT) -> str:
    """The controller's Configuration: one instance, certificates given, metrics off."""
    config = {
        "apiVersion": "config.lws.x-k8s.io/v1alpha1",
        "kind": "Configuration",
        "leaderElection": {"leaderElect": False},
        "internalCertManagement": {"enable": False},
        "webhook": {"host": HOST, "port": webhook_port, "certDir": str(certs)},
        "health": {"healthProbeBindAddress": f"{HOST}:{HEALTH_PORT}"},
        "metrics": {"bindAddress": "0"},
    }
    return yaml.safe_dump(config, sort_keys=False)


def _webhook(
    name: str, path: str, resource: str, operations: list[str], ca: str, port: int
) -> dict[str, Any]:
    group = "" if resource == "pods" else "leaderworkerset.x-k8s.io"
    version = "v1"
    hook: dict[str, Any] = {
        "name": name,
        "admissionReviewVersions": ["v1"],
        "sideEffects": "None",
        "failurePolicy": "Fail",
        "timeoutSeconds": 10,
        "clientConfig": {"url": f"https://{HOST}:{port}{path}", "caBundle": ca},
        "rules": [
            {
                "apiGroups": [group],
                "apiVersions": [version],
                "operations": operations,
                "resources": [resource],
            }
        ],
    }
    if resource == "pods":
        hook["objectSelector"] = {
            "matchExpressions": [{"key": LWS_NAME_LABEL, "operator": "Exists"}]
        }
    return hook


def webhook_configurations(ca_crt: Path, port: int = WEBHOOK_PORT) -> list[dict[str, Any]]:
    """The controller's webhooks, registered by URL with the cluster CA as their bundle."""
    ca = base64.b64encode(ca_crt.read_bytes()).decode()
    lws_ops = ["CREATE", "UPDATE"]
    return [
        {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "MutatingWebhookConfiguration",
            "metadata": {"name": "infercycle-local-lws-mutating"},
            "webhooks": [
                _webhook(
                    "mleaderworkerset.kb.io",
                    "/mutate-leaderworkerset-x-k8s-io-v1-leaderworkerset",
                    "leaderworkersets",
                    lws_ops,
                    ca,
                    port,
                ),
                _webhook("mpod.kb.io", "/mutate--v1-pod", "pods", ["CREATE"], ca, port),
            ],
        },
        {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingWebhookConfiguration",
            "metadata": {"name": "infercycle-local-lws-validating"},
            "webhooks": [
                _webhook(
                    "vleaderworkerset.kb.io",
                    "/validate-leaderworkerset-x-k8s-io-v1-leaderworkerset",
                    "leaderworkersets",
                    lws_ops,
                    ca,
                    port,
                ),
                _webhook("vpod.kb.io", "/validate--v1-pod", "pods", ["CREATE"], ca, port),
            ],
        },
    ]


def command(binary: Path, kubeconfig: Path, config: Path) -> list[str]:
    return [str(binary), f"--kubeconfig={kubeconfig}", f"--config={config}", "--zap-log-level=info"]


def main() -> int:
    """``python -m localcluster.lws``: build (or find cached) the controller and its CRD."""
    try:
        path = build_controller()
    except ClusterError as error:
        log(f"error: {error}")
        return 1
    log(f"{BINARY} ready: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
