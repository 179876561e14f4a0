"""The README's Python examples run as written, each block on its own (a reader copies one block,
not the page), so the README stays true."""

from __future__ import annotations

import pathlib
import re
from typing import List, NamedTuple

import numpy as np
import pytest

from repo_paths import ROOT

README = pathlib.Path(ROOT) / "README.md"


class Block(NamedTuple):
    line: int  # the line of its ```python fence, for the test id and the traceback
    code: str

    @property
    def uses_torch(self) -> bool:
        return "import torch" in self.code

    @property
    def on_gpu(self) -> bool:
        return 'device="cuda"' in self.code


def python_blocks() -> List[Block]:
    text = README.read_text()
    return [Block(text.count("\n", 0, m.start()) + 1, m.group(1))
            for m in re.finditer(r"```python\n(.*?)```", text, re.S)]


def run_alone(block: Block) -> dict:
    """The block in a fresh namespace; the traceback points at its README line."""
    namespace: dict = {"__name__": "readme_block"}
    padded = "\n" * block.line + block.code  # line numbers in tracebacks are the README's
    exec(compile(padded, str(README), "exec"), namespace)
    return namespace


def test_readme_has_the_blocks_these_tests_check():
    blocks = python_blocks()
    assert sum(not b.uses_torch for b in blocks) >= 5 and sum(b.uses_torch and not b.on_gpu for b in blocks) >= 1
    assert sum(b.on_gpu for b in blocks) == 1


@pytest.mark.parametrize("block", [b for b in python_blocks() if not b.on_gpu], ids=lambda b: f"line{b.line}")
def test_readme_block_runs_alone(block):
    if block.uses_torch:
        pytest.importorskip("torch")
    if "fastopt.jax" in block.code:  # needs jax and a build with fastopt.jax's handlers (FASTOPT_JAX)
        pytest.importorskip("fastopt.jax", exc_type=ImportError)
    namespace = run_alone(block)
    if "train_step" in namespace:  # fastopt.jax: 100 jitted steps, params and state donated
        assert int(namespace["state"].count) == 100 and np.isfinite(float(namespace["loss"]))
    if "W" in namespace and "loss" in namespace:  # the training loop: 100 fused AdamW steps moved the weights
        assert np.isfinite(namespace["W"]).all() and namespace["exp_avg_sqs"][0].any()
        assert np.isfinite(namespace["loss"])
    if "torch_opt" in namespace:  # the twin trained and its state moved into torch.optim
        torch = namespace["torch"]
        opt, torch_opt = namespace["opt"], namespace["torch_opt"]
        assert isinstance(opt, namespace["fastopt"].torch.AdamW)
        assert opt.state_dict()["state"][0]["step"].item() == 100
        assert torch.equal(torch_opt.state_dict()["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"])
        assert torch.isfinite(namespace["torch_loss"])
    if "status" in namespace and "lib" in namespace:  # the ctypes call updated p
        assert namespace["status"] == 0 and (namespace["p"] < 1).all()


@pytest.mark.cuda
def test_readme_gpu_example_runs():
    torch = pytest.importorskip("torch")
    import fastopt

    if not (fastopt.cuda.is_available() and torch.cuda.is_available()):
        pytest.skip("needs a CUDA build of fastopt and a GPU")
    (block,) = [b for b in python_blocks() if b.on_gpu]
    namespace = run_alone(block)
    torch.cuda.synchronize()
    loss, dlogits, logits = namespace["loss"], namespace["dlogits"], namespace["logits"]
    assert loss.device.type == "cuda" and loss.dim() == 0 and torch.isfinite(loss)
    assert dlogits.data_ptr() == logits.data_ptr()
    assert torch.allclose(dlogits.sum(dim=1), torch.zeros(512, device="cuda"), atol=1e-5)
    assert namespace["m"].abs().sum() > 0
