"""Self-provisioning: public sign-up at ``POST /instances`` (spec 8.3).

The e-mail address and phone number of a new instance are proven by challenges
before the instance exists; a ``token_validity_ms`` query asks for a refreshable
login token in the answer.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from conftest import assert_error, bearer, instance_body
from tan_support import EMAIL, PHONE, helpers, solve_all, use_tan_file

from merchant_authd import mfa
from merchant_authd.errors import EC
from merchant_authd.web.keys import CONTEXT


@pytest.fixture
def tan_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return use_tan_file(tmp_path, monkeypatch)


async def _open(make_client: Any, **overrides: Any) -> TestClient:
    client: TestClient = await make_client(
        **helpers(self_provisioning=True, **overrides)
    )
    return client


def _body(instance_id: str = "newshop", **extra: Any) -> dict[str, Any]:
    return instance_body(instance_id, "signup-pw", **{"email": EMAIL, **extra})


async def _signup(
    client: TestClient, body: dict[str, Any], query: str = "", ids: str | None = None
) -> Any:
    headers = {mfa.HEADER: ids} if ids is not None else {}
    return await client.post(f"/instances{query}", json=body, headers=headers)


async def _instance(client: TestClient, instance_id: str) -> Any:
    return await client.app[CONTEXT].store.get_instance(instance_id)


async def test_signup_disabled(make_client, tan_file):
    client = await make_client(**helpers())
    await assert_error(
        await _signup(client, _body()), 403, EC.MERCHANT_GENERIC_UNAUTHORIZED
    )
    config = await (await client.get("/config")).json()
    assert config["have_self_provisioning"] is False


async def test_signup_validates_the_email_first(make_client, tan_file):
    client = await _open(make_client)
    assert (await (await client.get("/config")).json())["have_self_provisioning"]
    first = await _signup(client, _body())
    assert first.status == 202, await first.text()
    answer = await first.json()
    assert answer["combi_and"] is True
    assert [c["tan_channel"] for c in answer["challenges"]] == ["email"]
    assert await _instance(client, "newshop") is None
    ids = await solve_all(client, "newshop", answer, tan_file)
    done = await _signup(client, _body(), ids=ids)
    assert done.status == 204, await done.text()
    created = await _instance(client, "newshop")
    assert created is not None
    assert created.email == EMAIL and created.email_validated
    # The validated address now protects the instance's logins.
    login = await client.post(
        "/instances/newshop/private/token",
        json={"scope": "all"},
        headers=bearer("secret-token:signup-pw"),
    )
    assert login.status == 202
    # The same challenges do not create a second instance.
    again = await _signup(client, _body(), ids=ids)
    await assert_error(again, 409, EC.MERCHANT_PRIVATE_POST_INSTANCES_ALREADY_EXISTS)


async def test_signup_with_email_and_phone_needs_both(make_client, tan_file):
    client = await _open(make_client)
    body = _body(phone_number=PHONE)
    answer = await (await _signup(client, body)).json()
    assert answer["combi_and"] is True
    assert sorted(c["tan_channel"] for c in answer["challenges"]) == ["email", "sms"]
    email = next(c for c in answer["challenges"] if c["tan_channel"] == "email")
    await solve_all(client, "newshop", {"challenges": [email]}, tan_file)
    half = await _signup(client, body, ids=email["challenge_id"])
    assert half.status == 202
    assert await _instance(client, "newshop") is None
    sms = next(c for c in answer["challenges"] if c["tan_channel"] == "sms")
    await solve_all(client, "newshop", {"challenges": [sms]}, tan_file)
    ids = ",".join(c["challenge_id"] for c in answer["challenges"])
    assert (await _signup(client, body, ids=ids)).status == 204
    created = await _instance(client, "newshop")
    assert created.email_validated and created.phone_validated


async def test_signup_with_token(make_client, tan_file):
    client = await _open(make_client)
    query = "?token_validity_ms=3600000"
    answer = await (await _signup(client, _body(), query)).json()
    ids = await solve_all(client, "newshop", answer, tan_file)
    # The query is part of what the challenge covers.
    assert (await _signup(client, _body(), ids=ids)).status == 202
    before = int(time.time())
    response = await _signup(client, _body(), query, ids=ids)
    assert response.status == 200, await response.text()
    token = await response.json()
    assert token["refreshable"] is True
    assert token["access_token"].startswith("secret-token:")
    assert token["token"] == token["access_token"]
    assert before + 3600 <= token["expiration"]["t_s"] <= int(time.time()) + 3601
    detail = await client.get(
        "/instances/newshop/private", headers=bearer(token["access_token"])
    )
    assert detail.status == 200
    assert (await detail.json())["email_validated"] is True


async def test_signup_body_must_match_the_challenge(make_client, tan_file):
    client = await _open(make_client)
    answer = await (await _signup(client, _body())).json()
    ids = await solve_all(client, "newshop", answer, tan_file)
    other = _body(name="Another name")
    assert (await _signup(client, other, ids=ids)).status == 202
    assert await _instance(client, "newshop") is None


@pytest.mark.parametrize(
    ("body", "query", "status", "code"),
    [
        (instance_body("newshop"), "", 400, EC.GENERIC_PARAMETER_MISSING),
        (_body("admin"), "", 400, EC.GENERIC_PARAMETER_MALFORMED),
        (_body("Admin"), "", 400, EC.GENERIC_PARAMETER_MALFORMED),
        (_body("x"), "", 400, EC.GENERIC_PARAMETER_MALFORMED),
        (_body(email="not-an-address"), "", 400, EC.GENERIC_PARAMETER_MALFORMED),
        (_body(phone_number="0790000000"), "", 400, EC.GENERIC_PARAMETER_MALFORMED),
        (
            {**_body(), "auth": {"method": "external"}},
            "",
            400,
            EC.MERCHANT_PRIVATE_POST_INSTANCES_BAD_AUTH,
        ),
        (
            {**_body(), "auth": {"method": "token"}},
            "",
            400,
            EC.MERCHANT_PRIVATE_POST_INSTANCES_BAD_AUTH,
        ),
        (_body(), "?token_validity_ms=0", 400, EC.GENERIC_PARAMETER_MALFORMED),
        (_body(), "?token_validity_ms=-5", 400, EC.GENERIC_PARAMETER_MALFORMED),
        (_body(), "?token_validity_ms=soon", 400, EC.GENERIC_PARAMETER_MALFORMED),
    ],
)
async def test_signup_refusals(make_client, tan_file, body, query, status, code):
    client = await _open(make_client)
    await assert_error(await _signup(client, body, query), status, code)
    assert not tan_file.exists()


async def test_mandatory_channel_needs_its_address(make_client, tan_file):
    client = await _open(make_client, mandatory_tan_channels=("email", "sms"))
    body = await assert_error(
        await _signup(client, _body()), 400, EC.GENERIC_PARAMETER_MISSING
    )
    assert body["parameter"] == "phone_number"


async def test_channel_without_helper(make_client, tan_file):
    client = await _open(make_client, helper_sms=None)
    response = await _signup(client, _body(phone_number=PHONE))
    await assert_error(response, 403, EC.MERCHANT_GENERIC_MFA_MISSING)


async def test_taken_id(make_client, tan_file):
    client = await _open(make_client)
    answer = await (await _signup(client, _body())).json()
    ids = await solve_all(client, "newshop", answer, tan_file)
    assert (await _signup(client, _body(), ids=ids)).status == 204
    for instance_id in ("newshop", "NewShop"):
        response = await _signup(client, _body(instance_id))
        await assert_error(
            response, 409, EC.MERCHANT_PRIVATE_POST_INSTANCES_ALREADY_EXISTS
        )


async def test_signups_are_limited_per_client_address(make_client, tan_file):
    client = await _open(make_client, signup_limit=2)
    for n in range(2):
        assert (await _signup(client, _body(f"shop{n}"))).status == 202
    # A made-up challenge id does not get around the limit.
    for ids in (None, "0" * 52):
        response = await _signup(client, _body("shop9"), ids=ids)
        await assert_error(response, 429, EC.MERCHANT_GENERIC_UNAUTHORIZED)
        assert int(response.headers["Retry-After"]) >= 1


async def test_completing_a_signup_is_not_limited(make_client, tan_file):
    client = await _open(make_client, signup_limit=1)
    answer = await (await _signup(client, _body())).json()
    ids = await solve_all(client, "newshop", answer, tan_file)
    assert (await _signup(client, _body(), ids=ids)).status == 204
