"""Typed keys for what the application and each request carry."""

from __future__ import annotations

from aiohttp import web

from ..context import Context
from ..store import Instance
from .security import Principal

CONTEXT = web.AppKey("context", Context)
PRINCIPAL = web.RequestKey("principal", Principal)
TARGET = web.RequestKey("target", Instance)
