"""The server's session hook: ``GET`` returns its session state as JSON, ``PUT`` takes it back."""

from __future__ import annotations

import re
from typing import Literal

import aiohttp

from infercycle import errors
from infercycle.agent.store import state_too_large

_JSON_DOCUMENT = re.compile(rb"\s*[\[{]")


class HookError(errors.AgentSideError):
    code = "session_hook_failed"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class HookUnavailableError(HookError):
    code = "session_hook_unreachable"


class SessionHook:
    def __init__(
        self,
        url: str,
        session: aiohttp.ClientSession,
        *,
        max_size_bytes: int,
        restore_method: Literal["PUT", "POST"] = "PUT",
        timeout: float = 60.0,
    ) -> None:
        self.url = url
        self._session = session
        self._max_size_bytes = max_size_bytes
        self._restore_method = restore_method
        self._timeout = aiohttp.ClientTimeout(total=timeout)

    async def fetch(self) -> bytes:
        """The server's session state, refused before it grows past the size limit."""
        try:
            async with self._session.get(self.url, timeout=self._timeout) as response:
                await self._check(response, "GET")
                if (response.content_length or 0) > self._max_size_bytes:
                    raise state_too_large(response.content_length or 0, self._max_size_bytes)
                body = bytearray()
                async for chunk in response.content.iter_any():
                    body.extend(chunk)
                    if len(body) > self._max_size_bytes:
                        raise state_too_large(len(body), self._max_size_bytes, at_least=True)
        except (aiohttp.ClientError, TimeoutError) as error:
            raise self._unavailable("GET", error) from error
        data = bytes(body)
        if not _JSON_DOCUMENT.match(data):
            msg = (
                f"the session hook {self.url} did not return a JSON object or array; point "
                "--session-hook at the server route that exports the session state"
            )
            raise HookError(msg)
        return data

    async def push(self, data: bytes) -> None:
        """Give the server its session state back."""
        method = self._restore_method
        try:
            async with self._session.request(
                method,
                self.url,
                data=data,
                headers={"Content-Type": "application/json"},
                timeout=self._timeout,
            ) as response:
                await self._check(response, method)
        except (aiohttp.ClientError, TimeoutError) as error:
            raise self._unavailable(method, error) from error

    async def is_ready(self, within: float = 5.0) -> bool:
        """Whether the hook answers a ``GET`` with success now."""
        try:
            async with self._session.get(
                self.url, timeout=aiohttp.ClientTimeout(total=within)
            ) as response:
                await response.read()
                return 200 <= response.status < 300
        except (aiohttp.ClientError, TimeoutError):
            return False

    async def _check(self, response: aiohttp.ClientResponse, method: str) -> None:
        if 200 <= response.status < 300:
            return
        text = (await response.text(errors="replace"))[:200]
        msg = (
            f"the session hook answered {method} {self.url} with HTTP {response.status} "
            f"({text.strip() or response.reason}); check that the server is up and that "
            "--session-hook names its session state route"
        )
        raise HookError(msg)

    def _unavailable(self, method: str, error: BaseException) -> HookUnavailableError:
        reason = (
            "timed out" if isinstance(error, TimeoutError) else str(error) or type(error).__name__
        )
        msg = (
            f"the session hook {method} {self.url} failed: {reason}; check that the server is "
            "running and listening where --session-hook points"
        )
        return HookUnavailableError(msg)
