"""Handlers that change an instance's credentials: ``.../auth`` and forgot-password."""

from __future__ import annotations

import logging
from typing import Any, Awaitable, Callable

from aiohttp import web

from .. import instances, mfa
from ..context import Context
from ..errors import EC, TalerError, unknown_instance
from ..schemas import AuthConfig, load
from ..store import Instance
from .request import context, json_body, mfa_exempt, target
from .security import ADMIN, client_address

log = logging.getLogger("merchant_authd.auth")

_AUTH = AuthConfig()
_BAD_AUTH = EC.MERCHANT_PRIVATE_POST_INSTANCE_AUTH_BAD_AUTH


async def post_auth(request: web.Request) -> web.Response:
    """Set the password (or the deprecated token / external method)."""
    ctx = context(request)
    instance = target(request)
    if instance.deleted:
        raise TalerError(404, EC.MERCHANT_GENERIC_INSTANCE_DELETED)
    data, raw = await json_body(request)
    body = load(_AUTH, data, _BAD_AUTH)
    await mfa.protect(
        ctx,
        request.headers.get(mfa.HEADER),
        instance_id=instance.id,
        operation=mfa.AUTH,
        digest=mfa.body_digest(raw),
        requirement=mfa.requirement_for(ctx, instance, exempt=mfa_exempt(request)),
        commit=_setting_credentials(ctx, instance, body),
    )
    return web.Response(status=204)


async def post_forgot_password(request: web.Request) -> web.Response:
    """Set a new password after proving control of the instance's TAN channels."""
    ctx = context(request)
    instance = await _reset_target(request)
    data, raw = await json_body(request)
    body = load(_AUTH, data, _BAD_AUTH)
    if body["method"] == "external":
        # Whoever controls the mailbox could otherwise switch authentication off.
        raise TalerError(400, _BAD_AUTH, detail="a reset needs a password")
    requirement = mfa.requirement_for(ctx, instance)
    if not requirement.channels:
        # Forgot-password has no other proof of identity than a TAN channel.
        raise TalerError(
            403, EC.MERCHANT_GENERIC_MFA_MISSING, detail="no validated TAN channel"
        )

    async def count_reset() -> None:
        await ctx.password_resets.attempt(client_address(request))

    await mfa.protect(
        ctx,
        request.headers.get(mfa.HEADER),
        instance_id=instance.id,
        operation=mfa.FORGOT_PASSWORD,
        digest=mfa.body_digest(raw),
        requirement=requirement,
        commit=_setting_credentials(ctx, instance, body),
        before_issue=count_reset,
    )
    log.info("password of instance %s reset after forgot-password", instance.id)
    return web.Response(status=204)


def _setting_credentials(
    ctx: Context, instance: Instance, body: dict[str, Any]
) -> Callable[[list[int]], Awaitable[None]]:
    """The commit of a credential change: new credentials, tokens revoked."""

    async def commit(consume: list[int]) -> None:
        method, password_hash = await instances.credentials(ctx, body)
        await ctx.store.set_auth(instance.serial, method, password_hash, consume)

    return commit


async def _reset_target(request: web.Request) -> Instance:
    """The instance whose password is to be reset: any live one but the admin."""
    instance_id = request.match_info["instance"]
    if instance_id == ADMIN:
        raise TalerError(
            403,
            EC.MERCHANT_GENERIC_UNAUTHORIZED,
            "not available for the admin instance; the operator sets its password",
        )
    instance = await context(request).store.get_instance(instance_id)
    if instance is None or instance.deleted:
        raise unknown_instance(instance_id)
    return instance
