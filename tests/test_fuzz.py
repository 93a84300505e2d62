"""Schema-based fuzzing: every operation of ``openapi.yaml`` against a running daemon.

schemathesis generates requests from the document, valid ones (positive) and ones
that break it somewhere (negative).  Each request goes to a daemon listening on a
loopback port and every answer must be documented: no 5xx, a documented status, a
body matching that status's schema (the exact ``code`` values included) and the
documented headers (``Retry-After``, ``Location``).

The daemon serves a prepared database: the admin instance, ``shop1`` and
``mfa-shop`` (sign-up with a validated e-mail address, so its logins need a second
factor), each with a refreshable ``all`` token, and an unsent challenge of
``mfa-shop``.  Requests are drawn with one of these instances (or ``default``,
which is redirected) and that challenge in their path or with generated ones,
with generated bodies or the document's examples, and with the instance's token,
its password, no credentials, or whatever the fuzzer generated.  Every example
gets a fresh copy of the database and a fresh daemon, so an example that deletes
an instance or changes a password cannot change what the next one meets, and a
failure replays alone.

Hypothesis runs derandomized, without its example database and without
shrinking (failures print a ``curl`` command), with a few examples per operation
so that the file stays well within a minute.  Inputs that generators hardly ever
produce but that once broke the daemon are replayed explicitly at the end.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import itertools
import re
import shutil
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Coroutine, Iterator, TypeVar

import pytest
import requests
import schemathesis
from aiohttp import web
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import (
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.core.result import Ok

import merchant_authd
from merchant_authd import config
from merchant_authd.config import Settings
from merchant_authd.web.app import create_app
from merchant_authd.web.protocol import TalerAppRunner, server_options

OPENAPI = Path(merchant_authd.__file__).resolve().parent / "openapi.yaml"
SCHEMA = schemathesis.openapi.from_path(OPENAPI)
OPERATIONS = {
    result.ok().label: result.ok()
    for result in SCHEMA.get_all_operations()
    if isinstance(result, Ok)
}
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    response_schema_conformance,
    response_headers_conformance,
]
EXAMPLES_PER_OPERATION = 8
FUZZ_SETTINGS = settings(
    max_examples=EXAMPLES_PER_OPERATION,
    deadline=None,
    derandomize=True,
    database=None,
    phases=[Phase.generate],
    suppress_health_check=list(HealthCheck),
)
PASSWORDS = {"admin": "admin-fuzz-pw", "shop1": "shop1-fuzz-pw", "mfa-shop": "mfa-pw"}
MFA_EMAIL = "owner@mfa-shop.example"
TIMEOUT_S = 30.0
CREDENTIALS = ("generated", "token", "password", "none")
_TAN = re.compile(r"\b([0-9]{8})\b")

T = TypeVar("T")


class DaemonThread:
    """An event loop in a thread, where daemons start, serve and stop."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self.loop.run_forever, name="fuzzed-daemon", daemon=True
        )
        self._thread.start()

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run ``coroutine`` on the daemon's loop and wait for its result."""
        future = asyncio.run_coroutine_threadsafe(coroutine, self.loop)
        return future.result(TIMEOUT_S)

    def close(self) -> None:
        """Stop the loop and the thread."""
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(TIMEOUT_S)
        self.loop.close()


async def _start(settings: Settings) -> tuple[web.AppRunner, str]:
    # The runner merchant-authd itself uses, so that answers to requests the HTTP
    # parser rejects are the daemon's too.
    runner = TalerAppRunner(
        create_app(settings),
        access_log=None,
        shutdown_timeout=1.0,
        **server_options(),
    )
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    host, port = runner.addresses[0][:2]
    return runner, f"http://{host}:{port}"


@dataclass(frozen=True)
class World:
    """The prepared database and what the fuzzer may use from it."""

    template: Path
    settings: Settings
    tokens: dict[str, str]
    challenge_id: str
    serials: tuple[int, ...]


def _basic(instance_id: str, password: str) -> str:
    raw = base64.b64encode(f"{instance_id}:{password}".encode()).decode()
    return f"Basic {raw}"


def _prefix(instance_id: str) -> str:
    return "" if instance_id == "admin" else f"/instances/{instance_id}"


class Setup:
    """Drives a running daemon through the API to build the prepared database."""

    def __init__(self, base_url: str, outbox: Path) -> None:
        self.base_url = base_url
        self.outbox = outbox
        self.session = requests.Session()

    def call(
        self, method: str, path: str, status: int, **kwargs: Any
    ) -> requests.Response:
        response = self.session.request(
            method, self.base_url + path, timeout=TIMEOUT_S, **kwargs
        )
        assert response.status_code == status, (method, path, response.text)
        return response

    def solve(self, instance_id: str, challenge: dict[str, Any]) -> str:
        """Have the TAN sent, read it from the outbox, confirm it; the id."""
        path = f"/instances/{instance_id}/challenge/{challenge['challenge_id']}"
        self.call("POST", path, 200, json={})
        match = _TAN.search(self.outbox.read_text("utf-8"))
        assert match is not None
        self.call("POST", path + "/confirm", 204, json={"tan": match.group(1)})
        return str(challenge["challenge_id"])

    def instance(self, instance_id: str, **extra: Any) -> dict[str, Any]:
        return {
            "id": instance_id,
            "name": f"Shop {instance_id}",
            "auth": {"method": "token", "password": PASSWORDS[instance_id]},
            **extra,
        }

    def login(self, instance_id: str, **headers: str) -> requests.Response:
        auth = _basic(instance_id, PASSWORDS[instance_id])
        return self.session.post(
            f"{self.base_url}{_prefix(instance_id)}/private/token",
            json={"scope": "all:refreshable", "description": "fuzz"},
            headers={"Authorization": auth, **headers},
            timeout=TIMEOUT_S,
        )

    def build(self) -> tuple[dict[str, str], str, tuple[int, ...]]:
        self.call("POST", "/management/instances", 204, json=self.instance("admin"))
        admin = self.login("admin").json()
        bearer = {"Authorization": f"Bearer {admin['access_token']}"}
        self.call(
            "POST",
            "/management/instances",
            204,
            json=self.instance("shop1"),
            headers=bearer,
        )
        shop1 = self.login("shop1").json()
        signup = self.instance("mfa-shop", email=MFA_EMAIL)
        first = self.call("POST", "/instances", 202, json=signup).json()
        solved = [self.solve("mfa-shop", c) for c in first["challenges"]]
        header = {"Taler-Challenge-Ids": ",".join(solved)}
        self.call("POST", "/instances", 204, json=signup, headers=header)
        pending = self.login("mfa-shop")
        assert pending.status_code == 202, pending.text
        solved = [self.solve("mfa-shop", c) for c in pending.json()["challenges"]]
        mfa = self.login("mfa-shop", **{"Taler-Challenge-Ids": ",".join(solved)})
        assert mfa.status_code == 200, mfa.text
        unsent = self.login("mfa-shop")
        assert unsent.status_code == 202, unsent.text
        tokens = {
            "admin": admin["access_token"],
            "shop1": shop1["access_token"],
            "mfa-shop": mfa.json()["access_token"],
        }
        serials = (admin["serial"], shop1["serial"], mfa.json()["serial"])
        return tokens, unsent.json()["challenges"][0]["challenge_id"], serials


@pytest.fixture(scope="module")
def daemon_thread() -> Iterator[DaemonThread]:
    thread = DaemonThread()
    yield thread
    thread.close()


@pytest.fixture(scope="module")
def world(
    daemon_thread: DaemonThread, tmp_path_factory: pytest.TempPathFactory
) -> World:
    root = tmp_path_factory.mktemp("fuzz")
    outbox = root / "outbox.txt"
    helper = root / "tan-helper.sh"
    helper.write_text(f'#!/bin/sh\ncat > "{outbox}"\n', "utf-8")
    helper.chmod(0o700)
    template = root / "template.sqlite3"
    daemon_settings = config.defaults(
        database=template,
        bcrypt_cost=4,
        self_provisioning=True,
        helper_email=helper,
        helper_sms=helper,
    )
    runner, base_url = daemon_thread.run(_start(daemon_settings))
    setup = Setup(base_url, outbox)
    try:
        tokens, challenge_id, serials = setup.build()
    finally:
        setup.session.close()
        daemon_thread.run(runner.cleanup())
    return World(template, daemon_settings, tokens, challenge_id, serials)


_COPIES = itertools.count()


def _copy_database(template: Path) -> Path:
    """A fresh copy of the prepared database (with its WAL file, if any)."""
    copy = template.with_name(f"example-{next(_COPIES)}.sqlite3")
    for part in template.parent.glob(template.name + "*"):
        suffix = part.name[len(template.name) :]
        shutil.copyfile(part, copy.with_name(copy.name + suffix))
    return copy


def _path_variants(operation: Any, world: World) -> list[dict[str, Any]]:
    """Fixed path parameters to draw from; ``{}`` lets the fuzzer choose."""
    names = {p.name for p in operation.path_parameters}
    variants: list[dict[str, Any]] = [{}]
    if "challenge_id" in names:
        fixed: dict[str, Any] = {"challenge_id": world.challenge_id}
        if "instance" in names:
            fixed["instance"] = "mfa-shop"
        variants.append(fixed)
    elif "instance" in names:
        # "default" is redirected (308) on /instances/... paths.
        variants += [{"instance": i} for i in (*PASSWORDS, "default")]
    if "serial" in names:
        variants = [dict(v, serial=s) for v in variants for s in world.serials] + [{}]
    return variants


def _credentials(case: Any, kind: str, world: World) -> None:
    """Replace the generated ``Authorization`` header as ``kind`` says."""
    if kind == "generated":
        return
    if case.headers is None:
        case.headers = {}
    case.headers.pop("Authorization", None)
    if kind == "none":
        return
    instance_id = (case.path_parameters or {}).get("instance", "admin")
    if case.operation.path.startswith("/management/") or instance_id not in PASSWORDS:
        instance_id = "admin"
    if kind == "token":
        case.headers["Authorization"] = f"Bearer {world.tokens[instance_id]}"
    elif case.operation.path.endswith("/private/token"):
        case.headers["Authorization"] = _basic(instance_id, PASSWORDS[instance_id])
    else:
        password = PASSWORDS[instance_id]
        case.headers["Authorization"] = f"Bearer secret-token:{password}"


def _has_inputs(operation: Any) -> bool:
    raw = operation.definition.raw
    return bool(raw.get("parameters") or raw.get("requestBody") or raw.get("security"))


def _fuzz_targets() -> Iterator[Any]:
    for label, operation in OPERATIONS.items():
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            if mode is GenerationMode.NEGATIVE and not _has_inputs(operation):
                continue  # nothing a negative example could break
            yield pytest.param(label, mode, id=f"{label}-{mode.value}")


def test_every_operation_is_fuzzed() -> None:
    documented = [
        (method, path)
        for path, item in SCHEMA.raw_schema["paths"].items()
        for method in item
    ]
    assert OPERATIONS
    assert len(OPERATIONS) == len(documented)


@pytest.mark.parametrize(("label", "mode"), list(_fuzz_targets()))
def test_operation_answers_as_documented(
    label: str, mode: GenerationMode, world: World, daemon_thread: DaemonThread
) -> None:
    operation = OPERATIONS[label]
    strategies = []
    for fixed in _path_variants(operation, world):
        strategies.append(operation.as_strategy(mode, path_parameters=fixed or None))
        if mode is GenerationMode.POSITIVE:
            # The document's own examples: realistic bodies that get past validation.
            strategies += operation.get_strategies_from_examples(
                path_parameters=fixed or None
            )
    cases = st.one_of(*strategies)

    @FUZZ_SETTINGS
    @given(case=cases, kind=st.sampled_from(CREDENTIALS))
    def answers_as_documented(case: Any, kind: str) -> None:
        _credentials(case, kind, world)
        response = _serve(case, world, daemon_thread)
        case.validate_response(response, checks=CHECKS)

    answers_as_documented()


def _serve(case: Any, world: World, daemon_thread: DaemonThread) -> Any:
    """Send ``case`` to a fresh daemon on a fresh copy of the prepared database."""
    copy = _copy_database(world.template)
    runner, base_url = daemon_thread.run(
        _start(dataclasses.replace(world.settings, database=copy))
    )
    try:
        return case.call(base_url=base_url, timeout=TIMEOUT_S)
    finally:
        daemon_thread.run(runner.cleanup())
        for path in copy.parent.glob(copy.name + "*"):
            path.unlink()


def _as_sent_in_utf8(text: str) -> str:
    # HTTP client libraries send header values as Latin-1; this makes the bytes on
    # the wire the UTF-8 encoding of ``text``, which is how the daemon reads them.
    return text.encode("utf-8").decode("latin-1")


SIGN_UP = {
    "id": "shop7",
    "name": "Shop 7",
    "email": "owner@shop7.example",
    "auth": {"method": "token", "password": "pw7"},
}

#: Inputs a generator hardly ever draws, found next to the fuzzing: a letter that
#: grows when upper-cased ("ß" -> "SS") where base32 text is expected (this was a
#: 500), digits outside ASCII where an integer is expected ("²" was a 500, "١" was
#: taken for 1), and a line break in the query of a redirected request (the
#: redirect put it into ``Location`` decoded, and the connection was dropped).
UNUSUAL = [
    pytest.param(
        "GET /private",
        {"headers": {"Authorization": _as_sent_in_utf8("secret-token:" + "ß" * 52)}},
        401,
        id="access-token-with-sharp-s",
    ),
    pytest.param(
        "POST /challenge/{challenge_id}",
        {"path_parameters": {"challenge_id": "ß" * 52}, "body": {}},
        404,
        id="challenge-id-with-sharp-s",
    ),
    pytest.param(
        "POST /instances",
        {"query": {"token_validity_ms": "\u00b2"}, "body": SIGN_UP},
        400,
        id="superscript-two-as-integer",
    ),
    pytest.param(
        "POST /instances",
        {"query": {"token_validity_ms": "\u0661"}, "body": SIGN_UP},
        400,
        id="arabic-indic-one-as-integer",
    ),
    pytest.param(
        "GET /instances/{instance}/private/tokens",
        {"path_parameters": {"instance": "default"}, "query": {"limit": "1\r\n"}},
        308,
        id="line-break-in-redirected-query",
    ),
    pytest.param(
        "GET /private/tokens",
        {"query": {"limit": "\u0665"}},
        400,
        id="arabic-indic-five-as-limit",
    ),
]


@pytest.mark.parametrize(("label", "request_parts", "status"), UNUSUAL)
def test_unusual_input_answers_as_documented(
    label: str,
    request_parts: dict[str, Any],
    status: int,
    world: World,
    daemon_thread: DaemonThread,
) -> None:
    case = OPERATIONS[label].Case(**request_parts)
    if case.headers is None or "Authorization" not in case.headers:
        _credentials(case, "token", world)
    response = _serve(case, world, daemon_thread)
    assert response.status_code == status, response.text
    case.validate_response(response, checks=CHECKS)
