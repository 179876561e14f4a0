"""Times softmax cross-entropy forward + backward: fastopt's fused kernel (gradient written in place
into the logits, and into a separate buffer) against the stable NumPy reference and torch
(F.cross_entropy + backward), float32.

Effective bandwidth counts the bytes the fused kernel must move: read the logits twice (one pass for
the online max and sum, one for the gradient) and write the gradient once: 12 bytes per element.

    python bench/bench_losses.py [--shapes 4096x32000 32768x1000] [--rounds 5] [--json out.json]
"""

from __future__ import annotations

import argparse
import json

import numpy as np

import fastopt
from fastopt import reference
from fastopt.benchmark import interleaved_medians


def parse_shape(text: str):
    n, c = text.lower().split("x")
    return int(n), int(c)


def impls(n: int, c: int, with_torch: bool, with_numpy: bool):
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((n, c), dtype=np.float32) * 3
    labels = rng.integers(0, c, n)
    scratch = logits.copy()  # in-place runs overwrite it with gradients; the time does not depend on values
    out = np.empty_like(logits)
    fns = {
        "fastopt (out=logits)": lambda: fastopt.softmax_cross_entropy(scratch, labels, out=scratch),
        "fastopt (out=buffer)": lambda: fastopt.softmax_cross_entropy(logits, labels, out=out),
    }
    if with_numpy:
        fns["numpy reference"] = lambda: reference.softmax_cross_entropy(logits, labels)
    if with_torch:
        try:
            import torch
            import torch.nn.functional as F
        except ImportError:
            return fns
        t_logits = torch.from_numpy(logits.copy()).requires_grad_()
        t_labels = torch.from_numpy(labels)

        def torch_step():
            t_logits.grad = None
            F.cross_entropy(t_logits, t_labels).backward()

        fns["torch F.cross_entropy"] = torch_step
    return fns


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", nargs="+", default=["4096x32000", "32768x1000"])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--no-torch", action="store_true")
    parser.add_argument("--no-numpy", action="store_true", help="skip the (slow) NumPy reference")
    parser.add_argument("--json", help="also write the results to this JSON file")
    args = parser.parse_args()

    info = fastopt.build_info()
    print(f"fastopt {info['version']} ({info['cpu_isa']}, {info['num_threads']} threads), float32, "
          f"median of {args.rounds} interleaved rounds")
    results = []
    for shape in args.shapes:
        n, c = parse_shape(shape)
        times = interleaved_medians(impls(n, c, not args.no_torch, not args.no_numpy), args.rounds)
        base = times["fastopt (out=logits)"]
        print(f"\n== {n} x {c} ==")
        print(f"{'implementation':24s} {'median':>10s} {'GB/s':>7s} {'x fastopt':>10s}")
        for name, t in times.items():
            gbs = 12 * n * c / t / 1e9
            print(f"{name:24s} {t * 1e3:7.1f} ms {gbs:7.1f} {t / base:9.2f}x")
            results.append(dict(n=n, c=c, impl=name, seconds=t, gb_per_s=gbs, ratio_to_fastopt=t / base))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"build_info": info, "results": results}, f, indent=1)


if __name__ == "__main__":
    main()
