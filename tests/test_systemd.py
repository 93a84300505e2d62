"""The systemd unit and sysusers file, the system-call filter, and sd_notify.

``systemd-analyze verify`` checks that ``ExecStart=`` names an existing program, so the
unit is verified as a copy whose ``ExecStart=`` points at the console script of the
environment running the tests; everything else is verified as shipped.  Its warnings
go to standard error while the exit status stays 0, so any output fails the test.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import pytest
from conftest import ADMIN_PASSWORD, basic
from test_server import STARTUP_S, STOP_S, Daemon, NotifySocket, create_admin

from merchant_authd.sdnotify import notify

SYSTEMD = Path(__file__).resolve().parent.parent / "systemd"
UNIT = SYSTEMD / "merchant-authd.service"
SYSUSERS = SYSTEMD / "merchant-authd.sysusers"
ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(ANALYZE is None, reason="no systemd-analyze")


def _directives(text: str) -> list[tuple[str, str, str]]:
    """(section, key, value) of every assignment, repeated keys included."""
    found = []
    section = ""
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        found.append((section, key.strip(), value.strip()))
    return found


def _values(key: str) -> list[str]:
    return [v for _, k, v in _directives(UNIT.read_text()) if k == key]


def _testable_copy(folder: Path, extra: str = "") -> Path:
    """The unit with ExecStart= on this environment's console script."""
    script = Path(sys.executable).parent / "merchant-authd"
    assert script.exists(), script
    text, count = re.subn(
        r"^ExecStart=\S+", f"ExecStart={script}", UNIT.read_text(), flags=re.M
    )
    assert count == 1
    copy = folder / UNIT.name
    copy.write_text(text.replace("[Install]", extra + "\n[Install]"))
    return copy


def _analyze(*args: str) -> subprocess.CompletedProcess[str]:
    assert ANALYZE is not None
    return subprocess.run(
        [ANALYZE, *args], capture_output=True, text=True, timeout=STARTUP_S
    )


# -- the unit -------------------------------------------------------------------------


@needs_analyze
def test_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    result = _analyze("verify", "--man=no", str(_testable_copy(tmp_path)))
    assert result.returncode == 0, result.stderr
    assert result.stdout == "" and result.stderr == ""


@needs_analyze
@pytest.mark.parametrize(
    "broken",
    ["[Service]\nProtectSytem=strict", "[Service]\nExecStartPost=/nonexistent/program"],
)
def test_verify_as_run_here_catches_a_broken_unit(tmp_path: Path, broken: str) -> None:
    result = _analyze("verify", "--man=no", str(_testable_copy(tmp_path, broken)))
    assert result.returncode != 0 or result.stderr != ""


@needs_analyze
def test_unit_exposure_is_low(tmp_path: Path) -> None:
    if "--offline" not in _analyze("security", "--help").stdout:
        pytest.skip("systemd-analyze security cannot check unit files offline")
    copy = _testable_copy(tmp_path)
    # The threshold is on systemd's 0-100 scale ("1.4 OK" is 14).
    result = _analyze("security", "--offline=yes", "--threshold=20", str(copy))
    assert result.returncode == 0, result.stdout + result.stderr


def test_unit_declares_sandbox_and_protocol() -> None:
    single = {
        "Type": "notify",
        "StateDirectory": "merchant-authd",
        "ProtectSystem": "strict",
        "NoNewPrivileges": "yes",
        "PrivateTmp": "yes",
        "ProtectHome": "yes",
        "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6",
        "UMask": "0077",
        "KillMode": "mixed",
        "ExecReload": "/bin/kill -HUP $MAINPID",
        "User": "merchant-authd",
    }
    for key, value in single.items():
        assert _values(key) == [value], key
    assert _values("SystemCallFilter") == ["@system-service", "~@privileged @resources"]
    assert "-c /etc/merchant-authd/merchant-authd.conf" in _values("ExecStart")[0]
    assert "DynamicUser" not in {k for _, k, _ in _directives(UNIT.read_text())}


def test_sysusers_declares_the_unit_user() -> None:
    lines = [
        line.split()
        for line in SYSUSERS.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert [(line[0], line[1]) for line in lines] == [("u", "merchant-authd")]
    assert _values("User") == [lines[0][1]] == _values("Group")


@pytest.mark.skipif(shutil.which("systemd-sysusers") is None, reason="no sysusers")
def test_sysusers_file_parses() -> None:
    result = subprocess.run(
        ["systemd-sysusers", "--dry-run", str(SYSUSERS)],
        capture_output=True,
        text=True,
        timeout=STARTUP_S,
    )
    assert result.returncode == 0, result.stderr
    assert "Failed" not in result.stderr and "Unknown" not in result.stderr


# -- the system-call filter, as far as it can be checked without systemd --------------


def _syscall_group(name: str) -> set[str]:
    lines = _analyze("syscall-filter", name).stdout.splitlines()
    calls: set[str] = set()
    for line in lines[1:]:
        item = line.strip()
        if not line.startswith(" ") or not item or item.startswith("#"):
            continue
        calls |= _syscall_group(item) if item.startswith("@") else {item}
    return calls


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


@needs_analyze
@pytest.mark.skipif(shutil.which("strace") is None, reason="no strace")
def test_daemon_and_tan_helper_stay_inside_the_syscall_filter(tmp_path: Path) -> None:
    """Trace start, login, a TAN sent by a shell helper, reload and stop."""
    helper = tmp_path / "mail"
    helper.write_text("#!/bin/sh\ncat >/dev/null\n")
    helper.chmod(0o755)
    trace = tmp_path / "strace.txt"
    options = {
        "merchant": {"HELPER_EMAIL": str(helper), "MANDATORY_TAN_CHANNELS": "email"}
    }
    tracer = ("strace", "-f", "-qq", "-c", "-U", "name,calls", "-o", str(trace))
    with NotifySocket(tmp_path / "notify") as sd, Daemon(
        tmp_path, options, notify=sd, prefix=tracer
    ) as daemon:
        try:
            daemon.start()
        except AssertionError:
            log = daemon.log()
            if "merchant_authd" not in log and "Traceback" not in log:
                pytest.skip(f"strace cannot run here: {log.strip()[:200]}")
            raise
        assert daemon.process is not None
        pids = _children(daemon.process.pid)
        if len(pids) != 1:
            pytest.skip("cannot find the traced daemon in /proc")
        try:
            asyncio.run(_tan_round_trip(daemon.url))
            os.kill(pids[0], signal.SIGHUP)
            assert sd.receive().startswith("RELOADING=1")
            assert sd.receive() == "READY=1"
            os.kill(pids[0], signal.SIGTERM)
            assert daemon.wait(STOP_S) == 0
        finally:
            # Killing the tracer would leave the daemon running, detached.
            if daemon.process.poll() is None:
                os.kill(pids[0], signal.SIGKILL)
    used = {
        line.split()[0]
        for line in trace.read_text().splitlines()
        if re.fullmatch(r"\w+\s+\d+", line.strip()) and not line.startswith("total")
    }
    assert "execve" in used and "wait4" in used  # the helper ran
    allowed = _syscall_group("@system-service")
    denied = _syscall_group("@privileged") | _syscall_group("@resources")
    if os.geteuid() == 0:
        # SQLite hands its files to the owner of the database only when run by root;
        # the unit runs the daemon as its own user.
        used.discard("fchown")
    assert used - allowed == set()
    assert used & denied == set()


async def _tan_round_trip(url: str) -> None:
    async with aiohttp.ClientSession() as session:
        await create_admin(session, url, email="admin@example.com")
        async with session.post(
            f"{url}/private/token",
            json={"scope": "all"},
            headers=basic("admin", ADMIN_PASSWORD),
        ) as response:
            assert response.status == 202
            challenge = (await response.json())["challenges"][0]["challenge_id"]
        async with session.post(f"{url}/challenge/{challenge}", json={}) as response:
            assert response.status == 200, await response.text()


# -- sd_notify ------------------------------------------------------------------------


def test_notify_without_systemd_is_a_no_op(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert notify("READY=1") is False


def test_notify_to_a_socket_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with NotifySocket(tmp_path / "notify") as sd:
        monkeypatch.setenv("NOTIFY_SOCKET", str(sd.path))
        assert notify("READY=1") is True
        assert sd.receive(STOP_S) == "READY=1"


def test_notify_to_an_abstract_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"merchant-authd-test-{os.getpid()}-{time.monotonic_ns()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(STOP_S)
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        assert notify("STOPPING=1") is True
        assert sock.recv(4096) == b"STOPPING=1"


def test_notify_to_a_missing_socket_fails_quietly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "nobody-listens"))
    assert notify("READY=1") is False


# -- StateDirectory= ------------------------------------------------------------------


def test_database_goes_to_state_directory(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    options = {"merchantdb-sqlite": {"DATABASE": ""}}
    env = {"STATE_DIRECTORY": str(state)}
    with Daemon(tmp_path, options, env=env) as daemon:
        daemon.start()
        assert daemon.stop() == 0
    assert (state / "merchant-authd.sqlite3").is_file()
    assert not daemon.database.exists()
