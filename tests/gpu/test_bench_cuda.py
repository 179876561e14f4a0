"""The benchmark suite's CUDA rows at small sizes (marked `cuda`: skipped without a GPU, fastopt's CUDA
backend and torch with CUDA): fastopt-cuda against torch on the same GPU, the copy probe moving the
case's bytes, and the cross-entropy case's peak extra memory: fastopt's is its gradient (one N x C
float32 buffer), torch's F.cross_entropy + backward holds at least two."""

from __future__ import annotations

import pytest

from fastopt.bench.backends import cuda_unavailable, select_backends
from fastopt.bench.cases import plan_cuda_cases
from fastopt.bench.suite import run

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(cuda_unavailable() is not None, reason=f"no CUDA rows: {cuda_unavailable()}")]


def test_cuda_rows_at_small_sizes():
    n, c = 2048, 5000
    pending, notes = plan_cuda_cases(True, True, True, select_backends(numpy=False), size=1_000_000, shape=(n, c))
    assert not notes and [p.label for p in pending] == [
        "CUDA AdamW: 1,000,000 float32 elements", "CUDA GPT-2 small: 148 float32 tensors in one call",
        f"CUDA {n} x {c} float32 logits"]
    rows = run(pending, rounds=3)
    impls = {(r["label"].split(":")[0], r["impl"]) for r in rows}
    for label in ("CUDA AdamW", "CUDA GPT-2 small"):
        assert {(label, "fastopt-cuda"), (label, "torch-cuda-fused"), (label, "torch-cuda-foreach")} <= impls
    loss = f"CUDA {n} x {c} float32 logits"
    assert {(loss, "fastopt-cuda"), (loss, "torch-cuda")} <= impls
    for r in rows:
        assert r["device"] == "cuda" and r["seconds"] > 0 and r["probe_gb_per_s"] > 0
        assert r["probe_bytes"] == r["bytes_per_call"]  # the copy moves the case's bytes (all under 4 GiB here)
    peaks = {r["impl"]: r["peak_extra_bytes"] / (n * c * 4) for r in rows if r["case"] == "cross_entropy"}
    assert 0.99 < peaks["fastopt-cuda"] < 1.05, peaks
    assert peaks["torch-cuda"] > 1.9, peaks


def test_cuda_only_cli_writes_only_cuda_rows(tmp_path):
    """`fastopt bench --cuda-only`, the last phase of tools/gpu-check, at small sizes."""
    import json
    import os
    import subprocess
    import sys

    json_path, plot_path = tmp_path / "b.json", tmp_path / "b.png"
    out = subprocess.run([sys.executable, "-m", "fastopt", "bench", "--cuda-only", "--cuda-size", "1M",
                          "--cuda-shape", "256x1000", "--rounds", "2", "--json", str(json_path), "--plot",
                          str(plot_path)], capture_output=True, text=True, timeout=600,
                         cwd=os.path.dirname(os.path.abspath(__file__)))
    assert out.returncode == 0, out.stderr
    rows = json.loads(json_path.read_text())["results"]
    assert rows and all(r["device"] == "cuda" for r in rows)
    assert {r["case"] for r in rows} == {"adamw", "cross_entropy"}
    assert plot_path.exists() or "no plot" in out.stdout


def test_liger_cross_entropy_row_when_installed():
    pytest.importorskip("liger_kernel", reason="Liger-Kernel is not installed (tools/gpu-check installs a carried wheel)")
    n, c = 1024, 5000
    pending, notes = plan_cuda_cases(False, False, True, select_backends(numpy=False), shape=(n, c))
    assert not notes
    rows = run(pending, rounds=2)
    peaks = {r["impl"]: r["peak_extra_bytes"] / (n * c * 4) for r in rows}
    assert "liger" in peaks and peaks["liger"] < 0.5, peaks  # its gradient goes into its own input
