"""The admin command line: dbinit, passwd, instances, tokens revoke.

Most tests run ``cli.main`` in a worker thread (it runs its own event loop) against
the database of an aiohttp test client, so that what a command did is checked over
HTTP.  The last ones run the console script next to a real daemon process on the same
database.
"""

from __future__ import annotations

import asyncio
import getpass
import io
import logging
import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import aiohttp
import pytest
from aiohttp.test_utils import TestClient
from conftest import ADMIN_PASSWORD, basic, bearer, create_instance, login
from test_server import STARTUP_S, Daemon, create_admin
from test_server import login as daemon_login

from merchant_authd import __version__, cli
from merchant_authd import log as logsetup
from merchant_authd.config import Settings


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    """``cli.main`` sets up logging for the process; undo it after each test."""
    root = logging.getLogger()
    ours = logging.getLogger("merchant_authd")
    saved = (list(root.handlers), root.level, ours.level)
    yield
    root.handlers[:] = saved[0]
    root.setLevel(saved[1])
    ours.setLevel(saved[2])
    logsetup.access_log.write_to(None)


@pytest.fixture
def conf(tmp_path: Path, settings: Settings) -> Path:
    """A configuration file naming the database of the ``settings`` fixture."""
    path = tmp_path / "merchant-authd.conf"
    path.write_text(
        f"[merchantdb-sqlite]\nDATABASE = {settings.database_path}\n"
        "[merchant-authd]\nBCRYPT_COST = 4\nLOG_LEVEL = WARNING\n"
    )
    return path


def run(conf: Path, *argv: str) -> int:
    """``merchant-authd -c CONF ARGV...`` in this process."""
    return cli.main(["-c", str(conf), *argv])


async def arun(conf: Path, *argv: str) -> int:
    """:func:`run` from async code (the command runs its own event loop)."""
    return await asyncio.to_thread(run, conf, *argv)


def feed_stdin(monkeypatch: pytest.MonkeyPatch, text: str) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO(text))


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def type_passwords(monkeypatch: pytest.MonkeyPatch, *typed: str) -> list[str]:
    """Make stdin a terminal whose getpass prompts get ``typed``; the prompts."""
    prompts: list[str] = []
    answers = iter(typed)

    def fake_getpass(prompt: str = "") -> str:
        prompts.append(prompt)
        return next(answers)

    monkeypatch.setattr(sys, "stdin", FakeTerminal())
    monkeypatch.setattr(getpass, "getpass", fake_getpass)
    return prompts


def one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("merchant-authd: ")
    return lines[0]


async def token_status(client: TestClient, path: str, token: str) -> tuple[int, int]:
    response = await client.get(path, headers=bearer(token))
    body = await response.json() if response.status >= 400 else {}
    return response.status, body.get("code", 0)


async def password_login_status(client: TestClient, instance: str, pw: str) -> int:
    prefix = "" if instance == "admin" else f"/instances/{instance}"
    response = await client.post(
        f"{prefix}/private/token", json={"scope": "all"}, headers=basic(instance, pw)
    )
    return response.status


# -- usage ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [[], ["serve"], ["dbinit"], ["passwd"], ["instances"], ["tokens"]]
    + [["tokens", "revoke"]],
)
def test_help_on_every_command(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main([*argv, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: merchant-authd {' '.join(argv)}".rstrip())
    assert "-c PATH, --config PATH" in out


@pytest.mark.parametrize(
    "argv",
    [["passwd"], ["tokens"], ["tokens", "forget", "x"], ["frobnicate"]]
    + [["instances", "extra"]],
)
def test_usage_errors_exit_2(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    assert exit_info.value.code == 2


def test_bad_log_level_exits_2(conf: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(conf, "-L", "LOUD", "instances") == 2
    assert "--log-level" in one_error_line(capsys)


def test_bad_configuration_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.conf"
    bad.write_text("[merchant-authd]\nBCRYPT_COST = many\n")
    assert run(bad, "dbinit") == 2
    assert "[merchant-authd] BCRYPT_COST" in one_error_line(capsys)
    assert run(tmp_path / "missing.conf", "dbinit") == 2
    assert "missing.conf" in one_error_line(capsys)


def test_auth_option_is_for_serving_only(
    conf: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(conf, "-a", "secret-token:bootstrap", "instances") == 2
    assert "--auth" in one_error_line(capsys)


def test_options_may_follow_the_command(
    conf: Path, settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["dbinit", "-c", str(conf)]) == 0
    assert settings.database_path.exists()


# -- dbinit ---------------------------------------------------------------------------


def test_dbinit_creates_then_keeps_the_schema(
    conf: Path, settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(conf, "dbinit") == 0
    out = capsys.readouterr().out
    assert out == f"database {settings.database_path} is at schema version 1\n"
    assert run(conf, "dbinit") == 0
    with sqlite3.connect(settings.database_path) as db:
        versions = db.execute("SELECT version FROM schema_version").fetchall()
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master")}
    assert versions == [(1,)]
    assert {"instances", "access_tokens", "challenges", "throttle"} <= tables


@pytest.mark.parametrize(
    "argv", [["instances"], ["passwd", "admin"], ["tokens", "revoke", "admin"]]
)
def test_commands_other_than_dbinit_create_no_database(
    conf: Path,
    settings: Settings,
    argv: list[str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert run(conf, *argv) == 1
    assert "no database" in one_error_line(capsys)
    assert not settings.database_path.exists()


def test_a_file_that_is_no_database_exits_1(
    conf: Path, settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    settings.database_path.write_text("not SQLite at all " * 100)
    assert run(conf, "instances") == 1
    assert "not a database" in one_error_line(capsys)


# -- instances ------------------------------------------------------------------------


async def test_instances_lists_id_auth_deleted_email(
    admin_client: TestClient, conf: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    await create_instance(admin_client, "shop1", email="owner@shop1.example")
    await create_instance(admin_client, "shop2")
    admin = bearer(await login(admin_client, "admin", ADMIN_PASSWORD))
    response = await admin_client.delete("/management/instances/shop2", headers=admin)
    assert response.status == 204
    response = await admin_client.post(
        "/management/instances/shop1/auth", json={"method": "external"}, headers=admin
    )
    assert response.status == 204
    capsys.readouterr()
    assert await arun(conf, "instances") == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines()]
    assert rows == [
        ["ID", "AUTH", "DELETED", "EMAIL"],
        ["admin", "token", "no", "-"],
        ["shop1", "external", "no", "owner@shop1.example"],
        ["shop2", "token", "yes", "-"],
    ]


# -- passwd ---------------------------------------------------------------------------


async def test_passwd_from_stdin_sets_password_and_revokes_tokens(
    admin_client: TestClient,
    conf: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    await create_instance(admin_client, "shop1", "old-pw")
    token = await login(admin_client, "shop1", "old-pw")
    other = await login(admin_client, "admin", ADMIN_PASSWORD)
    # One line is read; what follows it is not part of the password.
    feed_stdin(monkeypatch, "new pw with spaces \nsecond line\n")
    assert await arun(conf, "passwd", "shop1") == 0
    out = capsys.readouterr().out
    assert out == "password of instance shop1 set, its access tokens revoked\n"
    assert await token_status(admin_client, "/instances/shop1/private", token) == (
        401,
        2015,
    )
    assert await password_login_status(admin_client, "shop1", "old-pw") == 401
    assert (
        await password_login_status(admin_client, "shop1", "new pw with spaces ") == 200
    )
    # Other instances keep their tokens.
    assert await token_status(admin_client, "/private", other) == (200, 0)


async def test_passwd_on_a_terminal_asks_twice(
    admin_client: TestClient, conf: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    prompts = type_passwords(monkeypatch, "typed-pw", "typed-pw")
    assert await arun(conf, "passwd", "admin") == 0
    assert prompts == [
        "New password for instance admin: ",
        "Repeat the new password: ",
    ]
    assert await password_login_status(admin_client, "admin", "typed-pw") == 200
    assert await password_login_status(admin_client, "admin", ADMIN_PASSWORD) == 401


@pytest.mark.parametrize(
    "typed, message",
    [(("one", "two"), "passwords differ"), (("", ""), "empty password")],
)
async def test_passwd_on_a_terminal_refuses(
    admin_client: TestClient,
    conf: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    typed: tuple[str, str],
    message: str,
) -> None:
    token = await login(admin_client, "admin", ADMIN_PASSWORD)
    type_passwords(monkeypatch, *typed)
    assert await arun(conf, "passwd", "admin") == 1
    assert message in one_error_line(capsys)
    assert await token_status(admin_client, "/private", token) == (200, 0)


@pytest.mark.parametrize("stdin, message", [("", "no password"), ("\n", "empty")])
async def test_passwd_from_stdin_refuses(
    admin_client: TestClient,
    conf: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    stdin: str,
    message: str,
) -> None:
    feed_stdin(monkeypatch, stdin)
    assert await arun(conf, "passwd", "admin") == 1
    assert message in one_error_line(capsys)
    assert await password_login_status(admin_client, "admin", ADMIN_PASSWORD) == 200


@pytest.mark.parametrize("instance", ["nope", "gone", "ADMIN"])
async def test_passwd_unknown_instance_exits_1(
    admin_client: TestClient,
    conf: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    instance: str,
) -> None:
    await create_instance(admin_client, "gone")
    admin = bearer(await login(admin_client, "admin", ADMIN_PASSWORD))
    response = await admin_client.delete("/management/instances/gone", headers=admin)
    assert response.status == 204
    feed_stdin(monkeypatch, "whatever\n")
    assert await arun(conf, "passwd", instance) == 1
    assert one_error_line(capsys) == f"merchant-authd: unknown instance {instance}"


# -- tokens revoke --------------------------------------------------------------------


async def test_tokens_revoke_counts_and_revokes(
    admin_client: TestClient, conf: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    await create_instance(admin_client, "shop1", "pw1")
    first = await login(admin_client, "shop1", "pw1")
    second = await login(admin_client, "shop1", "pw1", scope="readonly")
    admin = await login(admin_client, "admin", ADMIN_PASSWORD)
    capsys.readouterr()
    assert await arun(conf, "tokens", "revoke", "shop1") == 0
    assert capsys.readouterr().out == "revoked 2 access tokens of instance shop1\n"
    for token in (first, second):
        status = await token_status(admin_client, "/instances/shop1/private", token)
        assert status == (401, 2015)
    assert await token_status(admin_client, "/private", admin) == (200, 0)
    assert await arun(conf, "tokens", "revoke", "shop1") == 0
    assert capsys.readouterr().out == "revoked 0 access tokens of instance shop1\n"


async def test_tokens_revoke_unknown_instance_exits_1(
    admin_client: TestClient, conf: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await arun(conf, "tokens", "revoke", "nope") == 1
    assert one_error_line(capsys) == "merchant-authd: unknown instance nope"


# -- database ownership ---------------------------------------------------------------


@pytest.mark.skipif(os.geteuid() != 0, reason="only root is refused")
def test_root_is_refused_a_database_of_another_user(
    conf: Path, settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(conf, "dbinit") == 0
    os.chown(settings.database_path, 65534, 65534)
    assert run(conf, "instances") == 1
    assert "run this command as that user" in one_error_line(capsys)
    assert not Path(f"{settings.database_path}-wal").exists()


# -- next to a running daemon ---------------------------------------------------------


def console(
    daemon: Daemon, *argv: str, stdin: str = ""
) -> subprocess.CompletedProcess[str]:
    """Run ``merchant-authd -c CONF ARGV...`` as its own process."""
    return subprocess.run(
        daemon.command(*argv),
        input=stdin,
        capture_output=True,
        text=True,
        env=daemon.env,
        timeout=STARTUP_S,
    )


async def test_commands_work_while_the_daemon_serves(tmp_path: Path) -> None:
    with Daemon(tmp_path) as daemon:
        daemon.start()
        async with aiohttp.ClientSession() as session:
            await create_admin(session, daemon.url)
            old = (await daemon_login(session, daemon.url))["access_token"]

            done = await asyncio.to_thread(console, daemon, "dbinit")
            assert done.returncode == 0, done.stderr
            listed = await asyncio.to_thread(console, daemon, "instances")
            assert listed.returncode == 0, listed.stderr
            assert listed.stdout.splitlines()[1].split() == [
                "admin",
                "token",
                "no",
                "-",
            ]

            changed = await asyncio.to_thread(
                console, daemon, "passwd", "admin", stdin="fresh-admin-pw\n"
            )
            assert changed.returncode == 0, changed.stderr
            await _expect_revoked(session, daemon.url, old)
            new = await daemon_login(session, daemon.url, password="fresh-admin-pw")
            async with session.post(
                f"{daemon.url}/private/token",
                json={"scope": "all"},
                headers=basic("admin", ADMIN_PASSWORD),
            ) as response:
                assert response.status == 401
                assert (await response.json())["code"] == 2015

            revoked = await asyncio.to_thread(
                console, daemon, "tokens", "revoke", "admin"
            )
            assert revoked.returncode == 0, revoked.stderr
            assert revoked.stdout == "revoked 1 access token of instance admin\n"
            await _expect_revoked(session, daemon.url, new["access_token"])

            unknown = await asyncio.to_thread(
                console, daemon, "passwd", "nope", stdin="x\n"
            )
            assert unknown.returncode == 1
            assert unknown.stderr == "merchant-authd: unknown instance nope\n"
        assert daemon.stop() == 0


async def _expect_revoked(session: aiohttp.ClientSession, url: str, token: str) -> None:
    async with session.get(f"{url}/private", headers=bearer(token)) as response:
        assert response.status == 401
        body: dict[str, Any] = await response.json()
        assert body["code"] == 2015


def test_console_script_is_installed() -> None:
    script = Path(sys.executable).parent / "merchant-authd"
    result = subprocess.run(
        [str(script), "--version"], capture_output=True, text=True, timeout=STARTUP_S
    )
    assert result.returncode == 0
    assert result.stdout.strip() == __version__
