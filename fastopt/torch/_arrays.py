"""The device path: turns torch tensors into arrays the fused kernels can update in place.

This is the one place that knows how a tensor reaches a kernel. Today only CPU tensors do: each becomes a
zero-copy NumPy view of the tensor's own memory, so the in-place update lands in the tensor. Everything the
kernels cannot take (CUDA and other devices, float16/bfloat16, sparse or non-contiguous tensors) is refused
here with an error naming the parameter, before any kernel runs. The CUDA backend replaces this module.

CPU tensors go through ``Tensor.numpy()`` rather than ``numpy.from_dlpack``: both hand over the same memory
without a copy (checked below), and ``numpy()`` costs about half as much per tensor, which matters when a
step converts four arrays for each of a hundred parameters.
"""

from __future__ import annotations

from typing import List

import numpy as np
import torch

SUPPORTED_DTYPES = (torch.float32, torch.float64)


def check_tensor(t: torch.Tensor, name: str, like: torch.Tensor = None) -> None:
    """Raises if the kernels cannot update (or read) `t` in place; `name` goes into the message.
    With `like`, `t` must also match its dtype, shape and device (a gradient or a state tensor)."""
    if t.layout != torch.strided:
        raise NotImplementedError(f"{name} is a {t.layout} tensor; fastopt's kernels take dense tensors "
                                  "(sparse gradients are not supported)")
    if t.device.type != "cpu":
        raise NotImplementedError(f"{name} is on {t.device}; fastopt's torch optimizers run on CPU tensors "
                                  "(the CUDA backend is not built yet)")
    if t.dtype not in SUPPORTED_DTYPES:
        raise TypeError(f"{name} has dtype {t.dtype}; fastopt updates float32 or float64 tensors")
    if like is not None:
        if t.dtype != like.dtype:
            raise TypeError(f"{name} has dtype {t.dtype} but its parameter has {like.dtype}")
        if t.shape != like.shape:
            raise ValueError(f"{name} has shape {tuple(t.shape)} but its parameter has {tuple(like.shape)}")
    if not t.is_contiguous():
        raise ValueError(f"{name} is not contiguous; fastopt updates contiguous tensors in place and never "
                         "copies (call .contiguous() on the parameter before building the optimizer)")
    if t.is_conj() or t.is_neg():
        raise ValueError(f"{name} has a lazy conjugate/negative bit; resolve it first")


def view(t: torch.Tensor) -> np.ndarray:
    """A writeable NumPy array over `t`'s memory (`t` already passed check_tensor)."""
    array = t.detach().numpy()
    # Guard the zero-copy promise: an update into a copy would be lost without a word.
    if t.numel() and array.ctypes.data != t.data_ptr():  # pragma: no cover - would be a torch change
        raise RuntimeError("torch handed fastopt a copy instead of the tensor's memory")
    return array


def views(tensors: List[torch.Tensor]) -> List[np.ndarray]:
    return [view(t) for t in tensors]


def mark_modified(tensors: List[torch.Tensor]) -> None:
    """The kernels wrote these tensors behind autograd's back: bump their version counters so that
    autograd still detects a graph that saved one of them before the update."""
    if tensors:
        torch.autograd.graph.increment_version(tensors)
