"""Handlers of instance management (``/management/instances``, ``.../private``,
and public sign-up at ``POST /instances``)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from .. import instances, mfa, tokens
from ..errors import EC, TalerError, bad_parameter
from ..schemas import (
    InstanceConfiguration,
    InstanceReconfiguration,
    integer_parameter,
    load,
)
from ..store import ChallengeAlreadyConsumed, Instance
from .request import body_bytes, context, json_body, mfa_exempt, principal, target
from .security import ADMIN, client_address

_CREATE = InstanceConfiguration()
_RECONFIGURE = InstanceReconfiguration()
_AUTH_CODES = {"auth": EC.MERCHANT_PRIVATE_POST_INSTANCES_BAD_AUTH}
#: Longest login token a sign-up may ask for, in milliseconds (2^53 microseconds).
_MAX_VALIDITY_MS = 2**53 // 1000


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
    return web.json_response(text=instances.detail_json(target(request)))


async def patch_instance(request: web.Request) -> web.Response:
    """Change an instance's configuration (never its credentials).

    A new e-mail address or phone number is not validated, so once it replaced a
    validated one the instance's operations may need no second factor any more:
    through the private path, changing an address is itself a protected operation.
    """
    ctx = context(request)
    instance = target(request)
    data, raw = await json_body(request)
    body = load(_RECONFIGURE, data)
    exempt = mfa_exempt(request) or not _changes_addresses(instance, body)

    async def update(consume: list[int]) -> None:
        await instances.update(ctx, instance, body, consume)

    await mfa.protect(
        ctx,
        request.headers.get(mfa.HEADER),
        instance_id=instance.id,
        operation=mfa.PATCH_INSTANCE,
        digest=mfa.body_digest(raw, f"{instance.email}\0{instance.phone_number}"),
        requirement=mfa.requirement_for(ctx, instance, exempt=exempt),
        commit=update,
    )
    return web.Response(status=204)


def _changes_addresses(instance: Instance, body: dict[str, Any]) -> bool:
    current = {"email": instance.email, "phone_number": instance.phone_number}
    return any(key in body and (body[key] or None) != current[key] for key in current)


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

    async def delete(consume: list[int]) -> None:
        await ctx.store.delete_instance(instance.serial, purge, consume)

    await mfa.protect(
        ctx,
        request.headers.get(mfa.HEADER),
        instance_id=instance.id,
        operation=mfa.DELETE_INSTANCE,
        digest=mfa.body_digest(await body_bytes(request), f"purge={purge}"),
        requirement=mfa.requirement_for(ctx, instance, exempt=mfa_exempt(request)),
        commit=delete,
    )
    return web.Response(status=204)


async def post_instances(request: web.Request) -> web.Response:
    """Self-provisioning: public sign-up, addresses proven by challenges."""
    ctx = context(request)
    validity_ms, body, raw = await _signup_request(request)
    requirement = mfa.signup_requirement(ctx, body)
    if await ctx.store.find_instance_folded(body["id"]) is not None:
        raise TalerError(409, EC.MERCHANT_PRIVATE_POST_INSTANCES_ALREADY_EXISTS)

    async def count_signup() -> None:
        await ctx.signups.attempt(client_address(request))

    async def create(consume: list[int]) -> Instance:
        validated = [channel for channel, _ in requirement.channels]
        try:
            instance, _ = await instances.create(
                ctx, body, consume=consume, validated=validated, idempotent=False
            )
        except ChallengeAlreadyConsumed:
            # A concurrent identical sign-up used the challenges and created it.
            raise TalerError(
                409, EC.MERCHANT_PRIVATE_POST_INSTANCES_ALREADY_EXISTS
            ) from None
        return instance

    instance = await mfa.protect(
        ctx,
        request.headers.get(mfa.HEADER),
        instance_id=body["id"],
        operation=mfa.SELF_PROVISION,
        digest=mfa.body_digest(raw, request.query_string),
        requirement=requirement,
        commit=create,
        before_issue=count_signup,
    )
    if validity_ms is None:
        return web.Response(status=204)
    issued = await tokens.issue(ctx, instance, "all", True, validity_ms * 1000, None)
    return web.json_response(issued)


async def _signup_request(
    request: web.Request,
) -> tuple[int | None, dict[str, Any], bytes]:
    """The token validity asked for, the checked body and its raw bytes."""
    ctx = context(request)
    if not ctx.settings.self_provisioning:
        raise TalerError(403, EC.MERCHANT_GENERIC_UNAUTHORIZED, "sign-up is disabled")
    raw_validity = request.query.get("token_validity_ms")
    validity_ms = None
    if raw_validity is not None:
        validity_ms = integer_parameter(
            "token_validity_ms", raw_validity, 1, _MAX_VALIDITY_MS
        )
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
    return validity_ms, body, raw
