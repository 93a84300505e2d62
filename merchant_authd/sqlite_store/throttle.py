"""Queries of the back-off and attempt-limit counters."""

from __future__ import annotations

from typing import Callable, Sequence

from ..store import ThrottleState
from .base import SqliteBase
from .rows import placeholders


class ThrottleQueries(SqliteBase):
    """Failure counts and attempt windows, keyed by text."""

    # -- throttling -------------------------------------------------------------------

    async def get_throttle(self, keys: Sequence[str]) -> dict[str, ThrottleState]:
        if not keys:
            return {}
        rows = await self._read(
            "SELECT key, failures, blocked_until FROM throttle"
            f" WHERE key IN ({placeholders(keys)})",
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
                f"DELETE FROM throttle WHERE key IN ({placeholders(keys)})",
                tuple(keys),
            )
