"""kube-apiserver: client-certificate and service-account authentication, Node and RBAC
authorization, the aggregation layer's front proxy.

Without the real node everything stays on 127.0.0.1 and the endpoint reconciler is off: the
``kubernetes`` Service's endpoints would otherwise name 127.0.0.1, which Kubernetes refuses in
Endpoints. With it, the API server also answers on the node's address, advertises it (so pods
reach it through the ``kubernetes`` Service) and reaches the kubelet with a client certificate,
verifying the kubelet's serving certificate against the cluster CA.
"""

from __future__ import annotations

from localcluster.addresses import APISERVER_PORT, HOST, NODE_IP, SERVICE_CIDR
from localcluster.components.context import Context
from localcluster.components.etcd import CLIENT_URL
from localcluster.process import Component

ISSUER = "https://kubernetes.default.svc.cluster.local"


def _listen(ctx: Context) -> list[str]:
    if not ctx.real_node:
        return [
            f"--bind-address={HOST}",
            f"--advertise-address={HOST}",
            "--endpoint-reconciler-type=none",
        ]
    return [
        "--bind-address=0.0.0.0",
        f"--advertise-address={NODE_IP}",
        f"--kubelet-client-certificate={ctx.pki / 'apiserver-kubelet-client.crt'}",
        f"--kubelet-client-key={ctx.pki / 'apiserver-kubelet-client.key'}",
        f"--kubelet-certificate-authority={ctx.pki / 'ca.crt'}",
        "--kubelet-preferred-address-types=InternalIP",
    ]


def component(ctx: Context) -> Component:
    pki = ctx.pki
    return Component(
        "kube-apiserver",
        [
            str(ctx.bin / "kube-apiserver"),
            f"--etcd-servers={CLIENT_URL}",
            *_listen(ctx),
            f"--secure-port={APISERVER_PORT}",
            f"--cert-dir={pki}",
            f"--tls-cert-file={pki / 'apiserver.crt'}",
            f"--tls-private-key-file={pki / 'apiserver.key'}",
            f"--client-ca-file={pki / 'ca.crt'}",
            f"--service-account-key-file={pki / 'sa.pub'}",
            f"--service-account-signing-key-file={pki / 'sa.key'}",
            f"--service-account-issuer={ISSUER}",
            f"--api-audiences={ISSUER}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--authorization-mode=Node,RBAC",
            f"--requestheader-client-ca-file={pki / 'ca.crt'}",
            "--requestheader-allowed-names=front-proxy-client",
            "--requestheader-username-headers=X-Remote-User",
            "--requestheader-group-headers=X-Remote-Group",
            "--requestheader-extra-headers-prefix=X-Remote-Extra-",
            f"--proxy-client-cert-file={pki / 'front-proxy-client.crt'}",
            f"--proxy-client-key-file={pki / 'front-proxy-client.key'}",
            "--allow-privileged=true",
            "--profiling=false",
            "--event-ttl=1h",
            "--v=1",
        ],
        None,
        APISERVER_PORT,
    )
