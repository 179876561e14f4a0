"""fastopt and torch.optim's fused CPU step on operands placed at chosen offsets within a 4 KiB page,
interleaved in one process: how much where the arrays start moves each library's time (csrc/cpu/line_order.h).
NumPy's large arrays start 16 bytes past a page, torch's 64 bytes past one, so a torch parameter with
NumPy state (or the reverse) is a layout users meet.

    python bench/bench_layout.py [--size 16M] [--rounds 11] [--threads 1] [--cases adamw sgd adagrad]
                                 [--layouts 0,0,0,0 64,16,16,16 16,64,64,64 0,1024,2048,3072]

A layout is the byte offset of the parameter, the gradient and each state within their pages.
"""

import argparse

import numpy as np
import torch

import fastopt
from _interleave import interleaved_medians  # bench/_interleave.py (this script's folder is on sys.path)

CASES = {
    "adamw": ("AdamW", dict(lr=1e-3, weight_decay=1e-2), ("exp_avg", "exp_avg_sq")),
    "sgd": ("SGD", dict(lr=1e-3, momentum=0.9), ("momentum_buffer",)),
    "adagrad": ("Adagrad", dict(lr=1e-2), ("sum",)),
}


def placed(values: np.ndarray, offset: int) -> torch.Tensor:
    """A float32 copy of values starting `offset` bytes past a 4 KiB page boundary."""
    buf = np.empty(values.nbytes + 8192, np.uint8)
    start = (-buf.ctypes.data) % 4096 + offset
    out = buf[start:start + values.nbytes].view(np.float32)
    out[...] = values
    return torch.from_numpy(out)


def pair(name: str, n: int, offsets: list, rng):
    cls, kwargs, state_names = CASES[name]
    p = rng.standard_normal(n, dtype=np.float32)
    g = rng.standard_normal(n, dtype=np.float32)
    zeros = np.zeros(n, np.float32)
    fp, fg = placed(p, offsets[0]), placed(g, offsets[1])
    fstates = [placed(zeros, offsets[2 + j]) for j in range(len(state_names))]
    kernel = getattr(fastopt, name + "_")
    step = [0]

    def fastopt_step():
        step[0] += 1
        kernel(fp, fg, *fstates, **kwargs, step=step[0])

    tp = torch.nn.Parameter(placed(p, offsets[0]))
    tp.grad = placed(g, offsets[1])
    opt = getattr(torch.optim, cls)([tp], fused=True, **kwargs)
    opt.step()  # creates the state, which is then replaced by placed copies
    for j, key in enumerate(state_names):
        opt.state[tp][key] = placed(opt.state[tp][key].numpy(), offsets[2 + j])
    return fastopt_step, opt.step


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="16M")
    ap.add_argument("--rounds", type=int, default=11)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    ap.add_argument("--layouts", nargs="+", default=["0,0,0,0", "64,16,16,16", "16,64,64,64", "0,1024,2048,3072"])
    args = ap.parse_args()
    fastopt.set_num_threads(args.threads)
    torch.set_num_threads(args.threads)
    n = int(args.size[:-1]) << 20 if args.size.endswith("M") else int(args.size)
    rng = np.random.default_rng(0)
    print(f"{args.size} float32, threads {args.threads}, {args.rounds} rounds; offsets: param, grad, states")
    for name in args.cases:
        for layout in args.layouts:
            offsets = [int(x) for x in layout.split(",")]
            offsets += [offsets[-1]] * (4 - len(offsets))
            a, b = pair(name, n, offsets, rng)
            a(); b()
            f, t = interleaved_medians(a, b, args.rounds)
            print(f"  {name:8s} {layout:18s} fastopt {f * 1e3:6.2f} ms  torch fused {t * 1e3:6.2f} ms  "
                  f"ratio {f / t:.3f}", flush=True)


if __name__ == "__main__":
    main()
