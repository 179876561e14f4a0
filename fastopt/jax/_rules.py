"""optax-style transforms over fastopt's optimizers described as rules (csrc/include/fastopt/registry.h):
lion, nadam, radam, adamax, adadelta, asgd, rprop, lamb. Each rule is one XLA FFI target
(csrc/jax/rule_handlers.cpp, "fastopt_rule_<name>") taking the rule's hyperparameters as one array in
the kernel's order, so the transforms here only name the arguments, the state and the defaults. The
numbers are fastopt.optim's and fastopt.torch's (torch.optim's where torch has the optimizer). On a GPU
(a CUDA build of fastopt) the same targets run the CUDA backend's rule launch, float16/bfloat16
parameters with float32 state included (LAMB's per-tensor norms with the CPU's order of additions, so the
same bits).

Step-dependent numbers that torch keeps per parameter (NAdam's mu_product, ASGD's eta and mu) are
computed by the kernel from the step count, as fastopt's kernels do when they are not given.
"""

from __future__ import annotations

from typing import Any, Dict, NamedTuple, Optional, Tuple

import jax
import numpy as np

import fastopt
from fastopt import _core
from fastopt.jax import _checks as checks
from fastopt.jax._transforms import GradientTransformation, _lr, _Spec, _transform

# The registry's description of each rule: its operands, its hyperparameters in the kernel's order with
# their kinds, whether it takes the step.
_RULES: Dict[str, Dict[str, Any]] = {rule["name"]: rule for rule in _core._rule_registry()}
_ORDER: Dict[str, Tuple[str, ...]] = {name: tuple(h[0] for h in rule["hypers"]) for name, rule in _RULES.items()}
_KINDS: Dict[str, Dict[str, str]] = {name: {h[0]: h[1] for h in rule["hypers"]} for name, rule in _RULES.items()}


class LionState(NamedTuple):
    count: jax.Array
    exp_avg: Any


class NadamState(NamedTuple):
    count: jax.Array
    exp_avg: Any
    exp_avg_sq: Any


class RadamState(NamedTuple):
    count: jax.Array
    exp_avg: Any
    exp_avg_sq: Any


class AdamaxState(NamedTuple):
    count: jax.Array
    exp_avg: Any
    exp_inf: Any


class AdadeltaState(NamedTuple):
    count: jax.Array
    square_avg: Any
    acc_delta: Any


class AsgdState(NamedTuple):
    count: jax.Array
    ax: Any


class RpropState(NamedTuple):
    count: jax.Array
    prev: Any
    step_size: Any


class LambState(NamedTuple):
    count: jax.Array
    exp_avg: Any
    exp_avg_sq: Any


def _checked(rule: str, given: Dict[str, Tuple[str, Any]]) -> Dict[str, Any]:
    """The kernel's values from ``given`` (kernel name -> (the argument's name here, value)): each checked
    against its rule with the argument's own name, then all together by the kernel itself on empty lists
    (the rules that tie values together, such as Rprop's step_size_min <= step_size_max)."""
    values: Dict[str, Any] = {}
    for key, (argument, value) in given.items():
        kind = _KINDS[rule][key]
        if kind == "flag":
            values[key] = bool(value)
        elif value is None and kind.startswith("optional"):
            values[key] = None
        elif kind in ("non_negative", "optional_non_negative"):
            values[key] = checks.nonnegative(argument, value)
        elif kind == "positive":
            values[key] = checks.positive(argument, value)
        elif kind in ("unit_interval", "closed_unit", "optional_unit"):
            values[key] = checks.unit_interval(argument, value, closed=kind != "unit_interval")
        else:  # finite, at_least_one (the kernel's check below says more)
            values[key] = checks.real(argument, value)
    n_states = len(_RULES[rule]["operands"]) - 2
    probe = dict(values, step=1) if _RULES[rule]["takes_step"] else dict(values)
    getattr(fastopt, _RULES[rule]["function"])([], [], *[[] for _ in range(n_states)], **probe)
    return values


def _rule(rule: str, state_type: type, initial: Tuple[float, ...], learning_rate, values: Dict[str, Any],
          reads_params: bool = False) -> GradientTransformation:
    fields = state_type._fields[1:]
    weight_decay = values.pop("weight_decay", 0.0)
    return _transform(_Spec(
        rule, f"fastopt_rule_{rule}", state_type, fields, (True,) * len(fields), initial, values,
        _lr(learning_rate) if "lr" in _ORDER[rule] else learning_rate, weight_decay,
        values_order=_ORDER[rule], reads_params=reads_params))


# ------------------------------------------------------------------ the optimizers

def lion(learning_rate, b1: float = 0.9, b2: float = 0.99, mu_dtype=None, weight_decay: float = 0.0, mask=None, *,
         maximize: bool = False) -> GradientTransformation:
    """Lion (Chen et al. 2023; fastopt.torch.Lion): ``p *= 1 - learning_rate * weight_decay``;
    ``p -= learning_rate * sign(b1 * m + (1 - b1) * g)``; ``m = b2 * m + (1 - b2) * g``. optax.lion computes
    the same quantity (``p - lr * (sign(...) + weight_decay * p)``, other roundings); its default
    weight_decay is 1e-3, fastopt's 0."""
    checks.only("mu_dtype", mu_dtype, None, "exp_avg has the parameter's dtype")
    checks.only("mask", mask, None, "every leaf is decayed (fastopt.jax.adamw takes a mask)")
    values = _checked("lion", dict(beta1=("b1", b1), beta2=("b2", b2), weight_decay=("weight_decay", weight_decay),
                                   maximize=("maximize", maximize)))
    return _rule("lion", LionState, (0.0,), learning_rate, values)


def nadam(learning_rate, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8, eps_root: float = 0.0,
          mu_dtype=None, *, weight_decay: float = 0.0, momentum_decay: float = 4e-3,
          decoupled_weight_decay: bool = False, maximize: bool = False) -> GradientTransformation:
    """torch.optim.NAdam: the momentum schedule ``mu_t = b1 * (1 - 0.5 * 0.96^(t * momentum_decay))`` and
    its running product (computed from the step), weight decay L2 or decoupled. optax.nadam is a different
    formula (Dozat's, without the schedule); these are torch's numbers and defaults (learning rate 2e-3 in
    torch)."""
    checks.only("eps_root", eps_root, 0.0, "torch's NAdam has no eps inside the square root")
    checks.only("mu_dtype", mu_dtype, None, "the moments have the parameter's dtype")
    values = _checked("nadam", dict(beta1=("b1", b1), beta2=("b2", b2), eps=("eps", eps),
                                    weight_decay=("weight_decay", weight_decay),
                                    momentum_decay=("momentum_decay", momentum_decay),
                                    decoupled_weight_decay=("decoupled_weight_decay", decoupled_weight_decay),
                                    maximize=("maximize", maximize), mu_product=("mu_product", None)))
    return _rule("nadam", NadamState, (0.0, 0.0), learning_rate, values)


def radam(learning_rate, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8, eps_root: float = 0.0,
          threshold: float = 5.0, *, nesterov: bool = False, weight_decay: float = 0.0,
          decoupled_weight_decay: bool = False, maximize: bool = False) -> GradientTransformation:
    """torch.optim.RAdam: Adam's moments with the variance rectification once ``rho_t > 5``, a bias-corrected
    momentum step before; weight decay L2 or decoupled. optax.radam adds eps to the bias-corrected
    ``sqrt(v_hat)`` where torch adds it to ``sqrt(v)`` (the same to about eps / sqrt(v) relative); its
    threshold is torch's 5 (the only value taken here), eps_root 0, no nesterov."""
    checks.only("eps_root", eps_root, 0.0, "torch's RAdam has no eps inside the square root")
    checks.only("threshold", threshold, 5.0, "torch's rectification starts at rho_t > 5")
    checks.only("nesterov", nesterov, False, "torch's RAdam has no Nesterov momentum")
    values = _checked("radam", dict(beta1=("b1", b1), beta2=("b2", b2), eps=("eps", eps),
                                    weight_decay=("weight_decay", weight_decay),
                                    decoupled_weight_decay=("decoupled_weight_decay", decoupled_weight_decay),
                                    maximize=("maximize", maximize)))
    return _rule("radam", RadamState, (0.0, 0.0), learning_rate, values)


def adamax(learning_rate, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8, *, weight_decay: float = 0.0,
           maximize: bool = False) -> GradientTransformation:
    """torch.optim.Adamax: ``m = b1 * m + (1 - b1) * g``, ``u = max(b2 * u, |g| + eps)``, ``p -= (learning_rate
    / (1 - b1^t)) * m / u``. optax.adamax computes the same quantity (torch's weight_decay is L2, which
    optax's has not)."""
    values = _checked("adamax", dict(beta1=("b1", b1), beta2=("b2", b2), eps=("eps", eps),
                                     weight_decay=("weight_decay", weight_decay), maximize=("maximize", maximize)))
    return _rule("adamax", AdamaxState, (0.0, 0.0), learning_rate, values)


def adadelta(learning_rate=1.0, rho: float = 0.9, eps: float = 1e-6, weight_decay: float = 0.0,
             weight_decay_mask=None, *, maximize: bool = False) -> GradientTransformation:
    """torch.optim.Adadelta: ``v = rho * v + (1 - rho) * g^2``, ``d = sqrt(u + eps) / sqrt(v + eps) * g``,
    ``u = rho * u + (1 - rho) * d^2``, ``p -= learning_rate * d``; weight_decay is L2. optax.adadelta
    computes the same quantity; torch's learning rate default is 1.0 (optax: None, required)."""
    checks.only("weight_decay_mask", weight_decay_mask, None, "every leaf is decayed")
    values = _checked("adadelta", dict(rho=("rho", rho), eps=("eps", eps), weight_decay=("weight_decay", weight_decay),
                                       maximize=("maximize", maximize)))
    return _rule("adadelta", AdadeltaState, (0.0, 0.0), learning_rate, values)


def asgd(learning_rate=1e-2, lambd: float = 1e-4, alpha: float = 0.75, t0: float = 1e6, *, weight_decay: float = 0.0,
         maximize: bool = False) -> GradientTransformation:
    """torch.optim.ASGD (optax has none): ``p *= 1 - lambd * eta``, ``p -= eta * g``, the average ``ax``
    of the iterates from step t0 on, with ``eta = learning_rate / (1 + lambd * learning_rate * t)^alpha`` and
    ``mu = 1 / max(1, t - t0)`` (computed from the step, as torch keeps them)."""
    values = _checked("asgd", dict(lambd=("lambd", lambd), alpha=("alpha", alpha), t0=("t0", t0),
                                   weight_decay=("weight_decay", weight_decay), maximize=("maximize", maximize),
                                   eta=("eta", None), mu=("mu", None)))
    return _rule("asgd", AsgdState, (0.0,), learning_rate, values, reads_params=True)  # (lambd's decay, ax)


def rprop(learning_rate, eta_minus: float = 0.5, eta_plus: float = 1.2, min_step_size: float = 1e-6,
          max_step_size: float = 50.0, *, maximize: bool = False) -> GradientTransformation:
    """torch.optim.Rprop: per element a step size, starting at learning_rate, times eta_plus while the
    gradient's sign holds and eta_minus when it flips (then that element does not move and its gradient
    counts as 0), clamped to [min_step_size, max_step_size]; ``p -= sign(g) * step_size``. optax.rprop takes
    the same arguments but other numbers: it keeps ``step_size * sign(g)`` as its previous value and applies
    it one step later. learning_rate is only the first step size: a number, not a schedule."""
    if callable(learning_rate) or isinstance(learning_rate, (jax.Array, np.ndarray)):
        raise TypeError("rprop's learning_rate is the first step size of every element: a number, not a "
                        "schedule or an array")
    first = checks.nonnegative("learning_rate", learning_rate)
    values = _checked("rprop", dict(etaminus=("eta_minus", eta_minus), etaplus=("eta_plus", eta_plus),
                                    step_size_min=("min_step_size", min_step_size),
                                    step_size_max=("max_step_size", max_step_size), maximize=("maximize", maximize)))
    return _rule("rprop", RpropState, (0.0, first), first, values)


def lamb(learning_rate, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-6, eps_root: float = 0.0,
         weight_decay: float = 0.01, mask=None, *, bias_correction: bool = True, max_grad_norm: Optional[float] = None,
         maximize: bool = False) -> GradientTransformation:
    """LAMB (You et al. 2020; fastopt.torch.LAMB, apex's FusedLAMB): Adam's moments, ``u = m_hat / (sqrt(v_hat)
    + eps) + weight_decay * p``, ``p -= learning_rate * (||p|| / ||u||) * u`` per leaf (ratio 1 where a norm is
    0), optional clipping of the global gradient norm (max_grad_norm). optax.lamb computes the same trust
    ratio; its default weight_decay is 0, fastopt's (apex's) 0.01. The norms read whole leaves: a large
    list is shared out over XLA's threads by whole leaves, as one call when max_grad_norm clips."""
    checks.only("eps_root", eps_root, 0.0, "LAMB's eps is added after the square root")
    checks.only("mask", mask, None, "every leaf is decayed")
    values = _checked("lamb", dict(beta1=("b1", b1), beta2=("b2", b2), eps=("eps", eps),
                                   weight_decay=("weight_decay", weight_decay),
                                   bias_correction=("bias_correction", bias_correction),
                                   max_grad_norm=("max_grad_norm", max_grad_norm), maximize=("maximize", maximize)))
    return _rule("lamb", LambState, (0.0, 0.0), learning_rate, values, reads_params=True)
