"""Reading request bodies within the size limit, and parsing them as JSON.

``gzip`` and ``deflate`` bodies are inflated incrementally with a bounded output per
step (:mod:`.inflate`), so counting the bytes as they come applies the limit to the
inflated size; reading stops at the first byte over it, and nothing larger is ever
buffered.
A body must also arrive in time: a client that sends it a byte at a time would
otherwise hold its handler forever.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import ContentEncodingError
from aiohttp.web_protocol import RequestPayloadError

from ..errors import EC, TalerError
from .inflate import InflateError, Inflater, TooLarge, supported


def too_large(limit: int) -> TalerError:
    """413 for a body over ``limit`` bytes."""
    return TalerError(
        413, EC.GENERIC_UPLOAD_EXCEEDS_LIMIT, detail=f"limit is {limit} bytes"
    )


class UnreadableBody(TalerError):
    """400 for a body that broke off or does not decompress.

    The rest of such a body cannot be read, so the connection is closed after the
    answer rather than kept for another request.
    """


async def read_body(
    request: web.Request, limit: int, timeout: float | None = None
) -> bytes:
    """The (inflated) body, at most ``limit`` bytes; 413 beyond, 400
    (:class:`UnreadableBody`) if broken.

    408 if it has not arrived ``timeout`` seconds after reading began.
    """
    declared = request.content_length
    if declared is not None and declared > limit:
        raise too_large(limit)
    inflater = _inflater(request, limit)
    chunks: list[bytes] = []
    total = 0
    try:
        async with asyncio.timeout(timeout):
            while True:
                chunk = await request.content.readany()
                if not chunk:
                    break
                if inflater is not None:
                    chunk = inflater.feed(chunk)
                total += len(chunk)
                if total > limit:
                    raise too_large(limit)
                chunks.append(chunk)
            if inflater is not None:
                inflater.finish()
    except TooLarge:
        raise too_large(limit) from None
    except InflateError as exc:
        raise UnreadableBody(
            400, EC.GENERIC_COMPRESSION_INVALID, detail=str(exc)
        ) from None
    except TimeoutError:
        raise TalerError(
            408,
            EC.GENERIC_JSON_INVALID,
            detail=f"the body did not arrive within {timeout:g} s",
        ) from None
    except ConnectionError:
        # The client went away mid-body; nobody will read this answer.
        raise UnreadableBody(
            400, EC.GENERIC_JSON_INVALID, detail="incomplete body"
        ) from None
    except (RequestPayloadError, ContentEncodingError) as exc:
        cause = exc.__cause__ if exc.__cause__ is not None else exc
        if isinstance(cause, ContentEncodingError) or isinstance(
            exc, ContentEncodingError
        ):
            raise UnreadableBody(400, EC.GENERIC_COMPRESSION_INVALID) from None
        raise UnreadableBody(
            400, EC.GENERIC_JSON_INVALID, detail="incomplete body"
        ) from None
    return b"".join(chunks)


def _inflater(request: web.Request, limit: int) -> Inflater | None:
    """What inflates this body, if the connection hands it over compressed."""
    if not getattr(request.protocol, "raw_bodies", False):
        return None  # aiohttp's parser inflated it already
    encoding = request.headers.get("Content-Encoding", "").strip().lower()
    if encoding in ("", "identity"):
        return None
    if not supported(encoding):
        raise UnreadableBody(
            400,
            EC.GENERIC_COMPRESSION_INVALID,
            detail=f"unsupported Content-Encoding {encoding[:32]!r}",
        )
    return Inflater(encoding, limit)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def parse_json(body: bytes, *, allow_empty: bool = False) -> dict[str, Any]:
    """A JSON object from ``body``; 400 ``GENERIC_JSON_INVALID`` otherwise."""
    if allow_empty and not body.strip():
        return {}
    try:
        value = json.loads(body.decode("utf-8"), parse_constant=_reject_constant)
        # An escaped lone surrogate ("\ud800") decodes to a string that no UTF-8
        # encoder (bcrypt, SQLite) accepts; refuse it here rather than fail later.
        json.dumps(value, ensure_ascii=False).encode("utf-8")
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
