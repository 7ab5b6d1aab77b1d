"""The agent's HTTP API (aiohttp) and its entry point, ``infercycle agent``.

Routes (JSON in and out; errors are ``{"error": code, "message": text}``):

* ``POST /v1/checkpoint``: write the session state to the volume; 409 while another operation
  runs, 413 above ``--max-size``, 507 when the volume is full, 503 when it is read-only.
* ``POST /v1/restart``: stop the server process (SIGTERM, SIGKILL after the grace period) so its
  container restarts in place; 409 during a checkpoint, 404 when no server process is found.
* ``POST /v1/restore``: give the newest valid checkpoint back now.
* ``GET /v1/status``: last checkpoint, last restore, server process, operation in progress.
* ``GET /healthz``: liveness; the only route that needs no token (kubelet probes carry none).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import signal
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.typedefs import Middleware
from pydantic import BaseModel

from infercycle.agent import jsonlog
from infercycle.agent.config import (
    FAULT_PAUSE_BEFORE_COMMIT,
    AgentConfig,
    ConfigError,
    parse_config,
)
from infercycle.agent.core import Agent, AgentOperationError
from infercycle.agent.hook import SessionHook
from infercycle.agent.process import ProcessMatcher
from infercycle.agent.store import CheckpointStore

log = logging.getLogger("infercycle.agent")
_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
AGENT_KEY = web.AppKey("agent", Agent)


class TokenSource:
    """The bearer token from its file, read again when the mounted Secret changes."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._stamp: tuple[int, int] | None = None
        token = self._read()
        if not token:
            msg = (
                f"the token file {path} is missing, unreadable or empty; mount the agent's "
                "Secret there or fix --token-file (INFERCYCLE_AGENT_TOKEN_FILE)"
            )
            raise ConfigError(msg)
        self._token = token

    def _read(self) -> str | None:
        try:
            info = self._path.stat()
            text = self._path.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError):
            return None
        self._stamp = (info.st_mtime_ns, info.st_ino)
        return text or None

    def current(self) -> str:
        try:
            info = self._path.stat()
        except OSError:
            return self._token
        if (info.st_mtime_ns, info.st_ino) != self._stamp:
            token = self._read()
            if token:
                self._token = token
                log.info("reloaded the agent token", extra={"fields": {"file": str(self._path)}})
        return self._token


def error_response(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": code, "message": message}, status=status)


def _authenticate(tokens: TokenSource | None) -> Middleware:
    @web.middleware
    async def middleware(request: web.Request, handler: _Handler) -> web.StreamResponse:
        if tokens is None or request.path == "/healthz":
            return await handler(request)
        scheme, _, presented = request.headers.get("Authorization", "").partition(" ")
        expected = tokens.current()
        # A header that is not UTF-8 arrives with surrogate escapes: compared as the bytes it
        # was, it simply does not match.
        if scheme.lower() == "bearer" and hmac.compare_digest(
            presented.strip().encode("utf-8", "surrogateescape"), expected.encode()
        ):
            return await handler(request)
        reason = "carries no bearer token" if not presented else "carries a wrong token"
        log.warning(
            "refused an unauthenticated request",
            extra={"fields": {"path": request.path, "remote": request.remote}},
        )
        response = error_response(
            401,
            "unauthorized",
            f"the request {reason}; send 'Authorization: Bearer <token>' with the token from "
            "the deployment's agent Secret",
        )
        response.headers["WWW-Authenticate"] = 'Bearer realm="infercycle-agent"'
        return response

    return middleware


@web.middleware
async def _errors(request: web.Request, handler: _Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except AgentOperationError as error:
        return error_response(error.status, error.code, error.message)
    except web.HTTPException as error:
        if error.status < 400:
            raise
        code = "not_found" if error.status == 404 else error.reason.lower().replace(" ", "_")
        message = (
            f"{request.method} {request.path} is not an agent route; the routes are "
            "POST /v1/checkpoint, POST /v1/restart, POST /v1/restore, GET /v1/status, "
            "GET /healthz"
        )
        return error_response(error.status, code, message)
    except Exception:
        log.exception("request failed", extra={"fields": {"path": request.path}})
        return error_response(
            500,
            "internal_error",
            "the agent hit an unexpected error; its log has the details",
        )


def _answer(model: BaseModel) -> web.Response:
    return web.json_response(model.model_dump(by_alias=True, mode="json"))


async def _checkpoint(request: web.Request) -> web.Response:
    return _answer(await request.app[AGENT_KEY].checkpoint())


async def _restart(request: web.Request) -> web.Response:
    return _answer(await request.app[AGENT_KEY].restart())


async def _restore(request: web.Request) -> web.Response:
    return _answer(await request.app[AGENT_KEY].restore())


async def _status(request: web.Request) -> web.Response:
    return _answer(await request.app[AGENT_KEY].status())


async def _healthz(_request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


def create_app(agent: Agent, tokens: TokenSource | None) -> web.Application:
    app = web.Application(middlewares=[_errors, _authenticate(tokens)])
    app[AGENT_KEY] = agent
    app.router.add_post("/v1/checkpoint", _checkpoint)
    app.router.add_post("/v1/restart", _restart)
    app.router.add_post("/v1/restore", _restore)
    app.router.add_get("/v1/status", _status)
    app.router.add_get("/healthz", _healthz)
    return app


class _AccessLogger(AbstractAccessLogger):
    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        self.logger.debug(
            "request",
            extra={
                "fields": {
                    "method": request.method,
                    "path": request.path,
                    "status": response.status,
                    "durationMs": round(time * 1000, 1),
                }
            },
        )


def _pause_before_commit(seconds: float) -> Callable[[Path], None]:
    def pause(staging: Path) -> None:
        log.warning(
            "fault injection: pausing before the checkpoint rename",
            extra={"fields": {"staging": str(staging), "seconds": seconds}},
        )
        time.sleep(seconds)

    return pause


async def serve(config: AgentConfig, tokens: TokenSource | None) -> int:
    """Run the agent until SIGTERM or SIGINT; the process exit code."""
    if config.pause_before_commit > 0:
        log.warning(
            f"{FAULT_PAUSE_BEFORE_COMMIT} is set: every checkpoint pauses before its rename; "
            "this is for crash tests only"
        )
    store = CheckpointStore(
        config.checkpoint_dir,
        keep=config.keep,
        max_size_bytes=config.max_size_bytes,
        pod_uid=config.pod_uid,
        snapshot_attempts=config.snapshot_attempts,
        before_commit=(
            _pause_before_commit(config.pause_before_commit)
            if config.pause_before_commit > 0
            else None
        ),
    )
    async with aiohttp.ClientSession() as http:
        hook = (
            SessionHook(
                config.session_hook,
                http,
                max_size_bytes=config.max_size_bytes,
                restore_method=config.restore_method,
                timeout=config.hook_timeout,
            )
            if config.session_hook is not None
            else None
        )
        agent = Agent(config, store, ProcessMatcher(config.server_process), hook)
        await agent.start()
        runner = web.AppRunner(
            create_app(agent, tokens),
            access_log_class=_AccessLogger,
            access_log=logging.getLogger("infercycle.agent.access"),
            handle_signals=False,
            # A connection without a complete request (idle keep-alive, or headers trickling
            # in) is closed after this long; a request being answered is never cut short.
            keepalive_timeout=config.idle_timeout,
        )
        await runner.setup()
        try:
            await web.TCPSite(runner, config.host, config.port).start()
        except OSError as error:
            log.error(
                "cannot listen; free the port or choose another with --port",
                extra={"fields": {"host": config.host, "port": config.port, "error": str(error)}},
            )
            await runner.cleanup()
            return 1
        log.info(
            "agent listening",
            extra={
                "fields": {
                    "host": config.host,
                    "port": config.port,
                    "source": config.source,
                    "sessionHook": config.session_hook,
                    "sessionDir": str(config.session_dir) if config.session_dir else None,
                    "checkpointDir": str(config.checkpoint_dir),
                    "serverProcess": config.server_process,
                    "keep": config.keep,
                    "maxSizeBytes": config.max_size_bytes,
                    "auth": tokens is not None,
                }
            },
        )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        watcher = asyncio.create_task(agent.watch())
        await stop.wait()
        log.info("agent stopping")
        watcher.cancel()
        await agent.close()
        await runner.cleanup()
    return 0


def main(argv: list[str] | None = None) -> int:
    """``infercycle agent``: parse flags and environment, then serve until told to stop."""
    try:
        config = parse_config(argv)
    except SystemExit as exit_request:
        return exit_request.code if isinstance(exit_request.code, int) else 2
    except ConfigError as error:
        jsonlog.configure()
        log.error(f"the agent cannot start: {error}")
        return 2
    jsonlog.configure(config.log_level)
    try:
        tokens = TokenSource(config.token_file) if config.token_file is not None else None
    except ConfigError as error:
        log.error(f"the agent cannot start: {error}")
        return 2
    if tokens is None:
        log.warning("running without authentication (--insecure-no-auth); for tests only")
    return asyncio.run(serve(config, tokens))


if __name__ == "__main__":
    raise SystemExit(main())
