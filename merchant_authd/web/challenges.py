"""Handlers of multi-factor challenges: have a TAN sent, and confirm it."""

from __future__ import annotations

from aiohttp import web

from .. import mfa
from ..schemas import ChallengeSolve, load
from .request import context, json_body
from .security import ADMIN, client_address

_SOLVE = ChallengeSolve()


def _ids(request: web.Request) -> tuple[str, str]:
    return request.match_info.get("instance", ADMIN), request.match_info["challenge_id"]


async def post_challenge(request: web.Request) -> web.Response:
    """Send (or resend) the TAN of a challenge through its channel's helper."""
    await json_body(request, allow_empty=True)
    instance_id, challenge_id = _ids(request)
    sent = await mfa.send_tan(
        context(request), instance_id, challenge_id, client_address(request)
    )
    return web.json_response(sent)


async def post_challenge_confirm(request: web.Request) -> web.Response:
    """Solve a challenge with the TAN the merchant received."""
    data, _ = await json_body(request)
    body = load(_SOLVE, data)
    instance_id, challenge_id = _ids(request)
    await mfa.confirm(context(request), instance_id, challenge_id, body["tan"])
    return web.Response(status=204)
