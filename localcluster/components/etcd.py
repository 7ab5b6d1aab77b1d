"""etcd: the API server's store, tuned for a throwaway test cluster (no fsync)."""

from __future__ import annotations

from localcluster.addresses import ETCD_CLIENT_PORT, ETCD_PEER_PORT, HOST
from localcluster.components.context import Context
from localcluster.process import Component

CLIENT_URL = f"http://{HOST}:{ETCD_CLIENT_PORT}"
PEER_URL = f"http://{HOST}:{ETCD_PEER_PORT}"


def component(ctx: Context) -> Component:
    return Component(
        "etcd",
        [
            str(ctx.bin / "etcd"),
            "--name=infercycle",
            f"--data-dir={ctx.state / 'etcd'}",
            f"--listen-client-urls={CLIENT_URL}",
            f"--advertise-client-urls={CLIENT_URL}",
            f"--listen-peer-urls={PEER_URL}",
            f"--initial-advertise-peer-urls={PEER_URL}",
            f"--initial-cluster=infercycle={PEER_URL}",
            "--initial-cluster-state=new",
            "--unsafe-no-fsync=true",
            "--quota-backend-bytes=2147483648",
            "--snapshot-count=10000",
            "--log-level=warn",
        ],
        f"{CLIENT_URL}/health",
        ETCD_CLIENT_PORT,
    )
