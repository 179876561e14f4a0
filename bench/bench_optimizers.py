"""Times every optimizer update: fastopt against the NumPy reference and torch (for-loop, foreach and
fused, when torch is installed), float32, at 1K, 1M and 16M elements.

Prints, per optimizer and size, the median time per update over interleaved rounds, the effective
bandwidth (bytes an ideal fused pass moves / time; AdamW fp32 moves 28 bytes per element) and each
implementation's time as a multiple of fastopt's. A NumPy in-place add (read 2, write 1) measured in
the same run gives a bandwidth yardstick.

    python bench/bench_optimizers.py [--sizes 1000 1000000 16000000] [--json out.json] [--no-torch]
"""

from __future__ import annotations

import argparse
import json
import platform

import numpy as np

import fastopt
from fastopt.benchmark import TRAFFIC, bandwidth_probe, interleaved_medians, make_update_bench


def plan(n: int):
    """(rounds, calls per round): enough calls that a round lasts well over the timer's resolution."""
    if n <= 10_000:
        return 21, 200
    if n <= 2_000_000:
        return 11, 5
    return 7, 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000, 1_000_000, 16_000_000])
    parser.add_argument("--optimizers", nargs="+", default=list(TRAFFIC), choices=list(TRAFFIC))
    parser.add_argument("--json", help="also write the results to this JSON file")
    parser.add_argument("--no-torch", action="store_true", help="leave torch out even when installed")
    args = parser.parse_args()

    info = fastopt.build_info()
    print(f"fastopt {info['version']} ({info['cpu_isa']}, {info['num_threads']} threads), "
          f"numpy {np.__version__}, {platform.processor() or platform.machine()}")
    results = []
    for n in args.sizes:
        rounds, calls = plan(n)
        probe = interleaved_medians({"probe": bandwidth_probe(n)}, rounds, calls)["probe"]
        probe_gbs = 3 * 4 * n / probe / 1e9
        print(f"\n== {n:,} float32 elements; numpy a += b probe: {probe_gbs:.1f} GB/s ==")
        print(f"{'optimizer':9s} {'impl':14s} {'median':>11s} {'GB/s':>7s} {'x fastopt':>10s}")
        for optimizer in args.optimizers:
            bench = make_update_bench(optimizer, n, np.float32, with_torch=not args.no_torch)
            times = interleaved_medians(bench.impls, rounds, calls)
            for impl, t in times.items():
                gbs = bench.bytes_moved / t / 1e9
                print(f"{optimizer:9s} {impl:14s} {_fmt(t):>11s} {gbs:7.1f} {t / times['fastopt']:9.2f}x")
                results.append(dict(optimizer=optimizer, impl=impl, n=n, dtype="float32", seconds=t,
                                    gb_per_s=gbs, ratio_to_fastopt=t / times["fastopt"],
                                    probe_gb_per_s=probe_gbs))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"build_info": info, "results": results}, f, indent=1)
        print(f"\nwrote {args.json}")


def _fmt(seconds: float) -> str:
    if seconds < 1e-3:
        return f"{seconds * 1e6:.2f} us"
    return f"{seconds * 1e3:.3f} ms"


if __name__ == "__main__":
    main()
