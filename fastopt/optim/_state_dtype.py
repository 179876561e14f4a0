"""The state precision of the optimizers (``state_dtype=``, issue 18). Adam/AdamW: None (the default: state of the params'
dtype, as torch keeps it; float32 for float16 params, the only state their kernels keep), "float32" (float32
state, for float32, float16 or bfloat16 params), "bfloat16" (exp_avg,
exp_avg_sq and max_exp_avg_sq as ml_dtypes.bfloat16 arrays, for float32 or bfloat16 params: half the memory of
float32; the update runs in float32 and rounds back), "int8" (8-bit blockwise state, fastopt.QuantizedState,
for float32 params of at least MIN_8BIT_SIZE elements; smaller ones keep float32 state, as bitsandbytes' 8-bit
optimizers do). ``stochastic_rounding=True`` rounds every bfloat16 value written (bfloat16 params, bfloat16
state) stochastically. SGD, Adagrad and RMSprop (CompactState): None (their default: float32 state for
16-bit params, the params' dtype otherwise), "float32" or "bfloat16", the same rounding. ml_dtypes is
imported only when bfloat16 is asked for or met."""

from __future__ import annotations

import numpy as np

STATE_DTYPES = ("float32", "bfloat16", "int8")
#: params with fewer elements keep float32 state under state_dtype="int8" (bitsandbytes' min_8bit_size)
MIN_8BIT_SIZE = 4096


def check_state_dtype(value, allowed=STATE_DTYPES):
    """state_dtype: None or one of `allowed` (ValueError naming it otherwise)."""
    if value is not None and (not isinstance(value, str) or value not in allowed):
        adam = "int8" in allowed
        default = "the params' dtype" if adam else "float32 for 16-bit params, else the params' dtype"
        also = "" if adam else " (8-bit state is Adam's and AdamW's)"
        raise ValueError(f"state_dtype must be None ({default}) or one of "
                         f"{', '.join(repr(a) for a in allowed)}, got {value!r}{also}")
    return value


def bfloat16() -> np.dtype:
    """NumPy's dtype of ml_dtypes.bfloat16."""
    import ml_dtypes  # (a dependency of fastopt; imported here so that float32 users never load it)

    return np.dtype(ml_dtypes.bfloat16)


def is_bfloat16(dtype) -> bool:
    """True for ml_dtypes' bfloat16 (checked by name: nothing to import)."""
    return isinstance(dtype, np.dtype) and dtype.name == "bfloat16"


class StatePrecision:
    """An optimizer's choice of state dtype and rounding, and the dtype each parameter's state gets."""

    def __init__(self, state_dtype, stochastic_rounding, seed, allowed=STATE_DTYPES):
        self.name = check_state_dtype(state_dtype, allowed)
        if not isinstance(stochastic_rounding, (bool, np.bool_)):
            raise TypeError(f"stochastic_rounding must be True or False, got {stochastic_rounding!r}")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= int(seed) < 2**64:
            raise ValueError(f"seed must be an int with 0 <= seed < 2**64, got {seed!r}")
        self.stochastic_rounding = bool(stochastic_rounding)
        self.seed = int(seed)
        # the dtype every state array gets (None: the params' dtype; int8's small params: float32 = theirs)
        self.dtype = bfloat16() if self.name == "bfloat16" else np.dtype(np.float32) if self.name == "float32" else None

    def quantizes(self, p) -> bool:
        """True when params p keeps 8-bit state (state_dtype="int8" and at least MIN_8BIT_SIZE elements)."""
        return self.name == "int8" and p.size >= MIN_8BIT_SIZE

    def check_param(self, p: np.ndarray, where: str) -> None:
        """ValueError unless params p can keep this state (int8: float32 params; float32: float32, float16
        or bfloat16 params; bfloat16: float32 or bfloat16 params)."""
        if self.name == "int8" and p.dtype != np.float32:
            raise ValueError(f"state_dtype='int8' keeps the state of float32 params; {where} has dtype {p.dtype}")
        takes = {"float32": (np.float32, np.float16), "bfloat16": (np.float32,)}.get(self.name)
        if takes is not None and not (p.dtype in takes or is_bfloat16(p.dtype)):
            also = ", float16" if self.name == "float32" else ""
            raise ValueError(f"state_dtype={self.name!r} keeps the state of float32{also} or bfloat16 params; "
                             f"{where} has dtype {p.dtype} (state_dtype=None keeps state of the params' dtype, "
                             "float32 for float16)")

    def check_rounding(self, params) -> None:
        """ValueError when stochastic rounding has no bfloat16 values to round (no bfloat16 state or params)."""
        writes_bfloat16 = is_bfloat16(self.dtype) or any(is_bfloat16(p.dtype) for p in params)
        if self.stochastic_rounding and not writes_bfloat16:
            raise ValueError("stochastic_rounding=True rounds bfloat16 values, but with state_dtype="
                             f"{self.name!r} and no bfloat16 params nothing written is bfloat16")

    def of(self, p: np.ndarray) -> np.dtype:
        """The dtype of params p's state arrays (p passed check_param when it joined, and at each step)."""
        if self.name == "int8" or self.dtype is None:
            # (float16 params: float32, the only state their kernels keep; float16 moments would underflow)
            return np.dtype(np.float32) if p.dtype == np.float16 else p.dtype
        return self.dtype

    def kernel_kwargs(self, param_dtype):
        """The rounding arguments of a kernel call over params of param_dtype (stochastic rounding only
        where the call writes bfloat16 values: the kernels refuse it for float32 ones)."""
        writes_bfloat16 = is_bfloat16(param_dtype) or is_bfloat16(self.dtype)
        return dict(stochastic_rounding=True, seed=self.seed) if self.stochastic_rounding and writes_bfloat16 else {}


class CompactState:
    """``state_dtype=`` (None, "float32", "bfloat16"), ``stochastic_rounding=`` and ``seed=`` for SGD,
    Adagrad and RMSprop (a mixin before Optimizer; Adam keeps its own, whose default follows the params and
    which has "int8"). None keeps the optimizer's default state dtype (float32 for 16-bit params)."""

    def _set_precision(self, state_dtype, stochastic_rounding, seed):
        self._precision = StatePrecision(state_dtype, stochastic_rounding, seed, allowed=("float32", "bfloat16"))

    def _check_param_dtype(self, p, where):
        self._precision.check_param(p, where)

    def _state_dtype(self, p):
        return super()._state_dtype(p) if self._precision.name is None else self._precision.of(p)

    def _rounding(self, params):
        """The stochastic rounding arguments of a kernel call over `params`."""
        return self._precision.kernel_kwargs(params[0].dtype if params else None)
