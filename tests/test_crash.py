"""Crash safety: SIGKILL the real daemon under load; every acknowledged change survives.

The daemon runs as its own process on a free loopback port (bcrypt cost 4).  Client
tasks stream password changes (through ``/management/instances/$I/auth`` with the
admin's token, or ``/instances/$I/private/auth`` with a fresh token of the instance)
and logins at it; at a random moment (seeded) the daemon is killed, checked with
``PRAGMA integrity_check`` and restarted on the same database.  Then, per instance:

* exactly one password works: the last acknowledged one, or the one whose change was
  in flight at the kill;
* every token acknowledged before the final change was sent is gone (a password change
  never commits without revoking the tokens), and every token requested after the
  final change was acknowledged still works.

Order is taken from one counter of events in this process: an answer received before
a request is sent means the first operation committed before the second started.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import os
import random
import signal
import socket
import sqlite3
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest

ROUNDS = 5
INSTANCES = ("s0", "s1", "s2")
LOGIN_TASKS = 2
SEED = 20261203
START_TIMEOUT_S = 20.0
REQUEST_TIMEOUT_S = 10.0
DAEMON = Path(sys.executable).with_name("merchant-authd")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _basic(user: str, password: str) -> dict[str, str]:
    raw = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {raw}"}


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


class Daemon:
    """The daemon process on a fixed port and database, started and killed."""

    def __init__(self, directory: Path) -> None:
        self.port = _free_port()
        self.database = directory / "authd.sqlite3"
        self.log = directory / "daemon.log"
        self.config = directory / "authd.conf"
        self.config.write_text(
            "[merchant]\nSERVE = tcp\nBIND_TO = 127.0.0.1\n"
            f"PORT = {self.port}\n"
            f"[merchantdb-sqlite]\nDATABASE = {self.database}\n"
            "[merchant-authd]\nBCRYPT_COST = 4\nTHROTTLE_FREE_ATTEMPTS = 1000\n"
            "LOG_LEVEL = WARNING\n"
        )
        self.base = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None

    def log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-2000:]

    async def start(self, session: aiohttp.ClientSession) -> None:
        env = {
            k: v
            for k, v in os.environ.items()
            if k
            not in (
                "TALER_MERCHANT_TOKEN",
                "TALER_MERCHANT_PASSWORD",
                "NOTIFY_SOCKET",
                "JOURNAL_STREAM",
            )
        }
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [str(DAEMON), "-c", str(self.config)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env=env,
            )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + START_TIMEOUT_S
        while loop.time() < deadline:
            assert self.process.poll() is None, "daemon exited:\n" + self.log_tail()
            try:
                async with session.get(self.base + "/config") as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.05)
        raise AssertionError("daemon did not answer:\n" + self.log_tail())

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)
        self.process = None


@dataclass
class Change:
    password: str
    sent: int
    acked: int | None = None


@dataclass
class Token:
    token: str
    serial: int
    sent: int
    acked: int


@dataclass
class Shop:
    """What the clients know about one instance."""

    id: str
    password: str  # the last acknowledged (or verified) password
    changes: list[Change] = field(default_factory=list)
    tokens: list[Token] = field(default_factory=list)
    generation: int = 0


class Load:
    """The client tasks of one round, until the daemon dies."""

    def __init__(
        self,
        daemon: Daemon,
        session: aiohttp.ClientSession,
        admin: str,
        clock: itertools.count[int],
        rng: random.Random,
    ) -> None:
        self.daemon = daemon
        self.session = session
        self.admin = admin
        self.clock = clock
        self.rng = rng

    async def _login(self, shop: Shop, scope: str = "readonly") -> Token | None:
        sent = next(self.clock)
        async with self.session.post(
            f"{self.daemon.base}/instances/{shop.id}/private/token",
            json={"scope": scope},
            headers=_basic(shop.id, shop.password),
        ) as response:
            if response.status == 401:
                return None
            assert response.status == 200, await response.text()
            body = await response.json()
        token = Token(body["access_token"], body["serial"], sent, next(self.clock))
        shop.tokens.append(token)
        return token

    async def _change(self, shop: Shop) -> None:
        shop.generation += 1
        password = f"{shop.id}-pw-{shop.generation}"
        if self.rng.random() < 0.5:
            url = f"{self.daemon.base}/management/instances/{shop.id}/auth"
            headers = _bearer(self.admin)
        else:
            own = await self._login(shop, "all")
            assert own is not None, "the changer's own login failed"
            url = f"{self.daemon.base}/instances/{shop.id}/private/auth"
            headers = _bearer(own.token)
        change = Change(password, next(self.clock))
        shop.changes.append(change)
        async with self.session.post(
            url, json={"method": "token", "password": password}, headers=headers
        ) as response:
            assert response.status == 204, await response.text()
        change.acked = next(self.clock)
        shop.password = password

    async def changer(self, shop: Shop) -> None:
        while True:
            await self._change(shop)
            await asyncio.sleep(self.rng.random() * 0.02)

    async def logger_in(self, shop: Shop) -> None:
        while True:
            await self._login(shop)

    async def run(self, shops: list[Shop], kill_after: float) -> int:
        """Run the load, kill the daemon after ``kill_after`` s; the kill's time."""
        tasks = []
        for shop in shops:
            tasks.append(self.changer(shop))
            tasks += [self.logger_in(shop) for _ in range(LOGIN_TASKS)]
        running = [asyncio.ensure_future(_until_dead(task)) for task in tasks]
        await asyncio.sleep(kill_after)
        self.daemon.kill()
        killed = next(self.clock)
        await asyncio.gather(*running)
        return killed


async def _until_dead(work: Any) -> None:
    try:
        await work
    except (aiohttp.ClientError, asyncio.TimeoutError):
        return


def check_database(path: Path) -> None:
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
    conn.close()


async def verify(
    daemon: Daemon, session: aiohttp.ClientSession, shop: Shop, killed: int
) -> None:
    """Check one instance after a restart, and reset what the clients know."""

    async def works(password: str) -> str | None:
        async with session.post(
            f"{daemon.base}/instances/{shop.id}/private/token",
            json={"scope": "all"},
            headers=_basic(shop.id, password),
        ) as response:
            assert response.status in (200, 401), await response.text()
            if response.status == 401:
                return None
            token: str = (await response.json())["access_token"]
            return token

    in_flight = [c for c in shop.changes if c.acked is None]
    assert len(in_flight) <= 1
    acked = [c for c in shop.changes if c.acked is not None]
    working = {}
    for candidate in {shop.password, *(c.password for c in in_flight)}:
        issued = await works(candidate)
        if issued is not None:
            working[candidate] = issued
    assert len(working) == 1, f"{shop.id}: passwords working: {sorted(working)}"
    ((password, fresh),) = working.items()
    final = next((c for c in reversed(shop.changes) if c.password == password), None)
    if final is not None and final.acked is None:
        final.acked = killed  # it committed before the kill; exactly when is unknown
        committed_by = killed
    elif final is not None:
        assert final.acked is not None
        committed_by = final.acked
    # A change acknowledged after the last one that works would be lost.
    if acked and final is not None:
        assert acked[-1].acked is not None and acked[-1].acked <= committed_by

    async def alive(token: Token) -> bool:
        async with session.get(
            f"{daemon.base}/instances/{shop.id}/private", headers=_bearer(token.token)
        ) as response:
            assert response.status in (200, 401), await response.text()
            return response.status == 200

    survivors = []
    for token in shop.tokens:
        is_alive = await alive(token)
        if final is not None and token.acked < final.sent:
            assert not is_alive, f"{shop.id}: token {token.serial} outlived a change"
        if final is None or token.sent > committed_by:
            assert is_alive, f"{shop.id}: acknowledged token {token.serial} lost"
        if is_alive:
            survivors.append(token)
    async with session.get(
        f"{daemon.base}/instances/{shop.id}/private/tokens?limit=1000",
        headers=_bearer(fresh),
    ) as response:
        assert response.status == 200
        listed = {t["serial"] for t in (await response.json())["tokens"]}
    assert {t.serial for t in survivors} <= listed
    assert not {t.serial for t in shop.tokens if t not in survivors} & listed
    # What survived committed before the kill: it is "before" any later change.
    shop.password = password
    shop.changes = [] if final is None else [final]
    shop.tokens = [Token(t.token, t.serial, killed, killed) for t in survivors]


@pytest.mark.skipif(not DAEMON.exists(), reason="merchant-authd is not installed")
async def test_acknowledged_changes_survive_sigkill(tmp_path: Path) -> None:
    rng = random.Random(SEED)
    clock = itertools.count(1)
    daemon = Daemon(tmp_path)
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
    connector = aiohttp.TCPConnector(limit=64)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        try:
            await daemon.start(session)
            async with session.post(
                daemon.base + "/management/instances",
                json={
                    "id": "admin",
                    "name": "Admin",
                    "auth": {"method": "token", "password": "admin-pw"},
                },
            ) as response:
                assert response.status == 204, await response.text()
            async with session.post(
                daemon.base + "/private/token",
                json={"scope": "all", "duration": {"d_us": "forever"}},
                headers=_basic("admin", "admin-pw"),
            ) as response:
                assert response.status == 200, await response.text()
                admin = (await response.json())["access_token"]
            shops = []
            for shop_id in INSTANCES:
                async with session.post(
                    daemon.base + "/management/instances",
                    json={
                        "id": shop_id,
                        "name": f"Shop {shop_id}",
                        "auth": {"method": "token", "password": f"{shop_id}-pw-0"},
                    },
                    headers=_bearer(admin),
                ) as response:
                    assert response.status == 204, await response.text()
                shops.append(Shop(shop_id, f"{shop_id}-pw-0"))
            changes = tokens = 0
            for _ in range(ROUNDS):
                load = Load(daemon, session, admin, clock, rng)
                killed = await load.run(shops, rng.uniform(0.3, 1.2))
                changes += sum(len(s.changes) for s in shops)
                tokens += sum(len(s.tokens) for s in shops)
                check_database(daemon.database)
                await daemon.start(session)
                for shop in shops:
                    await verify(daemon, session, shop, killed)
            # The load did real work: the checks above were not vacuous.
            assert changes > ROUNDS * len(INSTANCES)
            assert tokens > changes
        finally:
            daemon.kill()
    check_database(daemon.database)
