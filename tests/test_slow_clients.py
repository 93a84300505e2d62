"""Slow and idle clients: timed out, and never in the way of anybody else.

The server runs behind :class:`TalerAppRunner` exactly as in production; the tests
that wait for a timeout use production limits with timeouts of about a second.  A
client "drips" by sending one byte per second.  No assertion measures speed: each
test only needs the server to act before a generous bound, which a server without
the timeout could never meet (the drips would last far longer).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from dataclasses import replace
from typing import AsyncIterator

import aiohttp
import pytest
from test_raw_http import (
    assert_error_detail,
    connection,
    parse_replies,
    receive,
    request_bytes,
    serving,
)

from merchant_authd.config import Settings
from merchant_authd.web.app import create_app
from merchant_authd.web.protocol import DEFAULT_LIMITS

#: Production limits, timeouts shortened to about a second.
FAST = replace(
    DEFAULT_LIMITS, keepalive_timeout=1.0, body_timeout=1.5, lingering_time=0.5
)
#: Seconds between two dripped bytes.
DRIP_S = 1.0
#: Bytes a drip would send; at DRIP_S it outlasts every bound used here.
DRIP_BYTES = 40
#: Seconds a normal request may take while the slow clients hang on.
PROMPT_S = 5.0
#: Slow clients of each kind held open while a normal client is served.
CROWD = 10


@pytest.fixture
async def port(settings: Settings) -> AsyncIterator[int]:
    """A server with short timeouts."""
    async with serving(create_app(settings), FAST) as bound:
        yield bound


async def drip(sock: socket.socket, data: bytes) -> int:
    """Send ``data`` one byte per DRIP_S; the bytes sent before the server quit."""
    loop = asyncio.get_running_loop()
    sent = 0
    try:
        for byte in data:
            await loop.sock_sendall(sock, bytes([byte]))
            sent += 1
            await asyncio.sleep(DRIP_S)
    except ConnectionError:
        pass
    return sent


@contextlib.asynccontextmanager
async def dripping(
    port: int, head: bytes, data: bytes
) -> AsyncIterator[tuple[socket.socket, asyncio.Task[int]]]:
    """A connection that sent ``head`` at once and is dripping ``data``."""
    async with connection(port) as sock:
        await asyncio.get_running_loop().sock_sendall(sock, head)
        task = asyncio.create_task(drip(sock, data))
        try:
            yield sock, task
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def test_idle_connection_is_closed(port: int) -> None:
    async with connection(port) as sock:
        assert await receive(sock) == b""


async def test_keep_alive_connection_is_closed_when_idle(port: int) -> None:
    async with connection(port) as sock:
        loop = asyncio.get_running_loop()
        await loop.sock_sendall(sock, b"GET /config HTTP/1.1\r\nHost: x\r\n\r\n")
        [reply] = parse_replies(await receive(sock))
        assert reply.status == 200


async def test_header_drip_is_cut_off(port: int) -> None:
    head = b"GET /config HTTP/1.1\r\nHost: x\r\n"
    async with dripping(port, head, b"X-Drip: " + b"a" * DRIP_BYTES) as (sock, task):
        assert await receive(sock) == b""
        assert await task < DRIP_BYTES


async def test_request_line_drip_is_cut_off(port: int) -> None:
    async with dripping(port, b"", b"GET /" + b"a" * DRIP_BYTES) as (sock, task):
        assert await receive(sock) == b""
        assert await task < DRIP_BYTES


async def test_body_drip_is_408(port: int) -> None:
    head = request_bytes(
        "POST", "/challenge/abc/confirm", content_length=DRIP_BYTES + 8
    )
    async with dripping(port, head, b'{"tan":"' + b"1" * DRIP_BYTES) as (sock, task):
        [reply] = parse_replies(await receive(sock))
        body = assert_error_detail(reply, 408, 22)
        assert "did not arrive" in body["detail"]
        assert await task < DRIP_BYTES


async def test_unread_body_is_drained_only_briefly(port: int) -> None:
    # GET /config never reads a body; the server drains it for lingering_time.
    head = request_bytes("GET", "/config", content_length=DRIP_BYTES)
    async with dripping(port, head, b"x" * DRIP_BYTES) as (sock, task):
        [reply] = parse_replies(await receive(sock))
        assert reply.status == 200
        assert await task < DRIP_BYTES


async def test_slow_clients_do_not_delay_others(settings: Settings) -> None:
    # Production timeouts: the slow clients stay connected throughout.
    async with serving(create_app(settings), DEFAULT_LIMITS) as port:
        body_head = request_bytes("POST", "/challenge/abc/confirm", content_length=99)
        kinds = [
            (b"", b""),
            (b"GET /config HTTP/1.1\r\nHost: x\r\n", b"X-Drip: " + b"a" * 90),
            (body_head, b'{"tan": "' + b"1" * 90),
        ]
        async with contextlib.AsyncExitStack() as stack:
            slow = [
                await stack.enter_async_context(dripping(port, head, data))
                for head, data in kinds * CROWD
            ]
            timeout = aiohttp.ClientTimeout(total=PROMPT_S)
            async with aiohttp.ClientSession(timeout=timeout) as session:
                base = f"http://127.0.0.1:{port}"
                async with session.get(f"{base}/config") as response:
                    assert response.status == 200
                    assert (await response.json())["name"] == "taler-merchant"
                confirm = f"{base}/challenge/unknown/confirm"
                async with session.post(confirm, json={"tan": "1"}) as response:
                    assert response.status == 404
            # Every dripping client is still sending: none was cut to serve others.
            dripping_tasks = [task for _, task in slow[1::3] + slow[2::3]]
            assert not any(task.done() for task in dripping_tasks)
