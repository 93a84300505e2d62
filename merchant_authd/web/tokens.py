"""Handlers of access tokens: log in or refresh, log out, list, revoke."""

from __future__ import annotations

import re
import time
from typing import Any

from aiohttp import web

from .. import mfa, tokens
from ..errors import EC, TalerError, bad_parameter
from ..schemas import LoginTokenRequest, load
from ..scopes import grant_for, parse_scope
from ..store import ChallengeAlreadyConsumed
from .request import context, json_body, principal, target

_LOGIN = LoginTokenRequest()
_INT64_MAX = 2**63 - 1
#: Plain ASCII decimal integers; ``int()`` alone would take " 5", "+5", "1_0", "٥".
_INTEGER = re.compile(r"-?[0-9]{1,19}")


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
    if caller.kind == "token" and not caller.grant.includes(
        grant_for(scope, refreshable)
    ):
        raise TalerError(
            403,
            EC.GENERIC_TOKEN_PERMISSION_INSUFFICIENT,
            detail="the new scope must be within the refreshing token's scope",
        )
    binding: dict[str, Any] = {
        "instance_id": instance.id,
        "operation": mfa.TOKEN,
        "digest": mfa.body_digest(raw),
        "requirement": mfa.requirement_for(ctx, instance),
    }
    consume: list[int] = []
    if caller.kind == "password":
        consume = await mfa.require(
            ctx, **binding, header=request.headers.get(mfa.HEADER)
        )
    try:
        issued = await tokens.issue(
            ctx,
            instance,
            scope,
            refreshable,
            body.get("duration", tokens.DEFAULT),
            body.get("description"),
            consume,
        )
    except ChallengeAlreadyConsumed:
        await mfa.reissue(ctx, **binding)
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


def _int_query(request: web.Request, name: str, default: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    if not _INTEGER.fullmatch(raw):
        raise bad_parameter(name, "expected an integer")
    value = int(raw, 10)
    if not -_INT64_MAX <= value <= _INT64_MAX:
        raise bad_parameter(name, "out of range")
    return value


async def get_private_tokens(request: web.Request) -> web.Response:
    """List the instance's live tokens, paged by serial (``limit``, ``offset``)."""
    limit = _int_query(request, "limit", -20)
    if limit == 0:
        raise bad_parameter("limit", "must not be zero")
    limit = max(-1000, min(limit, 1000))
    offset = _int_query(request, "offset", 0 if limit > 0 else _INT64_MAX)
    if offset < 0:
        raise bad_parameter("offset", "must not be negative")
    found = await context(request).store.list_tokens(
        target(request).serial, limit, offset, int(time.time())
    )
    if not found:
        return web.Response(status=204)
    return web.json_response({"tokens": [tokens.token_info(t) for t in found]})


async def delete_private_tokens_serial(request: web.Request) -> web.Response:
    """Revoke one of the instance's tokens by serial."""
    raw = request.match_info["serial"]
    if not raw.isascii() or not raw.isdigit() or int(raw) > _INT64_MAX:
        raise bad_parameter("serial", "expected a token serial number")
    if not await context(request).store.revoke_token(target(request).serial, int(raw)):
        raise TalerError(404, EC.MERCHANT_GENERIC_ACCESS_TOKEN_UNKNOWN, detail=raw)
    return web.Response(status=204)
