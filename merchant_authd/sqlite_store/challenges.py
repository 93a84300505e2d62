"""Queries of multi-factor challenges."""

from __future__ import annotations

from typing import Sequence

from ..store import Challenge, NewChallenge
from .base import SqliteBase
from .rows import CHALLENGE_COLUMNS, placeholders, to_challenge


class ChallengeQueries(SqliteBase):
    """Challenges: creation under a cap, transmissions, attempts, solving."""

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
            f"SELECT {CHALLENGE_COLUMNS} FROM challenges WHERE id_digest = ?",
            (id_digest,),
        )
        return to_challenge(rows[0]) if rows else None

    async def get_challenges(self, id_digests: Sequence[bytes]) -> list[Challenge]:
        digests = list(id_digests)
        if not digests:
            return []
        rows = await self._read(
            f"SELECT {CHALLENGE_COLUMNS} FROM challenges"
            f" WHERE id_digest IN ({placeholders(digests)})",
            digests,
        )
        return [to_challenge(row) for row in rows]

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
