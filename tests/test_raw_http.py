"""Hostile bytes on a real socket: broken framing, floods, bombs and huge inputs.

The application runs behind :class:`TalerAppRunner` with the production limits (only
the timeouts are shorter), on 127.0.0.1 port 0; requests are written byte for byte with
asyncio streams, so nothing a client library would tidy up is tidied.  Every answer
must be an ``ErrorDetail`` with the right status and code, never a 5xx, never text
quoting the request.  One test runs the real daemon to check that the server closes
oversized uploads early and that its memory stays bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import zlib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import AsyncIterator, Iterator

import pytest
from aiohttp import web
from aiohttp.typedefs import Handler
from conftest import ADMIN_PASSWORD, basic, instance_body

from merchant_authd.config import Settings
from merchant_authd.web.app import create_app
from merchant_authd.web.middleware import MAX_URI_LENGTH
from merchant_authd.web.protocol import (
    DEFAULT_LIMITS,
    Limits,
    TalerAppRunner,
    TalerRequestHandler,
    TalerServer,
    server_options,
)

#: Production limits with timeouts short enough for a test.
LIMITS = replace(
    DEFAULT_LIMITS, keepalive_timeout=5.0, body_timeout=1.0, lingering_time=0.5
)
#: Seconds any one exchange may take before the test gives up (the host is shared).
BOUND_S = 15.0
TEN_MB = 10 * 1024 * 1024
#: A chunked upload that would take 40 s at the pace of ``_stream_chunked``: a
#: server that stops reading makes the client fail long before it is all sent.
ENDLESS = 1024 * 1024 * 1024
SECRET = "secret-token:PLANTEDSECRETMUSTNOTBEECHOED"
TRACEBACK_MARKS = ("Traceback", 'File "')


@contextlib.asynccontextmanager
async def serving(app: web.Application, limits: Limits = LIMITS) -> AsyncIterator[int]:
    """Serve ``app`` the way ``server.serve`` does; yields the bound port."""
    runner = TalerAppRunner(app, access_log=None, **server_options(limits))
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        yield site.port
    finally:
        await runner.cleanup()


@pytest.fixture
async def port(settings: Settings) -> AsyncIterator[int]:
    """The port of a served application with no instances."""
    async with serving(create_app(settings)) as bound:
        yield bound


@dataclass
class Reply:
    """One HTTP response read off the wire."""

    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> dict:
        """The body as JSON."""
        value: dict = json.loads(self.body)
        return value


def parse_replies(raw: bytes) -> list[Reply]:
    """Every complete response in ``raw`` (responses carry a Content-Length)."""
    replies = []
    while raw:
        head, separator, rest = raw.partition(b"\r\n\r\n")
        assert separator, f"incomplete response head: {raw[:200]!r}"
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ")[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0"))
        replies.append(Reply(status, headers, rest[:length]))
        raw = rest[length:]
    return replies


@contextlib.asynccontextmanager
async def connection(port: int) -> AsyncIterator[socket.socket]:
    """A plain TCP connection to the server, closed afterwards.

    Plain sockets rather than asyncio streams: a stream discards bytes it already
    received once the peer resets the connection, and a server that closes with an
    upload still arriving does reset it right after its answer.
    """
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    try:
        await loop.sock_connect(sock, ("127.0.0.1", port))
        yield sock
    finally:
        sock.close()


async def receive(sock: socket.socket, *, until_closed: bool = True) -> bytes:
    """What the server sends until it closes (or, if not ``until_closed``, until
    one whole response has arrived)."""
    loop = asyncio.get_running_loop()
    received = b""

    async def collect() -> None:
        nonlocal received
        while until_closed or not _complete(received):
            try:
                data = await loop.sock_recv(sock, 65536)
            except ConnectionError:
                return
            if not data:
                return
            received += data

    await asyncio.wait_for(collect(), BOUND_S)
    return received


def _complete(raw: bytes) -> bool:
    head, separator, rest = raw.partition(b"\r\n\r\n")
    if not separator:
        return False
    for line in head.decode("latin-1").lower().split("\r\n"):
        if line.startswith("content-length:"):
            return len(rest) >= int(line.split(":", 1)[1])
    return True


async def exchange(port: int, data: bytes, *, half_close: bool = False) -> bytes:
    """Write ``data``, then read until the server closes the connection."""
    loop = asyncio.get_running_loop()
    async with connection(port) as sock:
        await loop.sock_sendall(sock, data)
        if half_close:
            sock.shutdown(socket.SHUT_WR)
        return await receive(sock)


def request_bytes(
    method: str,
    target: str | bytes,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
    *,
    content_length: int | None = None,
) -> bytes:
    """A request as bytes; ``Connection: close`` so that the answer ends in EOF."""
    raw_target = target.encode("latin-1") if isinstance(target, str) else target
    lines = [
        method.encode() + b" " + raw_target + b" HTTP/1.1",
        b"Host: 127.0.0.1",
        b"Connection: close",
    ]
    length = len(body) if content_length is None else content_length
    if body or content_length is not None:
        lines.append(b"Content-Length: %d" % length)
    for name, value in (headers or {}).items():
        lines.append(f"{name}: {value}".encode("latin-1"))
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def assert_error_detail(reply: Reply, status: int, code: int) -> dict:
    """``reply`` is an ``ErrorDetail`` with ``status`` and ``code``."""
    text = reply.body.decode("utf-8", errors="replace")
    assert reply.status == status, text
    assert reply.headers["content-type"].startswith("application/json"), text
    assert reply.headers.get("access-control-allow-origin") == "*"
    body = reply.json()
    assert body["code"] == code, text
    assert isinstance(body["hint"], str)
    for mark in TRACEBACK_MARKS:
        assert mark not in text
    return body


async def single(port: int, data: bytes) -> Reply:
    """The first answer to ``data`` (without waiting for the connection to close).

    The server may stop reading before all of ``data`` is sent; the answer counts.
    """
    loop = asyncio.get_running_loop()
    async with connection(port) as sock:
        with contextlib.suppress(ConnectionError):
            await loop.sock_sendall(sock, data)
        return parse_replies(await receive(sock, until_closed=False))[0]


async def test_production_runner_speaks_through_the_taler_handler(
    settings: Settings,
) -> None:
    runner = TalerAppRunner(create_app(settings), **server_options())
    await runner.setup()
    try:
        assert isinstance(runner.server, TalerServer)
        assert isinstance(runner.server(), TalerRequestHandler)
    finally:
        await runner.cleanup()


def test_limits_keep_uri_and_header_overflows_apart() -> None:
    with pytest.raises(ValueError):
        Limits(max_line_size=8000, max_field_size=8000)
    assert DEFAULT_LIMITS.max_line_size > MAX_URI_LENGTH


@pytest.mark.parametrize(
    "target",
    [
        "/" + "a" * (MAX_URI_LENGTH + 1),  # caught by the middleware
        "/config?" + "q=1&" * 2000,  # a long query counts too
        "/instances/" + "%41" * 3000 + "/private",
        "/" + "b" * (DEFAULT_LIMITS.max_line_size + 10),  # caught by the parser
    ],
    ids=["path", "query", "encoded", "over-parser-limit"],
)
async def test_long_uri_is_414(port: int, target: str) -> None:
    reply = await single(port, request_bytes("GET", target))
    assert_error_detail(reply, 414, 31)


async def test_uri_at_the_limit_is_served(port: int) -> None:
    target = "/config?pad=" + "x" * (MAX_URI_LENGTH - len("/config?pad="))
    reply = await single(port, request_bytes("GET", target))
    assert reply.status == 200


@pytest.mark.parametrize(
    "data",
    [
        request_bytes("GET", "/config", headers={f"X-H{i}": "v" for i in range(200)}),
        request_bytes("GET", "/config", headers={"X-Big": "y" * 9000}),
        request_bytes("GET", "/config", headers={"X-" + "n" * 9000: "v"}),
        request_bytes(
            "GET", "/private", headers={"Authorization": f"Bearer {SECRET}" * 300}
        ),
        b"GET /config HTTP/1.1\r\n\r\n",  # no Host
        b"G(T /config HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /config HTTP/9.9\r\nHost: x\r\n\r\n",
        b"GET /con fig HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /config HTTP/1.1\r\nHost: x\r\nBad Header: v\r\n\r\n",
        b"GET /config HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n",
        b"POST /instances HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
        b"POST /instances HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n",
        b"POST /instances HTTP/1.1\r\nHost: x\r\n"
        b"Content-Length: 2\r\nContent-Length: 3\r\n\r\n{}",
        b"POST /instances HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
        b"Content-Length: 2\r\n\r\n{}",
        b"POST /instances HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n{}",
        b"POST /challenge/x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
        b"\r\nzz\r\n{}\r\n0\r\n\r\n",
        bytes.fromhex("16030100a5010000a10303") + bytes(40),  # a TLS ClientHello
        b"\x00" * 64 + b"\r\n\r\n",
    ],
    ids=[
        "header-flood",
        "huge-header-value",
        "huge-header-name",
        "huge-authorization",
        "no-host",
        "bad-method",
        "bad-version",
        "space-in-target",
        "space-in-header-name",
        "nul-in-header",
        "content-length-text",
        "content-length-negative",
        "content-length-twice",
        "chunked-and-length",
        "unknown-transfer-coding",
        "bad-chunk-size",
        "tls-on-http",
        "binary-garbage",
    ],
)
async def test_unparsable_request_is_400_error_detail(
    port: int, data: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    reply = await single(port, data)
    assert_error_detail(reply, 400, 23)
    assert SECRET.encode() not in reply.body
    assert "PLANTEDSECRET" not in caplog.text


@pytest.mark.parametrize("how", ["half-close", "close"])
async def test_truncated_body_is_no_server_failure(
    port: int, how: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="merchant_authd")
    data = request_bytes(
        "POST", "/management/instances", b'{"id": "sh', content_length=100
    )
    if how == "half-close":
        raw = await exchange(port, data, half_close=True)
        assert all(reply.status < 500 for reply in parse_replies(raw))
    else:
        async with connection(port) as sock:
            await asyncio.get_running_loop().sock_sendall(sock, data)
    # The handler sees the loss; it must neither crash nor log a failure.
    for _ in range(100):
        if "POST /management/instances" in caplog.text:
            break
        await asyncio.sleep(0.05)
    assert "POST /management/instances 400 22" in caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    reply = await single(port, request_bytes("GET", "/config"))
    assert reply.status == 200


async def test_body_shorter_than_content_length_times_out_408(port: int) -> None:
    data = request_bytes("POST", "/challenge/abc/confirm", b'{"tan"', content_length=50)
    reply = await single(port, data)
    body = assert_error_detail(reply, 408, 22)
    assert "did not arrive" in body["detail"]


async def test_body_longer_than_content_length_is_not_a_second_request(
    port: int,
) -> None:
    data = request_bytes(
        "POST", "/challenge/abc/confirm", b'{"tan": "1"}GET /config', content_length=5
    )
    replies = parse_replies(await exchange(port, data))
    assert replies
    for reply in replies:
        assert 400 <= reply.status < 500
        assert reply.json()["code"] in (22, 23)


async def test_declared_ten_megabytes_is_413_without_reading(port: int) -> None:
    # Only the head is sent: the answer proves the body was never waited for, and
    # the connection ends after it (within the lingering time).
    data = request_bytes("POST", "/management/instances", content_length=TEN_MB)
    [reply] = parse_replies(await exchange(port, data))
    assert_error_detail(reply, 413, 32)
    assert reply.headers["connection"] == "close"


async def _stream_chunked(sock: socket.socket, total: int) -> int:
    """Send ``total`` bytes in chunks at about 25 MB/s; the bytes sent before the
    peer quit.  The pace keeps the kernel's socket buffers from hiding whether the
    server still reads."""
    loop = asyncio.get_running_loop()
    piece = b"[" + b" " * (256 * 1024 - 1)
    sent = 0
    try:
        while sent < total:
            await loop.sock_sendall(sock, b"%x\r\n" % len(piece) + piece + b"\r\n")
            sent += len(piece)
            await asyncio.sleep(0.01)
        await loop.sock_sendall(sock, b"0\r\n\r\n")
    except ConnectionError:
        pass
    return sent


async def endless_upload(port: int, target: str) -> tuple[Reply, int]:
    """The answer to an endless chunked upload, and how much of it got sent."""
    head = f"POST {target} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    async with connection(port) as sock:
        await asyncio.get_running_loop().sock_sendall(sock, head.encode())
        sender = asyncio.create_task(_stream_chunked(sock, ENDLESS))
        try:
            [reply] = parse_replies(await receive(sock))
            # The server closed its end; the upload cannot complete.
            sent = await asyncio.wait_for(sender, BOUND_S)
        finally:
            sender.cancel()
    return reply, sent


async def test_endless_chunked_upload_is_413_and_cut_off(port: int) -> None:
    reply, sent = await endless_upload(port, "/challenge/abc/confirm")
    assert_error_detail(reply, 413, 32)
    assert sent < ENDLESS


def _deflated(size: int, wrapper: str) -> bytes:
    """``size`` zero bytes, compressed (``deflate`` is zlib format, as in HTTP)."""
    if wrapper == "gzip":
        compressor = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    else:
        compressor = zlib.compressobj(9)
    block = bytes(1024 * 1024)
    parts = [compressor.compress(block) for _ in range(size // len(block))]
    return b"".join(parts) + compressor.flush()


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
async def test_decompression_bomb_is_413(port: int, encoding: str) -> None:
    bomb = _deflated(64 * 1024 * 1024, encoding)
    assert len(bomb) < 1024 * 1024
    data = request_bytes(
        "POST", "/challenge/abc", bomb, headers={"Content-Encoding": encoding}
    )
    reply = await single(port, data)
    assert_error_detail(reply, 413, 32)


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
async def test_broken_compression_is_400_28(port: int, encoding: str) -> None:
    good = gzip.compress(b"{}") if encoding == "gzip" else zlib.compress(b"{}")
    broken = good[:4] + b"\xff\xfe\xfd" * 8
    data = request_bytes(
        "POST", "/challenge/abc", broken, headers={"Content-Encoding": encoding}
    )
    reply = await single(port, data)
    assert_error_detail(reply, 400, 28)


@pytest.mark.parametrize(
    "body",
    [
        b'{"tan": "\xff\xfe"}',
        b'{"tan": "\xed\xa0\x80"}',  # an encoded surrogate
        b"[" * 100_000,
        b'{"a":' * 50_000 + b"1" + b"}" * 50_000,
        b'{"tan": ' + b"9" * 5000 + b"}",
        b'{"tan": "1", "x": NaN}',
        b'{"tan": "1", "x": -Infinity}',
        b'{"tan": "1"',
        b"",
    ],
    ids=[
        "invalid-utf8",
        "surrogate",
        "deep-array",
        "deep-object",
        "int-5000-digits",
        "nan",
        "infinity",
        "truncated-json",
        "empty",
    ],
)
async def test_undecodable_json_is_400_22(port: int, body: bytes) -> None:
    data = request_bytes(
        "POST", "/challenge/abc/confirm", body, content_length=len(body)
    )
    reply = await single(port, data)
    assert_error_detail(reply, 400, 22)


@pytest.mark.parametrize(
    "body",
    [
        b'{"id": "admin", "name": "n", "auth": {"method": "token", "password": '
        b'"\\ud800"}}',
        b'{"id": "admin", "name": "a\\udfff", "auth": {"method": "token", '
        b'"password": "p"}}',
    ],
    ids=["password", "name"],
)
async def test_lone_surrogate_is_400_22(port: int, body: bytes) -> None:
    # Valid JSON, yet no UTF-8 string: it once reached bcrypt and failed there.
    reply = await single(port, request_bytes("POST", "/management/instances", body))
    assert_error_detail(reply, 400, 22)


@pytest.mark.parametrize(
    "body",
    [b'{"tan": 1e400}', b'{"tan": -1e400}', b'{"tan": ' + b"9" * 4000 + b"}"],
    ids=["1e400", "-1e400", "int-4000-digits"],
)
async def test_huge_number_for_a_string_member_is_400_26(
    port: int, body: bytes
) -> None:
    reply = await single(port, request_bytes("POST", "/challenge/abc/confirm", body))
    assert_error_detail(reply, 400, 26)


async def test_huge_numbers_in_a_login_request(settings: Settings) -> None:
    async with serving(create_app(settings)) as bound:
        create = json.dumps(instance_body("admin", ADMIN_PASSWORD)).encode()
        reply = await single(
            bound, request_bytes("POST", "/management/instances", create)
        )
        assert reply.status == 204
        for duration in (b"1e400", b"1" + b"0" * 400, b"-1", b"1.5"):
            body = b'{"scope": "readonly", "duration": {"d_us": ' + duration + b"}}"
            data = request_bytes(
                "POST", "/private/token", body, basic("admin", ADMIN_PASSWORD)
            )
            assert_error_detail(await single(bound, data), 400, 26)


async def test_failure_outside_the_middleware_is_500_error_detail(
    caplog: pytest.LogCaptureFixture,
) -> None:
    @web.middleware
    async def broken(request: web.Request, handler: Handler) -> web.StreamResponse:
        raise RuntimeError("a bug in front of every handler")

    app = web.Application(middlewares=[broken])
    async with serving(app) as bound:
        for accept in ("application/json", "text/html"):
            data = request_bytes("GET", "/anything", headers={"Accept": accept})
            reply = await single(bound, data)
            assert_error_detail(reply, 500, 60)
            assert b"a bug" not in reply.body
    assert "a bug in front of every handler" in caplog.text  # logged, not sent


# The real daemon ---------------------------------------------------------------


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        bound: int = probe.getsockname()[1]
    return bound


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


@pytest.fixture
def daemon_port(tmp_path: Path) -> Iterator[tuple[int, int]]:
    """(port, pid) of a running ``merchant-authd``; stopped with SIGTERM after."""
    port = _free_port()
    config = tmp_path / "authd.conf"
    config.write_text(
        f"[merchant]\nPORT = {port}\nBIND_TO = 127.0.0.1\n"
        f"[merchantdb-sqlite]\nDATABASE = {tmp_path / 'authd.sqlite3'}\n"
        "[merchant-authd]\nBCRYPT_COST = 4\nLOG_LEVEL = WARNING\n",
        encoding="utf-8",
    )
    drop = (
        "NOTIFY_SOCKET",
        "JOURNAL_STREAM",
        "TALER_MERCHANT_TOKEN",
        "TALER_MERCHANT_PASSWORD",
    )
    env = {key: value for key, value in os.environ.items() if key not in drop}
    log_path = tmp_path / "daemon.log"
    with open(log_path, "wb") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "merchant_authd", "-c", str(config)],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=env,
        )
    try:
        deadline = time.monotonic() + BOUND_S
        while True:
            try:
                url = f"http://127.0.0.1:{port}/config"
                with urllib.request.urlopen(url, timeout=2) as answer:
                    assert answer.status == 200
                break
            except OSError:
                assert process.poll() is None, log_path.read_text()
                assert time.monotonic() < deadline, log_path.read_text()
                time.sleep(0.1)
        yield port, process.pid
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(BOUND_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(BOUND_S)
    log_text = log_path.read_text(errors="replace")
    assert "Traceback" not in log_text, log_text


async def test_real_daemon_refuses_floods_with_bounded_memory(
    daemon_port: tuple[int, int],
) -> None:
    port, pid = daemon_port
    bomb = _deflated(128 * 1024 * 1024, "deflate")
    before = 0
    for round_ in range(3):
        if round_ == 1:  # the first round warms every code path up
            before = _rss_kib(pid)
        declared = request_bytes("POST", "/instances", content_length=TEN_MB)
        assert_error_detail(await single(port, declared), 413, 32)
        upload = request_bytes("POST", "/instances", b"[" * TEN_MB)
        assert_error_detail(await single(port, upload), 413, 32)
        reply, sent = await endless_upload(port, "/challenge/abc")
        assert_error_detail(reply, 413, 32)
        assert sent < ENDLESS
        data = request_bytes(
            "POST", "/challenge/abc", bomb, headers={"Content-Encoding": "deflate"}
        )
        assert_error_detail(await single(port, data), 413, 32)
    # The production parser limits apply: the request line overflow is JSON too.
    long_line = request_bytes("GET", "/" + "u" * (DEFAULT_LIMITS.max_line_size + 1))
    assert_error_detail(await single(port, long_line), 414, 31)
    flood = request_bytes("GET", "/config", headers={f"X-{i}": "v" for i in range(100)})
    assert_error_detail(await single(port, flood), 400, 23)
    grown_mib = (_rss_kib(pid) - before) / 1024
    # Buffering one upload (10 MiB) or one inflated bomb (128 MiB) would show.
    assert grown_mib < 8, f"resident memory grew by {grown_mib:.1f} MiB"
