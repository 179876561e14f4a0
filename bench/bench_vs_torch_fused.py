"""fastopt against torch.optim's fused CPU step on one large tensor or GPT-2 small's list, interleaved in
one process (a fastopt call, a torch step, a fastopt call, ...): the median of each over the rounds, and
fastopt / torch. Run it several times: the machine's load moves single runs.

Each run also prints both sides' bandwidth (the bytes an update must move: parameter, gradient and each
state read, parameter and each state written, each side's state in its own dtype) and the memory probe's (fastopt's threaded a += b over as many
float32 elements, timed after the run): a side near the probe is bound by memory, where no loop can be
faster.

    python bench/bench_vs_torch_fused.py [--size 16M|gpt2] [--rounds 21] [--runs 3] [--threads N]
                                         [--dtype float32|float16|bfloat16] [--operands same|numpy|torch]
                                         [--control]

--size gpt2: GPT-2 small's 148 parameter tensors (124M elements), one call each side.

--threads N sets both libraries' thread count (fastopt.set_num_threads and torch.set_num_threads);
without it each keeps its default. --dtype float16/bfloat16: half-precision params and grads (torch
tensors), which fastopt updates with float32 state and torch's fused step with state of the params'
dtype (torch's rule: half the state bytes fastopt moves).

--operands says whose memory fastopt updates. same (the default): torch's own parameter, gradient and
optimizer state, so both loops stream the very same bytes and only the loops differ. numpy: a torch
parameter with NumPy state arrays of fastopt's own; torch: fastopt's own torch tensors (what a
fastopt.torch twin updates). In the last two the operands sit elsewhere in memory than torch's, and where
arrays start relative to each other moves a 16M step by 10-30% in either library (4K aliasing,
BENCHMARKS.md), so those ratios hold placement as well as loop speed. same is float32 only (torch keeps
half-precision state for half-precision parameters); other dtypes default to numpy.

--control adds, after each run, the same interleaving with torch's fused step on both sides (the very same
step on the same tensors, twice a round): the ratio two identical sides give, the noise floor against which
a run's fastopt / torch is read. A ratio inside the control's spread is a tie, not a loss or a win.
"""

import argparse
import statistics
import time

import numpy as np
import torch

import fastopt
from fastopt.bench.workloads import gpt2_small_shapes
from _interleave import interleaved_medians  # bench/_interleave.py (this script's folder is on sys.path)

# name: (torch class, torch kwargs, torch's state keys in fastopt's operand order, fastopt kwargs)
CASES = {
    "adamw": ("AdamW", dict(lr=1e-3, weight_decay=1e-2), ("exp_avg", "exp_avg_sq"), dict(lr=1e-3, weight_decay=1e-2)),
    "sgd": ("SGD", dict(lr=1e-3, momentum=0.9), ("momentum_buffer",), dict(lr=1e-3, momentum=0.9)),
    "adagrad": ("Adagrad", dict(lr=1e-2), ("sum",), dict(lr=1e-2)),
}
OPERANDS = ("same", "numpy", "torch")


def parse_shapes(text: str) -> list:
    """--size: one tensor of that many elements (16M, 1K, 1000), or gpt2 for GPT-2 small's 148 tensors."""
    if text == "gpt2":
        return [shape for _, shape in gpt2_small_shapes()]
    units = {"K": 1 << 10, "M": 1 << 20}
    return [(int(text[:-1]) * units[text[-1]] if text[-1] in units else int(text),)]


def case_pair(name: str, shapes: list, rng, dtype: torch.dtype = torch.float32, operands: str = "same"):
    """(fastopt step, torch fused step) over one parameter per shape, fastopt's on the operands
    `operands` names, all of them in one call (a list, as torch's fused step takes them)."""
    cls, torch_kw, state_keys, fo_kw = CASES[name]
    params = [torch.nn.Parameter(torch.from_numpy(rng.standard_normal(shape, dtype=np.float32)).to(dtype))
              for shape in shapes]
    for tp in params:
        tp.grad = torch.from_numpy(rng.standard_normal(tp.shape, dtype=np.float32)).to(dtype)
    opt = getattr(torch.optim, cls)(params, fused=True, **torch_kw)
    grads = [tp.grad for tp in params]
    if operands == "same":
        if dtype != torch.float32:
            raise SystemExit("--operands same needs --dtype float32 (torch keeps half-precision state then)")
        opt.step()  # torch creates its state on the first step
        fparams = [tp.detach() for tp in params]
        fstates = [[opt.state[tp][key] for tp in params] for key in state_keys]
    else:
        fparams = [tp.detach().clone() for tp in params]
        zeros = (lambda s: np.zeros(s, np.float32)) if operands == "numpy" else (lambda s: torch.zeros(s))
        fstates = [[zeros(tuple(tp.shape)) for tp in params] for _ in state_keys]
    kernel = getattr(fastopt, name + "_")
    step = [0]
    one = len(shapes) == 1  # one tensor: the single-array call, as users make it

    def fastopt_step():
        step[0] += 1
        operands_ = [fparams, grads, *fstates]
        kernel(*([x[0] for x in operands_] if one else operands_), step=step[0], **fo_kw)

    return fastopt_step, opt.step


def run(name: str, shapes: list, rounds: int, rng, dtype: torch.dtype, operands: str, control: bool = False) -> tuple:
    """(fastopt's median, torch's median); with `control`, torch's step takes fastopt's turns too."""
    a, b = case_pair(name, shapes, rng, dtype, operands)
    if control:
        a = b
    a(); b(); a(); b()
    return interleaved_medians(a, b, rounds)


def update_bytes(name: str, n: int, dtype: torch.dtype, state_dtype: torch.dtype) -> int:
    """The least an update moves: parameter and gradient read and the parameter written (`dtype`), each
    state read and written (`state_dtype`: float32 for fastopt, the parameters' dtype for torch)."""
    states = len(CASES[name][2])
    return n * (3 * torch.finfo(dtype).bits + 2 * states * torch.finfo(state_dtype).bits) // 8


def probe_gbps(n: int, rounds: int = 7) -> float:
    """fastopt's memory probe (a += b over n float32: 12 bytes an element), the median of `rounds`, in GB/s."""
    a, b = np.ones(n, np.float32), np.ones(n, np.float32)
    fastopt._core._probe_add(a, b)
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        fastopt._core._probe_add(a, b)
        times.append(time.perf_counter() - t0)
    return 12 * n / statistics.median(times) / 1e9


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="16M")
    ap.add_argument("--rounds", type=int, default=21)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    ap.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    ap.add_argument("--operands", default=None, choices=OPERANDS, help="default: same for float32, numpy otherwise")
    ap.add_argument("--control", action="store_true",
                    help="after each run, torch's fused step against itself (the noise floor of the ratio)")
    args = ap.parse_args()
    dtype = getattr(torch, args.dtype)
    if args.operands is None:
        args.operands = "same" if dtype == torch.float32 else "numpy"
    if args.threads is not None:
        fastopt.set_num_threads(args.threads)
        torch.set_num_threads(args.threads)
    shapes = parse_shapes(args.size)
    n = sum(int(np.prod(shape)) for shape in shapes)
    rng = np.random.default_rng(0)
    print(f"{args.size} {args.dtype}, threads fastopt={fastopt.get_num_threads()} torch={torch.get_num_threads()}, "
          f"{args.rounds} rounds x {args.runs} runs, fastopt on {args.operands} operands")
    for name in args.cases:
        ratios, controls = [], []
        for _ in range(args.runs):
            f, t = run(name, shapes, args.rounds, rng, dtype, args.operands)
            ratios.append(f / t)
            f_gb, t_gb = (update_bytes(name, n, dtype, sd) / 1e9 for sd in (torch.float32, dtype))
            print(f"  {name:8s} fastopt {f * 1e3:7.2f} ms ({f_gb / f:5.1f} GB/s)  torch fused {t * 1e3:7.2f} ms "
                  f"({t_gb / t:5.1f} GB/s)  probe {probe_gbps(n):5.1f} GB/s  ratio {f / t:.3f}", flush=True)
            if args.control:
                c, u = run(name, shapes, args.rounds, rng, dtype, args.operands, control=True)
                controls.append(c / u)
                print(f"  {name:8s} control: torch fused {c * 1e3:7.2f} ms  torch fused {u * 1e3:7.2f} ms  "
                      f"ratio {c / u:.3f}", flush=True)
        print(f"{name:8s} ratios {', '.join(f'{r:.2f}' for r in ratios)}  median {statistics.median(ratios):.2f}")
        if controls:
            print(f"{name:8s} control ratios {', '.join(f'{r:.2f}' for r in controls)}  "
                  f"median {statistics.median(controls):.2f}  (torch fused on both sides)", flush=True)


if __name__ == "__main__":
    main()
