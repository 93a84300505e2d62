"""Diagnostic: instructions per request, counted by callgrind.

Not a benchmark with a target but a way to see what a change costs.  Rates and CPU
times move with whatever else runs on the machine; the number of instructions a
process executes for a request hardly does (callgrind counts every user-space
instruction of every thread, and the same build gives the same count to within a
fraction of a percent).  What the kernel does for a request (the network, system
calls) is not in the count.

Each side runs under ``valgrind --tool=callgrind`` (some 50 times slower than
normal), answers a warm-up, then ``--requests`` more from an aiohttp client on
32 connections, between a reset and a dump of the counters:

* ``read``: the daemon's ``GET /instances/$I/private`` with a valid bearer token;
* ``config``: the daemon's ``GET /config`` (no credentials, no database);
* ``bare``: the bare aiohttp app of ``authenticated_read.py``, same body.
"""

from __future__ import annotations

import argparse
import contextlib
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import common

SIDES = ("read", "config", "bare")
#: Requests before the count starts: caches filled, first-call work done.
WARM_UP = 320
#: Seconds a server under callgrind gets to answer its first request.
START_LIMIT_S = 300
#: The reset-to-dump count of a dump, in callgrind's output format.
_TOTALS = re.compile(r"^(?:totals|summary): (\d+)", re.MULTILINE)


def _newest_dump(out: Path) -> Path | None:
    """The newest ``<out>.<n>`` file callgrind_control made callgrind write."""
    dumps = [
        path
        for path in out.parent.glob(out.name + ".*")
        if path.name.rsplit(".", 1)[-1].isdigit()
    ]
    return max(dumps, key=lambda p: int(p.name.rsplit(".", 1)[-1]), default=None)


def _control(option: str, server: common.Server) -> None:
    subprocess.run(
        ["callgrind_control", option, str(server.pid)], check=True, capture_output=True
    )


def measure(
    server: common.Server, request: common.Request, count: int, out: Path
) -> float:
    """Instructions ``server`` executes per request, over ``count`` requests."""
    if common.send(server, [request], WARM_UP).failures:
        raise RuntimeError("the warm-up requests failed")
    _control("--zero", server)
    result = common.send(server, [request], count)
    _control("--dump", server)
    if result.failures or result.requests != count:
        raise RuntimeError(
            f"{result.requests} of {count} requests answered,"
            f" {result.failures} of them failed"
        )
    deadline = time.monotonic() + 60
    while True:
        dump = _newest_dump(out)
        found = _TOTALS.search(dump.read_text(errors="replace")) if dump else None
        if found:
            return int(found.group(1)) / count
        if time.monotonic() > deadline:
            raise RuntimeError("callgrind wrote no dump")
        time.sleep(0.2)


@contextlib.contextmanager
def started(
    side: str, folder: Path, database: Path, body_file: Path, out: Path
) -> Iterator[common.Server]:
    """The server of ``side`` running under callgrind."""
    wrapper = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}"]
    if side == "bare":
        with common.bare_app(
            folder, body_file, wrapper, limit_s=START_LIMIT_S
        ) as server:
            yield server
    else:
        with common.daemon(folder, database, wrapper, limit_s=START_LIMIT_S) as server:
            yield server


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--requests", type=int, default=2000, help="requests counted per side"
    )
    parser.add_argument(
        "--sides", default=",".join(SIDES), help=f"comma-separated, of {SIDES}"
    )
    args = parser.parse_args()
    sides = [side for side in args.sides.split(",") if side]
    if not sides or not set(sides) <= set(SIDES):
        parser.error(f"--sides takes {', '.join(SIDES)}")
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        print("valgrind is not installed (apt-get install -y valgrind)")
        return 2
    print(common.machine_summary(load_generator=False))
    with common.workdir("instructions") as folder:
        database = folder / "bench.sqlite3"
        cred = common.populate(database, 1, 1, sample=1).sample[0]
        requests = {
            "read": common.Request("GET", cred.path, cred.headers),
            "config": common.Request("GET", "/config", {}),
            "bare": common.Request("GET", cred.path, cred.headers),
        }
        body_file = folder / "body.json"
        with common.daemon(folder, database) as authd:
            status, body = common.http_get(authd.url + cred.path, cred.headers)
        if status != 200:
            print(f"sanity check failed: {status} {body[:200]!r}")
            return 1
        body_file.write_bytes(body)
        counts: dict[str, float] = {}
        for side in sides:
            out = folder / f"callgrind-{side}.out"
            with started(side, folder, database, body_file, out) as server:
                counts[side] = measure(server, requests[side], args.requests, out)
            print(f"{side}: {counts[side]:,.0f} instructions per request")
        if "read" in counts and "bare" in counts:
            print(f"instructions bare/read: {counts['bare'] / counts['read']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
