"""Running the daemon: listen, tell systemd, stop on SIGTERM, reload on SIGHUP.

SIGTERM (or SIGINT) stops accepting connections, lets requests in flight finish for
up to :data:`SHUTDOWN_GRACE_S` seconds and then closes the database.  SIGHUP re-reads
the configuration file and sets up logging again; what needs a restart
(:data:`RESTART_ONLY`) keeps its running value, and a file that does not load leaves
everything as it was.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import resource
import signal
import time
from dataclasses import replace
from typing import Any, Mapping

from aiohttp import web

from . import config
from . import log as logsetup
from .config import Settings
from .sdnotify import notify
from .web.app import create_app
from .web.keys import CONTEXT
from .web.protocol import TalerAppRunner, server_options

log = logging.getLogger("merchant_authd")

#: Seconds requests in flight get to finish after SIGTERM.
SHUTDOWN_GRACE_S = 10.0
#: Options that SIGHUP cannot change: they need a restart.
RESTART_ONLY = ("serve", "port", "bind_to", "unixpath", "unixpath_mode", "database")


def _url(address: Any) -> str:
    host, port = address[0], address[1]
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}"


async def _start_site(runner: web.AppRunner, settings: Settings) -> str:
    if settings.serve == "unix":
        assert settings.unixpath is not None
        path = settings.unixpath
        if path.is_socket():
            path.unlink()
        site: web.BaseSite = web.UnixSite(runner, str(path))
        await site.start()
        os.chmod(path, settings.unixpath_mode)
        return f"unix:{path}"
    site = web.TCPSite(runner, settings.bind_to, settings.port, reuse_address=True)
    await site.start()
    # The bound addresses, not the configured ones: PORT = 0 picks a free port.
    return ", ".join(_url(address) for address in runner.addresses)


def _reload(app: web.Application, overrides: Mapping[str, Any]) -> None:
    # systemd wants the reload's start time on its monotonic clock.
    now_us = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    notify(f"RELOADING=1\nMONOTONIC_USEC={now_us}")
    try:
        settings = app[CONTEXT].settings
        try:
            fresh = config.load(settings.source)
        except config.ConfigError as exc:
            log.error("reload refused, keeping the running configuration: %s", exc)
            return
        keep = {name: getattr(settings, name) for name in RESTART_ONLY}
        fresh = replace(fresh, **{**keep, **overrides})
        logsetup.setup(fresh.log_level)
        app[CONTEXT].reconfigure(fresh)
        log.info("configuration re-read from %s", settings.source or "defaults")
    finally:
        notify("READY=1")


def _raise_file_limit() -> None:
    """Allow as many open files as the hard limit does.

    Every client connection is a file descriptor; at the usual soft limit of 1024 a
    thousand idle or slow connections would leave none for the next client, the
    database or a TAN helper.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 65536)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


async def serve(
    settings: Settings,
    bootstrap_secret: str | None,
    overrides: Mapping[str, Any] | None = None,
) -> int:
    """Serve until SIGTERM or SIGINT; the process exit status.

    ``overrides`` are settings given on the command line: a reload keeps them.
    """
    _raise_file_limit()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    # Installed before start-up, so that a SIGTERM during it is a clean stop too.
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    app = create_app(settings, bootstrap_secret=bootstrap_secret)
    runner = TalerAppRunner(
        app,
        access_log=None,
        handle_signals=False,
        shutdown_timeout=SHUTDOWN_GRACE_S,
        **server_options(),
    )
    try:
        await runner.setup()
        where = await _start_site(runner, settings)
    except Exception as exc:  # start-up failures end in one line, not a traceback
        log.error("cannot start: %s", exc)
        await runner.cleanup()
        return 1
    loop.add_signal_handler(signal.SIGHUP, _reload, app, dict(overrides or {}))
    log.info("merchant-authd serving on %s, database %s", where, settings.database_path)
    notify(f"READY=1\nSTATUS=serving on {where}")
    await stop.wait()
    # A reload now would reconfigure services that are being torn down.
    loop.add_signal_handler(signal.SIGHUP, log.info, "reload ignored: shutting down")
    notify("STOPPING=1\nSTATUS=finishing requests in flight")
    log.info("shutting down: finishing requests in flight")
    await runner.cleanup()
    logsetup.access_log.flush()
    log.info("stopped")
    return 0


def run(
    settings: Settings,
    bootstrap_secret: str | None,
    overrides: Mapping[str, Any] | None = None,
) -> int:
    """Blocking entry point used by the command line."""
    return asyncio.run(serve(settings, bootstrap_secret, overrides))
