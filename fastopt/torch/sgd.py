"""fastopt.torch.SGD: torch.optim.SGD with fastopt's fused kernel.

State per parameter, as torch keeps it: `momentum_buffer`, only when momentum != 0 (float32 for
float16/bfloat16 parameters on CUDA), and no step count. `state_dtype="bfloat16"` (also torch.bfloat16) keeps the
buffer in bfloat16 on the CPU (issue 18: _compact_twin), rounded to nearest: with no step count, the twin has no
stochastic rounding (fastopt.optim.SGD has). `state_dtype="int8"` keeps the buffer in bitsandbytes' one-state
layout (SGD8bit's: `state1`, with `absmax1`, `qmap1` (the signed map) for parameters of >= 4096 elements, and
bitsandbytes' `step` count, which says whether the buffer was written yet; _state_dtype); without momentum there
is nothing to keep.
torch sets the buffer to the gradient when it has none; fastopt.sgd_ does that on step=1, so a parameter
without a buffer is updated with step=1 and one with a buffer with step=2 (any later step is the same).
"""

from __future__ import annotations

import torch

from fastopt._core import sgd_
from fastopt.torch import _arrays
from fastopt.torch import _state_dtype as compact
from fastopt.torch._compact_twin import CompactState, compact_defaults
from fastopt.torch._optimizer import FusedOptimizer, scalar
from fastopt.torch._step_counts import new_step


class SGD(CompactState, FusedOptimizer):
    """``SGD(params, lr=1e-3, momentum=0, dampening=0, weight_decay=0, nesterov=False, *, maximize=False,
    foreach=None, differentiable=False, fused=None, state_dtype=None)``"""

    _torch_name = "SGD"  # torch.optim's class: it steps differentiable=True groups

    _cpu_half = True  # (float16/bfloat16 params on the CPU: float32 state, as the twins keep for half params)
    _lazy_state = ("momentum_buffer",)
    _nullable_state = ("momentum_buffer",)
    _step_keyed = False  # (its calls' key says whether the momentum buffers exist yet)
    _free_hyper = ("lr", "dampening", "weight_decay")  # (not momentum: it decides whether buffers exist)
    _compact_keys = ("momentum_buffer",)
    _int8_keys = ("momentum_buffer",)  # int8's state1 (SGD8bit's)
    _counts_steps = False

    def __init__(self, params, lr=1e-3, momentum=0, dampening=0, weight_decay=0, nesterov=False, *,
                 maximize=False, foreach=None, differentiable=False, fused=None, state_dtype=None,
                 stochastic_rounding=False, seed=0):
        defaults = dict(lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay,
                        nesterov=nesterov, maximize=maximize, foreach=foreach,
                        differentiable=differentiable, fused=fused, state_dtype=state_dtype,
                        stochastic_rounding=stochastic_rounding, seed=seed)
        super().__init__(params, compact_defaults(defaults, self._compact_forms, self._torch_name, counts_steps=False))

    def _new_state(self, p, group):
        return {}  # the buffer is made by the first momentum step

    def _bucket_key(self, p, state, group):
        if state and "state1" in state:  # (int8: bitsandbytes' step count says whether the buffer was written)
            return 1 if FusedOptimizer._bucket_key(self, p, state, group) == 1 else 2
        return 1 if not state or state.get("momentum_buffer") is None else 2

    def _prepare(self, group, params, states):
        if group["momentum"] != 0:
            int8 = self._form(group) == "int8"
            for state, p in zip(states, params):
                if int8:
                    if "state1" not in state:  # (its first (step=1) call writes the gradient into it)
                        state.update(step=new_step(group, p), **compact.new_state(p, "int8", self._int8_keys))
                elif state.get("momentum_buffer") is None:
                    # Not read: the step=1 kernel call writes the gradient into it.
                    state["momentum_buffer"] = _arrays.state_tensor(p, fill=None) \
                        if self._form(group) == "float32" else self._state_zeros(p, group)

    def _run(self, group, params, grads, states, step, grad_scale=1.0, found_inf=None):
        momentum = scalar(group["momentum"])
        if momentum != 0 and self._form(group) == "int8":
            parts = [(ps, gs, buffers) for ps, gs, (buffers,) in self._int8_parts(params, grads, states)]
        else:
            parts = [(params, grads, self._views(states, "momentum_buffer") if momentum != 0 else None)]
        for ps, gs, buffers in parts:
            sgd_(ps, gs, buffers, lr=self._lr(group, ps), momentum=momentum, dampening=scalar(group["dampening"]),
                 weight_decay=scalar(group["weight_decay"]), nesterov=bool(group["nesterov"]),
                 maximize=bool(group["maximize"]), step=step, grad_scale=grad_scale, found_inf=found_inf)

    def _advance(self, states):
        # torch's SGD counts no steps; int8 state counts bitsandbytes' `step`
        steps = [s["step"] for s in states if "step" in s]
        if steps:
            torch._foreach_add_(steps, 1.0)
