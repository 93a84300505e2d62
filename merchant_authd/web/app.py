"""The aiohttp application: storage opened and closed with it, routes, middleware."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import AsyncIterator

from aiohttp import web

from .. import crypto
from ..config import Settings
from ..context import Context
from ..sqlite_store import SqliteStore
from .keys import CONTEXT
from .middleware import taler_middleware
from .routes import setup_routes

log = logging.getLogger("merchant_authd")


def create_app(
    settings: Settings, *, bootstrap_secret: str | None = None
) -> web.Application:
    """A ready-to-run application for ``settings``.

    The database is opened when the application starts and closed when it stops.
    """
    app = web.Application(
        middlewares=[taler_middleware], client_max_size=settings.body_limit
    )
    setup_routes(app)

    async def storage(app: web.Application) -> AsyncIterator[None]:
        store = await SqliteStore.open(settings.database_path)
        # A cheap decoy at first, so that start-up does not wait for a full-cost
        # bcrypt hash; the real one replaces it within a fraction of a second.
        decoy = await asyncio.to_thread(crypto.make_decoy_hash, 4)
        ctx = Context(settings, store, bootstrap_secret, decoy)
        app[CONTEXT] = ctx
        chores = asyncio.create_task(_after_start(ctx))
        yield
        chores.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await chores
        await store.close()

    app.cleanup_ctx.append(storage)
    return app


async def _after_start(ctx: Context) -> None:
    """Start-up work that need not delay the first answer."""
    cost = ctx.settings.bcrypt_cost
    ctx.decoy_hash = await asyncio.to_thread(crypto.make_decoy_hash, cost)
    for instance in await ctx.store.list_instances():
        if instance.auth_method == "external" and not instance.deleted:
            log.warning(
                "instance %s performs no authentication (method external)", instance.id
            )
