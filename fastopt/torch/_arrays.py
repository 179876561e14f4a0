"""The device path: turns torch tensors into arrays the fused kernels can update in place.

This is the one place that knows how a tensor reaches a kernel. Today only CPU tensors do: each becomes a
zero-copy NumPy view of the tensor's own memory, so the in-place update lands in the tensor. Everything the
kernels cannot take (CUDA and other devices, float16/bfloat16, sparse or non-contiguous tensors) is refused
here with an error naming the parameter, before any kernel runs. The CUDA backend replaces this module.

CPU tensors go through ``Tensor.numpy()`` rather than ``numpy.from_dlpack``: both hand over the same memory
without a copy (tests/test_torch_twins.py checks the addresses), and ``numpy()`` costs about half as much per tensor, which matters when a
step converts four arrays for each of a hundred parameters.
"""

from __future__ import annotations

from typing import List

import numpy as np
import torch

SUPPORTED_DTYPES = (torch.float32, torch.float64)


def check_tensor(t: torch.Tensor, name: str, like: torch.Tensor = None) -> None:
    """Raises if the kernels cannot update (or read) `t` in place; `name` goes into the message.
    With `like`, `t` must also match its dtype and shape (a gradient or a state tensor).
    (Called for every tensor of every step: the common case is a few attribute reads.)"""
    if not t.is_cpu or t.layout != torch.strided:
        if t.layout != torch.strided:
            raise NotImplementedError(f"{name} is a {t.layout} tensor; fastopt's kernels take dense tensors "
                                      "(sparse gradients are not supported)")
        raise NotImplementedError(f"{name} is on {t.device}; fastopt's torch optimizers run on CPU tensors "
                                  "(the CUDA backend is not built yet)")
    dtype = t.dtype
    if dtype not in SUPPORTED_DTYPES:
        raise TypeError(f"{name} has dtype {dtype}; fastopt updates float32 or float64 tensors")
    if like is not None:
        if dtype != like.dtype:
            raise TypeError(f"{name} has dtype {dtype} but its parameter has {like.dtype}")
        if t.shape != like.shape:
            raise ValueError(f"{name} has shape {tuple(t.shape)} but its parameter has {tuple(like.shape)}")
    if not t.is_contiguous():
        raise ValueError(f"{name} is not contiguous; fastopt updates contiguous tensors in place and never "
                         "copies (call .contiguous() on the parameter before building the optimizer)")
    # (A real tensor cannot carry a conjugate bit; a negative bit makes .numpy() below refuse.)


def views(tensors: List[torch.Tensor]) -> List[np.ndarray]:
    """Writeable NumPy arrays over the tensors' own memory (each already passed check_tensor). For a CPU
    tensor Tensor.numpy() always shares the memory; an update into a copy would be lost without a word,
    so the tests check the addresses and that the update lands in the tensor."""
    return [t.detach().numpy() for t in tensors]


def mark_modified(tensors: List[torch.Tensor]) -> None:
    """The kernels wrote these tensors behind autograd's back: bump their version counters so that
    autograd still detects a graph that saved one of them before the update."""
    if tensors:
        torch.autograd.graph.increment_version(tensors)
