"""The torch twins' compact optimizer state (issue 18; layouts in _state_dtype): a mixin before FusedOptimizer
for Adam/AdamW, SGD, Adagrad and RMSprop (float32, bfloat16, int8). Each param group
carries `state_dtype`, `stochastic_rounding` and `seed` when one differs from the default (a twin left at the
defaults keeps torch's param groups and state_dict exactly); its state is checked against its layout at each
step and at load, and a loaded compact state is kept as saved (torch would cast it to the parameter's dtype).
Compact groups take the checked full step, not the repeated step or torch.compile's traced one."""

from __future__ import annotations

from typing import Any, Dict, Tuple

import torch

from fastopt import _hyper
from fastopt.torch import _arrays
from fastopt.torch import _state_dtype as compact
from fastopt.torch._optimizer import FusedOptimizer


def check_rounding_needs_steps(group: Dict[str, Any], name: str, where: str = "") -> None:
    """stochastic_rounding=True refused for a twin whose torch state has no step count (SGD): the random bits
    must change from step to step."""
    if group.get("stochastic_rounding") is True:
        raise ValueError(f"{where}stochastic_rounding=True needs a step count, which torch's {name} does not keep "
                         f"(its random bits change with the step): use fastopt.optim.{name}, which keeps one, or "
                         "leave it False (round to nearest)")


def compact_defaults(defaults: Dict[str, Any], forms, name: str, counts_steps: bool = True) -> Dict[str, Any]:
    """The constructor's defaults with state_dtype normalised and checked (ValueError naming it), the three
    options dropped again when all are at their defaults (today's state: the groups hold torch's options
    only, so the state_dict is torch's exactly; a group without state_dtype has float32 state)."""
    defaults = dict(defaults, state_dtype=compact.normalise(defaults["state_dtype"], forms))
    if not counts_steps:
        check_rounding_needs_steps(defaults, name)
    compact.check_options(defaults, forms=forms, name=name)
    if defaults["state_dtype"] == "float32" and defaults["stochastic_rounding"] is False and defaults["seed"] == 0:
        del defaults["state_dtype"], defaults["stochastic_rounding"], defaults["seed"]
    return defaults


class CompactState:
    """state_dtype / stochastic_rounding / seed for a twin. The class says which state tensors can be compact
    (`_compact_keys`, `_compact_required` of them in every state) and which forms it takes."""

    _compact_forms: Tuple[str, ...] = compact.FORMS
    _compact_keys: Tuple[str, ...] = ()
    _compact_required: Tuple[str, ...] = ()
    _int8_keys: Tuple[str, ...] = ()  # what int8's state1 (, state2) hold: torch's keys, in order
    _shared_state = compact.SHARED_KEYS  # (int8's qmap1/qmap2: read only, one tensor for all parameters)
    _counts_steps = True  # (False: torch's state has no step count, so no stochastic rounding: SGD)

    def _form(self, group):
        return compact.normalise(group.get("state_dtype"), self._compact_forms)

    @property
    def _compact_name(self):
        """The optimizer's name in messages: torch's class, or the twin's own where torch has none (Lion)."""
        return self._torch_name or type(self).__name__

    def _check_options(self, group, k):
        super()._check_options(group, k)
        if not self._counts_steps:
            check_rounding_needs_steps(group, self._compact_name, f"param group {k}: ")
        compact.check_options(group, f"param group {k}: ", self._compact_forms, self._compact_name)

    def _plannable(self, group):
        return self._form(group) == "float32" and not group.get("stochastic_rounding")

    def _check_state(self, i, p, state, group, k):
        form = self._form(group)
        if form == "float32" and compact.form_of(state, self._compact_keys) in ("float32", None):
            return super()._check_state(i, p, state, group, k)
        if not isinstance(state, dict):
            raise TypeError(f"state[{i}] must be a dict, got {type(state).__name__}")
        compact.check_state(f"state[{i}]", p, state, form, bool(group.get("amsgrad")), keys=self._compact_keys,
                            required=self._compact_required, optimizer=self._compact_name, int8_keys=self._int8_keys,
                            scalars=self._scalar_state)
        step = state.get("step")
        if ("step" in self._state_keys or form == "int8") and not (torch.is_tensor(step) and step.numel() == 1
                                               and step.is_floating_point()):
            raise TypeError(f"state[{i}]['step'] must be a one-element floating-point tensor (torch's step count), "
                            f"got {_hyper.describe(step)}")

    def _plan(self):
        calls = super()._plan()
        for k, group, _, members in calls:
            if self._form(group) != "float32":
                for i, p in members:
                    if not p.is_contiguous():
                        raise ValueError(f"params[{i}] is not contiguous; state_dtype={self._form(group)!r} updates "
                                         "contiguous parameters only")
        return calls

    @staticmethod
    def _prepare_load(self, state_dict):
        """FusedOptimizer's, and: bitsandbytes' nested quantisation tensors put back in place, compact state
        checked against each group's state_dtype and kept as it is (torch would cast it to the parameter's
        dtype)."""
        if isinstance(state_dict, dict) and isinstance(state_dict.get("state"), dict):
            state_dict = {**state_dict, "state": {k: compact.unwrap_bnb(v) for k, v in state_dict["state"].items()}}
        held = _hold_compact(self, state_dict)
        if held is None:
            return FusedOptimizer._prepare_load(self, state_dict)
        plain, kept = held
        prepared = FusedOptimizer._prepare_load(self, plain)
        return {**prepared, "state": {**prepared["state"], **kept}}

    def _normalise_state(self, p, p_state, group):
        for key, value in p_state.items():
            if isinstance(value, _Kept):
                p_state[key] = value.tensor.to(device=p.device).contiguous()
        super()._normalise_state(p, p_state, group)
        compact.to_form(p, p_state, self._form(group), self._compact_keys)

    def _int8_parts(self, params, grads, states):
        """The kernel calls of an int8 group: [(params, grads, operands)], operands one list per entry of
        _int8_keys: first the float32-state members (under bitsandbytes' min_8bit_size; always, even when
        empty: that call checks the hyperparameters for both), then, if any, the quantised ones
        (fastopt.QuantizedState over state1/absmax1 (, state2/absmax2), in the map each qmap holds). The
        step's checks (_check_state: layout and maps) ran before either call writes."""
        small, big = compact.int8_split(states) if states else ([], [])
        pick = lambda xs, idx: [xs[i] for i in idx]  # noqa: E731
        sub = pick(states, small)
        parts = [(pick(params, small), pick(grads, small),
                  tuple(self._views(sub, f"state{j}") for j in range(1, len(self._int8_keys) + 1)))]
        if big:
            parts.append((pick(params, big), pick(grads, big),
                          compact.quantised_operands(pick(states, big), self._int8_keys)))
        return parts

    def _state_zeros(self, p, group, fill=0.0):
        """A new state tensor for p in the group's form: torch's (float32 for a 16-bit CPU parameter) or
        bfloat16, filled with `fill`."""
        if self._form(group) == "bfloat16":
            return torch.full_like(p, fill, dtype=torch.bfloat16, memory_format=torch.contiguous_format)
        return _arrays.state_tensor(p, fill)

    def _ensure_state(self, group, params, states, key):
        """FusedOptimizer._ensure in the group's form: buffers made when an option is switched on."""
        for state, p in zip(states, params):
            if key not in state:
                state[key] = self._state_zeros(p, group)

    def _rounding(self, group, params, rounds_params_only=False):
        """The stochastic rounding arguments of a kernel call over `params` of `group`: none unless the group
        asks for it and the call writes bfloat16 (its state, or with torch's state its bfloat16 params), with
        distinct random bits per param group (the kernel's hash also takes the step, the tensor's index in the
        call and the element's index): the group's seed spread by the golden ratio, plus its index."""
        if not (group.get("stochastic_rounding") and params):
            return {}
        if self._form(group) == "float32" and str(params[0].dtype) not in ("bfloat16", "torch.bfloat16"):
            return {}
        k = next((k for k, g in enumerate(self.param_groups) if g is group), 0) if hasattr(self, "param_groups") else 0
        return dict(stochastic_rounding=True, seed=(int(group.get("seed", 0)) * 0x9E3779B97F4A7C15 + k) % 2**64)


class _Kept:
    """A loaded compact state tensor, kept away from torch's load_state_dict (which casts floating state to the
    parameter's dtype: bfloat16 moments would become float32); _normalise_state unwraps it."""

    __slots__ = ("tensor",)

    def __init__(self, tensor):
        self.tensor = tensor


def _hold_compact(self, state_dict):
    """(state_dict without its compact states, {saved id: compact state with tensors in _Kept}) after checking
    each compact state against its group's state_dtype (ValueError naming it); None when it holds none or
    does not have torch's layout (torch's own message then)."""
    if not isinstance(state_dict, dict):
        return None
    groups, saved = state_dict.get("param_groups"), state_dict.get("state")
    if not (isinstance(groups, (list, tuple)) and isinstance(saved, dict) and len(groups) == len(self.param_groups)
            and all(isinstance(g, dict) and isinstance(g.get("params"), (list, tuple))
                    and len(g["params"]) == len(ours["params"]) for g, ours in zip(groups, self.param_groups))):
        return None
    where = {}
    for g, ours in zip(groups, self.param_groups):
        group = {**self.defaults, **g}
        for old, p in zip(g["params"], ours["params"]):
            try:
                where[old] = (len(where), p, group)
            except TypeError:
                return None
    kept, plain = {}, {}
    for old, state in saved.items():
        found = where.get(old) if isinstance(old, (int, str)) else None
        if found is None or not isinstance(state, dict) or not state:
            plain[old] = state
            continue
        i, p, group = found
        have = compact.form_of(state, self._compact_keys)
        try:
            form = compact.normalise(group.get("state_dtype"), self._compact_forms)
        except ValueError as error:
            raise ValueError(f"state_dict: param group of params[{i}]: {error}") from None
        if have != "int8" and form != "int8":
            # (torch's keys: float32 state loads as torch loads it, and becomes bfloat16 (rounded) in a
            # bfloat16 group; bfloat16 state in a float32 group becomes float32, exactly)
            if have in ("float32", None) or form == "float32":
                plain[old] = state
                continue
        try:
            compact.check_state(f"state_dict: state[{i}]", p, state, form, bool(group.get("amsgrad")), check_maps=True,
                                keys=self._compact_keys, required=self._compact_required, optimizer=self._compact_name,
                                int8_keys=self._int8_keys, scalars=self._scalar_state)
            if "step" in state:
                step = state["step"]
                count = step.item() if torch.is_tensor(step) and step.numel() == 1 else step
                _hyper.float_step_count(_hyper.real(count, f"state_dict: state[{i}]['step']"),
                                        f"state_dict: state[{i}]['step']")
        except (TypeError, ValueError) as error:
            raise ValueError(str(error)) from None
        plain[old] = {}  # (checked here; the base's checks skip an empty state)
        kept[old] = {key: (_Kept(v) if key != "step" and torch.is_tensor(v) else v) for key, v in state.items()}
    if not kept:
        return None
    return {**state_dict, "state": plain}, kept
