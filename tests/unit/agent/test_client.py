"""The operator's agent client against small real HTTP servers that misbehave."""

from __future__ import annotations

import asyncio
import socket
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


async def _wrong_shape(_request: web.Request) -> web.Response:
    """Valid JSON, nothing like an agent's status: every field of the model is missing."""
    rows = [{"field": "x" * 200, "n": n} for n in range(200)]
    return web.json_response({"rows": rows})


async def _reset(request: web.Request) -> web.StreamResponse:
    """Reads the request, then drops the connection without answering."""
    assert request.transport is not None
    request.transport.close()
    return web.Response()


async def _chatty_error(_request: web.Request) -> web.Response:
    return web.json_response({"error": "busy" * 100, "message": "m" * 50_000}, status=409)


@pytest.fixture
async def misbehaving() -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_get("/flood/v1/status", _flood)
    app.router.add_get("/declared/v1/status", _declared)
    app.router.add_get("/trickle/v1/status", _trickle)
    app.router.add_get("/shape/v1/status", _wrong_shape)
    app.router.add_post("/reset/v1/restart", _reset)
    app.router.add_post("/chatty/v1/restart", _chatty_error)
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
    with pytest.raises(AgentUnavailable, match="within 1s") as timed_out:
        await client.status()
    assert time.monotonic() - started < 3
    assert timed_out.value.may_have_acted  # the request reached the agent; no answer came


async def test_a_connection_dropped_after_the_request_may_have_acted(misbehaving: str) -> None:
    client = AgentClient(f"{misbehaving}/reset", "token", timeout=5)
    with pytest.raises(AgentUnavailable) as reset:
        await client.restart()
    assert reset.value.may_have_acted


async def test_a_refused_connection_never_reached_the_agent() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client = AgentClient(f"http://127.0.0.1:{port}", "token", timeout=5)
    with pytest.raises(AgentUnavailable) as refused:
        await client.restart()
    assert not refused.value.may_have_acted


async def test_a_wrong_shaped_answer_is_named_in_one_short_line(misbehaving: str) -> None:
    client = AgentClient(f"{misbehaving}/shape", "token", timeout=5)
    with pytest.raises(AgentError) as wrong:
        await client.status()
    assert wrong.value.code == "invalid_response"
    assert "is not a AgentStatus" in str(wrong.value)
    assert "more problem" in str(wrong.value)
    assert len(str(wrong.value)) < 400, str(wrong.value)
    assert "x" * 50 not in str(wrong.value)  # the body itself is not repeated


async def test_an_error_answer_is_cut_to_a_few_hundred_characters(misbehaving: str) -> None:
    client = AgentClient(f"{misbehaving}/chatty", "token", timeout=5)
    with pytest.raises(AgentError) as chatty:
        await client.restart()
    assert chatty.value.http_status == 409
    assert not chatty.value.may_have_acted  # it answered: whatever it did, it said so
    assert len(str(chatty.value)) < 450
