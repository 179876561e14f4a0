"""tools/gpu-check, the check run on a lent GPU machine, tested where there is no GPU: it must stop cleanly
(a message saying why, exit code 2, the log and summary written) on a machine without one, plan the right
build for the GPU nvidia-smi names (--dry-run, with fake nvidia-smi and nvcc), and keep each phase inside
its time budget. Also `fastopt bench --cuda-only`, the check's last phase, without a GPU.

The script runs in a child process each time (it is a program, and a hang must fail, not stop the suite).
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import json
import os
import shutil
import stat
import subprocess
import sys
import time

import pytest

from repo_paths import ROOT  # noqa: E402
SCRIPT = os.path.join(ROOT, "tools", "gpu-check")
H200 = "NVIDIA H200, 9.0, 580.159.03, 143771 MiB"
NVCC = "nvcc: NVIDIA (R) Cuda compiler driver\nCuda compilation tools, release 13.0, V13.0.48"


def fake_tool(folder, name, stdout="", code=0):
    """An executable shell script that prints `stdout` and exits with `code`."""
    path = folder / name
    text = stdout.replace("'", "'\"'\"'")
    path.write_text(f"#!/bin/sh\nprintf '%s\\n' '{text}'\nexit {code}\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


def run_check(tmp_path, *args, smi=None, nvcc=None, out=True):
    env = dict(os.environ)
    env.pop("FASTOPT_GPU_CHECK_OUT", None)
    if smi is not None:
        env["FASTOPT_GPU_CHECK_NVIDIA_SMI"] = smi
    if nvcc is not None:
        env["FASTOPT_GPU_CHECK_NVCC"] = nvcc
    env["PYTHON"] = sys.executable
    argv = [sys.executable, SCRIPT] + ([str(tmp_path / "out")] if out else []) + list(args)
    return subprocess.run(argv, capture_output=True, text=True, timeout=180, env=env, cwd=ROOT)


def summary(tmp_path):
    return json.loads((tmp_path / "out" / "summary.json").read_text())


def assert_stopped_without_gpu(tmp_path, result, *phrases):
    assert result.returncode == 2, (result.stdout, result.stderr)
    for phrase in phrases:
        assert phrase in result.stderr, result.stderr
    log = (tmp_path / "out" / "gpu-check.log").read_text()
    for phrase in phrases:
        assert phrase in log
    s = summary(tmp_path)
    assert s["exit_code"] == 2 and s["phases"] == [] and phrases[0] in s["message"]


@pytest.mark.skipif(shutil.which("nvidia-smi") is not None, reason="this machine has nvidia-smi")
def test_this_machine_without_a_gpu_stops_cleanly(tmp_path):
    result = run_check(tmp_path)
    assert_stopped_without_gpu(tmp_path, result, "no NVIDIA GPU here", "nvidia-smi is not installed")


def test_missing_nvidia_smi(tmp_path):
    result = run_check(tmp_path, smi=str(tmp_path / "no-such-nvidia-smi"))
    assert_stopped_without_gpu(tmp_path, result, "no NVIDIA GPU here", "is not installed")


def test_a_driver_that_does_not_answer(tmp_path):
    said = "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver."
    smi = fake_tool(tmp_path, "nvidia-smi", said, code=9)
    result = run_check(tmp_path, smi=smi)
    assert_stopped_without_gpu(tmp_path, result, "no usable NVIDIA GPU here", "exit code 9", said)


@pytest.mark.parametrize("printed,code", [("", 0), ("No devices were found", 6)], ids=["empty", "no-devices"])
def test_no_device_listed(tmp_path, printed, code):
    smi = fake_tool(tmp_path, "nvidia-smi", printed, code=code)
    result = run_check(tmp_path, smi=smi)
    assert result.returncode == 2 and "GPU here" in result.stderr, result.stderr


def test_missing_nvcc(tmp_path):
    smi = fake_tool(tmp_path, "nvidia-smi", H200)
    result = run_check(tmp_path, "--dry-run", smi=smi, nvcc=str(tmp_path / "no-such-nvcc"))
    assert result.returncode == 2 and "no CUDA compiler here" in result.stderr, result.stderr


def test_dry_run_plans_a_build_for_the_gpu_it_finds(tmp_path):
    smi = fake_tool(tmp_path, "nvidia-smi", H200)
    nvcc = fake_tool(tmp_path, "nvcc", NVCC)
    result = run_check(tmp_path, "--dry-run", smi=smi, nvcc=nvcc)
    assert result.returncode == 0, (result.stdout, result.stderr)
    out = result.stdout
    assert "GPU: NVIDIA H200, compute capability 9.0, driver 580.159.03" in out
    assert "nvcc: 13.0" in out
    assert "FASTOPT_CUDA=ON CUDAARCHS=90-real" in out
    assert "pip install --no-build-isolation --no-deps --no-index" in out and "-Cbuild-dir=build/gpu-check" in out
    assert "-m pytest -m cuda" in out and "pytest.xml" in out
    assert "-m fastopt bench --cuda-only" in out and "bench.json" in out and "bench.png" in out
    s = summary(tmp_path)
    assert s["exit_code"] == 0 and s["dry_run"] and s["phases"] == []
    assert s["gpu"]["arch"] == "90" and s["gpu"]["name"] == "NVIDIA H200"


def test_output_folder_from_the_environment(tmp_path):
    smi = fake_tool(tmp_path, "nvidia-smi", H200)
    env = dict(os.environ, FASTOPT_GPU_CHECK_OUT=str(tmp_path / "from-env"), FASTOPT_GPU_CHECK_NVIDIA_SMI=smi,
               FASTOPT_GPU_CHECK_NVCC=fake_tool(tmp_path, "nvcc", NVCC), PYTHON=sys.executable)
    result = subprocess.run([sys.executable, SCRIPT, "--dry-run", "--phases", "tests"], capture_output=True,
                            text=True, timeout=180, env=env, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "from-env" / "summary.json").exists()
    assert "build (" not in result.stdout and "tests (" in result.stdout and "bench (" not in result.stdout


def test_usage_errors(tmp_path):
    result = run_check(tmp_path, out=False)
    assert result.returncode == 64 and "FASTOPT_GPU_CHECK_OUT" in result.stderr
    result = run_check(tmp_path, "--phases", "build,lint")
    assert result.returncode == 64 and "unknown phase 'lint'" in result.stderr


def load_script():
    loader = importlib.machinery.SourceFileLoader("gpu_check", SCRIPT)
    spec = importlib.util.spec_from_loader("gpu_check", loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


def test_nvidia_smi_lines_parse():
    gpu_check = load_script()
    gpus = gpu_check.parse_smi(f"{H200}\nNVIDIA H100 80GB HBM3, 9.0, 570.1, 81559 MiB\nnot a gpu line\n")
    assert [g["arch"] for g in gpus] == ["90", "90"] and gpus[1]["name"] == "NVIDIA H100 80GB HBM3"
    assert gpu_check.parse_smi("Tesla V100-SXM2-16GB, 7.0, 535.1, 16384 MiB")[0]["arch"] == "70"
    assert gpu_check.parse_smi("No devices were found") == []


def test_a_phase_past_its_budget_is_stopped_with_its_children(tmp_path):
    gpu_check = load_script()
    log = gpu_check.Log(str(tmp_path / "log.txt"))
    pid_file = tmp_path / "child.pid"
    # a shell that starts a child and waits: both must be gone when the phase is stopped
    cmd = ["sh", "-c", f"sleep 60 & echo $! > {pid_file}; echo started; wait"]
    start = time.monotonic()
    # (5 s: long enough for the shell to start its child and say so on a loaded machine)
    result = gpu_check.run_phase(log, "slow", cmd, 5.0)
    assert result["timed_out"] and result["rc"] != 0
    assert time.monotonic() - start < 40
    child = int(pid_file.read_text())
    for _ in range(50):  # (the kill is delivered at once; the process table may lag a moment)
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        os.kill(child, 9)
        pytest.fail("the phase's child process survived the timeout")
    text = (tmp_path / "log.txt").read_text()
    assert "started" in text and "ran past its 5 s budget" in text


def test_a_phase_that_cannot_start(tmp_path):
    gpu_check = load_script()
    result = gpu_check.run_phase(gpu_check.Log(None), "missing", [str(tmp_path / "nothing-here")], 5.0)
    assert result["rc"] == 127 and not result["timed_out"]


def test_bench_cuda_only_without_a_gpu_says_so():
    from fastopt.bench.backends import cuda_unavailable

    reason = cuda_unavailable()
    if reason is None:
        pytest.skip("this machine has a GPU: test_bench_cuda.py runs the CUDA rows")
    result = subprocess.run([sys.executable, "-m", "fastopt", "bench", "--cuda-only"], capture_output=True,
                            text=True, timeout=300, cwd=os.path.dirname(os.path.abspath(__file__)))
    assert result.returncode == 1 and f"no CUDA rows can run here ({reason})" in result.stderr, result.stderr


def test_the_plot_of_a_cuda_only_run(tmp_path):
    """What the check brings back: a figure of the CUDA rows alone (no CPU sweep)."""
    pytest.importorskip("matplotlib")
    from fastopt.bench.plot import plot

    rows = []
    cases = [("adamw", "CUDA AdamW: 64,000,000 float32 elements", ["fastopt-cuda", "torch-cuda-fused"]),
             ("cross_entropy", "CUDA 32768 x 50257 float32 logits", ["fastopt-cuda", "liger"])]
    for case, label, impls in cases:
        for k, impl in enumerate(impls):
            rows.append(dict(part="cuda", case=case, label=label, impl=impl, seconds=1e-3 * (k + 1),
                             gb_per_s=3000.0 / (k + 1), probe_gb_per_s=4000.0, ratio_to_fastopt=k + 1.0,
                             spread=0.01, probe_spread=0.01))
    path = str(tmp_path / "cuda.png")
    assert plot(rows, path) == path
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
