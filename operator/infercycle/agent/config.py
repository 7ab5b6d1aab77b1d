"""The agent's settings: command-line flags that default to ``INFERCYCLE_AGENT_*`` variables."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from infercycle import errors
from infercycle.agent.protocol import StateSource
from infercycle.api.units import parse_quantity

ENV_PREFIX = "INFERCYCLE_AGENT_"
FAULT_PAUSE_BEFORE_COMMIT = f"{ENV_PREFIX}FAULT_PAUSE_BEFORE_COMMIT"
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"", "0", "false", "no", "off"}


ConfigError = errors.AgentConfigError


@dataclass(frozen=True)
class AgentConfig:
    host: str
    port: int
    token_file: Path | None
    checkpoint_dir: Path
    session_hook: str | None
    session_dir: Path | None
    server_process: str
    keep: int = 3
    max_size_bytes: int = 256 << 20
    grace_period: float = 30.0
    pod_uid: str = ""
    restore_method: Literal["PUT", "POST"] = "PUT"
    restore_timeout: float = 600.0
    hook_timeout: float = 120.0
    poll_interval: float = 0.25
    snapshot_attempts: int = 5
    log_level: str = "INFO"
    pause_before_commit: float = 0.0
    state_dir: Path | None = None
    idle_timeout: float = 30.0

    @property
    def source(self) -> StateSource:
        return "hook" if self.session_hook is not None else "dir"


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        msg = f"{text!r} is not a whole number"
        raise argparse.ArgumentTypeError(msg) from None
    if value < 1:
        msg = f"{value} must be at least 1"
        raise argparse.ArgumentTypeError(msg)
    return value


def _port(text: str) -> int:
    value = _positive_int(text)
    if value > 65535:
        msg = f"{value} is not a TCP port (1-65535)"
        raise argparse.ArgumentTypeError(msg)
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        msg = f"{text!r} is not a number of seconds"
        raise argparse.ArgumentTypeError(msg) from None
    if value < 0:
        msg = f"{value} must not be negative"
        raise argparse.ArgumentTypeError(msg)
    return value


def _size(text: str) -> int:
    try:
        value = int(parse_quantity(text))
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    if value < 1:
        msg = f"{text!r} must be a positive size such as 256Mi"
        raise argparse.ArgumentTypeError(msg)
    return value


def _flag(text: str) -> bool:
    value = text.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    msg = f"{text!r} is not a boolean (true/false)"
    raise argparse.ArgumentTypeError(msg)


def build_parser(environ: Mapping[str, str] | None = None) -> argparse.ArgumentParser:
    env = os.environ if environ is None else environ
    parser = argparse.ArgumentParser(
        prog="infercycle agent",
        description=(
            "The recycle agent: checkpoints the inference server's sessions to the pod's volume, "
            "restarts the server in place and gives the sessions back when it is up again. "
            f"Every flag can also be set with the {ENV_PREFIX}<FLAG> environment variable."
        ),
    )

    def option(
        flag: str,
        default: str | None,
        help_text: str,
        kind: Callable[[str], object] = str,
        metavar: str | None = None,
    ) -> None:
        variable = ENV_PREFIX + flag.removeprefix("--").replace("-", "_").upper()
        parser.add_argument(
            flag,
            default=env.get(variable, default),
            type=kind,
            metavar=metavar,
            help=f"{help_text} [{variable}; default: {default}]",
        )

    option("--host", "0.0.0.0", "address to listen on")  # noqa: S104 - a pod-local sidecar
    option("--port", "8089", "port to listen on", _port)
    option("--token-file", None, "file with the bearer token every request must carry")
    parser.add_argument(
        "--insecure-no-auth",
        nargs="?",
        const=True,
        default=env.get(f"{ENV_PREFIX}INSECURE_NO_AUTH", "false"),
        type=_flag,
        metavar="BOOL",
        help=(
            "run without a token, for tests only: anyone who reaches the port can restart the "
            f"server [{ENV_PREFIX}INSECURE_NO_AUTH; default: false]"
        ),
    )
    option(
        "--checkpoint-dir",
        "/var/lib/infercycle/sessions",
        "directory on the pod's volume for checkpoints",
    )
    option("--session-hook", None, "server URL that GETs and PUTs the session state as JSON")
    option("--session-dir", None, "server directory whose files are the session state")
    option("--restore-method", "PUT", "HTTP method that gives the state back to the hook")
    option("--keep", "3", "checkpoints to keep", _positive_int)
    option("--max-size", "256Mi", "largest state to checkpoint (a Kubernetes quantity)", _size)
    option(
        "--server-process",
        None,
        "the server process: its exact process name, or a substring of its command line",
    )
    option("--grace-period", "30", "seconds between SIGTERM and SIGKILL on restart", _seconds)
    option("--pod-uid", env.get("POD_UID", ""), "this pod's UID (downward API), for manifests")
    option(
        "--restore-timeout",
        "600",
        "seconds to wait for a restarted server's session hook before giving up the restore",
        _seconds,
    )
    option("--hook-timeout", "120", "seconds one session hook request may take", _seconds)
    option("--poll-interval", "0.25", "seconds between looks for the server process", _seconds)
    option("--snapshot-attempts", "5", "copies of a changing session dir to try", _positive_int)
    option("--log-level", "INFO", "DEBUG, INFO, WARNING or ERROR")
    option(
        "--state-dir",
        None,
        "a directory off the checkpoint volume (the pod's emptyDir) where the agent also records "
        "its last restore, so a full or read-only volume cannot make it restore twice",
    )
    option(
        "--idle-timeout",
        "30",
        "seconds a connection may stay open without a complete request (idle or slow clients)",
        _seconds,
    )
    return parser


def parse_config(
    argv: list[str] | None = None, environ: Mapping[str, str] | None = None
) -> AgentConfig:
    """The settings from flags and environment; ``ConfigError`` when they cannot work."""
    env = os.environ if environ is None else environ
    args = build_parser(env).parse_args(argv)
    hook: str | None = args.session_hook or None
    session_dir: str | None = args.session_dir or None
    if (hook is None) == (session_dir is None):
        msg = (
            "give exactly one state source: --session-hook URL (INFERCYCLE_AGENT_SESSION_HOOK) "
            "for a server that exports its sessions over HTTP, or --session-dir DIR "
            "(INFERCYCLE_AGENT_SESSION_DIR) for one that keeps them in files"
        )
        raise ConfigError(msg)
    if hook is not None and not hook.startswith(("http://", "https://")):
        msg = f"--session-hook {hook!r} is not an http:// or https:// URL"
        raise ConfigError(msg)
    if not args.server_process:
        msg = (
            "--server-process (INFERCYCLE_AGENT_SERVER_PROCESS) is required: the server's "
            "process name or a piece of its command line, such as 'vllm serve'; the pod also "
            "needs shareProcessNamespace: true"
        )
        raise ConfigError(msg)
    method = str(args.restore_method).upper()
    if method not in ("PUT", "POST"):
        msg = f"--restore-method {args.restore_method!r} must be PUT or POST"
        raise ConfigError(msg)
    if args.token_file is None and not args.insecure_no_auth:
        msg = (
            "no token: mount the agent's Secret and pass --token-file "
            "(INFERCYCLE_AGENT_TOKEN_FILE); only a test setup may run with --insecure-no-auth"
        )
        raise ConfigError(msg)
    pause = env.get(FAULT_PAUSE_BEFORE_COMMIT, "0") or "0"
    try:
        pause_before_commit = float(pause)
    except ValueError:
        msg = f"{FAULT_PAUSE_BEFORE_COMMIT}={pause!r} is not a number of seconds"
        raise ConfigError(msg) from None
    return AgentConfig(
        host=args.host,
        port=args.port,
        token_file=None if args.insecure_no_auth else Path(args.token_file),
        checkpoint_dir=Path(args.checkpoint_dir),
        session_hook=hook,
        session_dir=Path(session_dir) if session_dir is not None else None,
        server_process=args.server_process,
        keep=args.keep,
        max_size_bytes=args.max_size,
        grace_period=args.grace_period,
        pod_uid=args.pod_uid,
        restore_method="PUT" if method == "PUT" else "POST",
        restore_timeout=args.restore_timeout,
        hook_timeout=args.hook_timeout,
        poll_interval=max(0.02, args.poll_interval),
        snapshot_attempts=args.snapshot_attempts,
        log_level=str(args.log_level).upper(),
        pause_before_commit=pause_before_commit,
        state_dir=Path(args.state_dir) if args.state_dir else None,
        idle_timeout=args.idle_timeout,
    )
