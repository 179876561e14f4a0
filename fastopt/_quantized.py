"""8-bit blockwise optimizer state (issue 18): fastopt.QuantizedState, and the dynamic maps it uses.

The layout is bitsandbytes' (Dettmers et al. 2022, "8-bit Optimizers via Block-wise Quantization"): a
tensor of n values is cut into blocks of 256 consecutive elements (the last may be shorter); block b keeps
one float32 ``absmax[b]`` (max |x| over it), each element one uint8 code, the index of the value of a
256-entry map nearest to x / absmax[b]. The value read back is ``map[code] * absmax[b]``.

The maps are bitsandbytes' dynamic data type (create_dynamic_map): for exponent i = 0..6, the midpoints of
a linear grid over [0.1, 1] (2**i + 1 points signed, 2**(i + 1) + 1 unsigned) scaled by 10**(i - 6), their
negatives for the signed map, plus 0 and 1; sorted. Built in float32 as torch builds them (linspace with
fused multiply-adds), so that they equal bitsandbytes' maps bit for bit: the signed map holds first
moments (exp_avgs), the unsigned map second moments (exp_avg_sqs, max_exp_avg_sqs).
"""

from __future__ import annotations

import math

import numpy as np

BLOCKSIZE = 256


def _linspace_f32(start: float, end: float, steps: int) -> np.ndarray:
    """torch.linspace(start, end, steps) in float32: step in float32; the first half start + i * step, the
    second end - (steps - 1 - i) * step, each one fused multiply-add (one rounding)."""
    start32, end32 = np.float32(start), np.float32(end)
    step = np.float32((end32 - start32) / np.float32(steps - 1))
    i = np.arange(steps, dtype=np.float64)
    first = np.float64(start32) + np.float64(step) * i
    second = np.float64(end32) - np.float64(step) * (steps - 1 - i)
    return np.where(i < steps // 2, first, second).astype(np.float32)  # exact products: one rounding


def dynamic_map(signed: bool) -> np.ndarray:
    """The 256 sorted float32 values of bitsandbytes' dynamic map (signed or unsigned)."""
    values = []
    for i in range(7):
        bounds = _linspace_f32(0.1, 1.0, (2 ** i if signed else 2 ** (i + 1)) + 1)
        means = (bounds[:-1] + bounds[1:]) / np.float32(2.0)
        scale = np.float32(10.0 ** (i - 6))
        values.append(scale * means)
        if signed:
            values.append(-scale * means)
    values.append(np.asarray([0.0, 1.0], np.float32))
    out = np.sort(np.concatenate(values).astype(np.float32))
    assert out.size == 256
    out.flags.writeable = False
    return out


SIGNED_MAP = dynamic_map(True)
UNSIGNED_MAP = dynamic_map(False)


def _map(signed: bool) -> np.ndarray:
    return SIGNED_MAP if signed else UNSIGNED_MAP


def zero_code(signed: bool) -> int:
    """The code of 0 in the map."""
    return int(np.flatnonzero(_map(signed) == 0)[0])


def blocks(n: int) -> int:
    return math.ceil(n / BLOCKSIZE)


class QuantizedState:
    """One optimizer state tensor in 8 bits: ``codes`` (uint8, the parameter's shape), ``absmax`` (float32,
    one per block of 256 elements: shape ``(ceil(n / 256),)``) and ``signed`` (True: the signed dynamic map,
    for first moments; False: the unsigned one, for second moments). codes and absmax are NumPy arrays or
    torch CPU tensors; the fused updates (fastopt.adam_ / adamw_) read and write them in place.

    ``QuantizedState.zeros(shape, signed)``, ``QuantizedState.quantize(x, signed)``; ``.dequantize()``
    gives the float32 values; ``.nbytes`` the memory it holds."""

    __slots__ = ("codes", "absmax", "signed")
    blocksize = BLOCKSIZE

    def __init__(self, codes, absmax, signed: bool):
        if not isinstance(signed, (bool, np.bool_)):
            raise TypeError(f"signed must be True or False, got {signed!r}")
        self.codes, self.absmax, self.signed = codes, absmax, bool(signed)

    @classmethod
    def zeros(cls, shape, signed: bool = True) -> "QuantizedState":
        shape = (shape,) if isinstance(shape, (int, np.integer)) else tuple(shape)
        n = int(np.prod(shape, dtype=np.int64))
        return cls(np.full(shape, zero_code(signed), np.uint8), np.zeros(blocks(n), np.float32), signed)

    @classmethod
    def quantize(cls, x, signed: bool = True) -> "QuantizedState":
        """x (a float32 array) in 8 bits: absmax per block and nearest codes (fastopt.quantize_blockwise)."""
        from fastopt import _core

        x = np.asarray(x)
        state = cls(np.empty(x.shape, np.uint8), np.empty(blocks(x.size), np.float32), signed)
        _core._quantize_blockwise(x, state.codes, state.absmax, _map(state.signed))
        return state

    def dequantize(self) -> np.ndarray:
        """The float32 values the state stands for: map[code] * absmax of the code's block."""
        from fastopt import _core

        codes = np.asarray(self.codes)
        out = np.empty(codes.shape, np.float32)
        _core._dequantize_blockwise(codes, np.asarray(self.absmax), _map(self.signed), out)
        return out

    def copy(self) -> "QuantizedState":
        """A copy with its own codes and absmax (NumPy copies, or torch clones)."""
        def own(a):
            return a.clone() if hasattr(a, "clone") else np.array(a, copy=True)

        return QuantizedState(own(self.codes), own(self.absmax), self.signed)

    @property
    def shape(self):
        return tuple(self.codes.shape)

    @property
    def nbytes(self) -> int:
        return int(self.codes.nbytes) + int(self.absmax.nbytes)

    def __repr__(self) -> str:
        return (f"QuantizedState(shape={self.shape}, signed={self.signed}, blocks={len(self.absmax)}, "
                f"{type(self.codes).__module__}.{type(self.codes).__name__})")


def quantize_blockwise(x, signed: bool = True) -> QuantizedState:
    """x (float32) in bitsandbytes' blockwise dynamic 8-bit form: QuantizedState.quantize."""
    return QuantizedState.quantize(x, signed)


def dequantize_blockwise(state: QuantizedState) -> np.ndarray:
    """The float32 values of a QuantizedState."""
    if not isinstance(state, QuantizedState):
        raise TypeError(f"state must be a fastopt.QuantizedState, got {type(state).__name__}")
    return state.dequantize()
