"""Handlers of access tokens: log in or refresh, log out, list, revoke."""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web

from .. import mfa, tokens
from ..errors import EC, TalerError, bad_parameter
from ..schemas import INT64_MAX, LoginTokenRequest, integer_parameter, load
from ..scopes import grant_for, parse_scope
from .request import context, json_body, principal, target

_LOGIN = LoginTokenRequest()


async def post_private_token(request: web.Request) -> web.Response:
    """Issue an access token for a password, or refresh a refreshable token."""
    ctx = context(request)
    caller = principal(request)
    instance = target(request)
    data, raw = await json_body(request)
    body = load(_LOGIN, data)
    try:
        scope, refreshable = parse_scope(body["scope"], body.get("refreshable", False))
    except ValueError:
        raise bad_parameter("scope", f"unknown scope {body['scope']!r}") from None
    parent = caller.token if caller.kind == "token" else None
    if parent is not None and not caller.grant.includes(grant_for(scope, refreshable)):
        raise TalerError(
            403,
            EC.GENERIC_TOKEN_PERMISSION_INSUFFICIENT,
            detail="the new scope must be within the refreshing token's scope",
        )

    async def issue(consume: list[int]) -> dict[str, Any]:
        return await tokens.issue(
            ctx,
            instance,
            scope,
            refreshable,
            body.get("duration", tokens.DEFAULT),
            body.get("description"),
            consume,
            parent=parent,
        )

    issued = await mfa.protect(
        ctx,
        request.headers.get(mfa.HEADER),
        instance_id=instance.id,
        operation=mfa.TOKEN,
        digest=mfa.body_digest(raw),
        # A refreshing token was itself issued after the second factor.
        requirement=(
            mfa.requirement_for(ctx, instance)
            if caller.kind == "password"
            else mfa.NOT_REQUIRED
        ),
        commit=issue,
    )
    return web.json_response(issued)


async def delete_private_token(request: web.Request) -> web.Response:
    """Revoke the access token that authenticates this request.

    A caller authenticated by password (Basic or the legacy bearer form) presents no
    token: nothing is revoked, and the answer is still 204.
    """
    caller = principal(request)
    if caller.token is not None:
        await context(request).store.revoke_token(
            caller.token.instance_serial, caller.token.serial
        )
    return web.Response(status=204)


async def get_private_tokens(request: web.Request) -> web.Response:
    """List the instance's live tokens, paged by serial (``limit``, ``offset``)."""
    raw = request.query.get("limit")
    limit = (
        -20 if raw is None else integer_parameter("limit", raw, -INT64_MAX, INT64_MAX)
    )
    if limit == 0:
        raise bad_parameter("limit", "must not be zero")
    limit = max(-1000, min(limit, 1000))
    raw = request.query.get("offset")
    if raw is not None:
        offset = integer_parameter("offset", raw, 0, INT64_MAX)
    else:
        offset = 0 if limit > 0 else INT64_MAX
    found = await context(request).store.list_tokens(
        target(request).serial, limit, offset, int(time.time())
    )
    if not found:
        return web.Response(status=204)
    return web.json_response({"tokens": [tokens.token_info(t) for t in found]})


async def delete_private_tokens_serial(request: web.Request) -> web.Response:
    """Revoke one of the instance's tokens by serial."""
    raw = request.match_info["serial"]
    serial = integer_parameter("serial", raw, 0, INT64_MAX)
    if not await context(request).store.revoke_token(target(request).serial, serial):
        raise TalerError(404, EC.MERCHANT_GENERIC_ACCESS_TOKEN_UNKNOWN, detail=raw)
    return web.Response(status=204)
