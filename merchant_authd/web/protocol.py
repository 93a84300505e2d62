"""The HTTP connection: limits, timeouts, and answers to requests aiohttp cannot parse.

Limits and timeouts.  :class:`Limits` holds every bound a connection lives under and
:func:`server_options` turns it into the keyword arguments of :class:`TalerAppRunner`.
aiohttp closes a connection that has no complete request waiting once
``keepalive_timeout`` has passed since it opened or since its last response; the
timer is not restarted by incoming bytes, so a client that never sends a request and
one that drips its headers a byte at a time are both cut off.  A body must arrive
within ``body_timeout`` of the handler starting to read it (``web.body.read_body``
answers 408 otherwise).  A body left unread after the response is drained for at most
``lingering_time``, then the connection is closed.

Protocol errors.  A request the HTTP parser rejects (request line over
``max_line_size``, a header over ``max_field_size``, more than ``max_headers``
headers, bad syntax) never reaches the application, so the middleware cannot answer
it.  aiohttp answers such requests from ``RequestHandler.handle_error`` with a
plain-text body that quotes the offending bytes, and logs them with a traceback.
:class:`TalerRequestHandler` answers with an ``ErrorDetail`` like every other failure
and logs one line without the client's bytes, which may hold a credential.

aiohttp has no option naming the protocol class: ``web.Server`` builds one
``RequestHandler`` per connection, and ``web.AppRunner`` builds its server in
``_make_server``.  :class:`TalerAppRunner` overrides that one method; a test checks
that connections really get a :class:`TalerRequestHandler`, so an aiohttp release that
moves this seam fails the suite instead of bringing plain-text errors back.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import asdict, dataclass
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import ContentEncodingError, InvalidURLError, LineTooLong
from aiohttp.web_protocol import RequestPayloadError

from ..errors import EC, TalerError
from ..log import access_log
from .middleware import CORS_HEADERS, error_response

log = logging.getLogger("merchant_authd.web")

#: The one fixed message aiohttp's parsers give for a header flood.
_TOO_MANY_HEADERS = "Too many headers received"
_CODES = {
    400: EC.GENERIC_HTTP_HEADERS_MALFORMED,
    404: EC.GENERIC_ENDPOINT_UNKNOWN,
    405: EC.GENERIC_METHOD_INVALID,
    413: EC.GENERIC_UPLOAD_EXCEEDS_LIMIT,
    414: EC.GENERIC_URI_TOO_LONG,
}


@dataclass(frozen=True)
class Limits:
    """The bounds of one connection; times in seconds, sizes in bytes.

    ``max_line_size`` bounds the request line and ``max_field_size`` one header; they
    must differ, because aiohttp reports both overflows with the same exception and
    only the limit it names tells a too-long URI (414) from a too-long header (400).
    """

    #: Longer than the 60 s a reverse proxy such as nginx keeps idle upstream
    #: connections, so that the proxy closes them, never racing a request of its own.
    keepalive_timeout: float = 75.0
    #: A whole 1 MiB body at 17 KiB/s; real bodies are a few KiB.
    body_timeout: float = 60.0
    #: Time for a client to read an early answer (413) before the connection goes.
    lingering_time: float = 2.0
    #: A parser bound only: the middleware answers 414 above MAX_URI_LENGTH (4096).
    max_line_size: int = 16384
    #: aiohttp's default; holds a Basic header with a 4096-character password.
    max_field_size: int = 8190
    #: Clients send about ten headers, proxies add a few.
    max_headers: int = 64

    def __post_init__(self) -> None:
        if self.max_line_size == self.max_field_size:
            raise ValueError("max_line_size and max_field_size must differ")


DEFAULT_LIMITS = Limits()


def server_options(limits: Limits = DEFAULT_LIMITS) -> dict[str, Any]:
    """Keyword arguments for :class:`TalerAppRunner` that apply ``limits``."""
    return asdict(limits)


class TalerRequestHandler(web.RequestHandler):
    """One HTTP connection; protocol errors are answered with an ``ErrorDetail``."""

    __slots__ = ("body_timeout",)

    #: Bodies arrive as sent; ``web.body.read_body`` inflates them (``web.inflate``).
    raw_bodies = True

    def __init__(self, manager: web.Server, *, body_timeout: float, **kwargs: Any):
        kwargs["auto_decompress"] = False
        super().__init__(manager, **kwargs)
        self.body_timeout = body_timeout

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        """The ``ErrorDetail`` answer to a request that failed outside the app."""
        error = self._classify(status, exc)
        if error.status >= 500:
            log.error(
                "failure outside the request handler from %s",
                request.remote,
                exc_info=exc,
            )
        else:
            access_log.info(
                f"- - {error.status} {int(error.code)} - unparsable request from"
                f" {request.remote} ({type(exc).__name__ if exc is not None else '-'})"
            )
        if request.writer.output_size > 0:
            raise ConnectionError("the response has begun; no error can follow it")
        response = error_response(error)
        response.headers.update(CORS_HEADERS)
        response.force_close()
        return response

    def log_exception(self, *args: Any, **kwargs: Any) -> None:
        """aiohttp's report of a failure outside the handler, at ERROR with a
        traceback; a body that does not decompress, found while aiohttp drains the
        unread rest after the answer, is the client's doing and goes to DEBUG."""
        if isinstance(kwargs.get("exc_info"), RequestPayloadError):
            log.debug("dropped the unreadable rest of a request body")
            return
        super().log_exception(*args, **kwargs)

    def _classify(self, status: int, exc: BaseException | None) -> TalerError:
        if isinstance(exc, LineTooLong):
            if exc.args[1] == self.max_line_size:
                return TalerError(
                    414,
                    EC.GENERIC_URI_TOO_LONG,
                    detail=f"the request line exceeds {self.max_line_size} bytes",
                )
            return TalerError(
                400,
                EC.GENERIC_HTTP_HEADERS_MALFORMED,
                detail=f"a header exceeds {self.max_field_size} bytes",
            )
        if isinstance(exc, ContentEncodingError):
            # The first compressed bytes arrived with the head and did not inflate.
            return TalerError(400, EC.GENERIC_COMPRESSION_INVALID)
        if isinstance(exc, InvalidURLError):
            return TalerError(400, EC.GENERIC_PATH_SEGMENT_MALFORMED)
        if getattr(exc, "message", None) == _TOO_MANY_HEADERS:
            return TalerError(
                400,
                EC.GENERIC_HTTP_HEADERS_MALFORMED,
                detail=f"more than {self.max_headers} headers",
            )
        if status >= 500:
            return TalerError(status, EC.GENERIC_INTERNAL_INVARIANT_FAILURE)
        code = _CODES.get(status, EC.GENERIC_HTTP_HEADERS_MALFORMED)
        return TalerError(status, code, detail="the request could not be parsed")


class TalerServer(web.Server):
    """``web.Server`` whose connections are :class:`TalerRequestHandler` objects."""

    def __init__(self, *args: Any, body_timeout: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.body_timeout = body_timeout

    def __call__(self) -> TalerRequestHandler:
        return TalerRequestHandler(
            self, loop=self._loop, body_timeout=self.body_timeout, **self._kwargs
        )


class TalerAppRunner(web.AppRunner):
    """``web.AppRunner`` serving through :class:`TalerServer`.

    Takes the keyword arguments of ``web.AppRunner`` plus ``body_timeout``; pass
    ``**server_options(limits)``.
    """

    __slots__ = ("_body_timeout",)

    def __init__(
        self,
        app: web.Application,
        *,
        body_timeout: float = Limits.body_timeout,
        **kwargs: Any,
    ) -> None:
        super().__init__(app, **kwargs)
        self._body_timeout = body_timeout

    async def _make_server(self) -> web.Server:
        plain = await super()._make_server()
        return TalerServer(
            plain.request_handler,
            request_factory=plain.request_factory,
            handler_cancellation=plain.handler_cancellation,
            loop=asyncio.get_running_loop(),
            body_timeout=self._body_timeout,
            **plain._kwargs,
        )


def body_timeout(request: web.BaseRequest) -> float:
    """Seconds the body of ``request`` may take to arrive."""
    handler = request.protocol
    if isinstance(handler, TalerRequestHandler):
        return handler.body_timeout
    return Limits.body_timeout
