"""Applying ``schema.sql``, the single source of the schema, and its version."""

from __future__ import annotations

import contextlib
import logging
import re
import sqlite3
import time
from importlib import resources

import aiosqlite

from ..errors import EC, DatabaseError

log = logging.getLogger("merchant_authd.store")


def schema_text() -> str:
    """The text of ``schema.sql`` shipped with the package."""
    return resources.files("merchant_authd").joinpath("schema.sql").read_text("utf-8")


def schema_version(text: str) -> int:
    """The version a schema text declares in its ``schema-version:`` comment."""
    match = re.search(r"^-- schema-version: (\d+)$", text, re.MULTILINE)
    if not match:
        raise ValueError("schema.sql declares no schema-version")
    return int(match.group(1))


async def apply_schema(conn: aiosqlite.Connection) -> None:
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
