"""What handlers take from a request: context, caller, target instance, body."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from ..context import Context
from ..errors import unknown_instance
from ..store import Instance
from .body import parse_json, read_body
from .keys import CONTEXT, PRINCIPAL, TARGET
from .protocol import body_timeout
from .security import Principal


def context(request: web.Request) -> Context:
    """The daemon's services."""
    return request.app[CONTEXT]


def principal(request: web.Request) -> Principal:
    """Who is calling (set by the route guard)."""
    return request[PRINCIPAL]


def target(request: web.Request) -> Instance:
    """The instance the request acts on (looked up by the route guard)."""
    instance: Instance | None = request.get(TARGET)
    if instance is None:
        raise unknown_instance(request.match_info.get("instance", "admin"))
    return instance


async def body_bytes(request: web.Request) -> bytes:
    """The raw (inflated) body within the configured limit."""
    limit = context(request).settings.body_limit
    return await read_body(request, limit, body_timeout(request))


async def json_body(
    request: web.Request, *, allow_empty: bool = False
) -> tuple[dict[str, Any], bytes]:
    """The body as a JSON object, and the raw bytes challenges are bound to."""
    raw = await body_bytes(request)
    return parse_json(raw, allow_empty=allow_empty), raw


def mfa_exempt(request: web.Request) -> bool:
    """Whether the caller skips the second factor: the operator acting through
    ``/management/...`` or with the bootstrap secret, so a password can always be reset.
    """
    caller = principal(request)
    return caller.management or caller.kind == "bootstrap"
