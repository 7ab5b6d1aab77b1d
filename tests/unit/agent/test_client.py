"""The operator's agent client against small real HTTP servers that misbehave."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from infercycle.agent.client import MAX_RESPONSE_BYTES, AgentClient, AgentError, AgentUnavailable

pytestmark = pytest.mark.timeout(30)


async def _flood(request: web.Request) -> web.StreamResponse:
    """An answer without a length that never ends."""
    response = web.StreamResponse(headers={"Content-Type": "application/json"})
    await response.prepare(request)
    chunk = b" " * (256 << 10)
    try:
        while True:
            await response.write(chunk)
    except (ConnectionResetError, RuntimeError):
        pass
    return response


async def _declared(_request: web.Request) -> web.Response:
    return web.Response(body=b"x" * (MAX_RESPONSE_BYTES + 1), content_type="application/json")


async def _trickle(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "application/json"})
    await response.prepare(request)
    for _ in range(100):
        await response.write(b" ")
        await asyncio.sleep(0.2)
    return response


@pytest.fixture
async def misbehaving() -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_get("/flood/v1/status", _flood)
    app.router.add_get("/declared/v1/status", _declared)
    app.router.add_get("/trickle/v1/status", _trickle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield f"http://127.0.0.1:{port}"
    await runner.cleanup()


@pytest.mark.parametrize("route", ["flood", "declared"])
async def test_an_answer_above_the_size_limit_is_refused(misbehaving: str, route: str) -> None:
    client = AgentClient(f"{misbehaving}/{route}", "token", timeout=10)
    with pytest.raises(AgentError) as refused:
        await client.status()
    assert refused.value.code == "response_too_large"
    assert str(MAX_RESPONSE_BYTES) in refused.value.message


async def test_an_answer_that_trickles_in_is_cut_off_at_the_timeout(misbehaving: str) -> None:
    client = AgentClient(f"{misbehaving}/trickle", "token", timeout=1)
    started = time.monotonic()
    with pytest.raises(AgentUnavailable, match="within 1s"):
        await client.status()
    assert time.monotonic() - started < 3
