"""Command line of the benchmark suite: ``python -m fastopt bench``, bench/bench_optimizers.py
(the optimizer part) and bench/bench_losses.py (the losses part) all take these options."""

from __future__ import annotations

import argparse
import os
import re
import sys
from typing import List, Optional, Tuple

import fastopt
from fastopt.bench import plot as plotting
from fastopt.bench.backends import cuda_unavailable, select_backends
from fastopt.bench.cases import CUDA_ADAMW_SIZE, CUDA_LOSS_SHAPE, plan_cases, plan_cuda_cases
from fastopt.bench.progress import Progress
from fastopt.bench.report import banner, load_warning, machine_info, machine_title, write_json
from fastopt.bench.suite import run
from fastopt.bench.timing import NOISY_SPREAD, plan_rounds
from fastopt.bench.workloads import ALL_OPTIMIZERS, LOSSES, RULE_OPTIMIZERS, TRAFFIC

DEFAULT_SIZES = [1_000, 16_000, 256_000, 1_000_000, 4_000_000, 16_000_000, 64_000_000]
DEFAULT_SHAPES = ["4096x32000", "32768x1000", "512x50257"]
# --quick: seconds, not minutes (QUICK_SECONDS): a small size (the cost of a call from
# Python) and one beyond the L2 caches, one loss shape, no GPT-2, fewer rounds; still every implementation
# against its peers in the same interleaved rounds.
QUICK_SECONDS = "about 12 s"  # our 2-core machine, torch installed; README and BENCHMARKS.md agree. 9 s measured
# quiet with the five classic optimizers; the rules' rows made a loaded run 1.3x as long (26 s -> 34 s)
QUICK_SIZES = [1_000, 1_000_000]
QUICK_SHAPES = ["1024x1000"]
# Linear cross-entropy: hidden N x D, weight V x D (GPT-2 small's width, a 32K vocabulary); --quick: small.
DEFAULT_LINEAR_SHAPES = ["4096x768x32000"]
QUICK_LINEAR_SHAPES = ["512x64x2000"]
QUICK_CUDA_SIZE = 16_000_000
QUICK_CUDA_SHAPE = (4096, 32000)
DEFAULT_OUT = "fastopt-bench"
PARTS = ("all", "optimizers", "losses")


def default_name(quick: bool, part: str, cuda_only: bool = False) -> str:
    """bench, bench-quick, bench-optimizers, bench-cuda, ...: a quick, partial or CUDA-only run does not
    overwrite the full one."""
    return ("bench" + ("-cuda" if cuda_only else "") + ("-quick" if quick else "")
            + ("" if part == "all" else f"-{part}"))


DESCRIPTION = f"""\
fastopt's benchmark suite (float32, CPU): every optimizer update (SGD with momentum, Adagrad, RMSprop,
Adam, AdamW, and the optimizers described as rules: {", ".join(RULE_OPTIMIZERS)}, at their defaults)
against the NumPy references and torch's for-loop, foreach and fused implementations (those torch has)
from 1K to 64M elements; AdamW over GPT-2 small's 148 parameter tensors in one call; softmax
cross-entropy forward+backward and softmax against the NumPy reference and torch; linear cross-entropy
(hidden 4096 x 768, weight 32000 x 768: fastopt.linear_cross_entropy and fastopt.torch's against torch's
F.linear_cross_entropy, plain and chunked, and F.linear + F.cross_entropy) with each one's peak extra memory
(full runs).
--quick: 1K and 1M elements, 1024 x 1000 logits, linear 512 x 64 -> 2000, no GPT-2, fewer rounds ({QUICK_SECONDS} on 2 cores; the full suite: minutes).
Every run writes a JSON file of all rows and a PNG figure, by default into ./fastopt-bench/.

Times are medians of interleaved rounds. GB/s is effective bandwidth: the bytes an ideal fused pass
moves (AdamW 28 B/element, SGD momentum/Adagrad/RMSprop 20 B, each rule 4 B for every array it reads or
writes: {", ".join(f"{name} {4 * TRAFFIC[name]}" for name in RULE_OPTIMIZERS)}; losses 12 B/logit) / time. "% probe"
compares it with fastopt._core._probe_add (a += b, threaded like the kernels, 12 B/element) timed
in the same rounds. "x fastopt" is time / fastopt's time: above 1, fastopt is faster. "spread" is
the interquartile range of the rounds / their median, marked '!' above 25%: when the probe's spread is that
large, other work took the CPUs during the case, and the run says so.

With a GPU (fastopt built with CUDA, torch with CUDA) CUDA rows follow, fastopt-cuda against torch on the
same device: AdamW over 64M float32 elements and over GPT-2 small's list (torch fused and foreach), and
cross-entropy forward+backward at 32768 x 50257 (F.cross_entropy + backward, and Liger-Kernel's where it is
installed) with each one's peak extra memory. Their probe is a device copy moving the same bytes; the device is synchronised around each timed
batch of calls. Without a GPU they are skipped, and the run says so."""


def parse_size(text: str) -> int:
    """1000, 1K, 16k, 1M, 64M, 1e6 (K = 1,000, M = 1,000,000, G = 1,000,000,000)."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:e[0-9]+)?)\s*([kmg]?)\s*", text.lower())
    if not m:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (try 1000, 16K, 64M)")
    value = float(m.group(1)) * {"": 1, "k": 1e3, "m": 1e6, "g": 1e9}[m.group(2)]
    if value < 1 or value != int(value):
        raise argparse.ArgumentTypeError(f"not a positive whole number of elements: {text!r}")
    return int(value)


def parse_shape(text: str):
    m = re.fullmatch(r"\s*([0-9]+)\s*[xX*]\s*([0-9]+)\s*", text)
    if not m or int(m.group(1)) < 1 or int(m.group(2)) < 1:
        raise argparse.ArgumentTypeError(f"not a shape: {text!r} (try 4096x32000)")
    return int(m.group(1)), int(m.group(2))


def parse_linear_shape(text: str):
    m = re.fullmatch(r"\s*([0-9]+)\s*[xX*]\s*([0-9]+)\s*[xX*]\s*([0-9]+)\s*", text)
    if not m or min(int(g) for g in m.groups()) < 1:
        raise argparse.ArgumentTypeError(f"not a shape: {text!r} (N x D x V, try 4096x768x32000)")
    return tuple(int(g) for g in m.groups())


def build_parser(prog: Optional[str] = None, part: str = "all") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=parse_size, nargs="+", metavar="N",
                        help="optimizer sizes in elements (default 1K 16K 256K 1M 4M 16M 64M; --quick: 1K 1M)")
    parser.add_argument("--optimizers", nargs="+", choices=ALL_OPTIMIZERS, default=list(ALL_OPTIMIZERS),
                        metavar="NAME",
                        help=f"optimizers to time, of {' '.join(ALL_OPTIMIZERS)} (default: all)")
    parser.add_argument("--no-gpt2", action="store_true",
                        help="leave out AdamW over GPT-2 small's parameters (--quick leaves it out)")
    parser.add_argument("--shapes", type=parse_shape, nargs="+", metavar="NxC",
                        help="logits shapes of the losses (default 4096x32000 32768x1000 512x50257; --quick: 1024x1000)")
    parser.add_argument("--losses", nargs="+", choices=LOSSES, default=list(LOSSES),
                        help="losses to time (default: cross_entropy softmax linear_cross_entropy)")
    parser.add_argument("--linear-shapes", type=parse_linear_shape, nargs="+", metavar="NxDxV",
                        help="hidden N x D and V classes of the linear cross-entropy (default 4096x768x32000; "
                             "--quick: 512x64x2000)")
    parser.add_argument("--part", choices=PARTS, default=part,
                        help=f"which part of the suite to run (default: {part})")
    parser.add_argument("--quick", action="store_true",
                        help="sizes 1K 1M, logits 1024x1000, no GPT-2, fewer rounds: seconds, not minutes")
    parser.add_argument("--rounds", type=int, metavar="N",
                        help="interleaved rounds per case (default: 21 at <= 10K elements, 11 at <= 2M, 7 above; "
                             "--quick: 9, 5, 3)")
    parser.add_argument("--out", metavar="DIR", default=DEFAULT_OUT,
                        help=f"folder of the default JSON and PNG (default ./{DEFAULT_OUT}; created if missing): "
                             "bench.json and bench.png; with --quick bench-quick.*, with --part bench-PART.*")
    parser.add_argument("--json", metavar="PATH",
                        help="write every row to this JSON file instead (its folder must exist)")
    parser.add_argument("--plot", metavar="PATH",
                        help="write the figure here (.png, .svg, .pdf; its folder must exist; default: the "
                             "JSON's path with .png)")
    parser.add_argument("--no-torch", action="store_true", help="leave torch out even when installed")
    parser.add_argument("--no-numpy", action="store_true", help="leave the (slow) NumPy reference out")
    parser.add_argument("--no-cuda", action="store_true", help="leave the CUDA rows out even when a GPU is there")
    parser.add_argument("--cuda-only", action="store_true",
                        help="only the CUDA rows (tools/gpu-check runs these); fails (exit 1) without a GPU")
    parser.add_argument("--compare", metavar="OLD.json",
                        help="after the run, print each figure against the same one in a saved run's JSON and flag "
                             "those that moved beyond their noise (the rounds' spreads); exit status 1 when one of "
                             "fastopt's got slower")
    parser.add_argument("--against", metavar="NEW.json",
                        help="with --compare: compare this saved run instead of running anything")
    parser.add_argument("--cuda-size", type=parse_size, metavar="N",
                        help="elements of the CUDA AdamW row (default 64M; --quick: 16M)")
    parser.add_argument("--cuda-shape", type=parse_shape, metavar="NxC",
                        help="logits of the CUDA cross-entropy row (default 32768x50257; --quick: 4096x32000)")
    return parser


def output_paths(args, parser) -> Tuple[str, Optional[str], Optional[str]]:
    """(JSON path, figure path or None, a note when the default figure is left out), every path checked
    before any work: an error here is a usage error (exit status 2) and nothing has run yet."""
    from fastopt.bench.outputs import OutputPathError, check_file, ensure_folder, image_suffixes

    suffixes = image_suffixes()
    try:
        # The paths given first, then the default folder: a refused run creates nothing.
        if args.plot is not None:
            if not suffixes:
                raise OutputPathError(f"--plot {args.plot}: the figure needs matplotlib, which is not installed "
                                      f"(pip install matplotlib, or the 'bench' extra)")
            check_file(args.plot, "--plot", suffixes)
        if args.json is not None:
            json_path = check_file(args.json, "--json")
        else:
            ensure_folder(args.out, "--out")
            name = default_name(args.quick, args.part, args.cuda_only)
            json_path = check_file(os.path.join(args.out, name + ".json"), "--json")
        if not suffixes:
            return json_path, None, "no figure: matplotlib is not installed (pip install matplotlib, or the 'bench' extra)"
        plot_path = check_file(args.plot or os.path.splitext(json_path)[0] + ".png", "--plot", suffixes)
    except OutputPathError as error:
        parser.error(str(error))
    return json_path, plot_path, None


def gpu_line(no_cuda: bool, reason: Optional[str]) -> str:
    """The one line on the GPU: its CUDA rows follow, or why there are none."""
    if no_cuda:
        return "CUDA rows left out (--no-cuda)"
    if reason is not None:
        return f"no GPU: CUDA rows skipped ({reason})"
    return (f"GPU: {fastopt.cuda.device_name(0)}; after the CPU tables, CUDA rows: fastopt-cuda against torch "
            f"on the same device")


def main(argv: Optional[List[str]] = None, prog: Optional[str] = None, part: str = "all") -> int:
    parser = build_parser(prog, part)
    args = parser.parse_args(argv)
    if args.rounds is not None and args.rounds < 1:
        parser.error("--rounds must be positive")
    if args.cuda_only and args.no_cuda:
        parser.error("--cuda-only and --no-cuda leave nothing to run")
    old_run = None
    if args.against is not None and args.compare is None:
        parser.error("--against NEW.json needs --compare OLD.json")
    if args.compare is not None:
        from fastopt.bench.compare import CompareError, load_run

        try:
            old_run = load_run(args.compare)
            if args.against is not None:
                return _print_comparison(old_run, load_run(args.against), args.compare)
        except CompareError as error:
            parser.error(str(error))
    if args.cuda_only:
        no_gpu = cuda_unavailable()
        if no_gpu is not None:
            print(f"fastopt bench --cuda-only: no CUDA rows can run here ({no_gpu})", file=sys.stderr)
            return 1
    json_path, plot_path, plot_note = output_paths(args, parser)

    sizes = args.sizes or (QUICK_SIZES if args.quick else DEFAULT_SIZES)
    shapes = args.shapes or [parse_shape(s) for s in (QUICK_SHAPES if args.quick else DEFAULT_SHAPES)]
    linear_shapes = args.linear_shapes or [parse_linear_shape(s) for s in
                                           (QUICK_LINEAR_SHAPES if args.quick else DEFAULT_LINEAR_SHAPES)]
    gpt2 = not args.no_gpt2 and not args.quick
    cuda_size = args.cuda_size or (QUICK_CUDA_SIZE if args.quick else CUDA_ADAMW_SIZE)
    cuda_shape = args.cuda_shape or (QUICK_CUDA_SHAPE if args.quick else CUDA_LOSS_SHAPE)
    run_optimizers = args.part in ("all", "optimizers")
    run_losses = args.part in ("all", "losses")
    backends = select_backends(numpy=not args.no_numpy, torch=not args.no_torch, cuda=not args.no_cuda)
    cpu_rows = not args.cuda_only
    pending = plan_cases(sizes if run_optimizers and cpu_rows else [], args.optimizers if run_optimizers else [],
                         run_optimizers and cpu_rows and gpt2,
                         shapes if run_losses and cpu_rows else [], args.losses if run_losses else [], backends,
                         linear_shapes if run_losses and cpu_rows else [],
                         linear_memory=not args.quick)  # a child process per implementation: full runs only
    no_gpu = None if args.no_cuda else cuda_unavailable()
    cuda_rows = not args.no_cuda and no_gpu is None
    cuda_notes = []
    if cuda_rows:
        adamw = run_optimizers and "adamw" in args.optimizers
        cuda_pending, cuda_notes = plan_cuda_cases(adamw, adamw and gpt2,
                                                   run_losses and "cross_entropy" in args.losses, backends,
                                                   size=cuda_size, shape=cuda_shape)
        pending += cuda_pending

    machine = machine_info(with_torch=not args.no_torch)
    print(banner(fastopt.build_info(), machine))
    print(gpu_line(args.no_cuda, no_gpu))
    if load_warning(machine):
        print(load_warning(machine))
    left_out = " (GPT-2 small left out: run without --quick for it)" if args.quick and run_optimizers else ""
    print(f"implementations: {', '.join(b.name for b in backends)}; "
          f"{'quick' if args.quick else 'full'} run, {len(pending)} cases{left_out}", flush=True)
    for note in cuda_notes + ([plot_note] if plot_note else []):
        print(note, flush=True)
    print(f"results into: {json_path}" + (f" and {plot_path}" if plot_path else ""), flush=True)
    total = sum(args.rounds or plan_rounds(p.n, args.quick) for p in pending)
    progress = Progress(total)
    rows = run(pending, quick=args.quick, rounds=args.rounds, progress=progress)
    progress.finish(f"fastopt bench: {len(pending)} cases, {len(rows)} rows")
    busy = {(r["part"], r["case"], r["label"]) for r in rows if (r.get("probe_spread") or 0) > NOISY_SPREAD}
    if busy:
        print(f"\nnote: {len(busy)} of {len(pending)} cases ran while other work took the CPUs (their probe's rounds "
              f"spread by more than {100 * NOISY_SPREAD:.0f}%): for firm figures rerun on a quiet machine")

    settings = dict(part=args.part, quick=args.quick, rounds=args.rounds, sizes=sizes,
                    optimizers=args.optimizers, gpt2=gpt2, shapes=[list(s) for s in shapes],
                    linear_shapes=[list(s) for s in linear_shapes],
                    losses=args.losses, backends=[b.name for b in backends], cuda_rows=cuda_rows,
                    cuda_only=args.cuda_only,
                    cuda_size=cuda_size, cuda_shape=list(cuda_shape), argv=sys.argv)
    print(f"\nwrote {write_json(json_path, rows, settings, machine)}")
    if plot_path:
        title = f"fastopt bench{' --quick' if args.quick else ''}: {machine_title(fastopt.build_info(), machine)}"
        load = machine["load_average_at_start"]
        notes = ([f"load average {load[0]:.1f} at the start"] if load_warning(machine) else []) + \
                ([f"{len(busy)} of {len(pending)} cases noisy"] if busy else [])
        if notes:
            title += f" ({', '.join(notes)})"
        if plotting.plot(rows, plot_path, title=title) is not None:
            print(f"wrote {plot_path}")
    if old_run is not None:
        print()
        return _print_comparison(old_run, {"results": rows}, args.compare)
    return 0


def _print_comparison(old_run: dict, new_run: dict, old_name: str) -> int:
    """Prints the comparison; 1 when one of fastopt's figures got slower beyond its noise, else 0."""
    from fastopt.bench.compare import compare, format_comparison

    changes, only_old, only_new = compare(old_run, new_run)
    print("\n".join(format_comparison(changes, only_old, only_new, old_name)), flush=True)
    return 1 if any(c.regression for c in changes) else 0


if __name__ == "__main__":
    sys.exit(main())
