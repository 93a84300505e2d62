"""Instance management (spec 8, 13.11, 14): create, read, change, delete, purge.

Covers the id rules, idempotent re-creation and its conflicts, deletion with and
without purge (the private key row must be gone after a plain delete), the instance
key pair, faithful storage of the configuration members the daemon does not use, and
the tolerance real clients need (explicit ``null``, percent-encoded ids).
"""

from __future__ import annotations

import sqlite3
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from conftest import (
    ADMIN_PASSWORD,
    assert_error,
    bearer,
    create_instance,
    instance_body,
    login,
)
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from yarl import URL

from merchant_authd.config import Settings
from merchant_authd.crypto import crockford_decode
from merchant_authd.instances import SETTINGS_DEFAULTS

CROCKFORD = set("0123456789ABCDEFGHJKMNPQRSTVWXYZ")

#: An instance configuration using every member the daemon stores but does not use.
FULL_CONFIGURATION: dict[str, Any] = {
    "email": "owner@shop.example",
    "phone_number": "+41790000000",
    "website": "https://shop.example/",
    "logo": "data:image/png;base64,iVBORw0KGgo=",
    "address": {
        "country": "CH",
        "town": "Bern",
        "street": "Bundesgasse",
        "building_number": "3",
        "post_code": "3003",
        "address_lines": ["Bundesgasse 3", "3003 Bern"],
    },
    "jurisdiction": {"country": "CH", "country_subdivision": "BE"},
    "use_stefan": False,
    "default_pay_delay": {"d_us": 7_200_000_000},
    "default_refund_delay": {"d_us": 86_400_000_000},
    "default_wire_transfer_delay": {"d_us": 3_600_000_000},
    "default_wire_transfer_rounding_interval": "DAY",
}


async def admin_headers(client: TestClient) -> dict[str, str]:
    """Authorization with a fresh admin access token."""
    return bearer(await login(client, "admin", ADMIN_PASSWORD))


def key_rows(settings: Settings) -> dict[str, bytes]:
    """Instance id -> stored private key, read straight from the database file."""
    with sqlite3.connect(settings.database_path) as db:
        rows = db.execute(
            "SELECT i.id, k.merchant_priv FROM merchant_keys k"
            " JOIN instances i ON i.serial = k.instance_serial"
        ).fetchall()
    return {row[0]: row[1] for row in rows}


async def get_detail(client: TestClient, instance_id: str) -> dict[str, Any]:
    """``GET /management/instances/$I`` as admin."""
    response = await client.get(
        f"/management/instances/{instance_id}", headers=await admin_headers(client)
    )
    assert response.status == 200, await response.text()
    detail: dict[str, Any] = await response.json()
    return detail


async def list_instances(client: TestClient) -> dict[str, dict[str, Any]]:
    """``GET /management/instances`` keyed by id."""
    response = await client.get(
        "/management/instances", headers=await admin_headers(client)
    )
    assert response.status == 200, await response.text()
    return {entry["id"]: entry for entry in (await response.json())["instances"]}


# -- creating and reading ---------------------------------------------------------


async def test_create_then_read_on_both_paths(admin_client: TestClient) -> None:
    await create_instance(admin_client, "shop1", "pw1")
    detail = await get_detail(admin_client, "shop1")
    token = await login(admin_client, "shop1", "pw1")
    response = await admin_client.get("/instances/shop1/private", headers=bearer(token))
    assert response.status == 200
    assert await response.json() == detail
    assert detail["name"] == "Shop shop1"
    assert detail["auth"] == {"method": "token"}
    assert detail["email_validated"] is False
    assert detail["phone_validated"] is False
    assert "password" not in str(detail).lower()


async def test_merchant_pub_is_the_stored_keys_public_half(
    admin_client: TestClient, settings: Settings
) -> None:
    await create_instance(admin_client, "shop1")
    pub = (await get_detail(admin_client, "shop1"))["merchant_pub"]
    assert len(pub) == 52
    assert set(pub) <= CROCKFORD
    raw = crockford_decode(pub)
    assert raw is not None and len(raw) == 32
    public = Ed25519PublicKey.from_public_bytes(raw)
    private = Ed25519PrivateKey.from_private_bytes(key_rows(settings)["shop1"])
    derived = private.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    assert derived == raw
    public.verify(private.sign(b"contract terms"), b"contract terms")
    listed = await list_instances(admin_client)
    assert listed["shop1"]["merchant_pub"] == pub
    assert listed["admin"]["merchant_pub"] != pub


async def test_every_instance_has_its_own_key(admin_client: TestClient) -> None:
    await create_instance(admin_client, "shop1")
    await create_instance(admin_client, "shop2")
    listed = await list_instances(admin_client)
    assert len({entry["merchant_pub"] for entry in listed.values()}) == 3


async def test_list_entries(admin_client: TestClient) -> None:
    await create_instance(
        admin_client, "shop1", website="https://a.example/", logo="data:image/png;,x"
    )
    listed = await list_instances(admin_client)
    assert set(listed) == {"admin", "shop1"}
    entry = listed["shop1"]
    assert entry["name"] == "Shop shop1"
    assert entry["website"] == "https://a.example/"
    assert entry["logo"] == "data:image/png;,x"
    assert entry["payment_targets"] == []
    assert entry["deleted"] is False
    assert "website" not in listed["admin"]


async def test_configuration_is_returned_faithfully(admin_client: TestClient) -> None:
    await create_instance(admin_client, "shop1", **FULL_CONFIGURATION)
    detail = await get_detail(admin_client, "shop1")
    for key, value in FULL_CONFIGURATION.items():
        assert detail[key] == value, key


async def test_defaults_are_filled_in(admin_client: TestClient) -> None:
    await create_instance(admin_client, "shop1")
    detail = await get_detail(admin_client, "shop1")
    assert detail["address"] == SETTINGS_DEFAULTS["address"]
    assert detail["jurisdiction"] == SETTINGS_DEFAULTS["jurisdiction"]
    assert detail["use_stefan"] is SETTINGS_DEFAULTS["use_stefan"]
    for key in (
        "default_pay_delay",
        "default_refund_delay",
        "default_wire_transfer_delay",
    ):
        assert detail[key] == {"d_us": SETTINGS_DEFAULTS[key]}, key
    assert (
        detail["default_wire_transfer_rounding_interval"]
        == SETTINGS_DEFAULTS["default_wire_transfer_rounding_interval"]
    )
    for absent in ("email", "phone_number", "website", "logo"):
        assert absent not in detail


async def test_explicit_null_for_every_optional_member(
    admin_client: TestClient,
) -> None:
    nulls: dict[str, Any] = {key: None for key in FULL_CONFIGURATION}
    await create_instance(admin_client, "shop1", **nulls)
    detail = await get_detail(admin_client, "shop1")
    assert detail["default_pay_delay"] == {
        "d_us": SETTINGS_DEFAULTS["default_pay_delay"]
    }
    assert detail["address"] == {}
    for absent in ("email", "phone_number", "website", "logo"):
        assert absent not in detail


async def test_explicit_null_inside_nested_members(admin_client: TestClient) -> None:
    await create_instance(
        admin_client,
        "shop1",
        address={"country": "DE", "town": None, "address_lines": None},
        auth={"method": "token", "password": "pw", "token": None},
    )
    assert (await get_detail(admin_client, "shop1"))["address"] == {"country": "DE"}
    await login(admin_client, "shop1", "pw")


async def test_unknown_members_are_ignored(admin_client: TestClient) -> None:
    await create_instance(admin_client, "shop1", payto_uris=["payto://x"], future=1)
    assert "future" not in await get_detail(admin_client, "shop1")


# -- id rules ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "instance_id",
    [
        "a",  # too short
        "",
        "-shop",
        "_shop",
        ".shop",
        "@shop",
        "sh op",
        "sh/op",
        "shop!",
        "shöp",
        "shop\n",
        "x" * 256,
        "default",
        "Default",
        "DEFAULT",
    ],
)
async def test_bad_instance_ids(admin_client: TestClient, instance_id: str) -> None:
    response = await admin_client.post(
        "/management/instances",
        json=instance_body(instance_id),
        headers=await admin_headers(admin_client),
    )
    await assert_error(response, 400, 26)


@pytest.mark.parametrize("instance_id", ["ab", "a1", "A_b.c-d@e", "9shop", "x" * 255])
async def test_good_instance_ids(admin_client: TestClient, instance_id: str) -> None:
    await create_instance(admin_client, instance_id)
    assert instance_id in await list_instances(admin_client)


async def test_percent_encoded_id(admin_client: TestClient) -> None:
    await create_instance(admin_client, "a@b.c", "pw")
    headers = await admin_headers(admin_client)
    response = await admin_client.get(
        URL("/management/instances/a%40b.c", encoded=True), headers=headers
    )
    assert response.status == 200, await response.text()
    assert (await response.json())["name"] == "Shop a@b.c"
    response = await admin_client.post(
        URL("/instances/a%40b.c/private/token", encoded=True),
        json={"scope": "all"},
        headers={"Authorization": "Bearer secret-token:pw"},
    )
    assert response.status == 200, await response.text()
    token = (await response.json())["access_token"]
    response = await admin_client.get(
        URL("/instances/a%40b.c/private", encoded=True), headers=bearer(token)
    )
    assert response.status == 200
    response = await admin_client.patch(
        URL("/management/instances/a%40b.c", encoded=True),
        json={"website": "https://abc.example/"},
        headers=headers,
    )
    assert response.status == 204
    assert (await get_detail(admin_client, "a@b.c"))["website"] == (
        "https://abc.example/"
    )


# -- bad bodies -------------------------------------------------------------------

BAD_CREATE_BODIES: list[tuple[str, dict[str, Any], int]] = [
    ("name missing", {"name": None}, 25),
    ("id missing", {"id": None}, 25),
    ("id not a string", {"id": 42}, 26),
    ("name not a string", {"name": 5}, 26),
    ("name empty", {"name": ""}, 26),
    ("use_stefan a string", {"use_stefan": "yes"}, 26),
    ("use_stefan a number", {"use_stefan": 1}, 26),
    ("delay a bare number", {"default_pay_delay": 1000}, 26),
    ("delay a string", {"default_pay_delay": "1 d"}, 26),
    ("delay negative", {"default_refund_delay": {"d_us": -1}}, 26),
    ("delay forever", {"default_pay_delay": {"d_us": "forever"}}, 26),
    ("delay too big", {"default_wire_transfer_delay": {"d_us": 2**53}}, 26),
    ("delay extra member", {"default_pay_delay": {"d_us": 1, "t_s": 1}}, 26),
    ("delay a float", {"default_pay_delay": {"d_us": 1.5}}, 26),
    ("address a string", {"address": "Bern"}, 26),
    ("address member type", {"address": {"country": 41}}, 26),
    ("address_lines too many", {"address": {"address_lines": ["x"] * 8}}, 26),
    ("jurisdiction a list", {"jurisdiction": []}, 26),
    ("website a number", {"website": 5}, 26),
    ("logo not an image", {"logo": "https://shop.example/logo.png"}, 26),
    ("email malformed", {"email": "owner"}, 26),
    ("phone malformed", {"phone_number": "0790000000"}, 26),
    ("email trailing newline", {"email": "owner@shop.example\n"}, 26),
    ("phone trailing newline", {"phone_number": "+41790000000\n"}, 26),
    ("rounding unknown", {"default_wire_transfer_rounding_interval": "FORTNIGHT"}, 26),
    ("auth missing", {"auth": None}, 2601),
    ("auth a string", {"auth": "pw"}, 2601),
    ("auth unknown method", {"auth": {"method": "magic"}}, 2601),
    ("auth no method", {"auth": {"password": "pw"}}, 2601),
    ("auth no password", {"auth": {"method": "token"}}, 2601),
    ("auth empty password", {"auth": {"method": "token", "password": ""}}, 2601),
    ("auth password a number", {"auth": {"method": "token", "password": 5}}, 2601),
    (
        "auth token without prefix",
        {"auth": {"method": "token", "token": "x" * 20}},
        2601,
    ),
    (
        "auth password and token",
        {"auth": {"method": "token", "password": "a", "token": "secret-token:b"}},
        2601,
    ),
]


@pytest.mark.parametrize(
    ("change", "code"),
    [(change, code) for _, change, code in BAD_CREATE_BODIES],
    ids=[name for name, _, _ in BAD_CREATE_BODIES],
)
async def test_bad_create_bodies(
    admin_client: TestClient, change: dict[str, Any], code: int
) -> None:
    body = instance_body("shop1")
    for key, value in change.items():
        if value is None:
            del body[key]
        else:
            body[key] = value
    response = await admin_client.post(
        "/management/instances", json=body, headers=await admin_headers(admin_client)
    )
    await assert_error(response, 400, code)
    assert "shop1" not in await list_instances(admin_client)


BAD_PATCH_BODIES: list[tuple[str, dict[str, Any]]] = [
    ("name empty", {"name": ""}),
    ("name a number", {"name": 1}),
    ("use_stefan a string", {"use_stefan": "no"}),
    ("delay a string", {"default_pay_delay": "1 d"}),
    ("delay forever", {"default_refund_delay": {"d_us": "forever"}}),
    ("address a list", {"address": ["Bern"]}),
    ("email malformed", {"email": "not-an-address"}),
    ("logo not an image", {"logo": "data:text/plain,hi"}),
]


@pytest.mark.parametrize(
    "change", [c for _, c in BAD_PATCH_BODIES], ids=[n for n, _ in BAD_PATCH_BODIES]
)
async def test_bad_patch_bodies(
    admin_client: TestClient, change: dict[str, Any]
) -> None:
    await create_instance(admin_client, "shop1")
    before = await get_detail(admin_client, "shop1")
    response = await admin_client.patch(
        "/management/instances/shop1",
        json=change,
        headers=await admin_headers(admin_client),
    )
    await assert_error(response, 400, 26)
    assert await get_detail(admin_client, "shop1") == before


# -- re-creating ------------------------------------------------------------------


async def test_same_body_again_is_idempotent(admin_client: TestClient) -> None:
    headers = await admin_headers(admin_client)
    body = instance_body("shop1", "pw1", **FULL_CONFIGURATION)
    for _ in range(2):
        response = await admin_client.post(
            "/management/instances", json=body, headers=headers
        )
        assert response.status == 204, await response.text()
    assert len(await list_instances(admin_client)) == 2


@pytest.mark.parametrize(
    "extra",
    [{"email": ""}, {"phone_number": ""}, {"website": ""}, {"logo": None}],
)
async def test_same_body_with_empty_members_again_is_idempotent(
    admin_client: TestClient, extra: dict[str, Any]
) -> None:
    headers = await admin_headers(admin_client)
    body = instance_body("shop1", "pw1", **extra)
    for _ in range(2):
        response = await admin_client.post(
            "/management/instances", json=body, headers=headers
        )
        assert response.status == 204, await response.text()


async def test_legacy_token_body_again_is_idempotent(admin_client: TestClient) -> None:
    headers = await admin_headers(admin_client)
    body = instance_body("shop1", auth={"method": "token", "token": "secret-token:x1"})
    for _ in range(2):
        response = await admin_client.post(
            "/management/instances", json=body, headers=headers
        )
        assert response.status == 204, await response.text()


@pytest.mark.parametrize(
    "change",
    [
        {"name": "Another shop"},
        {"auth": {"method": "token", "password": "other"}},
        {"auth": {"method": "external"}},
        {"use_stefan": False},
        {"email": "new@shop.example"},
        {"website": "https://other.example/"},
    ],
)
async def test_different_body_conflicts(
    admin_client: TestClient, change: dict[str, Any]
) -> None:
    await create_instance(admin_client, "shop1", "pw")
    response = await admin_client.post(
        "/management/instances",
        json={**instance_body("shop1", "pw"), **change},
        headers=await admin_headers(admin_client),
    )
    await assert_error(response, 409, 2600)
    await login(admin_client, "shop1", "pw")


@pytest.mark.parametrize("other_id", ["SHOP1", "Shop1", "sHoP1"])
async def test_id_differing_only_by_case_conflicts(
    admin_client: TestClient, other_id: str
) -> None:
    await create_instance(admin_client, "shop1", "pw")
    response = await admin_client.post(
        "/management/instances",
        json=instance_body(other_id, "pw"),
        headers=await admin_headers(admin_client),
    )
    await assert_error(response, 409, 2600)
    assert other_id not in await list_instances(admin_client)


async def test_admin_id_by_case_conflicts(admin_client: TestClient) -> None:
    response = await admin_client.post(
        "/management/instances",
        json=instance_body("Admin", "pw"),
        headers=await admin_headers(admin_client),
    )
    await assert_error(response, 409, 2600)


# -- changing ---------------------------------------------------------------------


async def test_patch_changes_only_what_is_sent(admin_client: TestClient) -> None:
    await create_instance(admin_client, "shop1", "pw", **FULL_CONFIGURATION)
    response = await admin_client.patch(
        "/management/instances/shop1",
        json={"name": "Renamed", "use_stefan": True, "website": ""},
        headers=await admin_headers(admin_client),
    )
    assert response.status == 204, await response.text()
    detail = await get_detail(admin_client, "shop1")
    assert detail["name"] == "Renamed"
    assert detail["use_stefan"] is True
    assert "website" not in detail
    for key in ("address", "jurisdiction", "logo", "default_pay_delay", "email"):
        assert detail[key] == FULL_CONFIGURATION[key], key


async def test_patch_with_nulls_keeps_everything(admin_client: TestClient) -> None:
    await create_instance(admin_client, "shop1", "pw", **FULL_CONFIGURATION)
    before = await get_detail(admin_client, "shop1")
    nulls: dict[str, Any] = {key: None for key in ("name", *FULL_CONFIGURATION)}
    response = await admin_client.patch(
        "/management/instances/shop1",
        json=nulls,
        headers=await admin_headers(admin_client),
    )
    assert response.status == 204, await response.text()
    assert await get_detail(admin_client, "shop1") == before


async def test_patch_does_not_change_credentials(admin_client: TestClient) -> None:
    await create_instance(admin_client, "shop1", "pw")
    token = await login(admin_client, "shop1", "pw")
    response = await admin_client.patch(
        "/instances/shop1/private",
        json={"auth": {"method": "token", "password": "new"}, "name": "N"},
        headers=bearer(token),
    )
    assert response.status == 204, await response.text()
    await login(admin_client, "shop1", "pw")


async def test_patch_own_instance(admin_client: TestClient) -> None:
    await create_instance(admin_client, "shop1", "pw")
    token = await login(admin_client, "shop1", "pw")
    response = await admin_client.patch(
        "/instances/shop1/private",
        json={"default_pay_delay": {"d_us": 5}},
        headers=bearer(token),
    )
    assert response.status == 204
    response = await admin_client.get("/instances/shop1/private", headers=bearer(token))
    assert (await response.json())["default_pay_delay"] == {"d_us": 5}


async def test_admin_patches_itself_without_prefix(admin_client: TestClient) -> None:
    headers = await admin_headers(admin_client)
    response = await admin_client.patch(
        "/private", json={"name": "Operator"}, headers=headers
    )
    assert response.status == 204
    response = await admin_client.get("/private", headers=headers)
    assert (await response.json())["name"] == "Operator"


# -- deleting and purging ---------------------------------------------------------


async def test_delete_without_purge(
    admin_client: TestClient, settings: Settings
) -> None:
    await create_instance(admin_client, "shop1", "pw")
    token = await login(admin_client, "shop1", "pw")
    assert "shop1" in key_rows(settings)
    headers = await admin_headers(admin_client)
    response = await admin_client.delete("/management/instances/shop1", headers=headers)
    assert response.status == 204, await response.text()

    assert "shop1" not in key_rows(settings)
    assert "admin" in key_rows(settings)
    listed = await list_instances(admin_client)
    assert listed["shop1"]["deleted"] is True
    assert listed["admin"]["deleted"] is False
    with sqlite3.connect(settings.database_path) as db:
        (tokens,) = db.execute(
            "SELECT COUNT(*) FROM access_tokens t JOIN instances i"
            " ON i.serial = t.instance_serial WHERE i.id = 'shop1'"
        ).fetchone()
    assert tokens == 0

    response = await admin_client.get("/instances/shop1/private", headers=bearer(token))
    await assert_error(response, 404, 2000)
    response = await admin_client.post(
        "/instances/shop1/private/token",
        json={"scope": "all"},
        headers={"Authorization": "Bearer secret-token:pw"},
    )
    await assert_error(response, 404, 2000)

    response = await admin_client.post(
        "/management/instances", json=instance_body("shop1", "pw"), headers=headers
    )
    await assert_error(response, 409, 2603)
    response = await admin_client.post(
        "/management/instances", json=instance_body("SHOP1", "pw"), headers=headers
    )
    await assert_error(response, 409, 2603)
    response = await admin_client.patch(
        "/management/instances/shop1", json={"name": "Back"}, headers=headers
    )
    await assert_error(response, 409, 2625)


async def test_purge_after_delete_then_recreate(
    admin_client: TestClient, settings: Settings
) -> None:
    await create_instance(admin_client, "shop1", "old")
    old_pub = (await get_detail(admin_client, "shop1"))["merchant_pub"]
    headers = await admin_headers(admin_client)
    response = await admin_client.delete("/management/instances/shop1", headers=headers)
    assert response.status == 204
    response = await admin_client.delete(
        "/management/instances/shop1", params={"purge": "YES"}, headers=headers
    )
    assert response.status == 204, await response.text()
    assert "shop1" not in await list_instances(admin_client)
    await create_instance(admin_client, "shop1", "new")
    detail = await get_detail(admin_client, "shop1")
    assert detail["merchant_pub"] != old_pub
    assert "shop1" in key_rows(settings)
    await login(admin_client, "shop1", "new")


async def test_purge_directly(admin_client: TestClient, settings: Settings) -> None:
    await create_instance(admin_client, "shop1", "pw")
    headers = await admin_headers(admin_client)
    response = await admin_client.delete(
        "/management/instances/shop1", params={"purge": "yes"}, headers=headers
    )
    assert response.status == 204, await response.text()
    with sqlite3.connect(settings.database_path) as db:
        (rows,) = db.execute(
            "SELECT COUNT(*) FROM instances WHERE id = 'shop1'"
        ).fetchone()
    assert rows == 0
    assert "shop1" not in key_rows(settings)
    response = await admin_client.get("/management/instances/shop1", headers=headers)
    await assert_error(response, 404, 2000)
    await create_instance(admin_client, "shop1", "pw")


async def test_delete_own_instance(admin_client: TestClient) -> None:
    await create_instance(admin_client, "shop1", "pw")
    token = await login(admin_client, "shop1", "pw")
    response = await admin_client.delete(
        "/instances/shop1/private", headers=bearer(token)
    )
    assert response.status == 204, await response.text()
    assert (await list_instances(admin_client))["shop1"]["deleted"] is True
    response = await admin_client.delete(
        "/instances/shop1/private", headers=bearer(token)
    )
    await assert_error(response, 404, 2000)


async def test_delete_deleted_again_without_purge(admin_client: TestClient) -> None:
    await create_instance(admin_client, "shop1")
    headers = await admin_headers(admin_client)
    response = await admin_client.delete("/management/instances/shop1", headers=headers)
    assert response.status == 204
    response = await admin_client.delete("/management/instances/shop1", headers=headers)
    await assert_error(response, 404, 2016)


@pytest.mark.parametrize("purge", ["maybe", "1", "", "YES!"])
async def test_bad_purge_parameter(admin_client: TestClient, purge: str) -> None:
    await create_instance(admin_client, "shop1")
    headers = await admin_headers(admin_client)
    response = await admin_client.delete(
        "/management/instances/shop1", params={"purge": purge}, headers=headers
    )
    await assert_error(response, 400, 26)
    assert (await list_instances(admin_client))["shop1"]["deleted"] is False


# -- unknown instances and callers ------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/management/instances/nosuch"),
        ("PATCH", "/management/instances/nosuch"),
        ("DELETE", "/management/instances/nosuch"),
        ("GET", "/instances/nosuch/private"),
        ("PATCH", "/instances/nosuch/private"),
        ("DELETE", "/instances/nosuch/private"),
    ],
)
async def test_unknown_instance(
    admin_client: TestClient, method: str, path: str
) -> None:
    response = await admin_client.request(
        method, path, json={"name": "x"}, headers=await admin_headers(admin_client)
    )
    await assert_error(response, 404, 2000)


async def test_instance_token_cannot_manage(admin_client: TestClient) -> None:
    await create_instance(admin_client, "shop1", "pw")
    token = await login(admin_client, "shop1", "pw")
    for method, path in [
        ("POST", "/management/instances"),
        ("GET", "/management/instances"),
        ("GET", "/management/instances/shop1"),
        ("DELETE", "/management/instances/shop1"),
    ]:
        response = await admin_client.request(
            method, path, json=instance_body("shop2"), headers=bearer(token)
        )
        await assert_error(response, 401, 2015)


async def test_instance_token_cannot_open_another_instance(
    admin_client: TestClient,
) -> None:
    await create_instance(admin_client, "shop1", "pw")
    await create_instance(admin_client, "shop2", "pw")
    token = await login(admin_client, "shop1", "pw")
    response = await admin_client.get("/instances/shop2/private", headers=bearer(token))
    await assert_error(response, 401, 2015)
    admin_token = await login(admin_client, "admin", ADMIN_PASSWORD)
    response = await admin_client.get(
        "/instances/shop2/private", headers=bearer(admin_token)
    )
    await assert_error(response, 401, 2015)


async def test_readonly_token_cannot_write(admin_client: TestClient) -> None:
    readonly = await login(admin_client, "admin", ADMIN_PASSWORD, scope="readonly")
    response = await admin_client.get("/management/instances", headers=bearer(readonly))
    assert response.status == 200
    response = await admin_client.post(
        "/management/instances", json=instance_body("shop1"), headers=bearer(readonly)
    )
    await assert_error(response, 403, 16)
    response = await admin_client.patch(
        "/private", json={"name": "x"}, headers=bearer(readonly)
    )
    await assert_error(response, 403, 16)
    response = await admin_client.delete("/private", headers=bearer(readonly))
    await assert_error(response, 403, 16)


async def test_no_credentials(admin_client: TestClient) -> None:
    response = await admin_client.post(
        "/management/instances", json=instance_body("shop1")
    )
    await assert_error(response, 401, 2015)
    response = await admin_client.get("/management/instances")
    await assert_error(response, 401, 2015)
