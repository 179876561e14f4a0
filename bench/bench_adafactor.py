"""Adafactor, float32, on the CPU or a CUDA GPU (--device cuda), on a GPT-2-small-like list of parameters: per layer 768x2304 (qkv),
768x768 (attention out), 768x3072 and 3072x768 (MLP) and their biases and layer norms, plus the 50257x768
token embedding (124M elements with the default 12 layers).

Contenders, one step each, interleaved round by round (medians over the rounds):
  - fastopt.adafactor_: the raw call over the whole list (one native call);
  - fastopt.torch.Adafactor: the twin's step (the same call behind torch.optim's bookkeeping);
  - torch.optim.Adafactor(foreach=False) and (foreach=True).
The effective bandwidth counts the bytes fastopt's passes move: a factored tensor reads p and g (row and
column sums, sum p^2), g (sum U^2), then p and g and writes p: 24 bytes per float32 element (a vector
32: its variance is read and written too). The in-place probe (a += b, 12 bytes per element, the same
threads) on 16M elements gives the machine's bandwidth in the same run.

With --device cuda every contender works on CUDA tensors (fastopt.adafactor_ on torch's tensors, queued on
torch's current stream), each timed to a torch.cuda.synchronize(), and the probe is torch's a += b on the
GPU. (On the GPU fastopt's passes move more than 24 bytes per element: the row and column sums read g
twice; the figure is still counted at 24.)

    python bench/bench_adafactor.py [--device cpu|cuda] [--layers 12] [--vocab 50257] [--rounds 5] [--threads N]
"""

import argparse
import statistics
import time

import numpy as np

import fastopt
from fastopt import _core

try:
    import torch
    import fastopt.torch as ft
except ImportError:  # (the torch columns are left out)
    torch = None


def shapes(layers, vocab, width=768):
    out = [(vocab, width)]
    for _ in range(layers):
        out += [(width, 3 * width), (width, width), (width, 4 * width), (4 * width, width)]
        out += [(3 * width,), (width,), (4 * width,), (width,), (width,), (width,), (width,), (width,)]
    return out


def fastopt_call(shape_list, rng, device):
    def array(a):
        return a if device == "cpu" else torch.from_numpy(a).to(device)

    params = [array(rng.standard_normal(s, dtype=np.float32)) for s in shape_list]
    grads = [array(rng.standard_normal(s, dtype=np.float32)) for s in shape_list]
    rows = [array(np.zeros(s[:-1] + (1,), np.float32)) if len(s) >= 2 else None for s in shape_list]
    cols = [array(np.zeros(s[:-2] + (1, s[-1]), np.float32)) if len(s) >= 2 else None for s in shape_list]
    variances = [array(np.zeros(s, np.float32)) if len(s) < 2 else None for s in shape_list]
    step = [0]

    def call():
        step[0] += 1
        fastopt.adafactor_(params, grads, rows, cols, variances, step=step[0])

    return call


def torch_step(shape_list, rng, maker, device):
    weights = [torch.nn.Parameter(torch.from_numpy(rng.standard_normal(s, dtype=np.float32)).to(device))
               for s in shape_list]
    for w in weights:
        w.grad = torch.from_numpy(rng.standard_normal(w.shape, dtype=np.float32)).to(device)
    return maker(weights).step


def model_bytes(shape_list):
    total = 0
    for s in shape_list:
        n = int(np.prod(s))
        total += n * (24 if len(s) >= 2 else 32)
    return total


def timed(fn, device):
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--vocab", type=int, default=50257)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="fastopt's and torch's threads (default: theirs)")
    args = parser.parse_args()
    if args.threads:
        fastopt.set_num_threads(args.threads)
        if torch is not None:
            torch.set_num_threads(args.threads)

    device = args.device
    if device == "cuda" and (torch is None or not torch.cuda.is_available() or not fastopt.cuda.is_available()):
        parser.error("--device cuda needs torch with CUDA and a CUDA build of fastopt")
    rng = np.random.default_rng(0)
    shape_list = shapes(args.layers, args.vocab)
    elements = sum(int(np.prod(s)) for s in shape_list)
    contenders = {"fastopt.adafactor_": fastopt_call(shape_list, rng, device)}
    if torch is not None:
        contenders["fastopt.torch.Adafactor"] = torch_step(shape_list, rng, lambda w: ft.Adafactor(w), device)
        contenders["torch foreach=False"] = torch_step(
            shape_list, rng, lambda w: torch.optim.Adafactor(w, foreach=False), device)
        contenders["torch foreach=True"] = torch_step(
            shape_list, rng, lambda w: torch.optim.Adafactor(w, foreach=True), device)
    n_probe = 1 << 24
    a = rng.standard_normal(n_probe, dtype=np.float32)
    b = rng.standard_normal(n_probe, dtype=np.float32)
    if device == "cuda":
        a_gpu, b_gpu = torch.from_numpy(a).to(device), torch.from_numpy(b).to(device)
        contenders["probe a += b (16M)"] = lambda: a_gpu.add_(b_gpu)
    else:
        contenders["probe a += b (16M)"] = lambda: _core._probe_add(a, b)

    for fn in contenders.values():  # warm-up (first-touch of the state, thread start)
        fn()
    times = {name: [] for name in contenders}
    for _ in range(args.rounds):
        for name, fn in contenders.items():
            times[name].append(timed(fn, device))
    medians = {name: statistics.median(t) for name, t in times.items()}

    probe_gbs = 12 * n_probe / medians["probe a += b (16M)"] / 1e9
    print(f"{device}: {len(shape_list)} tensors, {elements / 1e6:.1f}M float32 elements; fastopt threads "
          f"{fastopt.get_num_threads()}, torch threads {torch.get_num_threads() if torch else '-'}; "
          f"medians of {args.rounds} interleaved rounds")
    print(f"probe bandwidth: {probe_gbs:.1f} GB/s")
    base = medians["fastopt.adafactor_"]
    for name, t in medians.items():
        if name.startswith("probe"):
            continue
        gbs = model_bytes(shape_list) / t / 1e9
        print(f"  {name:26s} {t * 1e3:9.1f} ms   {t / base:5.2f}x fastopt   "
              f"{gbs:5.1f} GB/s at fastopt's bytes ({gbs / probe_gbs:.0%} of the probe)")


if __name__ == "__main__":
    main()
