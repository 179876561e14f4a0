"""Weight initialisers of the course notes for NumPy arrays: Xavier/Glorot and Kaiming/He, normal
and uniform, with torch.nn.init's formulas, names and defaults.

Each function fills ``array`` in place (any writeable floating-point array, views included) and
returns it, like torch's ``nn.init.*_``. Random numbers come from ``rng``: a
``numpy.random.Generator``, an int seed, or None for fresh entropy.

Fans follow torch's layout, ``(fan_out, fan_in, *receptive_field)``: for a weight of shape
(out, in, k1, k2...) ``fan_in = in * k1 * k2...`` and ``fan_out = out * k1 * k2...``. A NumPy layer
written ``X @ W`` has ``W`` of shape (in, out): pass its transpose view, ``kaiming_normal_(W.T)``,
which fills ``W`` itself.

    xavier (Glorot & Bengio 2010):  std = gain * sqrt(2 / (fan_in + fan_out))
    kaiming (He et al. 2015):       std = gain / sqrt(fan),  fan = fan_in or fan_out (mode)
    normal: N(0, std^2);  uniform: U(-sqrt(3) * std, sqrt(3) * std), which has the same variance.

With the defaults, xavier_normal_ gives the notes' N(0, 2 / (n_in + n_out)) and kaiming_normal_
the notes' N(0, 2 / n_in) (gain sqrt(2), for ReLU).
"""

from __future__ import annotations

import math
from typing import Optional, Tuple, Union

import numpy as np

__all__ = ["calculate_gain", "fans", "xavier_uniform_", "xavier_normal_", "kaiming_uniform_", "kaiming_normal_"]

RngLike = Union[None, int, np.random.Generator]


def calculate_gain(nonlinearity: str, param: Optional[float] = None) -> float:
    """The recommended gain of a nonlinearity (torch.nn.init.calculate_gain's values)."""
    linear = ("linear", "identity", "conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d",
              "conv_transpose3d", "sigmoid")
    if nonlinearity in linear:
        return 1.0
    if nonlinearity == "tanh":
        return 5.0 / 3
    if nonlinearity == "relu":
        return math.sqrt(2.0)
    if nonlinearity == "leaky_relu":
        slope = 0.01 if param is None else param
        if isinstance(slope, bool) or not isinstance(slope, (int, float)) or not math.isfinite(slope):
            raise ValueError(f"param (the negative slope) must be a finite number, got {param!r}")
        return math.sqrt(2.0 / (1 + slope ** 2))
    if nonlinearity == "selu":
        return 3.0 / 4
    raise ValueError(f"nonlinearity {nonlinearity!r} is not supported")


def fans(shape: Tuple[int, ...]) -> Tuple[int, int]:
    """``(fan_in, fan_out)`` of a weight of this shape, in torch's (out, in, *kernel) layout."""
    if len(shape) < 2:
        raise ValueError(f"fans need an array of at least 2 dimensions, got shape {tuple(shape)}")
    receptive = math.prod(shape[2:])
    return shape[1] * receptive, shape[0] * receptive


def _target(array: np.ndarray) -> np.ndarray:
    if not isinstance(array, np.ndarray):
        raise TypeError(f"array must be a numpy.ndarray, got {type(array).__name__}")
    if not np.issubdtype(array.dtype, np.floating):
        raise TypeError(f"array must have a floating-point dtype, got {array.dtype}")
    if not array.flags.writeable:
        raise ValueError("array is read-only")
    return array


def _generator(rng: RngLike) -> np.random.Generator:
    if rng is None or (isinstance(rng, (int, np.integer)) and not isinstance(rng, bool)):
        return np.random.default_rng(rng)
    if isinstance(rng, np.random.Generator):
        return rng
    raise TypeError(f"rng must be None, an int seed or a numpy.random.Generator, got {type(rng).__name__}")


def _gain(gain: float) -> float:
    if isinstance(gain, bool) or not isinstance(gain, (int, float)) or not math.isfinite(gain) or gain < 0:
        raise ValueError(f"gain must be a finite number >= 0, got {gain!r}")
    return float(gain)


def _fill(array: np.ndarray, std: float, uniform: bool, rng: np.random.Generator) -> np.ndarray:
    if uniform:
        bound = math.sqrt(3.0) * std  # U(-b, b) has variance b^2 / 3 = std^2
        array[...] = rng.uniform(-bound, bound, array.shape)
    else:
        array[...] = rng.normal(0.0, std, array.shape)
    return array


def _xavier(array, gain, rng, uniform):
    array, gain, rng = _target(array), _gain(gain), _generator(rng)
    fan_in, fan_out = fans(array.shape)
    if array.size == 0:
        return array
    return _fill(array, gain * math.sqrt(2.0 / (fan_in + fan_out)), uniform, rng)


def _kaiming(array, a, mode, nonlinearity, rng, uniform):
    array, rng = _target(array), _generator(rng)
    if mode not in ("fan_in", "fan_out"):
        raise ValueError(f"mode must be 'fan_in' or 'fan_out', got {mode!r}")
    fan_in, fan_out = fans(array.shape)
    gain = calculate_gain(nonlinearity, a)
    if array.size == 0:
        return array
    fan = fan_in if mode == "fan_in" else fan_out
    return _fill(array, gain / math.sqrt(fan), uniform, rng)


def xavier_uniform_(array: np.ndarray, gain: float = 1.0, *, rng: RngLike = None) -> np.ndarray:
    """Fills ``array`` from U(-b, b), ``b = gain * sqrt(6 / (fan_in + fan_out))``; returns it."""
    return _xavier(array, gain, rng, uniform=True)


def xavier_normal_(array: np.ndarray, gain: float = 1.0, *, rng: RngLike = None) -> np.ndarray:
    """Fills ``array`` from N(0, std^2), ``std = gain * sqrt(2 / (fan_in + fan_out))``; returns it."""
    return _xavier(array, gain, rng, uniform=False)


def kaiming_uniform_(array: np.ndarray, a: float = 0.0, mode: str = "fan_in", nonlinearity: str = "leaky_relu",
                     *, rng: RngLike = None) -> np.ndarray:
    """Fills ``array`` from U(-b, b), ``b = gain * sqrt(3 / fan)``; ``gain = calculate_gain(nonlinearity, a)``
    (``a``: the negative slope of a leaky ReLU; 0 gives ReLU's sqrt(2)). Returns it."""
    return _kaiming(array, a, mode, nonlinearity, rng, uniform=True)


def kaiming_normal_(array: np.ndarray, a: float = 0.0, mode: str = "fan_in", nonlinearity: str = "leaky_relu",
                    *, rng: RngLike = None) -> np.ndarray:
    """Fills ``array`` from N(0, std^2), ``std = gain / sqrt(fan)``; returns it. Arguments as
    kaiming_uniform_."""
    return _kaiming(array, a, mode, nonlinearity, rng, uniform=False)
