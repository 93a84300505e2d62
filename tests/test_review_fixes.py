"""Fixes from the security review, each pinned by the request that exposed it.

Grouped by the reviewer's item numbers: which channels a protected operation needs
(2), challenge paths of unknown instances (3), changing addresses as a protected
operation (4), first-run creation of the admin instance (5), the ``/instances/default``
redirect (6), TAN transmission limits (7), forgot-password and ``external`` (10),
challenge ids in the access log (11), refresh lifetimes (12), control characters
in addresses (14), bodies that cannot be read (15) and integer parameters (18).
"""

from __future__ import annotations

import gzip
import logging
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from conftest import (
    ADMIN_PASSWORD,
    assert_error,
    basic,
    bearer,
    create_instance,
    instance_body,
    login,
)
from tan_support import (
    EMAIL,
    PHONE,
    helpers,
    mark_validated,
    messages,
    request_tan,
    solve,
    use_tan_file,
)
from yarl import URL

from merchant_authd import mfa
from merchant_authd.config import Settings
from merchant_authd.errors import EC
from merchant_authd.tan import DeliveryFailed, TanSender
from merchant_authd.web.app import create_app
from merchant_authd.web.keys import CONTEXT
from merchant_authd.web.protocol import TalerAppRunner, server_options

LOGIN = {"scope": "all:refreshable"}
NEW_AUTH = {"method": "token", "password": "new-pw"}


@pytest.fixture
def tan_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return use_tan_file(tmp_path, monkeypatch)


async def _shop(make_client: Any, *validated: str, **overrides: Any) -> TestClient:
    """``admin`` and ``shop`` (e-mail and phone, ``validated`` ones validated),
    served by a client with ``overrides``; created without them, since with
    mandatory channels the admin (who has no address) could not log in."""
    setup: TestClient = await make_client(**helpers())
    await create_instance(setup, "admin", ADMIN_PASSWORD)
    await create_instance(setup, "shop", "pw", email=EMAIL, phone_number=PHONE)
    await mark_validated(setup, "shop", *validated)
    if not overrides:
        return setup
    client: TestClient = await make_client(**helpers(**overrides))
    return client


async def _login(client: TestClient, headers: dict[str, str] | None = None) -> Any:
    return await client.post(
        "/instances/shop/private/token",
        json=LOGIN,
        headers={**basic("shop", "pw"), **(headers or {})},
    )


async def _accepted(response: Any) -> dict[str, Any]:
    assert response.status == 202, await response.text()
    body: dict[str, Any] = await response.json()
    return body


async def _token(client: TestClient, tan_file: Path) -> str:
    """A refreshable ``all`` token of ``shop``, second factor included if needed."""
    response = await _login(client)
    if response.status == 202:
        answer = await response.json()
        for challenge in answer["challenges"]:
            await solve(client, "shop", challenge, tan_file)
        ids = ",".join(c["challenge_id"] for c in answer["challenges"])
        response = await _login(client, {mfa.HEADER: ids})
    assert response.status == 200, await response.text()
    token: str = (await response.json())["access_token"]
    return token


def _expiration(issued: dict[str, Any]) -> Any:
    return issued["expiration"]["t_s"]


async def _detail(client: TestClient, token: str) -> dict[str, Any]:
    response = await client.get("/instances/shop/private", headers=bearer(token))
    assert response.status == 200, await response.text()
    body: dict[str, Any] = await response.json()
    return body


# -- 2: mandatory channels alone ------------------------------------------------------


async def test_mandatory_channels_replace_the_validated_ones(make_client, tan_file):
    # The validated phone has no helper; the mandatory e-mail channel works.
    client = await _shop(
        make_client, "email", "sms", mandatory_tan_channels=("email",), helper_sms=None
    )
    answer = await _accepted(await _login(client))
    assert answer["combi_and"] is True
    assert [c["tan_channel"] for c in answer["challenges"]] == ["email"]


async def test_a_validated_channel_outside_the_mandatory_ones_is_not_asked(
    make_client, tan_file
):
    client = await _shop(make_client, "sms", mandatory_tan_channels=("email",))
    answer = await _accepted(await _login(client))
    [challenge] = answer["challenges"]
    assert challenge["tan_channel"] == "email"
    await solve(client, "shop", challenge, tan_file)
    response = await _login(client, {mfa.HEADER: challenge["challenge_id"]})
    assert response.status == 200, await response.text()


# -- 3: challenge paths of unknown instances ------------------------------------------


@pytest.mark.parametrize("suffix", ["", "/confirm"])
async def test_challenge_of_an_unknown_instance_is_404_2000(
    make_client, tan_file, suffix
):
    client = await _shop(make_client, "email")
    body = {"tan": "12345678"} if suffix else {}
    path = f"/instances/nobody/challenge/{'7' * 52}{suffix}"
    await assert_error(
        await client.post(path, json=body), 404, EC.MERCHANT_GENERIC_INSTANCE_UNKNOWN
    )
    # An instance that exists, a challenge that does not: as before.
    known = await client.post(
        f"/instances/shop/challenge/{'7' * 52}{suffix}", json=body
    )
    await assert_error(known, 404, EC.MERCHANT_TAN_CHALLENGE_UNKNOWN)


async def test_signup_challenges_work_before_their_instance_exists(
    make_client, tan_file
):
    client = await make_client(**helpers(self_provisioning=True))
    answer = await _accepted(
        await client.post("/instances", json=instance_body("newshop", email=EMAIL))
    )
    [challenge] = answer["challenges"]
    await request_tan(client, "newshop", challenge["challenge_id"])
    wrong = await client.post(
        f"/instances/newshop/challenge/{challenge['challenge_id']}/confirm",
        json={"tan": "not-it"},
    )
    await assert_error(wrong, 409, EC.MERCHANT_TAN_CHALLENGE_FAILED)
    other = await client.post(f"/instances/newshop/challenge/{'7' * 52}", json={})
    await assert_error(other, 404, EC.MERCHANT_GENERIC_INSTANCE_UNKNOWN)


# -- 4: changing addresses is a protected operation -----------------------------------


@pytest.mark.parametrize(
    "change",
    [{"email": ""}, {"email": "thief@evil.example"}, {"phone_number": "+41790009999"}],
    ids=["remove-email", "new-email", "new-phone"],
)
async def test_patching_an_address_needs_the_second_factor(
    make_client, tan_file, change
):
    client = await _shop(make_client, "email")
    token = await _token(client, tan_file)
    response = await client.patch(
        "/instances/shop/private", json=change, headers=bearer(token)
    )
    answer = await _accepted(response)
    assert [c["tan_channel"] for c in answer["challenges"]] == ["email"]
    detail = await _detail(client, token)
    assert detail["email"] == EMAIL and detail["email_validated"] is True
    # Without the factor the validated address still protects the password.
    change_auth = await client.post(
        "/instances/shop/private/auth", json=NEW_AUTH, headers=bearer(token)
    )
    await _accepted(change_auth)


async def test_patching_an_address_after_the_second_factor(make_client, tan_file):
    client = await _shop(make_client, "email")
    token = await _token(client, tan_file)
    change = {"email": "new@shop.example", "name": "Renamed"}
    answer = await _accepted(
        await client.patch(
            "/instances/shop/private", json=change, headers=bearer(token)
        )
    )
    [challenge] = answer["challenges"]
    await solve(client, "shop", challenge, tan_file)
    ids = {mfa.HEADER: challenge["challenge_id"]}
    # Bound to the body: another change is not covered.
    other = await client.patch(
        "/instances/shop/private",
        json={"email": "other@shop.example"},
        headers={**bearer(token), **ids},
    )
    await _accepted(other)
    done = await client.patch(
        "/instances/shop/private", json=change, headers={**bearer(token), **ids}
    )
    assert done.status == 204, await done.text()
    detail = await _detail(client, token)
    assert detail["email"] == "new@shop.example"
    assert detail["email_validated"] is False
    assert detail["name"] == "Renamed"
    # The solved challenge was consumed with the change: it authorises no other.
    replay = await client.patch(
        "/instances/shop/private",
        json={"email": "owner@shop.example", "name": "Renamed"},
        headers={**bearer(token), **ids},
    )
    assert replay.status == 204  # the new address is unvalidated: no factor left
    stored = await client.app[CONTEXT].store.get_challenges(
        [mfa._id_digest(challenge["challenge_id"]) or b""]
    )
    assert stored[0].consumed


async def test_patch_without_address_change_needs_no_second_factor(
    make_client, tan_file
):
    client = await _shop(make_client, "email", "sms")
    token = await _token(client, tan_file)
    for change in ({"name": "Renamed"}, {"email": EMAIL, "phone_number": PHONE}):
        response = await client.patch(
            "/instances/shop/private", json=change, headers=bearer(token)
        )
        assert response.status == 204, await response.text()
    detail = await _detail(client, token)
    assert detail["email_validated"] is True and detail["phone_validated"] is True


async def test_patching_addresses_through_management_is_exempt(make_client, tan_file):
    client = await _shop(make_client, "email")
    admin = await login(client, "admin", ADMIN_PASSWORD)
    response = await client.patch(
        "/management/instances/shop", json={"email": ""}, headers=bearer(admin)
    )
    assert response.status == 204, await response.text()


async def test_patching_addresses_without_a_usable_channel_is_403(
    make_client, tan_file
):
    client = await _shop(make_client, "email")
    token = await _token(client, tan_file)
    other = await make_client(**helpers(helper_email=None))
    response = await other.patch(
        "/instances/shop/private", json={"email": ""}, headers=bearer(token)
    )
    await assert_error(response, 403, EC.MERCHANT_GENERIC_MFA_MISSING)


# -- 5: first run only from a direct loopback TCP client ------------------------------


@pytest.mark.parametrize(
    "header",
    [{"Forwarded": "for=192.0.2.7"}, {"X-Forwarded-For": "192.0.2.7"}],
    ids=["Forwarded", "X-Forwarded-For"],
)
async def test_first_run_is_refused_through_a_proxy(client, header):
    response = await client.post(
        "/management/instances",
        json=instance_body("admin", ADMIN_PASSWORD),
        headers=header,
    )
    await assert_error(response, 401, EC.MERCHANT_GENERIC_UNAUTHORIZED)
    plain = await client.post(
        "/management/instances", json=instance_body("admin", ADMIN_PASSWORD)
    )
    assert plain.status == 204, await plain.text()


async def test_first_run_is_refused_over_a_unix_socket(
    settings: Settings, tmp_path: Path
):
    socket_path = tmp_path / "authd.sock"
    runner = TalerAppRunner(create_app(settings), **server_options())
    await runner.setup()
    try:
        await web.UnixSite(runner, str(socket_path)).start()
        connector = aiohttp.UnixConnector(path=str(socket_path))
        async with aiohttp.ClientSession(connector=connector) as session:
            async with session.post(
                "http://localhost/management/instances",
                json=instance_body("admin", ADMIN_PASSWORD),
            ) as response:
                await assert_error(response, 401, EC.MERCHANT_GENERIC_UNAUTHORIZED)
    finally:
        await runner.cleanup()


# -- 6: the /instances/default redirect stays on this host ----------------------------


@pytest.mark.parametrize(
    ("target", "location"),
    [
        ("/instances/default//evil.example/x", "/evil.example/x"),
        ("/instances/default///evil.example", "/evil.example"),
        ("/instances/default/%2F%2Fevil.example", "/evil.example"),
        ("/instances/default/\\evil.example", "/evil.example"),
        ("/instances/%64efault/%FF", "/%FF"),
        ("/instances/%64efault/private/tokens?limit=5", "/private/tokens?limit=5"),
        ("/instances/default/a%20b?x=%0D%0A", "/a%20b?x=%0D%0A"),
    ],
)
async def test_default_redirect_location_is_a_local_path(
    client: TestClient, target: str, location: str
):
    url = URL(str(client.make_url("")).rstrip("/") + target, encoded=True)
    response = await client.session.post(url, allow_redirects=False)
    assert response.status == 308, await response.text()
    assert response.headers["Location"] == location


# -- 7: TAN transmissions are limited --------------------------------------------------


async def test_tans_per_challenge_are_limited(make_client, tan_file):
    client = await _shop(make_client, "email", tan_retransmission=0)
    answer = await _accepted(await _login(client))
    url = f"/instances/shop/challenge/{answer['challenges'][0]['challenge_id']}"
    for _ in range(5):
        sent = await client.post(url, json={})
        assert sent.status == 200, await sent.text()
    refused = await client.post(url, json={})
    await assert_error(refused, 429, EC.MERCHANT_TAN_TOO_EARLY)
    assert int(refused.headers["Retry-After"]) > 0
    assert len(messages(tan_file, EMAIL)) == 5


async def test_tans_per_client_address_are_limited(make_client, tan_file):
    client = await _shop(make_client, "email", tan_max_active=100)
    client.app[CONTEXT].sends_per_address.limit = 3
    urls = []
    for _ in range(4):
        answer = await _accepted(await _login(client))
        urls.append(
            f"/instances/shop/challenge/{answer['challenges'][0]['challenge_id']}"
        )
    for url in urls[:3]:
        sent = await client.post(url, json={})
        assert sent.status == 200, await sent.text()
    refused = await client.post(urls[3], json={})
    await assert_error(refused, 429, EC.MERCHANT_TAN_TOO_EARLY)
    assert int(refused.headers["Retry-After"]) > 0


# -- 10: forgot-password cannot switch authentication off ------------------------------


async def test_forgot_password_refuses_the_external_method(make_client, tan_file):
    client = await _shop(make_client, "email")
    response = await client.post(
        "/instances/shop/forgot-password", json={"method": "external"}
    )
    await assert_error(response, 400, EC.MERCHANT_PRIVATE_POST_INSTANCE_AUTH_BAD_AUTH)
    assert not tan_file.exists()


# -- 11: challenge ids never reach the access log --------------------------------------


@pytest.mark.parametrize(
    ("method", "template", "status"),
    [
        ("OPTIONS", "/instances/shop/challenge/{}", 204),
        ("OPTIONS", "/challenge/{}/confirm", 204),
        ("GET", "/instances/shop/challenge/{}", 405),
        ("DELETE", "/challenge/{}/confirm", 405),
        ("POST", "/challenge/{}/confirm/more", 404),
    ],
)
async def test_challenge_ids_are_masked_whatever_the_route(
    client: TestClient, caplog, method, template, status
):
    challenge_id = "Q" * 52
    with caplog.at_level(logging.INFO, logger="merchant_authd.access"):
        response = await client.request(method, template.format(challenge_id))
    assert response.status == status
    [line] = [
        r.getMessage() for r in caplog.records if r.name == "merchant_authd.access"
    ]
    assert line.startswith(f"{method} {template.format('{challenge_id}')} {status} ")
    assert challenge_id not in caplog.text


# -- 12: a refresh does not outlive its parent -----------------------------------------


@pytest.mark.parametrize(
    ("requested", "lifetime"),
    [({"d_us": "forever"}, 3600), (None, 3600), ({"d_us": 60_000_000}, 60)],
    ids=["forever", "default", "shorter"],
)
async def test_refresh_is_capped_to_the_parent_lifetime(
    admin_client: TestClient, requested, lifetime
):
    parent = await login(
        admin_client,
        "admin",
        ADMIN_PASSWORD,
        "all:refreshable",
        duration={"d_us": 3_600_000_000},
    )
    body: dict[str, Any] = {"scope": "readonly", "description": "child"}
    if requested is not None:
        body["duration"] = requested
    response = await admin_client.post(
        "/private/token", json=body, headers=bearer(parent)
    )
    assert response.status == 200, await response.text()
    assert _expiration(await response.json()) != "never"
    listed = await admin_client.get("/private/tokens", headers=bearer(parent))
    [child] = [t for t in (await listed.json())["tokens"] if "description" in t]
    assert child["expiration"]["t_s"] - child["creation_time"]["t_s"] == lifetime


async def test_refresh_with_an_eternal_parent_is_not_capped(admin_client: TestClient):
    parent = await login(
        admin_client,
        "admin",
        ADMIN_PASSWORD,
        "all:refreshable",
        duration={"d_us": "forever"},
    )
    response = await admin_client.post(
        "/private/token",
        json={"scope": "readonly", "duration": {"d_us": "forever"}},
        headers=bearer(parent),
    )
    assert response.status == 200, await response.text()
    assert _expiration(await response.json()) == "never"


# -- 14: control characters in addresses -----------------------------------------------


@pytest.mark.parametrize(
    "email",
    ["own\x00er@shop.example", "owner@shop.exa\x00mple", "-oQ@shop.example",
     "own\ter@shop.example", "owner@shop.exam\x7fple", "own\x85er@shop.example"],
    ids=["nul-local", "nul-domain", "dash", "tab", "del", "c1"],
)  # fmt: skip
async def test_addresses_with_control_characters_are_refused(
    admin_client: TestClient, email
):
    admin = await login(admin_client, "admin", ADMIN_PASSWORD)
    created = await admin_client.post(
        "/management/instances",
        json=instance_body("shop", email=email),
        headers=bearer(admin),
    )
    await assert_error(created, 400, EC.GENERIC_PARAMETER_MALFORMED)
    patched = await admin_client.patch(
        "/management/instances/admin", json={"email": email}, headers=bearer(admin)
    )
    await assert_error(patched, 400, EC.GENERIC_PARAMETER_MALFORMED)


async def test_an_address_the_system_cannot_pass_is_a_failed_delivery(tmp_path):
    helper = tmp_path / "h.sh"
    helper.write_text("#!/bin/sh\ncat > /dev/null\n")
    helper.chmod(0o755)
    with pytest.raises(DeliveryFailed):
        await TanSender(1, 10).send(helper, "own\x00er@shop.example", "message")


# -- 15: bodies that cannot be read close the connection -------------------------------

_CORRUPT_GZIP = (
    gzip.compress(b'{"scope": "all"}' + b" " * 1000)[:10] + bytes(range(256)) * 64
)


@pytest.mark.parametrize(
    ("headers", "status", "code"),
    [
        (basic("admin", ADMIN_PASSWORD), 400, EC.GENERIC_COMPRESSION_INVALID),
        ({}, 401, EC.MERCHANT_GENERIC_UNAUTHORIZED),  # the body is never read
    ],
    ids=["read", "unread"],
)
async def test_corrupt_gzip_body_closes_the_connection_quietly(
    admin_client: TestClient, caplog, headers, status, code
):
    caplog.set_level(logging.DEBUG)
    response = await admin_client.post(
        "/private/token",
        data=_CORRUPT_GZIP,
        headers={
            **headers,
            "Content-Type": "application/json",
            "Content-Encoding": "gzip",
        },
    )
    await assert_error(response, status, code)
    if status == 400:
        assert response.headers["Connection"] == "close"
    await admin_client.close()
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, [r.getMessage() for r in errors]


# -- 18: one parser for integer parameters ---------------------------------------------

_NOT_INTEGERS = ["+5", " 5", "5 ", "1_0", "\u0665", "0x10", "5.0", "1" * 20, "-"]


@pytest.mark.parametrize("raw", _NOT_INTEGERS)
async def test_integer_parameters_are_plain_ascii_decimals(make_client, raw):
    client = await make_client(self_provisioning=True)
    await create_instance(client, "admin", ADMIN_PASSWORD)
    headers = bearer(await login(client, "admin", ADMIN_PASSWORD))
    value = quote(raw, safe="")
    answers = {
        "limit": await client.get(f"/private/tokens?limit={value}", headers=headers),
        "offset": await client.get(f"/private/tokens?offset={value}", headers=headers),
        "token_validity_ms": await client.post(
            f"/instances?token_validity_ms={value}", json={}
        ),
        "serial": await client.delete(f"/private/tokens/{value}", headers=headers),
    }
    for name, response in answers.items():
        body = await assert_error(response, 400, EC.GENERIC_PARAMETER_MALFORMED)
        assert body["parameter"] == name
