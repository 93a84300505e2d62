"""The daemon as a real process: readiness, SIGTERM, SIGHUP and start-up failures.

Each test starts ``python -m merchant_authd`` on a free loopback port (``PORT = 0``;
the bound port is read from the start-up log line), waits a bounded time for it and
kills it in ``finally`` whatever happens.  :class:`Daemon` is shared with the other
real-process tests (``test_cli``, ``test_logging``).
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import Any, Callable

import aiohttp
import pytest
from conftest import ADMIN_PASSWORD, basic, instance_body

#: Upper bounds of the waits; generous, the machine is shared.
STARTUP_S = 60.0
STOP_S = 30.0
POLL_S = 0.05

_SERVING = re.compile(r"serving on (http://127\.0\.0\.1:\d+)")
#: Variables of the test environment that would change what the daemon does.
_SCRUBBED = (
    "NOTIFY_SOCKET",
    "JOURNAL_STREAM",
    "STATE_DIRECTORY",
    "TALER_MERCHANT_TOKEN",
    "TALER_MERCHANT_PASSWORD",
)


class NotifySocket:
    """A datagram socket standing in for systemd's ``NOTIFY_SOCKET``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))

    def receive(self, timeout: float = STARTUP_S) -> str:
        """The next message; fails after ``timeout`` seconds."""
        self.sock.settimeout(timeout)
        try:
            return self.sock.recv(4096).decode()
        except socket.timeout:
            raise AssertionError("no sd_notify message arrived") from None

    def __enter__(self) -> "NotifySocket":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.sock.close()


class Daemon:
    """A ``merchant-authd`` process with its configuration, database and log file.

    Use it as a context manager: leaving the block kills a process still running.
    With ``notify`` the daemon reports readiness there (``READY=1`` and a ``STATUS=``
    line with its URL); without it the start-up log line gives the URL.
    """

    def __init__(
        self,
        folder: Path,
        options: dict[str, dict[str, str]] | None = None,
        *,
        args: tuple[str, ...] = (),
        env: dict[str, str] | None = None,
        notify: NotifySocket | None = None,
        prefix: tuple[str, ...] = (),
    ) -> None:
        self.folder = folder
        self.config = folder / "merchant-authd.conf"
        self.database = folder / "authd.sqlite3"
        self.log_path = folder / "daemon.log"
        self.args = args
        self.prefix = prefix
        self.env = {k: v for k, v in os.environ.items() if k not in _SCRUBBED}
        self.env.update(env or {})
        self.notify = notify
        if notify is not None:
            self.env["NOTIFY_SOCKET"] = str(notify.path)
        self.ready = ""
        self.process: subprocess.Popen[bytes] | None = None
        self.url = ""
        self.write_config(options or {})

    def write_config(self, options: dict[str, dict[str, str]]) -> None:
        """Write the configuration file: test defaults, updated by ``options``."""
        sections: dict[str, dict[str, str]] = {
            "merchant": {"PORT": "0"},
            "merchantdb-sqlite": {"DATABASE": str(self.database)},
            "merchant-authd": {"BCRYPT_COST": "4"},
        }
        for section, values in options.items():
            sections.setdefault(section, {}).update(values)
        lines = []
        for section, values in sections.items():
            lines.append(f"[{section}]")
            lines += [f"{name} = {value}" for name, value in values.items()]
        self.config.write_text("\n".join(lines) + "\n")

    def command(self, *extra: str) -> list[str]:
        """The command line of ``merchant-authd`` with this configuration."""
        return [sys.executable, "-m", "merchant_authd", "-c", str(self.config), *extra]

    def start(self) -> "Daemon":
        """Start the daemon; returns once it serves (the URL is in ``url``).

        ``prefix`` (such as a tracer) runs the daemon; ``process`` is then the prefix.
        """
        with open(self.log_path, "ab") as log_file:
            self.process = subprocess.Popen(
                [*self.prefix, *self.command(*self.args)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=log_file,
                env=self.env,
            )
        if self.notify is not None:
            self.ready = self.notify.receive()
            lines = self.ready.splitlines()
            assert lines[0] == "READY=1", self.ready
            self.url = lines[1].removeprefix("STATUS=serving on ")
            return self
        deadline = time.monotonic() + STARTUP_S
        while time.monotonic() < deadline:
            match = _SERVING.search(self.log())
            if match:
                self.url = match.group(1)
                return self
            if self.process.poll() is not None:
                raise AssertionError(f"daemon exited at start:\n{self.log()}")
            time.sleep(POLL_S)
        raise AssertionError(f"daemon not serving after {STARTUP_S} s:\n{self.log()}")

    def log(self) -> str:
        """Everything the daemon wrote to standard error so far."""
        if not self.log_path.exists():
            return ""
        return self.log_path.read_text(errors="replace")

    def signal(self, signum: int) -> None:
        """Send ``signum`` to the daemon."""
        assert self.process is not None
        self.process.send_signal(signum)

    def wait(self, timeout: float = STOP_S) -> int:
        """The exit status, waiting at most ``timeout`` seconds."""
        assert self.process is not None
        return self.process.wait(timeout)

    def stop(self) -> int:
        """SIGTERM, then the exit status."""
        self.signal(signal.SIGTERM)
        return self.wait()

    def __enter__(self) -> "Daemon":
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(STOP_S)


async def create_admin(session: aiohttp.ClientSession, url: str, **extra: Any) -> None:
    """Create the admin instance the first-run way (no credentials, loopback)."""
    async with session.post(
        f"{url}/management/instances",
        json=instance_body("admin", ADMIN_PASSWORD, **extra),
    ) as response:
        assert response.status == 204, await response.text()


async def login(
    session: aiohttp.ClientSession,
    url: str,
    password: str = ADMIN_PASSWORD,
    **body: Any,
) -> dict[str, Any]:
    """POST /private/token of the admin instance with Basic auth; the 200 body."""
    async with session.post(
        f"{url}/private/token",
        json={"scope": "all", **body},
        headers=basic("admin", password),
    ) as response:
        assert response.status == 200, await response.text()
        result: dict[str, Any] = await response.json()
        return result


# -- readiness and shutdown -----------------------------------------------------------


async def test_sd_notify_ready_then_stopping(tmp_path: Path) -> None:
    with NotifySocket(tmp_path / "notify") as notify:
        with Daemon(tmp_path, notify=notify) as daemon:
            daemon.start()
            assert daemon.ready.splitlines() == [
                "READY=1",
                f"STATUS=serving on {daemon.url}",
            ]
            async with aiohttp.ClientSession() as session:
                async with session.get(f"{daemon.url}/config") as response:
                    assert response.status == 200
            daemon.signal(signal.SIGTERM)
            assert notify.receive().splitlines()[0] == "STOPPING=1"
            assert daemon.wait() == 0
    # The database was closed: the last connection folds the WAL back and removes it.
    assert daemon.database.exists()
    assert not Path(f"{daemon.database}-wal").exists()
    assert "stopped" in daemon.log()


async def _until(condition: Callable[[], bool], what: str) -> None:
    for _ in range(int(STARTUP_S / POLL_S)):
        if condition():
            return
        await asyncio.sleep(POLL_S)
    raise AssertionError(f"gave up waiting for {what}")


async def test_sigterm_lets_request_in_flight_finish(tmp_path: Path) -> None:
    started = tmp_path / "helper-started"
    release = tmp_path / "helper-release"
    helper = tmp_path / "slow-mail"
    # The helper holds its request until the test lets it go (or 60 s have passed).
    helper.write_text(
        f"#!/bin/sh\ntouch '{started}'\ni=0\n"
        f"while [ ! -e '{release}' ] && [ $i -lt 600 ]\n"
        "do sleep 0.1; i=$((i+1)); done\n"
        "cat >/dev/null\n"
    )
    helper.chmod(0o755)
    options = {
        "merchant": {"HELPER_EMAIL": str(helper), "MANDATORY_TAN_CHANNELS": "email"}
    }
    with Daemon(tmp_path, options) as daemon:
        daemon.start()
        async with aiohttp.ClientSession() as session:
            await create_admin(session, daemon.url, email="admin@example.com")
            async with session.post(
                f"{daemon.url}/private/token",
                json={"scope": "all"},
                headers=basic("admin", ADMIN_PASSWORD),
            ) as response:
                assert response.status == 202
                challenge_id = (await response.json())["challenges"][0]["challenge_id"]
            sending = asyncio.ensure_future(
                session.post(f"{daemon.url}/challenge/{challenge_id}", json={})
            )
            try:
                await _until(lambda: started.exists() or sending.done(), "the helper")
                assert started.exists(), daemon.log()
                daemon.signal(signal.SIGTERM)
                await _until(lambda: "shutting down" in daemon.log(), "SIGTERM")
                daemon.signal(signal.SIGHUP)
                await _until(lambda: "reload ignored" in daemon.log(), "SIGHUP")
                assert not sending.done()
                release.touch()
                response = await asyncio.wait_for(sending, STOP_S)
                async with response:
                    assert response.status == 200, await response.text()
                    body = await response.json()
                assert set(body) == {"solve_expiration", "earliest_retransmission"}
            finally:
                sending.cancel()
        assert daemon.wait() == 0
    assert "stopped" in daemon.log()
    assert not Path(f"{daemon.database}-wal").exists()


# -- SIGHUP ---------------------------------------------------------------------------


def _access_lines(log: str, path: str) -> int:
    return len(re.findall(rf"merchant_authd\.access: POST {re.escape(path)} ", log))


async def test_sighup_rereads_configuration(tmp_path: Path) -> None:
    first = {"merchant-authd": {"MAX_TOKEN_DURATION": "1 h", "LOG_LEVEL": "INFO"}}
    with NotifySocket(tmp_path / "notify") as notify:
        with Daemon(tmp_path, first, notify=notify) as daemon:
            daemon.start()
            async with aiohttp.ClientSession() as session:
                await create_admin(session, daemon.url)
                before = time.time()
                capped = await login(session, daemon.url, duration={"d_us": "forever"})
                assert capped["expiration"]["t_s"] <= before + 3600 + 60
                # Access lines are written once the answer is on its way.
                await _until(
                    lambda: _access_lines(daemon.log(), "/private/token") == 1,
                    "the access line",
                )

                # New values; PORT needs a restart and keeps its running value.
                daemon.write_config(
                    {
                        "merchant": {"PORT": "1"},
                        "merchant-authd": {
                            "MAX_TOKEN_DURATION": "forever",
                            "LOG_LEVEL": "WARNING",
                        },
                    }
                )
                daemon.signal(signal.SIGHUP)
                assert notify.receive().startswith("RELOADING=1\nMONOTONIC_USEC=")
                assert notify.receive() == "READY=1"
                forever = await login(session, daemon.url, duration={"d_us": "forever"})
                assert forever["expiration"] == {"t_s": "never"}
                assert _access_lines(daemon.log(), "/private/token") == 1

                # A file that does not load changes nothing.
                daemon.write_config({"merchant-authd": {"LOG_LEVEL": "LOUD"}})
                daemon.signal(signal.SIGHUP)
                assert notify.receive().startswith("RELOADING=1")
                assert notify.receive() == "READY=1"
                still = await login(session, daemon.url, duration={"d_us": "forever"})
                assert still["expiration"] == {"t_s": "never"}
            assert daemon.stop() == 0
    log = daemon.log()
    assert "reload refused, keeping the running configuration" in log
    assert "[merchant-authd] LOG_LEVEL" in log
    assert _access_lines(log, "/private/token") == 1


async def test_sighup_keeps_the_command_line_log_level(tmp_path: Path) -> None:
    options = {"merchant-authd": {"LOG_LEVEL": "INFO"}}
    with NotifySocket(tmp_path / "notify") as notify:
        args = ("-L", "WARNING")
        with Daemon(tmp_path, options, args=args, notify=notify) as daemon:
            daemon.start()
            async with aiohttp.ClientSession() as session:
                await create_admin(session, daemon.url)
                daemon.signal(signal.SIGHUP)
                assert notify.receive().startswith("RELOADING=1")
                assert notify.receive() == "READY=1"
                async with session.get(f"{daemon.url}/config") as response:
                    assert response.status == 200
            assert daemon.stop() == 0
    assert "merchant_authd.access" not in daemon.log()
    assert "configuration re-read" not in daemon.log()


# -- start-up failures ----------------------------------------------------------------


def test_port_in_use_is_one_line_and_status_1(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with Daemon(tmp_path, {"merchant": {"PORT": str(port)}}) as daemon:
            result = subprocess.run(
                daemon.command(),
                stdin=subprocess.DEVNULL,
                capture_output=True,
                env=daemon.env,
                timeout=STARTUP_S,
            )
    assert result.returncode == 1
    errors = [line for line in result.stderr.decode().splitlines() if "ERROR" in line]
    assert len(errors) == 1 and "cannot start" in errors[0]
    assert "Traceback" not in result.stderr.decode()


def test_unusable_database_is_one_line_and_status_1(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    options = {"merchantdb-sqlite": {"DATABASE": str(blocker / "authd.sqlite3")}}
    with Daemon(tmp_path, options) as daemon:
        result = subprocess.run(
            daemon.command(),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            env=daemon.env,
            timeout=STARTUP_S,
        )
    assert result.returncode == 1
    assert "cannot start" in result.stderr.decode()
    assert "Traceback" not in result.stderr.decode()


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_stop_signals_exit_0(tmp_path: Path, signum: int) -> None:
    with Daemon(tmp_path) as daemon:
        daemon.start()
        daemon.signal(signum)
        assert daemon.wait() == 0


def test_the_daemon_raises_its_open_file_limit_to_the_hard_limit() -> None:
    script = (
        "import resource\n"
        "from merchant_authd import server\n"
        "soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)\n"
        "resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))\n"
        "server._raise_file_limit()\n"
        "print(resource.getrlimit(resource.RLIMIT_NOFILE)[0] > 256)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert result.stdout.strip() == "True", result.stderr
