"""Handlers that change an instance's credentials: ``.../auth`` and forgot-password."""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web

from .. import instances, mfa
from ..errors import EC, TalerError, unknown_instance
from ..schemas import AuthConfig, load
from ..store import ChallengeAlreadyConsumed
from .request import context, json_body, mfa_exempt, target
from .security import ADMIN, client_address

log = logging.getLogger("merchant_authd.auth")

_AUTH = AuthConfig()


async def post_auth(request: web.Request) -> web.Response:
    """Set the password (or the deprecated token / external method)."""
    ctx = context(request)
    instance = target(request)
    if instance.deleted:
        raise TalerError(404, EC.MERCHANT_GENERIC_INSTANCE_DELETED)
    data, raw = await json_body(request)
    body = load(_AUTH, data, EC.MERCHANT_PRIVATE_POST_INSTANCE_AUTH_BAD_AUTH)
    binding: dict[str, Any] = {
        "instance_id": instance.id,
        "operation": mfa.AUTH,
        "digest": mfa.body_digest(raw),
        "requirement": mfa.requirement_for(ctx, instance),
    }
    consume: list[int] = []
    if not mfa_exempt(request):
        consume = await mfa.require(
            ctx, **binding, header=request.headers.get(mfa.HEADER)
        )
    method, password_hash = await instances.credentials(ctx, body)
    try:
        await ctx.store.set_auth(instance.serial, method, password_hash, consume)
    except ChallengeAlreadyConsumed:
        await mfa.reissue(ctx, **binding)
    return web.Response(status=204)


async def post_forgot_password(request: web.Request) -> web.Response:
    """Set a new password after proving control of the instance's TAN channels."""
    ctx = context(request)
    instance_id = request.match_info["instance"]
    if instance_id == ADMIN:
        raise TalerError(
            403,
            EC.MERCHANT_GENERIC_UNAUTHORIZED,
            "not available for the admin instance; the operator sets its password",
        )
    instance = await ctx.store.get_instance(instance_id)
    if instance is None or instance.deleted:
        raise unknown_instance(instance_id)
    data, raw = await json_body(request)
    body = load(_AUTH, data, EC.MERCHANT_PRIVATE_POST_INSTANCE_AUTH_BAD_AUTH)
    requirement = mfa.requirement_for(ctx, instance)
    if not requirement.channels:
        # Forgot-password has no other proof of identity than a TAN channel.
        raise TalerError(
            403, EC.MERCHANT_GENERIC_MFA_MISSING, detail="no validated TAN channel"
        )
    binding: dict[str, Any] = {
        "instance_id": instance.id,
        "operation": mfa.FORGOT_PASSWORD,
        "digest": mfa.body_digest(raw),
        "requirement": requirement,
    }

    async def count_reset() -> None:
        await ctx.password_resets.attempt(client_address(request))

    consume = await mfa.require(
        ctx,
        **binding,
        header=request.headers.get(mfa.HEADER),
        before_issue=count_reset,
    )
    method, password_hash = await instances.credentials(ctx, body)
    try:
        await ctx.store.set_auth(instance.serial, method, password_hash, consume)
    except ChallengeAlreadyConsumed:
        await mfa.reissue(ctx, **binding)
    log.info("password of instance %s reset after forgot-password", instance.id)
    return web.Response(status=204)
