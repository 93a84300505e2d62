"""The SQLite implementation of :class:`~merchant_authd.store.Store`.

All SQL of the daemon is in this package.  Two connections are kept: writes go
through one connection, one transaction at a time (``BEGIN IMMEDIATE`` under an
asyncio lock), and reads through the other, so that a reader never sees a
transaction half done.  The database runs in WAL mode with foreign keys on and
``synchronous = FULL``: a change is on disk before it is acknowledged.  Instances and
tokens are served from memory while the database is unchanged (:mod:`.cache`).
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import time
from pathlib import Path
from types import EllipsisType
from typing import Any, Callable, Mapping, Sequence

import aiosqlite

from ..errors import EC, DatabaseError
from ..store import (
    AccessToken,
    CredentialsChanged,
    Instance,
    InstanceExists,
    NewAccessToken,
    NewInstance,
    Store,
)
from .cache import ReadCache
from .challenges import ChallengeQueries
from .changes import ChangeWatch
from .rows import (
    AUTHENTICATE_TOKEN,
    INSTANCE_COLUMNS,
    INSTANCE_COUNT,
    TOKEN_COLUMNS,
    to_instance,
    to_token,
)
from .schema import apply_schema, schema_text, schema_version
from .throttle import ThrottleQueries

__all__ = ["BUSY_TIMEOUT_S", "SqliteStore", "schema_text", "schema_version"]

#: Contact columns and the validation flag a change of each one clears.
_CONTACTS = {"email": "email_validated", "phone_number": "phone_validated"}

BUSY_TIMEOUT_S = 5.0


class SqliteStore(ChallengeQueries, ThrottleQueries, Store):
    """Storage in one SQLite database file."""

    # -- life cycle -------------------------------------------------------------------

    @classmethod
    async def open(cls, path: Path, *, create: bool = True) -> "SqliteStore":
        """Open (and if needed create and initialise) the database at ``path``."""
        if not create and not path.exists():
            raise DatabaseError(EC.GENERIC_DB_SETUP_FAILED, f"{path}: no database")
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            writer = await _connect(path)
        except (OSError, sqlite3.Error) as exc:
            raise DatabaseError(EC.GENERIC_DB_SETUP_FAILED, f"{path}: {exc}") from exc
        reader: aiosqlite.Connection | None = None
        try:
            await apply_schema(writer)
            reader = await _connect(path)
            # On the event loop: it takes a millisecond, once, and a start-up that
            # is cancelled cannot leave a watch behind that nobody closes.
            watch = ChangeWatch.open(path)
        except BaseException:
            for conn in (reader, writer):
                if conn is not None:
                    await conn.close()
            raise
        return cls(writer, reader, ReadCache(watch))

    async def close(self) -> None:
        async with self._write_lock:
            for conn in (self._reader, self._writer):
                with contextlib.suppress(sqlite3.Error, ValueError):
                    await conn.close()
            # Last: the watch holds descriptors of the -shm file (see .changes).
            self._cache.close()

    # -- instances --------------------------------------------------------------------

    async def get_instance(self, instance_id: str) -> Instance | None:
        generation = self._cache.generation()
        if generation is not None and instance_id in self._cache.instances:
            return self._cache.instances[instance_id]
        rows = await self._read(
            f"SELECT {INSTANCE_COLUMNS} FROM instances WHERE id = ?", (instance_id,)
        )
        if not rows:
            return None
        instance = to_instance(rows[0])
        if generation is not None:
            self._cache.remember_instance(instance, generation)
        return instance

    async def find_instance_folded(self, instance_id: str) -> Instance | None:
        rows = await self._read(
            f"SELECT {INSTANCE_COLUMNS} FROM instances WHERE id_folded = ?",
            (instance_id.lower(),),
        )
        return to_instance(rows[0]) if rows else None

    async def list_instances(self) -> list[Instance]:
        rows = await self._read(f"SELECT {INSTANCE_COLUMNS} FROM instances ORDER BY id")
        return [to_instance(row) for row in rows]

    async def create_instance(
        self, new: NewInstance, consume: Sequence[int] = ()
    ) -> Instance:
        now = int(time.time())
        try:
            async with self._transaction() as conn:
                await self._consume(conn, consume)
                cursor = await conn.execute(
                    "INSERT INTO instances (id, id_folded, merchant_pub, auth_method,"
                    " password_hash, email, email_validated, phone_number,"
                    " phone_validated, settings, deleted, created_at)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0, ?)",
                    (
                        new.id,
                        new.id.lower(),
                        new.merchant_pub,
                        new.auth_method,
                        new.password_hash,
                        new.email,
                        int(new.email_validated),
                        new.phone_number,
                        int(new.phone_validated),
                        json.dumps(new.settings, sort_keys=True),
                        now,
                    ),
                )
                serial = cursor.lastrowid
                await conn.execute(
                    "INSERT INTO merchant_keys (instance_serial, merchant_priv)"
                    " VALUES (?, ?)",
                    (serial, new.merchant_priv),
                )
        except DatabaseError as exc:
            if isinstance(exc.__cause__, sqlite3.IntegrityError):
                raise InstanceExists(new.id) from None
            raise
        created = await self.get_instance(new.id)
        if created is None:
            raise DatabaseError(EC.GENERIC_DB_INVARIANT_FAILURE, "instance vanished")
        return created

    async def update_instance(
        self,
        serial: int,
        merge: Callable[[dict[str, Any]], dict[str, Any]],
        contacts: Mapping[str, str | None],
        consume: Sequence[int] = (),
    ) -> bool:
        async with self._transaction() as conn:
            await self._consume(conn, consume)
            rows = list(
                await conn.execute_fetchall(
                    "SELECT settings FROM instances WHERE serial = ? AND deleted = 0",
                    (serial,),
                )
            )
            if not rows:
                return False
            settings = merge(json.loads(rows[0][0]))
            await conn.execute(
                "UPDATE instances SET settings = ? WHERE serial = ?",
                (json.dumps(settings, sort_keys=True), serial),
            )
            for column, flag in _CONTACTS.items():
                if column in contacts:
                    await conn.execute(
                        f"UPDATE instances SET {flag} = CASE WHEN {column} IS ?"
                        f" THEN {flag} ELSE 0 END, {column} = ? WHERE serial = ?",
                        (contacts[column], contacts[column], serial),
                    )
        return True

    async def set_auth(
        self,
        serial: int,
        auth_method: str,
        password_hash: str | None,
        consume: Sequence[int] = (),
    ) -> None:
        async with self._transaction() as conn:
            await self._consume(conn, consume)
            await conn.execute(
                "UPDATE instances SET auth_method = ?, password_hash = ?"
                " WHERE serial = ?",
                (auth_method, password_hash, serial),
            )
            await conn.execute(
                "DELETE FROM access_tokens WHERE instance_serial = ?", (serial,)
            )

    async def delete_instance(
        self, serial: int, purge: bool, consume: Sequence[int] = ()
    ) -> None:
        async with self._transaction() as conn:
            await self._consume(conn, consume)
            if purge:
                await conn.execute("DELETE FROM instances WHERE serial = ?", (serial,))
                return
            await conn.execute(
                "UPDATE instances SET deleted = 1 WHERE serial = ?", (serial,)
            )
            await conn.execute(
                "DELETE FROM merchant_keys WHERE instance_serial = ?", (serial,)
            )
            await conn.execute(
                "DELETE FROM access_tokens WHERE instance_serial = ?", (serial,)
            )

    async def mark_address_validated(
        self, instance_id: str, channel: str, address: str
    ) -> None:
        column = "email" if channel == "email" else "phone_number"
        flag = "email_validated" if channel == "email" else "phone_validated"
        async with self._transaction() as conn:
            await conn.execute(
                f"UPDATE instances SET {flag} = 1 WHERE id = ? AND {column} = ?",
                (instance_id, address),
            )

    # -- access tokens ----------------------------------------------------------------

    async def issue_token(
        self,
        instance_serial: int,
        new: NewAccessToken,
        consume: Sequence[int] = (),
        *,
        expected_hash: str | None | EllipsisType = ...,
    ) -> int:
        async with self._transaction() as conn:
            if expected_hash is not ...:
                rows = await conn.execute_fetchall(
                    "SELECT 1 FROM instances WHERE serial = ? AND deleted = 0"
                    " AND password_hash IS ?",
                    (instance_serial, expected_hash),
                )
                if not list(rows):
                    raise CredentialsChanged()
            await self._consume(conn, consume)
            await conn.execute(
                "DELETE FROM access_tokens WHERE instance_serial = ?"
                " AND expiration <= ?",
                (instance_serial, new.creation_time),
            )
            cursor = await conn.execute(
                "INSERT INTO access_tokens (instance_serial, token_digest,"
                " creation_time, expiration, scope, refreshable, description)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    instance_serial,
                    new.digest,
                    new.creation_time,
                    new.expiration,
                    new.scope,
                    int(new.refreshable),
                    new.description,
                ),
            )
            serial = cursor.lastrowid
        assert serial is not None
        return serial

    async def authenticate_token(
        self, instance_id: str, digest: bytes, now: int
    ) -> tuple[Instance, AccessToken] | None:
        generation = self._cache.generation()
        found = self._cache.tokens.get(digest) if generation is not None else None
        if found is None:
            rows = await self._read(AUTHENTICATE_TOKEN, (digest,))
            if not rows:
                return None
            row = rows[0]
            found = to_instance(row[:INSTANCE_COUNT]), to_token(row[INSTANCE_COUNT:])
            if generation is not None:
                self._cache.remember_token(digest, found, generation)
        instance, token = found
        if instance.id != instance_id or instance.deleted:
            return None
        if token.expiration is not None and token.expiration <= now:
            return None
        return found

    async def list_tokens(
        self, instance_serial: int, limit: int, offset: int, now: int
    ) -> list[AccessToken]:
        if limit > 0:
            where, order = "serial > ?", "ASC"
        else:
            where, order = "serial < ?", "DESC"
        rows = await self._read(
            f"SELECT {TOKEN_COLUMNS} FROM access_tokens"
            f" WHERE instance_serial = ? AND {where}"
            " AND (expiration IS NULL OR expiration > ?)"
            f" ORDER BY serial {order} LIMIT ?",
            (instance_serial, offset, now, abs(limit)),
        )
        return [to_token(row) for row in rows]

    async def revoke_token(self, instance_serial: int, serial: int) -> bool:
        async with self._transaction() as conn:
            cursor = await conn.execute(
                "DELETE FROM access_tokens WHERE instance_serial = ? AND serial = ?",
                (instance_serial, serial),
            )
            return cursor.rowcount > 0

    async def revoke_all_tokens(self, instance_serial: int) -> int:
        async with self._transaction() as conn:
            cursor = await conn.execute(
                "DELETE FROM access_tokens WHERE instance_serial = ?",
                (instance_serial,),
            )
            return cursor.rowcount


async def _connect(path: Path) -> aiosqlite.Connection:
    conn = await aiosqlite.connect(
        str(path), isolation_level=None, timeout=BUSY_TIMEOUT_S
    )
    try:
        await conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
        await conn.execute("PRAGMA foreign_keys = ON")
        await conn.execute("PRAGMA journal_mode = WAL")
        await conn.execute("PRAGMA synchronous = FULL")
    except BaseException:
        await conn.close()
        raise
    return conn
