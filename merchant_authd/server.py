"""Running the daemon: listen, tell systemd, stop on SIGTERM, reload on SIGHUP."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from dataclasses import replace

from aiohttp import web

from . import config, log as logsetup
from .config import Settings
from .sdnotify import notify
from .web.app import create_app
from .web.keys import CONTEXT

log = logging.getLogger("merchant_authd")

#: Seconds requests in flight get to finish after SIGTERM.
SHUTDOWN_GRACE_S = 10.0
#: Options that SIGHUP cannot change: they need a restart.
RESTART_ONLY = ("serve", "port", "bind_to", "unixpath", "unixpath_mode", "database")


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
    return f"http://{settings.bind_to}:{settings.port}"


def _reload(app: web.Application, settings: Settings) -> None:
    source = settings.source
    try:
        fresh = config.load(source)
    except config.ConfigError as exc:
        log.error("reload refused, keeping the running configuration: %s", exc)
        return
    keep = {name: getattr(settings, name) for name in RESTART_ONLY}
    fresh = replace(fresh, **keep)
    logsetup.setup(fresh.log_level)
    app[CONTEXT].reconfigure(fresh)
    log.info("configuration re-read from %s", source or "defaults")


async def serve(settings: Settings, bootstrap_secret: str | None) -> int:
    """Serve until SIGTERM or SIGINT; the process exit status."""
    app = create_app(settings, bootstrap_secret=bootstrap_secret)
    runner = web.AppRunner(
        app, access_log=None, handle_signals=False, shutdown_timeout=SHUTDOWN_GRACE_S
    )
    try:
        await runner.setup()
        where = await _start_site(runner, settings)
    except Exception as exc:  # start-up failures end in one line, not a traceback
        log.error("cannot start: %s", exc)
        await runner.cleanup()
        return 1
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    loop.add_signal_handler(signal.SIGHUP, lambda: _reload(app, app[CONTEXT].settings))
    log.info("merchant-authd serving on %s, database %s", where, settings.database_path)
    notify("READY=1")
    await stop.wait()
    notify("STOPPING=1")
    log.info("shutting down")
    await runner.cleanup()
    return 0


def run(settings: Settings, bootstrap_secret: str | None) -> int:
    """Blocking entry point used by the command line."""
    return asyncio.run(serve(settings, bootstrap_secret))
