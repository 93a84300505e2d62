"""Limits that keep the public two-factor endpoints from being turned against a shop.

Forgot-password is public: anybody may ask for a reset of any instance.  Its requests
are limited per client address, its open challenges are counted apart from those of
the instance's own logins, and no challenge lives forever by being resent.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from conftest import ADMIN_PASSWORD, basic, create_instance
from tan_support import EMAIL, PHONE, helpers, mark_validated, use_tan_file

from merchant_authd import mfa
from merchant_authd.errors import EC
from merchant_authd.web.keys import CONTEXT

NEW_AUTH = {"method": "token", "password": "new-pw"}


@pytest.fixture
def tan_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return use_tan_file(tmp_path, monkeypatch)


async def _shop(make_client: Any, **overrides: Any) -> TestClient:
    client: TestClient = await make_client(**helpers(**overrides))
    await create_instance(client, "admin", ADMIN_PASSWORD)
    await create_instance(client, "shop", "pw", email=EMAIL, phone_number=PHONE)
    await mark_validated(client, "shop", "email")
    return client


async def _forgot(client: TestClient) -> Any:
    return await client.post("/instances/shop/forgot-password", json=NEW_AUTH)


async def test_forgot_password_is_limited_per_address(make_client, tan_file):
    client = await _shop(make_client, signup_limit=2, tan_max_active=100)
    assert (await _forgot(client)).status == 202
    assert (await _forgot(client)).status == 202
    refused = await _forgot(client)
    assert refused.status == 429
    assert (await refused.json())["code"] == EC.MERCHANT_GENERIC_UNAUTHORIZED
    assert int(refused.headers["Retry-After"]) > 0


async def test_forgot_password_flood_does_not_block_logins(make_client, tan_file):
    client = await _shop(make_client, signup_limit=100, tan_max_active=3)
    for _ in range(3):
        assert (await _forgot(client)).status == 202
    flooded = await _forgot(client)
    assert flooded.status == 429
    assert (await flooded.json())["code"] == EC.MERCHANT_TAN_TOO_EARLY
    login = await client.post(
        "/instances/shop/private/token",
        json={"scope": "all"},
        headers=basic("shop", "pw"),
    )
    assert login.status == 202, await login.text()


async def test_resending_does_not_extend_a_challenge_past_its_lifetime(
    make_client, tan_file, monkeypatch
):
    client = await _shop(make_client, tan_retransmission=0)
    # Lifetime, not the daily number of TANs per challenge, is what is tested here.
    client.app[CONTEXT].sends_per_challenge.limit = 100
    answer = await (await _forgot(client)).json()
    challenge_id = answer["challenges"][0]["challenge_id"]
    url = f"/instances/shop/challenge/{challenge_id}"
    created = int(time.time())
    limit = created + mfa.MAX_CHALLENGE_LIFETIME_S
    expiry = created
    now = created
    while now + 3000 < limit:
        # A resend every 50 minutes keeps the TAN solvable, but only up to the limit.
        now += 3000
        monkeypatch.setattr(mfa.time, "time", lambda now=now: float(now))
        sent = await client.post(url, json={})
        assert sent.status == 200, await sent.text()
        expiry = (await sent.json())["solve_expiration"]["t_s"]
        assert expiry <= limit + 1
    assert limit - 1 <= expiry <= limit + 1
    monkeypatch.setattr(mfa.time, "time", lambda: float(limit + 2))
    gone = await client.post(url, json={})
    assert gone.status == 404
    assert (await gone.json())["code"] == EC.MERCHANT_TAN_CHALLENGE_UNKNOWN
