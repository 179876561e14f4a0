"""The README's Python examples run as written (so the README stays true)."""

from __future__ import annotations

import pathlib
import re

import numpy as np
import pytest

README = pathlib.Path(__file__).resolve().parent.parent / "README.md"


def python_blocks(with_torch: bool, on_gpu: bool = False):
    """The README's Python blocks that use torch (or not); the GPU ones (device="cuda") apart."""
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    return [b for b in blocks if ("import torch" in b) == with_torch and ('device="cuda"' in b) == on_gpu]


def test_readme_examples_run_and_train():
    blocks = python_blocks(with_torch=False)
    assert len(blocks) >= 2
    namespace: dict = {}
    exec(compile("\n".join(blocks), str(README), "exec"), namespace)
    # The loop ran 100 fused AdamW steps: the weights moved and stayed finite.
    W = namespace["W"]
    assert np.isfinite(W).all() and namespace["exp_avg_sqs"][0].any()
    assert np.isfinite(namespace["loss"])


def test_readme_torch_example_runs_and_trains():
    torch = pytest.importorskip("torch")
    blocks = python_blocks(with_torch=True)
    assert len(blocks) >= 1
    namespace: dict = {}
    exec(compile("\n".join(blocks), str(README), "exec"), namespace)
    opt, torch_opt = namespace["opt"], namespace["torch_opt"]
    assert isinstance(opt, namespace["fastopt"].torch.AdamW)
    assert opt.state_dict()["state"][0]["step"].item() == 100
    assert torch.equal(torch_opt.state_dict()["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"])
    assert torch.isfinite(namespace["torch_loss"])


@pytest.mark.cuda
def test_readme_gpu_example_runs():
    torch = pytest.importorskip("torch")
    import fastopt

    if not (fastopt.cuda.is_available() and torch.cuda.is_available()):
        pytest.skip("needs a CUDA build of fastopt and a GPU")
    blocks = python_blocks(with_torch=True, on_gpu=True)
    assert len(blocks) == 1
    namespace: dict = {}
    exec(compile(blocks[0], str(README), "exec"), namespace)
    torch.cuda.synchronize()
    loss, dlogits, logits = namespace["loss"], namespace["dlogits"], namespace["logits"]
    assert loss.device.type == "cuda" and loss.dim() == 0 and torch.isfinite(loss)
    assert dlogits.data_ptr() == logits.data_ptr()
    assert torch.allclose(dlogits.sum(dim=1), torch.zeros(512, device="cuda"), atol=1e-5)
    assert namespace["m"].abs().sum() > 0
