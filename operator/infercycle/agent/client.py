"""The operator's side of the agent API.

    client = AgentClient("http://10.0.0.7:8089", token, timeout=120)
    result = await client.checkpoint()      # CheckpointResult(id, sha256, size_bytes, ...)
    await client.restart()                  # RestartResult(pid, signal, duration_ms, ...)
    status = await client.status()          # AgentStatus(last_restore=..., server=..., ...)

Every call raises ``AgentError`` when the agent answers with an error (``code``, ``message``,
``http_status``) and ``AgentUnavailable`` when it cannot be reached in time. A restart waits for
the server's grace period, so its timeout must be longer than ``--grace-period``.

The agent runs an image the deployment's owner chooses, so its answers are not trusted: each call
is bounded in time (the timeout covers connecting, waiting and reading) and in size
(``MAX_RESPONSE_BYTES``; a longer answer is refused without being read).
"""

from __future__ import annotations

import json
from typing import TypeVar

import aiohttp
from pydantic import ValidationError

from infercycle import errors
from infercycle.agent.protocol import (
    AgentStatus,
    CheckpointResult,
    RestartResult,
    RestoreResult,
    WireModel,
)

__all__ = [
    "AgentClient",
    "AgentClientError",
    "AgentError",
    "AgentStatus",
    "AgentUnavailable",
    "CheckpointResult",
    "RestartResult",
    "RestoreResult",
]

_M = TypeVar("_M", bound=WireModel)
# The largest answer read from an agent: its JSON documents are a few kilobytes.
MAX_RESPONSE_BYTES = 1 << 20


AgentClientError = errors.AgentClientError


class AgentError(AgentClientError):
    """The agent answered, with an error."""

    def __init__(self, code: str, message: str, http_status: int) -> None:
        super().__init__(f"{code} (HTTP {http_status}): {message}")
        self.code = code
        self.message = message
        self.http_status = http_status


class AgentUnavailable(AgentClientError):  # noqa: N818 - the name the operator code uses
    """The agent could not be reached (connection refused, DNS failure), or gave no answer
    (timeout, connection reset): ``may_have_acted`` tells the second kind."""

    def __init__(self, message: str, *, may_have_acted: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.may_have_acted = may_have_acted


class AgentClient:
    """Calls one pod's recycle agent. Cheap to create; holds no connection between calls."""

    def __init__(self, base_url: str, token: str, timeout: float = 60.0) -> None:
        self.base_url = base_url.rstrip("/")
        self._token = token
        self._timeout = timeout

    async def checkpoint(self) -> CheckpointResult:
        """Write the server's sessions to the pod's volume; the checkpoint id and checksum."""
        return await self._call("POST", "/v1/checkpoint", CheckpointResult)

    async def restart(self) -> RestartResult:
        """Stop the server process so that its container restarts in place."""
        return await self._call("POST", "/v1/restart", RestartResult)

    async def restore(self) -> RestoreResult:
        """Give the newest valid checkpoint back to the server now."""
        return await self._call("POST", "/v1/restore", RestoreResult)

    async def status(self) -> AgentStatus:
        """Last checkpoint, last restore, the server process, and any operation in progress."""
        return await self._call("GET", "/v1/status", AgentStatus)

    async def healthy(self) -> bool:
        """Whether the agent answers its liveness route."""
        try:
            async with (
                aiohttp.ClientSession(
                    timeout=aiohttp.ClientTimeout(total=self._timeout)
                ) as session,
                session.get(f"{self.base_url}/healthz") as response,
            ):
                return response.status == 200
        except (aiohttp.ClientError, TimeoutError):
            return False

    async def _call(self, method: str, path: str, model: type[_M]) -> _M:
        url = f"{self.base_url}{path}"
        headers = {"Authorization": f"Bearer {self._token}", "Accept": "application/json"}
        try:
            async with (
                aiohttp.ClientSession(
                    timeout=aiohttp.ClientTimeout(total=self._timeout)
                ) as session,
                session.request(method, url, headers=headers) as response,
            ):
                status = response.status
                body = await _read_bounded(response, MAX_RESPONSE_BYTES)
        except TimeoutError as error:
            msg = f"{method} {url} got no answer within {self._timeout:g}s"
            raise AgentUnavailable(msg, may_have_acted=True) from error
        except aiohttp.ClientResponseError as error:
            raise AgentError("bad_response", str(error), error.status) from error
        except aiohttp.ClientConnectorError as error:
            # No connection was made, so the request never reached the agent.
            msg = f"{method} {url} failed: {error or type(error).__name__}"
            raise AgentUnavailable(msg) from error
        except aiohttp.ClientError as error:
            msg = f"{method} {url} failed: {error or type(error).__name__}"
            raise AgentUnavailable(msg, may_have_acted=True) from error
        if not 200 <= status < 300:
            raise _error_from(body, status)
        try:
            return model.model_validate_json(body)
        except ValidationError as error:
            msg = (
                f"{method} {url} answered with a body that is not a {model.__name__}: "
                f"{_first_problem(error)}"
            )
            raise AgentError("invalid_response", msg, status) from error


def _first_problem(error: ValidationError) -> str:
    """The first of a validation error's problems, in one short line, and how many more."""
    problems = error.errors(include_url=False, include_input=False)
    if not problems:
        return "invalid"
    first = problems[0]
    where = ".".join(str(part) for part in first.get("loc", ())) or "the document"
    text = f"{where}: {first.get('msg', 'invalid')}"
    more = len(problems) - 1
    return f"{text} (and {more} more problem{'s' if more > 1 else ''})" if more else text


async def _read_bounded(response: aiohttp.ClientResponse, limit: int) -> bytes:
    declared = response.content_length
    if declared is not None and declared > limit:
        msg = f"the agent's answer declares {declared} bytes, more than the {limit} allowed"
        raise AgentError("response_too_large", msg, response.status)
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.content.iter_chunked(64 << 10):
        size += len(chunk)
        if size > limit:
            msg = f"the agent's answer is longer than the {limit} bytes allowed"
            raise AgentError("response_too_large", msg, response.status)
        chunks.append(chunk)
    return b"".join(chunks)


def _error_from(body: bytes, status: int) -> AgentError:
    try:
        parsed = json.loads(body)
    except ValueError:
        parsed = None
    if isinstance(parsed, dict) and isinstance(parsed.get("error"), str):
        # The agent's words go into events and status: a few hundred characters of them.
        return AgentError(parsed["error"][:64], str(parsed.get("message", ""))[:300], status)
    text = body.decode(errors="replace").strip()[:300]
    return AgentError("unexpected_response", text or f"HTTP {status} without a body", status)
