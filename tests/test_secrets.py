"""No password, access token or TAN appears in clear in the logs or the database file.

Every flow that handles a secret is driven with known values: the bootstrap secret,
instance creation with a password, self-provisioning, Basic login, the legacy
password-as-bearer form, token use and refresh, password changes (new and deprecated
form, with a second factor), forgot-password, TANs by SMS and e-mail helpers, wrong
guesses of each.  Then the captured log records and the raw bytes of the database
(main file and WAL) are searched for every secret.

Logging runs under the daemon's own configuration (``log.setup``: the daemon at DEBUG,
libraries pinned higher); a second run lets every logger, aiosqlite included, log at
DEBUG, which must still show no secret in clear (aiosqlite then logs SQL parameters:
hashes and digests, never a password, token or TAN).
"""

from __future__ import annotations

import io
import logging
import re
import sqlite3
from pathlib import Path
from typing import Any, Iterator

import pytest
from aiohttp.test_utils import TestClient
from conftest import MakeClient, basic, bearer, instance_body

from merchant_authd import crypto
from merchant_authd import log as logsetup

BOOT = "bootstrap-6Yq2-secret"
WRONG_BOOT = "bootstrap-guess-Zr8"
ADMIN_PW = "admin-pw-Kq3v9"
SHOP_PWS = ("shop-pw-one-Mx1", "shop-pw-two-Mx2", "shop-pw-three-Mx3", "shop-pw-4-Mx4")
SIGNUP_PW = "signup-pw-Tt5"
WRONG_PW = "wrong-pw-Gg7"
PHONE = "+41791234567"
TAN = re.compile(r" is (\d{8})\.")


class Outbox:
    """A TAN helper that appends every message it is given to a file."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / "outbox.txt"
        self.helper = directory / "tan-helper.sh"
        self.helper.write_text(f'#!/bin/sh\ncat >> "{self.path}"\n')
        self.helper.chmod(0o755)

    def tans(self) -> list[str]:
        if not self.path.exists():
            return []
        return list(TAN.findall(self.path.read_text()))


class Flows:
    """Drives every secret-bearing flow and remembers each secret it saw."""

    def __init__(self, outbox: Outbox) -> None:
        self.outbox = outbox
        self.tokens: list[str] = []

    def token(self, body: dict[str, Any]) -> str:
        token: str = body["access_token"]
        self.tokens.append(token)
        return token

    async def solve(
        self, client: TestClient, instance: str, answer: Any, wrong_first: bool
    ) -> str:
        assert answer.status == 202, await answer.text()
        ids = []
        for challenge in (await answer.json())["challenges"]:
            base = f"/instances/{instance}/challenge/{challenge['challenge_id']}"
            response = await client.post(base, json={})
            assert response.status == 200, await response.text()
            tan = self.outbox.tans()[-1]
            if wrong_first:
                wrong = f"{(int(tan) + 1) % 10**8:08d}"
                response = await client.post(base + "/confirm", json={"tan": wrong})
                assert response.status == 409
            response = await client.post(base + "/confirm", json={"tan": tan})
            assert response.status == 204, await response.text()
            ids.append(challenge["challenge_id"])
        return ",".join(ids)

    async def setup_phase(self, client: TestClient) -> str:
        """Bootstrap, admin, instances, sign-up; the admin's token."""
        response = await client.get(
            "/management/instances", headers=bearer(f"secret-token:{WRONG_BOOT}")
        )
        assert response.status == 401
        response = await client.post(
            "/management/instances",
            json=instance_body("admin", ADMIN_PW),
            headers=bearer(f"secret-token:{BOOT}"),
        )
        assert response.status == 204, await response.text()
        response = await client.post(
            "/private/token", json={"scope": "all"}, headers=basic("admin", ADMIN_PW)
        )
        assert response.status == 200
        admin = self.token(await response.json())
        response = await client.post(
            "/management/instances",
            json=instance_body(
                "shop", SHOP_PWS[0], phone_number=PHONE, email="shop@example.com"
            ),
            headers=bearer(admin),
        )
        assert response.status == 204, await response.text()
        signup = instance_body("signup", SIGNUP_PW, email="new@example.com")
        answer = await client.post("/instances?token_validity_ms=60000", json=signup)
        ids = await self.solve(client, "signup", answer, wrong_first=False)
        response = await client.post(
            "/instances?token_validity_ms=60000",
            json=signup,
            headers={"Taler-Challenge-Ids": ids},
        )
        assert response.status == 200, await response.text()
        self.token(await response.json())
        return admin

    async def login(self, client: TestClient, password: str, wrong: bool) -> str:
        body = {"scope": "all", "refreshable": True}
        path = "/instances/shop/private/token"
        answer = await client.post(path, json=body, headers=basic("shop", password))
        ids = await self.solve(client, "shop", answer, wrong_first=wrong)
        headers = {**basic("shop", password), "Taler-Challenge-Ids": ids}
        response = await client.post(path, json=body, headers=headers)
        assert response.status == 200, await response.text()
        return self.token(await response.json())

    async def mfa_phase(self, client: TestClient, admin: str) -> None:
        """Everything on the instance that must confirm by SMS."""
        token = await self.login(client, SHOP_PWS[0], wrong=True)
        for secret, status in ((SHOP_PWS[0], 200), (WRONG_PW, 401)):
            response = await client.get(
                "/instances/shop/private", headers=bearer(f"secret-token:{secret}")
            )
            assert response.status == status
        response = await client.post(
            "/instances/shop/private/token",
            json={"scope": "all"},
            headers=basic("shop", WRONG_PW),
        )
        assert response.status == 401
        response = await client.post(
            "/instances/shop/private/token",
            json={"scope": "readonly"},
            headers=bearer(token),
        )
        assert response.status == 200
        refreshed = self.token(await response.json())
        response = await client.get(
            "/instances/shop/private", headers=bearer(refreshed)
        )
        assert response.status == 200
        response = await client.get(
            "/instances/shop/private/tokens", headers=bearer(token)
        )
        assert response.status == 200
        change = {"method": "token", "password": SHOP_PWS[1]}
        path = "/instances/shop/private/auth"
        answer = await client.post(path, json=change, headers=bearer(token))
        ids = await self.solve(client, "shop", answer, wrong_first=False)
        response = await client.post(
            path, json=change, headers={**bearer(token), "Taler-Challenge-Ids": ids}
        )
        assert response.status == 204, await response.text()
        response = await client.post(
            "/management/instances/shop/auth",
            json={"method": "token", "token": f"secret-token:{SHOP_PWS[2]}"},
            headers=bearer(admin),
        )
        assert response.status == 204, await response.text()
        forgot = {"method": "token", "password": SHOP_PWS[3]}
        path = "/instances/shop/forgot-password"
        answer = await client.post(path, json=forgot)
        ids = await self.solve(client, "shop", answer, wrong_first=True)
        response = await client.post(
            path, json=forgot, headers={"Taler-Challenge-Ids": ids}
        )
        assert response.status == 204, await response.text()
        token = await self.login(client, SHOP_PWS[3], wrong=False)
        response = await client.delete(
            "/instances/shop/private/token", headers=bearer(token)
        )
        assert response.status == 204

    async def run(self, make_client: MakeClient) -> TestClient:
        helpers = {"helper_sms": self.outbox.helper, "helper_email": self.outbox.helper}
        setup = await make_client(
            bootstrap_secret=BOOT, self_provisioning=True, **helpers
        )
        admin = await self.setup_phase(setup)
        client = await make_client(mandatory_tan_channels=("sms",), **helpers)
        await self.mfa_phase(client, admin)
        return client

    def secrets(self) -> list[str]:
        """Every secret in the forms it travelled in."""
        found = [BOOT, WRONG_BOOT, ADMIN_PW, *SHOP_PWS, SIGNUP_PW, WRONG_PW]
        found += self.tokens
        found += [t[len(crypto.TOKEN_PREFIX) :] for t in self.tokens]
        tans = self.outbox.tans()
        assert len(tans) >= 5, "the TAN helper was not used"
        found += tans
        return found


def in_clear(haystack: str, secrets: list[str]) -> list[str]:
    return [s for s in secrets if s in haystack]


def log_text(records: list[logging.LogRecord]) -> str:
    lines = []
    for record in records:
        lines.append(f"{record.name} {record.getMessage()}")
        if record.exc_info:
            lines.append(logging.Formatter().formatException(record.exc_info))
    return "\n".join(lines)


def database_bytes(database: Path) -> bytes:
    parts = [database, Path(f"{database}-wal")]
    return b"".join(p.read_bytes() for p in parts if p.exists())


def stored_hashes(database: Path) -> list[str]:
    with sqlite3.connect(database) as conn:
        rows = conn.execute("SELECT password_hash FROM instances").fetchall()
        digests = conn.execute("SELECT token_digest FROM access_tokens").fetchall()
    conn.close()
    return [r[0] for r in rows if r[0]] + [bytes(d[0]).hex() for d in digests]


@pytest.fixture
def daemon_logging() -> Iterator[io.StringIO]:
    """The daemon's own logging set-up at DEBUG, undone afterwards.

    Yields the stream the access log writes to, which ``caplog`` does not see.
    """
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    names = ("merchant_authd", "aiosqlite", "aiohttp.access")
    levels = {name: logging.getLogger(name).level for name in names}
    logsetup.setup("DEBUG")
    access_lines = io.StringIO()
    logsetup.access_log.write_to(access_lines)
    yield access_lines
    logsetup.access_log.write_to(None)
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
    for handler in handlers:
        if handler not in root.handlers:
            root.addHandler(handler)
    root.setLevel(level)
    for name, saved in levels.items():
        logging.getLogger(name).setLevel(saved)


async def test_no_secret_in_daemon_logs_or_database(
    make_client: MakeClient,
    tmp_path: Path,
    settings: Any,
    caplog: pytest.LogCaptureFixture,
    daemon_logging: io.StringIO,
) -> None:
    flows = Flows(Outbox(tmp_path))
    await flows.run(make_client)
    secrets = flows.secrets()
    logsetup.access_log.flush()
    text = log_text(caplog.records) + daemon_logging.getvalue()
    # The capture works: the access log of the token endpoint is in it.
    assert "/instances/shop/private/token" in text
    assert not any(r.name.startswith("aiosqlite") for r in caplog.records)
    assert in_clear(text, secrets) == []
    # The daemon's logs hold no password hash or token digest either.
    assert in_clear(text, stored_hashes(settings.database)) == []
    stored = database_bytes(settings.database)
    assert b"shop@example.com" in stored  # the search reads real database content
    leaked = [s for s in secrets if s.encode() in stored]
    raw_tokens = [
        crypto.crockford_decode(t[len(crypto.TOKEN_PREFIX) :]) for t in flows.tokens
    ]
    leaked += [repr(r) for r in raw_tokens if r is not None and r in stored]
    assert leaked == []


async def test_no_secret_in_clear_with_every_logger_at_debug(
    make_client: MakeClient, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    for name in ("merchant_authd", "aiosqlite", "aiohttp"):
        caplog.set_level(logging.DEBUG, logger=name)
    flows = Flows(Outbox(tmp_path))
    await flows.run(make_client)
    secrets = flows.secrets()
    text = log_text(caplog.records)
    assert any(r.name.startswith("aiosqlite") for r in caplog.records)
    assert in_clear(text, secrets) == []
