"""Who is calling: the ``Authorization`` header, credentials and permissions.

Accepted forms: ``Basic base64(instance:password)`` (only where a route allows it: the
token endpoint), ``Bearer secret-token:<secret>`` and a bare ``secret-token:<secret>``.
A secret is first looked up as an access token (one indexed read, no bcrypt).  A
secret with the shape of an access token is never tried as a password, so expired and
revoked tokens cost nothing; any other secret is the deprecated password-as-bearer
form, checked with bcrypt under the password throttle.  The admin bootstrap secret
opens the admin instance until it has a password.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import logging
import time
from dataclasses import dataclass
from typing import NamedTuple

from aiohttp import web

from .. import crypto
from ..context import Context
from ..errors import EC, TalerError, unauthorized
from ..scopes import FULL, Grant, grant_for
from ..store import AccessToken, Instance

log = logging.getLogger("merchant_authd.auth")

ADMIN = "admin"


class Principal(NamedTuple):
    """The authenticated caller of a request.

    An immutable record like the others, but a named tuple: one is made for every
    authenticated request, and a tuple is made in a third of a frozen dataclass's
    time.
    """

    kind: str  # "token", "password", "bootstrap", "external", "first-run", "public"
    grant: Grant
    instance: Instance | None = None
    token: AccessToken | None = None
    management: bool = False


PUBLIC = Principal("public", Grant(frozenset()))


@dataclass(frozen=True)
class Credential:
    """What the ``Authorization`` header offers."""

    scheme: str  # "none", "basic", "bearer", "other"
    secret: str = ""
    username: str = ""


def bearer_secret(header: str) -> str | None:
    """The secret of ``Bearer secret-token:<secret>`` or a bare
    ``secret-token:<secret>``; ``None`` for any other ``Authorization`` value."""
    value = header.strip()
    if value.startswith(crypto.TOKEN_PREFIX):
        return value[len(crypto.TOKEN_PREFIX) :]
    scheme, _, rest = value.partition(" ")
    if scheme.lower() != "bearer":
        return None
    rest = rest.strip()
    if not rest.startswith(crypto.TOKEN_PREFIX):
        return None
    return rest[len(crypto.TOKEN_PREFIX) :]


def parse_authorization(header: str | None) -> Credential:
    """Split an ``Authorization`` header; raises 400 for a broken Basic header."""
    if header is None or not header.strip():
        return Credential("none")
    secret = bearer_secret(header)
    if secret is not None:
        return Credential("bearer", secret)
    scheme, _, rest = header.strip().partition(" ")
    rest = rest.strip()
    if scheme.lower() == "bearer":
        return Credential("other")
    if scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(rest, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            decoded = ""
        username, colon, password = decoded.partition(":")
        if not colon:
            raise TalerError(
                400, EC.GENERIC_HTTP_HEADERS_MALFORMED, detail="Authorization"
            )
        return Credential("basic", password, username)
    return Credential("other")


def client_address(request: web.Request) -> str:
    """The peer address used for throttling (``local`` for a UNIX socket)."""
    return request.remote or "local"


def is_loopback(request: web.Request) -> bool:
    """Whether the client is a TCP peer on a loopback address.

    A UNIX-socket peer does not count: the reverse proxy in front of the daemon
    listens there, and it forwards requests from anywhere.
    """
    remote = request.remote
    if not remote:
        return False
    try:
        return ipaddress.ip_address(remote).is_loopback
    except ValueError:
        return False


def _fail(request: web.Request, instance_id: str, reason: str) -> TalerError:
    log.warning(
        "authentication failed for instance %s from %s: %s",
        instance_id,
        client_address(request),
        reason,
    )
    return unauthorized()


async def authenticate(
    ctx: Context,
    request: web.Request,
    instance_id: str,
    instance: Instance | None,
    *,
    allow_basic: bool,
) -> Principal:
    """The principal behind the request's credentials for ``instance_id``.

    ``instance`` is the instance whose credentials are needed (``None`` only for an
    admin instance that does not exist yet).  Raises 401 when nothing valid is
    offered.
    """
    if instance is not None and instance.auth_method == "external":
        return Principal("external", FULL, instance)
    credential = parse_authorization(request.headers.get("Authorization"))
    if credential.scheme == "bearer":
        return await _bearer(ctx, request, instance_id, instance, credential.secret)
    if credential.scheme == "basic":
        if not allow_basic:
            raise _fail(request, instance_id, "Basic not accepted here")
        # A Basic user naming another instance is checked against no hash (the
        # decoy), so it fails, throttled and at the same cost as a wrong password.
        owner = instance if credential.username == instance_id else None
        return await _password(ctx, request, instance_id, owner, credential.secret)
    raise _fail(request, instance_id, "no usable credential")


def bearer_token_digest(request: web.Request) -> bytes | None:
    """The digest of the access token the request presents, if it presents one."""
    header = request.headers.get("Authorization")
    if header is None:
        return None
    secret = bearer_secret(header)
    return crypto.parse_access_token(secret) if secret is not None else None


async def token_principal(
    ctx: Context, instance_id: str, digest: bytes
) -> Principal | None:
    """The caller behind a live access token of ``instance_id``, if there is one."""
    found = await ctx.store.authenticate_token(instance_id, digest, int(time.time()))
    if found is None:
        return None
    owner, token = found
    if owner.auth_method == "external":
        return Principal("external", FULL, owner)
    return Principal("token", grant_for(token.scope, token.refreshable), owner, token)


async def _bearer(
    ctx: Context,
    request: web.Request,
    instance_id: str,
    instance: Instance | None,
    secret: str,
) -> Principal:
    digest = crypto.parse_access_token(secret)
    if digest is not None:
        found = await token_principal(ctx, instance_id, digest)
        if found is not None:
            return found
    bootstrap = ctx.bootstrap_secret
    if (
        instance_id == ADMIN
        and bootstrap is not None
        and (instance is None or instance.password_hash is None)
        and crypto.secrets_equal(secret, bootstrap)
    ):
        return Principal("bootstrap", FULL, instance)
    if digest is not None:
        raise _fail(request, instance_id, "unknown or expired access token")
    return await _password(ctx, request, instance_id, instance, secret)


async def _password(
    ctx: Context,
    request: web.Request,
    instance_id: str,
    instance: Instance | None,
    password: str,
) -> Principal:
    address = client_address(request)
    stored = instance.password_hash if instance is not None else None

    async def matches() -> bool:
        return await crypto.check_password(password, stored, ctx.decoy_hash)

    try:
        accepted = await ctx.throttle.verify(instance_id, address, matches)
    except TalerError:
        log.warning(
            "authentication refused for instance %s from %s: throttled",
            instance_id,
            address,
        )
        raise
    if not accepted:
        raise _fail(request, instance_id, "wrong password")
    return Principal("password", FULL, instance)
