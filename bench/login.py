"""Benchmark 2: password logins against raw bcrypt, and the event loop meanwhile.

Measures successful logins per second (``POST /instances/$I/private/token`` with
Basic credentials, correct password only, bcrypt cost 12) against the throughput of
two threads doing the same password check directly: SHA-256, base64, then
``bcrypt.checkpw`` at the same cost, as ``merchant_authd.crypto`` does (the
pre-hash costs microseconds next to bcrypt's hundreds of milliseconds, so plain
``checkpw`` would give the same figure).  Two threads because the machine's cores
are the limit.  Target: daemon / raw >= 0.85.

While the login storm runs, a second client (its own process) sends ``GET /config``
one after the other; its p99 latency must stay under 20 ms (the event loop is never
blocked by bcrypt).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import sqlite3
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import bcrypt
import common

TARGET = 0.85
P99_LIMIT_MS = 20.0
PROBE_INTERVAL_S = 0.01
RAW_THREADS = 2


def raw_checks_per_second(stored: bytes, duration: float) -> float:
    """Password checks per second of ``RAW_THREADS`` threads for ``duration``."""
    deadline = time.monotonic() + duration
    done = [0] * RAW_THREADS
    candidate = base64.b64encode(hashlib.sha256(common.PASSWORD.encode()).digest())
    barrier = threading.Barrier(RAW_THREADS)

    def work(slot: int) -> None:
        barrier.wait()
        while time.monotonic() < deadline:
            if not bcrypt.checkpw(candidate, stored):
                raise AssertionError("raw check failed")
            done[slot] += 1

    started = time.monotonic()
    with ThreadPoolExecutor(RAW_THREADS) as pool:
        for future in [pool.submit(work, n) for n in range(RAW_THREADS)]:
            future.result()
    return sum(done) / (time.monotonic() - started)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration", type=float, default=20.0, help="seconds per run")
    parser.add_argument("--rounds", type=int, default=2, help="alternating runs")
    args = parser.parse_args()
    print(common.machine_summary())
    with common.workdir("login") as folder:
        database = folder / "bench.sqlite3"
        common.populate(database, 1, 1, sample=1)
        instance = common.instance_id(0)
        with sqlite3.connect(database) as conn:
            stored = (
                conn.execute(
                    "SELECT password_hash FROM instances WHERE id = ?", (instance,)
                )
                .fetchone()[0]
                .encode("ascii")
            )
        login = common.Request(
            "POST",
            f"/instances/{instance}/private/token",
            {**common.basic_header(instance), "Content-Type": "application/json"},
            '{"scope": "readonly"}',
        )
        raw_rates: list[float] = []
        storms: list[common.LoadResult] = []
        latencies: list[float] = []
        probe_failures = 0
        with common.daemon(folder, database) as authd:
            for _ in range(args.rounds):
                raw_rates.append(raw_checks_per_second(stored, args.duration))
                print(
                    f"raw bcrypt ({RAW_THREADS} threads, cost {common.BCRYPT_COST}):"
                    f" {raw_rates[-1]:.2f} checks/s"
                )
                # The probe ends before the storm does, never to run alone.
                probing = max(args.duration - 2, args.duration / 2)
                with common.prober(
                    authd.url + "/config", probing, PROBE_INTERVAL_S
                ) as probe:
                    # Requests still queued when the run ends are not counted;
                    # load() waits until the daemon has worked them off.
                    storms.append(
                        common.load(
                            authd, [login], args.duration, timeout=args.duration * 3
                        )
                    )
                print(f"daemon logins: {storms[-1].describe()}")
                latencies += probe["latencies_ms"]
                probe_failures += probe["failures"]
            if any(storm.failures for storm in storms):
                print(f"daemon log tail:\n{authd.log_tail(3)}")
        storm = common.best(storms)
        raw_rate = max(raw_rates)
        latencies.sort()
        if not latencies:
            print("GET /config during the storm: no answer at all")
            latencies = [float("inf")]
        p99 = latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))]
        print(
            f"GET /config during the storm: {len(latencies)} requests,"
            f" {probe_failures} failed, p50 {latencies[len(latencies) // 2]:.1f} ms,"
            f" p99 {p99:.1f} ms, max {latencies[-1]:.1f} ms"
        )
        ratio = storm.rate / raw_rate
        return common.finish(
            [
                common.verdict(
                    "ratio daemon/raw", ratio, f">= {TARGET}", ratio >= TARGET
                ),
                common.verdict(
                    "failed logins", storm.failures, "0", storm.failures == 0
                ),
                common.verdict(
                    "GET /config p99 ms", p99, f"< {P99_LIMIT_MS}", p99 < P99_LIMIT_MS
                ),
                common.verdict(
                    "GET /config failures",
                    probe_failures,
                    "0",
                    probe_failures == 0,
                ),
            ]
        )


if __name__ == "__main__":
    sys.exit(main())
