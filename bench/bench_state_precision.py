"""Optimizers with compact state (bfloat16, 8-bit blockwise) against torch's fused float32 step and the 8-bit
peers on the CPU, interleaved in one process: each round runs every case once (in a rotated order), and each
case's figure is its median over the rounds; ratios are against torch's fused step (RMSprop: foreach, torch has
no fused RMSprop) on float32 measured in the same rounds. Run it several times: the machine's load moves single
runs.

    python bench/bench_state_precision.py [--optimizer adamw|sgd|adagrad|rmsprop|nadam|lion] [--size 16M]
                                          [--rounds 11] [--runs 2] [--threads N] [--cases ...]

AdamW by default; sgd is SGD with momentum 0.9 (one state array, as Adagrad's and RMSprop's: 20 bytes moved
per element in float32, 16 with bfloat16 state, ~14 with 8-bit state, 10 all bfloat16). The bitsandbytes case is
its 8-bit optimizer of the same name (AdamW8bit, SGD8bit, Adagrad8bit, RMSprop8bit, Lion8bit). nadam and lion are
two of the optimizers described as rules (their bfloat16 and 8-bit storage are one generic loop each,
csrc/cpu/rule_bf16_loops.h and rule_int8_loops.h): NAdam against torch's foreach NAdam (torch has no fused one),
Lion against fastopt's own float32 step (torch has no Lion) and bitsandbytes' Lion8bit.
Cases (each skipped, saying why, when what it needs is missing):
  torch-fused-fp32     torch.optim.AdamW(fused=True), float32 params and state: 28 bytes moved per element
  fastopt-fp32         fastopt.adamw_, float32 params and state
  fastopt-bf16-state   float32 params and grads, bfloat16 exp_avg / exp_avg_sq: 20 bytes per element
  fastopt-int8-state   float32 params and grads, 8-bit blockwise state (fastopt.QuantizedState): ~16 bytes
  fastopt-bf16-all     bfloat16 params, grads and state: 14 bytes per element
  torch-fused-bf16     torch.optim.AdamW(fused=True) on bfloat16 params (its state: bfloat16 too), the same bytes
  bnb-adamw8bit        bitsandbytes.optim.AdamW8bit (its CPU path)
  torchao-adamw8bit    torchao.optim.AdamW8bit
(the byte counts are AdamW's; the other optimizers' are printed with their rows)
The bytes column is the model: parameter and state read and written, gradient read, absmax included.
"""

import argparse
import statistics
import time

import numpy as np

import fastopt

HYPER = dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2)


class Optimizer:
    """One optimizer of the benchmark: its fastopt kernel call, its torch and bitsandbytes peers, and how many
    state arrays it keeps (which sets the bytes moved) and which of them hold values of either sign (the signed
    8-bit map; sums of squares take the unsigned one)."""

    def __init__(self, name, signed_states, torch_class, torch_options, bnb_class, call, torch_fused=True):
        self.name, self.states, self.signed_states = name, len(signed_states), signed_states
        self.torch_class, self.torch_options, self.bnb_class = torch_class, torch_options, bnb_class
        self.call = call  # call(params, grads, state arrays, step)
        self.torch_fused = torch_fused  # (False: torch has no fused one; its foreach step is the peer)

    def torch(self, params, fused=True):
        import torch

        if self.torch_class is None:
            raise ValueError(f"torch.optim has no {self.name}")
        options = dict(self.torch_options, **({"fused": True} if fused and self.torch_fused else {}))
        return getattr(torch.optim, self.torch_class)(params, **options)

    def bytes(self, param_bytes, state_bytes):
        """Bytes moved per element: params read and written, grads read, each state read and written."""
        return 3 * param_bytes + 2 * self.states * state_bytes


OPTIMIZERS = {
    "adamw": Optimizer("adamw", (True, False), "AdamW", HYPER, "AdamW8bit", lambda p, g, s, t: fastopt.adamw_(
        p, g, s[0], s[1], lr=HYPER["lr"], beta1=HYPER["betas"][0], beta2=HYPER["betas"][1], eps=HYPER["eps"],
        weight_decay=HYPER["weight_decay"], step=t)),
    "sgd": Optimizer("sgd", (True,), "SGD", dict(lr=1e-3, momentum=0.9), "SGD8bit", lambda p, g, s, t: fastopt.sgd_(
        p, g, s[0], lr=1e-3, momentum=0.9, step=t)),
    "adagrad": Optimizer("adagrad", (False,), "Adagrad", dict(lr=1e-2), "Adagrad8bit", lambda p, g, s, t: fastopt.adagrad_(
        p, g, s[0], lr=1e-2, step=t)),
    "rmsprop": Optimizer("rmsprop", (False,), "RMSprop", dict(lr=1e-2), "RMSprop8bit", lambda p, g, s, t: fastopt.rmsprop_(
        p, g, s[0], lr=1e-2), torch_fused=False),
    "nadam": Optimizer("nadam", (True, False), "NAdam", dict(lr=2e-3), None, lambda p, g, s, t: fastopt.nadam_(
        p, g, s[0], s[1], lr=2e-3, step=t), torch_fused=False),
    "lion": Optimizer("lion", (True,), None, dict(lr=1e-4), "Lion8bit", lambda p, g, s, t: fastopt.lion_(
        p, g, s[0], lr=1e-4)),
}


def parse_size(text: str) -> int:
    units = {"K": 1 << 10, "M": 1 << 20}
    return int(text[:-1]) * units[text[-1]] if text[-1] in units else int(text)


def fastopt_case(opt, n, rng, param_dtype, state_form):
    """A stepping closure over opt's fastopt kernel with params of param_dtype and state of state_form."""
    p = rng.standard_normal(n, dtype=np.float32)
    g = rng.standard_normal(n, dtype=np.float32)
    if param_dtype != "float32":
        import ml_dtypes

        p, g = p.astype(ml_dtypes.bfloat16), g.astype(ml_dtypes.bfloat16)
    if state_form == "float32":
        state = [np.zeros(n, np.float32) for _ in range(opt.states)]
    elif state_form == "bfloat16":
        import ml_dtypes

        state = [np.zeros(n, ml_dtypes.bfloat16) for _ in range(opt.states)]
    else:  # 8-bit: each state with the map fastopt.optim gives it (signed for values of either sign)
        state = [fastopt.QuantizedState.zeros((n,), signed=signed) for signed in opt.signed_states]
    step = [0]

    def run():
        step[0] += 1
        opt.call(p, g, state, step[0])

    return run


def torch_case(n, rng, make_optimizer, dtype="float32"):
    import torch

    p = torch.nn.Parameter(torch.from_numpy(rng.standard_normal(n, dtype=np.float32)).to(getattr(torch, dtype)))
    p.grad = torch.from_numpy(rng.standard_normal(n, dtype=np.float32)).to(p.dtype)
    return make_optimizer([p]).step


def build_cases(opt, names, n, rng):
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

    absmax = 2 * opt.states * 4 / 256  # the states, read and written, one float32 per 256 elements
    add("torch-fused-fp32", opt.bytes(4, 4), lambda: torch_case(n, rng, opt.torch))
    add("fastopt-fp32", opt.bytes(4, 4), lambda: fastopt_case(opt, n, rng, "float32", "float32"))
    add("fastopt-bf16-state", opt.bytes(4, 2), lambda: fastopt_case(opt, n, rng, "float32", "bfloat16"))
    add("fastopt-int8-state", opt.bytes(4, 1) + absmax, lambda: fastopt_case(opt, n, rng, "float32", "int8"))
    add("fastopt-bf16-all", opt.bytes(2, 2), lambda: fastopt_case(opt, n, rng, "bfloat16", "bfloat16"))
    add("torch-fused-bf16", opt.bytes(2, 2), lambda: torch_case(n, rng, opt.torch, "bfloat16"))
    bnb = "bnb-" + (opt.bnb_class or "8bit").lower()

    def bnb_case():
        if opt.bnb_class is None:
            raise ValueError(f"bitsandbytes has no 8-bit {opt.name}")
        return torch_case(n, rng, lambda ps: getattr(__import__("bitsandbytes").optim, opt.bnb_class)(
            ps, **opt.torch_options))

    add(bnb, opt.bytes(4, 1) + absmax, bnb_case)

    def torchao_case():
        from torchao.optim import AdamW8bit

        if opt.name != "adamw":
            raise ValueError(f"torchao has no 8-bit {opt.name}")
        return torch_case(n, rng, lambda ps: AdamW8bit(ps, **HYPER))

    add("torchao-adamw8bit", opt.bytes(4, 1) + absmax, torchao_case)
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
    ap.add_argument("--optimizer", choices=sorted(OPTIMIZERS), default="adamw")
    ap.add_argument("--size", default="16M")
    ap.add_argument("--rounds", type=int, default=11)
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--threads", type=int, default=None)
    all_cases = ["torch-fused-fp32", "fastopt-fp32", "fastopt-bf16-state", "fastopt-int8-state",
                 "fastopt-bf16-all", "torch-fused-bf16", "bnb-8bit", "torchao-adamw8bit"]
    ap.add_argument("--cases", nargs="+", default=all_cases, choices=all_cases,
                    help="bnb-8bit: bitsandbytes' 8-bit optimizer of the same kind")
    args = ap.parse_args()
    opt = OPTIMIZERS[args.optimizer]
    args.cases = ["bnb-" + (opt.bnb_class or "8bit").lower() if c == "bnb-8bit" else c for c in args.cases]
    n = parse_size(args.size)
    if args.threads is not None:
        fastopt.set_num_threads(args.threads)
        try:
            import torch

            torch.set_num_threads(args.threads)
        except ImportError:
            pass
    cases, skipped = build_cases(opt, args.cases, n, np.random.default_rng(0))
    for name, why in skipped.items():
        print(f"skipped {name}: {why}")
    print(f"{opt.torch_class or opt.name} over {args.size} elements, fastopt threads {fastopt.get_num_threads()}, "
          f"{args.rounds} rounds x {args.runs} runs, medians")
    # the ratios' base: torch's float32 step (fused, or foreach where torch has no fused one); fastopt's own
    # float32 step where torch has no such optimizer
    base = next((b for b in ("torch-fused-fp32", "fastopt-fp32") if b in cases), None)
    base_name = {"torch-fused-fp32": f"torch {'fused' if opt.torch_fused else 'foreach'} fp32",
                 "fastopt-fp32": "fastopt fp32"}.get(base)
    for run in range(args.runs):
        medians = one_run(cases, args.rounds)
        print(f"run {run + 1}:")
        for name, seconds in medians.items():
            bytes_per_element = cases[name][1]
            line = f"  {name:20s} {seconds * 1e3:8.2f} ms  {bytes_per_element:5.2f} B/el  " \
                   f"{bytes_per_element * n / seconds / 1e9:6.1f} GB/s"
            if base is not None:
                line += f"  / {base_name} {seconds / medians[base]:6.3f}"
            print(line, flush=True)


if __name__ == "__main__":
    main()
