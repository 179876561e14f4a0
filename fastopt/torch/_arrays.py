"""The device path: turns torch tensors into arrays the fused kernels can update in place.

This is the one place that knows how a tensor reaches a kernel:

- a CPU tensor becomes a zero-copy NumPy view of its own memory, so the in-place update lands in the
  tensor (tests/fastopt_torch/test_torch_twins.py checks the addresses). The kernels also take the tensor itself (read
  through its own methods) at about the same cost per array, and __dlpack__ at about twice it, which
  matters when a step passes four arrays for each of a hundred parameters;
- a CUDA tensor goes to the kernels as it is (detached: fastopt refuses a tensor that requires grad, whose
  in-place update autograd would not see; the twins bump the version counters themselves), and fastopt
  queues the work on torch's current stream of its device.

A dense tensor that is not contiguous (channels_last, transposed, permuted) reaches the kernels as the
1-D block of memory it fills (flat), as do its gradient and state, which must be laid out the same way:
an elementwise update does not care in which order the elements lie, only that element k is the same
element in every operand.

Everything the kernels cannot take (other devices, sparse tensors, tensors with gaps in memory or laid
out unlike their parameter, half precision on the CPU for the optimizers whose CPU kernels lack it, CUDA
tensors when fastopt has no CUDA backend) is refused here with an error naming the parameter, before any
kernel runs.

float16 and bfloat16 parameters (and their gradients) are updated with float32 optimizer state, on CUDA
and, for SGD, Adagrad, RMSprop, Adam and AdamW, on the CPU: fastopt's kernels do the math in float32 and
round only the parameter, to nearest even. (torch's own fused optimizers keep the state in the parameter's
dtype; see state_dtype.)
"""

from __future__ import annotations

import functools
from typing import List, Optional

import numpy as np
import torch

import fastopt.cuda
from fastopt import _core

# Complex tensors are updated as torch.optim updates them: as their real pairs (torch.view_as_real), with
# state of the parameter's complex dtype.
COMPLEX_DTYPES = (torch.complex64, torch.complex128)
CPU_DTYPES = (torch.float32, torch.float64) + COMPLEX_DTYPES
CUDA_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64) + COMPLEX_DTYPES
HALF_DTYPES = (torch.float16, torch.bfloat16)


def math_dtype(dtype: torch.dtype) -> torch.dtype:
    """The real dtype the kernels compute a parameter of `dtype` in: float64 for float64 and complex128,
    float32 otherwise (float32, complex64, and float16/bfloat16 with float32 math)."""
    return torch.float64 if dtype in (torch.float64, torch.complex128) else torch.float32


def state_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype of a parameter's optimizer state (exp_avg, sum, momentum_buffer...): float32 for float16 and
    bfloat16 parameters, which fastopt's CUDA kernels require, else the parameter's own dtype."""
    return torch.float32 if dtype in HALF_DTYPES else dtype


@functools.lru_cache(maxsize=None)
def _cuda_refusal() -> Optional[str]:
    """None when fastopt can run CUDA tensors, else why not (asked once per process)."""
    if not fastopt.cuda.is_compiled():
        return ("but this fastopt was built without CUDA (FASTOPT_CUDA=OFF, or no CUDA compiler was found at "
                "install time): reinstall it with the CUDA toolkit present, or keep the model on the CPU")
    if fastopt.cuda.device_count() == 0:
        return ("but fastopt's CUDA backend finds no usable device (fastopt.cuda.device_count() == 0: check the "
                "driver against fastopt.build_info()['cuda'])")
    return None


def check_tensor(t: torch.Tensor, name: str, like: torch.Tensor = None, state: bool = False,
                 cpu_half=False) -> None:
    """Raises if the kernels cannot update (or read) `t` in place; `name` goes into the message.
    cpu_half: the optimizer's kernels take float16 and bfloat16 on the CPU too (the twin's _cpu_half: True,
    or the tuple of the 16-bit dtypes they take there, the rules' (torch.bfloat16,)).
    With `like` (the parameter), `t` must also match its device and shape, and its dtype: the parameter's
    for a gradient, state_dtype(parameter's) for optimizer state (`state=True`).
    (Called for every tensor of every step: the common case, a dense float CPU tensor, is a few attribute
    reads.)"""
    cpu, dtype = t.is_cpu, t.dtype
    if not (cpu and (dtype in CPU_DTYPES or (cpu_half and dtype in (HALF_DTYPES if cpu_half is True else cpu_half)))
            and t.layout == torch.strided):
        _check_kind(t, name)
    if like is not None:
        expected = like_dtype = like.dtype
        if state and like_dtype in HALF_DTYPES:
            expected = torch.float32
        if dtype != expected:
            if expected != like_dtype:
                raise TypeError(f"{name} has dtype {dtype} but fastopt keeps {expected} optimizer state for "
                                f"{like.dtype} parameters")
            raise TypeError(f"{name} has dtype {dtype} but its parameter has {like.dtype}")
        if not (cpu and like.is_cpu) and t.device != like.device:
            raise ValueError(f"{name} is on {t.device} but its parameter is on {like.device}")
        if t.shape != like.shape:
            raise ValueError(f"{name} has shape {tuple(t.shape)} but its parameter has {tuple(like.shape)}")
    if not t.is_contiguous():
        _check_layout(t, name, like)
    elif like is not None and not like.is_contiguous():
        _check_layout(t, name, like)  # (a contiguous operand of a channels_last parameter: refused there)
    # Checked here, with every tensor of the step, before any group is updated (the kernels refuse it too,
    # but only in their own group's call).
    if t.is_conj():
        raise TypeError(f"{name} has its conjugate bit set (a lazily conjugated view, such as x.conj()): its "
                        "memory holds the values unconjugated. Pass t.resolve_conj(), a copy (which an in-place "
                        "update would not reach)")
    if t.is_neg():
        raise TypeError(f"{name} has its negative bit set (a lazily negated view, such as x.conj().imag): its "
                        "memory holds the values negated. Pass t.resolve_neg(), a copy (which an in-place update "
                        "would not reach)")


def is_dense(t: torch.Tensor) -> bool:
    """Whether t's elements fill one block of memory with no gaps and no overlap, in some order of its
    dimensions (contiguous, channels_last, transposed, permuted): then the update of each element
    touches exactly the block `flat(t)` covers. (Size-1 dimensions take any stride.)"""
    dims = sorted(((stride, size) for stride, size in zip(t.stride(), t.shape) if size != 1))
    expected = 1
    for stride, size in dims:
        if stride != expected:
            return False
        expected *= size
    return True


def same_layout(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Whether a and b (of one shape) order their elements the same way in memory."""
    return all(sa == sb for sa, sb, size in zip(a.stride(), b.stride(), a.shape) if size != 1)


def _check_layout(t: torch.Tensor, name: str, like: Optional[torch.Tensor]) -> None:
    """A tensor that is not contiguous is updated in place when it is dense (is_dense) and, for an operand
    of a parameter, laid out as the parameter: element k of every operand's block is then the same
    element of the parameter, whatever the order (state made with torch.zeros_like keeps it)."""
    if not is_dense(t):
        raise ValueError(f"{name} (shape {tuple(t.shape)}, strides {t.stride()}) has gaps or overlaps in memory; "
                         "fastopt updates dense tensors in place and never copies (use a tensor of its own "
                         "memory, such as t.clone(), as the parameter before building the optimizer)")
    if like is not None and not same_layout(t, like):
        raise ValueError(f"{name} has strides {t.stride()} but its parameter has {like.stride()}; fastopt updates "
                         "in place a parameter and tensors laid out as it is (make them with "
                         "torch.empty_like(param) or .contiguous(memory_format=...) of the parameter's format)")


def flat(t: torch.Tensor) -> torch.Tensor:
    """t as the 1-D block of memory it fills (t itself when contiguous; is_dense(t) must hold)."""
    if t.is_contiguous():
        return t
    return t.as_strided((t.numel(),), (1,))


def _check_kind(t: torch.Tensor, name: str) -> None:
    """check_tensor's layout, device and dtype rules beyond the common case (raises, or returns for a tensor
    the kernels take: a dense CUDA tensor of a CUDA dtype when fastopt has a usable CUDA backend)."""
    if t.layout != torch.strided:
        raise NotImplementedError(f"{name} is a {t.layout} tensor; fastopt's kernels take dense tensors "
                                  "(sparse gradients are not supported)")
    dtype = t.dtype
    if t.is_cpu:
        extra = " (float16 and bfloat16: fastopt.torch.SGD, Adagrad, RMSprop, Adam and AdamW; bfloat16 also " \
            "NAdam, RAdam, Adamax, Adadelta, ASGD, Rprop and Lion; the other optimizers on CUDA only)" \
            if dtype in HALF_DTYPES else ""
        raise TypeError(f"{name} has dtype {dtype}; fastopt updates float32, float64, complex64 or complex128 "
                        f"tensors on the CPU{extra}")
    if not t.is_cuda:
        raise NotImplementedError(f"{name} is on {t.device}; fastopt's torch optimizers run on CPU and CUDA "
                                  "tensors")
    refusal = _cuda_refusal()
    if refusal is not None:
        raise NotImplementedError(f"{name} is on {t.device}, {refusal}")
    if dtype not in CUDA_DTYPES:
        raise TypeError(f"{name} has dtype {dtype}; fastopt updates float16, bfloat16, float32, float64, complex64 "
                        "or complex128 tensors on CUDA")


def views(tensors: List[torch.Tensor]) -> list:
    """What the kernels get for tensors of one device and dtype (each already passed check_tensor; complex
    ones as their real pairs, torch.view_as_real): for CPU tensors
    writeable NumPy arrays over the tensors' own memory (Tensor.numpy() always shares it; an update into a
    copy would be lost without a word, so the tests check the addresses and that the update lands in the
    tensor); for CUDA tensors the tensors themselves, detached (the same memory). Views already made (a
    the rehearsal's NumPy arrays, a StepPlan's taken arrays) pass through."""
    if type(tensors) is _core._TakenArrays or (tensors and isinstance(tensors[0], np.ndarray)):
        return tensors
    if tensors and tensors[0].is_complex():
        tensors = [torch.view_as_real(t.detach()) for t in tensors]
    if tensors and (tensors[0].is_cuda or tensors[0].dtype == torch.bfloat16):
        # (NumPy has no bfloat16: CPU bfloat16 tensors go to the kernels as tensors, which they read in place)
        return [flat(t.detach() if t.requires_grad else t) for t in tensors]
    try:
        return [flat(t.detach()).numpy() for t in tensors]
    except RuntimeError:  # (.numpy() refuses tensor subclasses: say which, at no cost to the plain path)
        subclass = next((t for t in tensors if type(t) not in (torch.Tensor, torch.nn.Parameter)), None)
        if subclass is None:
            raise
        raise TypeError(f"a {type(subclass).__name__} (a tensor subclass) is among the tensors of a kernel call "
                        "whose parameters are plain tensors; fastopt updates plain parameters with plain "
                        "gradients and state, and DTensor parameters through their local shards") from None


def mark_modified(tensors: List[torch.Tensor]) -> None:
    """The kernels wrote these tensors behind autograd's back: bump their version counters so that
    autograd still detects a graph that saved one of them before the update."""
    if tensors:
        torch.autograd.graph.increment_version(tensors)


def state_tensor(p: torch.Tensor, fill: Optional[float] = 0.0) -> torch.Tensor:
    """A state tensor for parameter `p`: its shape and device, dtype state_dtype(p.dtype), filled with
    `fill` (None: uninitialised)."""
    dtype = state_dtype(p.dtype)
    if fill is None:
        return torch.empty_like(p, dtype=dtype, memory_format=torch.preserve_format)
    return torch.full_like(p, fill, dtype=dtype, memory_format=torch.preserve_format)
