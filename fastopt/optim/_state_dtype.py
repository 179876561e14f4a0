"""The state precision of Adam/AdamW (``state_dtype=``, issue 18): "float32" (the default: state of the
params' dtype, as before), "bfloat16" (float32 params keep exp_avg, exp_avg_sq and max_exp_avg_sq as
ml_dtypes.bfloat16 arrays: half the memory; the update runs in float32 and rounds back), "int8" (8-bit
blockwise state, built separately). ml_dtypes is imported only when bfloat16 is asked for."""

from __future__ import annotations

import numpy as np

STATE_DTYPES = ("float32", "bfloat16", "int8")


def check_state_dtype(value) -> str:
    if not isinstance(value, str) or value not in STATE_DTYPES:
        raise ValueError(f"state_dtype must be one of 'float32', 'bfloat16', 'int8', got {value!r}")
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

    def __init__(self, state_dtype, stochastic_rounding, seed):
        self.name = check_state_dtype(state_dtype)
        if self.name == "int8":
            raise NotImplementedError("state_dtype='int8' is not part of this build yet")
        if not isinstance(stochastic_rounding, (bool, np.bool_)):
            raise TypeError(f"stochastic_rounding must be True or False, got {stochastic_rounding!r}")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= int(seed) < 2**64:
            raise ValueError(f"seed must be an int with 0 <= seed < 2**64, got {seed!r}")
        self.stochastic_rounding = bool(stochastic_rounding)
        self.seed = int(seed)
        self.dtype = bfloat16() if self.name == "bfloat16" else None
        if self.dtype is None and self.stochastic_rounding:
            raise ValueError("stochastic_rounding=True rounds bfloat16 values, but with state_dtype="
                             f"{self.name!r} nothing written is bfloat16")

    def check_params(self, params) -> None:
        """ValueError unless every parameter can keep this state (bfloat16: float32 params only)."""
        if self.dtype is not None:
            for i, p in enumerate(params):
                if isinstance(p, np.ndarray) and p.dtype != np.float32:
                    raise ValueError(f"state_dtype='bfloat16' keeps the state of float32 params; params[{i}] "
                                     f"has dtype {p.dtype}")

    def of(self, p: np.ndarray) -> np.dtype:
        """The dtype of params p's state arrays."""
        if self.dtype is None:
            return p.dtype
        if p.dtype != np.float32:
            raise ValueError(f"state_dtype='bfloat16' keeps the state of float32 params, not of {p.dtype} ones")
        return self.dtype

    def kernel_kwargs(self):
        return dict(stochastic_rounding=True, seed=self.seed) if self.stochastic_rounding else {}
