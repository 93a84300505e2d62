"""Loggers of the daemon and how log lines are written.

Lines go to standard error.  When that is the journal (the stream ``JOURNAL_STREAM``
names) they carry no timestamp, since the journal adds its own, and start with the
``<N>`` syslog priority prefix that journald reads.  No log line ever contains a
password, token, TAN or an ``Authorization`` header: call sites log instance ids,
addresses and outcomes only.

The access log, one line per request outcome, is :data:`access_log`.  Building a
``logging`` record, formatting its time and flushing the stream for every line cost
about as much as the rest of an authenticated read, so once :func:`setup` has
configured the daemon's logging the access log writes its lines itself, in the same
format, and all lines of one turn of the event loop with one ``write``.  Before
that, as in an application embedding the web app, or in tests, its lines are
records of the ``merchant_authd.access`` logger like any other.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time
from typing import TextIO

ACCESS_LOGGER = "merchant_authd.access"

_PRIORITY = {
    logging.DEBUG: 7,
    logging.INFO: 6,
    logging.WARNING: 4,
    logging.ERROR: 3,
    logging.CRITICAL: 2,
}


class JournalFormatter(logging.Formatter):
    """``<priority>logger: message``, as journald expects on a stream."""

    def format(self, record: logging.LogRecord) -> str:
        priority = _PRIORITY.get(record.levelno, 6)
        text = super().format(record)
        return "\n".join(f"<{priority}>{line}" for line in text.splitlines())


class AccessLog:
    """Where access lines go: the ``logging`` module, or a stream written directly."""

    def __init__(self) -> None:
        self._logger = logging.getLogger(ACCESS_LOGGER)
        self._stream: TextIO | None = None
        self._journal = False
        self._pending: list[str] = []
        self._second = -1
        self._stamp = ""
        #: Whether lines are kept at all; callers may skip building one otherwise.
        self.enabled = True

    def write_to(self, stream: TextIO | None, *, journal: bool = False) -> None:
        """Write lines to ``stream`` directly, or (``None``) through ``logging``.

        Lines are kept when the access logger is enabled for INFO at this moment.
        """
        self.flush()
        self._stream = stream
        self._journal = journal
        self.enabled = stream is None or self._logger.isEnabledFor(logging.INFO)

    def info(self, message: str) -> None:
        """Log one request outcome (a single line; control characters are escaped)."""
        if not message.isprintable():
            message = message.encode("unicode_escape").decode("ascii")
        if self._stream is None:
            self._logger.info("%s", message)
            return
        if not self.enabled:
            return
        if self._journal:
            line = f"<6>{ACCESS_LOGGER}: {message}\n"
        else:
            line = f"{self._timestamp()} INFO {ACCESS_LOGGER}: {message}\n"
        if not self._pending:
            try:
                asyncio.get_running_loop().call_soon(self.flush)
            except RuntimeError:  # no event loop: nothing to batch with
                self._pending.append(line)
                self.flush()
                return
        self._pending.append(line)

    def flush(self) -> None:
        """Write the lines collected so far."""
        if not self._pending or self._stream is None:
            return
        text = "".join(self._pending)
        self._pending.clear()
        try:
            self._stream.write(text)
            self._stream.flush()
        except (OSError, ValueError):
            pass  # standard error is gone: there is nowhere left to say so

    def _timestamp(self) -> str:
        """Local time as ``logging`` writes ``asctime``, the date made once a second."""
        now = time.time()
        second = int(now)
        if second != self._second:
            self._second = second
            self._stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(second))
        return f"{self._stamp},{int((now - second) * 1000):03d}"


#: One line per request outcome.
access_log = AccessLog()


def under_journal() -> bool:
    """Whether standard error is the stream systemd connected to the journal.

    ``JOURNAL_STREAM`` names that stream as ``device:inode``; it is inherited by
    child processes whose standard error may go elsewhere, so it is compared with
    what standard error really is.
    """
    device, _, inode = os.environ.get("JOURNAL_STREAM", "").partition(":")
    try:
        stat = os.fstat(sys.stderr.fileno())
        return (stat.st_dev, stat.st_ino) == (int(device), int(inode))
    except (ValueError, OSError, AttributeError):
        return False


def setup(level: str) -> None:
    """Send the daemon's logs to standard error at ``level``.

    Libraries stay at INFO or above: aiosqlite logs SQL parameters at DEBUG.
    """
    # No log line shows threads, processes or source lines: not collecting them
    # makes each record several times cheaper (the logging HOWTO's optimisation
    # knobs), which matters for the one line per request.
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    logging._srcfile = None
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    journal = under_journal()
    if journal:
        handler.setFormatter(JournalFormatter("%(name)s: %(message)s"))
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
        )
    root.addHandler(handler)
    root.setLevel(logging.WARNING)
    logging.getLogger("merchant_authd").setLevel(level)
    for noisy in ("aiosqlite", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    access_log.write_to(sys.stderr, journal=journal)
