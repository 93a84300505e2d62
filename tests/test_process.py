"""The real daemon: started as a process on a free port, stopped with SIGTERM.

A password changed over HTTP must survive a restart on the same database, and the
default database location must follow ``$XDG_DATA_HOME``.  Every process started here
is killed in a ``finally`` block; every wait is bounded.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import pytest

from merchant_authd import __version__

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / ".venv" / "bin" / "merchant-authd"
#: Seconds the daemon may take to answer after start (the machine is shared).
START_TIMEOUT_S = 15.0
#: Seconds the daemon may take to exit after SIGTERM.
STOP_TIMEOUT_S = 15.0
#: Seconds one HTTP request may take.
REQUEST_TIMEOUT_S = 10.0

ADMIN_PASSWORD = "process-admin-pw"
OLD_PASSWORD = "process-old-pw"
NEW_PASSWORD = "process-new-pw"


def free_port() -> int:
    """A TCP port on the loopback interface that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def daemon_environment(home: Path) -> dict[str, str]:
    """The test's environment with a private HOME and no inherited daemon settings."""
    drop = (
        "TALER_MERCHANT_TOKEN",
        "TALER_MERCHANT_PASSWORD",
        "STATE_DIRECTORY",
        "NOTIFY_SOCKET",
        "JOURNAL_STREAM",
    )
    env = {key: value for key, value in os.environ.items() if key not in drop}
    env.update(HOME=str(home), XDG_DATA_HOME=str(home / "data"))
    return env


def write_config(path: Path, port: int, database: Path | None) -> Path:
    """A configuration file for a daemon on ``port`` with bcrypt cost 4."""
    lines = [
        "[merchant]",
        f"PORT = {port}",
        "BIND_TO = 127.0.0.1",
        "[merchant-authd]",
        "BCRYPT_COST = 4",
    ]
    if database is not None:
        lines += ["[merchantdb-sqlite]", f"DATABASE = {database}"]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@dataclass
class Daemon:
    """A running ``merchant-authd`` process and where its log goes."""

    process: subprocess.Popen[bytes]
    base_url: str
    log_path: Path

    def log(self) -> str:
        """Everything the daemon wrote so far."""
        return self.log_path.read_text(encoding="utf-8", errors="replace")


def call(
    daemon: Daemon,
    method: str,
    path: str,
    body: Any = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, Any]:
    """(status, parsed JSON body or ``None``) of one request to the daemon."""
    data = None if body is None else json.dumps(body).encode("utf-8")
    request = urllib.request.Request(
        daemon.base_url + path, data=data, method=method, headers=headers or {}
    )
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=REQUEST_TIMEOUT_S) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as error:
        status, raw = error.code, error.read()
    return status, json.loads(raw) if raw else None


def basic(user: str, password: str) -> dict[str, str]:
    """An ``Authorization: Basic`` header."""
    raw = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {raw}"}


def start(
    config_path: Path,
    home: Path,
    port: int,
    log_name: str,
    extra_env: dict[str, str] | None = None,
) -> Daemon:
    """Start the daemon and wait (bounded) until ``GET /config`` answers."""
    log_path = home / log_name
    with open(log_path, "wb") as log_file:
        process = subprocess.Popen(
            [str(SCRIPT), "-c", str(config_path)],
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env={**daemon_environment(home), **(extra_env or {})},
        )
    daemon = Daemon(process, f"http://127.0.0.1:{port}", log_path)
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"daemon exited with {process.returncode}:\n{daemon.log()}")
        try:
            status, body = call(daemon, "GET", "/config")
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.1)
            continue
        assert status == 200
        assert body["name"] == "taler-merchant"
        return daemon
    stop(daemon)
    pytest.fail(f"daemon did not answer within {START_TIMEOUT_S} s:\n{daemon.log()}")


def stop(daemon: Daemon) -> None:
    """Kill the daemon if it still runs (used in ``finally``)."""
    if daemon.process.poll() is None:
        daemon.process.kill()
        daemon.process.wait(timeout=STOP_TIMEOUT_S)


def terminate(daemon: Daemon) -> float:
    """Send SIGTERM; the exit status must be 0.  Returns the seconds it took."""
    started = time.monotonic()
    daemon.process.send_signal(signal.SIGTERM)
    try:
        status = daemon.process.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        pytest.fail(f"daemon still running {STOP_TIMEOUT_S} s after SIGTERM")
    assert status == 0, daemon.log()
    return time.monotonic() - started


@pytest.fixture
def daemons() -> Iterator[list[Daemon]]:
    """Daemons started by a test; whatever still runs at the end is killed."""
    started: list[Daemon] = []
    try:
        yield started
    finally:
        for daemon in started:
            stop(daemon)


def test_password_change_survives_restart(
    tmp_path: Path, daemons: list[Daemon]
) -> None:
    port = free_port()
    database = tmp_path / "db" / "authd.sqlite3"
    config_path = write_config(tmp_path / "authd.conf", port, database)

    first = start(config_path, tmp_path, port, "first.log")
    daemons.append(first)
    admin_body = {
        "id": "admin",
        "name": "Operator",
        "auth": {"method": "token", "password": ADMIN_PASSWORD},
    }
    assert call(first, "POST", "/management/instances", admin_body) == (204, None)
    status, issued = call(
        first,
        "POST",
        "/private/token",
        {"scope": "all"},
        basic("admin", ADMIN_PASSWORD),
    )
    assert status == 200, issued
    admin = {"Authorization": f"Bearer {issued['access_token']}"}
    shop_body = {
        "id": "shop1",
        "name": "Shop One",
        "auth": {"method": "token", "password": OLD_PASSWORD},
    }
    assert call(first, "POST", "/management/instances", shop_body, admin) == (204, None)
    status, issued = call(
        first,
        "POST",
        "/instances/shop1/private/token",
        {"scope": "all"},
        basic("shop1", OLD_PASSWORD),
    )
    assert status == 200, issued
    shop_token = issued["access_token"]
    status, _ = call(
        first,
        "POST",
        "/instances/shop1/private/auth",
        {"method": "token", "password": NEW_PASSWORD},
        {"Authorization": f"Bearer {shop_token}"},
    )
    assert status == 204
    assert terminate(first) < STOP_TIMEOUT_S
    assert database.exists()

    second = start(config_path, tmp_path, port, "second.log")
    daemons.append(second)
    status, issued = call(
        second,
        "POST",
        "/instances/shop1/private/token",
        {"scope": "readonly"},
        basic("shop1", NEW_PASSWORD),
    )
    assert status == 200, issued
    assert issued["scope"] == "readonly"
    status, error = call(
        second,
        "POST",
        "/instances/shop1/private/token",
        {"scope": "all"},
        basic("shop1", OLD_PASSWORD),
    )
    assert (status, error["code"]) == (401, 2015)
    status, error = call(
        second,
        "GET",
        "/instances/shop1/private",
        headers={"Authorization": f"Bearer {shop_token}"},
    )
    assert (status, error["code"]) == (401, 2015)
    status, listed = call(second, "GET", "/management/instances", headers=admin)
    assert status == 200
    assert sorted(i["id"] for i in listed["instances"]) == ["admin", "shop1"]
    terminate(second)

    logs = first.log() + second.log()
    assert "Traceback" not in logs
    for secret in (ADMIN_PASSWORD, OLD_PASSWORD, NEW_PASSWORD, shop_token):
        assert secret not in logs
    assert "secret-token:" not in logs


def test_default_database_under_xdg_data_home(
    tmp_path: Path, daemons: list[Daemon]
) -> None:
    port = free_port()
    config_path = write_config(tmp_path / "authd.conf", port, None)
    daemon = start(config_path, tmp_path, port, "daemon.log")
    daemons.append(daemon)
    expected = tmp_path / "data" / "merchant-authd" / "merchant-authd.sqlite3"
    assert expected.exists()
    assert str(expected) in daemon.log()
    terminate(daemon)


def test_bootstrap_secret_from_environment(
    tmp_path: Path, daemons: list[Daemon]
) -> None:
    port = free_port()
    config_path = write_config(tmp_path / "authd.conf", port, tmp_path / "a.sqlite3")
    daemon = start(
        config_path,
        tmp_path,
        port,
        "daemon.log",
        {"TALER_MERCHANT_TOKEN": "secret-token:boot-secret"},
    )
    daemons.append(daemon)
    secret = {"Authorization": "Bearer secret-token:boot-secret"}
    status, error = call(daemon, "GET", "/management/instances")
    assert (status, error["code"]) == (401, 2015)
    status, listed = call(daemon, "GET", "/management/instances", headers=secret)
    assert (status, listed) == (200, {"instances": []})
    admin_body = {
        "id": "admin",
        "name": "Operator",
        "auth": {"method": "token", "password": ADMIN_PASSWORD},
    }
    assert call(daemon, "POST", "/management/instances", admin_body, secret) == (
        204,
        None,
    )
    status, error = call(daemon, "GET", "/management/instances", headers=secret)
    assert (status, error["code"]) == (401, 2015)
    terminate(daemon)
    assert "boot-secret" not in daemon.log()


def test_sigterm_on_idle_daemon_is_prompt(
    tmp_path: Path, daemons: list[Daemon]
) -> None:
    port = free_port()
    config_path = write_config(tmp_path / "authd.conf", port, tmp_path / "a.sqlite3")
    daemon = start(config_path, tmp_path, port, "daemon.log")
    daemons.append(daemon)
    terminate(daemon)
    with pytest.raises((urllib.error.URLError, ConnectionError)):
        call(daemon, "GET", "/config")


def test_port_in_use_fails_in_one_line(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config_path = write_config(tmp_path / "authd.conf", port, tmp_path / "db")
        result = subprocess.run(
            [str(SCRIPT), "-c", str(config_path)],
            capture_output=True,
            text=True,
            env=daemon_environment(tmp_path),
            timeout=START_TIMEOUT_S,
            check=False,
        )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "cannot start" in result.stderr


@pytest.mark.parametrize(
    ("flag", "text"), [("--help", "usage: merchant-authd"), ("--version", __version__)]
)
def test_help_and_version(tmp_path: Path, flag: str, text: str) -> None:
    result = subprocess.run(
        [str(SCRIPT), flag],
        capture_output=True,
        text=True,
        env=daemon_environment(tmp_path),
        timeout=START_TIMEOUT_S,
        check=False,
    )
    assert result.returncode == 0
    assert text in result.stdout
    assert result.stdout.strip()
    assert not (tmp_path / "data").exists()
