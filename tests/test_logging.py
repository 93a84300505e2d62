"""Logging: one access line per request, journald's format, and never a secret.

The secrecy test runs the real daemon at ``-L DEBUG`` through login, authenticated
requests, a TAN challenge and a password change, then searches everything it wrote
for the secrets it was given.
"""

from __future__ import annotations

import asyncio
import io
import logging
import os
import re
import sys
import urllib.request
from pathlib import Path
from typing import Any, Iterator

import aiohttp
import pytest
from aiohttp.test_utils import TestClient
from conftest import ADMIN_PASSWORD, basic, bearer
from test_server import Daemon, NotifySocket, create_admin

from merchant_authd import log as logsetup

_TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d")


# -- the access log -------------------------------------------------------------------


def _access(caplog: pytest.LogCaptureFixture) -> list[str]:
    lines = [
        r.getMessage() for r in caplog.records if r.name == "merchant_authd.access"
    ]
    caplog.clear()
    return lines


async def test_one_access_line_per_request_outcome(
    admin_client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="merchant_authd")
    caplog.clear()
    cases: list[tuple[str, str, dict[str, Any], str]] = [
        ("GET", "/config", {}, r"GET /config 200 0 - [\d.]+ms"),
        (
            "POST",
            "/private/token",
            {"json": {"scope": "all"}, "headers": basic("admin", "wrong")},
            r"POST /private/token 401 2015 admin [\d.]+ms",
        ),
        ("GET", "/nowhere", {}, r"GET /nowhere 404 21 - [\d.]+ms"),
        (
            "GET",
            "/instances/nope/private",
            {"headers": bearer("secret-token:x")},
            r"GET /instances/nope/private 404 2000 - [\d.]+ms",
        ),
        (
            "GET",
            "/instances/default/config",
            {"allow_redirects": False},
            r"GET /instances/default/config 308 0 - [\d.]+ms",
        ),
        ("OPTIONS", "/private", {}, r"OPTIONS /private 204 0 - [\d.]+ms"),
    ]
    for method, path, kwargs, expected in cases:
        response = await admin_client.request(method, path, **kwargs)
        await response.read()
        lines = _access(caplog)
        assert len(lines) == 1, (path, lines)
        assert re.fullmatch(expected, lines[0]), lines[0]


async def test_failed_login_warns_without_the_password(
    admin_client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="merchant_authd")
    caplog.clear()
    response = await admin_client.post(
        "/private/token",
        json={"scope": "all"},
        headers=basic("admin", "guess-Zq81"),
    )
    assert response.status == 401
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "admin" in warnings[0].getMessage()
    assert "guess-Zq81" not in caplog.text


async def test_access_lines_follow_the_level(
    admin_client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="merchant_authd")
    caplog.clear()
    response = await admin_client.get("/config")
    assert response.status == 200
    assert _access(caplog) == []


# -- format ---------------------------------------------------------------------------


def _get_config(daemon: Daemon) -> None:
    with urllib.request.urlopen(f"{daemon.url}/config", timeout=5) as response:
        assert response.status == 200


def _stream_id(path: Path) -> str:
    stat = os.stat(path)
    return f"{stat.st_dev}:{stat.st_ino}"


def test_under_journal_compares_the_stream(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stream = tmp_path / "stderr"
    other = tmp_path / "other"
    other.write_text("")
    with open(stream, "w") as handle:
        monkeypatch.setattr(sys, "stderr", handle)
        monkeypatch.delenv("JOURNAL_STREAM", raising=False)
        assert logsetup.under_journal() is False
        monkeypatch.setenv("JOURNAL_STREAM", _stream_id(stream))
        assert logsetup.under_journal() is True
        # Inherited from a parent whose standard error was the journal.
        monkeypatch.setenv("JOURNAL_STREAM", _stream_id(other))
        assert logsetup.under_journal() is False
        monkeypatch.setenv("JOURNAL_STREAM", "garbage")
        assert logsetup.under_journal() is False


def test_journal_format_prefixes_every_line_with_the_priority() -> None:
    formatter = logsetup.JournalFormatter("%(name)s: %(message)s")
    record = logging.LogRecord(
        "merchant_authd.web", logging.WARNING, __file__, 1, "two\nlines", None, None
    )
    assert formatter.format(record) == "<4>merchant_authd.web: two\n<4>lines"
    record.levelno = logging.ERROR
    assert formatter.format(record).startswith("<3>")


def test_under_systemd_lines_carry_priority_and_no_timestamp(tmp_path: Path) -> None:
    log_path = tmp_path / "daemon.log"
    log_path.write_text("")
    env = {"JOURNAL_STREAM": _stream_id(log_path)}
    with NotifySocket(tmp_path / "notify") as notify:
        with Daemon(tmp_path, env=env, notify=notify) as daemon:
            daemon.start()
            _get_config(daemon)
            assert daemon.stop() == 0
    lines = daemon.log().splitlines()
    assert any("serving on" in line for line in lines)
    assert any(
        line.startswith("<6>merchant_authd.access: GET /config 200 ") for line in lines
    )
    for line in lines:
        assert re.match(r"<[0-7]>merchant_authd[\w.]*: ", line), line
        assert not _TIMESTAMP.search(line), line


def test_outside_systemd_lines_carry_timestamps(tmp_path: Path) -> None:
    with Daemon(tmp_path) as daemon:
        daemon.start()
        _get_config(daemon)
        assert daemon.stop() == 0
    lines = daemon.log().splitlines()
    assert any(
        " INFO merchant_authd.access: GET /config 200 " in line for line in lines
    )
    for line in lines:
        assert re.match(rf"{_TIMESTAMP.pattern},\d+ [A-Z]+ merchant_authd", line), line


# -- the access log's own stream --------------------------------------------------


class _CountingStream(io.StringIO):
    """A stream that counts its writes."""

    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, text: str) -> int:
        self.writes += 1
        return super().write(text)


@pytest.fixture
def access_log() -> Iterator[logsetup.AccessLog]:
    access = logsetup.AccessLog()
    logger = logging.getLogger(logsetup.ACCESS_LOGGER)
    level = logger.level
    logger.setLevel(logging.INFO)
    yield access
    logger.setLevel(level)


def test_direct_lines_match_the_logging_format(access_log: logsetup.AccessLog) -> None:
    stream = io.StringIO()
    access_log.write_to(stream)
    access_log.info("GET /config 200 0 - 0.1ms")
    line = stream.getvalue()
    assert re.fullmatch(
        rf"{_TIMESTAMP.pattern},\d{{3}} INFO merchant_authd.access: "
        r"GET /config 200 0 - 0.1ms\n",
        line,
    ), line
    formatter = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    record = logging.LogRecord(
        logsetup.ACCESS_LOGGER, logging.INFO, __file__, 1, "x", None, None
    )
    # Same date and time as logging's own formatter, to the second.
    assert line[:19] == formatter.format(record)[:19]


def test_direct_lines_under_the_journal(access_log: logsetup.AccessLog) -> None:
    stream = io.StringIO()
    access_log.write_to(stream, journal=True)
    access_log.info("GET /config 200 0 - 0.1ms")
    assert stream.getvalue() == "<6>merchant_authd.access: GET /config 200 0 - 0.1ms\n"


async def test_lines_of_one_loop_turn_share_one_write(
    access_log: logsetup.AccessLog,
) -> None:
    stream = _CountingStream()
    access_log.write_to(stream, journal=True)
    for number in range(3):
        access_log.info(f"line {number}")
    assert stream.writes == 0
    await asyncio.sleep(0)
    assert stream.writes == 1
    assert stream.getvalue().splitlines() == [
        f"<6>merchant_authd.access: line {number}" for number in range(3)
    ]
    access_log.info("next turn")
    await asyncio.sleep(0)
    assert stream.writes == 2


def test_control_characters_are_escaped(access_log: logsetup.AccessLog) -> None:
    stream = io.StringIO()
    access_log.write_to(stream, journal=True)
    access_log.info("GET /a\nforged 404\x1b[2J")
    assert stream.getvalue() == (
        "<6>merchant_authd.access: GET /a\\nforged 404\\x1b[2J\n"
    )


def test_nothing_is_written_below_info(access_log: logsetup.AccessLog) -> None:
    logging.getLogger(logsetup.ACCESS_LOGGER).setLevel(logging.WARNING)
    stream = io.StringIO()
    access_log.write_to(stream)
    assert access_log.enabled is False
    access_log.info("GET /config 200 0 - 0.1ms")
    assert stream.getvalue() == ""


def test_a_closed_stream_is_not_an_error(access_log: logsetup.AccessLog) -> None:
    stream = io.StringIO()
    access_log.write_to(stream)
    stream.close()
    access_log.info("GET /config 200 0 - 0.1ms")  # no exception


def test_without_a_stream_lines_are_log_records(
    access_log: logsetup.AccessLog, caplog: pytest.LogCaptureFixture
) -> None:
    stream = io.StringIO()
    access_log.write_to(stream)
    access_log.write_to(None)
    with caplog.at_level(logging.INFO, logger=logsetup.ACCESS_LOGGER):
        access_log.info("GET /a\rb 200 0 - 0.1ms")
    assert [r.getMessage() for r in caplog.records] == ["GET /a\\rb 200 0 - 0.1ms"]
    assert stream.getvalue() == ""


# -- never a secret -------------------------------------------------------------------


async def _solve(
    session: aiohttp.ClientSession,
    url: str,
    tan_file: Path,
    body: dict[str, Any],
    tans: list[str],
) -> str:
    """Have the TANs of a 202 sent and confirm them; the ``Taler-Challenge-Ids``.

    The TANs are appended to ``tans``.
    """
    ids = []
    for challenge in body["challenges"]:
        tan_file.unlink(missing_ok=True)
        cid = challenge["challenge_id"]
        async with session.post(f"{url}/challenge/{cid}", json={}) as response:
            assert response.status == 200, await response.text()
        tan = re.search(r"is (\d{8})\.", tan_file.read_text())
        assert tan is not None
        tans.append(tan.group(1))
        async with session.post(
            f"{url}/challenge/{cid}/confirm", json={"tan": tan.group(1)}
        ) as response:
            assert response.status == 204, await response.text()
        ids.append(cid)
    return ",".join(ids)


async def _with_mfa(
    session: aiohttp.ClientSession,
    url: str,
    tan_file: Path,
    path: str,
    body: dict[str, Any],
    headers: dict[str, str],
    tans: list[str],
) -> aiohttp.ClientResponse:
    response = await session.post(f"{url}{path}", json=body, headers=headers)
    if response.status != 202:
        return response
    ids = await _solve(session, url, tan_file, await response.json(), tans)
    response.release()
    return await session.post(
        f"{url}{path}", json=body, headers={**headers, "Taler-Challenge-Ids": ids}
    )


async def test_debug_log_holds_no_secret(tmp_path: Path) -> None:
    first_pw = "first-Pw-3bD9"
    second_pw = "second-Pw-7kQ2"
    tan_file = tmp_path / "tan.txt"
    helper = tmp_path / "mail"
    helper.write_text(f"#!/bin/sh\ncat > '{tan_file}'\n")
    helper.chmod(0o755)
    options = {
        "merchant": {"HELPER_EMAIL": str(helper), "MANDATORY_TAN_CHANNELS": "email"}
    }
    secrets: list[str] = [first_pw, second_pw]
    tans: list[str] = []
    with Daemon(tmp_path, options, args=("-L", "DEBUG")) as daemon:
        daemon.start()
        async with aiohttp.ClientSession() as session:
            url = daemon.url
            await create_admin(session, url, email="admin@example.com")
            secrets.append(ADMIN_PASSWORD)
            # Log in (password, second factor), use the token, change the password.
            login_headers = basic("admin", ADMIN_PASSWORD)
            secrets.append(login_headers["Authorization"].split()[1])
            async with await _with_mfa(
                session,
                url,
                tan_file,
                "/private/token",
                {"scope": "all"},
                login_headers,
                tans,
            ) as response:
                assert response.status == 200, await response.text()
                token = (await response.json())["access_token"]
            secrets += [token, token.removeprefix("secret-token:")]
            async with session.get(f"{url}/private", headers=bearer(token)) as response:
                assert response.status == 200
            auth = {"method": "token", "password": first_pw}
            async with await _with_mfa(
                session, url, tan_file, "/private/auth", auth, bearer(token), tans
            ) as response:
                assert response.status == 204, await response.text()
            # The legacy bearer-password form, a wrong password, a revoked token.
            async with await _with_mfa(
                session,
                url,
                tan_file,
                "/private/token",
                {"scope": "readonly"},
                bearer(f"secret-token:{first_pw}"),
                tans,
            ) as response:
                assert response.status == 200, await response.text()
            for credential in (basic("admin", second_pw), bearer(token)):
                async with session.post(
                    f"{url}/private/token", json={"scope": "all"}, headers=credential
                ) as response:
                    assert response.status == 401
        assert daemon.stop() == 0
    log = daemon.log()
    # The run was logged in detail: every request left its line.
    assert log.count("merchant_authd.access: ") >= 12
    assert log.count("authentication failed for instance admin") == 2
    assert len(tans) == 3
    for secret in secrets + tans:
        assert secret not in log
    assert "Authorization" not in log and "Bearer" not in log and "Basic " not in log
    assert "$2b$" not in log  # no password hash either


async def test_challenge_ids_stay_out_of_the_access_log(make_client, caplog):
    client = await make_client()
    challenge_id = "7" * 52
    with caplog.at_level(logging.INFO, logger="merchant_authd.access"):
        response = await client.post(
            f"/instances/shop/challenge/{challenge_id}", json={}
        )
    assert response.status == 404
    lines = [
        r.getMessage() for r in caplog.records if r.name == "merchant_authd.access"
    ]
    assert lines and lines[-1].startswith(
        "POST /instances/shop/challenge/{challenge_id} 404 2000"
    )
    assert challenge_id not in caplog.text
