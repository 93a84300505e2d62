"""The benchmark scripts run to their verdict.

Each script runs for a fraction of a second per measurement, which is far too short
for its figures to mean anything: whether a target is met depends on the machine and
is not checked here.  What is checked is that the script measures both sides, prints
its ratio and a verdict, and cleans up, with ``wrk`` and with the fallback load
generator.  The diagnostic ``instructions.py`` has no verdict; it is run on its
quickest side where valgrind is installed.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"

#: Enough for the slowest script (a million-token database is generated first).
TIMEOUT_S = 120
#: The time instructions.py gives a server under callgrind to start, and some.
CALLGRIND_TIMEOUT_S = 420


def run_script(name: str, *args: str, no_wrk: bool = True) -> str:
    """Run ``bench/<name>.py``; its standard output, once it printed a verdict."""
    env = dict(os.environ)
    if no_wrk:
        env["BENCH_NO_WRK"] = "1"
    result = subprocess.run(
        [sys.executable, str(BENCH / f"{name}.py"), *args],
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        env=env,
        check=False,
    )
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stdout.splitlines()
    assert lines, result.stderr
    verdict = lines[-1]
    assert verdict in ("PASS", "FAIL"), result.stdout
    assert result.returncode == (0 if verdict == "PASS" else 1)
    return result.stdout


@pytest.mark.parametrize("no_wrk", [True, False], ids=["aiohttp-client", "wrk"])
def test_authenticated_read(no_wrk: bool) -> None:
    if not no_wrk and shutil.which("wrk") is None:
        pytest.skip("wrk is not installed")
    out = run_script(
        "authenticated_read", "--duration", "0.5", "--rounds", "1", no_wrk=no_wrk
    )
    assert "best bare aiohttp:" in out
    assert "ratio daemon/bare:" in out


def test_login() -> None:
    out = run_script("login", "--duration", "1", "--rounds", "1")
    assert "raw bcrypt (2 threads" in out
    assert "ratio daemon/raw:" in out
    assert "GET /config p99 ms:" in out


def test_scale() -> None:
    out = run_script("scale", "--duration", "0.5", "--rounds", "1", "--pool", "50")
    assert "generated 10000 instances x 100 tokens" in out
    assert "ratio large/small:" in out
    assert "large RSS peak MiB:" in out


def test_startup() -> None:
    out = run_script("startup", "--starts", "1")
    assert "start to first GET /config:" in out
    assert "median start s:" in out


def test_instructions() -> None:
    if shutil.which("valgrind") is None:
        pytest.skip("valgrind is not installed")
    result = subprocess.run(
        [sys.executable, str(BENCH / "instructions.py"), "--requests", "32"]
        + ["--sides", "bare"],
        capture_output=True,
        text=True,
        timeout=CALLGRIND_TIMEOUT_S,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"^bare: [\d,]+ instructions per request$", result.stdout, re.M)
