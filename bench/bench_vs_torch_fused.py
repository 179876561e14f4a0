"""fastopt against torch.optim's fused CPU step on one large tensor, interleaved in one process (a
fastopt call, a torch step, a fastopt call, ...): the median of each over the rounds, and fastopt /
torch. Run it several times: the machine's load moves single runs.

    python bench/bench_vs_torch_fused.py [--size 16M] [--rounds 21] [--runs 3] [--threads N]
                                         [--dtype float32|float16|bfloat16]

--threads N sets both libraries' thread count (fastopt.set_num_threads and torch.set_num_threads);
without it each keeps its default. --dtype float16/bfloat16: half-precision params and grads (torch
tensors), which fastopt updates with float32 state and torch's fused step with state of the params'
dtype (torch's rule: half the state bytes fastopt moves).
"""

import argparse
import statistics

import numpy as np
import torch

import fastopt
from _interleave import interleaved_medians  # bench/_interleave.py (this script's folder is on sys.path)

CASES = {
    "adamw": ("AdamW", dict(lr=1e-3, weight_decay=1e-2), 2, dict(lr=1e-3, weight_decay=1e-2)),
    "sgd": ("SGD", dict(lr=1e-3, momentum=0.9), 1, dict(lr=1e-3, momentum=0.9)),
    "adagrad": ("Adagrad", dict(lr=1e-2), 1, dict(lr=1e-2)),
}


def parse_size(text: str) -> int:
    units = {"K": 1 << 10, "M": 1 << 20}
    return int(text[:-1]) * units[text[-1]] if text[-1] in units else int(text)


def case_pair(name: str, n: int, rng, dtype: torch.dtype = torch.float32):
    cls, torch_kw, states, fo_kw = CASES[name]
    p = torch.from_numpy(rng.standard_normal(n, dtype=np.float32)).to(dtype)
    g = torch.from_numpy(rng.standard_normal(n, dtype=np.float32)).to(dtype)
    fp, fstates = p.clone(), [np.zeros(n, np.float32) for _ in range(states)]
    kernel = getattr(fastopt, name + "_")
    step = [0]

    def fastopt_step():
        step[0] += 1
        kwargs = dict(fo_kw)
        kwargs["step"] = step[0]
        kernel(fp, g, *fstates, **kwargs)

    tp = torch.nn.Parameter(p.clone())
    tp.grad = g
    opt = getattr(torch.optim, cls)([tp], fused=True, **torch_kw)
    return fastopt_step, opt.step


def run(name: str, n: int, rounds: int, rng, dtype: torch.dtype) -> tuple:
    a, b = case_pair(name, n, rng, dtype)
    a(); b(); a(); b()
    return interleaved_medians(a, b, rounds)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="16M")
    ap.add_argument("--rounds", type=int, default=21)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    ap.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    args = ap.parse_args()
    dtype = getattr(torch, args.dtype)
    if args.threads is not None:
        fastopt.set_num_threads(args.threads)
        torch.set_num_threads(args.threads)
    n = parse_size(args.size)
    rng = np.random.default_rng(0)
    print(f"{args.size} {args.dtype}, threads fastopt={fastopt.get_num_threads()} torch={torch.get_num_threads()}, "
          f"{args.rounds} rounds x {args.runs} runs")
    for name in args.cases:
        ratios = []
        for _ in range(args.runs):
            f, t = run(name, n, args.rounds, rng, dtype)
            ratios.append(f / t)
            print(f"  {name:8s} fastopt {f * 1e3:7.2f} ms  torch fused {t * 1e3:7.2f} ms  ratio {f / t:.3f}", flush=True)
        print(f"{name:8s} ratios {', '.join(f'{r:.2f}' for r in ratios)}  median {statistics.median(ratios):.2f}")


if __name__ == "__main__":
    main()
