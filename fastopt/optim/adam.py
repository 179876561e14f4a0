"""Stateful Adam (L2 weight decay) and AdamW (decoupled weight decay) with AMSGrad
(torch.optim.Adam / AdamW's numbers)."""

from __future__ import annotations

import numpy as np

from fastopt._core import adam_, adamw_
from fastopt._quantized import QuantizedState, blocks
from fastopt.optim._state_dtype import StatePrecision
from fastopt.optim.optimizer import Optimizer


def _as_tuple(betas):
    """betas as the tuple torch keeps; anything that is not a sequence of values is left for the
    hyperparameter check to name."""
    if isinstance(betas, (tuple, list, np.ndarray)):
        return tuple(betas)
    return betas


class Adam(Optimizer):
    """``Adam(params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0, amsgrad=False, maximize=False,
    state_dtype=None, stochastic_rounding=False, seed=0)``

    Params: float32, float64, float16 or ml_dtypes.bfloat16 arrays (16-bit ones with grads of their dtype;
    each element is updated in float32 and rounded back). State per parameter: ``step``, ``exp_avg``,
    ``exp_avg_sq`` and, with amsgrad, ``max_exp_avg_sq``: arrays of the params' dtype (``state_dtype=None``;
    float32 for float16 params, whose kernels keep float32 state), or float32 arrays (``"float32"``, for
    float32 or 16-bit params), or ml_dtypes.bfloat16 arrays (``"bfloat16"``, for float32 or bfloat16 params), or with
    ``state_dtype="int8"`` fastopt.QuantizedState (8-bit blockwise, bitsandbytes' layout: exp_avg signed, the
    others unsigned) for float32 params of at least 4096 elements, float32 arrays for smaller ones. Every
    bfloat16 value written (params or state) is rounded to nearest-even, or stochastically with
    ``stochastic_rounding=True`` (random bits from ``seed``, the step count, the tensor and the element:
    reproducible, the same for any thread count).
    """

    _kernel = staticmethod(adam_)
    _half_params = ("float16", "bfloat16")
    _state_keys = ("step", "exp_avg", "exp_avg_sq")
    _lazy_state = ("max_exp_avg_sq",)

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, amsgrad=False,
                 maximize=False, state_dtype=None, stochastic_rounding=False, seed=0):
        self._precision = StatePrecision(state_dtype, stochastic_rounding, seed)
        super().__init__(params, dict(lr=lr, betas=_as_tuple(betas), eps=eps, weight_decay=weight_decay,
                                      amsgrad=amsgrad, maximize=maximize))
        self._precision.check_rounding(self._all_params())

    def _check_param_dtype(self, p, where):
        self._precision.check_param(p, where)

    def _state_dtype(self, param):
        return self._precision.of(param)

    def _new_moment(self, param, key, quantized):
        if quantized:
            return QuantizedState.zeros(param.shape, signed=key == "exp_avg")
        return np.zeros(param.shape, self._state_dtype(param))

    def _init_state(self, state, param, group):
        state["step"] = 0
        quantized = self._precision.quantizes(param)
        state["exp_avg"] = self._new_moment(param, "exp_avg", quantized)
        state["exp_avg_sq"] = self._new_moment(param, "exp_avg_sq", quantized)

    def _check_quantized(self, where, p, key, value):
        """A QuantizedState entry this optimizer can continue from (state_dtype="int8")."""
        if self._precision.name != "int8":
            raise TypeError(f"{where} is a fastopt.QuantizedState, but this optimizer keeps "
                            f"state_dtype={self._precision.name!r} state")
        if value.signed != (key == "exp_avg"):
            raise ValueError(f"{where} is a {'signed' if value.signed else 'unsigned'} QuantizedState; "
                             f"{key} takes the {'signed' if key == 'exp_avg' else 'unsigned'} map")
        codes, absmax = value.codes, value.absmax
        if not (type(codes) is np.ndarray and codes.dtype == np.uint8 and codes.shape == p.shape
                and codes.flags.c_contiguous and codes.flags.writeable):
            raise ValueError(f"{where}.codes must be a writeable C-contiguous uint8 array of shape {p.shape}")
        if not (type(absmax) is np.ndarray and absmax.dtype == np.float32 and absmax.shape == (blocks(p.size),)
                and absmax.flags.c_contiguous and absmax.flags.writeable):
            raise ValueError(f"{where}.absmax must be a writeable float32 array of shape ({blocks(p.size)},)")

    def _update(self, group, params, grads, states, step, grad_scale=1.0):
        if group["amsgrad"]:
            for state, p in zip(states, params):
                if "max_exp_avg_sq" not in state:
                    quantized = isinstance(state["exp_avg"], QuantizedState)
                    state["max_exp_avg_sq"] = self._new_moment(p, "max_exp_avg_sq", quantized)
        # 8-bit and float state go to the kernel in separate calls (one form per call); the checks of
        # the whole step ran before this, so neither call can be refused after the other wrote.
        forms = [isinstance(s["exp_avg"], QuantizedState) for s in states]
        for form in sorted(set(forms)):
            picked = [j for j, f in enumerate(forms) if f == form]
            if len(picked) == len(states):
                self._call(group, params, grads, states, step, grad_scale)
            else:
                self._call(group, [params[j] for j in picked], [grads[j] for j in picked],
                           [states[j] for j in picked], step, grad_scale)

    def _call(self, group, params, grads, states, step, grad_scale):
        max_sqs = [s["max_exp_avg_sq"] for s in states] if group["amsgrad"] else None
        beta1, beta2 = group["betas"]
        self._kernel(params, grads, [s["exp_avg"] for s in states], [s["exp_avg_sq"] for s in states],
                     max_sqs, lr=group["lr"], beta1=beta1, beta2=beta2, eps=group["eps"],
                     weight_decay=group["weight_decay"], amsgrad=group["amsgrad"],
                     maximize=group["maximize"], step=step, grad_scale=grad_scale,
                     **self._precision.kernel_kwargs(params[0].dtype if params else None))


class AdamW(Adam):
    """``AdamW(params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, amsgrad=False, maximize=False,
    state_dtype=None, stochastic_rounding=False, seed=0)``

    As Adam, but the weight decay is decoupled: ``p *= 1 - lr * weight_decay`` before the Adam step.
    """

    _kernel = staticmethod(adamw_)

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, amsgrad=False,
                 maximize=False, state_dtype=None, stochastic_rounding=False, seed=0):
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad,
                         maximize=maximize, state_dtype=state_dtype, stochastic_rounding=stochastic_rounding,
                         seed=seed)
