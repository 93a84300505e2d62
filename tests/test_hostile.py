"""Property tests: arbitrary bodies and path parameters on every route.

For every route of the table, under each of its paths, hypothesis sends arbitrary JSON
(random objects, the route's own body with one member replaced by a value of any
type, nulls, huge integers, deep nesting, long and non-ASCII strings, lone
surrogates), raw bytes, and arbitrary path parameters (any text, percent-encoded
bytes, dot segments, very long values), with and without valid credentials.  The
server runs behind :class:`TalerAppRunner` as in production.  Whatever arrives, the
answer is never a 5xx; every error is an ``ErrorDetail`` (integer ``code``, string
``hint``, no traceback) and its status is one the API documents for that route.
"""

from __future__ import annotations

import io
import json
import re
from dataclasses import dataclass
from typing import Any, AsyncIterator
from urllib.parse import quote

import aiohttp
import pytest
from conftest import ADMIN_PASSWORD, basic, bearer, instance_body
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_raw_http import serving
from yarl import URL

from merchant_authd import config
from merchant_authd.config import Settings
from merchant_authd.errors import EC
from merchant_authd.web.app import create_app
from merchant_authd.web.protocol import DEFAULT_LIMITS
from merchant_authd.web.routes import ROUTES, paths

#: The hypothesis profile of this file: few examples per route, no example database
#: (runs stay independent of earlier ones), no deadline (the host is shared).
settings.register_profile(
    "hostile",
    max_examples=25,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
HOSTILE = settings.get_profile("hostile")

TRACEBACK_MARKS = ("Traceback", 'File "')
#: Statuses any route may answer (section 1.6 of the API description).
GENERIC = {400, 404, 405, 413, 414}
#: Per route (method, path without the instance prefix): the documented statuses.
DOCUMENTED: dict[tuple[str, str], set[int]] = {
    ("GET", "/config"): {200},
    ("GET", "/openapi.yaml"): {200},
    ("POST", "/instances"): {200, 202, 204, 403, 409, 429},
    ("POST", "/instances/{instance}/forgot-password"): {202, 204, 403, 429},
    ("POST", "/challenge/{challenge_id}"): {200, 410, 429},
    ("POST", "/challenge/{challenge_id}/confirm"): {204, 409, 410, 429},
    ("POST", "/management/instances"): {200, 202, 204, 401, 403, 409, 429},
    ("GET", "/management/instances"): {200, 401, 403, 429},
    ("GET", "/management/instances/{instance}"): {200, 401, 403, 429},
    ("PATCH", "/management/instances/{instance}"): {202, 204, 401, 403, 409, 429},
    ("DELETE", "/management/instances/{instance}"): {202, 204, 401, 403, 409, 429},
    ("POST", "/management/instances/{instance}/auth"): {202, 204, 401, 403, 429},
    ("GET", "/private"): {200, 401, 403, 429},
    ("PATCH", "/private"): {202, 204, 401, 403, 409, 429},
    ("DELETE", "/private"): {202, 204, 401, 403, 409, 429},
    ("POST", "/private/auth"): {202, 204, 401, 403, 429},
    ("POST", "/private/token"): {200, 202, 401, 403, 429},
    ("DELETE", "/private/token"): {204, 401, 429},
    ("GET", "/private/tokens"): {200, 204, 401, 403, 429},
    ("DELETE", "/private/tokens/{serial}"): {204, 401, 403, 429},
}
#: Codes that go with a status whatever the route.
STATUS_CODES = {
    401: {EC.MERCHANT_GENERIC_UNAUTHORIZED},
    405: {EC.GENERIC_METHOD_INVALID},
    413: {EC.GENERIC_UPLOAD_EXCEEDS_LIMIT},
    414: {EC.GENERIC_URI_TOO_LONG},
}
KNOWN_CODES = {int(code) for code in EC}

_AUTH = {"method": "token", "password": "new-pw"}
#: A valid body per route, so that replacing one member reaches the member's checks.
VALID_BODIES: dict[str, dict[str, Any]] = {
    "/instances": instance_body("newshop", email="a@example.com"),
    "/management/instances": instance_body("newshop"),
    "/management/instances/{instance}": {"name": "Renamed", "use_stefan": True},
    "/private": {"name": "Renamed", "address": {"country": "CH"}},
    "/management/instances/{instance}/auth": _AUTH,
    "/private/auth": _AUTH,
    "/instances/{instance}/forgot-password": _AUTH,
    "/private/token": {"scope": "readonly", "duration": {"d_us": 3600000000}},
    "/challenge/{challenge_id}/confirm": {"tan": "12345678"},
}
#: Members one level down that get replaced too.
NESTED = ("auth", "duration", "address", "jurisdiction", "default_pay_delay")


@dataclass(frozen=True)
class Case:
    """One route under one of its paths."""

    method: str
    template: str
    route_path: str

    def __str__(self) -> str:
        return f"{self.method} {self.template}"


CASES = [
    Case(route.method, path, route.path) for route in ROUTES for path in paths(route)
]


@dataclass
class Server:
    """The served application, a session, and the credentials on offer."""

    base: str
    session: aiohttp.ClientSession
    credentials: dict[str, dict[str, str]]


async def _token(session: aiohttp.ClientSession, base: str, instance: str) -> str:
    prefix = "" if instance == "admin" else f"/instances/{instance}"
    password = ADMIN_PASSWORD if instance == "admin" else "shop1-pw"
    async with session.post(
        f"{base}{prefix}/private/token",
        json={"scope": "all:refreshable"},
        headers=basic(instance, password),
    ) as response:
        assert response.status == 200, await response.text()
        token: str = (await response.json())["access_token"]
    return token


@pytest.fixture
async def server(settings: Settings) -> AsyncIterator[Server]:
    """Admin and ``shop1`` instances, each with an ``all:refreshable`` token."""
    app = create_app(config.replace(settings, self_provisioning=True))
    async with serving(app, DEFAULT_LIMITS) as port:
        base = f"http://127.0.0.1:{port}"
        async with aiohttp.ClientSession() as session:
            for instance, password in (
                ("admin", ADMIN_PASSWORD),
                ("shop1", "shop1-pw"),
            ):
                headers: dict[str, str] = {}
                if instance != "admin":  # the admin instance is created first-run
                    headers = bearer(await _token(session, base, "admin"))
                async with session.post(
                    f"{base}/management/instances",
                    json=instance_body(instance, password),
                    headers=headers,
                ) as response:
                    assert response.status == 204, await response.text()
            credentials = {
                "none": {},
                "admin": bearer(await _token(session, base, "admin")),
                "shop1": bearer(await _token(session, base, "shop1")),
                "admin-basic": basic("admin", ADMIN_PASSWORD),
            }
            yield Server(base, session, credentials)


# Strategies -----------------------------------------------------------------------

#: Strings that have broken servers: lone surrogates, NUL, huge, non-ASCII.
hostile_strings = st.sampled_from(
    ["\ud800", "a\udfffb", "\x00", "secret-token:", "x" * 100_000, "é" * 5000, "🙂"]
)
_leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(10**40), max_value=10**40),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=30),
    st.sampled_from(["", "never", "forever", "secret-token:x"]),
    hostile_strings,
    st.integers(min_value=1000, max_value=20_000).map(lambda n: "é" * n),
)
json_values = st.recursive(
    _leaves,
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=12,
)


@st.composite
def mutated(draw: st.DrawFn, valid: dict[str, Any]) -> dict[str, Any]:
    """``valid`` with one member (or a member of a nested object) replaced or gone."""
    body: dict[str, Any] = json.loads(json.dumps(valid))
    holder = body
    nested = [name for name in NESTED if isinstance(body.get(name), dict)]
    descend: bool = draw(st.booleans())
    if nested and descend:
        holder = body[draw(st.sampled_from(nested))]
    name: str = draw(st.sampled_from(sorted(holder) + ["unknown_member"]))
    if draw(st.integers(0, 5)) == 0:
        holder.pop(name, None)
    else:
        holder[name] = draw(hostile_strings | json_values)
    return body


def _encode(value: Any, ascii_only: bool) -> bytes:
    return json.dumps(value, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")


def bodies(route_path: str) -> st.SearchStrategy[bytes]:
    """Request bodies for a route: mostly JSON, some raw bytes and extremes."""
    values = json_values | st.dictionaries(st.text(max_size=12), json_values)
    if route_path in VALID_BODIES:
        values = values | mutated(VALID_BODIES[route_path])
    encoded = st.builds(_encode, values, st.booleans())
    depth = st.integers(min_value=1, max_value=5000)
    extremes = st.one_of(
        st.binary(max_size=64),
        depth.map(lambda n: b"[" * n + b"]" * n),
        depth.map(lambda n: b'{"a":' * n + b"0" + b"}" * n),
        st.integers(min_value=300, max_value=6000).map(
            lambda n: b'{"tan": 1' + b"0" * n + b"}"
        ),
        st.sampled_from([b'{"tan": 1e400}', b'{"d_us": -1e400}', b"NaN", b""]),
        st.integers(min_value=900_000, max_value=1_200_000).map(
            lambda n: b'{"tan": "' + b"x" * n + b'"}'
        ),
    )
    return st.one_of(encoded, encoded, extremes)


def _percent_bytes(raw: bytes) -> str:
    return "".join(f"%{byte:02X}" for byte in raw)


def parameters(name: str) -> st.SearchStrategy[str]:
    """Raw (already URL-encoded) values of a path parameter."""
    meaningful = {
        "instance": ["admin", "shop1", "default", "nobody", "ADMIN", "shop1%00"],
        "serial": ["1", "0", "-1", "00001", str(2**63), "1e3", "%31"],
        "challenge_id": ["1-AAAA", "0", "x" * 64],
    }[name]
    return st.one_of(
        st.sampled_from(meaningful),
        st.text(min_size=1, max_size=40).map(lambda text: quote(text, safe="")),
        st.binary(min_size=1, max_size=30).map(_percent_bytes),
        st.sampled_from([".", "..", "...", "%2e", "%2E%2E", ".hidden", "a.b"]),
        st.integers(min_value=-(2**70), max_value=2**70).map(str),
        st.integers(min_value=1000, max_value=6000).map(lambda n: "x" * n),
        st.integers(min_value=200, max_value=1000).map(lambda n: "%C3%A9" * n),
    )


def targets(template: str) -> st.SearchStrategy[str]:
    """Request targets for a path template, parameters filled in."""
    names = re.findall(r"{(\w+)}", template)
    values = st.fixed_dictionaries({name: parameters(name) for name in names})
    query = st.sampled_from(["", "?purge=YES", "?limit=-1&offset=9", "?limit=x"])
    return st.builds(
        lambda filled, tail: template.format(**filled) + tail, values, query
    )


# The property -------------------------------------------------------------------


def check_answer(case: Case, target: str, status: int, raw: bytes, kind: str) -> None:
    """The invariants every answer keeps."""
    text = raw.decode("utf-8", errors="replace")
    where = f"{case.method} {target[:200]} as {kind}: {status} {text[:300]}"
    assert status < 500, where
    for mark in TRACEBACK_MARKS:
        assert mark not in text, where
    documented = DOCUMENTED[(case.method, case.route_path)] | GENERIC
    if target.startswith("/instances/default"):
        documented = documented | {308}
    assert status in documented, where
    if status < 400:
        return
    body = json.loads(raw)
    assert isinstance(body, dict), where
    assert isinstance(body.get("code"), int) and body["code"] in KNOWN_CODES, where
    assert isinstance(body.get("hint"), str), where
    if status in STATUS_CODES:
        assert body["code"] in STATUS_CODES[status], where


@pytest.mark.parametrize("case", CASES, ids=str)
@HOSTILE
@given(data=st.data())
async def test_route_survives_hostile_input(
    server: Server, case: Case, data: st.DataObject
) -> None:
    target = data.draw(targets(case.template), label="target")
    kind = data.draw(st.sampled_from(sorted(server.credentials)), label="credential")
    body = data.draw(bodies(case.route_path), label="body")
    headers = {"Content-Type": "application/json", **server.credentials[kind]}
    url = URL(server.base + target, encoded=True)
    async with server.session.request(
        case.method,
        url,
        data=io.BytesIO(body),  # bytes as such warn when large
        headers=headers,
        allow_redirects=False,
    ) as response:
        raw = await response.read()
        check_answer(case, target, response.status, raw, kind)


def test_every_route_is_covered() -> None:
    assert {(case.method, case.route_path) for case in CASES} == set(DOCUMENTED)
    assert len(CASES) == len({(case.method, case.template) for case in CASES})
