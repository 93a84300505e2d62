"""Instance management: creating, describing, changing and deleting instances.

The auth daemon keeps the whole instance configuration that clients send (name,
addresses, delays, logo, ...) so that it can return it faithfully, with upstream's
defaults where a member is optional.  Each instance gets an Ed25519 key pair; deleting
an instance without purging it destroys the private key, as upstream does.
"""

from __future__ import annotations

import asyncio
import functools
import json
from typing import Any, Sequence

from . import crypto
from .context import Context
from .errors import EC, TalerError
from .schemas import relative_time
from .store import Instance, InstanceExists, NewInstance

#: Members of the instance configuration stored as settings, with their defaults.
SETTINGS_DEFAULTS: dict[str, Any] = {
    "address": {},
    "jurisdiction": {},
    "use_stefan": True,
    "default_pay_delay": 86_400_000_000,  # 1 day
    "default_refund_delay": 1_296_000_000_000,  # 15 days
    "default_wire_transfer_delay": 604_800_000_000,  # 1 week
    "default_wire_transfer_rounding_interval": "NONE",
}
_OPTIONAL_TEXT = ("website", "logo")
_DELAYS = (
    "default_pay_delay",
    "default_refund_delay",
    "default_wire_transfer_delay",
)


def settings_from(
    body: dict[str, Any], base: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The stored settings: ``base`` (or the defaults) updated by ``body``.

    An empty string removes an optional text member.
    """
    settings = dict(base if base is not None else SETTINGS_DEFAULTS)
    for key in ("name", *_OPTIONAL_TEXT, *SETTINGS_DEFAULTS):
        if key in body:
            settings[key] = body[key]
    for key in _OPTIONAL_TEXT:
        if settings.get(key) == "":
            del settings[key]
    return settings


async def credentials(ctx: Context, auth: dict[str, Any]) -> tuple[str, str | None]:
    """(method, password hash) for an ``InstanceAuthConfigurationMessage``.

    The deprecated ``token`` form sets the password to the secret without its
    ``secret-token:`` prefix, so Basic and the legacy bearer form both work with it.
    """
    if auth["method"] == "external":
        return "external", None
    password = auth.get("password")
    if password is None:
        password = auth["token"][len(crypto.TOKEN_PREFIX) :]
    return "token", await crypto.hash_password(password, ctx.settings.bcrypt_cost)


async def _same_credentials(
    ctx: Context, instance: Instance, auth: dict[str, Any]
) -> bool:
    if auth["method"] != instance.auth_method:
        return False
    if auth["method"] == "external":
        return True
    password = auth.get("password") or auth["token"][len(crypto.TOKEN_PREFIX) :]
    return await crypto.check_password(password, instance.password_hash, ctx.decoy_hash)


async def create(
    ctx: Context,
    body: dict[str, Any],
    *,
    consume: Sequence[int] = (),
    validated: Sequence[str] = (),
    idempotent: bool = True,
) -> tuple[Instance, bool]:
    """Create the instance ``body`` describes; (instance, whether it is new).

    Posting the same configuration again is not an error; a different one under a
    taken id (ignoring case) is 409, and so is the id of a deleted, unpurged one.
    """
    existing = await ctx.store.find_instance_folded(body["id"])
    if existing is not None:
        if existing.deleted:
            raise TalerError(409, EC.MERCHANT_PRIVATE_POST_INSTANCES_PURGE_REQUIRED)
        if (
            idempotent
            and existing.id == body["id"]
            and existing.settings == settings_from(body)
            and existing.email == (body.get("email") or None)
            and existing.phone_number == (body.get("phone_number") or None)
            and await _same_credentials(ctx, existing, body["auth"])
        ):
            return existing, False
        raise TalerError(409, EC.MERCHANT_PRIVATE_POST_INSTANCES_ALREADY_EXISTS)
    method, password_hash = await credentials(ctx, body["auth"])
    private, public = await asyncio.to_thread(crypto.new_key_pair)
    new = NewInstance(
        id=body["id"],
        auth_method=method,
        password_hash=password_hash,
        email=body.get("email") or None,
        phone_number=body.get("phone_number") or None,
        settings=settings_from(body),
        merchant_priv=private,
        merchant_pub=public,
        email_validated="email" in validated,
        phone_validated="sms" in validated,
    )
    try:
        return await ctx.store.create_instance(new, consume), True
    except InstanceExists:
        raise TalerError(
            409, EC.MERCHANT_PRIVATE_POST_INSTANCES_ALREADY_EXISTS
        ) from None


async def update(
    ctx: Context,
    instance: Instance,
    body: dict[str, Any],
    consume: Sequence[int] = (),
) -> None:
    """Apply an ``InstanceReconfigurationMessage``; absent members keep their value.

    The merge happens inside the write transaction, so concurrent changes of other
    members are not lost, and an instance deleted meanwhile is not changed.
    """
    contacts: dict[str, str | None] = {
        key: body[key] or None for key in ("email", "phone_number") if key in body
    }
    changed = await ctx.store.update_instance(
        instance.serial, lambda current: settings_from(body, current), contacts, consume
    )
    if not changed:
        raise TalerError(409, EC.MERCHANT_PRIVATE_PATCH_INSTANCES_PURGE_REQUIRED)


@functools.lru_cache(maxsize=4096)
def public_key_text(merchant_pub: bytes) -> str:
    """``merchant_pub`` as clients see it (Crockford base32); encoded once per key."""
    return crypto.crockford_encode(merchant_pub)


def _with_times(settings: dict[str, Any]) -> dict[str, Any]:
    view = dict(settings)
    for key in _DELAYS:
        view[key] = relative_time(view.get(key, SETTINGS_DEFAULTS[key]))
    return view


def detail_view(instance: Instance) -> dict[str, Any]:
    """``QueryInstancesResponse``: the configuration, never a secret."""
    view = _with_times({**SETTINGS_DEFAULTS, **instance.settings})
    view.update(
        merchant_pub=public_key_text(instance.merchant_pub),
        email_validated=instance.email_validated,
        phone_validated=instance.phone_validated,
        auth={"method": instance.auth_method},
    )
    if instance.email:
        view["email"] = instance.email
    if instance.phone_number:
        view["phone_number"] = instance.phone_number
    return view


@functools.lru_cache(maxsize=1024)
def detail_json(instance: Instance) -> str:
    """:func:`detail_view` as JSON text, made once per stored state of an instance
    (the store hands out the same record until the database changes)."""
    return json.dumps(detail_view(instance))


def list_view(instance: Instance) -> dict[str, Any]:
    """One entry of ``InstancesResponse``."""
    settings = instance.settings
    view: dict[str, Any] = {
        "name": settings.get("name", instance.id),
        "id": instance.id,
        "merchant_pub": public_key_text(instance.merchant_pub),
        "payment_targets": [],
        "deleted": instance.deleted,
    }
    for key in _OPTIONAL_TEXT:
        if key in settings:
            view[key] = settings[key]
    return view
