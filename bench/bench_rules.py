"""The optimizers described as rules (the registry's: NAdam, RAdam, Adamax, Adadelta, ASGD, Rprop, Lion, LAMB, and any
rule added later, read from fastopt.rules.SPECS, at their defaults) on the CPU, float32:

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
from fastopt.bench.workloads import RULE_OPTIMIZERS, RULE_SPECS, TRAFFIC, rule_group

try:
    import torch
except ImportError:  # (the torch column is left empty)
    torch = None

# Each rule's kernel, state arrays (and their first values), hyperparameters (its defaults, as a param group
# holds them), whether it takes a step count, torch's class of it, and the bytes it moves per element (LAMB's
# second pass included): all from the registry, as `fastopt bench` reads them.
CASES = tuple(RULE_OPTIMIZERS)


def parse_size(text: str) -> int:
    units = {"K": 1 << 10, "M": 1 << 20}
    return int(text[:-1]) * units[text[-1]] if text[-1] in units else int(text)


def fastopt_call(name, n, rng):
    spec = RULE_SPECS[name]
    fn = getattr(fastopt, spec.kernel)
    group = rule_group(name)
    kwargs = spec.kernel_args(group)
    p = rng.standard_normal(n, dtype=np.float32)
    g = rng.standard_normal(n, dtype=np.float32)
    st = [np.full_like(p, state.fill(group)) for state in spec.state]
    step = [0]

    def call():
        step[0] += 1
        extra = {"step": step[0]} if spec.uses_step else {}
        fn(p, g, *st, **kwargs, **extra)

    return call, n * 4 * TRAFFIC[name]


def torch_step(name, n, rng):
    spec = RULE_SPECS[name]
    if torch is None or spec.torch_name is None or not hasattr(torch.optim, spec.torch_name):
        return None
    p = torch.nn.Parameter(torch.from_numpy(rng.standard_normal(n, dtype=np.float32)))
    p.grad = torch.from_numpy(rng.standard_normal(n, dtype=np.float32))
    return getattr(torch.optim, spec.torch_name)([p], **{**spec.defaults, "foreach": True}).step


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
