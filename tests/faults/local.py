"""Servers on the loopback address for the fault classes, each in a thread, stopped on exit."""

from __future__ import annotations

import socketserver
import threading
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def serve(server: socketserver.TCPServer) -> Iterator[str]:
    """Serve ``server`` (bound to 127.0.0.1, a thread per request that does not outlive the
    process) until the block ends; yields its base URL."""
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


class ThreadingServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
