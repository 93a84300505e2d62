"""Middleware: every failure becomes an ``ErrorDetail``, and every request one log line.

This is the one place where error responses are produced.  ``TalerError`` carries its
status and code; aiohttp's own HTTP exceptions (no route, wrong method) and storage
failures are mapped here; anything unexpected is logged with its traceback and answered
500 without one.  The same middleware adds CORS headers, answers preflight requests
and redirects ``/instances/default/...`` to the unprefixed path.
"""

from __future__ import annotations

import logging
import re
import time
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler

from ..errors import EC, DatabaseError, TalerError
from ..log import access_log
from ..mfa import ChallengeRequired
from .body import UnreadableBody, too_large
from .keys import CONTEXT, TARGET

log = logging.getLogger("merchant_authd.web")

CORS_HEADERS = {"Access-Control-Allow-Origin": "*"}
PREFLIGHT_HEADERS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Headers": "*",
    "Access-Control-Allow-Methods": "GET, POST, PATCH, DELETE, OPTIONS",
    "Access-Control-Max-Age": "86400",
}
DEFAULT_PREFIX = "/instances/default"
_DEFAULT_PREFIX_BYTES = DEFAULT_PREFIX.encode("ascii")
#: One character of a raw path: a percent escape or anything else.
_RAW_CHARACTER = re.compile(r"%[0-9A-Fa-f]{2}|.", re.DOTALL)
#: Slashes (and what browsers take for one) that would make the rest of a path a
#: network-path reference ("//evil.example/").
_LEADING_SLASHES = re.compile(r"(?:[/\\]|%2[Ff]|%5[Cc])*")
#: A challenge id is a capability: it stays out of the log whatever the route.
_CHALLENGE_ID = re.compile(r"/challenge/[^/]+")
MAX_LOGGED_PATH = 200
#: Longest request target (path and query) served; longer ones are answered 414.
MAX_URI_LENGTH = 4096

_HTTP_CODES = {
    404: EC.GENERIC_ENDPOINT_UNKNOWN,
    405: EC.GENERIC_METHOD_INVALID,
    413: EC.GENERIC_UPLOAD_EXCEEDS_LIMIT,
    414: EC.GENERIC_URI_TOO_LONG,
}


def error_response(error: TalerError) -> web.Response:
    """The JSON response of a Taler error."""
    response = web.json_response(error.body(), status=error.status)
    response.headers.update(error.headers)
    if error.status in (408, 413) or isinstance(error, UnreadableBody):
        # The rest of the body is not worth reading, or cannot be read.
        response.force_close()
    return response


def _from_http(exc: web.HTTPException) -> TalerError:
    code = _HTTP_CODES.get(exc.status, EC.GENERIC_INTERNAL_INVARIANT_FAILURE)
    headers = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
    return TalerError(exc.status, code, headers=headers)


def _redirect_default(request: web.Request) -> web.Response | None:
    path = request.path
    if path != DEFAULT_PREFIX and not path.startswith(DEFAULT_PREFIX + "/"):
        return None
    raw, _, raw_query = request.raw_path.partition("?")
    # The rest of the path as sent, after one "/": decoding and quoting it again
    # would change it, and a second "/" would send the client to another host.
    rest = _after_default_prefix(raw)
    location = "/" + _LEADING_SLASHES.sub("", rest, count=1)
    if raw_query:
        # The query as sent: decoded, "%0D%0A" would end the header and "%26"
        # would become a separator.
        location += "?" + raw_query
    return web.Response(status=308, headers={"Location": location})


def _after_default_prefix(raw: str) -> str:
    """What follows ``/instances/default`` in the raw path, which may spell the
    prefix with percent escapes ("/instances/%64efault")."""
    decoded = b""
    for match in _RAW_CHARACTER.finditer(raw):
        text = match.group()
        decoded += bytes.fromhex(text[1:]) if len(text) == 3 else text.encode()
        if len(decoded) >= len(_DEFAULT_PREFIX_BYTES):
            return raw[match.end() :] if decoded == _DEFAULT_PREFIX_BYTES else ""
    return ""


def _early_answer(request: web.Request) -> tuple[web.StreamResponse, int] | None:
    """The answer given before any handler runs, if there is one: 414, a preflight,
    the ``/instances/default`` redirect, or 413 for a declared body over the limit."""
    if len(request.raw_path) > MAX_URI_LENGTH:
        return _failure_answer(request, TalerError(414, EC.GENERIC_URI_TOO_LONG))
    if request.method == "OPTIONS":
        return web.Response(status=204, headers=PREFLIGHT_HEADERS), 0
    redirect = _redirect_default(request)
    if redirect is not None:
        return redirect, 0
    declared = request.content_length
    limit = request.app[CONTEXT].settings.body_limit
    if declared is not None and declared > limit:
        return _failure_answer(request, too_large(limit))
    return None


def _failure_answer(
    request: web.Request, exc: Exception
) -> tuple[web.StreamResponse, int]:
    """The answer to what a handler raised, with the Taler code it carries."""
    if isinstance(exc, ChallengeRequired):
        return web.json_response(exc.body, status=202), 0
    if isinstance(exc, TalerError):
        return error_response(exc), exc.code
    if isinstance(exc, web.HTTPException):
        if exc.status < 400:
            return exc, 0
        failure = _from_http(exc)
    elif isinstance(exc, DatabaseError):
        failure = TalerError(500, exc.code)
    else:
        log.error(
            "unexpected failure handling %s %s",
            request.method,
            request.path,
            exc_info=exc,
        )
        failure = TalerError(500, EC.GENERIC_INTERNAL_INVARIANT_FAILURE)
    return error_response(failure), failure.code


def _logged_path(request: web.Request) -> str:
    """The shortened path, with a challenge id (a capability) left out.

    Masked by pattern, not by route: preflights, 404s and 405s name no route.
    """
    path = request.path
    if "/challenge/" in path:
        path = _CHALLENGE_ID.sub("/challenge/{challenge_id}", path)
    return path[:MAX_LOGGED_PATH]


@web.middleware
async def taler_middleware(
    request: web.Request, handler: Handler
) -> web.StreamResponse:
    """Map failures to ``ErrorDetail``, add CORS headers and log the outcome."""
    started = time.perf_counter()
    try:
        answer = _early_answer(request)
        if answer is None:
            answer = await handler(request), 0
    except Exception as exc:
        answer = _failure_answer(request, exc)
    response, code = answer
    response.headers.update(CORS_HEADERS)
    if access_log.enabled:
        target: Any = request.get(TARGET)
        elapsed_ms = (time.perf_counter() - started) * 1000
        access_log.info(
            f"{request.method} {_logged_path(request)} {response.status} {int(code)}"
            f" {target.id if target is not None else '-'} {elapsed_ms:.1f}ms"
        )
    return response
