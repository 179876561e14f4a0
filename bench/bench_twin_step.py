"""A fastopt.torch twin's step() against torch.optim's fused step (foreach for RMSprop, which has no fused
CPU step) on lists of parameters, the way a training loop calls them: after each step every parameter gets a
new gradient tensor (as zero_grad(set_to_none=True) and backward leave them; the tensors are made before the
timing), then step() is timed. The two optimizers alternate in one process; per list, the medians over the
rounds and twin / torch. The last row is the host time per parameter: a step over 1,000 one-element
parameters divided by 1,000.

    python bench/bench_twin_step.py [--rounds 31] [--runs 3] [--threads N] [--optimizers adamw,sgd,adagrad,rmsprop]
                                    [--full-step] [--dtype float32|float16|bfloat16]

--full-step times the twins' fully checked step at every step (no StepPlan: fastopt/torch/_step_plan.py),
as before the repeated step existed. --dtype gives both optimizers parameters (and gradients) of that dtype;
the twins keep float32 state for float16/bfloat16 parameters, torch's fused step keeps state of the parameters'
dtype.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import fastopt
import fastopt.torch as ft

# name: (fastopt.torch class, torch.optim class, hyperparameters, torch's fastest CPU option)
OPTIMIZERS = {
    "adamw": ("AdamW", dict(lr=1e-3, weight_decay=1e-2), dict(fused=True)),
    "sgd": ("SGD", dict(lr=1e-3, momentum=0.9), dict(fused=True)),
    "adagrad": ("Adagrad", dict(lr=1e-2), dict(fused=True)),
    "rmsprop": ("RMSprop", dict(lr=1e-3), dict(foreach=True)),
}
LISTS = {"148 x 64": (148, 64), "148 x 1,000": (148, 1000), "1,000 x 1": (1000, 1)}
GRAD_SETS = 4


def make_side(cls, hyper, extra, count, size, gen, dtype):
    params = [torch.nn.Parameter(torch.randn(size, generator=gen).to(dtype)) for _ in range(count)]
    grads = [[torch.randn(size, generator=gen).to(dtype) for _ in range(count)] for _ in range(GRAD_SETS)]
    opt = cls(params, **hyper, **extra)
    state = {"round": 0}

    def timed_step() -> float:
        grad_set = grads[state["round"] % GRAD_SETS]
        state["round"] += 1
        for p, g in zip(params, grad_set):
            p.grad = g.clone()  # (a new tensor every step, as after zero_grad(set_to_none=True))
        start = time.perf_counter()
        opt.step()
        return time.perf_counter() - start

    return timed_step


def run_once(name, count, size, rounds, dtype=torch.float32):
    twin_name, hyper, torch_extra = OPTIMIZERS[name]
    gen = torch.Generator().manual_seed(0)
    ours = make_side(getattr(ft, twin_name), hyper, {}, count, size, gen, dtype)
    theirs = make_side(getattr(torch.optim, twin_name), hyper, torch_extra, count, size, gen, dtype)
    for _ in range(3):  # (first steps make the state; later ones are what a training loop repeats)
        ours(), theirs()
    times_ours, times_theirs = [], []
    for _ in range(rounds):
        times_ours.append(ours())
        times_theirs.append(theirs())
    return statistics.median(times_ours), statistics.median(times_theirs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=31)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--optimizers", default=",".join(OPTIMIZERS))
    parser.add_argument("--full-step", action="store_true")
    parser.add_argument("--dtype", choices=("float32", "float16", "bfloat16"), default="float32")
    args = parser.parse_args()
    if args.full_step:
        ft.FusedOptimizer._step_plan_ok = False  # (the four classes here inherit it)
    if args.threads:
        fastopt.set_num_threads(args.threads)
        torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    print(f"torch {torch.__version__}, fastopt {fastopt.__version__}; {args.dtype} parameters; twin / torch per run "
          f"(medians of {args.rounds} interleaved steps)")
    for name in args.optimizers.split(","):
        torch_kind = "fused" if "fused" in OPTIMIZERS[name][2] else "foreach"
        for label, (count, size) in LISTS.items():
            ratios, pairs = [], []
            for _ in range(args.runs):
                ours, theirs = run_once(name, count, size, args.rounds, dtype)
                ratios.append(ours / theirs)
                pairs.append(f"{ours * 1e3:.3f}/{theirs * 1e3:.3f}")
            per_param = ""
            if size == 1:
                per_param = "  per parameter: " + ", ".join(f"{float(p.split('/')[0]) / count * 1e3:.2f} us"
                                                             for p in pairs)
            print(f"{name:8s} vs torch {torch_kind:7s} {label:12s} ratio {', '.join(f'{r:.2f}' for r in ratios)}"
                  f"  (ms twin/torch {', '.join(pairs)}){per_param}")


if __name__ == "__main__":
    main()
