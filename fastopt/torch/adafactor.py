"""fastopt.torch.Adafactor: torch.optim.Adafactor's signature, defaults and state (step, and row_var/col_var in
torch's keepdim shapes for a parameter with ndim >= 2, else variance), stepped by fastopt.adafactor_.

Its state is not shaped like the parameter, so the checks of the state (at each step and at load) are its
own; eps is torch's pair (eps1 or None, eps2). CPU and CUDA tensors of float32 or float64 (a CUDA step gives
the CPU's bits: csrc/cuda/adafactor_passes.cuh); a tensor lr is read on the host (the kernel takes a number). torch's
Adafactor refuses GradScaler's fused unscaling, and so does this twin (_step_supports_amp_scaling is off,
so GradScaler unscales the gradients itself)."""

from __future__ import annotations

from itertools import chain
from typing import Any, Dict, List

import torch

from fastopt import _core, _hyper
from fastopt.torch import _arrays
from fastopt.torch._optimizer import FusedOptimizer, check_real, scalar
from fastopt.torch._step_counts import new_step
from fastopt.torch._torch_wording import ADAFACTOR_PHRASES, torch_wording

_FACTORED = ("row_var", "col_var")
_TENSORS = ("row_var", "col_var", "variance")


def _state_shapes(shape: torch.Size) -> Dict[str, tuple]:
    """torch's state tensors of a parameter of `shape` and their shapes."""
    shape = tuple(shape)
    if len(shape) >= 2:
        return {"row_var": shape[:-1] + (1,), "col_var": shape[:-2] + (1, shape[-1])}
    return {"variance": shape}


def _check_eps(eps: Any, where: str = "") -> None:
    """torch's eps: a pair (eps1 or None, eps2) of real numbers (their values are the kernel's to check)."""
    if not isinstance(eps, (tuple, list)):
        raise TypeError(f"{where}eps must be a pair (eps1 or None, eps2), got {_hyper.describe(eps)}")
    if len(eps) != 2:
        raise ValueError(f"{where}eps must be a pair (eps1 or None, eps2), got {len(eps)} values")
    if eps[0] is not None:
        check_real(eps[0], f"{where}eps[0]")
    check_real(eps[1], f"{where}eps[1]")


class Adafactor(FusedOptimizer):
    """``Adafactor(params, lr=1e-2, beta2_decay=-0.8, eps=(None, 1e-3), d=1.0, weight_decay=0.0, *,
    foreach=None, maximize=False)``: torch.optim.Adafactor's update (its single-tensor loop, to float64
    rounding) by fastopt.adafactor_; its state_dict loads into torch.optim.Adafactor and back."""

    _step_plan_ok = False  # (its _run reads the state tensors themselves: the repeated step's views do not fit)

    _state_keys = ("step",)
    _lazy_state = _TENSORS  # (which of them a parameter holds depends on its ndim: checked here)
    _torch_name = "Adafactor"
    _torch_phrases = ADAFACTOR_PHRASES
    _takes_complex = False  # (as torch's: RuntimeError at the step)
    _step_supports_amp_scaling = False

    def __init__(self, params, lr=1e-2, beta2_decay=-0.8, eps=(None, 1e-3), d=1.0, weight_decay=0.0, *,
                 foreach=None, maximize=False):
        defaults = dict(lr=lr, beta2_decay=beta2_decay, eps=tuple(eps) if isinstance(eps, list) else eps, d=d,
                        weight_decay=weight_decay, foreach=foreach, maximize=maximize)
        with torch_wording(defaults, ADAFACTOR_PHRASES):
            self._check_kinds(defaults, "")
            self._run(dict(defaults, params=[]), [], [], [], self._check_key())
        torch.optim.Optimizer.__init__(self, params, defaults)

    @staticmethod
    def _check_kinds(group: Dict[str, Any], where: str) -> None:
        _hyper.check_hyperparameters({k: v for k, v in group.items() if k != "eps"}, where, element=check_real)
        if "eps" in group:
            _check_eps(group["eps"], where)

    def _check_options(self, group: Dict[str, Any], k: int) -> None:
        FusedOptimizer._check_options(self, {key: v for key, v in group.items() if key != "eps"}, k)
        if "eps" in group:
            _check_eps(group["eps"], f"param group {k}: ")

    def _new_state(self, p: torch.Tensor, group: Dict[str, Any]) -> Dict[str, Any]:
        state = {"step": new_step(group, p)}
        for key, shape in _state_shapes(p.shape).items():
            state[key] = torch.zeros(shape, dtype=p.dtype, device=p.device)
        return state

    def _check_state(self, i: int, p: torch.Tensor, state: Any, group: Dict[str, Any], k: int) -> None:
        if isinstance(state, dict):
            FusedOptimizer._check_state(self, i, p, {key: v for key, v in state.items() if key not in _TENSORS},
                                        group, k)
        else:
            FusedOptimizer._check_state(self, i, p, state, group, k)  # (raises)
        expected = _state_shapes(p.shape)
        for key in _TENSORS:
            value = state.get(key)
            name = f"state[{i}]['{key}']"
            if key not in expected:
                if key in state:
                    raise ValueError(f"{name} is not kept for a parameter of shape {tuple(p.shape)} (Adafactor "
                                     f"keeps {list(expected)} for it)")
                continue
            if not torch.is_tensor(value):
                raise TypeError(f"{name} must be a tensor, got {_hyper.describe(value)}")
            _arrays.check_tensor(value, name)
            if value.dtype != p.dtype or value.device != p.device or tuple(value.shape) != expected[key] \
                    or not value.is_contiguous():
                raise ValueError(f"{name} must be a contiguous {p.dtype} tensor of shape {expected[key]} on "
                                 f"{p.device} for params[{i}] of shape {tuple(p.shape)}, got {value.dtype} of "
                                 f"shape {tuple(value.shape)} on {value.device}")

    def _check_loadable(self, state_dict: Any) -> None:
        if not isinstance(state_dict, dict) or not isinstance(state_dict.get("state"), dict):
            return FusedOptimizer._check_loadable(self, state_dict)
        saved = state_dict["state"]
        stripped = {key: {k: v for k, v in s.items() if k not in _TENSORS} if isinstance(s, dict) else s
                    for key, s in saved.items()}
        FusedOptimizer._check_loadable(self, {**state_dict, "state": stripped})
        groups = state_dict.get("param_groups")
        if not isinstance(groups, (list, tuple)) or not all(isinstance(g, dict) for g in groups):
            return
        try:
            ids = list(chain.from_iterable(g["params"] for g in groups))
            params = dict(zip(ids, chain.from_iterable(g["params"] for g in self.param_groups)))
        except (KeyError, TypeError):
            return  # (torch's own message)
        for i, (old, p) in enumerate(params.items()):
            state = saved.get(old)
            if not isinstance(state, dict) or not state:
                continue
            expected = _state_shapes(p.shape)
            kept = [k for k in _TENSORS if k in state]
            if sorted(kept) != sorted(expected):
                raise ValueError(f"state_dict: the state of params[{i}] (shape {tuple(p.shape)}) holds {kept}, but "
                                 f"Adafactor keeps {list(expected)} for it")
            for key, shape in expected.items():
                value = state[key]
                if not torch.is_tensor(value) or tuple(value.shape) != shape or not value.is_floating_point():
                    raise ValueError(f"state_dict: state[{i}]['{key}'] must be a floating-point tensor of shape "
                                     f"{shape}, got {_hyper.describe(value)}")

    def _run(self, group, params, grads, states, step, grad_scale: Any = 1.0, found_inf: Any = None) -> None:
        if found_inf is not None or not (isinstance(grad_scale, (int, float)) and grad_scale == 1.0):
            raise RuntimeError("Adafactor does not unscale gradients itself (torch.optim.Adafactor neither): "
                               "let GradScaler unscale them (scaler.unscale_(optimizer))")
        eps = group["eps"]
        rows: List[Any] = []
        cols: List[Any] = []
        variances: List[Any] = []
        shaped_params, shaped_grads = [], []
        for p, g, state in zip(params, grads, states):
            # (the kernel arrays are the tensors' flat views: reshaped to the parameter's shape, which the
            # state's shapes give, as views of the same memory)
            if "variance" in state:
                shape = tuple(state["variance"].shape)
                rows.append(None)
                cols.append(None)
                variances.append(_kernel_array(state["variance"]))
            else:
                shape = tuple(state["row_var"].shape[:-1]) + (state["col_var"].shape[-1],)
                rows.append(_kernel_array(state["row_var"]))
                cols.append(_kernel_array(state["col_var"]))
                variances.append(None)
            shaped_params.append(p.reshape(shape))
            shaped_grads.append(g.reshape(shape))
        lr = self._lr(group, params)
        _core.adafactor_(shaped_params, shaped_grads, rows, cols, variances, step=step,
                         lr=float(lr.item()) if isinstance(lr, torch.Tensor) else lr, beta2_decay=scalar(group["beta2_decay"]),
                         eps1=None if eps[0] is None else scalar(eps[0]), eps2=scalar(eps[1]), d=scalar(group["d"]),
                         weight_decay=scalar(group["weight_decay"]), maximize=bool(group["maximize"]))


def _kernel_array(state: torch.Tensor) -> Any:
    """A state tensor as the kernel takes it: a NumPy view of a CPU tensor's memory, a CUDA tensor itself."""
    return state.detach() if state.is_cuda else state.detach().numpy()
