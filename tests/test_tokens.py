"""Access tokens: issuing, refreshing, scopes, lifetimes, revoking, listing, expiry."""

from __future__ import annotations

import re
import sqlite3
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from conftest import ADMIN_PASSWORD, basic, bearer, create_instance, login

import merchant_authd.crypto
import merchant_authd.web.security
from merchant_authd.errors import EC

TOKEN_TEXT = re.compile(r"^secret-token:[0-9A-HJKMNP-TV-Z]{52}$")
DAY_S = 86_400
UNAUTHORIZED = EC.MERCHANT_GENERIC_UNAUTHORIZED
MALFORMED = EC.GENERIC_PARAMETER_MALFORMED


async def expect_error(response: Any, status: int, code: int) -> dict[str, Any]:
    """Assert an ``ErrorDetail`` with this status and code; the body."""
    body: dict[str, Any] = await response.json()
    assert (response.status, body.get("code")) == (status, code), body
    return body


async def issue(
    client: TestClient,
    instance_id: str,
    body: dict[str, Any],
    headers: dict[str, str],
) -> dict[str, Any]:
    """POST a ``LoginTokenRequest``; the 200 response body."""
    prefix = "" if instance_id == "admin" else f"/instances/{instance_id}"
    response = await client.post(f"{prefix}/private/token", json=body, headers=headers)
    assert response.status == 200, await response.text()
    result: dict[str, Any] = await response.json()
    return result


async def status_with(client: TestClient, path: str, token: str) -> int:
    response = await client.get(path, headers=bearer(token))
    return response.status


@pytest.fixture
async def shop_client(admin_client: TestClient) -> TestClient:
    """Admin plus instances ``shop1`` (password ``pw1``) and ``shop2`` (``pw2``)."""
    await create_instance(admin_client, "shop1", "pw1")
    await create_instance(admin_client, "shop2", "pw2")
    return admin_client


# -- issuing -------------------------------------------------------------------------


async def test_login_with_basic_returns_full_response(shop_client):
    before = int(time.time())
    body = await issue(
        shop_client,
        "shop1",
        {"scope": "readonly", "description": "Backoffice"},
        basic("shop1", "pw1"),
    )
    after = int(time.time())
    assert set(body) == {
        "token",
        "access_token",
        "scope",
        "expiration",
        "refreshable",
        "serial",
    }
    assert body["token"] == body["access_token"]
    assert TOKEN_TEXT.match(body["access_token"])
    assert body["scope"] == "readonly"
    assert body["refreshable"] is False
    assert isinstance(body["serial"], int)
    # Default lifetime: one day.
    assert before + DAY_S <= body["expiration"]["t_s"] <= after + DAY_S + 1
    assert (
        await status_with(shop_client, "/instances/shop1/private", body["token"]) == 200
    )


async def test_login_on_admin_instance_without_prefix(admin_client):
    token = await login(admin_client, "admin", ADMIN_PASSWORD)
    assert await status_with(admin_client, "/private", token) == 200
    assert await status_with(admin_client, "/instances/admin/private", token) == 200


async def test_legacy_password_bearer_logs_in(shop_client):
    body = await issue(
        shop_client, "shop1", {"scope": "write"}, bearer("secret-token:pw1")
    )
    assert body["scope"] == "all"
    assert TOKEN_TEXT.match(body["token"])


async def test_bare_secret_token_authorization_is_a_bearer(shop_client):
    token = await login(shop_client, "shop1", "pw1")
    response = await shop_client.get(
        "/instances/shop1/private", headers={"Authorization": token}
    )
    assert response.status == 200


async def test_wrong_password_is_refused(shop_client):
    response = await shop_client.post(
        "/instances/shop1/private/token",
        json={"scope": "all"},
        headers=basic("shop1", "wrong"),
    )
    await expect_error(response, 401, UNAUTHORIZED)


async def test_basic_naming_another_instance_is_refused(shop_client):
    response = await shop_client.post(
        "/instances/shop1/private/token",
        json={"scope": "all"},
        headers=basic("shop2", "pw2"),
    )
    await expect_error(response, 401, UNAUTHORIZED)


async def test_unknown_instance_is_404(shop_client):
    response = await shop_client.post(
        "/instances/nope/private/token",
        json={"scope": "all"},
        headers=basic("nope", "pw"),
    )
    await expect_error(response, 404, EC.MERCHANT_GENERIC_INSTANCE_UNKNOWN)


@pytest.mark.parametrize(
    ("requested", "extra", "scope", "refreshable"),
    [
        ("readonly", {}, "readonly", False),
        ("all", {}, "all", False),
        ("order-simple", {}, "order-simple", False),
        ("order-pos", {}, "order-pos", False),
        ("order-mgmt", {}, "order-mgmt", False),
        ("order-full", {}, "order-full", False),
        ("admin", {}, "all", False),
        ("write", {}, "all", False),
        ("spa", {}, "all", True),
        ("readonly:refreshable", {}, "readonly", True),
        ("write:refreshable", {}, "all", True),
        ("order-pos", {"refreshable": True}, "order-pos", True),
        ("order-pos", {"refreshable": False}, "order-pos", False),
        ("order-pos", {"refreshable": None, "duration": None}, "order-pos", False),
    ],
)
async def test_scopes_and_aliases(shop_client, requested, extra, scope, refreshable):
    body = await issue(
        shop_client, "shop1", {"scope": requested, **extra}, basic("shop1", "pw1")
    )
    assert (body["scope"], body["refreshable"]) == (scope, refreshable)


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"scope": "root"}, MALFORMED),
        ({"scope": "all:refreshable:refreshable"}, MALFORMED),
        ({"scope": "ALL"}, MALFORMED),
        ({"scope": ""}, MALFORMED),
        ({"scope": 7}, MALFORMED),
        ({"scope": "all", "refreshable": "yes"}, MALFORMED),
        ({"scope": "all", "duration": {"d_us": -1}}, MALFORMED),
        ({"scope": "all", "duration": {"d_us": 2**53}}, MALFORMED),
        ({"scope": "all", "duration": "forever"}, MALFORMED),
        ({"scope": "all", "duration": {"d_us": "3600"}}, MALFORMED),
        ({"scope": "all", "duration": {"t_s": 5}}, MALFORMED),
        ({}, EC.GENERIC_PARAMETER_MISSING),
    ],
)
async def test_malformed_token_request(shop_client, body, code):
    response = await shop_client.post(
        "/instances/shop1/private/token", json=body, headers=basic("shop1", "pw1")
    )
    await expect_error(response, 400, code)


async def test_request_body_must_be_json(shop_client):
    response = await shop_client.post(
        "/instances/shop1/private/token",
        data=b"scope=all",
        headers=basic("shop1", "pw1"),
    )
    await expect_error(response, 400, EC.GENERIC_JSON_INVALID)


# -- lifetimes -----------------------------------------------------------------------


async def test_forever_never_expires(shop_client):
    body = await issue(
        shop_client,
        "shop1",
        {"scope": "all", "duration": {"d_us": "forever"}},
        basic("shop1", "pw1"),
    )
    assert body["expiration"] == {"t_s": "never"}
    listed = await shop_client.get(
        "/instances/shop1/private/tokens", headers=bearer(body["token"])
    )
    [info] = (await listed.json())["tokens"]
    assert info["expiration"] == {"t_s": "never"}


async def test_requested_duration_is_granted(shop_client):
    before = int(time.time())
    body = await issue(
        shop_client,
        "shop1",
        {"scope": "all", "duration": {"d_us": 7 * DAY_S * 1_000_000}},
        basic("shop1", "pw1"),
    )
    after = int(time.time())
    assert before + 7 * DAY_S <= body["expiration"]["t_s"] <= after + 7 * DAY_S + 1


@pytest.mark.parametrize(
    "duration", [{"d_us": "forever"}, {"d_us": 2 * DAY_S * 1_000_000}, None]
)
async def test_max_token_duration_shortens(make_client, duration):
    client = await make_client(max_token_duration=3_600_000_000)
    await create_instance(client, "admin", ADMIN_PASSWORD)
    request = {"scope": "all"}
    if duration is not None:
        request["duration"] = duration
    before = int(time.time())
    body = await issue(client, "admin", request, basic("admin", ADMIN_PASSWORD))
    after = int(time.time())
    assert before + 3600 <= body["expiration"]["t_s"] <= after + 3601


async def test_max_token_duration_keeps_shorter_requests(make_client):
    client = await make_client(max_token_duration=3_600_000_000)
    await create_instance(client, "admin", ADMIN_PASSWORD)
    before = int(time.time())
    body = await issue(
        client,
        "admin",
        {"scope": "all", "duration": {"d_us": 60_000_000}},
        basic("admin", ADMIN_PASSWORD),
    )
    after = int(time.time())
    assert before + 60 <= body["expiration"]["t_s"] <= after + 61


async def test_zero_duration_token_is_expired_at_once(shop_client):
    body = await issue(
        shop_client,
        "shop1",
        {"scope": "all", "duration": {"d_us": 0}},
        basic("shop1", "pw1"),
    )
    response = await shop_client.get(
        "/instances/shop1/private", headers=bearer(body["token"])
    )
    await expect_error(response, 401, UNAUTHORIZED)


async def test_token_expires_when_its_time_comes(shop_client, monkeypatch):
    body = await issue(
        shop_client,
        "shop1",
        {"scope": "all", "duration": {"d_us": 3_600_000_000}},
        basic("shop1", "pw1"),
    )
    path = "/instances/shop1/private"
    assert await status_with(shop_client, path, body["token"]) == 200
    expiration = body["expiration"]["t_s"]
    monkeypatch.setattr(
        merchant_authd.web.security,
        "time",
        SimpleNamespace(time=lambda: float(expiration - 1)),
    )
    assert await status_with(shop_client, path, body["token"]) == 200
    monkeypatch.setattr(
        merchant_authd.web.security,
        "time",
        SimpleNamespace(time=lambda: float(expiration)),
    )
    response = await shop_client.get(path, headers=bearer(body["token"]))
    await expect_error(response, 401, UNAUTHORIZED)


# -- refreshing ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("holder", "requested", "status"),
    [
        ("all:refreshable", "all:refreshable", 200),
        ("all:refreshable", "readonly", 200),
        ("all:refreshable", "order-full:refreshable", 200),
        ("spa", "all", 200),
        ("readonly:refreshable", "readonly", 200),
        ("readonly:refreshable", "readonly:refreshable", 200),
        ("order-pos:refreshable", "order-simple", 200),
        ("order-simple:refreshable", "order-pos", 403),
        ("order-full:refreshable", "readonly", 403),
        ("readonly:refreshable", "all", 403),
        ("readonly:refreshable", "order-simple", 403),
        ("all", "readonly", 403),
        ("readonly", "readonly", 403),
    ],
)
async def test_refresh_needs_refreshable_token_and_subset(
    shop_client, holder, requested, status
):
    token = await login(shop_client, "shop1", "pw1", scope=holder)
    response = await shop_client.post(
        "/instances/shop1/private/token",
        json={"scope": requested},
        headers=bearer(token),
    )
    if status == 200:
        assert response.status == 200, await response.text()
        fresh = (await response.json())["access_token"]
        assert fresh != token
        # The new token authenticates (logging out needs no permission).
        response = await shop_client.delete(
            "/instances/shop1/private/token", headers=bearer(fresh)
        )
        assert response.status == 204
    else:
        await expect_error(response, 403, EC.GENERIC_TOKEN_PERMISSION_INSUFFICIENT)


async def test_refreshed_token_keeps_working_with_the_old_one(shop_client):
    token = await login(shop_client, "shop1", "pw1", scope="all:refreshable")
    fresh = (await issue(shop_client, "shop1", {"scope": "readonly"}, bearer(token)))[
        "token"
    ]
    path = "/instances/shop1/private"
    assert await status_with(shop_client, path, token) == 200
    assert await status_with(shop_client, path, fresh) == 200


# -- storage -------------------------------------------------------------------------


async def test_database_holds_no_token_text(shop_client, settings):
    body = await issue(shop_client, "shop1", {"scope": "all"}, basic("shop1", "pw1"))
    text = body["token"][len("secret-token:") :]
    raw = merchant_authd.crypto.crockford_decode(text)
    assert raw is not None and len(raw) == 32
    database = Path(settings.database_path)
    files = [database, *database.parent.glob(database.name + "-*")]
    content = b"".join(path.read_bytes() for path in files if path.is_file())
    assert content  # the check below looks at something
    assert merchant_authd.crypto.digest_secret(raw) in content
    assert text.encode() not in content
    assert text.lower().encode() not in content
    assert raw not in content


# -- logging out ---------------------------------------------------------------------


async def test_logout_revokes_the_presented_token(shop_client):
    token = await login(shop_client, "shop1", "pw1")
    other = await login(shop_client, "shop1", "pw1")
    response = await shop_client.delete(
        "/instances/shop1/private/token", headers=bearer(token)
    )
    assert response.status == 204
    response = await shop_client.get("/instances/shop1/private", headers=bearer(token))
    await expect_error(response, 401, UNAUTHORIZED)
    response = await shop_client.delete(
        "/instances/shop1/private/token", headers=bearer(token)
    )
    await expect_error(response, 401, UNAUTHORIZED)
    assert await status_with(shop_client, "/instances/shop1/private", other) == 200


@pytest.mark.parametrize(
    "headers", [basic("shop1", "pw1"), bearer("secret-token:pw1")], ids=["basic", "pw"]
)
async def test_logout_with_password_is_a_no_op(shop_client, headers):
    token = await login(shop_client, "shop1", "pw1")
    response = await shop_client.delete(
        "/instances/shop1/private/token", headers=headers
    )
    assert response.status == 204
    assert await status_with(shop_client, "/instances/shop1/private", token) == 200


@pytest.mark.parametrize(
    "headers",
    [{}, basic("shop1", "wrong"), bearer("secret-token:wrong")],
    ids=["none", "basic", "pw"],
)
async def test_logout_needs_credentials(shop_client, headers):
    response = await shop_client.delete(
        "/instances/shop1/private/token", headers=headers
    )
    await expect_error(response, 401, UNAUTHORIZED)


# -- listing -------------------------------------------------------------------------


async def make_tokens(client: TestClient, count: int) -> list[int]:
    """Issue ``count`` shop1 tokens; their serials in issuing order."""
    serials = []
    for index in range(count):
        body = await issue(
            client,
            "shop1",
            {"scope": "readonly", "description": f"t{index}"},
            basic("shop1", "pw1"),
        )
        serials.append(body["serial"])
    return serials


async def listed(
    client: TestClient, token: str, query: str = ""
) -> tuple[int, list[int]]:
    response = await client.get(
        f"/instances/shop1/private/tokens{query}", headers=bearer(token)
    )
    if response.status == 204:
        assert await response.read() == b""
        return 204, []
    assert response.status == 200, await response.text()
    return 200, [info["serial"] for info in (await response.json())["tokens"]]


async def test_list_shows_token_info_and_never_the_secret(shop_client):
    body = await issue(
        shop_client,
        "shop1",
        {"scope": "order-pos:refreshable", "description": "till 3"},
        basic("shop1", "pw1"),
    )
    reader = await login(shop_client, "shop1", "pw1", scope="readonly")
    response = await shop_client.get(
        "/instances/shop1/private/tokens", headers=bearer(reader)
    )
    assert response.status == 200
    text = await response.text()
    assert body["token"][len("secret-token:") :] not in text
    assert reader[len("secret-token:") :] not in text
    tokens = (await response.json())["tokens"]
    info = next(t for t in tokens if t["serial"] == body["serial"])
    assert info == {
        "creation_time": info["creation_time"],
        "expiration": body["expiration"],
        "scope": "order-pos",
        "refreshable": True,
        "description": "till 3",
        "serial": body["serial"],
    }
    assert isinstance(info["creation_time"]["t_s"], int)
    reader_info = next(t for t in tokens if t["serial"] != body["serial"])
    assert "description" not in reader_info


async def test_list_pages_in_both_directions(shop_client):
    serials = await make_tokens(shop_client, 6)
    reader = await login(shop_client, "shop1", "pw1", scope="readonly")
    assert serials == sorted(serials)
    # Default: limit -20, newest first; the reader's own token is the newest.
    status, found = await listed(shop_client, reader)
    assert status == 200
    assert found[1:] == serials[::-1]
    assert found[0] > serials[-1]
    # Ascending after an offset (exclusive), at most `limit`.
    assert await listed(shop_client, reader, "?limit=2") == (200, serials[:2])
    assert await listed(shop_client, reader, f"?limit=2&offset={serials[1]}") == (
        200,
        serials[2:4],
    )
    assert await listed(shop_client, reader, f"?limit=3&offset={serials[3]}") == (
        200,
        [serials[4], serials[5], found[0]],
    )
    # Descending before an offset (exclusive).
    assert await listed(shop_client, reader, f"?limit=-2&offset={serials[4]}") == (
        200,
        [serials[3], serials[2]],
    )
    assert await listed(shop_client, reader, f"?limit=-10&offset={serials[2]}") == (
        200,
        [serials[1], serials[0]],
    )
    assert await listed(shop_client, reader, "?limit=-1") == (200, [found[0]])
    # Walking the whole list page by page visits every token once.
    walked, offset = [], 0
    for _ in range(10):
        status, page = await listed(shop_client, reader, f"?limit=3&offset={offset}")
        if status == 204:
            break
        walked.extend(page)
        offset = page[-1]
    assert walked == sorted(found)
    # Past either end: 204.
    assert await listed(shop_client, reader, f"?limit=5&offset={found[0]}") == (204, [])
    assert await listed(shop_client, reader, f"?limit=-5&offset={serials[0]}") == (
        204,
        [],
    )
    assert await listed(shop_client, reader, "?limit=-5&offset=0") == (204, [])


async def test_list_is_empty_without_live_tokens(shop_client):
    status, found = await listed(shop_client, "secret-token:pw1")
    assert (status, found) == (204, [])


async def test_list_omits_expired_and_other_instances_tokens(shop_client):
    reader = await login(shop_client, "shop1", "pw1", scope="readonly")
    await issue(
        shop_client,
        "shop1",
        {"scope": "all", "duration": {"d_us": 0}},
        basic("shop1", "pw1"),
    )
    await login(shop_client, "shop2", "pw2")
    status, found = await listed(shop_client, reader)
    assert (status, len(found)) == (200, 1)


@pytest.mark.parametrize(
    "query",
    [
        "?limit=0",
        "?limit=abc",
        "?limit=",
        "?limit=1.5",
        "?limit=1_0",
        "?limit=%2B5",
        "?limit=%205",
        "?limit=%D9%A5",
        "?limit=99999999999999999999",
        "?offset=-1",
        "?offset=x",
        "?offset=",
        "?limit=5&offset=1e3",
    ],
)
async def test_list_rejects_bad_paging(shop_client, query):
    reader = await login(shop_client, "shop1", "pw1", scope="readonly")
    response = await shop_client.get(
        f"/instances/shop1/private/tokens{query}", headers=bearer(reader)
    )
    await expect_error(response, 400, MALFORMED)


# -- revoking by serial --------------------------------------------------------------


async def test_revoke_by_serial(shop_client):
    admin = await login(shop_client, "shop1", "pw1")
    victim = await issue(shop_client, "shop1", {"scope": "all"}, basic("shop1", "pw1"))
    path = f"/instances/shop1/private/tokens/{victim['serial']}"
    response = await shop_client.delete(path, headers=bearer(admin))
    assert response.status == 204
    response = await shop_client.get(
        "/instances/shop1/private", headers=bearer(victim["token"])
    )
    await expect_error(response, 401, UNAUTHORIZED)
    response = await shop_client.delete(path, headers=bearer(admin))
    await expect_error(response, 404, EC.MERCHANT_GENERIC_ACCESS_TOKEN_UNKNOWN)


async def test_revoke_by_serial_of_another_instance_is_404(shop_client):
    shop1 = await login(shop_client, "shop1", "pw1")
    other = await issue(shop_client, "shop2", {"scope": "all"}, basic("shop2", "pw2"))
    response = await shop_client.delete(
        f"/instances/shop1/private/tokens/{other['serial']}", headers=bearer(shop1)
    )
    await expect_error(response, 404, EC.MERCHANT_GENERIC_ACCESS_TOKEN_UNKNOWN)
    assert (
        await status_with(shop_client, "/instances/shop2/private", other["token"])
        == 200
    )
    admin = await login(shop_client, "admin", ADMIN_PASSWORD)
    response = await shop_client.delete(
        f"/private/tokens/{other['serial']}", headers=bearer(admin)
    )
    await expect_error(response, 404, EC.MERCHANT_GENERIC_ACCESS_TOKEN_UNKNOWN)


@pytest.mark.parametrize(
    "serial", ["abc", "-1", "1.0", "%2B1", "%D9%A1", "99999999999999999999"]
)
async def test_revoke_by_malformed_serial(shop_client, serial):
    token = await login(shop_client, "shop1", "pw1")
    response = await shop_client.delete(
        f"/instances/shop1/private/tokens/{serial}", headers=bearer(token)
    )
    await expect_error(response, 400, MALFORMED)


async def test_revoke_unknown_serial(shop_client):
    token = await login(shop_client, "shop1", "pw1")
    for serial in ("0", "123456789"):
        response = await shop_client.delete(
            f"/instances/shop1/private/tokens/{serial}", headers=bearer(token)
        )
        await expect_error(response, 404, EC.MERCHANT_GENERIC_ACCESS_TOKEN_UNKNOWN)


# -- whose token opens what ----------------------------------------------------------


async def test_token_of_one_instance_does_not_open_another(shop_client):
    shop1 = await login(shop_client, "shop1", "pw1")
    for path in ("/instances/shop2/private", "/private", "/management/instances"):
        response = await shop_client.get(path, headers=bearer(shop1))
        await expect_error(response, 401, UNAUTHORIZED)


async def test_admin_token_does_not_open_another_instance(shop_client):
    admin = await login(shop_client, "admin", ADMIN_PASSWORD)
    assert await status_with(shop_client, "/management/instances/shop1", admin) == 200
    response = await shop_client.get("/instances/shop1/private", headers=bearer(admin))
    await expect_error(response, 401, UNAUTHORIZED)


# -- password changes and deletion ---------------------------------------------------


@pytest.mark.parametrize("route", ["private", "management"])
async def test_password_change_revokes_earlier_tokens(shop_client, route):
    tokens = [
        await login(shop_client, "shop1", "pw1", scope=scope)
        for scope in ("all", "readonly", "all:refreshable")
    ]
    bystander = await login(shop_client, "shop2", "pw2")
    if route == "private":
        path, changer = "/instances/shop1/private/auth", tokens[0]
    else:
        path = "/management/instances/shop1/auth"
        changer = await login(shop_client, "admin", ADMIN_PASSWORD)
    response = await shop_client.post(
        path, json={"method": "token", "password": "new-pw"}, headers=bearer(changer)
    )
    assert response.status == 204, await response.text()
    for token in tokens:
        response = await shop_client.get(
            "/instances/shop1/private", headers=bearer(token)
        )
        await expect_error(response, 401, UNAUTHORIZED)
    assert await status_with(shop_client, "/instances/shop2/private", bystander) == 200
    fresh = await login(shop_client, "shop1", "new-pw")
    assert await status_with(shop_client, "/instances/shop1/private", fresh) == 200
    response = await shop_client.post(
        "/instances/shop1/private/token",
        json={"scope": "all"},
        headers=basic("shop1", "pw1"),
    )
    await expect_error(response, 401, UNAUTHORIZED)


async def test_legacy_token_method_revokes_tokens_too(shop_client):
    token = await login(shop_client, "shop1", "pw1")
    response = await shop_client.post(
        "/instances/shop1/private/auth",
        json={"method": "token", "token": "secret-token:legacy-pw"},
        headers=bearer(token),
    )
    assert response.status == 204
    response = await shop_client.get("/instances/shop1/private", headers=bearer(token))
    await expect_error(response, 401, UNAUTHORIZED)
    await login(shop_client, "shop1", "legacy-pw")


async def test_deleting_an_instance_deletes_its_tokens(shop_client, settings):
    token = await login(shop_client, "shop1", "pw1")
    await login(shop_client, "shop1", "pw1", scope="readonly")
    admin = await login(shop_client, "admin", ADMIN_PASSWORD)
    response = await shop_client.delete(
        "/management/instances/shop1", headers=bearer(admin)
    )
    assert response.status == 204
    response = await shop_client.get("/instances/shop1/private", headers=bearer(token))
    await expect_error(response, 404, EC.MERCHANT_GENERIC_INSTANCE_UNKNOWN)
    with sqlite3.connect(settings.database_path) as db:
        rows = db.execute(
            "SELECT count(*) FROM access_tokens t JOIN instances i"
            " ON i.serial = t.instance_serial WHERE i.id = ?",
            ("shop1",),
        ).fetchone()
    assert rows == (0,)
    # Purged and created again under the same id, the old token opens nothing.
    response = await shop_client.delete(
        "/management/instances/shop1?purge=YES", headers=bearer(admin)
    )
    assert response.status == 204
    await create_instance(shop_client, "shop1", "pw1")
    response = await shop_client.get("/instances/shop1/private", headers=bearer(token))
    await expect_error(response, 401, UNAUTHORIZED)


# -- cost of the token check ---------------------------------------------------------


async def test_token_checks_cost_no_bcrypt(shop_client, monkeypatch):
    calls = []
    original = merchant_authd.crypto._check_password_sync

    def counting(password: str, stored: str) -> bool:
        calls.append(1)
        return original(password, stored)

    monkeypatch.setattr(merchant_authd.crypto, "_check_password_sync", counting)
    good = await login(shop_client, "shop1", "pw1")
    assert len(calls) == 1  # the login itself: the counter counts
    calls.clear()
    expired = (
        await issue(
            shop_client,
            "shop1",
            {"scope": "all", "duration": {"d_us": 0}},
            basic("shop1", "pw1"),
        )
    )["token"]
    revoked = await login(shop_client, "shop1", "pw1")
    shop2 = await login(shop_client, "shop2", "pw2")
    response = await shop_client.delete(
        "/instances/shop1/private/token", headers=bearer(revoked)
    )
    assert response.status == 204
    calls.clear()
    path = "/instances/shop1/private"
    for _ in range(3):
        assert await status_with(shop_client, path, good) == 200
    never_issued = "secret-token:" + merchant_authd.crypto.crockford_encode(bytes(32))
    for token in (expired, revoked, shop2, never_issued):
        assert await status_with(shop_client, path, token) == 401
    assert calls == []


async def test_revocation_applies_to_the_very_next_request(shop_client):
    token = await login(shop_client, "shop1", "pw1")
    path = "/instances/shop1/private"
    for _ in range(5):
        fresh = await issue(
            shop_client, "shop1", {"scope": "all"}, basic("shop1", "pw1")
        )
        assert await status_with(shop_client, path, fresh["token"]) == 200
        response = await shop_client.delete(
            f"/instances/shop1/private/tokens/{fresh['serial']}", headers=bearer(token)
        )
        assert response.status == 204
        assert await status_with(shop_client, path, fresh["token"]) == 401
