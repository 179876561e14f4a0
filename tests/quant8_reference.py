"""NumPy reference of blockwise dynamic 8-bit quantisation (issue 18), written from Dettmers et al. 2022,
"8-bit Optimizers via Block-wise Quantization", not from the C++:

- a tensor is cut into blocks of 256 consecutive elements (the last may be shorter);
- each block keeps N = max |x| over it (its absmax), and each element the index of the map value nearest
  to x / N (the first such index when two are equally near: an argmin over the map);
- a value is read back as map[code] * N; a block of zeros reads back as zeros.

The maps are data (bitsandbytes' dynamic maps, fastopt.QuantizedState's SIGNED_MAP / UNSIGNED_MAP); this
module takes them as arguments.
"""

from __future__ import annotations

import numpy as np

BLOCK = 256


def quantize(x: np.ndarray, qmap: np.ndarray):
    """(codes uint8 of x's shape, absmax float32 per block) of float32 x."""
    flat = np.asarray(x, np.float32).ravel()
    codes = np.empty(flat.size, np.uint8)
    absmax = np.zeros((flat.size + BLOCK - 1) // BLOCK, np.float32)
    for b in range(absmax.size):
        block = flat[b * BLOCK:(b + 1) * BLOCK]
        top = np.float32(np.abs(block).max())
        absmax[b] = top
        normal = block / top if top > 0 else np.zeros_like(block)
        codes[b * BLOCK:(b + 1) * BLOCK] = np.argmin(np.abs(normal[:, None].astype(np.float64) - qmap[None, :]), axis=1)
    return codes.reshape(np.shape(x)), absmax


def dequantize(codes: np.ndarray, absmax: np.ndarray, qmap: np.ndarray) -> np.ndarray:
    flat = np.asarray(codes).ravel()
    scale = np.repeat(absmax, BLOCK)[:flat.size]
    return (qmap[flat] * scale).astype(np.float32).reshape(np.shape(codes))


def dynamic_map_float64(signed: bool) -> np.ndarray:
    """The dynamic map from its definition, in float64 (fastopt's float32 map is within an ulp of it): for
    i = 0..6 the midpoints of 2**i (signed) or 2**(i+1) (unsigned) equal steps of [0.1, 1], times 10**(i-6);
    their negatives when signed; 0 and 1."""
    values = [0.0, 1.0]
    for i in range(7):
        bounds = np.linspace(0.1, 1.0, (2 ** i if signed else 2 ** (i + 1)) + 1)
        means = (bounds[:-1] + bounds[1:]) / 2 * 10.0 ** (i - 6)
        values += list(means) + (list(-means) if signed else [])
    return np.sort(np.asarray(values))
