"""fastopt.torch.Adagrad: torch.optim.Adagrad with fastopt's fused kernel.

State per parameter, as torch keeps it: `step` (0-d float tensor) and `sum` (float32 for float16/bfloat16
parameters on CUDA). Like torch, the state of the
constructor's parameters is made in the constructor, with sums at the optimizer's (not the group's)
initial_accumulator_value; state for groups added later is made on their first step. `state_dtype="bfloat16"`
(also torch.bfloat16) keeps the sum in bfloat16 on the CPU, rounded to nearest or, with stochastic_rounding=True,
stochastically (`seed` picks the bits; issue 18: _compact_twin). `state_dtype="int8"` keeps it in
bitsandbytes' one-state layout (Adagrad8bit's: `state1`, with `absmax1` and `qmap1` for parameters of >= 4096
elements; new state in the unsigned map, a loaded one in the map it holds; _state_dtype), quantised from
initial_accumulator_value.
"""

from __future__ import annotations

import torch

from fastopt._core import adagrad_
from fastopt.torch import _state_dtype as compact
from fastopt.torch._compact_twin import CompactState, compact_defaults
from fastopt.torch._optimizer import FusedOptimizer, check_real, scalar
from fastopt.torch._step_counts import new_step
from fastopt.torch._torch_wording import torch_wording


class Adagrad(CompactState, FusedOptimizer):
    """``Adagrad(params, lr=1e-2, lr_decay=0, weight_decay=0, initial_accumulator_value=0, eps=1e-10,
    foreach=None, *, maximize=False, differentiable=False, fused=None, state_dtype=None, stochastic_rounding=False,
    seed=0)``"""

    _torch_name = "Adagrad"  # torch.optim's class: it steps differentiable=True groups

    _cpu_half = True  # (float16/bfloat16 params on the CPU: float32 state, as the twins keep for half params)
    _state_keys = ("step", "sum")
    _free_hyper = ("lr", "lr_decay", "eps", "weight_decay")
    _compact_keys = _compact_required = ("sum",)
    _int8_keys = ("sum",)  # int8's state1 (Adagrad8bit's)

    def __init__(self, params, lr=1e-2, lr_decay=0, weight_decay=0, initial_accumulator_value=0, eps=1e-10,
                 foreach=None, *, maximize=False, differentiable=False, fused=None, state_dtype=None,
                 stochastic_rounding=False, seed=0):
        with torch_wording({"initial_accumulator_value": initial_accumulator_value}):
            check_real(initial_accumulator_value, "initial_accumulator_value")
            if not scalar(initial_accumulator_value) >= 0:
                raise ValueError(f"initial_accumulator_value must be >= 0, got {initial_accumulator_value}")
        defaults = dict(lr=lr, lr_decay=lr_decay, eps=eps, weight_decay=weight_decay,
                        initial_accumulator_value=initial_accumulator_value, foreach=foreach,
                        maximize=maximize, differentiable=differentiable, fused=fused, state_dtype=state_dtype,
                        stochastic_rounding=stochastic_rounding, seed=seed)
        super().__init__(params, compact_defaults(defaults, self._compact_forms, self._torch_name))
        for group in self.param_groups:
            for p in group["params"]:
                self.state[p] = self._new_state(p, group)

    def _new_state(self, p, group):
        # torch fills the sum from self.defaults, whatever the group says; the twin does the same. A complex
        # parameter's sum is filled with init + init*1j, as torch does (both real components start at init).
        init = self.defaults["initial_accumulator_value"]
        if self._form(group) == "int8":
            return {"step": new_step(group, p), **compact.new_state(p, "int8", self._int8_keys, float(scalar(init)))}
        fill = complex(scalar(init), scalar(init)) if p.is_complex() else init
        return {"step": new_step(group, p), "sum": self._state_zeros(p, group, fill)}

    def _run(self, group, params, grads, states, step, grad_scale=1.0, found_inf=None):
        if self._form(group) == "int8":
            parts = [(ps, gs, sums) for ps, gs, (sums,) in self._int8_parts(params, grads, states)]
        else:
            parts = [(params, grads, self._views(states, "sum"))]
        for ps, gs, sums in parts:
            adagrad_(ps, gs, sums, lr=self._lr(group, ps),
                     lr_decay=scalar(group["lr_decay"]), weight_decay=scalar(group["weight_decay"]),
                     eps=scalar(group["eps"]), maximize=bool(group["maximize"]), step=step, grad_scale=grad_scale,
                     found_inf=found_inf, **self._rounding(group, ps))

    def share_memory(self) -> None:
        """Moves the state sums to shared memory (as torch.optim.Adagrad.share_memory; int8: state1, absmax1)."""
        for state in self.state.values():
            for key in ("sum", "state1", "absmax1"):
                if torch.is_tensor(state.get(key)):
                    state[key].share_memory_()
