"""``python -m fastopt``: what this build contains, and a short CPU timing of every optimizer against
the NumPy reference. ``python -m fastopt bench [options]`` runs the full benchmark suite (against torch
too; ``python -m fastopt bench --help``)."""

from __future__ import annotations

import argparse
import sys

import fastopt
from fastopt.bench.backends import select_backends
from fastopt.bench.cases import update_case
from fastopt.bench.timing import interleaved_medians
from fastopt.bench.workloads import OPTIMIZERS


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] == "bench":
        from fastopt.bench.cli import main as bench_main

        return bench_main(argv[1:], prog="fastopt bench")

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
    backends = select_backends(numpy=True, torch=False)
    for optimizer in OPTIMIZERS:
        case = update_case(optimizer, args.size, backends, probe=False)
        t = interleaved_medians(case.impls, rounds=args.rounds)
        print(f"{optimizer:10s} {t['fastopt'] * 1e3:8.3f} ms {t['numpy'] * 1e3:8.3f} ms "
              f"{t['numpy'] / t['fastopt']:7.1f}x {case.bytes_moved / t['fastopt'] / 1e9:12.1f}")
    print("\nThe full suite (torch, sizes 1K-64M, GPT-2 small, losses): fastopt bench")
    return 0


if __name__ == "__main__":
    sys.exit(main())
