"""Reading request bodies within the size limit, and parsing them as JSON.

aiohttp inflates ``gzip`` and ``deflate`` bodies incrementally with a bounded output
per step, so counting the bytes as they arrive applies the limit to the inflated
size; reading stops at the first byte over it, and nothing larger is ever buffered.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import ContentEncodingError
from aiohttp.web_protocol import RequestPayloadError

from ..errors import EC, TalerError


def too_large(limit: int) -> TalerError:
    """413 for a body over ``limit`` bytes."""
    return TalerError(
        413, EC.GENERIC_UPLOAD_EXCEEDS_LIMIT, detail=f"limit is {limit} bytes"
    )


async def read_body(request: web.Request, limit: int) -> bytes:
    """The (inflated) body, at most ``limit`` bytes; 413 beyond, 400 if broken."""
    declared = request.content_length
    if declared is not None and declared > limit:
        raise too_large(limit)
    chunks: list[bytes] = []
    total = 0
    try:
        while True:
            chunk = await request.content.readany()
            if not chunk:
                break
            total += len(chunk)
            if total > limit:
                raise too_large(limit)
            chunks.append(chunk)
    except (RequestPayloadError, ContentEncodingError) as exc:
        cause = exc.__cause__ if exc.__cause__ is not None else exc
        if isinstance(cause, ContentEncodingError) or isinstance(
            exc, ContentEncodingError
        ):
            raise TalerError(400, EC.GENERIC_COMPRESSION_INVALID) from None
        raise TalerError(
            400, EC.GENERIC_JSON_INVALID, detail="incomplete body"
        ) from None
    return b"".join(chunks)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def parse_json(body: bytes, *, allow_empty: bool = False) -> dict[str, Any]:
    """A JSON object from ``body``; 400 ``GENERIC_JSON_INVALID`` otherwise."""
    if allow_empty and not body.strip():
        return {}
    try:
        value = json.loads(body.decode("utf-8"), parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:
        detail = (
            "not valid UTF-8 JSON"
            if not isinstance(exc, RecursionError)
            else ("nested too deeply")
        )
        raise TalerError(400, EC.GENERIC_JSON_INVALID, detail=detail) from None
    if not isinstance(value, dict):
        raise TalerError(400, EC.GENERIC_JSON_INVALID, detail="expected a JSON object")
    return value
