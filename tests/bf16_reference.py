"""NumPy reference of bfloat16 storage (issue 18), written from the definitions, not from the C++:

- bfloat16 is the upper 16 bits of a float32; widening appends 16 zero bits.
- round-to-nearest-even: of the two bfloat16 neighbours of x take the nearer, the even one on a tie;
  NaN becomes the quiet NaN 0x7FC0 with x's sign.
- stochastic rounding: add 16 random bits to the low half of x's bit pattern, keep the upper half.
- the random bits (csrc/include/fastopt/bf16.h documents them): the top 16 bits of the i-th output of
  splitmix64 seeded with key = mix64(mix64(mix64(seed) ^ step) ^ (tensor * 4 + operand)).
"""

from __future__ import annotations

import numpy as np

GAMMA = np.uint64(0x9E3779B97F4A7C15)


def widen(bits: np.ndarray) -> np.ndarray:
    """float32 values of bfloat16 bit patterns (uint16)."""
    return (bits.astype(np.uint32) << np.uint32(16)).view(np.float32)


def _nan_bits(u: np.ndarray) -> np.ndarray:
    return ((u >> np.uint64(16)) & np.uint64(0x8000)) | np.uint64(0x7FC0)


def _is_nan(x: np.ndarray) -> np.ndarray:
    return np.isnan(x)


def round_nearest_even(x: np.ndarray) -> np.ndarray:
    """bfloat16 bits (uint16) of float32 x, to nearest, ties to even, by comparing the two neighbours."""
    x = np.asarray(x, np.float32)
    u = x.view(np.uint32).astype(np.uint64)
    low = u & np.uint64(0xFFFF0000)                      # truncated toward zero (same sign)
    half = u & np.uint64(0xFFFF)
    up = (half > 0x8000) | ((half == 0x8000) & (((low >> np.uint64(16)) & np.uint64(1)) == 1))
    out = (low >> np.uint64(16)) + up.astype(np.uint64)  # the next pattern away from zero (may reach Inf)
    out = np.where(_is_nan(x), _nan_bits(u), out)
    return out.astype(np.uint16)


def mix64(z: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser (arithmetic modulo 2**64 in NumPy uint64)."""
    z = np.asarray(z, np.uint64)
    with np.errstate(over="ignore"):
        z = z ^ (z >> np.uint64(30))
        z = z * np.uint64(0xBF58476D1CE4E5B9)
        z = z ^ (z >> np.uint64(27))
        z = z * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return z


def rounding_key(seed: int, step: int, tensor: int, operand: int) -> np.uint64:
    k = mix64(np.uint64(seed))
    k = mix64(k ^ np.uint64(step))
    return mix64(k ^ np.uint64(tensor * 4 + operand))


def random_bits(seed: int, step: int, tensor: int, operand: int, n: int) -> np.ndarray:
    """The 16 random bits of elements 0..n-1 (uint64 holding values < 2**16)."""
    key = rounding_key(seed, step, tensor, operand)
    i = np.arange(1, n + 1, dtype=np.uint64)
    with np.errstate(over="ignore"):
        return mix64(key + i * GAMMA) >> np.uint64(48)


def round_stochastic(x: np.ndarray, bits: np.ndarray) -> np.ndarray:
    """bfloat16 bits of float32 x rounded with the given 16 random bits per element."""
    x = np.asarray(x, np.float32)
    u = x.view(np.uint32).astype(np.uint64)
    out = ((u + bits) >> np.uint64(16)) & np.uint64(0xFFFF)
    out = np.where(_is_nan(x), _nan_bits(u), out)
    return out.astype(np.uint16)


def adam64(p, g, m, v, vmax, *, lr, beta1, beta2, eps, weight_decay, amsgrad, maximize, decoupled, step):
    """One Adam/AdamW step in float64 from DESIGN.md's formulas; returns new (p, m, v, vmax)."""
    p, g, m, v = (np.asarray(a, np.float64) for a in (p, g, m, v))
    if maximize:
        g = -g
    if decoupled:
        p = p * (1 - lr * weight_decay)
    else:
        g = g + weight_decay * p
    m = beta1 * m + (1 - beta1) * g
    v = beta2 * v + (1 - beta2) * g * g
    second = v
    if amsgrad:
        vmax = np.maximum(np.asarray(vmax, np.float64), v)
        second = vmax
    denom = np.sqrt(second) / np.sqrt(1 - beta2 ** step) + eps
    p = p - (lr / (1 - beta1 ** step)) * m / denom
    return p, m, v, vmax


def assert_rounded_stochastically(params, wide_params, param_dtype, state, wide_state, state_dtype, seed, step, sizes):
    """Each tensor k of an update's written arrays is its float32 witness rounded stochastically with the bits
    of (seed, step, k, operand), or equal to it bit for bit where stored in float32. params / wide_params: lists of
    arrays; state / wide_state: a list per state operand in kernel order (None: not in use, keeping its number).
    Rounding operands: 0 the params, then the state operands from 1."""
    for k, n in enumerate(sizes):
        written = [(0, params, wide_params, param_dtype)]
        written += [(j + 1, got, want, state_dtype) for j, (got, want) in enumerate(zip(state, wide_state))
                    if got is not None]
        for operand, got, want, dtype in written:
            if np.dtype(dtype) == np.float32:
                assert np.array_equal(got[k].view(np.uint32), want[k].view(np.uint32)), (step, k, operand)
            else:
                expected = round_stochastic(want[k], random_bits(seed, step, k, operand, n))
                assert np.array_equal(np.asarray(got[k]).view(np.uint16), expected), (step, k, operand)
