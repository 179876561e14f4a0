"""What skip_nonfinite and grad_scale cost: a 16M-element float32 AdamW step, plain, with a loss scale,
with the non-finite pre-pass, and with both (interleaved rounds, medians in ms).

    python bench/bench_nonfinite.py [--size N] [--rounds R] [--state float32|bfloat16|int8]

The pre-pass reads every gradient once more before the update (4 more bytes per element on the 28 of
an AdamW step), so on arrays beyond the caches expect about 4/28 = 14% more time at memory bandwidth;
with compact state (--state bfloat16: 20 bytes a step, int8: about 16) the same 4 bytes weigh more.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import fastopt


# Bytes per element of one state array, read and written once a step (int8: the code and its block's absmax).
STATE_BYTES = {"float32": 8, "bfloat16": 4, "int8": 2 + 8 / 256}


def make_state(form: str, n: int):
    """exp_avg and exp_avg_sq of n zeros in `form`."""
    if form == "float32":
        return np.zeros(n, np.float32), np.zeros(n, np.float32)
    if form == "bfloat16":
        import ml_dtypes

        return np.zeros(n, ml_dtypes.bfloat16), np.zeros(n, ml_dtypes.bfloat16)
    return fastopt.QuantizedState.zeros((n,), signed=True), fastopt.QuantizedState.zeros((n,), signed=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=16 * 2**20)
    parser.add_argument("--rounds", type=int, default=31)
    parser.add_argument("--state", choices=list(STATE_BYTES), default="float32",
                        help="the dtype of exp_avg and exp_avg_sq (int8: fastopt.QuantizedState)")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    p = rng.standard_normal(args.size).astype(np.float32)
    g = rng.standard_normal(args.size).astype(np.float32)
    m, v = make_state(args.state, args.size)
    step_bytes = 12 + 2 * STATE_BYTES[args.state]
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
    print(f"AdamW float32 params, {args.state} state, {args.size:,} elements, {args.rounds} interleaved rounds, "
          f"{fastopt.build_info()['num_threads']} threads, {fastopt.build_info()['cpu_isa']}")
    for name, t in times.items():
        median = float(np.median(t))
        print(f"  {name:16s} median {median * 1e3:7.2f} ms   x{median / base:.3f}   "
              f"{step_bytes * args.size / median / 1e9:5.1f} GB/s at {step_bytes:g} B/element")


if __name__ == "__main__":
    main()
