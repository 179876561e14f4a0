"""Fused linear + softmax cross-entropy: the loss of ``hidden @ weight.T + bias`` and its gradients, without
ever holding the (N, V) logits.

The rows are taken ``chunk_rows`` at a time. For each chunk, the logits go into ONE chunk buffer reused for
every chunk, ``fastopt.softmax_cross_entropy`` turns them into their gradient in place (``out=chunk``), and
the two products of the backward pass consume it at once::

    dhidden[chunk] = dlogits @ weight          dweight += dlogits.T @ hidden[chunk]        dbias += sum(dlogits)

so the extra memory is one chunk of logits (plus, for NumPy and CuPy, which have no ``C += A @ B``, a block of
dweight's accumulation of an eighth of the chunk, or one row of D). The products are the arrays' own
framework's (NumPy's matmul and its BLAS, torch, CuPy): this module holds no math, only the order of the work.

reduction="mean" divides by the total weight of the counted rows of ALL chunks (torch's weighted mean): that
total is computed first, every chunk runs with reduction="sum", and the gradients are scaled by 1 / total once
at the end. The chunks run in row order and the chunk size depends only on N, V, D and the dtype (never on the
thread count or the machine), so fastopt's side of the result does not depend on threads; whether a BLAS
product does is the BLAS's business (they split the output between threads, not the sums, in practice).
"""

from __future__ import annotations

import math
import numbers
from typing import Optional

import numpy as np

from fastopt import _core

#: Bytes of logits a default chunk aims at: about the size of a last-level cache of tens of MiB, and enough
#: rows that the three products run at about the speed of one unchunked product (measured on a 2-core AVX-512
#: machine, 4096 x 768 -> 32000 float32: 1.09x their unchunked time at 256 rows, 1.01x at 512). 448 rows at
#: V = 32000 float32: with NumPy's accumulation block (an eighth of the chunk) under an eighth of the 4096 x
#: 32000 logits. A fixed number, not the machine's cache size, so that results are the same everywhere.
_CHUNK_BYTES = 56 << 20
_MIN_ROWS = 64
_REDUCTIONS = ("mean", "sum", "none")


def default_chunk_rows(n: int, v: int, itemsize: int) -> int:
    """The rows per chunk when chunk_rows is None: about _CHUNK_BYTES of logits, at least _MIN_ROWS rows
    (rounded down to a multiple of 64, the BLAS's blocking, when there are 128 or more), at most N."""
    rows = max(_MIN_ROWS, _CHUNK_BYTES // max(1, v * itemsize))
    rows = rows // 64 * 64 if rows >= 128 else rows
    return max(1, min(n, rows))


# --- frameworks -----------------------------------------------------------------------------------------

class _Framework:
    """What the loop needs from an array library: allocation, products into a given output, accumulation."""

    name = "?"

    def owns(self, a) -> bool:
        raise NotImplementedError


class _NumpyLike(_Framework):
    """NumPy on the CPU and CuPy on a GPU: the same array API (matmul with out=, in-place ufuncs)."""

    def __init__(self, xp, name: str, array_type):
        self.xp, self.name, self.array_type = xp, name, array_type

    def owns(self, a) -> bool:
        return isinstance(a, self.array_type)

    def float_dtype(self, a) -> Optional[str]:
        return a.dtype.name if a.dtype.name in ("float32", "float64") else None

    def int_dtype(self, a) -> Optional[str]:
        return a.dtype.name if a.dtype.name in ("int32", "int64") else None

    def dtype_name(self, a) -> str:
        return a.dtype.name

    def device(self, a):
        return getattr(a, "device", None) if self.name == "cupy" else "cpu"

    def on_cpu(self, a) -> bool:
        return self.name == "numpy"

    def contiguous(self, a) -> bool:
        return bool(a.flags.c_contiguous)

    def writable(self, a) -> bool:
        return bool(getattr(a.flags, "writeable", True))

    def byte_range(self, a):
        start = a.__array_interface__["data"][0] if self.name == "numpy" else a.data.ptr
        return start, start + a.nbytes

    def empty(self, shape, like):
        return self.xp.empty(shape, dtype=like.dtype)

    def zeros(self, shape, like):
        return self.xp.zeros(shape, dtype=like.dtype)

    def first_bad_label(self, labels, v: int, ignore_index: int):
        xp = self.xp
        bad = (labels != ignore_index) & ((labels < 0) | (labels >= v))
        where = xp.flatnonzero(bad)
        if where.size == 0:
            return None
        i = int(where[0])
        return i, int(labels[i])

    def counted_weight(self, labels, ignore_index: int, weight_classes):
        """The weight of the counted rows (their number without class weights), in float64."""
        counted = labels != ignore_index
        if weight_classes is None:
            return self._scalar(counted.sum(dtype=self.xp.float64))
        return self._scalar(weight_classes[labels[counted]].sum(dtype=self.xp.float64))

    def _scalar(self, x):
        return float(x) if self.name == "numpy" else x  # a CuPy 0-d array stays on the device

    def logits_into(self, out, h, weight, bias) -> None:
        self.xp.matmul(h, weight.T, out=out)
        if bias is not None:
            out += bias

    def matmul_into(self, out, a, b) -> None:
        self.xp.matmul(a, b, out=out)

    def accumulate_product(self, out, a, b, scratch) -> None:
        """out += a @ b without an a @ b the size of out: in blocks of out's rows through `scratch`."""
        block = scratch.shape[0]
        for start in range(0, out.shape[0], block):
            stop = min(start + block, out.shape[0])
            part = scratch[: stop - start]
            self.xp.matmul(a[start:stop], b, out=part)
            out[start:stop] += part

    def scratch(self, rows: int, v: int, d: int, like):
        # An eighth of the chunk's elements (the products stay large: 2,333 rows of D = 768 for the default
        # chunk at V = 32000), and at least one row of D.
        block = max(1, min(v, (rows * v) // (8 * max(1, d))))
        return self.xp.empty((block, d), dtype=like.dtype)

    def add_column_sums(self, out, chunk, first: bool) -> None:
        if first:
            self.xp.sum(chunk, axis=0, out=out)
        else:
            out += chunk.sum(axis=0)

    def scale(self, a, s) -> None:
        a *= s


class _Torch(_Framework):
    name = "torch"

    def __init__(self, torch):
        self.torch = torch

    def owns(self, a) -> bool:
        return isinstance(a, self.torch.Tensor)

    def float_dtype(self, a) -> Optional[str]:
        t = self.torch
        return {t.float32: "float32", t.float64: "float64"}.get(a.dtype)

    def int_dtype(self, a) -> Optional[str]:
        t = self.torch
        return {t.int32: "int32", t.int64: "int64"}.get(a.dtype)

    def dtype_name(self, a) -> str:
        return str(a.dtype).replace("torch.", "")

    def device(self, a):
        return a.device

    def on_cpu(self, a) -> bool:
        return a.device.type == "cpu"

    def contiguous(self, a) -> bool:
        return a.is_contiguous() and a.layout == self.torch.strided

    def writable(self, a) -> bool:
        return not a.is_inference() or self.torch.is_inference_mode_enabled()

    def byte_range(self, a):
        start = a.data_ptr()
        return start, start + a.numel() * a.element_size()

    def empty(self, shape, like):
        return self.torch.empty(shape, dtype=like.dtype, device=like.device)

    def zeros(self, shape, like):
        return self.torch.zeros(shape, dtype=like.dtype, device=like.device)

    def first_bad_label(self, labels, v: int, ignore_index: int):
        bad = (labels != ignore_index) & ((labels < 0) | (labels >= v))
        where = self.torch.nonzero(bad)
        if where.numel() == 0:
            return None
        i = int(where[0, 0])
        return i, int(labels[i])

    def counted_weight(self, labels, ignore_index: int, weight_classes):
        counted = labels != ignore_index
        if weight_classes is None:
            total = counted.sum(dtype=self.torch.float64)
        else:
            total = weight_classes[labels[counted]].sum(dtype=self.torch.float64)
        return float(total) if total.device.type == "cpu" else total

    def logits_into(self, out, h, weight, bias) -> None:
        if bias is None:
            self.torch.matmul(h, weight.T, out=out)
        else:
            self.torch.addmm(bias, h, weight.T, out=out)

    def matmul_into(self, out, a, b) -> None:
        self.torch.matmul(a, b, out=out)

    def accumulate_product(self, out, a, b, scratch) -> None:
        out.addmm_(a, b)  # BLAS with beta = 1: no temporary

    def scratch(self, rows: int, v: int, d: int, like):
        return None

    def add_column_sums(self, out, chunk, first: bool) -> None:
        if first:
            self.torch.sum(chunk, dim=0, out=out)
        else:
            out.add_(chunk.sum(dim=0))

    def scale(self, a, s) -> None:
        a.mul_(s)


def _framework_of(a):
    """The framework of a (NumPy, torch or CuPy) or None, importing none that the caller did not use."""
    if isinstance(a, np.ndarray):
        return _NumpyLike(np, "numpy", np.ndarray)
    module = type(a).__module__.split(".")[0]
    if module == "torch":
        import torch

        if isinstance(a, torch.Tensor):
            return _Torch(torch)
    if module == "cupy":
        import cupy

        if isinstance(a, cupy.ndarray):
            return _NumpyLike(cupy, "cupy", cupy.ndarray)
    return None


def _type_name(a) -> str:
    return f"{type(a).__module__}.{type(a).__qualname__}"


# --- validation (everything, before anything is written) ---------------------------------------------------

def _check_operand(fw, a, name: str, ref, ref_name: str, *, integer: bool = False, writable: bool = False):
    """a is an array of ref's framework and device, dense and C-contiguous; returns its dtype name."""
    if not fw.owns(a):
        raise TypeError(f"{name} is a {_type_name(a)} but {ref_name} is a {_type_name(ref)}: pass arrays of "
                        f"one framework")
    if fw.device(a) != fw.device(ref):
        raise ValueError(f"{name} is on {fw.device(a)} but {ref_name} is on {fw.device(ref)}")
    if fw.name == "torch" and a.requires_grad:
        raise TypeError(f"{name} requires grad: fastopt.linear_cross_entropy is not recorded by autograd; use "
                        f"fastopt.torch.linear_cross_entropy (a torch.autograd.Function), or pass {name}.detach()")
    dtype = fw.int_dtype(a) if integer else fw.float_dtype(a)
    if dtype is None:
        wanted = "an int32 or int64" if integer else "a float32 or float64"
        raise TypeError(f"{name} must be {wanted} array, got dtype {fw.dtype_name(a)}")
    if not fw.contiguous(a):
        raise ValueError(f"{name} must be C-contiguous (dense, row-major): pass a contiguous copy")
    if writable and not fw.writable(a):
        raise ValueError(f"{name} is read-only")
    return dtype


def _shape(a) -> tuple:
    return tuple(int(s) for s in a.shape)


def _check_out(fw, out, name: str, shape: tuple, dtype: str, hidden, inputs: dict):
    _check_operand(fw, out, name, hidden, "hidden", writable=True)
    if fw.float_dtype(out) != dtype:
        raise TypeError(f"{name} has dtype {fw.dtype_name(out)} but hidden has {dtype}")
    if _shape(out) != shape:
        raise ValueError(f"{name} has shape {_shape(out)}, expected {shape}")
    lo, hi = fw.byte_range(out)
    for other_name, other in inputs.items():
        if other is None:
            continue
        olo, ohi = fw.byte_range(other)
        if lo < ohi and olo < hi:
            raise ValueError(f"{name} shares memory with {other_name}")


def _check_scalars(dtype: str, ignore_index, label_smoothing, reduction, z_loss, chunk_rows):
    if not isinstance(reduction, str) or reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
    if chunk_rows is not None:
        if isinstance(chunk_rows, bool) or not isinstance(chunk_rows, numbers.Integral):
            raise TypeError(f"chunk_rows must be an int or None, got {type(chunk_rows).__name__}")
        if chunk_rows < 1:
            raise ValueError(f"chunk_rows must be at least 1, got {chunk_rows}")
    # The cross-entropy's own rules for ignore_index, label_smoothing and z_loss (types, ranges, what fits the
    # dtype), checked by the kernel itself on a one-element dry run: the same verdicts and messages.
    probe = np.zeros((1, 1), dtype=dtype)
    _core.softmax_cross_entropy(probe, np.zeros(1, np.int64), ignore_index=ignore_index,
                                label_smoothing=label_smoothing, reduction="sum", z_loss=z_loss, out=probe)


# --- the loop -------------------------------------------------------------------------------------------

def linear_cross_entropy(hidden, weight, labels, *, bias=None, weight_classes=None, ignore_index=-100,
                         label_smoothing=0.0, reduction="mean", z_loss=0.0, chunk_rows=None,
                         out_dhidden=None, out_dweight=None):
    """Softmax cross-entropy of the logits ``hidden @ weight.T + bias`` and its gradients, chunk by chunk of
    rows, never holding the (N, V) logits.

    hidden (N, D) and weight (V, D) (torch.nn.Linear's layout) float32/float64, labels (N,) int32/int64,
    bias (V,) and the class weights weight_classes (V,) optional; all C-contiguous arrays of one framework
    (NumPy, torch CPU/CUDA tensors, CuPy) and one device. The numbers are
    ``F.cross_entropy(hidden @ weight.T + bias, labels, weight=weight_classes, ignore_index=...,
    label_smoothing=..., reduction=...)``'s, plus ``z_loss * logsumexp(row)**2`` per counted row as in
    :func:`fastopt.softmax_cross_entropy`.

    Returns ``(loss, dhidden, dweight)``, and ``dbias`` after them when bias is given: the gradients of the
    returned loss, or for reduction="none" (loss: the (N,) per-row losses) of their sum, as
    softmax_cross_entropy's dlogits. The loss is a Python float on the CPU ("mean", "sum"), a 0-d device
    array on CUDA. out_dhidden (N, D) and out_dweight (V, D) receive the gradients when given (otherwise they
    are new arrays of the inputs' framework).

    Extra memory: one chunk of chunk_rows x V logits (default: about 56 MiB of them, at least 64 rows, at most
    N; :func:`default_chunk_rows`), for NumPy/CuPy one block of dweight's accumulation of at most an eighth
    as many elements (at least one row of D), and O(N + V) for the labels and the column sums. The result depends on
    chunk_rows (the order dweight is summed in), not on the thread count.

    Everything is checked before anything is written: a bad argument raises TypeError/ValueError naming it,
    a label outside [0, V) that is not ignore_index an IndexError naming its row and value.
    """
    fw = _framework_of(hidden)
    if fw is None:
        raise TypeError(f"hidden must be a NumPy array, a torch tensor or a CuPy array, got {_type_name(hidden)}")
    dtype = _check_operand(fw, hidden, "hidden", hidden, "hidden")
    if hidden.ndim != 2:
        raise ValueError(f"hidden must be 2-d (N, D), got shape {_shape(hidden)}")
    n, d = _shape(hidden)
    _check_operand(fw, weight, "weight", hidden, "hidden")
    if fw.float_dtype(weight) != dtype:
        raise TypeError(f"weight has dtype {fw.dtype_name(weight)} but hidden has {dtype}")
    if weight.ndim != 2:
        raise ValueError(f"weight must be 2-d (V, D), got shape {_shape(weight)}")
    v = int(weight.shape[0])
    if int(weight.shape[1]) != d:
        raise ValueError(f"weight has shape {_shape(weight)} but hidden has D = {d} features: weight must be "
                         f"(V, {d}) (torch.nn.Linear's layout)")
    if v == 0:
        raise ValueError("weight has V = 0 classes")
    _check_operand(fw, labels, "labels", hidden, "hidden", integer=True)
    if _shape(labels) != (n,):
        raise ValueError(f"labels has shape {_shape(labels)} but hidden has {n} rows")
    for name, vec in (("bias", bias), ("weight_classes", weight_classes)):
        if vec is None:
            continue
        _check_operand(fw, vec, name, hidden, "hidden")
        if fw.float_dtype(vec) != dtype:
            raise TypeError(f"{name} has dtype {fw.dtype_name(vec)} but hidden has {dtype}")
        if _shape(vec) != (v,):
            raise ValueError(f"{name} has shape {_shape(vec)} but weight has V = {v} classes")
    _check_scalars(dtype, ignore_index, label_smoothing, reduction, z_loss, chunk_rows)
    inputs = {"hidden": hidden, "weight": weight, "labels": labels, "bias": bias, "weight_classes": weight_classes}
    if out_dhidden is not None:
        _check_out(fw, out_dhidden, "out_dhidden", (n, d), dtype, hidden, inputs)
    if out_dweight is not None:
        _check_out(fw, out_dweight, "out_dweight", (v, d), dtype, hidden,
                   {**inputs, "out_dhidden": out_dhidden})
    ignore_index = int(ignore_index)
    bad = fw.first_bad_label(labels, v, ignore_index)
    if bad is not None:
        i, value = bad
        raise IndexError(f"labels[{i}] = {value} is out of range for {v} classes (and is not "
                         f"ignore_index={ignore_index})")
    rows = default_chunk_rows(n, v, 4 if dtype == "float32" else 8) if chunk_rows is None else min(int(chunk_rows),
                                                                                                   max(n, 1))
    return _run(fw, hidden, weight, labels, bias, weight_classes, ignore_index, float(label_smoothing), reduction,
                float(z_loss), rows, out_dhidden, out_dweight)


def _run(fw, hidden, weight, labels, bias, weight_classes, ignore_index, label_smoothing, reduction, z_loss, rows,
         out_dhidden, out_dweight, row_scale=None):
    """The chunk loop over checked arguments. row_scale (N,) (fastopt.torch's backward for reduction="none")
    multiplies each row's dlogits before the products: the gradients of sum(row_scale * losses)."""
    n, d = _shape(hidden)
    v = int(weight.shape[0])
    dhidden = fw.empty((n, d), hidden) if out_dhidden is None else out_dhidden
    dweight = fw.empty((v, d), hidden) if out_dweight is None else out_dweight
    dbias = fw.empty((v,), hidden) if bias is not None else None
    losses = fw.empty((n,), hidden) if reduction == "none" else None
    total = 0.0
    chunk_kind = "none" if reduction == "none" else "sum"
    chunk = fw.empty((rows, v), hidden) if n else None
    scratch = fw.scratch(rows, v, d, hidden) if n else None
    for start in range(0, n, rows):
        stop = min(start + rows, n)
        logits = chunk[: stop - start]  # the last chunk: the buffer's first rows (contiguous)
        fw.logits_into(logits, hidden[start:stop], weight, bias)
        loss, _ = _core.softmax_cross_entropy(logits, labels[start:stop], weight=weight_classes,
                                              ignore_index=ignore_index, label_smoothing=label_smoothing,
                                              reduction=chunk_kind, z_loss=z_loss, out=logits)
        if losses is not None:
            losses[start:stop] = loss
        else:
            total = total + loss
        if row_scale is not None:
            logits *= row_scale[start:stop, None]
        fw.matmul_into(dhidden[start:stop], logits, weight)
        if start == 0:
            fw.matmul_into(dweight, logits.T, hidden[start:stop])
        else:
            fw.accumulate_product(dweight, logits.T, hidden[start:stop], scratch)
        if dbias is not None:
            fw.add_column_sums(dbias, logits, first=start == 0)
    del chunk, scratch
    if n == 0:  # no rows: zero gradients (and a loss of 0, or NaN for a mean over nothing)
        dweight[...] = 0
        if dbias is not None:
            dbias[...] = 0
    if reduction == "mean":
        counted = fw.counted_weight(labels, ignore_index, weight_classes)
        if fw.on_cpu(hidden):
            with np.errstate(divide="ignore", invalid="ignore"):
                loss_value = float(np.float64(total) / np.float64(counted))
            # A zero total: with no counted row every gradient is 0 already (torch's too); counted rows of
            # class weight 0 give torch's non-finite gradients.
            nothing_counted = not bool((labels != ignore_index).any())
            scale = 1.0 / counted if counted != 0 else (0.0 if nothing_counted else math.inf)
        else:
            loss_value = total / counted
            scale = 1.0 / counted
        result_loss = loss_value
        for g in (dhidden, dweight, dbias):
            if g is not None:
                fw.scale(g, scale)
    elif reduction == "sum":
        result_loss = float(total) if fw.on_cpu(hidden) else total
    else:
        result_loss = losses
    out = (result_loss, dhidden, dweight)
    return out + (dbias,) if bias is not None else out
