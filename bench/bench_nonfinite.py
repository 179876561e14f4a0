"""What skip_nonfinite and grad_scale cost: a 16M-element float32 AdamW step, plain, with a loss scale,
with the non-finite pre-pass, and with both (interleaved rounds, medians in ms).

    python bench/bench_nonfinite.py [--size N] [--rounds R]

The pre-pass reads every gradient once more before the update (4 more bytes per element on the 28 of
an AdamW step), so on arrays beyond the caches expect about 4/28 = 14% more time at memory bandwidth.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import fastopt


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=16 * 2**20)
    parser.add_argument("--rounds", type=int, default=31)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    p = rng.standard_normal(args.size).astype(np.float32)
    g = rng.standard_normal(args.size).astype(np.float32)
    m, v = np.zeros_like(p), np.zeros_like(p)
    variants = {
        "plain": {},
        "grad_scale=1024": dict(grad_scale=1024.0),
        "skip_nonfinite": dict(skip_nonfinite=True),
        "both": dict(grad_scale=1024.0, skip_nonfinite=True),
    }
    times = {name: [] for name in variants}
    step = 1
    for name, extra in variants.items():  # warm-up
        fastopt.adamw_(p, g, m, v, lr=1e-6, step=step, **extra)
    for _ in range(args.rounds):
        for name, extra in variants.items():
            step += 1
            start = time.perf_counter()
            fastopt.adamw_(p, g, m, v, lr=1e-6, step=step, **extra)
            times[name].append(time.perf_counter() - start)
    base = float(np.median(times["plain"]))
    print(f"AdamW float32, {args.size:,} elements, {args.rounds} interleaved rounds, "
          f"{fastopt.build_info()['num_threads']} threads, {fastopt.build_info()['cpu_isa']}")
    for name, t in times.items():
        median = float(np.median(t))
        print(f"  {name:16s} median {median * 1e3:7.2f} ms   x{median / base:.3f}   "
              f"{28 * args.size / median / 1e9:5.1f} GB/s at 28 B/element")


if __name__ == "__main__":
    main()
