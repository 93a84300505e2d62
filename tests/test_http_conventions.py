"""Conventions every endpoint shares (spec 1.x, 9, 13.7, 13.11, 14).

Error bodies, routing errors, JSON parsing, body limits and compression, CORS, the
``/instances/default`` redirect, the ``/instances/admin`` alias, the bare
``secret-token:`` Authorization form, admin bootstrap (secret and first run) and
``GET /config``.
"""

from __future__ import annotations

import gzip
import json
import zlib
from pathlib import Path
from typing import Any, AsyncIterator

import pytest
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient
from conftest import (
    ADMIN_PASSWORD,
    MakeClient,
    assert_error,
    basic,
    bearer,
    create_instance,
    instance_body,
    login,
)

from merchant_authd import PROTOCOL_VERSION
from merchant_authd.context import bootstrap_secret

SMALL_LIMIT = 4096


async def admin_headers(client: TestClient) -> dict[str, str]:
    """Authorization with a fresh admin access token."""
    return bearer(await login(client, "admin", ADMIN_PASSWORD))


def login_body(size: int = 0) -> bytes:
    """A ``LoginTokenRequest`` padded (with an ignored member) to ``size`` bytes."""
    base = b'{"scope": "readonly", "padding": ""}'
    padding = b"x" * max(0, size - len(base))
    return base[:-2] + padding + b'"}'


# -- routing ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/"),
        ("GET", "/nothing"),
        ("GET", "/private/nothing"),
        ("GET", "/instances/shop1/private/nothing"),
        ("POST", "/management/things"),
        ("GET", "/management/instances/shop1/nothing"),
        ("GET", "/config/"),
    ],
)
async def test_unknown_endpoint(client: TestClient, method: str, path: str) -> None:
    response = await client.request(method, path)
    await assert_error(response, 404, 21)


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("DELETE", "/config"),
        ("POST", "/config"),
        ("PUT", "/management/instances"),
        ("GET", "/private/token"),
        ("PUT", "/private"),
        ("GET", "/instances/shop1/private/auth"),
        ("GET", "/management/instances/shop1/auth"),
        ("GET", "/instances"),
    ],
)
async def test_wrong_method(client: TestClient, method: str, path: str) -> None:
    response = await client.request(method, path)
    await assert_error(response, 405, 20)
    assert "Allow" in response.headers


@pytest.mark.parametrize(
    ("path", "methods"),
    [
        ("/private", {"GET", "PATCH", "DELETE"}),
        ("/instances/shop1/private", {"GET", "PATCH", "DELETE"}),
        ("/private/token", {"POST", "DELETE"}),
        ("/management/instances/shop1", {"GET", "PATCH", "DELETE"}),
    ],
)
async def test_wrong_method_names_every_method_of_the_path(
    client: TestClient, path: str, methods: set[str]
) -> None:
    response = await client.put(path)
    await assert_error(response, 405, 20)
    assert set(response.headers["Allow"].split(",")) == methods


def test_every_path_is_one_resource(client: TestClient) -> None:
    served = [resource.canonical for resource in client.app.router.resources()]
    assert len(served) == len(set(served))


async def test_uri_too_long(client: TestClient) -> None:
    response = await client.get("/config", params={"padding": "x" * 9000})
    await assert_error(response, 414, 31)


# -- bodies: JSON -----------------------------------------------------------------

BAD_JSON: list[tuple[str, bytes]] = [
    ("empty", b""),
    ("truncated", b'{"scope": "all"'),
    ("single quotes", b"{'scope': 'all'}"),
    ("trailing garbage", b'{"scope": "all"} x'),
    ("array", b'["scope", "all"]'),
    ("number", b"42"),
    ("string", b'"all"'),
    ("null", b"null"),
    ("NaN", b'{"scope": "all", "duration": {"d_us": NaN}}'),
    ("Infinity", b'{"scope": "all", "x": -Infinity}'),
    ("invalid UTF-8", b'{"scope": "all", "description": "\xff\xfe"}'),
    ("UTF-16", '{"scope": "all"}'.encode("utf-16")),
    ("deeply nested", b'{"x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"),
]


@pytest.mark.parametrize(
    "raw", [raw for _, raw in BAD_JSON], ids=[name for name, _ in BAD_JSON]
)
async def test_bad_json_on_token_endpoint(admin_client: TestClient, raw: bytes) -> None:
    response = await admin_client.post(
        "/private/token",
        data=raw,
        headers={
            **basic("admin", ADMIN_PASSWORD),
            "Content-Type": "application/json",
        },
    )
    await assert_error(response, 400, 22)


@pytest.mark.parametrize(
    "raw", [raw for _, raw in BAD_JSON], ids=[name for name, _ in BAD_JSON]
)
async def test_bad_json_on_instance_creation(
    admin_client: TestClient, raw: bytes
) -> None:
    headers = {**await admin_headers(admin_client), "Content-Type": "text/plain"}
    response = await admin_client.post(
        "/management/instances", data=raw, headers=headers
    )
    await assert_error(response, 400, 22)


@pytest.mark.parametrize(
    ("path", "query"),
    [
        ("/management/instances/shop1", {"purge": "maybe"}),
        ("/private/tokens", {"limit": "abc"}),
        ("/private/tokens", {"limit": "0"}),
        ("/private/tokens", {"offset": "-1"}),
        ("/private/tokens", {"limit": "1e3"}),
    ],
)
async def test_bad_query_parameter(
    admin_client: TestClient, path: str, query: dict[str, str]
) -> None:
    await create_instance(admin_client, "shop1")
    method = "DELETE" if path.startswith("/management/") else "GET"
    response = await admin_client.request(
        method, path, params=query, headers=await admin_headers(admin_client)
    )
    body = await assert_error(response, 400, 26)
    assert body.get("parameter") == next(iter(query))


# -- bodies: size limit and compression -------------------------------------------


@pytest.fixture
async def limited(make_client: MakeClient) -> TestClient:
    """A client of an app with a 4 KiB body limit and an admin instance."""
    client = await make_client(body_limit=SMALL_LIMIT)
    await create_instance(client, "admin", ADMIN_PASSWORD)
    return client


async def post_login(
    client: TestClient, data: Any, headers: dict[str, str] | None = None
) -> ClientResponse:
    """``POST /private/token`` as admin with ``data`` as the body."""
    return await client.post(
        "/private/token",
        data=data,
        headers={
            **basic("admin", ADMIN_PASSWORD),
            "Content-Type": "application/json",
            **(headers or {}),
        },
    )


async def test_body_at_the_limit_is_accepted(limited: TestClient) -> None:
    response = await post_login(limited, login_body(SMALL_LIMIT))
    assert response.status == 200, await response.text()


async def test_declared_length_over_the_limit(limited: TestClient) -> None:
    response = await post_login(limited, login_body(SMALL_LIMIT + 1))
    await assert_error(response, 413, 32)


async def test_chunked_body_over_the_limit(limited: TestClient) -> None:
    body = login_body(SMALL_LIMIT * 4)

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(body), 1000):
            yield body[start : start + 1000]

    response = await post_login(limited, chunks())
    assert "Content-Length" not in response.request_info.headers
    assert response.request_info.headers.get("Transfer-Encoding") == "chunked"
    await assert_error(response, 413, 32)


async def test_chunked_body_within_the_limit(limited: TestClient) -> None:
    body = login_body(SMALL_LIMIT // 2)

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(body), 500):
            yield body[start : start + 500]

    response = await post_login(limited, chunks())
    assert response.status == 200, await response.text()


@pytest.mark.parametrize(
    ("encoding", "compress"),
    [
        ("gzip", gzip.compress),
        ("deflate", zlib.compress),
        ("deflate", lambda data: zlib.compress(data, wbits=-15)),
    ],
    ids=["gzip", "deflate-zlib", "deflate-raw"],
)
async def test_compressed_body_is_inflated(
    admin_client: TestClient, encoding: str, compress: Any
) -> None:
    raw = login_body(3000)
    response = await post_login(
        admin_client, compress(raw), {"Content-Encoding": encoding}
    )
    assert response.status == 200, await response.text()
    assert (await response.json())["scope"] == "readonly"


async def test_compressed_instance_with_logo(admin_client: TestClient) -> None:
    logo = "data:image/png;base64," + "A" * 8000
    body = instance_body("shop1", logo=logo)
    response = await admin_client.post(
        "/management/instances",
        data=gzip.compress(json.dumps(body).encode()),
        headers={
            **await admin_headers(admin_client),
            "Content-Type": "application/json",
            "Content-Encoding": "gzip",
        },
    )
    assert response.status == 204, await response.text()
    response = await admin_client.get(
        "/management/instances/shop1", headers=await admin_headers(admin_client)
    )
    assert (await response.json())["logo"] == logo


@pytest.mark.parametrize(
    ("encoding", "compress"),
    [("gzip", gzip.compress), ("deflate", zlib.compress)],
    ids=["gzip", "deflate"],
)
async def test_limit_applies_to_inflated_size(
    limited: TestClient, encoding: str, compress: Any
) -> None:
    packed = compress(login_body(SMALL_LIMIT * 3))
    assert len(packed) < SMALL_LIMIT
    response = await post_login(limited, packed, {"Content-Encoding": encoding})
    await assert_error(response, 413, 32)


@pytest.mark.parametrize(
    ("encoding", "compress"),
    [("gzip", gzip.compress), ("deflate", zlib.compress)],
    ids=["gzip", "deflate"],
)
async def test_decompression_bomb(
    admin_client: TestClient, encoding: str, compress: Any
) -> None:
    bomb = compress(b'{"scope": "all", "description": "' + bytes(50 * 2**20) + b'"}')
    assert len(bomb) < 200_000
    response = await post_login(admin_client, bomb, {"Content-Encoding": encoding})
    await assert_error(response, 413, 32)


CORRUPT: list[tuple[str, str, bytes]] = [
    ("gzip garbage", "gzip", b"\x1f\x8b\x08\x00" + b"garbage" * 10),
    ("gzip of plain text", "gzip", b'{"scope": "all"}'),
    ("deflate garbage", "deflate", b"\x78\x9c" + b"\xff" * 40),
]


@pytest.mark.parametrize(
    ("encoding", "data"),
    [(encoding, data) for _, encoding, data in CORRUPT],
    ids=[name for name, _, _ in CORRUPT],
)
async def test_corrupt_compressed_body(
    admin_client: TestClient, encoding: str, data: bytes
) -> None:
    response = await post_login(admin_client, data, {"Content-Encoding": encoding})
    await assert_error(response, 400, 28)


@pytest.mark.parametrize("cut", [8, 30])
async def test_truncated_gzip_body(admin_client: TestClient, cut: int) -> None:
    # A gzip body missing its trailer (checksum and length) is not taken for whole.
    data = gzip.compress(login_body(2000))[:-cut]
    response = await post_login(admin_client, data, {"Content-Encoding": "gzip"})
    await assert_error(response, 400, 28)


async def test_truncated_deflate_body(admin_client: TestClient) -> None:
    data = zlib.compress(login_body(2000))[:-30]
    response = await post_login(admin_client, data, {"Content-Encoding": "deflate"})
    await assert_error(response, 400, 28)


# -- CORS -------------------------------------------------------------------------


async def test_cors_on_success_and_errors(admin_client: TestClient) -> None:
    response = await admin_client.get("/config")
    assert response.status == 200
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    response = await admin_client.get("/private")
    await assert_error(response, 401, 2015)
    response = await admin_client.get("/nothing")
    await assert_error(response, 404, 21)
    response = await admin_client.post("/private/auth", json={})
    await assert_error(response, 401, 2015)
    token = await login(admin_client, "admin", ADMIN_PASSWORD)
    response = await admin_client.delete("/private/token", headers=bearer(token))
    assert response.status == 204
    assert response.headers["Access-Control-Allow-Origin"] == "*"


@pytest.mark.parametrize(
    "path", ["/config", "/private/token", "/management/instances/x", "/nothing"]
)
async def test_preflight(client: TestClient, path: str) -> None:
    response = await client.options(
        path,
        headers={
            "Origin": "https://spa.example",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type",
        },
    )
    assert response.status == 204
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    assert response.headers["Access-Control-Allow-Headers"] == "*"
    assert await response.read() == b""


# -- paths: default redirect and admin alias --------------------------------------


@pytest.mark.parametrize(
    ("path", "location"),
    [
        ("/instances/default/private", "/private"),
        (
            "/instances/default/private/tokens?limit=5&offset=7",
            "/private/tokens?limit=5&offset=7",
        ),
        ("/instances/default", "/"),
        ("/instances/default/config", "/config"),
    ],
)
@pytest.mark.parametrize("method", ["GET", "POST", "DELETE"])
async def test_default_redirects(
    client: TestClient, path: str, location: str, method: str
) -> None:
    response = await client.request(method, path, allow_redirects=False)
    assert response.status == 308
    assert response.headers["Location"] == location
    assert response.headers["Access-Control-Allow-Origin"] == "*"


async def test_default_is_not_an_instance_prefix_elsewhere(client: TestClient) -> None:
    response = await client.get("/instances/defaults/private", allow_redirects=False)
    await assert_error(response, 404, 2000)


async def test_admin_prefix_is_the_admin_instance(admin_client: TestClient) -> None:
    response = await admin_client.post(
        "/instances/admin/private/token",
        json={"scope": "all"},
        headers=basic("admin", ADMIN_PASSWORD),
    )
    assert response.status == 200, await response.text()
    token = (await response.json())["access_token"]
    response = await admin_client.get("/private", headers=bearer(token))
    assert response.status == 200
    unprefixed = await response.json()
    response = await admin_client.get(
        "/instances/admin/private", headers=bearer(token), allow_redirects=False
    )
    assert response.status == 200
    assert await response.json() == unprefixed


async def test_unknown_instance_prefix(admin_client: TestClient) -> None:
    response = await admin_client.post(
        "/instances/nosuch/private/token",
        json={"scope": "all"},
        headers=basic("nosuch", "pw"),
    )
    await assert_error(response, 404, 2000)


# -- Authorization forms ----------------------------------------------------------


async def test_bare_secret_token_is_a_bearer(admin_client: TestClient) -> None:
    token = await login(admin_client, "admin", ADMIN_PASSWORD)
    response = await admin_client.get("/private", headers={"Authorization": token})
    assert response.status == 200, await response.text()
    response = await admin_client.post(
        "/private/token",
        json={"scope": "readonly"},
        headers={"Authorization": f"secret-token:{ADMIN_PASSWORD}"},
    )
    assert response.status == 200, await response.text()


@pytest.mark.parametrize(
    "value",
    [
        "Bearer",
        "Bearer ",
        "Bearer nothing-prefixed",
        f"Bearer {ADMIN_PASSWORD}",
        "Token secret-token:abc",
        "secret-token:",
        "secret-token:" + "0" * 52,
    ],
)
async def test_unusable_authorization(admin_client: TestClient, value: str) -> None:
    response = await admin_client.get("/private", headers={"Authorization": value})
    await assert_error(response, 401, 2015)


async def test_basic_only_at_the_token_endpoint(admin_client: TestClient) -> None:
    response = await admin_client.get(
        "/private", headers=basic("admin", ADMIN_PASSWORD)
    )
    await assert_error(response, 401, 2015)
    response = await admin_client.get(
        "/management/instances", headers=basic("admin", ADMIN_PASSWORD)
    )
    await assert_error(response, 401, 2015)


async def test_broken_basic_header(admin_client: TestClient) -> None:
    response = await admin_client.post(
        "/private/token",
        json={"scope": "all"},
        headers={"Authorization": "Basic !!!not-base64"},
    )
    await assert_error(response, 400, 23)


@pytest.mark.parametrize(
    ("path", "status", "code"),
    [
        ("/private", 400, 23),
        ("/instances/admin/private", 400, 23),
        # The instance is looked up before the credentials are read (spec 1.11),
        # on instance and management paths alike.
        ("/instances/nosuch/private", 404, 2000),
        ("/management/instances/nosuch", 404, 2000),
    ],
)
async def test_broken_basic_header_after_the_instance_lookup(
    admin_client: TestClient, path: str, status: int, code: int
) -> None:
    broken = {"Authorization": "Basic !!!not-base64"}
    response = await admin_client.get(path, headers=broken)
    await assert_error(response, status, code)


# -- bootstrap --------------------------------------------------------------------


async def test_bootstrap_secret_until_admin_has_password(
    make_client: MakeClient,
) -> None:
    client = await make_client(bootstrap_secret="s3cr3t")
    secret = bearer("secret-token:s3cr3t")
    response = await client.post(
        "/management/instances", json=instance_body("shop1", "pw1"), headers=secret
    )
    assert response.status == 204, await response.text()
    response = await client.get("/management/instances", headers=secret)
    assert response.status == 200
    assert [i["id"] for i in (await response.json())["instances"]] == ["shop1"]

    response = await client.post(
        "/management/instances",
        json=instance_body("admin", ADMIN_PASSWORD),
        headers=bearer("secret-token:wrong"),
    )
    await assert_error(response, 401, 2015)
    response = await client.post(
        "/management/instances",
        json=instance_body("admin", ADMIN_PASSWORD),
        headers=secret,
    )
    assert response.status == 204, await response.text()

    response = await client.get("/management/instances", headers=secret)
    await assert_error(response, 401, 2015)
    response = await client.get("/private", headers=secret)
    await assert_error(response, 401, 2015)
    token = await login(client, "admin", ADMIN_PASSWORD)
    response = await client.get("/management/instances", headers=bearer(token))
    assert response.status == 200


async def test_bootstrap_opens_admin_private_until_password_set(
    make_client: MakeClient,
) -> None:
    client = await make_client(bootstrap_secret="s3cr3t")
    secret = bearer("secret-token:s3cr3t")
    response = await client.post(
        "/management/instances",
        json=instance_body("admin", auth={"method": "external"}),
        headers=secret,
    )
    assert response.status == 204, await response.text()
    response = await client.post(
        "/private/auth", json={"method": "token", "password": "first"}, headers=secret
    )
    assert response.status == 204, await response.text()
    response = await client.get("/private", headers=secret)
    await assert_error(response, 401, 2015)
    await login(client, "admin", "first")


async def test_bootstrap_secret_does_not_open_other_instances(
    make_client: MakeClient,
) -> None:
    client = await make_client(bootstrap_secret="s3cr3t")
    secret = bearer("secret-token:s3cr3t")
    response = await client.post(
        "/management/instances", json=instance_body("shop1"), headers=secret
    )
    assert response.status == 204
    response = await client.get("/instances/shop1/private", headers=secret)
    await assert_error(response, 401, 2015)


async def test_no_first_run_when_bootstrap_secret_is_set(
    make_client: MakeClient,
) -> None:
    client = await make_client(bootstrap_secret="s3cr3t")
    response = await client.post(
        "/management/instances", json=instance_body("admin", ADMIN_PASSWORD)
    )
    await assert_error(response, 401, 2015)


async def test_first_run_creates_admin_only(client: TestClient) -> None:
    response = await client.post("/management/instances", json=instance_body("shop1"))
    await assert_error(response, 401, 2015)
    response = await client.get("/management/instances")
    await assert_error(response, 401, 2015)
    response = await client.post(
        "/management/instances", json=instance_body("admin", ADMIN_PASSWORD)
    )
    assert response.status == 204, await response.text()
    response = await client.post(
        "/management/instances", json=instance_body("admin", ADMIN_PASSWORD)
    )
    await assert_error(response, 401, 2015)
    response = await client.post("/management/instances", json=instance_body("shop1"))
    await assert_error(response, 401, 2015)


async def test_first_run_with_bad_body(client: TestClient) -> None:
    response = await client.post(
        "/management/instances", json={"id": "admin", "auth": {"method": "token"}}
    )
    await assert_error(response, 400, 25)


class TestBootstrapSecretSources:
    """``merchant_authd.context.bootstrap_secret``: ``--auth`` and the environment."""

    @pytest.fixture(autouse=True)
    def clean_environment(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.delenv("TALER_MERCHANT_TOKEN", raising=False)
        monkeypatch.delenv("TALER_MERCHANT_PASSWORD", raising=False)

    def test_nothing(self) -> None:
        assert bootstrap_secret(None) is None

    @pytest.mark.parametrize(
        "variable", ["TALER_MERCHANT_TOKEN", "TALER_MERCHANT_PASSWORD"]
    )
    @pytest.mark.parametrize("value", ["secret-token:abc", "abc"])
    def test_environment(
        self, monkeypatch: pytest.MonkeyPatch, variable: str, value: str
    ) -> None:
        monkeypatch.setenv(variable, value)
        assert bootstrap_secret(None) == "abc"

    def test_empty_environment(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("TALER_MERCHANT_TOKEN", "")
        assert bootstrap_secret(None) is None

    def test_token_variable_wins(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("TALER_MERCHANT_TOKEN", "one")
        monkeypatch.setenv("TALER_MERCHANT_PASSWORD", "two")
        assert bootstrap_secret(None) == "one"

    def test_command_line(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("TALER_MERCHANT_TOKEN", "from-env")
        assert bootstrap_secret("secret-token:from-cli") == "from-cli"

    @pytest.mark.parametrize(
        "value", ["plain", "Bearer secret-token:x", "", "secret-token:"]
    )
    def test_command_line_needs_prefix(self, value: str) -> None:
        with pytest.raises(ValueError):
            bootstrap_secret(value)


# -- GET /config ------------------------------------------------------------------


async def test_config_defaults(client: TestClient) -> None:
    response = await client.get("/config")
    assert response.status == 200
    body = await response.json()
    assert body["version"] == PROTOCOL_VERSION == "21:0:2"
    assert body["name"] == "taler-merchant"
    assert body["currency"] == "KUDOS"
    assert "KUDOS" in body["currencies"]
    assert body["have_self_provisioning"] is False
    assert body["mandatory_tan_channels"] == []
    current, _, age = (int(part) for part in body["version"].split(":"))
    assert current - age <= 19 <= current


async def test_config_reflects_settings(
    make_client: MakeClient, tmp_path: Path
) -> None:
    helper = tmp_path / "mailer"
    client = await make_client(
        currency="EUR",
        self_provisioning=True,
        mandatory_tan_channels=("email",),
        helper_email=helper,
    )
    body = await (await client.get("/config")).json()
    assert body["currency"] == "EUR"
    assert set(body["currencies"]) == {"EUR"}
    assert body["have_self_provisioning"] is True
    assert body["mandatory_tan_channels"] == ["email"]


async def test_config_needs_no_credentials_and_ignores_bad_ones(
    client: TestClient,
) -> None:
    response = await client.get("/config", headers=bearer("secret-token:bogus"))
    assert response.status == 200


@pytest.mark.parametrize("encoding", ["br", "compress", "zstd"])
async def test_unsupported_content_encoding(
    admin_client: TestClient, encoding: str
) -> None:
    response = await post_login(
        admin_client, login_body(10), {"Content-Encoding": encoding}
    )
    await assert_error(response, 400, 28)


async def test_data_after_the_compressed_stream(admin_client: TestClient) -> None:
    data = gzip.compress(login_body(10)) + b"trailing"
    response = await post_login(admin_client, data, {"Content-Encoding": "gzip"})
    await assert_error(response, 400, 28)
