"""Handlers of instance management (``/management/instances``, ``.../private``,
and public sign-up at ``POST /instances``)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from .. import instances, mfa, tokens
from ..errors import EC, TalerError, bad_parameter
from ..schemas import InstanceConfiguration, InstanceReconfiguration, load
from ..store import ChallengeAlreadyConsumed
from .request import body_bytes, context, json_body, mfa_exempt, principal, target
from .security import ADMIN, client_address

_CREATE = InstanceConfiguration()
_RECONFIGURE = InstanceReconfiguration()
_AUTH_CODES = {"auth": EC.MERCHANT_PRIVATE_POST_INSTANCES_BAD_AUTH}


async def post_management_instances(request: web.Request) -> web.Response:
    """Create an instance (admin)."""
    data, _ = await json_body(request)
    body = load(_CREATE, data, member_codes=_AUTH_CODES)
    if principal(request).kind == "first-run" and body["id"] != ADMIN:
        raise TalerError(
            401, EC.MERCHANT_GENERIC_UNAUTHORIZED, detail="create admin first"
        )
    await instances.create(context(request), body)
    return web.Response(status=204)


async def get_management_instances(request: web.Request) -> web.Response:
    """List all instances (admin)."""
    found = await context(request).store.list_instances()
    return web.json_response({"instances": [instances.list_view(i) for i in found]})


async def get_instance(request: web.Request) -> web.Response:
    """Describe one instance."""
    return web.json_response(instances.detail_view(target(request)))


async def patch_instance(request: web.Request) -> web.Response:
    """Change an instance's configuration (never its credentials)."""
    data, _ = await json_body(request)
    body = load(_RECONFIGURE, data)
    await instances.update(context(request), target(request), body)
    return web.Response(status=204)


def _purge(request: web.Request) -> bool:
    value = request.query.get("purge")
    if value is None or value.upper() == "NO":
        return False
    if value.upper() == "YES":
        return True
    raise bad_parameter("purge", "expected YES or NO")


async def delete_instance(request: web.Request) -> web.Response:
    """Delete an instance: disable it (key destroyed), or erase it (``purge=YES``)."""
    ctx = context(request)
    instance = target(request)
    purge = _purge(request)
    if instance.deleted and not purge:
        raise TalerError(404, EC.MERCHANT_GENERIC_INSTANCE_DELETED)
    binding: dict[str, Any] = {
        "instance_id": instance.id,
        "operation": mfa.DELETE_INSTANCE,
        "digest": mfa.body_digest(await body_bytes(request), f"purge={purge}"),
        "requirement": mfa.requirement_for(ctx, instance),
    }
    consume: list[int] = []
    if not mfa_exempt(request):
        consume = await mfa.require(
            ctx, **binding, header=request.headers.get(mfa.HEADER)
        )
    try:
        await ctx.store.delete_instance(instance.serial, purge, consume)
    except ChallengeAlreadyConsumed:
        await mfa.reissue(ctx, **binding)
    return web.Response(status=204)


def _token_validity_ms(request: web.Request) -> int | None:
    raw = request.query.get("token_validity_ms")
    if raw is None:
        return None
    if not (raw.isascii() and raw.isdigit()) or not 0 < int(raw) <= 2**53 // 1000:
        raise bad_parameter("token_validity_ms", "expected a positive integer")
    return int(raw)


async def post_instances(request: web.Request) -> web.Response:
    """Self-provisioning: public sign-up, addresses proven by challenges."""
    ctx = context(request)
    if not ctx.settings.self_provisioning:
        raise TalerError(403, EC.MERCHANT_GENERIC_UNAUTHORIZED, "sign-up is disabled")
    validity_ms = _token_validity_ms(request)
    data, raw = await json_body(request)
    body = load(_CREATE, data, member_codes=_AUTH_CODES)
    if body["id"].lower() == ADMIN:
        raise bad_parameter("id", "this instance id is reserved")
    if body["auth"]["method"] == "external":
        # A public sign-up must not create an instance that anyone may use.
        raise TalerError(
            400,
            EC.MERCHANT_PRIVATE_POST_INSTANCES_BAD_AUTH,
            detail="sign-up needs a password",
        )
    requirement = _signup_requirement(ctx.settings.mandatory_tan_channels, body)
    if await ctx.store.find_instance_folded(body["id"]) is not None:
        raise TalerError(409, EC.MERCHANT_PRIVATE_POST_INSTANCES_ALREADY_EXISTS)

    async def count_signup() -> None:
        await ctx.signups.attempt(client_address(request))

    consume = await mfa.require(
        ctx,
        instance_id=body["id"],
        operation=mfa.SELF_PROVISION,
        digest=mfa.body_digest(raw, request.query_string),
        requirement=requirement,
        header=request.headers.get(mfa.HEADER),
        before_issue=count_signup,
    )
    channels = [channel for channel, _ in requirement.channels]
    try:
        instance, _ = await instances.create(
            ctx, body, consume=consume, validated=channels, idempotent=False
        )
    except ChallengeAlreadyConsumed:
        # A concurrent identical sign-up used the challenges and created it.
        raise TalerError(
            409, EC.MERCHANT_PRIVATE_POST_INSTANCES_ALREADY_EXISTS
        ) from None
    if validity_ms is None:
        return web.Response(status=204)
    issued = await tokens.issue(ctx, instance, "all", True, validity_ms * 1000, None)
    return web.json_response(issued)


def _signup_requirement(
    mandatory: tuple[str, ...], body: dict[str, Any]
) -> mfa.Requirement:
    addresses = {"email": body.get("email"), "sms": body.get("phone_number")}
    channels = {c for c, address in addresses.items() if address} | set(mandatory)
    if not channels:
        raise TalerError(
            400,
            EC.GENERIC_PARAMETER_MISSING,
            detail="sign-up needs an e-mail address or a phone number",
            extra={"parameter": "email"},
        )
    for channel in channels:
        if not addresses[channel]:
            name = "email" if channel == "email" else "phone_number"
            raise TalerError(
                400,
                EC.GENERIC_PARAMETER_MISSING,
                detail=name,
                extra={"parameter": name},
            )
    return mfa.Requirement(
        tuple((c, addresses[c]) for c in sorted(channels)), combi_and=True
    )
