"""Access tokens: issuing them with a scope and lifetime, and describing them.

A token is 32 random bytes shown once as ``secret-token:`` + Crockford base32; only a
digest is stored.  Lifetimes default to ``DEFAULT_TOKEN_DURATION``; a request longer
than ``MAX_TOKEN_DURATION`` is shortened to it rather than refused, and so is a
refresh asking for more than the lifetime of the token it is made with.
"""

from __future__ import annotations

import math
import time
from typing import Any, Sequence

from . import crypto
from .context import Context
from .errors import unauthorized
from .schemas import timestamp
from .store import AccessToken, CredentialsChanged, Instance, NewAccessToken

#: Marker for "the request named no duration".
DEFAULT = -1


def lifetime_us(
    ctx: Context, requested: int | None, parent: AccessToken | None = None
) -> int | None:
    """The granted lifetime in microseconds (``None``: forever).

    A token minted by refreshing ``parent`` lives no longer than ``parent`` was
    granted to live, or a short-lived refreshable token could mint eternal ones.
    """
    if requested == DEFAULT:
        requested = ctx.settings.default_token_duration
    caps = [ctx.settings.max_token_duration]
    if parent is not None and parent.expiration is not None:
        caps.append((parent.expiration - parent.creation_time) * 1_000_000)
    for cap in caps:
        if cap is not None:
            requested = cap if requested is None else min(requested, cap)
    return requested


async def issue(
    ctx: Context,
    instance: Instance,
    scope: str,
    refreshable: bool,
    duration_us: int | None,
    description: str | None,
    consume: Sequence[int] = (),
    *,
    parent: AccessToken | None = None,
) -> dict[str, Any]:
    """Store a new token; the ``LoginTokenSuccessResponse`` that reveals it.

    ``instance`` is the state the caller was authenticated against: if its password
    changed since (a concurrent password change revoked every token), 401.
    ``parent`` is the refreshable token of a refresh.
    """
    now = int(time.time())
    lifetime = lifetime_us(ctx, duration_us, parent)
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
