"""Two-factor authentication of protected operations, end to end.

Every flow runs through the HTTP API with ``contrib/tan-to-file.sh`` as the TAN helper:
the test reads the TAN from the file the helper wrote, as a merchant would read it
from a phone or a mailbox.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from conftest import ADMIN_PASSWORD, assert_error, basic, bearer, create_instance, login
from tan_support import (
    EMAIL,
    FILE_HELPER,
    PHONE,
    helpers,
    last_tan,
    mark_validated,
    request_tan,
    solve,
    solve_all,
    use_tan_file,
)

from merchant_authd import mfa
from merchant_authd.config import defaults
from merchant_authd.errors import EC, TalerError
from merchant_authd.mfa import Requirement
from merchant_authd.web.keys import CONTEXT

LOGIN = {"scope": "all:refreshable"}
NEW_AUTH = {"method": "token", "password": "new-pw"}
CHALLENGE_KEYS = {"challenge_id", "tan_channel", "tan_info"}


@pytest.fixture
def tan_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return use_tan_file(tmp_path, monkeypatch)


async def _shop(make_client: Any, *validated: str, **overrides: Any) -> TestClient:
    """A client whose database has ``admin`` and ``shop`` (e-mail and phone).

    The instances are made through a client without ``overrides``: with mandatory
    channels the admin (who has no address) could not log in to create them.
    """
    setup: TestClient = await make_client(**helpers())
    await create_instance(setup, "admin", ADMIN_PASSWORD)
    await create_instance(setup, "shop", "pw", email=EMAIL, phone_number=PHONE)
    await mark_validated(setup, "shop", *validated)
    if not overrides:
        return setup
    client: TestClient = await make_client(**helpers(**overrides))
    return client


async def _login(
    client: TestClient, password: str = "pw", headers: dict[str, str] | None = None
) -> Any:
    return await client.post(
        "/instances/shop/private/token",
        json=LOGIN,
        headers={**basic("shop", password), **(headers or {})},
    )


async def _accepted(response: Any) -> dict[str, Any]:
    assert response.status == 202, await response.text()
    body: dict[str, Any] = await response.json()
    assert body["challenges"]
    for challenge in body["challenges"]:
        assert set(challenge) == CHALLENGE_KEYS
    return body


async def _token_via_challenges(client: TestClient, tan_file: Path) -> str:
    answer = await _accepted(await _login(client))
    ids = await solve_all(client, "shop", answer, tan_file)
    response = await _login(client, headers={mfa.HEADER: ids})
    assert response.status == 200, await response.text()
    token: str = (await response.json())["access_token"]
    return token


# -- token issuance ------------------------------------------------------------------


async def test_login_needs_sms_tan_once_the_phone_is_validated(make_client, tan_file):
    plain = await _shop(make_client)
    assert (await _login(plain)).status == 200
    # An operator who makes SMS mandatory: the next login validates the phone.
    strict = await make_client(**helpers(mandatory_tan_channels=("sms",)))
    answer = await _accepted(await _login(strict))
    assert answer["combi_and"] is True
    [challenge] = answer["challenges"]
    assert challenge["tan_channel"] == "sms"
    assert challenge["tan_info"] == "***" + PHONE[-4:]
    await solve(strict, "shop", challenge, tan_file)
    response = await _login(strict, headers={mfa.HEADER: challenge["challenge_id"]})
    assert response.status == 200
    token = (await response.json())["access_token"]
    detail = await plain.get("/instances/shop/private", headers=bearer(token))
    body = await detail.json()
    assert body["phone_validated"] is True
    assert body["email_validated"] is False
    # Without mandatory channels, the validated phone alone now demands a TAN.
    answer = await _accepted(await _login(plain))
    assert answer["combi_and"] is False
    assert [c["tan_channel"] for c in answer["challenges"]] == ["sms"]
    ids = await solve_all(plain, "shop", answer, tan_file)
    response = await _login(plain, headers={mfa.HEADER: ids})
    assert response.status == 200
    assert (await response.json())["refreshable"] is True


async def test_any_one_validated_channel_suffices(make_client, tan_file):
    client = await _shop(make_client, "email", "sms")
    answer = await _accepted(await _login(client))
    assert answer["combi_and"] is False
    assert sorted(c["tan_channel"] for c in answer["challenges"]) == ["email", "sms"]
    email = next(c for c in answer["challenges"] if c["tan_channel"] == "email")
    assert email["tan_info"] == "o***@shop.example"
    await solve(client, "shop", email, tan_file)
    response = await _login(client, headers={mfa.HEADER: email["challenge_id"]})
    assert response.status == 200


async def test_without_validated_channel_login_needs_no_tan(make_client, tan_file):
    client = await _shop(make_client)
    assert (await _login(client)).status == 200
    assert not tan_file.exists()


async def test_wrong_password_is_refused_before_any_challenge(make_client, tan_file):
    client = await _shop(make_client, "sms")
    await assert_error(
        await _login(client, "wrong"), 401, EC.MERCHANT_GENERIC_UNAUTHORIZED
    )


async def test_refresh_with_a_refreshable_token_needs_no_tan(make_client, tan_file):
    client = await _shop(make_client, "sms")
    token = await _token_via_challenges(client, tan_file)
    response = await client.post(
        "/instances/shop/private/token",
        json={"scope": "readonly"},
        headers=bearer(token),
    )
    assert response.status == 200, await response.text()


async def test_legacy_password_bearer_login_needs_a_tan(make_client, tan_file):
    client = await _shop(make_client, "sms")
    response = await client.post(
        "/instances/shop/private/token",
        json=LOGIN,
        headers=bearer("secret-token:pw"),
    )
    await _accepted(response)


async def test_mfa_missing_without_address_for_a_mandatory_channel(
    make_client, tan_file
):
    client = await make_client(**helpers())
    await create_instance(client, "admin", ADMIN_PASSWORD)
    await create_instance(client, "shop", "pw", email=EMAIL)
    strict = await make_client(**helpers(mandatory_tan_channels=("email", "sms")))
    await assert_error(await _login(strict), 403, EC.MERCHANT_GENERIC_MFA_MISSING)


async def test_mfa_missing_when_the_validated_channel_has_no_helper(
    make_client, tan_file
):
    client = await _shop(make_client, "sms", helper_sms=None)
    await assert_error(await _login(client), 403, EC.MERCHANT_GENERIC_MFA_MISSING)


async def test_channel_without_helper_is_left_out_when_any_one_suffices(
    make_client, tan_file
):
    client = await _shop(make_client, "sms", "email", helper_sms=None)
    answer = await _accepted(await _login(client))
    assert [c["tan_channel"] for c in answer["challenges"]] == ["email"]


def test_usable_requirement_rules():
    ctx: Any = type("Ctx", (), {"settings": defaults(helper_email=FILE_HELPER)})()
    both = (("email", EMAIL), ("sms", PHONE))
    assert mfa.usable(ctx, Requirement(both, False)).channels == (("email", EMAIL),)
    with pytest.raises(TalerError) as raised:
        mfa.usable(ctx, Requirement(both, True))
    assert raised.value.code == EC.MERCHANT_GENERIC_MFA_MISSING
    with pytest.raises(TalerError) as raised:
        mfa.usable(ctx, Requirement((("sms", PHONE),), False))
    assert raised.value.code == EC.MERCHANT_GENERIC_MFA_MISSING
    assert mfa.usable(ctx, Requirement((), False)).channels == ()


# -- binding and replay --------------------------------------------------------------


async def test_consumed_challenge_cannot_be_replayed(make_client, tan_file):
    client = await _shop(make_client, "sms")
    answer = await _accepted(await _login(client))
    ids = await solve_all(client, "shop", answer, tan_file)
    assert (await _login(client, headers={mfa.HEADER: ids})).status == 200
    again = await _accepted(await _login(client, headers={mfa.HEADER: ids}))
    fresh = {c["challenge_id"] for c in again["challenges"]}
    assert not fresh & set(ids.split(","))


async def test_challenge_for_another_body_is_not_accepted(make_client, tan_file):
    client = await _shop(make_client, "sms")
    answer = await _accepted(await _login(client))
    ids = await solve_all(client, "shop", answer, tan_file)
    other = await client.post(
        "/instances/shop/private/token",
        json={"scope": "all:refreshable", "description": "other"},
        headers={**basic("shop", "pw"), mfa.HEADER: ids},
    )
    await _accepted(other)
    # The challenge was not used up by the refused request.
    assert (await _login(client, headers={mfa.HEADER: ids})).status == 200


async def test_unsolved_or_unknown_ids_mean_a_new_challenge(make_client, tan_file):
    client = await _shop(make_client, "sms")
    answer = await _accepted(await _login(client))
    unsolved = answer["challenges"][0]["challenge_id"]
    for header in (unsolved, "not-an-id", "0" * 52, f" {unsolved} , junk "):
        await _accepted(await _login(client, headers={mfa.HEADER: header}))


async def test_challenge_is_bound_to_the_operation(make_client, tan_file):
    client = await _shop(make_client, "email")
    token = await _token_via_challenges(client, tan_file)
    forgot = await client.post("/instances/shop/forgot-password", json=NEW_AUTH)
    ids = await solve_all(client, "shop", await _accepted(forgot), tan_file)
    # Same instance, same body, but another operation.
    response = await client.post(
        "/instances/shop/private/auth",
        json=NEW_AUTH,
        headers={**bearer(token), mfa.HEADER: ids},
    )
    await _accepted(response)


async def test_challenge_is_bound_to_the_instance(make_client, tan_file):
    client = await _shop(make_client, "sms")
    await create_instance(client, "shop2", "pw", phone_number=PHONE)
    await mark_validated(client, "shop2", "sms")
    answer = await _accepted(await _login(client))
    ids = await solve_all(client, "shop", answer, tan_file)
    response = await client.post(
        "/instances/shop2/private/token",
        json=LOGIN,
        headers={**basic("shop2", "pw"), mfa.HEADER: ids},
    )
    await _accepted(response)
    wrong_instance = await client.post(f"/instances/shop2/challenge/{ids}", json={})
    await assert_error(wrong_instance, 404, EC.MERCHANT_TAN_CHALLENGE_UNKNOWN)


async def test_concurrent_replays_issue_one_token(make_client, tan_file):
    client = await _shop(make_client, "sms")
    answer = await _accepted(await _login(client))
    ids = await solve_all(client, "shop", answer, tan_file)
    responses = await asyncio.gather(
        *(_login(client, headers={mfa.HEADER: ids}) for _ in range(4))
    )
    assert sorted(r.status for r in responses) == [200, 202, 202, 202]


# -- changing credentials ------------------------------------------------------------


async def test_password_change_needs_both_mandatory_channels(make_client, tan_file):
    client = await _shop(make_client, mandatory_tan_channels=("email", "sms"))
    token = await _token_via_challenges(client, tan_file)
    change = await client.post(
        "/instances/shop/private/auth", json=NEW_AUTH, headers=bearer(token)
    )
    answer = await _accepted(change)
    assert answer["combi_and"] is True
    by_channel = {c["tan_channel"]: c for c in answer["challenges"]}
    assert sorted(by_channel) == ["email", "sms"]
    # One of two is not enough.
    await solve(client, "shop", by_channel["email"], tan_file)
    half = await client.post(
        "/instances/shop/private/auth",
        json=NEW_AUTH,
        headers={**bearer(token), mfa.HEADER: by_channel["email"]["challenge_id"]},
    )
    await _accepted(half)
    await solve(client, "shop", by_channel["sms"], tan_file)
    ids = ",".join(c["challenge_id"] for c in answer["challenges"])
    done = await client.post(
        "/instances/shop/private/auth",
        json=NEW_AUTH,
        headers={**bearer(token), mfa.HEADER: ids},
    )
    assert done.status == 204, await done.text()
    # Every token is revoked; the old password is gone, the new one works.
    gone = await client.get("/instances/shop/private", headers=bearer(token))
    await assert_error(gone, 401, EC.MERCHANT_GENERIC_UNAUTHORIZED)
    await assert_error(
        await _login(client, "pw"), 401, EC.MERCHANT_GENERIC_UNAUTHORIZED
    )
    await _accepted(await _login(client, "new-pw"))


async def test_admin_changing_auth_through_management_is_exempt(make_client, tan_file):
    client = await _shop(make_client, "sms")
    admin = await login(client, "admin", ADMIN_PASSWORD)
    response = await client.post(
        "/management/instances/shop/auth", json=NEW_AUTH, headers=bearer(admin)
    )
    assert response.status == 204, await response.text()
    assert not tan_file.exists()
    await _accepted(await _login(client, "new-pw"))


async def test_auth_change_with_mfa_missing(make_client, tan_file):
    client = await _shop(make_client, "sms")
    token = await _token_via_challenges(client, tan_file)
    # The operator drops the SMS helper: the validated phone cannot get a TAN.
    other = await make_client(**helpers(helper_sms=None))
    response = await other.post(
        "/instances/shop/private/auth", json=NEW_AUTH, headers=bearer(token)
    )
    await assert_error(response, 403, EC.MERCHANT_GENERIC_MFA_MISSING)


# -- forgot password -----------------------------------------------------------------


async def test_forgot_password(make_client, tan_file):
    client = await _shop(make_client, "email")
    token = await _token_via_challenges(client, tan_file)
    first = await client.post("/instances/shop/forgot-password", json=NEW_AUTH)
    answer = await _accepted(first)
    assert [c["tan_channel"] for c in answer["challenges"]] == ["email"]
    ids = await solve_all(client, "shop", answer, tan_file)
    second = await client.post(
        "/instances/shop/forgot-password", json=NEW_AUTH, headers={mfa.HEADER: ids}
    )
    assert second.status == 204, await second.text()
    # The legacy password bearer needs no TAN for reading: shows which password works.
    new = await client.get(
        "/instances/shop/private", headers=bearer("secret-token:new-pw")
    )
    assert new.status == 200
    old = await client.get("/instances/shop/private", headers=bearer("secret-token:pw"))
    await assert_error(old, 401, EC.MERCHANT_GENERIC_UNAUTHORIZED)
    revoked = await client.get("/instances/shop/private", headers=bearer(token))
    await assert_error(revoked, 401, EC.MERCHANT_GENERIC_UNAUTHORIZED)
    replay = await client.post(
        "/instances/shop/forgot-password",
        json={"method": "token", "password": "third"},
        headers={mfa.HEADER: ids},
    )
    await _accepted(replay)


@pytest.mark.parametrize(
    ("path", "status", "code"),
    [
        ("/instances/admin/forgot-password", 403, EC.MERCHANT_GENERIC_UNAUTHORIZED),
        (
            "/instances/nobody/forgot-password",
            404,
            EC.MERCHANT_GENERIC_INSTANCE_UNKNOWN,
        ),
        ("/instances/bare/forgot-password", 403, EC.MERCHANT_GENERIC_MFA_MISSING),
    ],
)
async def test_forgot_password_refusals(make_client, tan_file, path, status, code):
    client = await _shop(make_client, "email")
    await create_instance(client, "bare", "pw", email=EMAIL)
    await assert_error(await client.post(path, json=NEW_AUTH), status, code)


async def test_forgot_password_checks_the_body_first(make_client, tan_file):
    client = await _shop(make_client, "email")
    response = await client.post(
        "/instances/shop/forgot-password", json={"method": "token"}
    )
    await assert_error(response, 400, EC.MERCHANT_PRIVATE_POST_INSTANCE_AUTH_BAD_AUTH)
    malformed = await client.post(
        "/instances/shop/forgot-password", json={"method": "password"}
    )
    await assert_error(malformed, 400, EC.MERCHANT_PRIVATE_POST_INSTANCE_AUTH_BAD_AUTH)


# -- deleting an instance ------------------------------------------------------------


async def test_delete_through_the_private_path_needs_a_tan(make_client, tan_file):
    client = await _shop(make_client, "sms")
    token = await _token_via_challenges(client, tan_file)
    answer = await _accepted(
        await client.delete("/instances/shop/private", headers=bearer(token))
    )
    ids = await solve_all(client, "shop", answer, tan_file)
    # The challenge covers deleting, not purging.
    purge = await client.delete(
        "/instances/shop/private?purge=YES",
        headers={**bearer(token), mfa.HEADER: ids},
    )
    await _accepted(purge)
    done = await client.delete(
        "/instances/shop/private", headers={**bearer(token), mfa.HEADER: ids}
    )
    assert done.status == 204, await done.text()
    after = await client.get("/instances/shop/private", headers=bearer(token))
    await assert_error(after, 404, EC.MERCHANT_GENERIC_INSTANCE_UNKNOWN)


async def test_delete_through_management_is_exempt(make_client, tan_file):
    client = await _shop(make_client, "sms")
    admin = await login(client, "admin", ADMIN_PASSWORD)
    response = await client.delete("/management/instances/shop", headers=bearer(admin))
    assert response.status == 204, await response.text()


# -- addresses, configuration, secrecy -----------------------------------------------


async def test_changing_an_address_drops_its_validation(make_client, tan_file):
    client = await _shop(make_client, "email", "sms")
    token = await _token_via_challenges(client, tan_file)
    change = {"email": "new@shop.example"}
    answer = await _accepted(
        await client.patch(
            "/instances/shop/private", json=change, headers=bearer(token)
        )
    )
    sms = next(c for c in answer["challenges"] if c["tan_channel"] == "sms")
    await solve(client, "shop", sms, tan_file)
    response = await client.patch(
        "/instances/shop/private",
        json=change,
        headers={**bearer(token), mfa.HEADER: sms["challenge_id"]},
    )
    assert response.status == 204, await response.text()
    body = await (
        await client.get("/instances/shop/private", headers=bearer(token))
    ).json()
    assert body["email_validated"] is False
    assert body["phone_validated"] is True


async def test_config_lists_mandatory_channels(make_client):
    client = await make_client(**helpers(mandatory_tan_channels=("email", "sms")))
    body = await (await client.get("/config")).json()
    assert body["mandatory_tan_channels"] == ["email", "sms"]
    plain = await make_client()
    assert (await (await plain.get("/config")).json())["mandatory_tan_channels"] == []


async def test_tans_are_neither_logged_nor_stored(
    make_client, tan_file, caplog, settings
):
    caplog.set_level(logging.DEBUG)
    client = await _shop(make_client, "sms")
    answer = await _accepted(await _login(client))
    challenge_id = answer["challenges"][0]["challenge_id"]
    await request_tan(client, "shop", challenge_id)
    tan = last_tan(tan_file, PHONE)
    wrong = f"{(int(tan) + 1) % 10**8:08d}"
    assert (await _confirm(client, challenge_id, wrong)).status == 409
    assert (await _confirm(client, challenge_id, tan)).status == 204
    assert caplog.records
    assert tan not in caplog.text
    assert wrong not in caplog.text
    store = client.app[CONTEXT].store
    for path in settings.database_path.parent.glob(settings.database_path.name + "*"):
        assert tan.encode() not in path.read_bytes()
    challenge = await store.get_challenge(mfa._id_digest(challenge_id) or b"")
    assert challenge is not None and challenge.tan_digest is not None
    assert len(challenge.tan_digest) == 32


async def _confirm(client: TestClient, challenge_id: str, tan: str) -> Any:
    return await client.post(
        f"/instances/shop/challenge/{challenge_id}/confirm", json={"tan": tan}
    )
