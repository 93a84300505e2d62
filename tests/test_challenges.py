"""The challenge endpoints: having a TAN sent, and confirming it.

``POST [/instances/$I]/challenge/$ID`` runs the channel's helper program;
``.../confirm`` checks the TAN.  Helpers that fail, hang or are missing must give 502
in bounded time, never a hang.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from conftest import ADMIN_PASSWORD, assert_error, basic, create_instance
from tan_support import (
    EMAIL,
    PHONE,
    confirm,
    helpers,
    last_tan,
    mark_validated,
    messages,
    request_tan,
    use_tan_file,
)

from merchant_authd import crypto, mfa
from merchant_authd.errors import EC

#: Upper bound for requests that run a hanging helper (helper_timeout is 1 s).
BOUND_S = 30
SECOND_US = 1_000_000


@pytest.fixture
def tan_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return use_tan_file(tmp_path, monkeypatch)


def _script(tmp_path: Path, name: str, body: str) -> Path:
    path = tmp_path / name
    path.write_text("#!/bin/sh\n" + body + "\n")
    path.chmod(0o755)
    return path


async def _challenge(
    make_client: Any, instance_id: str = "shop", **overrides: Any
) -> tuple[TestClient, str]:
    """A client and the id of a fresh SMS challenge of a login of ``instance_id``."""
    setup = await make_client(**helpers())
    await create_instance(setup, "admin", ADMIN_PASSWORD, phone_number=PHONE)
    await create_instance(setup, "shop", "pw", email=EMAIL, phone_number=PHONE)
    await mark_validated(setup, "shop", "sms")
    await mark_validated(setup, "admin", "sms")
    client = await make_client(**helpers(**overrides)) if overrides else setup
    path = (
        "/private/token" if instance_id == "admin" else "/instances/shop/private/token"
    )
    password = ADMIN_PASSWORD if instance_id == "admin" else "pw"
    response = await client.post(
        path, json={"scope": "all"}, headers=basic(instance_id, password)
    )
    assert response.status == 202, await response.text()
    return client, (await response.json())["challenges"][0]["challenge_id"]


async def _within_bound(awaitable: Any) -> Any:
    return await asyncio.wait_for(awaitable, BOUND_S)


# -- requesting a TAN ----------------------------------------------------------------


@pytest.mark.parametrize("body", [b"", b"{}", b'{"unknown": 1}'])
async def test_request_tan(make_client, tan_file, body):
    client, challenge_id = await _challenge(make_client)
    response = await client.post(
        f"/instances/shop/challenge/{challenge_id}",
        data=body,
        headers={"Content-Type": "application/json"},
    )
    assert response.status == 200, await response.text()
    answer = await response.json()
    assert set(answer) == {"solve_expiration", "earliest_retransmission"}
    sent = answer["earliest_retransmission"]["t_s"]
    expires = answer["solve_expiration"]["t_s"]
    assert expires - sent == 3600 - 60
    [message] = messages(tan_file, PHONE)
    assert "shop" in message


async def test_request_tan_for_the_admin_instance_without_prefix(make_client, tan_file):
    client, challenge_id = await _challenge(make_client, "admin")
    answer = await request_tan(client, "admin", challenge_id)
    assert "solve_expiration" in answer
    prefixed = await client.post(f"/instances/admin/challenge/{challenge_id}", json={})
    await assert_error(prefixed, 429, EC.MERCHANT_TAN_TOO_EARLY)


@pytest.mark.parametrize("body", [b"[]", b"not json", b'"text"'])
async def test_request_tan_needs_a_json_object(make_client, tan_file, body):
    client, challenge_id = await _challenge(make_client)
    response = await client.post(f"/instances/shop/challenge/{challenge_id}", data=body)
    await assert_error(response, 400, EC.GENERIC_JSON_INVALID)


@pytest.mark.parametrize(
    "challenge_id", ["0" * 52, "short", "U" * 52, crypto.crockford_encode(b"x" * 32)]
)
async def test_request_tan_for_unknown_challenge(make_client, tan_file, challenge_id):
    client, _ = await _challenge(make_client)
    response = await client.post(f"/instances/shop/challenge/{challenge_id}", json={})
    await assert_error(response, 404, EC.MERCHANT_TAN_CHALLENGE_UNKNOWN)
    response = await confirm(client, "shop", challenge_id, "12345678")
    await assert_error(response, 404, EC.MERCHANT_TAN_CHALLENGE_UNKNOWN)


async def test_request_tan_too_early(make_client, tan_file):
    client, challenge_id = await _challenge(make_client)
    await request_tan(client, "shop", challenge_id)
    response = await client.post(f"/instances/shop/challenge/{challenge_id}", json={})
    await assert_error(response, 429, EC.MERCHANT_TAN_TOO_EARLY)
    assert 1 <= int(response.headers["Retry-After"]) <= 60
    assert len(messages(tan_file, PHONE)) == 1


async def test_resend_replaces_the_tan(make_client, tan_file):
    client, challenge_id = await _challenge(make_client, tan_retransmission=0)
    await request_tan(client, "shop", challenge_id)
    first = last_tan(tan_file, PHONE)
    await request_tan(client, "shop", challenge_id)
    second = last_tan(tan_file, PHONE)
    if first != second:
        old = await confirm(client, "shop", challenge_id, first)
        await assert_error(old, 409, EC.MERCHANT_TAN_CHALLENGE_FAILED)
    assert (await confirm(client, "shop", challenge_id, second)).status == 204


async def test_request_tan_for_solved_challenge(make_client, tan_file):
    client, challenge_id = await _challenge(make_client)
    await request_tan(client, "shop", challenge_id)
    tan = last_tan(tan_file, PHONE)
    assert (await confirm(client, "shop", challenge_id, tan)).status == 204
    # Confirming again is harmless; asking for another TAN is not possible.
    assert (await confirm(client, "shop", challenge_id, tan)).status == 204
    response = await client.post(f"/instances/shop/challenge/{challenge_id}", json={})
    await assert_error(response, 410, EC.MERCHANT_TAN_CHALLENGE_SOLVED)


async def test_too_many_open_challenges(make_client, tan_file):
    client, _ = await _challenge(make_client, tan_max_active=2)
    response = await client.post(
        "/instances/shop/private/token",
        json={"scope": "all"},
        headers=basic("shop", "pw"),
    )
    assert response.status == 202
    response = await client.post(
        "/instances/shop/private/token",
        json={"scope": "all"},
        headers=basic("shop", "pw"),
    )
    await assert_error(response, 429, EC.MERCHANT_TAN_TOO_EARLY)
    assert "Retry-After" in response.headers


# -- confirming ----------------------------------------------------------------------


async def test_three_wrong_tans_then_resend(make_client, tan_file):
    client, challenge_id = await _challenge(make_client, tan_retransmission=0)
    await request_tan(client, "shop", challenge_id)
    tan = last_tan(tan_file, PHONE)
    wrong = f"{(int(tan) + 1) % 10**8:08d}"
    for left in (2, 1, 0):
        body = await assert_error(
            await confirm(client, "shop", challenge_id, wrong),
            409,
            EC.MERCHANT_TAN_CHALLENGE_FAILED,
        )
        assert body["retry_counter"] == left
    # Attempts used up: even the right TAN is refused until a new one is sent.
    for attempt in (wrong, tan):
        await assert_error(
            await confirm(client, "shop", challenge_id, attempt),
            429,
            EC.MERCHANT_TAN_TOO_MANY_ATTEMPTS,
        )
    await request_tan(client, "shop", challenge_id)
    fresh = last_tan(tan_file, PHONE)
    if fresh != wrong:
        body = await assert_error(
            await confirm(client, "shop", challenge_id, wrong),
            409,
            EC.MERCHANT_TAN_CHALLENGE_FAILED,
        )
        assert body["retry_counter"] == 2
    assert (await confirm(client, "shop", challenge_id, fresh)).status == 204


async def test_confirm_before_any_tan_was_sent(make_client, tan_file):
    client, challenge_id = await _challenge(make_client)
    body = await assert_error(
        await confirm(client, "shop", challenge_id, "12345678"),
        409,
        EC.MERCHANT_TAN_CHALLENGE_FAILED,
    )
    assert body["retry_counter"] == 0


async def test_expired_tan_is_refused(make_client, tan_file, monkeypatch):
    client, challenge_id = await _challenge(make_client)
    await request_tan(client, "shop", challenge_id)
    tan = last_tan(tan_file, PHONE)
    real_time = mfa.time.time

    class Later:
        @staticmethod
        def time() -> float:
            return real_time() + 3601

    monkeypatch.setattr(mfa, "time", Later)
    body = await assert_error(
        await confirm(client, "shop", challenge_id, tan),
        409,
        EC.MERCHANT_TAN_CHALLENGE_FAILED,
    )
    assert body["retry_counter"] == 0
    response = await client.post(f"/instances/shop/challenge/{challenge_id}", json={})
    await assert_error(response, 404, EC.MERCHANT_TAN_CHALLENGE_UNKNOWN)


@pytest.mark.parametrize("body", [{}, {"tan": ""}, {"tan": 12345678}, {"tan": None}])
async def test_confirm_needs_a_tan(make_client, tan_file, body):
    client, challenge_id = await _challenge(make_client)
    response = await client.post(
        f"/instances/shop/challenge/{challenge_id}/confirm", json=body
    )
    assert response.status == 400
    assert (await response.json())["code"] in (
        EC.GENERIC_PARAMETER_MISSING,
        EC.GENERIC_PARAMETER_MALFORMED,
    )


async def test_solving_validates_the_address(make_client, tan_file):
    client = await make_client(**helpers())
    await create_instance(client, "admin", ADMIN_PASSWORD)
    await create_instance(client, "shop", "pw", email=EMAIL)
    strict = await make_client(**helpers(mandatory_tan_channels=("email",)))
    response = await strict.post(
        "/instances/shop/private/token",
        json={"scope": "all"},
        headers=basic("shop", "pw"),
    )
    [challenge] = (await response.json())["challenges"]
    await request_tan(strict, "shop", challenge["challenge_id"])
    tan = last_tan(tan_file, EMAIL)
    assert (await confirm(strict, "shop", challenge["challenge_id"], tan)).status == 204
    from merchant_authd.web.keys import CONTEXT

    instance = await client.app[CONTEXT].store.get_instance("shop")
    assert instance is not None and instance.email_validated


# -- helper failures -----------------------------------------------------------------


async def test_helper_exiting_with_failure(make_client, tan_file, tmp_path):
    failing = _script(tmp_path, "fail.sh", "cat >/dev/null; exit 1")
    client, challenge_id = await _challenge(make_client, helper_sms=failing)
    for _ in range(2):  # a failed delivery does not count as a transmission
        response = await client.post(
            f"/instances/shop/challenge/{challenge_id}", json={}
        )
        await assert_error(response, 502, EC.MERCHANT_TAN_MFA_HELPER_EXEC_FAILED)


@pytest.mark.parametrize("kind", ["missing", "not-executable", "directory"])
async def test_helper_that_cannot_run(make_client, tan_file, tmp_path, kind):
    helper = tmp_path / "helper"
    if kind == "not-executable":
        helper.write_text("#!/bin/sh\nexit 0\n")
    elif kind == "directory":
        helper.mkdir()
    client, challenge_id = await _challenge(make_client, helper_sms=helper)
    response = await client.post(f"/instances/shop/challenge/{challenge_id}", json={})
    await assert_error(response, 502, EC.MERCHANT_TAN_MFA_HELPER_EXEC_FAILED)


async def test_helper_ignoring_its_input_still_delivers(make_client, tmp_path):
    quiet = _script(tmp_path, "quiet.sh", "exit 0")
    client, challenge_id = await _challenge(make_client, helper_sms=quiet)
    response = await client.post(f"/instances/shop/challenge/{challenge_id}", json={})
    assert response.status == 200, await response.text()


async def test_hanging_helper_is_killed(make_client, tan_file, tmp_path):
    pid_file = tmp_path / "child.pid"
    hanging = _script(tmp_path, "hang.sh", f"sleep 300 &\necho $! > {pid_file}\nwait")
    client, challenge_id = await _challenge(
        make_client, helper_sms=hanging, helper_timeout=SECOND_US
    )
    response = await _within_bound(
        client.post(f"/instances/shop/challenge/{challenge_id}", json={})
    )
    await assert_error(response, 502, EC.MERCHANT_TAN_MFA_HELPER_EXEC_FAILED)
    # What the helper started dies with it (a zombie waiting for its reaper is dead).
    child = int(pid_file.read_text())
    for _ in range(100):
        if not _alive(child):
            break
        await asyncio.sleep(0.05)
    assert not _alive(child)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


async def test_helpers_beyond_the_concurrency_bound_fail_in_bounded_time(
    make_client, tan_file, tmp_path
):
    hanging = _script(tmp_path, "hang.sh", "exec sleep 300")
    client, _ = await _challenge(
        make_client,
        helper_sms=hanging,
        helper_timeout=SECOND_US,
        helper_concurrency=1,
    )
    ids = []
    for _ in range(3):
        response = await client.post(
            "/instances/shop/private/token",
            json={"scope": "all"},
            headers=basic("shop", "pw"),
        )
        ids.append((await response.json())["challenges"][0]["challenge_id"])
    responses = await _within_bound(
        asyncio.gather(
            *(client.post(f"/instances/shop/challenge/{i}", json={}) for i in ids)
        )
    )
    for response in responses:
        await assert_error(response, 502, EC.MERCHANT_TAN_MFA_HELPER_EXEC_FAILED)


async def test_one_delivery_at_a_time_per_challenge(make_client, tan_file, tmp_path):
    slow = _script(tmp_path, "slow.sh", "cat >/dev/null; sleep 2")
    client, challenge_id = await _challenge(
        make_client, helper_sms=slow, tan_retransmission=0
    )
    responses = await _within_bound(
        asyncio.gather(
            *(
                client.post(f"/instances/shop/challenge/{challenge_id}", json={})
                for _ in range(2)
            )
        )
    )
    assert sorted(r.status for r in responses) == [200, 429]
    busy = next(r for r in responses if r.status == 429)
    assert (await busy.json())["code"] == EC.MERCHANT_TAN_TOO_EARLY
