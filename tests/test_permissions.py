"""The permission matrix: every protected endpoint against every kind of credential.

Each row is one endpoint (method and path, with a request body chosen so that the
handler's own answer is predictable and does not disturb the next cell); each column is
one credential, always presented for the instance the path addresses (its *target*:
``admin`` for ``/private/...`` and ``/management/...``, ``shop1`` for
``/instances/shop1/...``).  A cell is the exact outcome: a 2xx status when the handler
ran and succeeded, or ``(status, code)`` of the ``ErrorDetail`` (a 400 from the handler
also proves that the guard let the request through).

Columns:

* ``none`` – no ``Authorization`` header;
* ``other`` – an ``all`` token of another instance (``shop1`` for admin targets,
  ``shop2`` for ``shop1``);
* ``admin`` – an ``all`` token of the admin instance;
* ``ro``, ``ro:r``, ``simple``, ``all``, ``all:r`` – target tokens of scope
  ``readonly``, ``readonly:refreshable``, ``order-simple``, ``all``,
  ``all:refreshable``;
* ``expired`` – an ``all`` target token issued with ``{"d_us": 0}``;
* ``revoked`` – an ``all`` target token after ``DELETE .../private/token``;
* ``pw`` – the legacy ``Bearer secret-token:<target password>``;
* ``basic`` – ``Basic target:<target password>``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Union

import pytest
from aiohttp.test_utils import TestClient
from conftest import ADMIN_PASSWORD, basic, bearer, create_instance, login

from merchant_authd.web.routes import ROUTES, Access, paths

PASSWORDS = {"admin": ADMIN_PASSWORD, "shop1": "pw-shop1", "shop2": "pw-shop2"}
OTHER = {"admin": "shop1", "shop1": "shop2"}
COLUMNS = (
    "none",
    "other",
    "admin",
    "ro",
    "ro:r",
    "simple",
    "all",
    "all:r",
    "expired",
    "revoked",
    "pw",
    "basic",
)
SCOPES = {
    "ro": "readonly",
    "ro:r": "readonly:refreshable",
    "simple": "order-simple",
    "all": "all",
    "all:r": "all:refreshable",
}

Cell = Union[int, tuple[int, int]]
U: Cell = (401, 2015)  # MERCHANT_GENERIC_UNAUTHORIZED
F: Cell = (403, 16)  # GENERIC_TOKEN_PERMISSION_INSUFFICIENT
P: Cell = (400, 26)  # GENERIC_PARAMETER_MALFORMED, from the handler
A: Cell = (400, 2602)  # MERCHANT_PRIVATE_POST_INSTANCE_AUTH_BAD_AUTH, from the handler

NEW_INSTANCE = {
    "id": "!not-an-id",
    "name": "x",
    "auth": {"method": "token", "password": "x"},
}
BAD_AUTH = {"method": "bogus"}
RENAME = {"name": "Renamed shop"}
LOGIN = {"scope": "readonly"}


@dataclass(frozen=True)
class Row:
    """One endpoint: request, target instance and expected cells (COLUMNS order)."""

    method: str
    path: str
    body: dict[str, Any] | None
    target: str
    cells: tuple[Cell, ...]

    @property
    def id(self) -> str:
        return f"{self.method} {self.path}"


# fmt: off
MATRIX: tuple[Row, ...] = (
    #   none other admin  ro   ro:r simple all  all:r expired revoked pw  basic
    Row("POST", "/management/instances", NEW_INSTANCE, "admin",
        (U, U, P, F, F, F, P, P, U, U, P, U)),
    Row("GET", "/management/instances", None, "admin",
        (U, U, 200, 200, 200, F, 200, 200, U, U, 200, U)),
    Row("GET", "/management/instances/shop1", None, "admin",
        (U, U, 200, 200, 200, F, 200, 200, U, U, 200, U)),
    Row("PATCH", "/management/instances/shop1", RENAME, "admin",
        (U, U, 204, F, F, F, 204, 204, U, U, 204, U)),
    Row("DELETE", "/management/instances/shop1?purge=maybe", None, "admin",
        (U, U, P, F, F, F, P, P, U, U, P, U)),
    Row("POST", "/management/instances/shop1/auth", BAD_AUTH, "admin",
        (U, U, A, F, F, F, A, A, U, U, A, U)),
    # The admin instance's private API, without prefix.
    Row("GET", "/private", None, "admin",
        (U, U, 200, 200, 200, F, 200, 200, U, U, 200, U)),
    Row("PATCH", "/private", RENAME, "admin",
        (U, U, 204, F, F, F, 204, 204, U, U, 204, U)),
    Row("DELETE", "/private?purge=maybe", None, "admin",
        (U, U, P, F, F, F, P, P, U, U, P, U)),
    Row("POST", "/private/auth", BAD_AUTH, "admin",
        (U, U, A, F, F, F, A, A, U, U, A, U)),
    Row("POST", "/private/token", LOGIN, "admin",
        (U, U, F, F, 200, F, F, 200, U, U, 200, 200)),
    Row("DELETE", "/private/token", None, "admin",
        (U, U, 204, 204, 204, 204, 204, 204, U, U, 204, 204)),
    Row("GET", "/private/tokens", None, "admin",
        (U, U, 200, 200, 200, F, 200, 200, U, U, 200, U)),
    Row("DELETE", "/private/tokens/{serial}", None, "admin",
        (U, U, 204, F, F, F, 204, 204, U, U, 204, U)),
    # Another instance's private API: the admin's token opens nothing here.
    Row("GET", "/instances/shop1/private", None, "shop1",
        (U, U, U, 200, 200, F, 200, 200, U, U, 200, U)),
    Row("PATCH", "/instances/shop1/private", RENAME, "shop1",
        (U, U, U, F, F, F, 204, 204, U, U, 204, U)),
    Row("DELETE", "/instances/shop1/private?purge=maybe", None, "shop1",
        (U, U, U, F, F, F, P, P, U, U, P, U)),
    Row("POST", "/instances/shop1/private/auth", BAD_AUTH, "shop1",
        (U, U, U, F, F, F, A, A, U, U, A, U)),
    Row("POST", "/instances/shop1/private/token", LOGIN, "shop1",
        (U, U, U, F, 200, F, F, 200, U, U, 200, 200)),
    Row("DELETE", "/instances/shop1/private/token", None, "shop1",
        (U, U, U, 204, 204, 204, 204, 204, U, U, 204, 204)),
    Row("GET", "/instances/shop1/private/tokens", None, "shop1",
        (U, U, U, 200, 200, F, 200, 200, U, U, 200, U)),
    Row("DELETE", "/instances/shop1/private/tokens/{serial}", None, "shop1",
        (U, U, U, F, F, F, 204, 204, U, U, 204, U)),
)
# fmt: on

#: ``/instances/admin/...`` is the admin instance itself: the same cells as the
#: unprefixed rows.
ADMIN_PREFIXED: tuple[Row, ...] = tuple(
    Row(row.method, "/instances/admin" + row.path, row.body, "admin", row.cells)
    for row in MATRIX
    if row.path.startswith("/private")
)


def _prefix(instance_id: str) -> str:
    return "" if instance_id == "admin" else f"/instances/{instance_id}"


@pytest.fixture
async def matrix_client(client: TestClient) -> TestClient:
    """The admin instance plus ``shop1`` and ``shop2``."""
    for instance_id, password in PASSWORDS.items():
        await create_instance(client, instance_id, password)
    return client


async def credential(client: TestClient, column: str, target: str) -> dict[str, str]:
    """The ``Authorization`` header of one column for ``target``."""
    password = PASSWORDS[target]
    if column == "none":
        return {}
    if column == "other":
        other = OTHER[target]
        return bearer(await login(client, other, PASSWORDS[other]))
    if column == "admin":
        return bearer(await login(client, "admin", ADMIN_PASSWORD))
    if column in SCOPES:
        return bearer(await login(client, target, password, scope=SCOPES[column]))
    if column == "expired":
        return bearer(await login(client, target, password, duration={"d_us": 0}))
    if column == "revoked":
        token = await login(client, target, password)
        response = await client.delete(
            f"{_prefix(target)}/private/token", headers=bearer(token)
        )
        assert response.status == 204
        return bearer(token)
    if column == "pw":
        return bearer(f"secret-token:{password}")
    assert column == "basic"
    return basic(target, password)


async def outcome(response: Any) -> Cell:
    """The cell a response fills: its status, plus the code of an error."""
    if response.status < 300:
        return int(response.status)
    body = await response.json()
    return (response.status, body["code"])


async def run_row(client: TestClient, row: Row) -> dict[str, Cell]:
    """Every column of one row, each with a fresh credential."""
    found: dict[str, Cell] = {}
    for column in COLUMNS:
        headers = await credential(client, column, row.target)
        path = row.path
        if "{serial}" in path:
            victim = await client.post(
                f"{_prefix(row.target)}/private/token",
                json={"scope": "readonly"},
                headers=basic(row.target, PASSWORDS[row.target]),
            )
            assert victim.status == 200
            path = path.format(serial=(await victim.json())["serial"])
        response = await client.request(
            row.method, path, json=row.body, headers=headers
        )
        found[column] = await outcome(response)
    return found


@pytest.mark.parametrize("row", MATRIX + ADMIN_PREFIXED, ids=lambda row: row.id)
async def test_permission_matrix(matrix_client, row):
    assert len(row.cells) == len(COLUMNS)
    found = await run_row(matrix_client, row)
    assert found == dict(zip(COLUMNS, row.cells, strict=True))


def test_matrix_covers_every_protected_route():
    served = set()
    for route in ROUTES:
        if route.access is Access.PUBLIC:
            continue
        for path in paths(route):
            served.add((route.method, path))
    covered = set()
    for row in MATRIX + ADMIN_PREFIXED:
        path = row.path.split("?")[0]
        path = path.replace("/instances/shop1", "/instances/{instance}", 1)
        path = path.replace("/instances/admin", "/instances/{instance}", 1)
        covered.add((row.method, path))
    assert served <= covered, sorted(served - covered)


@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [
        ("GET", "/config", None, 200),
        ("POST", "/instances", {}, 403),
        ("POST", "/instances/shop1/forgot-password", {}, 400),
        ("POST", "/challenge/unknown", {}, 404),
        ("POST", "/instances/shop1/challenge/unknown/confirm", {"tan": "1"}, 404),
    ],
)
async def test_public_routes_ignore_credentials(
    matrix_client, method, path, body, status
):
    outcomes = set()
    for column in ("none", "expired", "basic"):
        headers = await credential(matrix_client, column, "shop1")
        response = await matrix_client.request(method, path, json=body, headers=headers)
        outcomes.add(response.status)
    assert outcomes == {status}


async def test_deleted_instance_answers_404_on_private_paths(matrix_client):
    admin = await login(matrix_client, "admin", ADMIN_PASSWORD)
    token = await login(matrix_client, "shop1", PASSWORDS["shop1"])
    response = await matrix_client.delete(
        "/management/instances/shop1", headers=bearer(admin)
    )
    assert response.status == 204
    for headers in ({}, bearer(token), basic("shop1", PASSWORDS["shop1"])):
        response = await matrix_client.post(
            "/instances/shop1/private/token", json=LOGIN, headers=headers
        )
        assert (response.status, (await response.json())["code"]) == (404, 2000)
    response = await matrix_client.get(
        "/management/instances/shop1", headers=bearer(admin)
    )
    assert response.status == 200
