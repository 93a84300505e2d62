"""Every endpoint in one table, with who may call it and what permission it needs.

``INSTANCE`` routes exist twice: ``/private/...`` for the admin instance and
``/instances/{instance}/private/...`` for any instance (``/instances/admin/...`` is
simply the admin instance).  ``MANAGEMENT`` routes need the admin instance's
credentials; ``PUBLIC`` routes none.  The guard in front of every handler looks up
the instance, authenticates the caller and checks the permission, in that order.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Awaitable, Callable

from aiohttp import web

from ..errors import EC, TalerError, unknown_instance
from ..scopes import FULL, TOKEN_REFRESH
from . import auth_settings, challenges, instances, public, tokens
from .keys import PRINCIPAL, TARGET
from .request import context
from .security import (
    ADMIN,
    PUBLIC,
    Principal,
    authenticate,
    bearer_token_digest,
    is_loopback,
    token_principal,
)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
INSTANCE_PREFIX = "/instances/{instance}"


class Access(enum.Enum):
    PUBLIC = "public"
    INSTANCE = "instance"
    MANAGEMENT = "management"


@dataclass(frozen=True)
class Route:
    """One endpoint: method, path, handler, access kind and needed permission."""

    method: str
    path: str
    handler: Handler
    access: Access
    permission: str | None = None
    prefixable: bool = False
    allow_basic: bool = False
    first_run: bool = False


ROUTES: tuple[Route, ...] = (
    # The router tries the resources under one leading path ("/instances") in the
    # order they were added: the routes clients call most come first.
    Route("GET", "/private", instances.get_instance, Access.INSTANCE, "instances-read"),
    Route(
        "PATCH",
        "/private",
        instances.patch_instance,
        Access.INSTANCE,
        "instances-write",
    ),
    Route(
        "DELETE",
        "/private",
        instances.delete_instance,
        Access.INSTANCE,
        "instances-write",
    ),
    Route(
        "POST",
        "/private/auth",
        auth_settings.post_auth,
        Access.INSTANCE,
        "instances-auth-write",
    ),
    Route(
        "POST",
        "/private/token",
        tokens.post_private_token,
        Access.INSTANCE,
        TOKEN_REFRESH,
        allow_basic=True,
    ),
    Route(
        "DELETE",
        "/private/token",
        tokens.delete_private_token,
        Access.INSTANCE,
        allow_basic=True,
    ),
    Route(
        "GET",
        "/private/tokens",
        tokens.get_private_tokens,
        Access.INSTANCE,
        "tokens-read",
    ),
    Route(
        "DELETE",
        "/private/tokens/{serial}",
        tokens.delete_private_tokens_serial,
        Access.INSTANCE,
        "tokens-write",
    ),
    Route("GET", "/config", public.get_config, Access.PUBLIC),
    Route("GET", "/openapi.yaml", public.get_openapi, Access.PUBLIC),
    Route("POST", "/instances", instances.post_instances, Access.PUBLIC),
    Route(
        "POST",
        "/instances/{instance}/forgot-password",
        auth_settings.post_forgot_password,
        Access.PUBLIC,
    ),
    Route(
        "POST",
        "/challenge/{challenge_id}",
        challenges.post_challenge,
        Access.PUBLIC,
        prefixable=True,
    ),
    Route(
        "POST",
        "/challenge/{challenge_id}/confirm",
        challenges.post_challenge_confirm,
        Access.PUBLIC,
        prefixable=True,
    ),
    Route(
        "POST",
        "/management/instances",
        instances.post_management_instances,
        Access.MANAGEMENT,
        "instances-write",
        first_run=True,
    ),
    Route(
        "GET",
        "/management/instances",
        instances.get_management_instances,
        Access.MANAGEMENT,
        "instances-read",
    ),
    Route(
        "GET",
        "/management/instances/{instance}",
        instances.get_instance,
        Access.MANAGEMENT,
        "instances-read",
    ),
    Route(
        "PATCH",
        "/management/instances/{instance}",
        instances.patch_instance,
        Access.MANAGEMENT,
        "instances-write",
    ),
    Route(
        "DELETE",
        "/management/instances/{instance}",
        instances.delete_instance,
        Access.MANAGEMENT,
        "instances-write",
    ),
    Route(
        "POST",
        "/management/instances/{instance}/auth",
        auth_settings.post_auth,
        Access.MANAGEMENT,
        "instances-auth-write",
    ),
)


def paths(route: Route) -> list[str]:
    """The URL paths under which a route is served."""
    if route.access is Access.INSTANCE or route.prefixable:
        return [route.path, INSTANCE_PREFIX + route.path]
    return [route.path]


async def _management_principal(request: web.Request, route: Route) -> Principal:
    ctx = context(request)
    admin = await ctx.store.get_instance(ADMIN)
    if admin is not None and admin.deleted:
        admin = None
    # First run: the admin instance may be created without credentials, but only
    # by a client on this machine talking to the daemon directly, not through a
    # proxy (which may run here too and says so by the headers it adds).
    if (
        route.first_run
        and admin is None
        and ctx.bootstrap_secret is None
        and "Authorization" not in request.headers
        and "Forwarded" not in request.headers
        and "X-Forwarded-For" not in request.headers
        and is_loopback(request)
    ):
        return Principal("first-run", FULL)
    return await authenticate(ctx, request, ADMIN, admin, allow_basic=False)


def guarded(route: Route) -> Handler:
    """The handler wrapped in the route's instance lookup and access check."""

    async def handler(request: web.Request) -> web.StreamResponse:
        ctx = context(request)
        if route.access is Access.PUBLIC:
            request[PRINCIPAL] = PUBLIC
            return await route.handler(request)
        instance_id = request.match_info.get("instance")
        if route.access is Access.INSTANCE:
            instance_id = instance_id or ADMIN
            # The common case first: a live access token of the instance names the
            # instance too, so one lookup settles both.
            digest = bearer_token_digest(request)
            if digest is not None:
                fast = await token_principal(ctx, instance_id, digest)
                if fast is not None and fast.instance is not None:
                    request[TARGET] = fast.instance
                    _admit(request, route, fast)
                    return await route.handler(request)
        if instance_id is not None:
            found = await ctx.store.get_instance(instance_id)
            if found is None or (found.deleted and route.access is Access.INSTANCE):
                raise unknown_instance(instance_id)
            request[TARGET] = found
        if route.access is Access.MANAGEMENT:
            caller = await _management_principal(request, route)
            caller = caller._replace(management=True)
        else:
            caller = await authenticate(
                ctx,
                request,
                instance_id or ADMIN,
                request[TARGET],
                allow_basic=route.allow_basic,
            )
        _admit(request, route, caller)
        return await route.handler(request)

    return handler


def _admit(request: web.Request, route: Route, caller: Principal) -> None:
    """Let ``caller`` through to the route, or raise 403 if it lacks the permission."""
    if not caller.grant.allows(route.permission):
        raise TalerError(
            403,
            EC.GENERIC_TOKEN_PERMISSION_INSUFFICIENT,
            detail=f"needs permission {route.permission}",
        )
    request[PRINCIPAL] = caller


def setup_routes(app: web.Application) -> None:
    """Register every route of the table, with one resource per path."""
    resources: dict[str, web.Resource] = {}
    for route in ROUTES:
        for path in paths(route):
            if path not in resources:
                resources[path] = app.router.add_resource(path)
            resources[path].add_route(route.method, guarded(route))
