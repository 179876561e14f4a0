"""fastopt.torch.RMSprop: torch.optim.RMSprop with fastopt's fused kernel.

State per parameter, as torch keeps it: `step` (0-d float tensor, counted though the update does not use
it; on the parameter's device when capturable), `square_avg`, `momentum_buffer` when momentum > 0 and
`grad_avg` when centered (float32 for float16/bfloat16 parameters on CUDA). `state_dtype="bfloat16"` (also
torch.bfloat16) keeps them in bfloat16 on the CPU, rounded to nearest or, with stochastic_rounding=True,
stochastically (`seed` picks the bits; the step count draws new ones each step; issue 18: _compact_twin).
`state_dtype="int8"` keeps square_avg in bitsandbytes' one-state layout (RMSprop8bit's: `state1`, with
`absmax1` and `qmap1` for parameters of >= 4096 elements; new state in the unsigned map, a loaded one in the
map it holds; _state_dtype); that layout has no momentum_buffer or grad_avg, so momentum > 0 and centered=True
are refused with it.
"""

from __future__ import annotations

from fastopt._core import rmsprop_
from fastopt.torch import _state_dtype as compact
from fastopt.torch._compact_twin import CompactState, compact_defaults
from fastopt.torch._optimizer import FusedOptimizer, scalar
from fastopt.torch._step_counts import new_step


class RMSprop(CompactState, FusedOptimizer):
    """``RMSprop(params, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0, momentum=0, centered=False,
    capturable=False, foreach=None, maximize=False, differentiable=False, *, state_dtype=None,
    stochastic_rounding=False, seed=0)``"""

    _torch_name = "RMSprop"  # torch.optim's class: it steps differentiable=True groups

    _cpu_half = True  # (float16/bfloat16 params on the CPU: float32 state, as the twins keep for half params)
    _state_keys = ("step", "square_avg")
    _lazy_state = ("momentum_buffer", "grad_avg")
    _step_keyed = False  # (the update does not depend on the step number)
    _free_hyper = ("lr", "alpha", "eps", "weight_decay")  # (not momentum or centered: they add state)
    _compact_keys = ("square_avg", "momentum_buffer", "grad_avg")
    _compact_required = ("square_avg",)
    _int8_keys = ("square_avg",)  # int8's state1 (RMSprop8bit's)

    def __init__(self, params, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0, momentum=0, centered=False,
                 capturable=False, foreach=None, maximize=False, differentiable=False, *, state_dtype=None,
                 stochastic_rounding=False, seed=0):
        defaults = dict(lr=lr, momentum=momentum, alpha=alpha, eps=eps, centered=centered,
                        weight_decay=weight_decay, capturable=capturable, foreach=foreach,
                        maximize=maximize, differentiable=differentiable, state_dtype=state_dtype,
                        stochastic_rounding=stochastic_rounding, seed=seed)
        super().__init__(params, compact_defaults(defaults, self._compact_forms, self._torch_name))

    def _new_state(self, p, group):
        if self._form(group) == "int8":
            return {"step": new_step(group, p), **compact.new_state(p, "int8", self._int8_keys)}
        return {"step": new_step(group, p), "square_avg": self._state_zeros(p, group)}

    def _bucket_key(self, p, state, group):
        # The update does not depend on the step number: one call per dtype; stochastic rounding's bits do,
        # so its calls are keyed by the step, as the other twins' are.
        return super()._bucket_key(p, state, group) if group.get("stochastic_rounding") else None

    def _check_key(self):
        return None

    def _prepare(self, group, params, states):
        if group["momentum"] > 0:
            self._ensure_state(group, params, states, "momentum_buffer")
        if group["centered"]:
            self._ensure_state(group, params, states, "grad_avg")

    def _run(self, group, params, grads, states, step, grad_scale=1.0, found_inf=None):
        rounding = self._rounding(group, params)
        if rounding:
            rounding["step"] = step if isinstance(step, int) else 1  # (the empty checking calls' key: None)
        if self._form(group) == "int8":  # (no momentum, not centered: check_options refuses them)
            for ps, gs, (square_avgs,) in self._int8_parts(params, grads, states):
                self._kernel(group, ps, gs, square_avgs, None, None, grad_scale, found_inf)
            return
        self._kernel(group, params, grads, self._views(states, "square_avg"),
                     self._views(states, "momentum_buffer") if group["momentum"] > 0 else None,
                     self._views(states, "grad_avg") if group["centered"] else None, grad_scale, found_inf,
                     **rounding)

    def _kernel(self, group, params, grads, square_avgs, momentum_buffers, grad_avgs, grad_scale, found_inf,
                **rounding):
        rmsprop_(params, grads, square_avgs, momentum_buffers, grad_avgs,
                 lr=self._lr(group, params), alpha=scalar(group["alpha"]), eps=scalar(group["eps"]),
                 weight_decay=scalar(group["weight_decay"]), momentum=scalar(group["momentum"]),
                 centered=bool(group["centered"]), maximize=bool(group["maximize"]), grad_scale=grad_scale,
                 found_inf=found_inf, **rounding)
