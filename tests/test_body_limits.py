"""The body limit on every route that reads a body: declared, and after inflation.

A body over the limit is refused with 413 / ``GENERIC_UPLOAD_EXCEEDS_LIMIT`` whether
its size is declared up front or only shows while a compressed body inflates, on
every endpoint, with the credentials that let the request reach its body.
"""

from __future__ import annotations

import gzip
import zlib
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from conftest import ADMIN_PASSWORD, assert_error, bearer, create_instance, login

from merchant_authd.errors import EC

LIMIT = 64 * 1024
#: (method, path, whose token opens it: "admin", "shop1" or None)
BODY_ROUTES = [
    ("POST", "/management/instances", "admin"),
    ("PATCH", "/management/instances/shop1", "admin"),
    ("POST", "/management/instances/shop1/auth", "admin"),
    ("PATCH", "/private", "admin"),
    ("POST", "/private/auth", "admin"),
    ("POST", "/private/token", "admin"),
    ("PATCH", "/instances/shop1/private", "shop1"),
    ("POST", "/instances/shop1/private/auth", "shop1"),
    ("POST", "/instances/shop1/private/token", "shop1"),
    ("POST", "/instances", None),
    ("POST", "/instances/shop1/forgot-password", None),
    ("POST", "/challenge/" + "7" * 52, None),
    ("POST", "/challenge/" + "7" * 52 + "/confirm", None),
    ("POST", "/instances/shop1/challenge/" + "7" * 52, None),
    ("POST", "/instances/shop1/challenge/" + "7" * 52 + "/confirm", None),
]


@pytest.fixture
async def limited(make_client: Any) -> tuple[TestClient, dict[str, str]]:
    client: TestClient = await make_client(body_limit=LIMIT, self_provisioning=True)
    await create_instance(client, "admin", ADMIN_PASSWORD)
    await create_instance(client, "shop1", "pw1")
    tokens = {
        "admin": await login(client, "admin", ADMIN_PASSWORD, scope="all:refreshable"),
        "shop1": await login(client, "shop1", "pw1", scope="all:refreshable"),
    }
    return client, tokens


def _headers(tokens: dict[str, str], who: str | None) -> dict[str, str]:
    return bearer(tokens[who]) if who else {}


@pytest.mark.parametrize(("method", "path", "who"), BODY_ROUTES)
async def test_declared_oversize_body(limited, method, path, who) -> None:
    client, tokens = limited
    body = b'{"x": "' + b"y" * LIMIT + b'"}'
    response = await client.request(
        method, path, data=body, headers=_headers(tokens, who)
    )
    await assert_error(response, 413, EC.GENERIC_UPLOAD_EXCEEDS_LIMIT)


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
@pytest.mark.parametrize(("method", "path", "who"), BODY_ROUTES)
async def test_compression_bomb(limited, method, path, who, encoding) -> None:
    client, tokens = limited
    inflated = b'{"x": "' + b"0" * (20 * 1024 * 1024) + b'"}'
    bomb = gzip.compress(inflated) if encoding == "gzip" else zlib.compress(inflated)
    assert len(bomb) < LIMIT
    headers = {**_headers(tokens, who), "Content-Encoding": encoding}
    response = await client.request(method, path, data=bomb, headers=headers)
    await assert_error(response, 413, EC.GENERIC_UPLOAD_EXCEEDS_LIMIT)
