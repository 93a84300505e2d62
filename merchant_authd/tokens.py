"""Access tokens: issuing them with a scope and lifetime, and describing them.

A token is 32 random bytes shown once as ``secret-token:`` + Crockford base32; only a
digest is stored.  Lifetimes default to ``DEFAULT_TOKEN_DURATION``; a request longer
than ``MAX_TOKEN_DURATION`` is shortened to it rather than refused.
"""

from __future__ import annotations

import math
import time
from typing import Any, Sequence

from . import crypto
from .context import Context
from .schemas import timestamp
from .errors import unauthorized
from .store import AccessToken, CredentialsChanged, Instance, NewAccessToken

#: Marker for "the request named no duration".
DEFAULT = -1


def lifetime_us(ctx: Context, requested: int | None) -> int | None:
    """The granted lifetime in microseconds (``None``: forever)."""
    if requested == DEFAULT:
        requested = ctx.settings.default_token_duration
    cap = ctx.settings.max_token_duration
    if cap is None:
        return requested
    return cap if requested is None else min(requested, cap)


async def issue(
    ctx: Context,
    instance: Instance,
    scope: str,
    refreshable: bool,
    duration_us: int | None,
    description: str | None,
    consume: Sequence[int] = (),
) -> dict[str, Any]:
    """Store a new token; the ``LoginTokenSuccessResponse`` that reveals it.

    ``instance`` is the state the caller was authenticated against: if its password
    changed since (a concurrent password change revoked every token), 401.
    """
    now = int(time.time())
    lifetime = lifetime_us(ctx, duration_us)
    expiration = None if lifetime is None else now + math.ceil(lifetime / 1_000_000)
    secret, digest = crypto.new_access_token()
    try:
        serial = await ctx.store.issue_token(
            instance.serial,
            NewAccessToken(digest, now, expiration, scope, refreshable, description),
            consume,
            expected_hash=instance.password_hash,
        )
    except CredentialsChanged:
        raise unauthorized("the credentials changed meanwhile") from None
    return {
        "token": secret,
        "access_token": secret,
        "scope": scope,
        "expiration": timestamp(expiration),
        "refreshable": refreshable,
        "serial": serial,
    }


def token_info(token: AccessToken) -> dict[str, Any]:
    """One ``TokenInfo`` entry: everything but the secret."""
    info: dict[str, Any] = {
        "creation_time": timestamp(token.creation_time),
        "expiration": timestamp(token.expiration),
        "scope": token.scope,
        "refreshable": token.refreshable,
        "serial": token.serial,
    }
    if token.description is not None:
        info["description"] = token.description
    return info
