"""Concurrent requests end in one consistent state.

What the design guarantees (one writer connection, one transaction at a time, a
password change and the revocation of the instance's tokens in one transaction):
the committed changes form one order; the final password is the one of the last
committed change; a token survives exactly when it was committed after that change
("before" is the commit order, which token serials follow).  A login that succeeded
with the final password committed after the final change, so its token survives.

A login whose password was checked just before a change commits must not store its
token after it: the token would be one of the old password that outlives the change.
Issuing re-checks the password hash in its transaction and answers 401 instead
(``test_login_racing_a_password_change``).

Solved challenges authorise one operation: two concurrent repetitions of a request
with the same ``Taler-Challenge-Ids`` cannot both succeed; the loser is answered as
if it had named no challenge (202 with fresh challenges), never with a 500.
"""

from __future__ import annotations

import asyncio
import random
import re
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from conftest import ADMIN_PASSWORD, MakeClient, basic, bearer, create_instance, login

from merchant_authd.sqlite_store import SqliteStore
from merchant_authd.web.keys import CONTEXT

CHANGES = 25
LOGINS = 25
TAN = re.compile(r" is (\d{8})\.")


async def _status(response: Any) -> int:
    await response.read()
    return int(response.status)


async def test_password_changes_and_logins_end_consistent(
    make_client: MakeClient,
) -> None:
    client = await make_client(throttle_free_attempts=1000)
    await create_instance(client, "admin", ADMIN_PASSWORD)
    await create_instance(client, "shop", "initial-pw")
    admin = await login(client, "admin", ADMIN_PASSWORD)
    before = [await login(client, "shop", "initial-pw") for _ in range(3)]
    rng = random.Random(7)
    passwords = [f"changed-pw-{i}" for i in range(CHANGES)]
    acknowledged: list[str] = []
    latest = {"password": "initial-pw"}
    issued: list[tuple[int, str, str]] = []  # (serial, token, password used)

    async def change(password: str) -> None:
        await asyncio.sleep(rng.random() * 0.05)
        response = await client.post(
            "/management/instances/shop/auth",
            json={"method": "token", "password": password},
            headers=bearer(admin),
        )
        assert await _status(response) == 204
        acknowledged.append(password)
        latest["password"] = password

    async def log_in() -> None:
        await asyncio.sleep(rng.random() * 0.05)
        for _ in range(10):
            password = latest["password"]
            response = await client.post(
                "/instances/shop/private/token",
                json={"scope": "readonly"},
                headers=basic("shop", password),
            )
            if response.status == 200:
                body = await response.json()
                issued.append((body["serial"], body["access_token"], password))
                return
            assert await _status(response) == 401
            await asyncio.sleep(0.005)

    jobs = [change(p) for p in passwords] + [log_in() for _ in range(LOGINS)]
    rng.shuffle(jobs)
    await asyncio.gather(*jobs)
    assert sorted(acknowledged) == sorted(passwords)

    working = []
    for candidate in ["initial-pw", *passwords]:
        response = await client.post(
            "/instances/shop/private/token",
            json={"scope": "readonly"},
            headers=basic("shop", candidate),
        )
        if await _status(response) == 200:
            working.append(candidate)
    assert len(working) == 1 and working[0] in passwords
    final = working[0]

    async def alive(token: str) -> bool:
        response = await client.get("/instances/shop/private", headers=bearer(token))
        status = await _status(response)
        assert status in (200, 401)
        return status == 200

    for token in before:
        assert not await alive(token)
    assert issued, "no login succeeded during the storm"
    survivors: list[int] = []
    revoked: list[int] = []
    for serial, token, password in issued:
        (survivors if await alive(token) else revoked).append(serial)
        if password == final:
            assert serial in survivors, "a token issued with the final password died"
    if survivors and revoked:
        assert min(survivors) > max(revoked), "survivors are not the latest tokens"


class Outbox:
    """The TAN helper's output: every message it was given, appended to a file."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / "outbox.txt"
        self.helper = directory / "tan-helper.sh"
        self.helper.write_text(f'#!/bin/sh\ncat >> "{self.path}"\n')
        self.helper.chmod(0o755)

    def last_tan(self) -> str:
        found = TAN.findall(self.path.read_text())
        assert found, "no TAN was delivered"
        return str(found[-1])


@pytest.fixture
def outbox(tmp_path: Path) -> Outbox:
    return Outbox(tmp_path)


@pytest.fixture
async def mfa_client(make_client: MakeClient, outbox: Outbox) -> TestClient:
    """Every instance must confirm by SMS; ``shop`` has a phone number.

    The instances are created by an app without mandatory channels on the same
    database, so that the admin needs no second factor to set them up.
    """
    setup = await make_client()
    await create_instance(setup, "admin", ADMIN_PASSWORD)
    await create_instance(setup, "shop", "shop-pw", phone_number="+41791234567")
    return await make_client(helper_sms=outbox.helper, mandatory_tan_channels=("sms",))


async def solve(client: TestClient, outbox: Outbox, answer: Any) -> str:
    """Solve the challenge of a 202 answer; the value for ``Taler-Challenge-Ids``."""
    assert answer.status == 202, await answer.text()
    challenges = (await answer.json())["challenges"]
    assert [c["tan_channel"] for c in challenges] == ["sms"]
    challenge_id = challenges[0]["challenge_id"]
    base = f"/instances/shop/challenge/{challenge_id}"
    assert await _status(await client.post(base, json={})) == 200
    response = await client.post(base + "/confirm", json={"tan": outbox.last_tan()})
    assert await _status(response) == 204
    return str(challenge_id)


class ReadBarrier:
    """Holds the first ``parties`` challenge look-ups until all of them happened.

    This makes the race deterministic: every request has seen the solved challenge
    as unconsumed before any of them commits.
    """

    def __init__(self, store: SqliteStore, parties: int) -> None:
        self._get = store.get_challenges
        self._barrier = asyncio.Barrier(parties)
        self._left = parties

    async def __call__(self, digests: Any) -> Any:
        found = await self._get(digests)
        if self._left > 0:
            self._left -= 1
            async with asyncio.timeout(10):
                await self._barrier.wait()
        return found


def hold_challenge_reads(
    client: TestClient, monkeypatch: pytest.MonkeyPatch, parties: int
) -> None:
    store = client.app[CONTEXT].store
    assert isinstance(store, SqliteStore)
    monkeypatch.setattr(store, "get_challenges", ReadBarrier(store, parties))


LOGIN_BODY = {"scope": "readonly", "description": "race"}


async def _login_with(
    client: TestClient, ids: str | None, body: dict[str, Any] = LOGIN_BODY
) -> Any:
    headers = basic("shop", "shop-pw")
    if ids is not None:
        headers["Taler-Challenge-Ids"] = ids
    return await client.post(
        "/instances/shop/private/token", json=body, headers=headers
    )


async def _race_result(responses: list[Any]) -> tuple[list[int], dict[str, Any]]:
    statuses = sorted(r.status for r in responses)
    loser = next(r for r in responses if r.status != 200 and r.status != 204)
    return statuses, await loser.json()


@pytest.mark.parametrize("forced", [True, False], ids=["forced-race", "free-race"])
async def test_one_solved_challenge_issues_one_token(
    mfa_client: TestClient,
    outbox: Outbox,
    monkeypatch: pytest.MonkeyPatch,
    forced: bool,
) -> None:
    ids = await solve(mfa_client, outbox, await _login_with(mfa_client, None))
    if forced:
        hold_challenge_reads(mfa_client, monkeypatch, 2)
    responses = list(
        await asyncio.gather(_login_with(mfa_client, ids), _login_with(mfa_client, ids))
    )
    statuses, loser = await _race_result(responses)
    assert statuses == [200, 202]
    assert loser["challenges"][0]["challenge_id"] != ids
    winner = next(r for r in responses if r.status == 200)
    token = (await winner.json())["access_token"]
    listing = await mfa_client.get(
        "/instances/shop/private/tokens", headers=bearer(token)
    )
    assert listing.status == 200
    described = [t for t in (await listing.json())["tokens"] if t.get("description")]
    assert len(described) == 1
    # The consumed challenge authorises nothing more.
    again = await _login_with(mfa_client, ids)
    assert again.status == 202


async def test_one_solved_challenge_changes_the_password_once(
    mfa_client: TestClient, outbox: Outbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    full = {"scope": "all"}
    ids = await solve(mfa_client, outbox, await _login_with(mfa_client, None, full))
    token = (await (await _login_with(mfa_client, ids, full)).json())["access_token"]
    body = {"method": "token", "password": "raced-new-pw"}

    async def change(ids: str | None) -> Any:
        headers = bearer(token)
        if ids is not None:
            headers["Taler-Challenge-Ids"] = ids
        return await mfa_client.post(
            "/instances/shop/private/auth", json=body, headers=headers
        )

    change_ids = await solve(mfa_client, outbox, await change(None))
    hold_challenge_reads(mfa_client, monkeypatch, 2)
    responses = list(await asyncio.gather(change(change_ids), change(change_ids)))
    statuses, loser = await _race_result(responses)
    assert statuses == [202, 204]
    assert loser["challenges"][0]["challenge_id"] != change_ids
    response = await mfa_client.post(
        "/instances/shop/private/token",
        json=LOGIN_BODY,
        headers=basic("shop", "raced-new-pw"),
    )
    assert response.status == 202  # the new password is accepted; MFA follows


async def test_concurrent_wrong_tans_use_exactly_the_attempt_limit(
    mfa_client: TestClient, outbox: Outbox
) -> None:
    answer = await _login_with(mfa_client, None)
    assert answer.status == 202
    challenge_id = (await answer.json())["challenges"][0]["challenge_id"]
    base = f"/instances/shop/challenge/{challenge_id}"
    assert await _status(await mfa_client.post(base, json={})) == 200
    right = outbox.last_tan()
    wrong = f"{(int(right) + 1) % 10**8:08d}"
    responses = await asyncio.gather(
        *(mfa_client.post(base + "/confirm", json={"tan": wrong}) for _ in range(10))
    )
    failed = [await r.json() for r in responses if r.status == 409]
    exhausted = [await r.json() for r in responses if r.status == 429]
    assert len(failed) == 3 and len(exhausted) == 7
    assert sorted(body["retry_counter"] for body in failed) == [0, 1, 2]
    assert {body["code"] for body in failed} == {2125}
    assert {body["code"] for body in exhausted} == {2127}
    # The right TAN no longer helps: the attempts of this TAN are used up.
    response = await mfa_client.post(base + "/confirm", json={"tan": right})
    assert response.status == 429


async def test_login_racing_a_password_change(
    make_client: MakeClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Old password checked, then the change commits, then the token is stored."""
    client = await make_client()
    await create_instance(client, "admin", ADMIN_PASSWORD)
    await create_instance(client, "shop", "old-pw")
    admin = await login(client, "admin", ADMIN_PASSWORD)
    store = client.app[CONTEXT].store
    issue = store.issue_token
    checked = asyncio.Event()
    changed = asyncio.Event()

    async def issue_after_change(*args: Any, **kwargs: Any) -> Any:
        checked.set()
        async with asyncio.timeout(10):
            await changed.wait()
        return await issue(*args, **kwargs)

    monkeypatch.setattr(store, "issue_token", issue_after_change)

    async def change() -> None:
        async with asyncio.timeout(10):
            await checked.wait()
        response = await client.post(
            "/management/instances/shop/auth",
            json={"method": "token", "password": "new-pw"},
            headers=bearer(admin),
        )
        assert await _status(response) == 204
        changed.set()

    stale, _ = await asyncio.gather(
        client.post(
            "/instances/shop/private/token",
            json={"scope": "readonly"},
            headers=basic("shop", "old-pw"),
        ),
        change(),
    )
    monkeypatch.undo()
    assert stale.status == 401, "a token of the old password outlived the change"
    assert (await stale.json())["code"] == 2015
    fresh = await login(client, "shop", "new-pw")
    response = await client.get("/instances/shop/private/tokens", headers=bearer(fresh))
    assert response.status == 200
    assert len((await response.json())["tokens"]) == 1
