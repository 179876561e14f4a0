"""The optimizers described as rules (NAdam, RAdam, Adamax, Adadelta, ASGD, Rprop, Lion, LAMB) on the CPU, float32:

  - one 16M-element tensor: fastopt's call against the in-place bandwidth probe (a += b, the same chunks and
    threads), as the fraction of the probe's bandwidth reached for the bytes each optimizer must move (params
    and states read and written, grads read), and against torch.optim's foreach implementation (torch has no
    fused kernel for any of these; Lion and LAMB have no torch class, so no torch column);
  - one call on 1,000 elements from Python: the median time of the call.

Everything is interleaved in one process (fastopt, probe, torch, fastopt, ...), medians over the rounds.
Run it several times: the machine's load moves single runs.

    python bench/bench_rules.py [--size 16M] [--rounds 15] [--small-rounds 2001] [--threads N]
"""

import argparse
import statistics
import time

import numpy as np

import fastopt
from fastopt import _core

try:
    import torch
except ImportError:  # (the torch column is left empty)
    torch = None

# name: (fastopt kernel, torch class, kernel keywords, torch keywords, state arrays, takes step)
CASES = {
    "nadam": ("nadam_", "NAdam", dict(lr=1e-3, weight_decay=1e-2), dict(lr=1e-3, weight_decay=1e-2), 2, True),
    "radam": ("radam_", "RAdam", dict(lr=1e-3), dict(lr=1e-3), 2, True),
    "adamax": ("adamax_", "Adamax", dict(lr=1e-3), dict(lr=1e-3), 2, True),
    "adadelta": ("adadelta_", "Adadelta", dict(lr=1.0), dict(lr=1.0), 2, False),
    "asgd": ("asgd_", "ASGD", dict(lr=1e-2), dict(lr=1e-2), 1, True),
    "rprop": ("rprop_", "Rprop", dict(), dict(lr=1e-2), 2, False),
    "lion": ("lion_", None, dict(lr=1e-4, weight_decay=1e-2), None, 1, False),
    "lamb": ("lamb_", None, dict(lr=1e-3), None, 2, True),
}
# LAMB reads the params, m and v twice (its trust ratio needs the tensor's norms before the update):
# bytes per element, float32: pass 1 reads p, g, m, v and writes m, v; pass 2 reads p, m, v, writes p
BYTES_PER_ELEMENT = {"lamb": 4 * (6 + 4)}


def parse_size(text: str) -> int:
    units = {"K": 1 << 10, "M": 1 << 20}
    return int(text[:-1]) * units[text[-1]] if text[-1] in units else int(text)


def fastopt_call(name, n, rng):
    kernel, _, kwargs, _, states, takes_step = CASES[name]
    fn = getattr(fastopt, kernel)
    p = rng.standard_normal(n, dtype=np.float32)
    g = rng.standard_normal(n, dtype=np.float32)
    st = [np.full_like(p, 0.01 if name == "rprop" else 0.0) for _ in range(states)]
    step = [0]

    def call():
        step[0] += 1
        extra = {"step": step[0]} if takes_step else {}
        fn(p, g, *st, **kwargs, **extra)

    # (params read + written, grads read, each state read + written)
    return call, n * BYTES_PER_ELEMENT.get(name, 4 * (3 + 2 * states))


def torch_step(name, n, rng):
    _, cls, _, kwargs, _, _ = CASES[name]
    if torch is None or cls is None:
        return None
    p = torch.nn.Parameter(torch.from_numpy(rng.standard_normal(n, dtype=np.float32)))
    p.grad = torch.from_numpy(rng.standard_normal(n, dtype=np.float32))
    return getattr(torch.optim, cls)([p], foreach=True, **kwargs).step


def probe(n, rng):
    a = rng.standard_normal(n, dtype=np.float32)
    b = rng.standard_normal(n, dtype=np.float32)
    return lambda: _core._probe_add(a, b), 3 * 4 * n


def interleaved(fns, rounds):
    times = [[] for _ in fns]
    for fn in fns:
        fn()
        fn()
    for r in range(rounds):
        order = list(range(len(fns))) if r % 2 == 0 else list(reversed(range(len(fns))))
        for i in order:
            t0 = time.perf_counter()
            fns[i]()
            times[i].append(time.perf_counter() - t0)
    return [statistics.median(t) for t in times]


def small_call_us(name, rounds, rng):
    call, _ = fastopt_call(name, 1000, rng)
    for _ in range(50):
        call()
    samples = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        call()
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples) * 1e6


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="16M")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--small-rounds", type=int, default=2001)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--only", nargs="*", default=list(CASES))
    args = parser.parse_args()
    if args.threads:
        fastopt.set_num_threads(args.threads)
        if torch is not None:
            torch.set_num_threads(args.threads)
    n = parse_size(args.size)
    rng = np.random.default_rng(0)
    print(f"{n:,} float32 elements, fastopt threads {fastopt.get_num_threads()}"
          + (f", torch threads {torch.get_num_threads()}, torch {torch.__version__}" if torch is not None else "")
          + f", medians of {args.rounds} interleaved rounds")
    print(f"{'optimizer':10} {'fastopt ms':>10} {'GB/s':>6} {'probe GB/s':>10} {'of probe':>8} "
          f"{'torch foreach ms':>16} {'torch/fastopt':>13} {'1k call us':>10}")
    for name in args.only:
        call, nbytes = fastopt_call(name, n, rng)
        probe_fn, probe_bytes = probe(n, rng)
        other = torch_step(name, n, rng)
        fns = [call, probe_fn] + ([other] if other else [])
        medians = interleaved(fns, args.rounds)
        ours, probe_t = medians[0], medians[1]
        bw, probe_bw = nbytes / ours / 1e9, probe_bytes / probe_t / 1e9
        torch_cols = (f"{medians[2] * 1e3:16.2f} {medians[2] / ours:13.2f}" if other else f"{'-':>16} {'-':>13}")
        print(f"{name:10} {ours * 1e3:10.2f} {bw:6.1f} {probe_bw:10.1f} {bw / probe_bw:8.0%} {torch_cols} "
              f"{small_call_us(name, args.small_rounds, rng):10.2f}", flush=True)


if __name__ == "__main__":
    main()
