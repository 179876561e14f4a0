"""What the CUDA tests share: the skip marks, and moving NumPy test data to CUDA tensors and back.

Every test_cuda_*.py module sets ``pytestmark = CUDA_MARKS``: marked ``cuda`` (pytest -m cuda selects
them) and skipped unless this fastopt has its CUDA backend and a usable GPU. Parts that need a framework
import it with pytest.importorskip and skip when it has no CUDA support. Nothing here touches the GPU at
import time, so the modules collect (and skip) on a machine without one.
"""

from __future__ import annotations

from typing import Dict, List

import numpy as np
import pytest

import fastopt
from interop_cases import Args

CUDA_MARKS = [
    pytest.mark.cuda,
    pytest.mark.skipif(not fastopt.cuda.is_available(),
                       reason="needs an NVIDIA GPU and a CUDA build of fastopt (fastopt.cuda.is_available())"),
]


def torch_with_cuda():
    """torch, or a skip when it is missing or has no CUDA."""
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("torch has no CUDA support here")
    return torch


def to_cuda(torch, a: np.ndarray, offset: int = 0, dtype=None):
    """A CUDA tensor with a's values (cast to `dtype`, a torch dtype, when given). offset=1 gives a view
    that starts one element into a larger buffer: aligned to its element size only, so that vector
    loads cannot be used for it (the kernels' scalar path)."""
    t = torch.from_numpy(np.asarray(a, order="C"))  # (not np.ascontiguousarray: it makes 0-d arrays 1-d)
    if dtype is not None:
        t = t.to(dtype)
    buf = torch.empty(t.numel() + offset, dtype=t.dtype, device="cuda")
    view = buf[offset:].view(t.shape)
    view.copy_(t)
    return view


def to_numpy(t) -> np.ndarray:
    """A CUDA (or CPU) tensor's values as NumPy; bfloat16 and float16 as float32 (exactly)."""
    t = t.detach()
    if t.dtype.is_floating_point and t.element_size() == 2:
        t = t.float()
    return t.cpu().numpy()


def args_to_cuda(torch, args: Args, offsets: Dict[str, List[int]] = None, dtypes: Dict[str, object] = None) -> Args:
    """Every array of `args` as a CUDA tensor; offsets[name][i] and dtypes[name] as in to_cuda."""
    out = {}
    for name, arrays in args.items():
        offs = offsets[name] if offsets else [0] * len(arrays)
        dtype = dtypes.get(name) if dtypes else None
        out[name] = [to_cuda(torch, a, off, dtype) for a, off in zip(arrays, offs)]
    return out


def clone_all(args: Args) -> Args:
    """Copies of every tensor (or NumPy array) in args."""
    return {name: [t.copy() if isinstance(t, np.ndarray) else t.clone() for t in arrays]
            for name, arrays in args.items()}


def assert_bits_equal(torch, got: Args, want: Args, names=None, what: str = "") -> None:
    """Tensors in `got` equal `want` (tensors or NumPy arrays) bit for bit, dtype included."""
    for name in names or want:
        for i, (g, w) in enumerate(zip(got[name], want[name])):
            if isinstance(g, np.ndarray):
                assert g.dtype == w.dtype, f"{what}{name}[{i}] dtype"
                np.testing.assert_array_equal(g, w, err_msg=f"{what}{name}[{i}]")
            elif isinstance(w, np.ndarray):
                assert g.dtype == getattr(torch, w.dtype.name), f"{what}{name}[{i}] dtype"
                np.testing.assert_array_equal(g.cpu().numpy(), w, err_msg=f"{what}{name}[{i}]")
            else:
                assert g.dtype == w.dtype, f"{what}{name}[{i}] dtype"
                assert torch.equal(g, w), f"{what}{name}[{i}] differs"


def gpu_sleep(torch):
    """Keeps the current stream busy for a while (tens of milliseconds), so that work queued behind it
    on that stream is still pending when the host moves on. Not a timing assertion: only the order of
    work on streams matters to the tests."""
    sleep = getattr(torch.cuda, "_sleep", None)
    if sleep is not None:
        sleep(50_000_000)
