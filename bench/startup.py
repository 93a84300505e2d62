"""Benchmark 4: start-up time with the large database.

Generates the database of ``scale.py`` (10,000 instances x 100 tokens), then starts
the daemon several times and measures from process start to the first successful
``GET /config`` (polled every 5 ms).  Target: the median start under 1 s; every
start is printed, and the slowest too.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import common
import scale

TARGET_S = 1.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--starts", type=int, default=5, help="daemon starts")
    args = parser.parse_args()
    print(common.machine_summary())
    with common.workdir("startup") as folder:
        database, _ = scale.build(folder, scale.LARGE, pool=1)
        times = []
        for _ in range(args.starts):
            started = time.monotonic()
            with common.daemon(folder, database):
                times.append(time.monotonic() - started)
            print(f"start to first GET /config: {times[-1]:.3f} s")
        median = statistics.median(times)
        print(f"median {median:.3f} s, slowest {max(times):.3f} s")
        return common.finish(
            [
                common.verdict(
                    "median start s", median, f"< {TARGET_S}", median < TARGET_S
                )
            ]
        )


if __name__ == "__main__":
    sys.exit(main())
