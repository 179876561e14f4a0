"""Error messages that point to the fix (the first-minutes issue): each names what is wrong and what to do."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

import fastopt

from repo_paths import ROOT  # noqa: E402


@pytest.mark.parametrize("dtype", [">f4", ">f8"] if sys.byteorder == "little" else ["<f4", "<f8"])
def test_byte_swapped_arrays_are_told_the_byte_order(dtype):
    p, g = np.ones(3, dtype), np.ones(3)
    with pytest.raises(TypeError, match=r"params\[0\] has dtype .f[48] \((big|little)-endian\): fastopt takes "
                                        r"native byte order.*newbyteorder"):
        fastopt.sgd_(p, g, lr=0.1)
    with pytest.raises(TypeError, match=r"logits has dtype .* native byte order"):
        fastopt.softmax_cross_entropy(np.zeros((2, 3), dtype), np.array([0, 1]))
    assert (p == 1).all()


def test_loss_on_logits_that_require_grad_says_how_to_use_it_with_autograd():
    torch = pytest.importorskip("torch")
    logits = torch.zeros(2, 3, requires_grad=True)
    with pytest.raises(TypeError, match=r"logits requires grad; fastopt's losses are not recorded by autograd: "
                                        r"call them on logits\.detach\(\).*backward"):
        fastopt.softmax_cross_entropy(logits, torch.tensor([0, 1]))


def test_update_of_a_parameter_that_requires_grad_points_to_the_twins():
    torch = pytest.importorskip("torch")
    p = torch.zeros(3, requires_grad=True)
    with pytest.raises(TypeError, match=r"params\[0\] requires grad; pass it detached.*fastopt\.torch"):
        fastopt.sgd_([p], [torch.zeros(3)], lr=0.1)


def test_python_m_fastopt_in_the_repository_root_says_the_source_folder_shadows_the_install():
    # In the root, `python -m` puts the current folder first: the source fastopt/ (no compiled module)
    # hides the installed one. The message must say that first, not that fastopt is not installed.
    from importlib.machinery import EXTENSION_SUFFIXES

    if any(os.path.exists(os.path.join(ROOT, "fastopt", "_core" + suffix)) for suffix in EXTENSION_SUFFIXES):
        pytest.skip("the source folder holds a compiled module (an in-place build): nothing is shadowed")
    result = subprocess.run([sys.executable, "-m", "fastopt", "--help"], cwd=ROOT, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode != 0
    assert "shadows the installed fastopt" in result.stderr, result.stderr[-2000:]
    assert "Run the `fastopt` command" in result.stderr
