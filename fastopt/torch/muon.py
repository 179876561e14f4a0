"""The twin of torch.optim.Muon: torch's signature, checks and state (``momentum_buffer``), so state_dicts move
both ways; the elementwise passes are fastopt's fused kernels (fastopt.muon_momentum_ over the whole group in
one call, fastopt.muon_apply_), the Newton-Schulz iteration torch's own ops in bfloat16 (fastopt._muon)."""

from __future__ import annotations

from typing import Any, Dict

import torch

from fastopt import _muon
from fastopt.torch import _arrays
from fastopt.torch._optimizer import FusedOptimizer


def _torch_checks(lr: Any, weight_decay: Any, momentum: Any, adjust_lr_fn: Any) -> None:
    """torch.optim.Muon's constructor checks, in its words (fastopt's kernels check the rest)."""
    if isinstance(lr, torch.Tensor) and lr.numel() != 1:
        raise ValueError("Tensor lr must be 1-element")
    for value, text in ((lr, "Learning rate should be >= 0 but is: {}"), (momentum, "momentum should be >= 0 but is: {}"),
                        (weight_decay, "weight decay should be >= 0 but is: {}")):
        try:
            negative = not 0.0 <= value
        except Exception:  # (a value of the wrong kind: the kind checks after say which)
            continue
        if negative:
            raise ValueError(text.format(value))
    if isinstance(adjust_lr_fn, str) and adjust_lr_fn not in ("original", "match_rms_adamw"):
        raise ValueError(f"Adjust learning rate function {adjust_lr_fn} is not supported")


class Muon(FusedOptimizer):
    """``Muon(params, lr=1e-3, weight_decay=0.1, momentum=0.95, nesterov=True,
    ns_coefficients=(3.4445, -4.775, 2.0315), eps=1e-7, ns_steps=5, adjust_lr_fn=None, *, maximize=False,
    ns_dtype=torch.bfloat16)``

    torch.optim.Muon on fastopt's fused elementwise kernels: 2-D float32/float64 parameters (CPU; CUDA when
    fastopt is built with it). Newton-Schulz runs torch's ops in ``ns_dtype``: bfloat16, as torch does (the
    same numbers up to the last bits of the fused elementwise passes), or torch.float32 / torch.float64 for a
    more accurate iteration. ``maximize`` is fastopt's addition. State per parameter: ``momentum_buffer``.
    """

    _state_keys = ("momentum_buffer",)
    _torch_name = "Muon"
    _takes_complex = False  # (as torch's: RuntimeError at the step)
    _step_plan_ok = False  # (its _run works on the state tensors themselves: the repeated step's views do not fit)

    def __init__(self, params, lr=1e-3, weight_decay=0.1, momentum=0.95, nesterov=True,
                 ns_coefficients=(3.4445, -4.7750, 2.0315), eps=1e-7, ns_steps=5, adjust_lr_fn=None, *,
                 maximize=False, ns_dtype=torch.bfloat16):
        if ns_dtype not in (torch.bfloat16, torch.float16, torch.float32, torch.float64):
            raise TypeError(f"ns_dtype must be a floating torch.dtype (torch.bfloat16, torch.float32 ...), got "
                            f"{ns_dtype!r}")
        self._ns_dtype = ns_dtype
        _torch_checks(lr, weight_decay, momentum, adjust_lr_fn)
        if isinstance(ns_coefficients, list):
            ns_coefficients = tuple(ns_coefficients)
        FusedOptimizer.__init__(self, params, dict(
            lr=lr, weight_decay=weight_decay, momentum=momentum, nesterov=nesterov, ns_coefficients=ns_coefficients,
            eps=eps, ns_steps=ns_steps, adjust_lr_fn=adjust_lr_fn, maximize=maximize))

    def add_param_group(self, param_group: Dict[str, Any]) -> None:
        params = param_group.get("params") if isinstance(param_group, dict) else None
        params = [params] if isinstance(params, torch.Tensor) else params
        if isinstance(params, (list, tuple)):
            for p in params:
                if isinstance(p, torch.Tensor) and p.ndim != 2:
                    raise ValueError(f"Muon only supports 2D parameters whereas we found a parameter with size: "
                                     f"{p.size()}")
                if isinstance(p, torch.Tensor) and p.dtype in _arrays.HALF_DTYPES:
                    raise TypeError(f"fastopt.torch.Muon takes float32/float64 parameters, got {p.dtype} (the "
                                    "fused passes keep no float32 master state for half parameters yet)")
        if isinstance(param_group, dict):
            _torch_checks(param_group.get("lr", 0.0), param_group.get("weight_decay", 0.0),
                          param_group.get("momentum", 0.0), param_group.get("adjust_lr_fn"))
        super().add_param_group(param_group)

    def _new_state(self, p, group):
        return {"momentum_buffer": _arrays.state_tensor(p)}

    # torch's Muon keeps no step count: every parameter of a group and dtype shares one call
    def _bucket_key(self, p, state, group):
        return None

    def _check_key(self):
        return None

    def _advance(self, states):
        pass

    def _run(self, group, params, grads, states, step, grad_scale: Any = 1.0, found_inf: Any = None) -> None:
        if found_inf is not None:  # (only capturable groups get it, and Muon has none)
            raise RuntimeError("fastopt.torch.Muon takes no device found_inf")
        hyper = {k: group[k] for k in ("weight_decay", "momentum", "nesterov", "adjust_lr_fn", "maximize")}
        coefficients, eps, steps = _muon.check_ns(group["ns_coefficients"], group["eps"], group["ns_steps"],
                                                  group["adjust_lr_fn"])
        lr = self._lr(group, params)
        buffers = [s["momentum_buffer"] for s in states]
        shapes = [tuple(b.shape) for b in buffers]
        largest = max([_muon.lr_scale(group["adjust_lr_fn"], s) for s in shapes if len(s) == 2], default=1.0)
        check_grad_scale = grad_scale if not isinstance(grad_scale, torch.Tensor) else 1.0
        if params:
            empty = lambda: params[0].reshape(-1)[:0]  # noqa: E731 (an empty operand of the call's kind)
        else:
            empty = lambda: torch.empty(0, dtype=torch.float64).numpy()  # noqa: E731
        _muon.check_kernel_values(empty, 0.0 if isinstance(lr, torch.Tensor) else lr, hyper["weight_decay"],
                                  hyper["momentum"], hyper["nesterov"], hyper["maximize"], largest, check_grad_scale)
        if not params or any(len(s) != 2 for s in shapes):  # (the checking calls on empty stand-ins)
            return

        def new_updates(k):
            u = torch.empty(shapes[k], dtype=buffers[k].dtype, device=buffers[k].device)
            return _arrays.views([u])[0], u

        def orthogonalise(k, u):
            out = _muon.newton_schulz_torch(u, coefficients, steps, eps, self._ns_dtype)
            # (.contiguous(): a tall matrix's result is a transposed view, and .to() returns it unchanged
            # when ns_dtype is the parameter's dtype)
            out = out.to(buffers[k].dtype).contiguous()
            return _arrays.views([out])[0]

        _muon.run_step(params, grads, self._views(states, "momentum_buffer"), shapes, lr=lr,
                       grad_scale=grad_scale, new_updates=new_updates, orthogonalise=orthogonalise, **hyper)
