"""The SQLite implementation of :class:`~merchant_authd.store.Store`.

All SQL of the daemon is in this module.  Two connections are kept: writes go through
one connection, one transaction at a time (``BEGIN IMMEDIATE`` under an asyncio lock),
and reads through the other, so that a reader never sees a transaction half done.
The database runs in WAL mode with foreign keys on and ``synchronous = FULL``: a
change is on disk before it is acknowledged.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import sqlite3
import time
from importlib import resources
from pathlib import Path
from types import EllipsisType
from typing import Any, AsyncIterator, Callable, Sequence

import aiosqlite

from .errors import EC, DatabaseError
from .store import (
    AccessToken,
    Challenge,
    ChallengeAlreadyConsumed,
    CredentialsChanged,
    Instance,
    InstanceExists,
    NewAccessToken,
    NewChallenge,
    NewInstance,
    Store,
    ThrottleState,
)

log = logging.getLogger("merchant_authd.store")

_INSTANCE_COLUMNS = (
    "serial, id, merchant_pub, auth_method, password_hash, email, email_validated,"
    " phone_number, phone_validated, settings, deleted, created_at"
)
_TOKEN_COLUMNS = (
    "serial, instance_serial, creation_time, expiration, scope, refreshable,"
    " description"
)
_CHALLENGE_COLUMNS = (
    "serial, instance_id, operation, body_digest, channel, address, tan_salt,"
    " tan_digest, retry_counter, created_at, expires_at, solve_expiration,"
    " last_sent, solved, consumed"
)
_INSTANCE_COUNT = 12
# A token with its instance, whatever the instance and expiry: both are checked on
# the row, so that the same row can be served from the cache.
_AUTHENTICATE_TOKEN = (
    "SELECT "
    + ", ".join(f"i.{c.strip()}" for c in _INSTANCE_COLUMNS.split(","))
    + ", "
    + ", ".join(f"t.{c.strip()}" for c in _TOKEN_COLUMNS.split(","))
    + " FROM access_tokens t JOIN instances i ON i.serial = t.instance_serial"
    " WHERE t.token_digest = ?"
)
#: Seconds a connection waits for another one's lock before the step fails (tests
#: that hold the database locked lower it).
BUSY_TIMEOUT_S = 5.0


def schema_text() -> str:
    """The text of ``schema.sql`` shipped with the package."""
    return resources.files("merchant_authd").joinpath("schema.sql").read_text("utf-8")


def schema_version(text: str) -> int:
    """The version a schema text declares in its ``schema-version:`` comment."""
    match = re.search(r"^-- schema-version: (\d+)$", text, re.MULTILINE)
    if not match:
        raise ValueError("schema.sql declares no schema-version")
    return int(match.group(1))


def _instance(row: Sequence[Any]) -> Instance:
    return Instance(
        serial=row[0],
        id=row[1],
        merchant_pub=bytes(row[2]),
        auth_method=row[3],
        password_hash=row[4],
        email=row[5],
        email_validated=bool(row[6]),
        phone_number=row[7],
        phone_validated=bool(row[8]),
        settings_json=row[9],
        deleted=bool(row[10]),
        created_at=row[11],
    )


def _token(row: Sequence[Any]) -> AccessToken:
    return AccessToken(
        serial=row[0],
        instance_serial=row[1],
        creation_time=row[2],
        expiration=row[3],
        scope=row[4],
        refreshable=bool(row[5]),
        description=row[6],
    )


def _challenge(row: Sequence[Any]) -> Challenge:
    return Challenge(
        serial=row[0],
        instance_id=row[1],
        operation=row[2],
        body_digest=bytes(row[3]),
        channel=row[4],
        address=row[5],
        tan_salt=None if row[6] is None else bytes(row[6]),
        tan_digest=None if row[7] is None else bytes(row[7]),
        retry_counter=row[8],
        created_at=row[9],
        expires_at=row[10],
        solve_expiration=row[11],
        last_sent=row[12],
        solved=bool(row[13]),
        consumed=bool(row[14]),
    )


def _placeholders(values: Sequence[Any]) -> str:
    return ",".join("?" * len(values))


class ReadCache:
    """Instances and access tokens as last read, valid until anybody commits.

    ``PRAGMA data_version`` on a connection of its own changes whenever any other
    connection commits, in this process or another (an admin command, say); the
    cache is emptied then.  Asking costs microseconds and reads only shared memory
    (the database is in WAL mode), so it is done on the event loop.  A cached answer
    is thus exactly what the database would answer: revoking a token takes effect on
    the next request, whoever revoked it.
    """

    MAX_ENTRIES = 10_000

    def __init__(self, probe: sqlite3.Connection) -> None:
        self._probe = probe
        self._version: int | None = None
        self.instances: dict[str, Instance] = {}
        self.tokens: dict[bytes, tuple[Instance, AccessToken]] = {}

    def current(self) -> bool:
        """Empty the cache if the database changed; whether it may be used."""
        try:
            version = self._probe.execute("PRAGMA data_version").fetchone()[0]
        except sqlite3.Error:
            version = None
        if version is None or version != self._version:
            self.instances.clear()
            self.tokens.clear()
            self._version = version
        return version is not None

    def remember_instance(self, instance: Instance) -> None:
        if len(self.instances) >= self.MAX_ENTRIES:
            self.instances.clear()
        self.instances[instance.id] = instance

    def remember_token(
        self, digest: bytes, found: tuple[Instance, AccessToken]
    ) -> None:
        if len(self.tokens) >= self.MAX_ENTRIES:
            self.tokens.clear()
        self.tokens[digest] = found

    def close(self) -> None:
        self._probe.close()


class SqliteStore(Store):
    """Storage in one SQLite database file."""

    def __init__(
        self,
        writer: aiosqlite.Connection,
        reader: aiosqlite.Connection,
        cache: ReadCache,
    ):
        self._writer = writer
        self._reader = reader
        self._cache = cache
        self._write_lock = asyncio.Lock()

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
        try:
            await _apply_schema(writer)
            reader = await _connect(path)
            probe = await asyncio.to_thread(
                sqlite3.connect,
                str(path),
                isolation_level=None,
                check_same_thread=False,
            )
        except BaseException:
            await writer.close()
            raise
        return cls(writer, reader, ReadCache(probe))

    async def close(self) -> None:
        async with self._write_lock:
            for conn in (self._reader, self._writer):
                with contextlib.suppress(sqlite3.Error, ValueError):
                    await conn.close()
            self._cache.close()

    # -- plumbing ---------------------------------------------------------------------

    async def _read(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        try:
            return list(await self._reader.execute_fetchall(sql, params))
        except sqlite3.Error as exc:
            log.error("database read failed: %s", exc)
            raise DatabaseError(EC.GENERIC_DB_FETCH_FAILED, str(exc)) from exc

    @contextlib.asynccontextmanager
    async def _transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        async with self._write_lock:
            try:
                await self._writer.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                log.error("database transaction could not start: %s", exc)
                raise DatabaseError(EC.GENERIC_DB_START_FAILED, str(exc)) from exc
            try:
                yield self._writer
            except sqlite3.Error as exc:
                await self._rollback()
                if not isinstance(exc, sqlite3.IntegrityError):
                    log.error("database write failed: %s", exc)
                raise DatabaseError(EC.GENERIC_DB_STORE_FAILED, str(exc)) from exc
            except BaseException:
                await self._rollback()
                raise
            try:
                await self._writer.execute("COMMIT")
            except sqlite3.Error as exc:
                await self._rollback()
                log.error("database commit failed: %s", exc)
                raise DatabaseError(EC.GENERIC_DB_COMMIT_FAILED, str(exc)) from exc

    async def _rollback(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            if self._writer.in_transaction:
                await self._writer.execute("ROLLBACK")

    @staticmethod
    async def _consume(conn: aiosqlite.Connection, serials: Sequence[int]) -> None:
        if not serials:
            return
        cursor = await conn.execute(
            "UPDATE challenges SET consumed = 1 WHERE solved = 1 AND consumed = 0"
            f" AND serial IN ({_placeholders(serials)})",
            tuple(serials),
        )
        if cursor.rowcount != len(set(serials)):
            raise ChallengeAlreadyConsumed()

    # -- instances --------------------------------------------------------------------

    async def get_instance(self, instance_id: str) -> Instance | None:
        cacheable = self._cache.current()
        if cacheable and instance_id in self._cache.instances:
            return self._cache.instances[instance_id]
        rows = await self._read(
            f"SELECT {_INSTANCE_COLUMNS} FROM instances WHERE id = ?", (instance_id,)
        )
        if not rows:
            return None
        instance = _instance(rows[0])
        if cacheable:
            self._cache.remember_instance(instance)
        return instance

    async def find_instance_folded(self, instance_id: str) -> Instance | None:
        rows = await self._read(
            f"SELECT {_INSTANCE_COLUMNS} FROM instances WHERE id_folded = ?",
            (instance_id.lower(),),
        )
        return _instance(rows[0]) if rows else None

    async def list_instances(self) -> list[Instance]:
        rows = await self._read(
            f"SELECT {_INSTANCE_COLUMNS} FROM instances ORDER BY id"
        )
        return [_instance(row) for row in rows]

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
        settings: dict[str, Any],
        email: str | None,
        phone_number: str | None,
    ) -> None:
        async with self._transaction() as conn:
            await conn.execute(
                "UPDATE instances SET settings = ?,"
                " email_validated = CASE WHEN email IS ? THEN email_validated"
                " ELSE 0 END,"
                " phone_validated = CASE WHEN phone_number IS ? THEN phone_validated"
                " ELSE 0 END,"
                " email = ?, phone_number = ? WHERE serial = ?",
                (
                    json.dumps(settings, sort_keys=True),
                    email,
                    phone_number,
                    email,
                    phone_number,
                    serial,
                ),
            )

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
        cacheable = self._cache.current()
        found = self._cache.tokens.get(digest) if cacheable else None
        if found is None:
            rows = await self._read(_AUTHENTICATE_TOKEN, (digest,))
            if not rows:
                return None
            row = rows[0]
            found = _instance(row[:_INSTANCE_COUNT]), _token(row[_INSTANCE_COUNT:])
            if cacheable:
                self._cache.remember_token(digest, found)
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
            f"SELECT {_TOKEN_COLUMNS} FROM access_tokens"
            f" WHERE instance_serial = ? AND {where}"
            " AND (expiration IS NULL OR expiration > ?)"
            f" ORDER BY serial {order} LIMIT ?",
            (instance_serial, offset, now, abs(limit)),
        )
        return [_token(row) for row in rows]

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

    # -- challenges -------------------------------------------------------------------

    async def create_challenges(
        self, new: Sequence[NewChallenge], max_active: int, now: int
    ) -> list[int] | None:
        if not new:
            return []
        async with self._transaction() as conn:
            await conn.execute(
                "DELETE FROM challenges WHERE expires_at <= ?", (now - 86400,)
            )
            rows = await conn.execute_fetchall(
                "SELECT COUNT(*) FROM challenges WHERE instance_id = ?"
                " AND operation = ? AND solved = 0 AND expires_at > ?",
                (new[0].instance_id, new[0].operation, now),
            )
            active = list(rows)[0][0]
            if active + len(new) > max_active:
                return None
            serials = []
            for challenge in new:
                cursor = await conn.execute(
                    "INSERT INTO challenges (id_digest, instance_id, operation,"
                    " body_digest, channel, address, created_at, expires_at)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        challenge.id_digest,
                        challenge.instance_id,
                        challenge.operation,
                        challenge.body_digest,
                        challenge.channel,
                        challenge.address,
                        challenge.created_at,
                        challenge.expires_at,
                    ),
                )
                assert cursor.lastrowid is not None
                serials.append(cursor.lastrowid)
            return serials

    async def get_challenge(self, id_digest: bytes) -> Challenge | None:
        rows = await self._read(
            f"SELECT {_CHALLENGE_COLUMNS} FROM challenges WHERE id_digest = ?",
            (id_digest,),
        )
        return _challenge(rows[0]) if rows else None

    async def get_challenges(self, id_digests: Sequence[bytes]) -> list[Challenge]:
        digests = list(id_digests)
        if not digests:
            return []
        rows = await self._read(
            f"SELECT {_CHALLENGE_COLUMNS} FROM challenges"
            f" WHERE id_digest IN ({_placeholders(digests)})",
            digests,
        )
        return [_challenge(row) for row in rows]

    async def record_transmission(
        self,
        serial: int,
        tan_salt: bytes,
        tan_digest: bytes,
        retries: int,
        now: int,
        solve_expiration: int,
        earliest_previous: int,
    ) -> bool:
        async with self._transaction() as conn:
            cursor = await conn.execute(
                "UPDATE challenges SET tan_salt = ?, tan_digest = ?,"
                " retry_counter = ?, last_sent = ?, solve_expiration = ?,"
                " expires_at = max(expires_at, ?)"
                " WHERE serial = ? AND solved = 0"
                " AND (last_sent IS NULL OR last_sent <= ?)",
                (
                    tan_salt,
                    tan_digest,
                    retries,
                    now,
                    solve_expiration,
                    solve_expiration,
                    serial,
                    earliest_previous,
                ),
            )
            return cursor.rowcount > 0

    async def take_attempt(self, serial: int) -> int | None:
        async with self._transaction() as conn:
            cursor = await conn.execute(
                "UPDATE challenges SET retry_counter = retry_counter - 1"
                " WHERE serial = ? AND retry_counter > 0",
                (serial,),
            )
            if cursor.rowcount == 0:
                return None
            rows = list(
                await conn.execute_fetchall(
                    "SELECT retry_counter FROM challenges WHERE serial = ?", (serial,)
                )
            )
            return int(rows[0][0])

    async def mark_solved(self, serial: int) -> bool:
        async with self._transaction() as conn:
            cursor = await conn.execute(
                "UPDATE challenges SET solved = 1 WHERE serial = ? AND solved = 0",
                (serial,),
            )
            return cursor.rowcount > 0

    # -- throttling -------------------------------------------------------------------

    async def get_throttle(self, keys: Sequence[str]) -> dict[str, ThrottleState]:
        if not keys:
            return {}
        rows = await self._read(
            "SELECT key, failures, blocked_until FROM throttle"
            f" WHERE key IN ({_placeholders(keys)})",
            tuple(keys),
        )
        return {row[0]: ThrottleState(row[1], row[2]) for row in rows}

    async def record_failure(
        self,
        key: str,
        now: float,
        delay_for: Callable[[int], float],
        forget_after_s: float,
    ) -> ThrottleState:
        async with self._transaction() as conn:
            await conn.execute(
                "DELETE FROM throttle WHERE updated_at < ? AND blocked_until < ?",
                (now - forget_after_s, now),
            )
            rows = list(
                await conn.execute_fetchall(
                    "SELECT failures FROM throttle WHERE key = ?", (key,)
                )
            )
            failures = (rows[0][0] if rows else 0) + 1
            blocked_until = now + delay_for(failures)
            await conn.execute(
                "INSERT INTO throttle (key, failures, blocked_until, updated_at)"
                " VALUES (?, ?, ?, ?) ON CONFLICT (key) DO UPDATE SET"
                " failures = excluded.failures,"
                " blocked_until = excluded.blocked_until,"
                " updated_at = excluded.updated_at",
                (key, failures, blocked_until, now),
            )
        return ThrottleState(failures, blocked_until)

    async def clear_failures(
        self, instance_key: str, pair_key: str, address_key: str
    ) -> None:
        async with self._transaction() as conn:
            rows = list(
                await conn.execute_fetchall(
                    "SELECT failures FROM throttle WHERE key = ?", (pair_key,)
                )
            )
            if rows:
                await conn.execute(
                    "UPDATE throttle SET failures = max(failures - ?, 0)"
                    " WHERE key = ?",
                    (rows[0][0], address_key),
                )
            await conn.execute(
                "DELETE FROM throttle WHERE key IN (?, ?)", (instance_key, pair_key)
            )
            await conn.execute(
                "DELETE FROM throttle WHERE key = ? AND failures = 0", (address_key,)
            )

    async def count_attempt(
        self, key: str, now: float, window_s: float
    ) -> ThrottleState:
        async with self._transaction() as conn:
            await conn.execute(
                "INSERT INTO throttle (key, failures, blocked_until, updated_at)"
                " VALUES (?, 1, ?, ?) ON CONFLICT (key) DO UPDATE SET"
                " failures = CASE WHEN blocked_until <= excluded.updated_at THEN 1"
                " ELSE failures + 1 END,"
                " blocked_until = CASE WHEN blocked_until <= excluded.updated_at"
                " THEN excluded.blocked_until ELSE blocked_until END,"
                " updated_at = excluded.updated_at",
                (key, now + window_s, now),
            )
            rows = list(
                await conn.execute_fetchall(
                    "SELECT failures, blocked_until FROM throttle WHERE key = ?", (key,)
                )
            )
        return ThrottleState(rows[0][0], rows[0][1])

    async def reset_throttle(self, keys: Sequence[str]) -> None:
        if not keys:
            return
        async with self._transaction() as conn:
            await conn.execute(
                f"DELETE FROM throttle WHERE key IN ({_placeholders(keys)})",
                tuple(keys),
            )


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


async def _apply_schema(conn: aiosqlite.Connection) -> None:
    """Create the schema in a new database; refuse one newer than this code."""
    text = schema_text()
    wanted = schema_version(text)
    rows = list(
        await conn.execute_fetchall(
            "SELECT name FROM sqlite_master WHERE type = 'table'"
            " AND name = 'schema_version'"
        )
    )
    current = 0
    if rows:
        found = list(
            await conn.execute_fetchall("SELECT max(version) FROM schema_version")
        )
        current = found[0][0] or 0
    if current > wanted:
        raise DatabaseError(
            EC.GENERIC_DB_SETUP_FAILED,
            f"database schema version {current} is newer than this program ({wanted})",
        )
    if current == wanted:
        return
    # sqlite3's executescript commits first, so run the statements one by one
    # inside an explicit transaction.
    await conn.execute("BEGIN IMMEDIATE")
    try:
        for statement in _statements(text):
            await conn.execute(statement)
        await conn.execute(
            "INSERT INTO schema_version (version, applied_at) VALUES (?, ?)",
            (wanted, int(time.time())),
        )
        await conn.execute("COMMIT")
    except BaseException:
        with contextlib.suppress(sqlite3.Error):
            await conn.execute("ROLLBACK")
        raise
    log.info("database schema version %d applied", wanted)


def _statements(text: str) -> list[str]:
    """Split the schema into statements (it holds no ';' inside literals)."""
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("--")]
    body = "\n".join(line.split("--")[0] for line in lines)
    return [part.strip() for part in body.split(";") if part.strip()]
