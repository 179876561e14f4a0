"""AdamW with compact optimizer state (bfloat16, 8-bit blockwise) against torch's fused float32 step and
the 8-bit peers on the CPU, interleaved in one process: each round runs every case once (in a rotated
order), and each case's figure is its median over the rounds; ratios are against torch.optim.AdamW(fused=True)
on float32 measured in the same rounds. Run it several times: the machine's load moves single runs.

    python bench/bench_state_precision.py [--size 16M] [--rounds 11] [--runs 2] [--threads N] [--cases ...]

Cases (each skipped, saying why, when what it needs is missing):
  torch-fused-fp32     torch.optim.AdamW(fused=True), float32 params and state: 28 bytes moved per element
  fastopt-fp32         fastopt.adamw_, float32 params and state
  fastopt-bf16-state   float32 params and grads, bfloat16 exp_avg / exp_avg_sq: 20 bytes per element
  fastopt-int8-state   float32 params and grads, 8-bit blockwise state (fastopt.QuantizedState): ~16 bytes
  fastopt-bf16-all     bfloat16 params, grads and state: 14 bytes per element
  torch-fused-bf16     torch.optim.AdamW(fused=True) on bfloat16 params (its state: bfloat16 too), the same bytes
  bnb-adamw8bit        bitsandbytes.optim.AdamW8bit (its CPU path)
  torchao-adamw8bit    torchao.optim.AdamW8bit
The bytes column is the model: parameter and state read and written, gradient read, absmax included.
"""

import argparse
import statistics
import time

import numpy as np

import fastopt

HYPER = dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2)


def parse_size(text: str) -> int:
    units = {"K": 1 << 10, "M": 1 << 20}
    return int(text[:-1]) * units[text[-1]] if text[-1] in units else int(text)


def fastopt_case(n, rng, param_dtype, state_form):
    """A stepping closure over fastopt.adamw_ with params of param_dtype and state of state_form."""
    p = rng.standard_normal(n, dtype=np.float32)
    g = rng.standard_normal(n, dtype=np.float32)
    if param_dtype != "float32":
        import ml_dtypes

        p, g = p.astype(ml_dtypes.bfloat16), g.astype(ml_dtypes.bfloat16)
    if state_form == "float32":
        m, v = np.zeros(n, np.float32), np.zeros(n, np.float32)
    elif state_form == "bfloat16":
        import ml_dtypes

        m, v = np.zeros(n, ml_dtypes.bfloat16), np.zeros(n, ml_dtypes.bfloat16)
    else:
        m, v = fastopt.QuantizedState.zeros((n,), signed=True), fastopt.QuantizedState.zeros((n,), signed=False)
    step = [0]

    def run():
        step[0] += 1
        fastopt.adamw_(p, g, m, v, lr=HYPER["lr"], beta1=HYPER["betas"][0], beta2=HYPER["betas"][1],
                       eps=HYPER["eps"], weight_decay=HYPER["weight_decay"], step=step[0])

    return run


def torch_case(n, rng, make_optimizer, dtype="float32"):
    import torch

    p = torch.nn.Parameter(torch.from_numpy(rng.standard_normal(n, dtype=np.float32)).to(getattr(torch, dtype)))
    p.grad = torch.from_numpy(rng.standard_normal(n, dtype=np.float32)).to(p.dtype)
    return make_optimizer([p]).step


def build_cases(names, n, rng):
    """name -> (step closure, bytes per element), and name -> why it was skipped."""
    cases, skipped = {}, {}

    def add(name, bytes_per_element, make):
        if name not in names:
            return
        try:
            step = make()
            step()  # the first step: state allocated, and a form the installed fastopt refuses is seen here
            cases[name] = (step, bytes_per_element)
        except (ImportError, AttributeError, TypeError, ValueError, RuntimeError) as error:
            skipped[name] = f"{type(error).__name__}: {error}"

    absmax = 2 * 2 * 4 / 256  # two states, read and written, one float32 per 256 elements
    add("torch-fused-fp32", 28, lambda: torch_case(
        n, rng, lambda ps: __import__("torch").optim.AdamW(ps, fused=True, **HYPER)))
    add("fastopt-fp32", 28, lambda: fastopt_case(n, rng, "float32", "float32"))
    add("fastopt-bf16-state", 20, lambda: fastopt_case(n, rng, "float32", "bfloat16"))
    add("fastopt-int8-state", 16 + absmax, lambda: fastopt_case(n, rng, "float32", "int8"))
    add("fastopt-bf16-all", 14, lambda: fastopt_case(n, rng, "bfloat16", "bfloat16"))
    add("torch-fused-bf16", 14, lambda: torch_case(
        n, rng, lambda ps: __import__("torch").optim.AdamW(ps, fused=True, **HYPER), "bfloat16"))
    add("bnb-adamw8bit", 16 + absmax, lambda: torch_case(
        n, rng, lambda ps: __import__("bitsandbytes").optim.AdamW8bit(ps, **HYPER)))

    def torchao_case():
        from torchao.optim import AdamW8bit

        return torch_case(n, rng, lambda ps: AdamW8bit(ps, **HYPER))

    add("torchao-adamw8bit", 16 + absmax, torchao_case)
    return cases, skipped


def one_run(cases, rounds):
    """Medians of every case over rounds, each round running every case once in a rotated order."""
    names = list(cases)
    for name in names:  # warm-up: the caches, the peers' lazily built kernels
        cases[name][0]()
    times = {name: [] for name in names}
    for r in range(rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        for name in order:
            t0 = time.perf_counter()
            cases[name][0]()
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(ts) for name, ts in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="16M")
    ap.add_argument("--rounds", type=int, default=11)
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--threads", type=int, default=None)
    all_cases = ["torch-fused-fp32", "fastopt-fp32", "fastopt-bf16-state", "fastopt-int8-state",
                 "fastopt-bf16-all", "torch-fused-bf16", "bnb-adamw8bit", "torchao-adamw8bit"]
    ap.add_argument("--cases", nargs="+", default=all_cases, choices=all_cases)
    args = ap.parse_args()
    n = parse_size(args.size)
    if args.threads is not None:
        fastopt.set_num_threads(args.threads)
        try:
            import torch

            torch.set_num_threads(args.threads)
        except ImportError:
            pass
    cases, skipped = build_cases(args.cases, n, np.random.default_rng(0))
    for name, why in skipped.items():
        print(f"skipped {name}: {why}")
    print(f"AdamW over {args.size} elements, fastopt threads {fastopt.get_num_threads()}, "
          f"{args.rounds} rounds x {args.runs} runs, medians")
    base = "torch-fused-fp32" if "torch-fused-fp32" in cases else None
    for run in range(args.runs):
        medians = one_run(cases, args.rounds)
        print(f"run {run + 1}:")
        for name, seconds in medians.items():
            bytes_per_element = cases[name][1]
            line = f"  {name:20s} {seconds * 1e3:8.2f} ms  {bytes_per_element:5.2f} B/el  " \
                   f"{bytes_per_element * n / seconds / 1e9:6.1f} GB/s"
            if base is not None:
                line += f"  / torch fused fp32 {seconds / medians[base]:6.3f}"
            print(line, flush=True)


if __name__ == "__main__":
    main()
