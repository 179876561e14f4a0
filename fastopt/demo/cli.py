"""The ``fastopt`` command line: ``fastopt [demo]``, ``race``, ``train``, ``bench``, ``info``."""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import List, Optional

DESCRIPTION = """\
fastopt at work. Commands (the default is demo):
  demo   the optimizer race, training on scikit-learn's digits and a short benchmark, about a minute
         on 2 cores; PNG plots into --out (needs the demo extra: pip install "fastopt[demo]")
  race   SGD, Momentum, Nesterov, AdaGrad, RMSProp, Adam and AdamW from one start on Rosenbrock, Beale,
         a saddle point and an ill-conditioned valley; contour plots and a table
  train  a linear softmax classifier and a two-layer ReLU net on the digits, each optimizer, a penalty
         and a schedule; loss and validation accuracy curves and a table
  bench  the benchmark suite (fastopt bench --help)
  info   build_info(), the devices found, and a short timing against NumPy
`fastopt COMMAND --help` lists each command's options."""

DEFAULT_OUT = "fastopt-demo"
DEMO_BENCH = ["--sizes", "1K", "1M", "--no-gpt2", "--shapes", "1024x1000", "--rounds", "5",
              "--cuda-size", "16M", "--cuda-shape", "4096x32000"]
QUICK_BENCH = ["--sizes", "1K", "--no-gpt2", "--shapes", "64x100", "--rounds", "2", "--no-torch",
               "--cuda-size", "1M", "--cuda-shape", "256x1000"]


def build_parser() -> argparse.ArgumentParser:
    from fastopt.demo import race, train

    parser = argparse.ArgumentParser(prog="fastopt", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    names = list(race.OPTIMIZERS)

    def out_option(p):
        p.add_argument("--out", metavar="DIR", default=DEFAULT_OUT,
                       help=f"folder for the PNG plots (default ./{DEFAULT_OUT}; created if missing)")

    def lr_option(p, defaults):
        p.add_argument("--lr", nargs="+", default=[], metavar="NAME=LR",
                       help=f"learning rates per optimizer, e.g. --lr adam=0.1 sgd=1e-3 (defaults: {defaults})")

    demo = sub.add_parser("demo", help="race + train + a short bench, with plots (the default)")
    out_option(demo)
    demo.add_argument("--quick", action="store_true", help="tiny sizes (seconds): a smoke test")
    demo.add_argument("--no-bench", action="store_true", help="leave the short benchmark out")

    r = sub.add_parser("race", help="the optimizer race on 2-D test functions")
    out_option(r)
    r.add_argument("--steps", type=int, default=2000, help="steps per optimizer and function (default 2000)")
    r.add_argument("--functions", nargs="+", choices=list(race.SURFACES), default=list(race.SURFACES),
                   help="test functions (default: all)")
    r.add_argument("--optimizers", nargs="+", choices=names, default=names, help="racers (default: all)")
    lr_option(r, "tuned per function, see the table")
    r.add_argument("--tol", type=float, default=race.TOLERANCE,
                   help=f"'reached': distance to the minimum below this (default {race.TOLERANCE:g})")

    t = sub.add_parser("train", help="softmax classifier and ReLU net on scikit-learn's digits")
    out_option(t)
    t.add_argument("--models", nargs="+", choices=train.MODELS, default=list(train.MODELS),
                   help="linear and/or mlp (default: both)")
    t.add_argument("--optimizers", nargs="+", choices=names, default=names, help="optimizers (default: all)")
    lr_option(t, ", ".join(f"{k}={v:g}" for k, v in train.DEFAULT_LRS.items()))
    t.add_argument("--schedule", choices=train.SCHEDULES, default="warmup-cosine",
                   help="learning-rate schedule over all updates (default warmup-cosine: 5%% linear warmup)")
    t.add_argument("--epochs", type=int, default=30, help="passes over the training set (default 30)")
    t.add_argument("--batch-size", type=int, default=64, help="mini-batch size (default 64)")
    t.add_argument("--penalty", choices=train.PENALTIES, default="l2",
                   help="l2 (default), elastic (l1 + l2) or none, through fastopt.penalty on the weights")
    t.add_argument("--l1", type=float, help="L1 strength for --penalty elastic (default 1e-4)")
    t.add_argument("--l2", type=float, help="L2 strength (default 1e-4)")
    t.add_argument("--hidden", type=int, default=64, help="hidden units of the mlp (default 64)")
    t.add_argument("--seed", type=int, default=0, help="initial weights and batch order (default 0)")

    sub.add_parser("bench", help="the benchmark suite (its options: fastopt bench --help)")

    i = sub.add_parser("info", help="build_info(), devices, and a short timing against NumPy")
    i.add_argument("--size", type=int, default=1_000_000, help="elements per timed update (default 1e6)")
    i.add_argument("--rounds", type=int, default=7, help="interleaved timing rounds (default 7)")
    i.add_argument("--no-timing", action="store_true", help="only build_info and devices")
    return parser


# -------------------------------------------------------------------------------------- the jobs
def _out_dir(path: str) -> str:
    os.makedirs(path, exist_ok=True)
    return path


def run_race(args) -> List[str]:
    from fastopt.bench.progress import Progress
    from fastopt.demo import plots, race

    lrs = race.parse_lrs(args.lr)
    progress = Progress(len(args.functions) * len(args.optimizers))
    results = race.race(args.functions, args.optimizers, args.steps, lrs, args.tol, progress=progress)
    progress.finish(f"race: {len(results)} runs of {args.steps} steps")
    for line in race.table(results, args.steps, args.tol):
        print(line)
    path = plots.race_figure(results, race.SURFACES, os.path.join(_out_dir(args.out), "race.png"))
    print(f"\nwrote {path}", flush=True)
    return [path]


def run_train(args) -> List[str]:
    from fastopt.bench.progress import Progress
    from fastopt.demo import plots, race, train

    lrs = race.parse_lrs(args.lr)
    l1, l2 = train.penalty_strengths(args.penalty, args.l1, args.l2)
    data = train.load_data()
    n_in, n_out = data[0].shape[1], 10
    print(f"digits: {len(data[1])} training and {len(data[3])} validation images of {n_in} pixels, float32; "
          f"batch {args.batch_size}, {args.epochs} epochs, schedule {args.schedule}, "
          f"penalty {args.penalty} (l1={l1:g}, l2={l2:g})")
    models = [train.make_model(m, n_in, n_out, args.hidden) for m in args.models]
    for model in models:
        err = train.check_gradients(model, data[0], data[1], l1, l2, seed=args.seed)
        print(f"gradient check ({model.name}, float64, centered differences): max relative error {err:.2e} "
              f"(limit {train.GRADCHECK_LIMIT:g})")
    caption = (f"digits, batch {args.batch_size}, schedule {args.schedule}, penalty {args.penalty} "
               f"(l1={l1:g}, l2={l2:g}); every update a fused fastopt call")
    progress = Progress(len(models) * len(args.optimizers) * args.epochs)
    histories = []
    for model in models:
        for name in args.optimizers:
            progress.set_status(f"train: {model.name} with {race.LABELS[name]}")
            histories.append(train.train_one(model, name, lrs.get(name, train.DEFAULT_LRS[name]), data,
                                             epochs=args.epochs, batch_size=args.batch_size,
                                             schedule=args.schedule, l1=l1, l2=l2, seed=args.seed,
                                             caption=caption, progress=progress))
    progress.finish(f"train: {len(histories)} runs of {args.epochs} epochs")
    for line in train.table(histories, args.hidden):
        print(line)
    path = plots.train_figure(histories, os.path.join(_out_dir(args.out), "train.png"))
    print(f"\nwrote {path}", flush=True)
    return [path]


def run_bench(argv: List[str]) -> int:
    from fastopt.bench.backends import cuda_unavailable
    from fastopt.bench.cli import main as bench_main
    from fastopt.demo.info import device_lines

    print("devices:")
    for line in device_lines():
        print(line)
    if cuda_unavailable() is None and "--no-cuda" not in argv:
        print("CPU tables first, then CUDA rows: fastopt-cuda against torch on the GPU.\n", flush=True)
    else:
        print("Only CPU columns below: CUDA rows appear when fastopt is built with its CUDA backend and torch "
              "and the machine have a GPU.\n", flush=True)
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


def run_demo(args) -> int:
    start = time.perf_counter()
    out = _out_dir(args.out)
    print(f"fastopt demo: the optimizer race, training on the digits, a short benchmark; plots into {out}/\n")
    quick = args.quick
    parser = build_parser()  # the parts run with their own commands' defaults (tiny ones with --quick)
    print("== 1. the optimizer race (course notes, chapter 9) ==", flush=True)
    written = run_race(parser.parse_args(["race", "--out", out, *(["--steps", "300"] if quick else [])]))
    print("\n== 2. training on scikit-learn's digits ==", flush=True)
    written += run_train(parser.parse_args(["train", "--out", out, *(["--epochs", "2"] if quick else [])]))
    if not args.no_bench:
        print("\n== 3. a short benchmark: one update / one loss call, fastopt against NumPy and torch ==",
              flush=True)
        bench_json, bench_png = os.path.join(out, "bench.json"), os.path.join(out, "bench.png")
        run_bench((QUICK_BENCH if quick else DEMO_BENCH) + ["--json", bench_json, "--plot", bench_png])
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
    for name in ("steps", "epochs", "batch_size", "hidden", "size", "rounds"):
        if getattr(args, name, 1) < 1:
            parser.error(f"--{name.replace('_', '-')} must be positive")

    from fastopt.demo import require
    from fastopt.demo.train import GradcheckError

    message = require(*NEEDS.get(args.command, ()))
    if message:
        print(message, file=sys.stderr)
        return 2
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
    except ValueError as error:  # bad --lr and the like: a message, not a traceback
        parser.error(str(error))
    except GradcheckError as error:
        print(f"fastopt {args.command}: {error}", file=sys.stderr)
        return 1
