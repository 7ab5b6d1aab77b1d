"""The one error the local cluster raises, and its progress log on stderr."""

from __future__ import annotations

import sys


class ClusterError(Exception):
    """A failure with a message meant for the user."""


def log(msg: str) -> None:
    print(f"[cluster] {msg}", file=sys.stderr, flush=True)
