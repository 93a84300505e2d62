"""Column lists of the tables and the records their rows become."""

from __future__ import annotations

from typing import Any, Sequence

from ..store import AccessToken, Challenge, Instance

INSTANCE_COLUMNS = (
    "serial, id, merchant_pub, auth_method, password_hash, email, email_validated,"
    " phone_number, phone_validated, settings, deleted, created_at"
)
TOKEN_COLUMNS = (
    "serial, instance_serial, creation_time, expiration, scope, refreshable,"
    " description"
)
CHALLENGE_COLUMNS = (
    "serial, instance_id, operation, body_digest, channel, address, tan_salt,"
    " tan_digest, retry_counter, created_at, expires_at, solve_expiration,"
    " last_sent, solved, consumed"
)
INSTANCE_COUNT = 12
# A token with its instance, whatever the instance and expiry: both are checked on
# the row, so that the same row can be served from the cache.
AUTHENTICATE_TOKEN = (
    "SELECT "
    + ", ".join(f"i.{c.strip()}" for c in INSTANCE_COLUMNS.split(","))
    + ", "
    + ", ".join(f"t.{c.strip()}" for c in TOKEN_COLUMNS.split(","))
    + " FROM access_tokens t JOIN instances i ON i.serial = t.instance_serial"
    " WHERE t.token_digest = ?"
)


#: Seconds a connection waits for another one's lock before the step fails (tests
#: that hold the database locked lower it).
def to_instance(row: Sequence[Any]) -> Instance:
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


def to_token(row: Sequence[Any]) -> AccessToken:
    return AccessToken(
        serial=row[0],
        instance_serial=row[1],
        creation_time=row[2],
        expiration=row[3],
        scope=row[4],
        refreshable=bool(row[5]),
        description=row[6],
    )


def to_challenge(row: Sequence[Any]) -> Challenge:
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


def placeholders(values: Sequence[Any]) -> str:
    return ",".join("?" * len(values))
