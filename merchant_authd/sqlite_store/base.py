"""Connections and transactions shared by every group of queries."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from typing import Any, AsyncIterator, Sequence

import aiosqlite

from ..errors import EC, DatabaseError
from ..store import ChallengeAlreadyConsumed
from .cache import ReadCache
from .rows import placeholders

log = logging.getLogger("merchant_authd.store")


class SqliteBase:
    """The two connections, the read cache and the transaction helper."""

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
            f" AND serial IN ({placeholders(serials)})",
            tuple(serials),
        )
        if cursor.rowcount != len(set(serials)):
            raise ChallengeAlreadyConsumed()
