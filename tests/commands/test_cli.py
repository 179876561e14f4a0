"""The commands the README names run end to end: the `fastopt` console script from the repository root
(the README's Quick start: the demo), `python -m fastopt info` and a small `python -m fastopt bench` that
writes its JSON and plot. The demo's jobs one by one: test_demo.py."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys

import pytest

HERE = os.path.dirname(__file__)


def run(*args, cwd=HERE):
    return subprocess.run([sys.executable, "-m", "fastopt", *args], capture_output=True, text=True, cwd=str(cwd),
                          timeout=300)


def test_info_prints_build_info_and_timings():
    out = run("info", "--size", "10000", "--rounds", "2")
    assert out.returncode == 0, out.stderr
    assert "cpu_isa" in out.stdout
    for optimizer in ("sgd", "adagrad", "rmsprop", "adam", "adamw", "nadam", "lion", "lamb"):
        assert f"\n{optimizer} " in out.stdout, optimizer


def test_console_script_runs_from_the_repository_root(tmp_path):
    """`pip install ".[demo]" && fastopt` is the Quick start's first command, typed in the repository
    root: the demo (here at its tiny --quick size, plots into a temporary folder)."""
    script = shutil.which("fastopt", path=os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"])
    if script is None:
        pytest.skip("the fastopt console script is not on PATH (package not installed by pip)")
    pytest.importorskip("matplotlib", reason="the demo extra (matplotlib) is not installed")
    pytest.importorskip("sklearn", reason="the demo extra (scikit-learn) is not installed")
    root = os.path.dirname(os.path.abspath(HERE))
    out = subprocess.run([script, "--quick", "--no-bench", "--out", str(tmp_path)], capture_output=True,
                         text=True, cwd=root, timeout=300)
    assert out.returncode == 0, out.stderr
    rows = [line.split() for line in out.stdout.splitlines() if line.startswith(("Adam ", "SGD "))]
    assert rows and all(re.fullmatch(r"[0-9.e+-]+", row[1]) for row in rows), out.stdout
    assert (tmp_path / "race.png").exists() and (tmp_path / "train.png").exists()


def test_bench_writes_json_and_plot(tmp_path):
    from fastopt.bench.backends import cuda_unavailable

    json_path, plot_path = tmp_path / "b.json", tmp_path / "b.png"
    out = run("bench", "--sizes", "1000", "4096", "--no-gpt2", "--shapes", "16x100", "--linear-shapes", "16x8x100",
              "--rounds", "2", "--cuda-size", "1M", "--cuda-shape", "64x1000", "--json", str(json_path),
              "--plot", str(plot_path))
    assert out.returncode == 0, out.stderr
    data = json.loads(json_path.read_text())
    rows = data["results"]
    implementations = {(r["case"], r["impl"]) for r in rows}
    from fastopt.bench.workloads import RULE_OPTIMIZERS

    # (by default every optimizer: the classic five and those described as rules, from the registry)
    for optimizer in ("sgd", "adagrad", "rmsprop", "adam", "adamw", *RULE_OPTIMIZERS, "cross_entropy"):
        assert any(case == optimizer and impl.startswith("fastopt") for case, impl in implementations), optimizer
    linear = [r for r in rows if r["case"] == "linear_ce"]
    assert linear and linear[0]["impl"] == "fastopt" and linear[0]["shape"] == [16, 8, 100]
    if sys.platform.startswith("linux"):  # each implementation's peak memory, from a child process
        assert all(isinstance(r["peak_extra_bytes"], int) for r in linear), linear
    assert all(r["seconds"] > 0 for r in rows)
    reason = cuda_unavailable()
    cuda_rows = {(r["case"], r["impl"]) for r in rows if r.get("device") == "cuda"}
    if reason is None:  # with a GPU: the CUDA rows, each with its copy probe
        assert {("adamw", "fastopt-cuda"), ("cross_entropy", "fastopt-cuda")} <= cuda_rows, cuda_rows
        assert all(r["probe_gb_per_s"] > 0 for r in rows if r.get("device") == "cuda")
    else:
        assert not cuda_rows and f"no GPU: CUDA rows skipped ({reason})" in out.stdout
        assert out.stdout.count("no GPU") == 1 and "Only CPU" not in out.stdout, out.stdout  # one line says it
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        pytest.skip("matplotlib (the bench extra) is not installed: no plot")
    assert plot_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG file"
    import matplotlib.image

    image = matplotlib.image.imread(str(plot_path))  # decodes the whole image: a truncated file fails
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100


def test_bench_refuses_bad_sizes():
    out = run("bench", "--sizes", "zero")
    assert out.returncode != 0


# ------------------------------------------------------------------------------ output paths, first
TINY_BENCH = ["--sizes", "1000", "--no-gpt2", "--shapes", "8x10", "--rounds", "1", "--no-torch",
              "--cuda-size", "1M", "--cuda-shape", "64x1000"]


@pytest.mark.parametrize("option, path, message", [
    ("--plot", "{tmp}/missing/p.png", "does not exist"),
    ("--json", "{tmp}/missing/b.json", "does not exist"),
    ("--json", "/proc/nope.json", "cannot write"),
    ("--out", "/proc/nope", "cannot create the folder"),
    ("--json", "{tmp}", "is a folder"),
    ("--plot", "{tmp}/p.unknown", "unknown file type"),
])
def test_bench_checks_output_paths_before_any_work(tmp_path, option, path, message):
    """A path that cannot be written is a usage error (status 2, the bench's own usage, no traceback)
    before anything is measured: no banner, no table."""
    if option == "--plot":
        pytest.importorskip("matplotlib", reason="--plot needs matplotlib")
    out = run("bench", *TINY_BENCH, option, path.format(tmp=tmp_path), cwd=tmp_path)
    assert out.returncode == 2, out.stdout + out.stderr
    assert "Traceback" not in out.stderr, out.stderr
    assert out.stderr.startswith("usage: fastopt bench"), out.stderr
    assert message in out.stderr and option in out.stderr, out.stderr
    assert "machine:" not in out.stdout and "==" not in out.stdout, out.stdout
    assert not (tmp_path / "missing").exists() and not (tmp_path / "fastopt-bench").exists()  # nothing created


def test_bench_help_probes_no_device():
    """--help answers from the parser alone: no device probe (a probe that fails here would show), no
    torch import, nothing printed before the usage."""
    code = ("import sys, fastopt.cuda\n"
            "def probe(*args):\n"
            "    raise AssertionError('a device was probed')\n"
            "for name in ('device_count', 'is_available', 'runs_kernels', 'device_name'):\n"
            "    setattr(fastopt.cuda, name, probe)\n"
            "from fastopt.__main__ import main\n"
            "try:\n"
            "    main(['bench', '--help'])\n"
            "except SystemExit as e:\n"
            "    assert e.code == 0, e.code\n"
            "assert 'torch' not in sys.modules, 'torch imported'\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=HERE, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.startswith("usage: fastopt bench"), out.stdout[:300]
    assert "no GPU" not in out.stdout and "devices" not in out.stdout.split("usage:")[0]


def test_bench_writes_json_and_png_by_default(tmp_path):
    """Without --json/--plot the run writes both into ./fastopt-bench (bench-quick.* for --quick) and
    says where, before and after."""
    out = run("bench", "--quick", *TINY_BENCH, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    json_path = tmp_path / "fastopt-bench" / "bench-quick.json"
    assert json.loads(json_path.read_text())["results"]
    assert "results into: " + os.path.join("fastopt-bench", "bench-quick.json") in out.stdout
    assert "wrote " + os.path.join("fastopt-bench", "bench-quick.json") in out.stdout
    try:
        import matplotlib.image
    except ImportError:
        assert "no figure: matplotlib is not installed" in out.stdout
        return
    png = tmp_path / "fastopt-bench" / "bench-quick.png"
    assert "wrote " + os.path.join("fastopt-bench", "bench-quick.png") in out.stdout
    assert matplotlib.image.imread(str(png)).shape[0] > 100


def test_bench_quick_plan_is_small():
    """--quick plans only sizes up to 1M elements (no 16M/64M, no GPT-2's 124M) and one loss shape,
    and fewer rounds than the full suite; every case still times fastopt with its peers and the probe."""
    from fastopt.bench import cli
    from fastopt.bench.backends import select_backends
    from fastopt.bench.cases import plan_cases
    from fastopt.bench.timing import plan_rounds

    args = cli.build_parser().parse_args(["--quick"])
    assert args.quick and max(cli.QUICK_SIZES) <= 1_000_000 and len(cli.QUICK_SHAPES) == 1
    pending = plan_cases(cli.QUICK_SIZES, args.optimizers, False, [cli.parse_shape(s) for s in cli.QUICK_SHAPES],
                         args.losses, select_backends(torch=False))
    assert max(p.n for p in pending) <= 1_024_000
    assert all(plan_rounds(p.n, quick=True) < plan_rounds(p.n) for p in pending)
    case = pending[0].build()
    assert "fastopt" in case.impls and "numpy" in case.impls and case.probe is not None


def test_spread_and_busy_note():
    from fastopt.bench.cases import PROBE, Case
    from fastopt.bench.report import busy_note
    from fastopt.bench.timing import NOISY_SPREAD, Timings, spread

    assert spread([1.0, 1.0, 1.0, 1.0, 1.0]) == 0.0
    assert spread([1.0, 1.0, 1.0, 1.0, 50.0]) < 0.01  # one stray round does not count: the median ignores it
    assert spread([1.0, 2.0, 3.0, 4.0, 5.0]) == pytest.approx(2.0 / 3.0)
    case = Case("optimizers", "sgd", "x", 10, 200, {"fastopt": lambda: None}, lambda: None)
    quiet = Timings({"fastopt": 1.0, PROBE: 1.0}, {"fastopt": 1, PROBE: 1}, {"fastopt": 0.9, PROBE: 0.01})
    busy = Timings({"fastopt": 1.0, PROBE: 1.0}, {"fastopt": 1, PROBE: 1}, {"fastopt": 0.0, PROBE: NOISY_SPREAD * 2})
    assert busy_note(case, quiet) is None
    assert "other work took the CPUs" in busy_note(case, busy)


def test_info_times_the_probe_in_the_same_rounds_and_says_when_loaded(monkeypatch):
    from fastopt.bench import report
    from fastopt.demo import info

    monkeypatch.setattr(report, "load_average", lambda: 8.0 * (os.cpu_count() or 1))
    lines = info.quick_timing(10_000, 3)
    assert lines[0].startswith("note: load average"), lines
    header = next(line for line in lines if line.startswith("optimizer"))
    assert "% probe" in header and "spread" in header
    rows = [line.split() for line in lines if line.split()[:1] and line.split()[0] in ("sgd", "adam")]
    assert len(rows) == 2 and all(row[-2].endswith("%") for row in rows), rows
    monkeypatch.setattr(report, "load_average", lambda: 0.0)
    assert not info.quick_timing(10_000, 3)[0].startswith("note: load average")


def test_info_prints_the_cuda_details_as_lines():
    out = run("info", "--no-timing")
    assert out.returncode == 0, out.stderr
    assert "{'" not in out.stdout, out.stdout
    lines = out.stdout.splitlines()
    at = lines.index("  cuda:")
    assert lines[at + 1].split()[0] == "compiled", lines[at:at + 3]
