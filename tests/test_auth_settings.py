"""Changing an instance's authentication (spec 4, 13.3, 13.8).

Both paths (``/management/instances/$I/auth`` by the admin and
``[/instances/$I]/private/auth`` by the instance itself), all three methods (password,
the deprecated ``token`` form, ``external``), the error table, and the rule that a new
password ends every existing access token of the instance.
"""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from conftest import ADMIN_PASSWORD, assert_error, basic, bearer, create_instance, login


async def admin_headers(client: TestClient) -> dict[str, str]:
    """Authorization with a fresh admin access token."""
    return bearer(await login(client, "admin", ADMIN_PASSWORD))


async def basic_login_status(
    client: TestClient, instance_id: str, password: str
) -> tuple[int, int | None]:
    """(status, Taler code) of a Basic login at the instance's token endpoint."""
    prefix = "" if instance_id == "admin" else f"/instances/{instance_id}"
    response = await client.post(
        f"{prefix}/private/token",
        json={"scope": "all"},
        headers=basic(instance_id, password),
    )
    body = await response.json()
    return response.status, body.get("code")


@pytest.fixture
async def shop(admin_client: TestClient) -> TestClient:
    """The admin client, with instance ``shop1`` (password ``old-pw``)."""
    await create_instance(admin_client, "shop1", "old-pw")
    return admin_client


async def headers_for(client: TestClient, path: str) -> dict[str, str]:
    """Credentials that open ``path``: admin for management, else shop1 itself."""
    if path.startswith("/management/"):
        return await admin_headers(client)
    return bearer(await login(client, "shop1", "old-pw"))


AUTH_PATHS = ["/management/instances/shop1/auth", "/instances/shop1/private/auth"]


# -- the three methods ------------------------------------------------------------


@pytest.mark.parametrize("path", AUTH_PATHS)
async def test_set_password(shop: TestClient, path: str) -> None:
    response = await shop.post(
        path,
        json={"method": "token", "password": "new-pw"},
        headers=await headers_for(shop, path),
    )
    assert response.status == 204, await response.text()
    assert await basic_login_status(shop, "shop1", "new-pw") == (200, None)
    assert await basic_login_status(shop, "shop1", "old-pw") == (401, 2015)


@pytest.mark.parametrize("path", AUTH_PATHS)
async def test_set_legacy_token(shop: TestClient, path: str) -> None:
    response = await shop.post(
        path,
        json={"method": "token", "token": "secret-token:legacy-secret"},
        headers=await headers_for(shop, path),
    )
    assert response.status == 204, await response.text()
    assert await basic_login_status(shop, "shop1", "legacy-secret") == (200, None)
    response = await shop.get(
        "/instances/shop1/private", headers=bearer("secret-token:legacy-secret")
    )
    assert response.status == 200, await response.text()
    assert (await response.json())["auth"] == {"method": "token"}
    assert await basic_login_status(shop, "shop1", "old-pw") == (401, 2015)
    response = await shop.get(
        "/instances/shop1/private", headers=bearer("secret-token:old-pw")
    )
    await assert_error(response, 401, 2015)


@pytest.mark.parametrize("path", AUTH_PATHS)
async def test_set_external(shop: TestClient, path: str) -> None:
    response = await shop.post(
        path, json={"method": "external"}, headers=await headers_for(shop, path)
    )
    assert response.status == 204, await response.text()
    response = await shop.get("/instances/shop1/private")
    assert response.status == 200, await response.text()
    assert (await response.json())["auth"] == {"method": "external"}
    response = await shop.patch("/instances/shop1/private", json={"name": "Open"})
    assert response.status == 204
    response = await shop.post("/instances/shop1/private/token", json={"scope": "all"})
    assert response.status == 200, await response.text()
    listed = await shop.get(
        "/management/instances/shop1", headers=await admin_headers(shop)
    )
    assert (await listed.json())["auth"] == {"method": "external"}


async def test_external_back_to_password(shop: TestClient) -> None:
    response = await shop.post(
        "/instances/shop1/private/auth",
        json={"method": "external"},
        headers=await headers_for(shop, "/instances/shop1/private/auth"),
    )
    assert response.status == 204
    response = await shop.post(
        "/instances/shop1/private/auth",
        json={"method": "token", "password": "closed-again"},
    )
    assert response.status == 204, await response.text()
    response = await shop.get("/instances/shop1/private")
    await assert_error(response, 401, 2015)
    assert await basic_login_status(shop, "shop1", "closed-again") == (200, None)


async def test_admin_changes_own_password_without_prefix(
    admin_client: TestClient,
) -> None:
    response = await admin_client.post(
        "/private/auth",
        json={"method": "token", "password": "next-admin-pw"},
        headers=await admin_headers(admin_client),
    )
    assert response.status == 204, await response.text()
    assert await basic_login_status(admin_client, "admin", "next-admin-pw") == (
        200,
        None,
    )
    assert await basic_login_status(admin_client, "admin", ADMIN_PASSWORD) == (
        401,
        2015,
    )


async def test_admin_resets_own_password_through_management(
    admin_client: TestClient,
) -> None:
    response = await admin_client.post(
        "/management/instances/admin/auth",
        json={"method": "token", "password": "reset-pw"},
        headers=await admin_headers(admin_client),
    )
    assert response.status == 204, await response.text()
    assert await basic_login_status(admin_client, "admin", "reset-pw") == (200, None)


async def test_explicit_nulls_are_absent(shop: TestClient) -> None:
    response = await shop.post(
        "/management/instances/shop1/auth",
        json={"method": "token", "password": "new-pw", "token": None},
        headers=await admin_headers(shop),
    )
    assert response.status == 204, await response.text()
    assert await basic_login_status(shop, "shop1", "new-pw") == (200, None)


# -- tokens end with a password change --------------------------------------------


@pytest.mark.parametrize("path", AUTH_PATHS)
async def test_password_change_ends_tokens(shop: TestClient, path: str) -> None:
    other = await login(shop, "shop1", "old-pw")
    caller = await headers_for(shop, path)
    response = await shop.post(
        path, json={"method": "token", "password": "new-pw"}, headers=caller
    )
    assert response.status == 204
    response = await shop.get("/instances/shop1/private", headers=bearer(other))
    await assert_error(response, 401, 2015)
    if not path.startswith("/management/"):
        response = await shop.get("/instances/shop1/private", headers=caller)
        await assert_error(response, 401, 2015)
    fresh = await login(shop, "shop1", "new-pw")
    response = await shop.get("/instances/shop1/private", headers=bearer(fresh))
    assert response.status == 200


async def test_password_change_keeps_other_instances_tokens(shop: TestClient) -> None:
    await create_instance(shop, "shop2", "pw2")
    token2 = await login(shop, "shop2", "pw2")
    admin_token = await login(shop, "admin", ADMIN_PASSWORD)
    response = await shop.post(
        "/management/instances/shop1/auth",
        json={"method": "token", "password": "new-pw"},
        headers=bearer(admin_token),
    )
    assert response.status == 204
    response = await shop.get("/instances/shop2/private", headers=bearer(token2))
    assert response.status == 200
    response = await shop.get("/management/instances", headers=bearer(admin_token))
    assert response.status == 200


# -- failures ---------------------------------------------------------------------

BAD_AUTH_BODIES: list[tuple[str, Any]] = [
    ("empty object", {}),
    ("unknown method", {"method": "magic"}),
    ("method case", {"method": "TOKEN", "password": "x"}),
    ("method a number", {"method": 1}),
    ("method null only", {"method": None}),
    ("password missing", {"method": "token"}),
    ("password empty", {"method": "token", "password": ""}),
    ("password a number", {"method": "token", "password": 1234}),
    ("password a list", {"method": "token", "password": ["x"]}),
    ("token without prefix", {"method": "token", "token": "legacy-secret-x"}),
    ("token only the prefix", {"method": "token", "token": "secret-token:"}),
    ("token a number", {"method": "token", "token": 5}),
    (
        "password and token",
        {"method": "token", "password": "a", "token": "secret-token:b"},
    ),
]


@pytest.mark.parametrize("path", AUTH_PATHS)
@pytest.mark.parametrize(
    "body", [b for _, b in BAD_AUTH_BODIES], ids=[n for n, _ in BAD_AUTH_BODIES]
)
async def test_bad_auth_bodies(shop: TestClient, path: str, body: Any) -> None:
    response = await shop.post(path, json=body, headers=await headers_for(shop, path))
    await assert_error(response, 400, 2602)
    assert await basic_login_status(shop, "shop1", "old-pw") == (200, None)


@pytest.mark.parametrize("path", AUTH_PATHS)
@pytest.mark.parametrize(
    "raw", [b"", b"{", b"[]", b"null", b'"token"', b"{'method': 'external'}"]
)
async def test_bad_json(shop: TestClient, path: str, raw: bytes) -> None:
    headers = {**await headers_for(shop, path), "Content-Type": "application/json"}
    response = await shop.post(path, data=raw, headers=headers)
    await assert_error(response, 400, 22)


@pytest.mark.parametrize(
    "path", ["/management/instances/nosuch/auth", "/instances/nosuch/private/auth"]
)
async def test_unknown_instance(admin_client: TestClient, path: str) -> None:
    response = await admin_client.post(
        path,
        json={"method": "token", "password": "x"},
        headers=await admin_headers(admin_client),
    )
    await assert_error(response, 404, 2000)


@pytest.mark.parametrize("path", [*AUTH_PATHS, "/private/auth"])
async def test_no_credentials(shop: TestClient, path: str) -> None:
    response = await shop.post(path, json={"method": "external"})
    await assert_error(response, 401, 2015)
    assert await basic_login_status(shop, "shop1", "old-pw") == (200, None)


@pytest.mark.parametrize("path", [*AUTH_PATHS, "/private/auth"])
async def test_basic_is_not_accepted(shop: TestClient, path: str) -> None:
    user, password = "admin", ADMIN_PASSWORD
    if path.startswith("/instances/shop1/"):
        user, password = "shop1", "old-pw"
    response = await shop.post(
        path, json={"method": "external"}, headers=basic(user, password)
    )
    await assert_error(response, 401, 2015)


@pytest.mark.parametrize("path", AUTH_PATHS)
async def test_readonly_token_is_refused(shop: TestClient, path: str) -> None:
    user, password = (
        ("admin", ADMIN_PASSWORD)
        if path.startswith("/management/")
        else ("shop1", "old-pw")
    )
    readonly = await login(shop, user, password, scope="readonly")
    response = await shop.post(
        path, json={"method": "external"}, headers=bearer(readonly)
    )
    await assert_error(response, 403, 16)
    assert await basic_login_status(shop, "shop1", "old-pw") == (200, None)


async def test_instance_cannot_change_another(shop: TestClient) -> None:
    await create_instance(shop, "shop2", "pw2")
    token = await login(shop, "shop1", "old-pw")
    for path in ("/instances/shop2/private/auth", "/management/instances/shop2/auth"):
        response = await shop.post(
            path, json={"method": "external"}, headers=bearer(token)
        )
        await assert_error(response, 401, 2015)
    assert await basic_login_status(shop, "shop2", "pw2") == (200, None)


async def test_deleted_instance(shop: TestClient) -> None:
    headers = await admin_headers(shop)
    response = await shop.delete("/management/instances/shop1", headers=headers)
    assert response.status == 204
    response = await shop.post(
        "/management/instances/shop1/auth",
        json={"method": "token", "password": "x"},
        headers=headers,
    )
    await assert_error(response, 404, 2016)
    response = await shop.post(
        "/instances/shop1/private/auth",
        json={"method": "token", "password": "x"},
        headers=headers,
    )
    await assert_error(response, 404, 2000)
