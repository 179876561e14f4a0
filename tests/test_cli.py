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
    return subprocess.run([sys.executable, "-m", "fastopt", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=300)


def test_info_prints_build_info_and_timings():
    out = run("info", "--size", "10000", "--rounds", "2")
    assert out.returncode == 0, out.stderr
    assert "cpu_isa" in out.stdout
    for optimizer in ("sgd", "adagrad", "rmsprop", "adam", "adamw"):
        assert optimizer in out.stdout


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
    out = run("bench", "--sizes", "1000", "4096", "--no-gpt2", "--shapes", "16x100", "--rounds", "2",
              "--cuda-size", "1M", "--cuda-shape", "64x1000", "--json", str(json_path), "--plot", str(plot_path))
    assert out.returncode == 0, out.stderr
    data = json.loads(json_path.read_text())
    rows = data["results"]
    implementations = {(r["case"], r["impl"]) for r in rows}
    for optimizer in ("sgd", "adagrad", "rmsprop", "adam", "adamw", "cross_entropy"):
        assert any(case == optimizer and impl.startswith("fastopt") for case, impl in implementations), optimizer
    assert all(r["seconds"] > 0 for r in rows)
    reason = cuda_unavailable()
    cuda_rows = {(r["case"], r["impl"]) for r in rows if r.get("device") == "cuda"}
    if reason is None:  # with a GPU: the CUDA rows, each with its copy probe
        assert {("adamw", "fastopt-cuda"), ("cross_entropy", "fastopt-cuda")} <= cuda_rows, cuda_rows
        assert all(r["probe_gb_per_s"] > 0 for r in rows if r.get("device") == "cuda")
    else:
        assert not cuda_rows and f"no GPU: CUDA rows skipped ({reason})" in out.stdout
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
