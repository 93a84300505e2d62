"""Database faults answer 500 with the code of the failed step, and leave no damage.

Each fault is made in a way that also works for root (file modes do not stop root):
another connection holding the database locked, ``PRAGMA query_only`` or a
``max_page_count`` limit on the daemon's writer connection, and failures injected at
the aiosqlite boundary for the steps SQLite gives no handle on (a failing read, a
failing ``COMMIT``).  After each fault is lifted the same requests succeed, and what
failed left nothing half done behind.
"""

from __future__ import annotations

import sqlite3
from typing import Any, AsyncIterator

import pytest
from aiohttp.test_utils import TestClient
from conftest import ADMIN_PASSWORD, MakeClient, basic, bearer, create_instance, login

from merchant_authd import sqlite_store
from merchant_authd.sqlite_store import SqliteStore
from merchant_authd.web.keys import CONTEXT

DB_START_FAILED = 51
DB_STORE_FAILED = 52
DB_FETCH_FAILED = 53
DB_COMMIT_FAILED = 54


def store_of(client: TestClient) -> SqliteStore:
    store = client.app[CONTEXT].store
    assert isinstance(store, SqliteStore)
    return store


@pytest.fixture
async def shop(
    make_client: MakeClient, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[TestClient]:
    """An app with a short busy timeout, the admin instance and instance ``shop``."""
    monkeypatch.setattr(sqlite_store, "BUSY_TIMEOUT_S", 0.2)
    client = await make_client()
    await create_instance(client, "admin", ADMIN_PASSWORD)
    await create_instance(client, "shop", "old-password")
    yield client


async def expect_error(response: Any, status: int, code: int) -> None:
    assert response.status == status, await response.text()
    assert (await response.json())["code"] == code


async def token_works(client: TestClient, token: str) -> bool:
    response = await client.get("/instances/shop/private", headers=bearer(token))
    assert response.status in (200, 401)
    return response.status == 200


async def password_works(client: TestClient, password: str) -> bool:
    response = await client.post(
        "/instances/shop/private/token",
        json={"scope": "readonly"},
        headers=basic("shop", password),
    )
    assert response.status in (200, 401), await response.text()
    return response.status == 200


async def change_password(client: TestClient, admin: str, password: str) -> Any:
    return await client.post(
        "/management/instances/shop/auth",
        json={"method": "token", "password": password},
        headers=bearer(admin),
    )


async def test_locked_database_fails_writes_with_start_failed(
    shop: TestClient, settings: Any
) -> None:
    admin = await login(shop, "admin", ADMIN_PASSWORD)
    token = await login(shop, "shop", "old-password")
    other = sqlite3.connect(settings.database, isolation_level=None, timeout=0.1)
    try:
        other.execute("BEGIN EXCLUSIVE")
        await expect_error(
            await change_password(shop, admin, "new-password"), 500, DB_START_FAILED
        )
        response = await shop.post(
            "/instances/shop/private/token",
            json={"scope": "readonly"},
            headers=basic("shop", "old-password"),
        )
        await expect_error(response, 500, DB_START_FAILED)
        # WAL: readers are not blocked by a writer, so tokens still authenticate.
        assert await token_works(shop, token)
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert await password_works(shop, "old-password")
    assert await token_works(shop, token)
    response = await change_password(shop, admin, "new-password")
    assert response.status == 204
    assert await password_works(shop, "new-password")
    assert not await token_works(shop, token)


async def test_read_only_writer_fails_with_start_failed(shop: TestClient) -> None:
    admin = await login(shop, "admin", ADMIN_PASSWORD)
    writer = store_of(shop)._writer
    await writer.execute("PRAGMA query_only = ON")
    try:
        await expect_error(
            await change_password(shop, admin, "new-password"), 500, DB_START_FAILED
        )
    finally:
        await writer.execute("PRAGMA query_only = OFF")
    assert await password_works(shop, "old-password")
    assert (await change_password(shop, admin, "new-password")).status == 204
    assert await password_works(shop, "new-password")


async def test_full_disk_fails_with_store_failed_and_rolls_back(
    shop: TestClient,
) -> None:
    admin = await login(shop, "admin", ADMIN_PASSWORD)
    writer = store_of(shop)._writer
    rows = list(await writer.execute_fetchall("PRAGMA page_count"))
    await writer.execute(f"PRAGMA max_page_count = {rows[0][0]}")
    logo = "data:image/png;base64," + "A" * 200_000
    body = {
        "id": "big",
        "name": "Big shop",
        "logo": logo,
        "auth": {"method": "token", "password": "big-password"},
    }
    try:
        response = await shop.post(
            "/management/instances", json=body, headers=bearer(admin)
        )
        await expect_error(response, 500, DB_STORE_FAILED)
    finally:
        await writer.execute("PRAGMA max_page_count = 1073741823")
    response = await shop.get("/management/instances/big", headers=bearer(admin))
    await expect_error(response, 404, 2000)
    response = await shop.post(
        "/management/instances", json=body, headers=bearer(admin)
    )
    assert response.status == 204
    response = await shop.get("/management/instances/big", headers=bearer(admin))
    assert response.status == 200
    assert (await response.json())["logo"] == logo


class FailingCommit:
    """``Connection.execute`` that fails ``COMMIT`` while armed."""

    def __init__(self, execute: Any) -> None:
        self.execute = execute
        self.armed = True
        self.failed = 0

    def __call__(self, sql: str, *args: Any) -> Any:
        if self.armed and sql.strip().upper() == "COMMIT":
            self.failed += 1
            raise sqlite3.OperationalError("disk I/O error")
        return self.execute(sql, *args)


async def test_failed_commit_answers_commit_failed_and_applies_nothing(
    shop: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    admin = await login(shop, "admin", ADMIN_PASSWORD)
    token = await login(shop, "shop", "old-password")
    writer = store_of(shop)._writer
    failing = FailingCommit(writer.execute)
    monkeypatch.setattr(writer, "execute", failing)
    await expect_error(
        await change_password(shop, admin, "new-password"), 500, DB_COMMIT_FAILED
    )
    assert failing.failed == 1
    failing.armed = False
    # Neither half of the password change (new hash, token revocation) is visible,
    # and the writer is out of the failed transaction.
    assert not writer.in_transaction
    assert await token_works(shop, token)
    assert await password_works(shop, "old-password")
    assert not await password_works(shop, "new-password")
    assert (await change_password(shop, admin, "new-password")).status == 204
    assert await password_works(shop, "new-password")
    assert not await token_works(shop, token)


class FailingRead:
    """``Connection.execute_fetchall`` that fails while armed."""

    def __init__(self, fetch: Any) -> None:
        self.fetch = fetch
        self.armed = True

    async def __call__(self, sql: str, *args: Any) -> Any:
        if self.armed:
            raise sqlite3.OperationalError("disk I/O error")
        return await self.fetch(sql, *args)


async def test_failed_read_answers_fetch_failed(
    shop: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = await login(shop, "shop", "old-password")
    reader = store_of(shop)._reader
    failing = FailingRead(reader.execute_fetchall)
    monkeypatch.setattr(reader, "execute_fetchall", failing)
    response = await shop.get("/instances/shop/private", headers=bearer(token))
    await expect_error(response, 500, DB_FETCH_FAILED)
    response = await shop.post(
        "/instances/shop/private/token",
        json={"scope": "readonly"},
        headers=basic("shop", "old-password"),
    )
    await expect_error(response, 500, DB_FETCH_FAILED)
    failing.armed = False
    assert await token_works(shop, token)
    assert await password_works(shop, "old-password")


async def test_failure_bodies_reveal_no_database_detail(shop: TestClient) -> None:
    """The 500 carries the code and a generic hint, not SQLite's message or SQL."""
    admin = await login(shop, "admin", ADMIN_PASSWORD)
    writer = store_of(shop)._writer
    await writer.execute("PRAGMA query_only = ON")
    try:
        response = await change_password(shop, admin, "new-password")
    finally:
        await writer.execute("PRAGMA query_only = OFF")
    assert response.status == 500
    body = await response.json()
    assert body["code"] == DB_START_FAILED
    text = repr(body).lower()
    assert "readonly" not in text and "sql" not in text and "insert" not in text
