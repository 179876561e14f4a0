"""Type checks of optimizer hyperparameters and step counts, shared by the stateful optimizers
(fastopt.optim) and the torch twins (fastopt.torch).

These say what *kind* of value each hyperparameter is (a real number, a bool, a pair of reals) and name
it when it is not: `lr="fast"` or `lr=np.complex128(1e-3+1j)` is refused with "lr must be a real number",
never with float()'s own message or with the imaginary part dropped. The *ranges* (lr >= 0, 0 <= beta < 1,
eps > 0, the float32 range ...) are the kernels' rules and stay there, in one place: the front-ends check
them by calling the kernel on an empty list.

No torch import here: a torch tensor lr is the twins' business (fastopt.torch._optimizer).
"""

from __future__ import annotations

import contextlib
import math
import numbers
from typing import Any, Dict

import numpy as np

# The kernels take the 1-based step number of an update as a 64-bit integer, so a stored count (the
# steps taken so far) may be at most one less: its next update is then still a valid step number.
MAX_STEP_COUNT = 2**63 - 2

# Flags: a bool (NumPy's too), never a truthy string or number.
BOOL_NAMES = frozenset({"amsgrad", "maximize", "nesterov", "centered", "capturable", "differentiable",
                        "decoupled_weight_decay", "bias_correction", "stochastic_rounding"})
# torch's tri-state options: True, False or None (let torch choose).
OPTIONAL_BOOL_NAMES = frozenset({"foreach", "fused"})
# (beta1, beta2); Rprop's (etaminus, etaplus) and (step_size_min, step_size_max)
PAIR_NAMES = frozenset({"betas", "etas", "step_sizes"})
# Real numbers that may be None (off): LAMB's max_grad_norm.
OPTIONAL_REAL_NAMES = frozenset({"max_grad_norm"})
# Muon's: a triple of reals, a whole number of iterations, None or the name of a rule.
TRIPLE_NAMES = frozenset({"ns_coefficients"})
COUNT_NAMES = frozenset({"ns_steps"})
CHOICE_NAMES = frozenset({"adjust_lr_fn", "state_dtype"})  # (state_dtype: its values checked by its optimizer)
# Everything else a constructor takes (lr, eps, momentum, weight_decay, ...) is a real number.


def describe(value: Any) -> str:
    """The type of a refused value, with the value itself when it is short (for the message)."""
    kind = type(value).__name__
    try:
        text = repr(value)
    except Exception:  # a hostile __repr__ must not replace the refusal
        return kind
    return f"{kind} {text}" if len(text) <= 40 else kind


def is_bool(value: Any) -> bool:
    return isinstance(value, (bool, np.bool_))


def real(value: Any, name: str) -> float:
    """`value` as a Python float, or TypeError naming `name` when it is not a real number: strings,
    bools, complex numbers (Python's, NumPy's, complex arrays), and objects float() refuses. A value
    too large for a float is a ValueError. Finiteness and ranges are the kernels' to check."""
    if isinstance(value, float):  # the common case first
        return value
    if (is_bool(value) or isinstance(value, (str, bytes, complex, np.complexfloating))
            or (isinstance(value, np.ndarray) and (value.dtype.kind not in "iuf" or value.size != 1))
            or (not isinstance(value, numbers.Real) and _is_complex_tensor(value))):
        raise TypeError(f"{name} must be a real number, got {describe(value)}")
    try:
        return float(value)
    except OverflowError:
        raise ValueError(f"{name} must be a real number within the float range, got {describe(value)}") from None
    except Exception as error:  # whatever __float__ raised; BaseExceptions (KeyboardInterrupt) go through
        raise TypeError(f"{name} must be a real number, got {describe(value)}") from error


def _is_complex_tensor(value: Any) -> bool:
    """True for a tensor-like object of a complex dtype (torch's is_complex(), or a NumPy-like dtype)."""
    try:  # (a hostile object's attributes may raise anything: then it is not a complex tensor)
        is_complex = getattr(value, "is_complex", None)
        if callable(is_complex):
            return bool(is_complex())
        return getattr(getattr(value, "dtype", None), "kind", None) == "c"
    except Exception:
        return False


def flag(value: Any, name: str) -> None:
    if not is_bool(value):
        raise TypeError(f"{name} must be a bool, got {describe(value)}")


def optional_flag(value: Any, name: str) -> None:
    if value is not None and not is_bool(value):
        raise TypeError(f"{name} must be True, False or None, got {describe(value)}")


def pair(value: Any, name: str, element=real) -> None:
    if not isinstance(value, (tuple, list)):
        raise TypeError(f"{name} must be a pair ({name}[0], {name}[1]) of real numbers, got {describe(value)}")
    if len(value) != 2:
        raise ValueError(f"{name} must be a pair ({name}[0], {name}[1]), got {len(value)} values")
    for k, item in enumerate(value):
        element(item, f"{name}[{k}]")


def triple(value: Any, name: str, element=real) -> None:
    if not isinstance(value, (tuple, list)):
        raise TypeError(f"{name} must be a tuple of 3 real numbers, got {describe(value)}")
    if len(value) != 3:
        raise ValueError(f"{name} must hold exactly 3 values, got {len(value)}")
    for k, item in enumerate(value):
        element(item, f"{name}[{k}]")


def count(value: Any, name: str) -> int:
    """A whole number (Python's or NumPy's integer, not a bool) as an int, or TypeError naming `name`."""
    if is_bool(value) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {describe(value)}")
    return int(value)


def check_hyperparameters(hyper: Dict[str, Any], where: str = "", lr=None, element=real) -> None:
    """Checks the kind of every entry of `hyper` (a constructor's defaults or a param group) except
    "params"; `where` prefixes the name ("param group 1: "). `lr` checks the lr (by default a real
    number); `element` checks a real number (the twins also take one-element tensors).
    (Run for every group of every step: the common values, a float and a bool, pass without a call.)"""
    for name, value in hyper.items():
        kind = type(value)
        if name in BOOL_NAMES:
            if kind is bool:
                continue
            flag(value, f"{where}{name}")
        elif name == "params":
            continue
        elif kind is float or (kind is int and -1e308 <= value <= 1e308):  # (a bool's type is bool, not int)
            if name in _NOT_REAL_NAMES:
                _check_other(name, value, where, lr, element)
        else:
            _check_other(name, value, where, lr, element)


_NOT_REAL_NAMES = OPTIONAL_BOOL_NAMES | PAIR_NAMES | OPTIONAL_REAL_NAMES | TRIPLE_NAMES | COUNT_NAMES | CHOICE_NAMES


def _check_other(name: Any, value: Any, where: str, lr, element) -> None:
    label = f"{where}{name}"
    if name == "lr":
        (lr or element)(value, label)
    elif name in OPTIONAL_BOOL_NAMES:
        optional_flag(value, label)
    elif name in PAIR_NAMES:
        pair(value, label, element)
    elif name in OPTIONAL_REAL_NAMES:
        if value is not None:
            element(value, label)
    elif name in TRIPLE_NAMES:
        triple(value, label, element)
    elif name in COUNT_NAMES:
        count(value, label)
    elif name in CHOICE_NAMES:
        if value is not None and not isinstance(value, str):
            raise TypeError(f"{label} must be None or a string, got {describe(value)}")
    elif isinstance(name, str):
        element(value, label)


def step_count(value: Any, name: str) -> int:
    """A stored step count (the updates taken so far) as an int: a whole number in [0, MAX_STEP_COUNT].
    TypeError for what is not an integer, ValueError out of range."""
    if is_bool(value) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int (a count of steps), got {describe(value)}")
    value = int(value)
    if not 0 <= value <= MAX_STEP_COUNT:
        raise ValueError(f"{name} is {value}, not a step count in [0, 2**63 - 2] (the kernels number "
                         "steps with 64-bit integers)")
    return value


def float_step_count(value: float, name: str) -> int:
    """step_count for a count kept as a float (torch's 0-d step tensors): finite and whole too."""
    if not (math.isfinite(value) and value == int(value)):
        raise ValueError(f"{name} is {value}, not a whole number of steps")
    return step_count(int(value), name)


def prefixed(error: Exception, prefix: str, as_value_error: bool = False) -> Exception:
    """`error` (a TypeError or ValueError) with `prefix` ("param group 1") in front of its message, so that
    it says where the refused value is; as_value_error: either becomes a ValueError (loading refuses with
    ValueError whatever the kind of fault). A subclass, which may not take a message alone, is returned
    as it is."""
    if type(error) not in (TypeError, ValueError):
        return error
    kind = ValueError if as_value_error else type(error)
    renamed = kind(f"{prefix}: {error}")
    renamed.__cause__ = error
    return renamed


@contextlib.contextmanager
def named(prefix: str, as_value_error: bool = False):
    """Raises a TypeError / ValueError from inside as prefixed(error, prefix, as_value_error)."""
    try:
        yield
    except (TypeError, ValueError) as error:
        raise prefixed(error, prefix, as_value_error)
