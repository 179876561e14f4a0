"""Muon: fastopt.torch.Muon against torch.optim.Muon on a GPT-2-small-like list of matrices (12 layers of
768x2304, 768x768, 768x3072, 3072x768; 85M float32 parameters), one step each, interleaved rounds
(fastopt, torch, fastopt, ...), medians. Both run torch's bfloat16 Newton-Schulz (the same matmuls), so the
difference is the elementwise work: fastopt fuses the momentum pass over the whole list into one call and
the update into one call per shape aspect; torch runs lerp, lerp, mul and add per parameter.

Also reported: the twin with its float32 iteration (ns_dtype=torch.float32, with --float32-iteration), and the
elementwise passes
alone (fastopt.muon_momentum_ + muon_apply_ on the list, against torch's per-parameter ops), which is where
the fusion shows; the matrix products dominate a whole step on the CPU.

    python bench/bench_muon.py [--rounds 5] [--layers 12] [--device cpu|cuda] [--float32-iteration]
"""

import argparse
import statistics
import time

import torch

import fastopt
import fastopt.torch

SHAPES = [(768, 2304), (768, 768), (768, 3072), (3072, 768)]


def make_params(layers, device, seed):
    g = torch.Generator(device="cpu").manual_seed(seed)
    params = [torch.nn.Parameter(torch.randn(s, generator=g).to(device) * 0.02) for _ in range(layers) for s in SHAPES]
    for p in params:
        p.grad = torch.randn(p.shape, generator=g).to(device)
    return params


def timed(fn, device):
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


@torch.no_grad()
def elementwise_torch(params, buffers, momentum=0.95, lr=1e-3, wd=0.1):
    """torch.optim.Muon's elementwise ops, without the iteration (O stands in as the nesterov update)."""
    for p, buf in zip(params, buffers):
        buf.lerp_(p.grad, 1 - momentum)
        update = p.grad.lerp(buf, momentum)
        p.mul_(1 - lr * wd)
        p.add_(update, alpha=-lr)


def elementwise_fastopt(params, buffers, updates, momentum=0.95, lr=1e-3, wd=0.1):
    fastopt.muon_momentum_(updates, [p.grad for p in params], buffers, momentum=momentum)
    fastopt.muon_apply_([p.detach() for p in params], updates, lr=lr, weight_decay=wd, lr_scale=1.0)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--float32-iteration", action="store_true", help="also the twin with ns_dtype=float32")
    args = parser.parse_args()
    device = args.device

    runs = {}
    for name in ("fastopt", "torch") + (("fastopt_f32ns",) if args.float32_iteration else ()):
        params = make_params(args.layers, device, seed=0)
        if name == "torch":
            opt = torch.optim.Muon(params)
        else:
            opt = fastopt.torch.Muon(params, ns_dtype=torch.float32 if name == "fastopt_f32ns" else torch.bfloat16)
        opt.step()  # (warm-up: state made)
        runs[name] = opt
    ew_params = make_params(args.layers, device, seed=1)
    ew_buffers = [torch.zeros_like(p) for p in ew_params]
    ew_updates = [torch.empty_like(p) for p in ew_params]
    ew = {"elementwise_fastopt": lambda: elementwise_fastopt(ew_params, ew_buffers, ew_updates),
          "elementwise_torch": lambda: elementwise_torch(ew_params, ew_buffers)}
    for fn in ew.values():
        fn()

    times = {name: [] for name in list(runs) + list(ew)}
    for _ in range(args.rounds):
        for name, opt in runs.items():
            times[name].append(timed(opt.step, device))
        for name, fn in ew.items():
            times[name].append(timed(fn, device))

    n = sum(p.numel() for p in make_params(args.layers, "cpu", 2))
    print(f"Muon step, {args.layers} layers x {SHAPES}, {n / 1e6:.1f}M float32 parameters, {device}, "
          f"threads={torch.get_num_threads()}, medians of {args.rounds} interleaved rounds")
    median = {name: statistics.median(t) for name, t in times.items()}
    for name in times:
        print(f"  {name:22s} {median[name] * 1e3:9.2f} ms")
    print(f"  whole step: torch / fastopt = {median['torch'] / median['fastopt']:.2f}x")
    print(f"  elementwise only: torch / fastopt = {median['elementwise_torch'] / median['elementwise_fastopt']:.2f}x")


if __name__ == "__main__":
    main()
