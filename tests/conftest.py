"""Shared fixtures: an application on a fresh database, and a client with helpers.

Passwords are hashed at bcrypt cost 4 here so that the suite stays fast; the cost is a
setting like any other and the code path is the same.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any, Awaitable, Callable

import pytest
from aiohttp import ClientResponse, web
from aiohttp.test_utils import TestClient, TestServer

from merchant_authd import config
from merchant_authd.config import Settings
from merchant_authd.web.app import create_app
from merchant_authd.web.protocol import TalerAppRunner, server_options

ADMIN_PASSWORD = "admin-secret-pw"


def basic(user: str, password: str) -> dict[str, str]:
    """An ``Authorization: Basic`` header."""
    raw = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {raw}"}


def bearer(token: str) -> dict[str, str]:
    """An ``Authorization: Bearer`` header for a ``secret-token:`` value."""
    return {"Authorization": f"Bearer {token}"}


def instance_body(instance_id: str, password: str = "pw", **extra: Any) -> dict:
    """A minimal ``InstanceConfigurationMessage``."""
    body: dict[str, Any] = {
        "id": instance_id,
        "name": f"Shop {instance_id}",
        "auth": {"method": "token", "password": password},
    }
    body.update(extra)
    return body


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Default settings on a database in ``tmp_path`` (bcrypt cost 4)."""
    return config.defaults(database=tmp_path / "authd.sqlite3", bcrypt_cost=4)


class DaemonTestServer(TestServer):
    """A test server with the connection handling the daemon runs in production."""

    async def _make_runner(self, **kwargs: Any) -> web.AppRunner:
        return TalerAppRunner(self.app, **{**server_options(), **kwargs})


MakeClient = Callable[..., Awaitable[TestClient]]


@pytest.fixture
def make_client(aiohttp_client: Any, settings: Settings) -> MakeClient:
    """Build a test client; keyword arguments override settings."""

    async def make(bootstrap_secret: str | None = None, **overrides: Any) -> TestClient:
        app: web.Application = create_app(
            config.replace(settings, **overrides), bootstrap_secret=bootstrap_secret
        )
        client: TestClient = await aiohttp_client(DaemonTestServer(app))
        return client

    return make


@pytest.fixture
async def client(make_client: MakeClient) -> TestClient:
    """A client of an app with default settings and no instances."""
    return await make_client()


async def create_instance(
    client: TestClient, instance_id: str, password: str = "pw", **extra: Any
) -> None:
    """Create an instance with the admin's credentials (admin itself first-run)."""
    headers = {}
    if instance_id != "admin":
        headers = bearer(await login(client, "admin", ADMIN_PASSWORD))
    response = await client.post(
        "/management/instances",
        json=instance_body(instance_id, password, **extra),
        headers=headers,
    )
    assert response.status == 204, await response.text()


async def login(
    client: TestClient,
    instance_id: str,
    password: str,
    scope: str = "all",
    **extra: Any,
) -> str:
    """Log in with Basic auth; the access token."""
    prefix = "" if instance_id == "admin" else f"/instances/{instance_id}"
    response = await client.post(
        f"{prefix}/private/token",
        json={"scope": scope, **extra},
        headers=basic(instance_id, password),
    )
    assert response.status == 200, await response.text()
    token: str = (await response.json())["access_token"]
    return token


@pytest.fixture
async def admin_client(client: TestClient) -> TestClient:
    """A client whose database has an admin instance (password ``ADMIN_PASSWORD``)."""
    await create_instance(client, "admin", ADMIN_PASSWORD)
    return client


async def assert_error(
    response: ClientResponse, status: int, code: int
) -> dict[str, Any]:
    """The ``ErrorDetail`` of ``response`` after checking its status, code and shape."""
    assert response.status == status, await response.text()
    assert response.content_type == "application/json"
    body: dict[str, Any] = await response.json()
    assert type(body["code"]) is int
    assert body["code"] == code, body
    assert isinstance(body["hint"], str) and body["hint"]
    return body
