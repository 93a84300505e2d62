"""The aiohttp application: storage opened and closed with it, routes, middleware."""

from __future__ import annotations

import asyncio
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
        decoy = await asyncio.to_thread(crypto.make_decoy_hash, settings.bcrypt_cost)
        ctx = Context(settings, store, bootstrap_secret, decoy)
        app[CONTEXT] = ctx
        await _warn_external(ctx)
        yield
        await store.close()

    app.cleanup_ctx.append(storage)
    return app


async def _warn_external(ctx: Context) -> None:
    for instance in await ctx.store.list_instances():
        if instance.auth_method == "external" and not instance.deleted:
            log.warning(
                "instance %s performs no authentication (method external)", instance.id
            )
