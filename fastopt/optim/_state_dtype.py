"""The state precision of the optimizers (``state_dtype=``, issue 18), and their 8-bit state.

Adam/AdamW: None (the default: state of the params' dtype, as torch keeps it; float32 for float16 params, the
only state their kernels keep). SGD, Adagrad and RMSprop (CompactState): None (their default: float32 state for
16-bit params, the params' dtype otherwise). All five: "float32" (float32 state, for float32, float16 or
bfloat16 params), "bfloat16" (every state array as ml_dtypes.bfloat16, for float32 or bfloat16 params: half
the memory of float32; the update runs in float32 and rounds back), "int8" (8-bit blockwise state,
fastopt.QuantizedState, each entry in the map SIGNED_MAP_OF names, for float32 params of at least
MIN_8BIT_SIZE elements; smaller ones keep float32 state, as bitsandbytes' 8-bit optimizers do; a kernel call
keeps one form, so a step makes one call for each). ``stochastic_rounding=True`` rounds every bfloat16 value
written (bfloat16 params, bfloat16 state) stochastically; with "int8" nothing written is bfloat16, so it is
refused. ml_dtypes is imported only when bfloat16 is asked for or met."""

from __future__ import annotations

import numpy as np

from fastopt._quantized import QuantizedState, blocks

STATE_DTYPES = ("float32", "bfloat16", "int8")
#: params with fewer elements keep float32 state under state_dtype="int8" (bitsandbytes' min_8bit_size)
MIN_8BIT_SIZE = 4096
#: The dynamic map of each state entry kept in 8 bits (True: the signed map; False: the unsigned one). Signed
#: for what changes sign (first moments, momentum buffers, RMSprop's grad_avg); unsigned for what never does
#: (second moments, Adagrad's sum of squares): its 256 codes all lie on [0, 1], twice the signed map's
#: resolution there.
SIGNED_MAP_OF = {"exp_avg": True, "momentum_buffer": True, "grad_avg": True,
                 "exp_avg_sq": False, "max_exp_avg_sq": False, "sum": False, "square_avg": False}


def check_state_dtype(value, default="the params' dtype"):
    """state_dtype: None (`default` says what it keeps) or one of STATE_DTYPES (ValueError naming it otherwise)."""
    if value is not None and (not isinstance(value, str) or value not in STATE_DTYPES):
        raise ValueError(f"state_dtype must be None ({default}) or one of "
                         f"{', '.join(repr(a) for a in STATE_DTYPES)}, got {value!r}")
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

    def __init__(self, state_dtype, stochastic_rounding, seed, default="the params' dtype"):
        self.name = check_state_dtype(state_dtype, default)
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


class EightBitState:
    """The 8-bit state of state_dtype="int8" (a mixin before Optimizer, for optimizers whose ``_precision`` is
    a StatePrecision): new state entries in the map ``_signed_map_of`` names, the checks of a loaded
    QuantizedState, and the split of a kernel call into one over 8-bit state and one over float state."""

    #: state key -> True for the signed map, False for the unsigned one (the rules' classes: from their
    #: description's non_negative states)
    _signed_map_of = SIGNED_MAP_OF

    def _new_state(self, p, key, quantized=None, fill=0.0):
        """A new state entry `key` for params p, every element `fill`: a QuantizedState in key's map when p
        keeps 8-bit state (`quantized`, else the precision's rule by size), else an array of p's state dtype."""
        if self._precision.quantizes(p) if quantized is None else quantized:
            signed = self._signed_map_of[key]
            if fill == 0.0:
                return QuantizedState.zeros(p.shape, signed=signed)
            return QuantizedState.quantize(np.full(p.shape, fill, np.float32), signed=signed)
        return np.full(p.shape, fill, self._state_dtype(p))

    def _check_quantized(self, where, p, key, value):
        """A QuantizedState entry this optimizer can continue from (state_dtype="int8"): key's map, p's shape,
        one float32 absmax per block of 256, writeable C-contiguous NumPy arrays."""
        if self._precision.name != "int8":
            raise TypeError(f"{where} is a fastopt.QuantizedState, but this optimizer keeps "
                            f"state_dtype={self._precision.name!r} state")
        signed = self._signed_map_of[key]
        if value.signed != signed:
            raise ValueError(f"{where} is a {'signed' if value.signed else 'unsigned'} QuantizedState; "
                             f"{key} takes the {'signed' if signed else 'unsigned'} map")
        codes, absmax = value.codes, value.absmax
        if not (type(codes) is np.ndarray and codes.dtype == np.uint8 and codes.shape == p.shape
                and codes.flags.c_contiguous and codes.flags.writeable):
            raise ValueError(f"{where}.codes must be a writeable C-contiguous uint8 array of shape {p.shape}")
        if not (type(absmax) is np.ndarray and absmax.dtype == np.float32 and absmax.shape == (blocks(p.size),)
                and absmax.flags.c_contiguous and absmax.flags.writeable):
            raise ValueError(f"{where}.absmax must be a writeable float32 array of shape ({blocks(p.size)},)")

    def _check_state(self, i, p, state):
        super()._check_state(i, p, state)
        # (a QuantizedState beside float arrays in one parameter's state: no kernel call takes both)
        if self._precision.name == "int8":
            forms = {isinstance(v, QuantizedState) for v in state.values()
                     if isinstance(v, (np.ndarray, QuantizedState))}
            if len(forms) > 1:
                raise ValueError(f"state of params[{i}] mixes 8-bit (fastopt.QuantizedState) and float arrays; "
                                 "each parameter keeps one or the other")

    def _by_form(self, params, grads, states, key):
        """[(params, grads, states)] for each kernel call: the whole lists, or with 8-bit state those whose
        `key` entry is float state and those whose is 8-bit apart (a kernel call keeps one form; the step's
        checks all ran before, so neither call can be refused after the other wrote)."""
        if self._precision.name != "int8":
            return [(params, grads, states)]
        forms = [isinstance(s.get(key), QuantizedState) for s in states]
        if len(set(forms)) < 2:
            return [(params, grads, states)]
        return [tuple([x[j] for j, f in enumerate(forms) if f == form] for x in (params, grads, states))
                for form in (False, True)]


class CompactState(EightBitState):
    """``state_dtype=`` (None, "float32", "bfloat16", "int8"), ``stochastic_rounding=`` and ``seed=`` for SGD,
    Adagrad and RMSprop (a mixin before Optimizer; Adam keeps its own, whose default follows the params).
    None keeps the optimizer's default state dtype (float32 for 16-bit params)."""

    def _set_precision(self, state_dtype, stochastic_rounding, seed):
        self._precision = StatePrecision(state_dtype, stochastic_rounding, seed,
                                         default="float32 for 16-bit params, else the params' dtype")

    def _check_param_dtype(self, p, where):
        self._precision.check_param(p, where)

    def _state_dtype(self, p):
        return super()._state_dtype(p) if self._precision.name is None else self._precision.of(p)

    def _rounding(self, params):
        """The stochastic rounding arguments of a kernel call over `params`."""
        return self._precision.kernel_kwargs(params[0].dtype if params else None)
