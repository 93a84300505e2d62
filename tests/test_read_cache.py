"""The read cache of the SQLite store serves exactly what the database holds.

Changes made by another connection (an admin command in another process, say) must
be seen on the very next request, although authenticated reads are served from
memory while nothing changes.
"""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path
from typing import Iterator

import pytest
from conftest import ADMIN_PASSWORD, assert_error, bearer, create_instance, login

from merchant_authd import crypto
from merchant_authd.errors import EC
from merchant_authd.sqlite_store import changes
from merchant_authd.web.keys import CONTEXT


@pytest.fixture(params=["wal-index", "data-version"])
def watch_kind(request, monkeypatch):
    """Run a test with either way of noticing commits."""
    if request.param == "data-version":
        monkeypatch.setattr(changes, "_acquire_wal_index", lambda name: None)
    return request.param


def assert_watch(client, kind: str) -> None:
    watch = client.app[CONTEXT].store._cache._watch
    assert watch.reads_wal_index == (kind == "wal-index")


def commit_elsewhere(database: Path, sql: str) -> None:
    """Commit ``sql`` through a connection of its own (as another process would)."""
    other = sqlite3.connect(database)
    with other:
        other.execute(sql)
    other.close()


@contextlib.contextmanager
def commit_after_each_read(store, database: Path, sql: str) -> Iterator[None]:
    """Reads of ``store`` are followed, before their rows are used, by a commit of
    ``sql`` elsewhere that another request notices, starting from an empty cache."""
    original = store._read

    async def read_then_commit(*args, **kwargs):
        rows = await original(*args, **kwargs)
        commit_elsewhere(database, sql)
        store._cache.generation()  # another request looks meanwhile
        return rows

    store._cache.generation()
    store._cache.instances.clear()
    store._cache.tokens.clear()
    store._read = read_then_commit
    try:
        yield
    finally:
        store._read = original


async def test_revocation_by_another_connection_is_seen_at_once(
    watch_kind, admin_client, settings
):
    assert_watch(admin_client, watch_kind)
    await create_instance(admin_client, "shop1", "pw1")
    token = await login(admin_client, "shop1", "pw1")
    for _ in range(3):  # the later reads come from the cache
        ok = await admin_client.get("/instances/shop1/private", headers=bearer(token))
        assert ok.status == 200
    commit_elsewhere(settings.database_path, "DELETE FROM access_tokens")
    response = await admin_client.get("/instances/shop1/private", headers=bearer(token))
    await assert_error(response, 401, EC.MERCHANT_GENERIC_UNAUTHORIZED)


async def test_instance_change_by_another_connection_is_seen_at_once(
    watch_kind, admin_client, settings
):
    assert_watch(admin_client, watch_kind)
    token = await login(admin_client, "admin", ADMIN_PASSWORD)
    first = await admin_client.get("/private", headers=bearer(token))
    assert (await first.json())["name"] == "Shop admin"
    commit_elsewhere(
        settings.database_path,
        "UPDATE instances SET settings = json_set(settings, '$.name', 'Renamed')",
    )
    second = await admin_client.get("/private", headers=bearer(token))
    assert (await second.json())["name"] == "Renamed"


async def test_reads_are_served_from_memory_while_nothing_changes(
    watch_kind, admin_client
):
    assert_watch(admin_client, watch_kind)
    token = await login(admin_client, "admin", ADMIN_PASSWORD)
    store = admin_client.app[CONTEXT].store
    assert (await admin_client.get("/private", headers=bearer(token))).status == 200
    calls = []
    original = store._read

    async def counting(*args, **kwargs):
        calls.append(args[0])
        return await original(*args, **kwargs)

    store._read = counting
    try:
        for _ in range(5):
            response = await admin_client.get("/private", headers=bearer(token))
            assert response.status == 200
    finally:
        store._read = original
    assert calls == []


async def test_expired_cached_token_is_refused(admin_client, monkeypatch):
    token = await login(
        admin_client, "admin", ADMIN_PASSWORD, duration={"d_us": 2_000_000}
    )
    assert (await admin_client.get("/private", headers=bearer(token))).status == 200
    import merchant_authd.web.security as security

    real = security.time.time
    monkeypatch.setattr(security.time, "time", lambda: real() + 10)
    response = await admin_client.get("/private", headers=bearer(token))
    await assert_error(response, 401, EC.MERCHANT_GENERIC_UNAUTHORIZED)


def test_a_full_cache_forgets_its_oldest_entries_only(monkeypatch):
    from merchant_authd.sqlite_store.cache import ReadCache
    from merchant_authd.store import AccessToken, Instance

    monkeypatch.setattr(ReadCache, "MAX_ENTRIES", 3)
    cache = ReadCache(changes.ChangeWatch(sqlite3.connect(":memory:")))
    generation = cache.generation()
    shop = Instance(
        1, "shop", b"k" * 32, "token", "h", None, False, None, False, "{}", False, 0
    )
    for serial in range(1, 6):
        token = AccessToken(serial, 1, 0, None, "all", False, None)
        cache.remember_token(bytes([serial]), (shop, token), generation)
    assert sorted(cache.tokens) == [bytes([3]), bytes([4]), bytes([5])]
    # Tokens of one instance share its record.
    assert len({id(instance) for instance, _ in cache.tokens.values()}) == 1
    cache.close()


async def test_a_row_read_before_a_commit_is_not_kept_after_it(admin_client, settings):
    """A read in flight while another request notices a commit returns the old row
    to its own caller, but the cache must not keep it for the requests after."""
    await create_instance(admin_client, "shop1", "pw1")
    store = admin_client.app[CONTEXT].store
    rename = (
        "UPDATE instances SET settings = json_set(settings, '$.name', 'New')"
        " WHERE id = 'shop1'"
    )
    with commit_after_each_read(store, settings.database_path, rename):
        stale = await store.get_instance("shop1")
    assert stale is not None and stale.settings["name"] == "Shop shop1"
    fresh = await store.get_instance("shop1")
    assert fresh is not None and fresh.settings["name"] == "New"


async def test_a_token_read_before_its_revocation_is_not_kept_after_it(
    admin_client, settings
):
    token = await login(admin_client, "admin", ADMIN_PASSWORD)
    digest = crypto.parse_access_token(token.removeprefix(crypto.TOKEN_PREFIX))
    assert digest is not None
    store = admin_client.app[CONTEXT].store
    revoke = "DELETE FROM access_tokens"
    with commit_after_each_read(store, settings.database_path, revoke):
        assert await store.authenticate_token("admin", digest, 0) is not None
    assert await store.authenticate_token("admin", digest, 0) is None
