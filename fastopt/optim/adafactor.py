"""fastopt.optim.Adafactor: torch.optim.Adafactor's hyperparameters and defaults over NumPy arrays, stepped by
fastopt.adafactor_. Its state is torch's: "step", and "row_var"/"col_var" (torch's keepdim shapes) for a
parameter with ndim >= 2, else "variance"; not shaped like the parameter, so its checks are its own."""

from __future__ import annotations

from typing import Any, Dict

import numpy as np

from fastopt import _core, _hyper
from fastopt.optim.optimizer import _FLOAT_DTYPES, Optimizer, _lr_or_schedule

_TENSORS = ("row_var", "col_var", "variance")


def state_shapes(shape: tuple) -> Dict[str, tuple]:
    """The state arrays of a parameter of `shape` and their shapes (torch's)."""
    shape = tuple(shape)
    if len(shape) >= 2:
        return {"row_var": shape[:-1] + (1,), "col_var": shape[:-2] + (1, shape[-1])}
    return {"variance": shape}


class Adafactor(Optimizer):
    """``Adafactor(params, lr=1e-2, beta2_decay=-0.8, eps=(None, 1e-3), d=1.0, weight_decay=0.0,
    maximize=False)``: torch.optim.Adafactor's update (see fastopt.adafactor_). eps = (eps1 or None, eps2).
    The gradients are taken as they are: grad_scale must be 1 (Adafactor's update does not unscale)."""

    _state_keys = ("step",)
    _lazy_state = _TENSORS  # (which of them depends on the parameter's ndim: _check_state)

    def __init__(self, params, lr=1e-2, beta2_decay=-0.8, eps=(None, 1e-3), d=1.0, weight_decay=0.0,
                 maximize=False):
        Optimizer.__init__(self, params, dict(lr=lr, beta2_decay=beta2_decay,
                                              eps=tuple(eps) if isinstance(eps, (list, np.ndarray)) else eps,
                                              d=d, weight_decay=weight_decay, maximize=maximize))

    def _check_group(self, group: Dict[str, Any]) -> None:
        eps = group.get("eps")
        if not isinstance(eps, (tuple, list)):
            raise TypeError(f"eps must be a pair (eps1 or None, eps2), got {_hyper.describe(eps)}")
        if len(eps) != 2:
            raise ValueError(f"eps must be a pair (eps1 or None, eps2), got {len(eps)} values")
        if eps[0] is not None:
            _hyper.real(eps[0], "eps[0]")
        _hyper.real(eps[1], "eps[1]")
        # as Optimizer._check_group, eps aside: the kinds here, the values by the kernel on empty arrays
        others = {k: v for k, v in group.items() if k != "eps"}
        _hyper.check_hyperparameters(others, lr=_lr_or_schedule)
        dtypes = {p.dtype for p in group.get("params", ()) if isinstance(p, np.ndarray) and p.dtype in _FLOAT_DTYPES}
        for dtype in sorted(dtypes, key=str) or [None]:
            probe = [] if dtype is None else [np.empty(0, dtype)]
            states = [{} for _ in probe]
            for state, p in zip(states, probe):
                self._init_state(state, p, group)
            self._update(group, probe, [np.empty(0, dtype) for _ in probe], states, self._check_key())

    def _init_state(self, state, param, group):
        state["step"] = 0
        for key, shape in state_shapes(param.shape).items():
            state[key] = np.zeros(shape, param.dtype)

    def _state_shape(self, p, key):
        return state_shapes(p.shape).get(key, p.shape)

    def _check_state(self, i: int, p: np.ndarray, state: Any) -> None:
        if not isinstance(state, dict):
            raise TypeError(f"state[{i}] must be a dict, got {type(state).__name__}")
        expected = state_shapes(p.shape)
        for key in ("step",) + tuple(expected):
            if key not in state:
                missing = [k for k in ("step",) + tuple(expected) if k not in state]
                raise ValueError(f"state of params[{i}] lacks {missing}: Adafactor keeps {['step', *expected]} for "
                                 f"a parameter of shape {p.shape}")
        for key, value in state.items():
            where = f"state[{i}][{key!r}]"
            if key == "step":
                _hyper.step_count(value, where)
            elif key not in expected:
                raise ValueError(f"state of params[{i}] has an entry {key!r} that Adafactor does not keep for a "
                                 f"parameter of shape {p.shape} (it keeps {['step', *expected]})")
            elif type(value) is not np.ndarray:
                raise TypeError(f"{where} must be a numpy.ndarray, got {type(value).__name__}")
            elif value.dtype != p.dtype or value.shape != expected[key]:
                raise ValueError(f"{where} is {value.dtype} {value.shape}, but params[{i}] ({p.dtype} {p.shape}) "
                                 f"needs {p.dtype} {expected[key]}")
            elif not (value.flags.c_contiguous and value.flags.writeable):
                raise ValueError(f"{where} is not a writeable C-contiguous array")

    def _update(self, group, params, grads, states, step_key, grad_scale=1.0) -> None:
        if grad_scale != 1.0:
            raise ValueError(f"grad_scale must be 1 for Adafactor (its update does not unscale the gradients), "
                             f"got {grad_scale}")
        eps1, eps2 = group["eps"]
        _core.adafactor_(params, grads, [s.get("row_var") for s in states], [s.get("col_var") for s in states],
                         [s.get("variance") for s in states], step=step_key, lr=group["lr"],
                         beta2_decay=group["beta2_decay"], eps1=eps1, eps2=eps2, d=group["d"],
                         weight_decay=group["weight_decay"], maximize=group["maximize"])

