"""Loggers of the daemon and how log lines are written.

Lines go to standard error.  When that is the journal (the stream ``JOURNAL_STREAM``
names) they carry no timestamp, since the journal adds its own, and start with the
``<N>`` syslog priority prefix that journald reads.  No log line ever contains a
password, token, TAN or an ``Authorization`` header: call sites log instance ids,
addresses and outcomes only.
"""

from __future__ import annotations

import logging
import os
import sys

#: One line per request outcome.
access_log = logging.getLogger("merchant_authd.access")

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
    if under_journal():
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
