"""Secrets are compared in constant time, and every password answer costs one bcrypt.

No wall-clock time is measured here: timing assertions are flaky on a shared machine.
Instead the tests pin the mechanisms that make timing uninformative: the comparison
helpers go through ``hmac.compare_digest``, and a password check runs bcrypt exactly
once whether the instance, the password or the Basic user is right or wrong.
"""

from __future__ import annotations

import ast
import hmac
import threading
from pathlib import Path
from typing import Any, Callable

import pytest
from aiohttp.test_utils import TestClient
from conftest import (
    ADMIN_PASSWORD,
    MakeClient,
    basic,
    bearer,
    create_instance,
    instance_body,
    login,
)

import merchant_authd
from merchant_authd import crypto

PACKAGE = Path(merchant_authd.__file__).parent


class Spy:
    """A counting wrapper around a function."""

    def __init__(self, wrapped: Callable[..., Any]) -> None:
        self.wrapped = wrapped
        self.calls = 0

    def __call__(self, *args: Any) -> Any:
        self.calls += 1
        return self.wrapped(*args)


@pytest.fixture
def compare_spy(monkeypatch: pytest.MonkeyPatch) -> Spy:
    spy = Spy(hmac.compare_digest)
    monkeypatch.setattr(hmac, "compare_digest", spy)
    return spy


@pytest.fixture
def bcrypt_spy(monkeypatch: pytest.MonkeyPatch) -> Spy:
    spy = Spy(crypto._check_password_sync)
    monkeypatch.setattr(crypto, "_check_password_sync", spy)
    return spy


# -- constant-time comparison ---------------------------------------------------------


def test_secrets_equal_uses_compare_digest(compare_spy: Spy) -> None:
    assert crypto.secrets_equal("bootstrap-secret", "bootstrap-secret")
    assert not crypto.secrets_equal("bootstrap-secret", "bootstrap-secreT")
    assert compare_spy.calls == 2


def test_tan_matches_uses_compare_digest(compare_spy: Spy) -> None:
    salt = b"s" * 16
    stored = crypto.tan_digest("12345678", salt)
    assert crypto.tan_matches("12345678", salt, stored)
    assert not crypto.tan_matches("12345679", salt, stored)
    assert compare_spy.calls == 2


def _secret_name(node: ast.expr) -> str | None:
    name = None
    if isinstance(node, ast.Name):
        name = node.id
    elif isinstance(node, ast.Attribute):
        name = node.attr
    if name is None:
        return None
    lowered = name.lower()
    words = ("secret", "password", "digest", "tan", "bootstrap", "token_hash")
    if any(word == lowered or lowered.endswith("_" + word) for word in words):
        return name
    if lowered.startswith(("tan_", "secret_", "password_")):
        return name
    return None


def test_no_secret_is_compared_with_equality_operators() -> None:
    """Every comparison of secret material in the package goes through a helper."""
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text("utf-8"), str(path))
        for node in ast.walk(tree):
            if not isinstance(node, ast.Compare):
                continue
            if not any(isinstance(op, (ast.Eq, ast.NotEq)) for op in node.ops):
                continue
            for operand in (node.left, *node.comparators):
                name = _secret_name(operand)
                if name is not None:
                    offenders.append(f"{path.name}:{node.lineno} {name}")
    assert offenders == []


async def test_bootstrap_secret_is_compared_in_constant_time(
    make_client: MakeClient, compare_spy: Spy
) -> None:
    client = await make_client(bootstrap_secret="boot-secret-for-timing")
    response = await client.get(
        "/management/instances", headers=bearer("secret-token:boot-secret-for-timing")
    )
    assert response.status == 200
    assert compare_spy.calls >= 1


# -- one bcrypt computation per password answer ---------------------------------------


@pytest.fixture
async def shop(admin_client: TestClient) -> TestClient:
    await create_instance(admin_client, "shop", "right-password")
    return admin_client


async def _token_request(
    client: TestClient, path: str, headers: dict[str, str]
) -> tuple[int, int | None]:
    response = await client.post(path, json={"scope": "readonly"}, headers=headers)
    body = await response.json()
    return response.status, body.get("code")


async def test_right_password_costs_one_bcrypt(
    shop: TestClient, bcrypt_spy: Spy
) -> None:
    status, _ = await _token_request(
        shop, "/instances/shop/private/token", basic("shop", "right-password")
    )
    assert status == 200
    assert bcrypt_spy.calls == 1


async def test_wrong_password_costs_one_bcrypt(
    shop: TestClient, bcrypt_spy: Spy
) -> None:
    assert await _token_request(
        shop, "/instances/shop/private/token", basic("shop", "wrong-password")
    ) == (401, 2015)
    assert bcrypt_spy.calls == 1


async def test_basic_user_of_another_instance_costs_one_bcrypt(
    shop: TestClient, bcrypt_spy: Spy
) -> None:
    """The right password of ``shop`` under another user name: decoy check, 401."""
    assert await _token_request(
        shop, "/instances/shop/private/token", basic("nosuchshop", "right-password")
    ) == (401, 2015)
    assert await _token_request(
        shop, "/instances/shop/private/token", basic("admin", ADMIN_PASSWORD)
    ) == (401, 2015)
    assert bcrypt_spy.calls == 2


async def test_legacy_bearer_wrong_password_costs_one_bcrypt(
    shop: TestClient, bcrypt_spy: Spy
) -> None:
    response = await shop.get(
        "/instances/shop/private", headers=bearer("secret-token:wrong-password")
    )
    assert response.status == 401
    assert (await response.json())["code"] == 2015
    assert bcrypt_spy.calls == 1


async def test_admin_password_before_admin_exists_costs_one_bcrypt(
    client: TestClient, bcrypt_spy: Spy
) -> None:
    """No admin instance yet: a password offered for it is checked against the decoy."""
    response = await client.get(
        "/management/instances", headers=bearer("secret-token:guessed-admin-pw")
    )
    assert response.status == 401
    assert (await response.json())["code"] == 2015
    response = await client.post(
        "/management/instances",
        json=instance_body("admin", "x"),
        headers=bearer("secret-token:guessed-admin-pw"),
    )
    assert response.status == 401
    assert (await response.json())["code"] == 2015
    assert bcrypt_spy.calls == 2


async def test_token_shaped_bearer_costs_no_bcrypt(
    shop: TestClient, bcrypt_spy: Spy
) -> None:
    unknown, _ = crypto.new_access_token()
    response = await shop.get("/instances/shop/private", headers=bearer(unknown))
    assert response.status == 401
    assert (await response.json())["code"] == 2015
    assert bcrypt_spy.calls == 0


async def test_unknown_instance_in_path_answers_before_password_work(
    shop: TestClient, bcrypt_spy: Spy
) -> None:
    """Spec order: the instance lookup (404) comes before credentials."""
    assert await _token_request(
        shop, "/instances/nosuchshop/private/token", basic("nosuchshop", "pw")
    ) == (404, 2000)
    assert bcrypt_spy.calls == 0


async def test_throttled_password_costs_no_bcrypt(
    make_client: MakeClient, bcrypt_spy: Spy
) -> None:
    client = await make_client(throttle_free_attempts=1)
    await create_instance(client, "admin", ADMIN_PASSWORD)
    await create_instance(client, "shop", "right-password")
    bcrypt_spy.calls = 0
    assert await _token_request(
        client, "/instances/shop/private/token", basic("shop", "wrong-password")
    ) == (401, 2015)
    assert await _token_request(
        client, "/instances/shop/private/token", basic("shop", "wrong-password")
    ) == (401, 2015)
    assert bcrypt_spy.calls == 2
    status, code = await _token_request(
        client, "/instances/shop/private/token", basic("shop", "right-password")
    )
    assert (status, code) == (429, 2015)
    assert bcrypt_spy.calls == 2


async def test_bcrypt_never_runs_on_the_event_loop_thread(admin_client, monkeypatch):
    on_loop: list[str] = []
    hash_sync = crypto._hash_password_sync
    check_sync = crypto._check_password_sync

    def hashing(password: str, cost: int) -> str:
        if threading.current_thread() is threading.main_thread():
            on_loop.append("hash")
        return hash_sync(password, cost)

    def checking(password: str, stored: str) -> bool:
        if threading.current_thread() is threading.main_thread():
            on_loop.append("check")
        return check_sync(password, stored)

    monkeypatch.setattr(crypto, "_hash_password_sync", hashing)
    monkeypatch.setattr(crypto, "_check_password_sync", checking)
    await create_instance(admin_client, "shop1", "pw1")  # hash, plus admin login
    token = await login(admin_client, "shop1", "pw1")
    changed = await admin_client.post(
        "/instances/shop1/private/auth",
        json={"method": "token", "password": "pw2"},
        headers=bearer(token),
    )
    assert changed.status == 204
    await login(admin_client, "shop1", "pw2")
    legacy = await admin_client.get(
        "/instances/shop1/private", headers=bearer("secret-token:pw2")
    )
    assert legacy.status == 200
    assert on_loop == []
