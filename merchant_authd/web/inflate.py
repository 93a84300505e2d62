"""Inflating ``gzip`` and ``deflate`` request bodies within a size limit.

The daemon's connections hand bodies over as sent, and the body reader inflates them
here, step by step with a bound on each step's output, so that the limit applies to
the inflated size and a bomb is stopped at the first byte over it.  Inflating here
rather than in aiohttp's parser also checks that the stream is complete: a gzip body
cut before its trailer (checksum and length) is refused, not taken for whole.
"""

from __future__ import annotations

import zlib

#: ``wbits`` per ``Content-Encoding``: gzip framing, zlib framing.
_WBITS = {"gzip": 31, "x-gzip": 31, "deflate": 15}
_RAW_DEFLATE = -15


class InflateError(Exception):
    """The body does not inflate, or does not end where its stream ends."""


class TooLarge(Exception):
    """The inflated body exceeds the limit."""


def supported(encoding: str) -> bool:
    """Whether bodies with this ``Content-Encoding`` can be inflated."""
    return encoding in _WBITS


class Inflater:
    """Incremental inflation of one body, never producing more than ``limit``."""

    def __init__(self, encoding: str, limit: int) -> None:
        self._encoding = encoding
        self._limit = limit
        self._produced = 0
        self._pending = b""
        self._stream: zlib._Decompress | None = None

    def _start(self, data: bytes) -> zlib._Decompress:
        wbits = _WBITS[self._encoding]
        if wbits == 15 and not _has_zlib_header(data):
            # Some clients send a bare deflate stream under "deflate".
            wbits = _RAW_DEFLATE
        return zlib.decompressobj(wbits)

    def feed(self, data: bytes) -> bytes:
        """Inflate the next piece of the body; raises :class:`TooLarge` or
        :class:`InflateError`."""
        if self._stream is None:
            data = self._pending + data
            if len(data) < 2:
                self._pending = data
                return b""
            self._pending = b""
            self._stream = self._start(data)
        out = []
        try:
            while data:
                if self._stream.eof:
                    raise InflateError("data after the end of the compressed stream")
                room = self._limit - self._produced + 1
                piece = self._stream.decompress(data, room)
                self._produced += len(piece)
                if self._produced > self._limit:
                    raise TooLarge()
                out.append(piece)
                data = self._stream.unconsumed_tail or self._stream.unused_data
        except zlib.error as exc:
            raise InflateError(str(exc)) from None
        return b"".join(out)

    def finish(self) -> None:
        """Check that the body ended exactly where its compressed stream ends."""
        if self._stream is None:
            if self._pending:
                raise InflateError("truncated compressed body")
            return  # an empty body
        if not self._stream.eof:
            raise InflateError("truncated compressed body")


def _has_zlib_header(data: bytes) -> bool:
    cmf, flg = data[0], data[1]
    return cmf & 0x0F == 8 and ((cmf << 8) | flg) % 31 == 0
