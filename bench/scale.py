"""Benchmark 3: authenticated reads on a small and on a large database.

Measures requests per second of ``GET /instances/$I/private`` (bearer token, random
picks from a pool of known tokens) with 10 instances x 10 tokens and with 10,000
instances x 100 tokens (one million tokens), each on its own daemon, under the same
load.  Targets: large >= 0.9 x small, and the large daemon's resident memory
(``VmRSS``, and its peak ``VmHWM``) below 150 MB after the run.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import common

TARGET = 0.9
RSS_LIMIT_KIB = 150 * 1024
SMALL = (10, 10)
LARGE = (10_000, 100)
#: Distinct tokens the load generator picks from on the large database: the
#: working set of clients active at once.  The daemon keeps up to 50,000 recently
#: used tokens in memory; ``--pool`` larger than that measures the database path.
POOL = 1000


def requests_for(population: common.Population) -> list[common.Request]:
    """One authenticated read per sampled credential."""
    return [common.Request("GET", c.path, c.headers) for c in population.sample]


def build(
    folder: Path, shape: tuple[int, int], pool: int
) -> tuple[Path, common.Population]:
    """Generate a database of the given (instances, tokens per instance)."""
    database = folder / f"bench-{shape[0]}x{shape[1]}.sqlite3"
    population = common.populate(database, shape[0], shape[1], sample=pool)
    size = database.stat().st_size / 2**20
    print(
        f"generated {population.instances} instances x {shape[1]} tokens"
        f" ({population.tokens} tokens, {size:.0f} MiB) in {population.seconds:.1f} s"
    )
    return database, population


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per run")
    parser.add_argument("--rounds", type=int, default=3, help="alternating runs")
    parser.add_argument(
        "--pool",
        type=int,
        default=POOL,
        help="distinct tokens in use on the large side",
    )
    args = parser.parse_args()
    print(common.machine_summary())
    with common.workdir("scale") as folder:
        small_db, small_pop = build(folder, SMALL, POOL)
        large_db, large_pop = build(folder, LARGE, args.pool)
        runs: dict[str, list[common.LoadResult]] = {"small": [], "large": []}
        with common.daemon(folder, small_db) as small, common.daemon(
            folder, large_db
        ) as large:
            sides = {
                "small": (small, requests_for(small_pop)),
                "large": (large, requests_for(large_pop)),
            }
            for name, (server, reqs) in sides.items():
                cred = (small_pop if name == "small" else large_pop).sample[0]
                status, body = common.http_get(server.url + cred.path, cred.headers)
                if status != 200:
                    print(f"sanity check failed on {name}: {status} {body[:200]!r}")
                    return 1
                common.load(server, reqs, min(3.0, args.duration))  # warm-up
            for _ in range(args.rounds):
                for name, (server, reqs) in sides.items():
                    runs[name].append(common.load(server, reqs, args.duration))
            memory = large.memory_kib()
        for name, results in runs.items():
            for result in results:
                print(f"{name}: {result.describe()}")
        small_best, large_best = common.best(runs["small"]), common.best(runs["large"])
        print(
            f"large daemon memory: VmRSS {memory['VmRSS']} KiB,"
            f" VmHWM {memory['VmHWM']} KiB"
        )
        # Informational: CPU per request barely depends on other load.
        print(
            f"server CPU per request: small {small_best.cpu_ms:.3f} ms,"
            f" large {large_best.cpu_ms:.3f} ms,"
            f" small/large {small_best.cpu_ms / large_best.cpu_ms:.3f}"
        )
        ratio = large_best.rate / small_best.rate
        failed = small_best.failures + large_best.failures
        peak = max(memory["VmRSS"], memory["VmHWM"])
        return common.finish(
            [
                common.verdict(
                    "ratio large/small", ratio, f">= {TARGET}", ratio >= TARGET
                ),
                common.verdict(
                    "large RSS peak MiB", peak / 1024, "< 150", peak < RSS_LIMIT_KIB
                ),
                common.verdict("failed requests", failed, "0", failed == 0),
            ]
        )


if __name__ == "__main__":
    sys.exit(main())
