"""Softmax cross-entropy (forward + backward, gradient written over the logits) against its memory
floor, and softmax / log_softmax against torch's, float32, measured interleaved in one process.

The floor of the in-place cross-entropy is one read of the logits and one write of the gradient:
8 bytes per element at the bandwidth of the probe (fastopt's a += b, 12 bytes per element, the same
threads and chunking as the kernels) measured in the same rounds. Each round runs every contender
once, in turn (probe, fastopt, torch, ...), so that a neighbour's load hits them all alike; the
figures are medians over the rounds. softmax and log_softmax (fastopt's and torch's) run twice: into a new
array, whose time includes the page faults of fresh memory (for a large output they can outweigh the
kernel), and with out= a buffer allocated once, which times the kernel.

    python bench/bench_ce_floor.py [--shapes 4096x32000 32768x1000 512x50257] [--rounds 9]
"""

import argparse
import statistics
import time

import numpy as np

import fastopt
from fastopt import _core


def parse_shape(text):
    n, c = text.lower().split("x")
    return int(n), int(c)


def timed(fn):
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def contenders(n, c, rng):
    logits = (rng.standard_normal((n, c), dtype=np.float32) * 3).astype(np.float32)
    labels = rng.integers(0, c, n)
    scratch = logits.copy()  # the in-place call overwrites it with gradients; the time does not depend on values
    result = np.empty_like(logits)  # softmax's out=, touched once in the warm-up
    a = np.ones(n * c, np.float32)
    b = np.ones(n * c, np.float32)
    out = {
        "probe a+=b": lambda: _core._probe_add(a, b),
        "fastopt ce out=logits": lambda: fastopt.softmax_cross_entropy(scratch, labels, out=scratch),
        "fastopt softmax": lambda: fastopt.softmax(logits),
        "fastopt log_softmax": lambda: fastopt.log_softmax(logits),
        "fastopt softmax out=": lambda: fastopt.softmax(logits, out=result),
        "fastopt log_softmax out=": lambda: fastopt.log_softmax(logits, out=result),
    }
    try:
        import torch
        import torch.nn.functional as F

        t_logits = torch.from_numpy(logits.copy()).requires_grad_()
        t_labels = torch.from_numpy(labels)
        t_x = torch.from_numpy(logits)
        t_result = torch.empty_like(t_x)

        def torch_ce():
            t_logits.grad = None
            F.cross_entropy(t_logits, t_labels).backward()

        out["torch ce"] = torch_ce
        out["torch softmax"] = lambda: torch.softmax(t_x, dim=-1)
        out["torch log_softmax"] = lambda: torch.log_softmax(t_x, dim=-1)
        out["torch softmax out="] = lambda: torch.softmax(t_x, dim=-1, out=t_result)
        out["torch log_softmax out="] = lambda: torch.log_softmax(t_x, dim=-1, out=t_result)
    except ImportError:
        pass
    return out


def run_shape(n, c, rounds, rng):
    fns = contenders(n, c, rng)
    for fn in fns.values():  # warm-up: page faults of the first touch, thread pools
        fn()
    times = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            times[name].append(timed(fn))
    med = {name: statistics.median(ts) for name, ts in times.items()}
    elements = n * c
    bandwidth = 12 * elements / med["probe a+=b"]
    floor = 8 * elements / bandwidth
    print(f"\n{n} x {c} float32, threads {fastopt.get_num_threads()}, isa {fastopt.build_info()['cpu_isa']}, "
          f"{rounds} rounds; probe {bandwidth / 1e9:.1f} GB/s, CE floor (8 B/element) {floor * 1e3:.2f} ms")
    for name, t in med.items():
        spread = f"[{min(times[name]) * 1e3:.2f}-{max(times[name]) * 1e3:.2f}]"
        extra = ""
        if name.endswith(" ce") or " ce " in name:
            extra = f"  {t / floor:.2f}x floor"
        peer = "torch ce" if name.startswith("fastopt ce") else name.replace("fastopt", "torch", 1)
        if name.startswith("fastopt") and peer in med:
            extra += f"  {t / med[peer]:.2f}x torch"
        print(f"  {name:26s} {t * 1e3:9.2f} ms {spread:>20s}{extra}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", nargs="+", default=["4096x32000", "32768x1000", "512x50257"])
    parser.add_argument("--rounds", type=int, default=9)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    for shape in args.shapes:
        run_shape(*parse_shape(shape), args.rounds, rng)


if __name__ == "__main__":
    main()
