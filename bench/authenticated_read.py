"""Benchmark 1: authenticated reads against a bare aiohttp app.

Measures requests per second of ``GET /instances/$I/private`` with a valid bearer
token on the daemon, and of a bare aiohttp application (its own process) answering
the same JSON body, under the same load.  Target: daemon / bare >= 0.5.
"""

from __future__ import annotations

import argparse
import json
import sys

import common

TARGET = 0.5


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per run")
    parser.add_argument("--rounds", type=int, default=3, help="alternating runs")
    args = parser.parse_args()
    print(common.machine_summary())
    with common.workdir("read") as folder:
        database = folder / "bench.sqlite3"
        population = common.populate(database, 1, 1, sample=1)
        cred = population.sample[0]
        with common.daemon(folder, database) as authd:
            status, body = common.http_get(authd.url + cred.path, cred.headers)
            if status != 200:
                print(f"sanity check failed: {status} {body[:200]!r}")
                return 1
            body_file = folder / "body.json"
            body_file.write_bytes(body)
            print(f"response body: {len(body)} bytes")
            with common.bare_app(folder, body_file) as bare:
                req = common.Request("GET", cred.path, cred.headers)
                runs: dict[str, list[common.LoadResult]] = {"daemon": [], "bare": []}
                for server in (authd, bare):  # warm-up
                    common.load(server, [req], min(3.0, args.duration))
                for _ in range(args.rounds):
                    runs["daemon"].append(common.load(authd, [req], args.duration))
                    runs["bare"].append(common.load(bare, [req], args.duration))
            for side, results in runs.items():
                for result in results:
                    print(f"{side}: {result.describe()}")
            daemon_best, bare_best = common.best(runs["daemon"]), common.best(
                runs["bare"]
            )
            failed = daemon_best.failures + bare_best.failures
            print(f"best daemon: {daemon_best.rate:.1f} req/s")
            print(f"best bare aiohttp: {bare_best.rate:.1f} req/s")
            print(f"daemon memory: {json.dumps(authd.memory_kib())} KiB")
            # Informational: CPU per request barely depends on other load.
            print(
                f"server CPU per request: daemon {daemon_best.cpu_ms:.3f} ms,"
                f" bare {bare_best.cpu_ms:.3f} ms,"
                f" bare/daemon {bare_best.cpu_ms / daemon_best.cpu_ms:.3f}"
            )
        ratio = daemon_best.rate / bare_best.rate
        return common.finish(
            [
                common.verdict(
                    "ratio daemon/bare", ratio, f">= {TARGET}", ratio >= TARGET
                ),
                common.verdict("failed requests", failed, "0", failed == 0),
            ]
        )


if __name__ == "__main__":
    sys.exit(main())
