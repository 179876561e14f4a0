"""A whole small training step (MLP forward, cross-entropy, backward, optimizer step, zero_grad), in
torch, with fastopt's step (fastopt.torch.AdamW / SGD / Adagrad) against torch's fused one. Two
identical models, stepped alternately in one process (a fastopt step, a torch step, ...), so that the
machine's load and torch's thread pool hit both alike: the median time of a step of each, and
fastopt / torch. This is where fastopt's step lives in practice: between torch's own parallel regions.
opt.step() and zero_grad(), timed inside the step, are printed beside it (fastopt / torch, ms): the
optimizer is a small part of a step this size, so the step ratio moves with the rest of the step.
--control adds, after each run, the same pairing with torch's fused step on both models: the ratio a run
gives when both sides are the same code, the noise floor against which the fastopt / torch ratio is read.

    python bench/bench_train_step.py [--optimizers adamw sgd adagrad] [--width 1024] [--depth 3]
                                     [--batch 64] [--rounds 31] [--runs 3] [--threads N] [--control]

--threads N sets both libraries' thread count (fastopt.set_num_threads and torch.set_num_threads).
"""

import argparse
import statistics
import time

import torch

import fastopt
import fastopt.torch
from _interleave import interleaved_medians  # bench/_interleave.py (this script's folder is on sys.path)

OPTIMIZERS = {
    "adamw": ("AdamW", dict(lr=1e-3, weight_decay=1e-2)),
    "sgd": ("SGD", dict(lr=1e-3, momentum=0.9)),
    "adagrad": ("Adagrad", dict(lr=1e-2)),
}


def make_model(width: int, depth: int, classes: int = 10) -> torch.nn.Module:
    torch.manual_seed(0)
    layers = []
    for _ in range(depth):
        layers += [torch.nn.Linear(width, width), torch.nn.GELU()]
    return torch.nn.Sequential(*layers, torch.nn.Linear(width, classes))


def stepper(model, opt, x, y, phases: dict):
    """A training step; the seconds its opt.step() and its zero_grad() took go to phases["step"], ["zero"]."""
    def step():
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        t0 = time.perf_counter()
        opt.step()
        t1 = time.perf_counter()
        opt.zero_grad(set_to_none=False)
        phases["step"].append(t1 - t0)
        phases["zero"].append(time.perf_counter() - t1)
    return step


def one_run(name: str, args, control: bool = False) -> tuple:
    """(step seconds with fastopt, with torch fused, {phase: (seconds with fastopt, with torch fused)}
    for the phases opt.step() and zero_grad()), medians over the rounds. With `control`, the first model
    steps with torch's fused optimizer too (the bench's noise floor: both sides the same code)."""
    cls, hyper = OPTIMIZERS[name]

    def torch_fused(ps):
        return getattr(torch.optim, cls)(ps, fused=True, **hyper)

    ours_opt = torch_fused if control else (lambda ps: getattr(fastopt.torch, cls)(ps, **hyper))
    ours = make_model(args.width, args.depth)
    theirs = make_model(args.width, args.depth)
    x = torch.randn(args.batch, args.width)
    y = torch.randint(0, 10, (args.batch,))
    ours_phases, theirs_phases = {"step": [], "zero": []}, {"step": [], "zero": []}
    a = stepper(ours, ours_opt(ours.parameters()), x, y, ours_phases)
    b = stepper(theirs, torch_fused(theirs.parameters()), x, y, theirs_phases)
    for _ in range(3):
        a(); b()
    for times in (*ours_phases.values(), *theirs_phases.values()):
        times.clear()
    f, t = interleaved_medians(a, b, args.rounds)
    return f, t, {k: (statistics.median(ours_phases[k]), statistics.median(theirs_phases[k])) for k in ours_phases}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--optimizers", nargs="+", choices=list(OPTIMIZERS), default=list(OPTIMIZERS))
    ap.add_argument("--width", type=int, default=1024)
    ap.add_argument("--depth", type=int, default=3)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=31)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--control", action="store_true",
                    help="after each run, the same pairing with torch's fused step on both sides (the noise floor)")
    args = ap.parse_args()
    if args.threads is not None:
        fastopt.set_num_threads(args.threads)
        torch.set_num_threads(args.threads)
    params = sum(p.numel() for p in make_model(args.width, args.depth).parameters())
    print(f"MLP {args.depth} x {args.width} (+ head), {params / 1e6:.1f}M parameters, batch {args.batch}; "
          f"threads fastopt={fastopt.get_num_threads()} torch={torch.get_num_threads()}; "
          f"{args.rounds} rounds x {args.runs} runs; step = forward + backward + optimizer step")
    for name in args.optimizers:
        ratios, controls = [], []
        for _ in range(args.runs):
            f, t, phases = one_run(name, args)
            ratios.append(f / t)
            (f_step, t_step), (f_zero, t_zero) = phases["step"], phases["zero"]
            print(f"  {name:8s} with fastopt {f * 1e3:7.2f} ms  with torch fused {t * 1e3:7.2f} ms  "
                  f"ratio {f / t:.3f}   opt.step() {f_step * 1e3:5.2f} / {t_step * 1e3:5.2f} ms  "
                  f"zero_grad() {f_zero * 1e3:5.2f} / {t_zero * 1e3:5.2f} ms", flush=True)
            if args.control:
                c, u, _ = one_run(name, args, control=True)
                controls.append(c / u)
                print(f"  {name:8s} control: torch fused {c * 1e3:7.2f} ms  torch fused {u * 1e3:7.2f} ms  "
                      f"ratio {c / u:.3f}", flush=True)
        print(f"{name:8s} step ratios {', '.join(f'{r:.2f}' for r in ratios)}  "
              f"median {statistics.median(ratios):.2f}", flush=True)
        if controls:
            print(f"{name:8s} control ratios {', '.join(f'{r:.2f}' for r in controls)}  "
                  f"median {statistics.median(controls):.2f}  (torch fused on both sides)", flush=True)


if __name__ == "__main__":
    main()
