"""Back-off of password guessing, per client address and per instance.

The test client always connects from 127.0.0.1; to play several clients, a test-only
middleware in front of the application relabels a request's peer address from the
``X-Test-Remote`` header.  Blocks are made long (minutes) so that no test can outrun
them; where a block must end, the throttle's clock is replaced.
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Awaitable, Callable

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from conftest import ADMIN_PASSWORD, basic, bearer, create_instance, login

import merchant_authd.crypto
import merchant_authd.throttle
from merchant_authd import config
from merchant_authd.config import Settings
from merchant_authd.errors import EC, TalerError
from merchant_authd.sqlite_store import SqliteStore
from merchant_authd.throttle import INSTANCE_FACTOR, AttemptLimiter, backoff
from merchant_authd.web.app import create_app

LONG_US = 600_000_000  # a 10-minute base delay: no test outruns it
UNAUTHORIZED = EC.MERCHANT_GENERIC_UNAUTHORIZED
PASSWORDS = {"shop1": "pw-shop1", "shop2": "pw-shop2"}

Client = Callable[..., Awaitable[TestClient]]


@web.middleware
async def relabel_remote(
    request: web.Request, handler: Callable[[web.Request], Awaitable[Any]]
) -> Any:
    """Pretend the request came from the address in ``X-Test-Remote``."""
    remote = request.headers.get("X-Test-Remote")
    if remote is not None:
        request = request.clone(remote=remote)
    return await handler(request)


@pytest.fixture
def make_shops(aiohttp_client: Any, settings: Settings) -> Client:
    """Build a client (settings overridden) on a database with admin, shop1, shop2."""

    async def make(populate: bool = True, **overrides: Any) -> TestClient:
        app = create_app(config.replace(settings, **overrides))
        app.middlewares.insert(0, relabel_remote)
        client: TestClient = await aiohttp_client(app)
        if populate:
            await create_instance(client, "admin", ADMIN_PASSWORD)
            for instance_id, password in PASSWORDS.items():
                await create_instance(client, instance_id, password)
        return client

    return make


async def attempt(
    client: TestClient,
    instance_id: str,
    password: str,
    remote: str | None = None,
    user: str | None = None,
) -> Any:
    """One Basic login at ``instance_id``'s token endpoint."""
    headers = basic(user or instance_id, password)
    if remote is not None:
        headers["X-Test-Remote"] = remote
    return await client.post(
        f"/instances/{instance_id}/private/token",
        json={"scope": "readonly"},
        headers=headers,
    )


async def outcome(response: Any) -> tuple[int, int | None]:
    if response.status == 200:
        return 200, None
    return response.status, (await response.json())["code"]


async def assert_throttled(response: Any, longest_s: int) -> int:
    """A 429 with code 2015 and a plausible ``Retry-After``; its seconds."""
    assert await outcome(response) == (429, UNAUTHORIZED)
    retry_after = int(response.headers["Retry-After"])
    assert 1 <= retry_after <= longest_s
    return retry_after


@pytest.fixture
def bcrypt_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts password hash comparisons."""
    calls: list[int] = []
    original = merchant_authd.crypto._check_password_sync

    def counting(password: str, stored: str) -> bool:
        calls.append(1)
        return original(password, stored)

    monkeypatch.setattr(merchant_authd.crypto, "_check_password_sync", counting)
    return calls


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The throttle's notion of now, moved by assigning ``clock[0]``."""
    now = [1_800_000_000.0]
    fake = SimpleNamespace(time=lambda: now[0])
    monkeypatch.setattr(merchant_authd.throttle, "time", fake)
    return now


# -- the schedule --------------------------------------------------------------------


def test_backoff_schedule():
    delay = backoff(5, 1.0, 900.0)
    assert [delay(n) for n in range(1, 18)] == [0.0] * 5 + [
        1.0,
        2.0,
        4.0,
        8.0,
        16.0,
        32.0,
        64.0,
        128.0,
        256.0,
        512.0,
        900.0,
        900.0,
    ]
    assert delay(10**6) == 900.0


def test_default_settings():
    settings = config.defaults()
    assert settings.throttle_free_attempts == 5
    assert settings.throttle_base_delay == 1_000_000
    assert settings.throttle_max_delay == 900_000_000
    assert INSTANCE_FACTOR == 4


# -- through the API -----------------------------------------------------------------


async def test_blocks_after_free_attempts(make_shops, bcrypt_calls):
    client = await make_shops(throttle_free_attempts=2, throttle_base_delay=LONG_US)
    token = await login(client, "shop1", PASSWORDS["shop1"])
    for _ in range(3):
        assert await outcome(await attempt(client, "shop1", "wrong")) == (
            401,
            UNAUTHORIZED,
        )
    bcrypt_calls.clear()
    # Blocked: even the right password is not checked.
    await assert_throttled(await attempt(client, "shop1", PASSWORDS["shop1"]), 600)
    response = await client.get(
        "/instances/shop1/private", headers=bearer("secret-token:" + PASSWORDS["shop1"])
    )
    await assert_throttled(response, 600)
    assert bcrypt_calls == []
    # Access tokens are no passwords: they keep working.
    response = await client.get("/instances/shop1/private", headers=bearer(token))
    assert response.status == 200


async def test_default_schedule(make_shops, clock):
    client = await make_shops()
    for _ in range(6):
        assert await outcome(await attempt(client, "shop1", "wrong")) == (
            401,
            UNAUTHORIZED,
        )
    retry_after = await assert_throttled(
        await attempt(client, "shop1", PASSWORDS["shop1"]), 1
    )
    assert retry_after == 1
    clock[0] += 1
    assert await outcome(await attempt(client, "shop1", PASSWORDS["shop1"])) == (
        200,
        None,
    )


async def test_delay_doubles_up_to_the_maximum(make_shops, clock):
    client = await make_shops(
        throttle_free_attempts=1,
        throttle_base_delay=10_000_000,
        throttle_max_delay=25_000_000,
    )
    right = PASSWORDS["shop1"]
    for _ in range(2):
        assert (await attempt(client, "shop1", "wrong")).status == 401
    waits = []
    for _ in range(3):
        waits.append(await assert_throttled(await attempt(client, "shop1", right), 60))
        clock[0] += waits[-1]
        assert (await attempt(client, "shop1", "wrong")).status == 401
    waits.append(await assert_throttled(await attempt(client, "shop1", right), 60))
    assert waits == [10, 20, 25, 25]
    clock[0] += 25
    assert (await attempt(client, "shop1", right)).status == 200


async def test_success_resets_the_count(make_shops):
    client = await make_shops(throttle_free_attempts=2, throttle_base_delay=LONG_US)
    right = PASSWORDS["shop1"]
    for _ in range(3):
        assert (await attempt(client, "shop1", "wrong")).status == 401
        assert (await attempt(client, "shop1", "wrong")).status == 401
        assert (await attempt(client, "shop1", right)).status == 200
    # Without the resets the third failure above would have started a block.
    assert (await attempt(client, "shop1", "wrong")).status == 401


async def test_address_is_blocked_for_every_instance(make_shops):
    client = await make_shops(throttle_free_attempts=2, throttle_base_delay=LONG_US)
    for _ in range(3):
        response = await attempt(client, "shop1", "wrong", remote="192.0.2.1")
        assert response.status == 401
    for instance_id, password in PASSWORDS.items():
        response = await attempt(client, instance_id, password, remote="192.0.2.1")
        await assert_throttled(response, 600)
    # Another address may still log in to the same instance.
    response = await attempt(client, "shop1", PASSWORDS["shop1"], remote="192.0.2.2")
    assert response.status == 200


async def test_instance_is_blocked_for_every_address(make_shops):
    client = await make_shops(throttle_free_attempts=1, throttle_base_delay=LONG_US)
    # One failure from each of many addresses stays within every address's
    # allowance, but the instance as a whole tolerates only 4 x 1.
    for host in range(1, 6):
        response = await attempt(client, "shop1", "wrong", remote=f"192.0.2.{host}")
        assert response.status == 401
    response = await attempt(client, "shop1", PASSWORDS["shop1"], remote="192.0.2.9")
    await assert_throttled(response, 600)
    response = await attempt(client, "shop2", PASSWORDS["shop2"], remote="192.0.2.9")
    assert response.status == 200


async def test_legacy_bearer_failures_count(make_shops):
    client = await make_shops(throttle_free_attempts=1, throttle_base_delay=LONG_US)
    for _ in range(2):
        response = await client.get(
            "/instances/shop1/private", headers=bearer("secret-token:wrong")
        )
        assert await outcome(response) == (401, UNAUTHORIZED)
    await assert_throttled(await attempt(client, "shop1", PASSWORDS["shop1"]), 600)


async def test_basic_naming_another_instance_counts(make_shops):
    client = await make_shops(throttle_free_attempts=1, throttle_base_delay=LONG_US)
    for _ in range(2):
        response = await attempt(client, "shop1", PASSWORDS["shop2"], user="shop2")
        assert await outcome(response) == (401, UNAUTHORIZED)
    await assert_throttled(await attempt(client, "shop1", PASSWORDS["shop1"]), 600)


async def test_token_shaped_bearers_are_not_counted(make_shops):
    client = await make_shops(throttle_free_attempts=1, throttle_base_delay=LONG_US)
    unknown = "secret-token:" + merchant_authd.crypto.crockford_encode(bytes(32))
    for _ in range(5):
        response = await client.get("/instances/shop1/private", headers=bearer(unknown))
        assert await outcome(response) == (401, UNAUTHORIZED)
    assert (await attempt(client, "shop1", PASSWORDS["shop1"])).status == 200


async def test_concurrent_guesses_cannot_skip_the_block(make_shops, bcrypt_calls):
    client = await make_shops(throttle_free_attempts=2, throttle_base_delay=LONG_US)
    bcrypt_calls.clear()
    responses = await asyncio.gather(
        *(attempt(client, "shop1", f"guess-{n}") for n in range(12))
    )
    statuses = sorted(response.status for response in responses)
    assert statuses == [401] * 3 + [429] * 9
    assert len(bcrypt_calls) == 3


async def test_block_survives_a_restart(make_shops):
    client = await make_shops(throttle_free_attempts=1, throttle_base_delay=LONG_US)
    for _ in range(2):
        assert (await attempt(client, "shop1", "wrong")).status == 401
    await client.close()
    restarted = await make_shops(
        populate=False, throttle_free_attempts=1, throttle_base_delay=LONG_US
    )
    await assert_throttled(await attempt(restarted, "shop1", PASSWORDS["shop1"]), 600)
    response = await attempt(restarted, "shop2", PASSWORDS["shop2"], remote="192.0.2.7")
    assert response.status == 200


# -- sign-up limiter -----------------------------------------------------------------


async def test_signup_limiter(tmp_path: Path, clock):
    store = await SqliteStore.open(tmp_path / "signup.sqlite3")
    try:
        limiter = AttemptLimiter(store, "signup", 2)
        await limiter.attempt("192.0.2.1")
        await limiter.attempt("192.0.2.1")
        with pytest.raises(TalerError) as raised:
            await limiter.attempt("192.0.2.1")
        assert (raised.value.status, raised.value.code) == (429, UNAUTHORIZED)
        assert 1 <= int(raised.value.headers["Retry-After"]) <= 3600
        await limiter.attempt("192.0.2.2")
        clock[0] += 3600
        await limiter.attempt("192.0.2.1")
    finally:
        await store.close()


# -- what a success clears, how addresses are counted, concurrency --------------------


async def test_success_elsewhere_does_not_clear_failures(make_shops):
    client = await make_shops(throttle_free_attempts=2, throttle_base_delay=LONG_US)
    for _ in range(2):
        response = await attempt(client, "shop1", "wrong", remote="192.0.2.1")
        assert response.status == 401
    # A login to an instance of one's own takes off only that instance's failures.
    ok = await attempt(client, "shop2", PASSWORDS["shop2"], remote="192.0.2.1")
    assert ok.status == 200
    assert (await attempt(client, "shop1", "wrong", remote="192.0.2.1")).status == 401
    blocked = await attempt(client, "shop1", PASSWORDS["shop1"], remote="192.0.2.1")
    await assert_throttled(blocked, 600)


async def test_ipv6_clients_count_by_their_64_network(make_shops):
    client = await make_shops(throttle_free_attempts=2, throttle_base_delay=LONG_US)
    for host in ("2001:db8:1:2::1", "2001:db8:1:2::2", "2001:db8:1:2:ffff::3"):
        assert (await attempt(client, "shop1", "wrong", remote=host)).status == 401
    neighbour = await attempt(
        client, "shop2", PASSWORDS["shop2"], remote="2001:db8:1:2::9"
    )
    await assert_throttled(neighbour, 600)
    other = await attempt(client, "shop2", PASSWORDS["shop2"], remote="2001:db8:1:3::9")
    assert other.status == 200


async def test_failures_are_forgotten_after_a_day(make_shops, clock):
    client = await make_shops(throttle_free_attempts=2, throttle_base_delay=LONG_US)
    for _ in range(2):
        assert (await attempt(client, "shop1", "wrong")).status == 401
    clock[0] += merchant_authd.throttle.FORGET_AFTER_S + 1
    # Two more failures would block had the old ones still counted.
    for _ in range(2):
        assert (await attempt(client, "shop1", "wrong")).status == 401
    assert (await attempt(client, "shop1", PASSWORDS["shop1"])).status == 200


async def test_right_passwords_are_checked_in_parallel(make_shops, monkeypatch):
    client = await make_shops()
    # Each check waits until a second one runs beside it: if the throttle queued
    # the logins of one instance behind each other, the barrier would time out.
    barrier = threading.Barrier(2, timeout=10)
    original = merchant_authd.crypto._check_password_sync

    def paired(password: str, stored: str) -> bool:
        barrier.wait()
        return original(password, stored)

    monkeypatch.setattr(merchant_authd.crypto, "_check_password_sync", paired)
    responses = await asyncio.gather(
        *(attempt(client, "shop1", PASSWORDS["shop1"]) for _ in range(4))
    )
    assert [r.status for r in responses] == [200] * 4
