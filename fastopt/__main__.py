"""``python -m fastopt``: what this build contains, and a short CPU timing of every optimizer against
the NumPy reference (the full benchmark suite is bench/bench_optimizers.py)."""

from __future__ import annotations

import argparse
import sys

import numpy as np

import fastopt
from fastopt.benchmark import TRAFFIC, interleaved_medians, make_update_bench


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="fastopt", description=__doc__)
    parser.add_argument("--size", type=int, default=1_000_000, help="elements per update (default 1e6)")
    parser.add_argument("--rounds", type=int, default=7, help="interleaved timing rounds (default 7)")
    args = parser.parse_args(argv)
    if args.size < 1 or args.rounds < 1:
        parser.error("--size and --rounds must be positive")

    info = fastopt.build_info()
    print(f"fastopt {info['version']}")
    for key, value in info.items():
        if key != "version":
            print(f"  {key:12s} {value}")

    print(f"\nOne update of {args.size:,} float32 elements, median of {args.rounds} interleaved rounds:")
    print(f"{'optimizer':10s} {'fastopt':>11s} {'numpy ref':>11s} {'speedup':>8s} {'fastopt GB/s':>13s}")
    for optimizer in TRAFFIC:
        bench = make_update_bench(optimizer, args.size, np.float32, with_torch=False)
        t = interleaved_medians(bench.impls, rounds=args.rounds)
        print(f"{optimizer:10s} {t['fastopt'] * 1e3:8.3f} ms {t['numpy'] * 1e3:8.3f} ms "
              f"{t['numpy'] / t['fastopt']:7.1f}x {bench.bytes_moved / t['fastopt'] / 1e9:12.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
