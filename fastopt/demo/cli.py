"""The ``fastopt`` command line: ``fastopt [demo]``, ``race``, ``train``, ``bench``, ``info``."""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from typing import List, Optional

# The demo's duration, measured on our 2-core machine (torch installed, a quiet machine); the README
# states the same figures (tests/commands/test_demo.py checks that they agree).
DEMO_SECONDS = "about 18 s"  # (15 s measured before the bench had the rules' rows: about 3 s more)
QUICK_SECONDS = "about 6 s"

DESCRIPTION = f"""\
fastopt at work. Commands (the default is demo):
  demo   the optimizer race, training on scikit-learn's digits and `fastopt bench --quick`, {DEMO_SECONDS}
         on 2 cores ({QUICK_SECONDS} with --quick); pictures into --out (needs the demo extra:
         pip install "fastopt[demo]")
  race   SGD, Momentum, Nesterov, AdaGrad, RMSProp, Adam and AdamW from one start on Rosenbrock, Beale,
         a saddle point and an ill-conditioned valley; contour plots and a table
  train  a linear softmax classifier and a two-layer ReLU net on the digits, each optimizer, a penalty
         and a schedule; loss and validation accuracy curves and a table
  bench  the benchmark suite (fastopt bench --help)
  info   build_info(), the devices found, and a short timing against NumPy
`fastopt COMMAND --help` lists each command's options."""

DEFAULT_OUT = "fastopt-demo"
# The demo's benchmark is `fastopt bench --quick`; the demo's --quick shrinks it to a smoke test.
DEMO_BENCH = ["--quick"]
QUICK_BENCH = ["--quick", "--sizes", "1K", "--shapes", "64x100", "--rounds", "2", "--no-torch",
               "--cuda-size", "1M", "--cuda-shape", "256x1000"]


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be positive: {text!r}")
    return value


def _float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be finite: {text!r}")
    return value


def positive_float(text: str) -> float:
    value = _float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0: {text!r}")
    return value


def nonnegative_float(text: str) -> float:
    value = _float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0: {text!r}")
    return value


def _expand_all(names):
    """--optimizers as given, with `all` standing for every optimizer (in the race's order, no repeats)."""
    from fastopt.demo import race

    if "all" in names:
        return list(race.OPTIMIZERS)
    return list(dict.fromkeys(names))


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser; parser.commands maps each command to its own parser, whose usage an error
    found after parsing prints (fastopt race: error: ..., not the top-level usage)."""
    from fastopt.demo import race, train

    parser = argparse.ArgumentParser(prog="fastopt", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    names = list(race.OPTIMIZERS)

    def out_option(p):
        p.add_argument("--out", metavar="DIR", default=DEFAULT_OUT,
                       help=f"folder for the pictures (default ./{DEFAULT_OUT}; created if missing, checked "
                            "before any work)")

    def lr_option(p, defaults):
        p.add_argument("--lr", nargs="+", default=[], metavar="NAME=LR",
                       help=f"learning rates per optimizer, e.g. --lr adam=0.1 sgd=1e-3 (defaults: {defaults})")

    demo = sub.add_parser("demo", help="race + train + a short bench, with plots (the default)")
    out_option(demo)
    demo.add_argument("--quick", action="store_true",
                      help=f"tiny sizes: a smoke test ({QUICK_SECONDS} on 2 cores instead of {DEMO_SECONDS})")
    demo.add_argument("--no-bench", action="store_true", help="leave the short benchmark out")

    r = sub.add_parser("race", help="the optimizer race on 2-D test functions")
    out_option(r)
    r.add_argument("--steps", type=positive_int, default=2000, help="steps per optimizer and function (default 2000)")
    r.add_argument("--functions", nargs="+", choices=list(race.SURFACES), default=list(race.SURFACES),
                   help="test functions (default: all)")
    r.add_argument("--optimizers", nargs="+", choices=names + ["all"], default=list(race.DEFAULT_RACERS),
                   help="racers (default: the course notes' seven; all: every optimizer fastopt has)")
    lr_option(r, "tuned per function, see the table")
    r.add_argument("--tol", type=positive_float, default=race.TOLERANCE,
                   help=f"'reached': distance to the minimum below this (> 0; default {race.TOLERANCE:g})")
    r.add_argument("--gif", action="store_true",
                   help="also write race.gif: the racers moving step by step, every function side by side")

    t = sub.add_parser("train", help="softmax classifier and ReLU net on scikit-learn's digits")
    out_option(t)
    t.add_argument("--models", nargs="+", choices=train.MODELS, default=list(train.MODELS),
                   help="linear and/or mlp (default: both)")
    t.add_argument("--optimizers", nargs="+", choices=names + ["all"], default=None,
                   help="optimizers (default: the course notes' seven, or Adam and AdamW with --state-dtypes; "
                        "all: every optimizer fastopt has)")
    lr_option(t, ", ".join(f"{k}={v:g}" for k, v in train.DEFAULT_LRS.items()))
    t.add_argument("--schedule", choices=train.SCHEDULES, default="warmup-cosine",
                   help="learning-rate schedule over all updates (default warmup-cosine: 5%% linear warmup)")
    t.add_argument("--epochs", type=positive_int, default=30, help="passes over the training set (default 30)")
    t.add_argument("--batch-size", type=positive_int, default=64, help="mini-batch size (default 64)")
    t.add_argument("--penalty", choices=train.PENALTIES, default="l2",
                   help="l2 (default), elastic (l1 + l2) or none, through fastopt.penalty on the weights")
    t.add_argument("--l1", type=nonnegative_float, help="L1 strength for --penalty elastic (default 1e-4)")
    t.add_argument("--l2", type=nonnegative_float, help="L2 strength (default 1e-4)")
    t.add_argument("--hidden", type=positive_int, default=64, help="hidden units of the mlp (default 64)")
    t.add_argument("--seed", type=int, default=0, help="initial weights and batch order (default 0)")
    t.add_argument("--state-dtypes", nargs="+", choices=train.STATE_DTYPES, metavar="DTYPE",
                   help="train each optimizer once per optimizer state precision (float32, bfloat16, int8: "
                        "fastopt.optim's state_dtype=, for the optimizers with state: adam, adamw, momentum, "
                        "nesterov, adagrad, rmsprop, nadam, radam, adamax, adadelta, asgd, rprop, lion); the table "
                        "adds each run's optimizer memory")
    t.add_argument("--linear-ce", action="store_true",
                   help="train the mlp's last layer and loss through fastopt.linear_cross_entropy")

    b = sub.add_parser("bench", help="the benchmark suite (its options: fastopt bench --help)")

    i = sub.add_parser("info", help="build_info(), devices, and a short timing against NumPy")
    i.add_argument("--size", type=positive_int, default=1_000_000, help="elements per timed update (default 1e6)")
    i.add_argument("--rounds", type=positive_int, default=7, help="interleaved timing rounds (default 7)")
    i.add_argument("--no-timing", action="store_true", help="only build_info and devices")
    parser.commands = dict(demo=demo, race=r, train=t, bench=b, info=i)
    return parser


# -------------------------------------------------------------------------------------- the jobs
def check_args(args) -> None:
    """Everything that can be checked before work starts, after argparse's own checks: the learning
    rates (args.lrs) and the output folder (created if missing). Raises ValueError with the message."""
    from fastopt.bench.outputs import ensure_folder
    from fastopt.demo import race

    if hasattr(args, "lr"):
        args.lrs = race.parse_lrs(args.lr)
    if args.command == "train" and args.optimizers is None:
        from fastopt.demo import race, train

        args.optimizers = list(train.STATE_DTYPE_OPTIMIZERS if args.state_dtypes else race.DEFAULT_RACERS)
    if getattr(args, "state_dtypes", None):
        from fastopt.demo import train

        refusal = train.state_dtype_refusal(_expand_all(args.optimizers))
        if refusal:
            raise ValueError(refusal)
    if hasattr(args, "out"):
        ensure_folder(args.out, "--out")


def run_race(args) -> List[str]:
    from fastopt.bench.progress import Progress
    from fastopt.demo import plots, race

    args.optimizers = _expand_all(args.optimizers)
    progress = Progress(len(args.functions) * len(args.optimizers))
    results = race.race(args.functions, args.optimizers, args.steps, args.lrs, args.tol, progress=progress)
    progress.finish(f"race: {len(results)} runs of {args.steps} steps")
    for line in race.table(results, args.steps, args.tol):
        print(line)
    paths = [plots.race_figure(results, race.SURFACES, os.path.join(args.out, "race.png"), tol=args.tol)]
    print(f"\nwrote {paths[0]}", flush=True)
    if getattr(args, "gif", False):
        from fastopt.demo import animation

        paths.append(animation.race_gif(results, race.SURFACES, os.path.join(args.out, "race.gif")))
        print(f"wrote {paths[1]}", flush=True)
    return paths


def run_train(args) -> List[str]:
    from fastopt.bench.progress import Progress
    from fastopt.demo import plots, race, train

    lrs = args.lrs
    l1, l2 = train.penalty_strengths(args.penalty, args.l1, args.l2)
    data = train.load_data()
    n_in, n_out = data[0].shape[1], 10
    print(f"digits: {len(data[1])} training and {len(data[3])} validation images of {n_in} pixels, float32; "
          f"batch {args.batch_size}, {args.epochs} epochs, schedule {args.schedule}, "
          f"penalty {args.penalty} (l1={l1:g}, l2={l2:g})")
    models = [train.make_model(m, n_in, n_out, args.hidden, linear_ce=getattr(args, "linear_ce", False))
              for m in args.models]
    for model in models:
        err = train.check_gradients(model, data[0], data[1], l1, l2, seed=args.seed)
        print(f"gradient check ({model.name}, float64, centered differences): max relative error {err:.2e} "
              f"(limit {train.GRADCHECK_LIMIT:g})")
    caption = (f"digits, batch {args.batch_size}, schedule {args.schedule}, penalty {args.penalty} "
               f"(l1={l1:g}, l2={l2:g}); every update a fused fastopt call")
    args.optimizers = _expand_all(args.optimizers)
    state_dtypes = getattr(args, "state_dtypes", None) or [None]
    progress = Progress(len(models) * len(args.optimizers) * len(state_dtypes) * args.epochs)
    histories = []
    for model in models:
        for name in args.optimizers:
            for state_dtype in state_dtypes:
                progress.set_status(f"train: {model.name} with {race.LABELS[name]}"
                                    + (f", {state_dtype} state" if state_dtype else ""))
                histories.append(train.train_one(model, name, lrs.get(name, train.DEFAULT_LRS[name]), data,
                                                 epochs=args.epochs, batch_size=args.batch_size,
                                                 schedule=args.schedule, l1=l1, l2=l2, seed=args.seed,
                                                 caption=caption, progress=progress, state_dtype=state_dtype))
    progress.finish(f"train: {len(histories)} runs of {args.epochs} epochs")
    for line in train.table(histories, args.hidden):
        print(line)
    path = plots.train_figure(histories, os.path.join(args.out, "train.png"))
    print(f"\nwrote {path}", flush=True)
    return [path]


def run_bench(argv: List[str]) -> int:
    """The suite keeps its own parser (fastopt/bench/cli.py): it parses and checks its output paths
    before it looks at any device, so `fastopt bench --help` and bad options answer at once."""
    from fastopt.bench.cli import main as bench_main

    return bench_main(argv, prog="fastopt bench")


def run_info(args) -> int:
    from fastopt.demo.info import build_lines, device_lines, quick_timing

    for line in build_lines():
        print(line)
    print("devices:")
    for line in device_lines():
        print(line)
    if not args.no_timing:
        print("", flush=True)
        for line in quick_timing(args.size, args.rounds):
            print(line, flush=True)
        print("\nThe full suite (torch, sizes 1K-64M, GPT-2 small, losses): fastopt bench")
    return 0


def _part_args(parser, argv: List[str]):
    args = parser.parse_args(argv)
    check_args(args)
    return args


def run_demo(args) -> int:
    start = time.perf_counter()
    out = args.out
    print(f"fastopt demo: the optimizer race, training on the digits, a short benchmark; pictures into {out}/\n")
    quick = args.quick
    parser = build_parser()  # the parts run with their own commands' defaults (tiny ones with --quick)
    print("== 1. the optimizer race (course notes, chapter 9) ==", flush=True)
    written = run_race(_part_args(parser, ["race", "--out", out, *(["--steps", "300"] if quick else [])]))
    print("\n== 2. training on scikit-learn's digits ==", flush=True)
    written += run_train(_part_args(parser, ["train", "--out", out, *(["--epochs", "2"] if quick else [])]))
    if not args.no_bench:
        print(f"\n== 3. a short benchmark: fastopt bench {' '.join(QUICK_BENCH if quick else DEMO_BENCH)} ==",
              flush=True)
        bench_json, bench_png = os.path.join(out, "bench.json"), os.path.join(out, "bench.png")
        status = run_bench((QUICK_BENCH if quick else DEMO_BENCH) + ["--json", bench_json, "--plot", bench_png])
        if status:
            return status
        if os.path.exists(bench_png):
            written.append(bench_png)
    print(f"\nfastopt demo done in {time.perf_counter() - start:.0f} s. The pictures:")
    for path in written:
        print(f"  {os.path.abspath(path)}")
    print("More: fastopt race --help, fastopt train --help, fastopt bench --help, fastopt info")
    return 0


NEEDS = {"demo": ("matplotlib", "sklearn"), "race": ("matplotlib",), "train": ("matplotlib", "sklearn")}


def main(argv: Optional[List[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] == "bench":  # the suite keeps its own parser
        return run_bench(argv[1:])
    if not argv or (argv[0].startswith("-") and argv[0] not in ("-h", "--help")):
        argv = ["demo", *argv]  # `fastopt`, `fastopt --out DIR`: the demo
    parser = build_parser()
    args = parser.parse_args(argv)
    usage = parser.commands[args.command]  # errors from here on print the command's own usage

    from fastopt.demo import require
    from fastopt.demo.train import GradcheckError

    message = require(*NEEDS.get(args.command, ()))
    if message:
        print(message, file=sys.stderr)
        return 2
    try:
        check_args(args)
    except ValueError as error:  # bad --lr, an --out that cannot be written: before any work
        usage.error(str(error))
    try:
        if args.command == "demo":
            return run_demo(args)
        if args.command == "race":
            run_race(args)
            return 0
        if args.command == "train":
            run_train(args)
            return 0
        return run_info(args)
    except GradcheckError as error:
        print(f"fastopt {args.command}: {error}", file=sys.stderr)
        return 1
