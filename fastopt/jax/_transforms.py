"""optax-style optimizers over fastopt's fused kernels: sgd, adagrad, rmsprop, adam, adamw.

Each returns a GradientTransformation, the (init, update) pair optax uses, with optax's argument
names, so it drops into optax.chain, flax's TrainState and anything else that calls init/update.
The numbers are torch.optim's (the rest of fastopt's); where optax computes differently the
docstrings say so (fastopt/jax/__init__.py has the table).

Two ways to step:

- ``updates, state = tx.update(grads, state, params)`` then ``optax.apply_updates(params, updates)``,
  as with any optax transformation. Without weight decay the kernel runs on a zero buffer and returns
  exactly the step it would add, so ``params + updates`` gives the fused kernel's bits; with weight
  decay (which reads the parameters) it runs on a copy of the parameters and returns
  ``new_params - params``, which ``params + updates`` rounds back to new_params exactly whenever the two
  are within a factor of 2 of each other (almost always), else to within an ulp of them.
- ``params, state = fastopt.jax.fused_apply(tx, grads, state, params)``: one kernel call updates
  parameters and state together, in place under ``jax.jit(..., donate_argnums=...)``.

Every leaf of one dtype (and one weight decay) goes to one FFI call: a whole model is one kernel
call, as fastopt's list calls are.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from fastopt.jax import _checks as checks
from fastopt.jax._ffi import update_call


class GradientTransformation(NamedTuple):
    """optax's pair: ``init(params) -> state`` and ``update(updates, state, params=None) -> (updates,
    state)``. Any optax combinator takes it (optax.chain wraps it like any plain pair)."""

    init: Callable[[Any], Any]
    update: Callable[..., Tuple[Any, Any]]


# States: count (int32, the updates done so far, as optax counts) and the torch.optim state buffers,
# pytrees shaped like the parameters (None where the configuration does not use them). float16 and
# bfloat16 parameters (on a GPU) have float32 state.

class SgdState(NamedTuple):
    count: jax.Array
    momentum_buffer: Any


class AdagradState(NamedTuple):
    count: jax.Array
    sum: Any


class RmspropState(NamedTuple):
    count: jax.Array
    square_avg: Any
    momentum_buffer: Any
    grad_avg: Any


class AdamState(NamedTuple):
    count: jax.Array
    exp_avg: Any
    exp_avg_sq: Any
    max_exp_avg_sq: Any


@dataclasses.dataclass(frozen=True)
class _Spec:
    """What a transform's kernel call needs besides the arrays."""

    name: str                        # "adamw", for messages
    target: str                      # the FFI target
    state_type: type
    fields: Tuple[str, ...]          # state buffers in the kernel's operand order
    used: Tuple[bool, ...]           # which of them this configuration keeps
    initial: Tuple[float, ...]       # their initial values
    attrs: Dict[str, Any]            # the kernel's hyperparameters, except lr and weight_decay
    learning_rate: Any               # a float, a 0-d array, or a schedule count -> lr
    weight_decay: float
    mask: Any = None                 # adamw: which leaves decay (optax's mask)
    # A rule's transform (fastopt/jax/_rules.py): its hyperparameters' names in the kernel's order, which
    # go to the kernel as one array (attrs, lr and weight_decay by name, None as NaN, flags as 0 / 1).
    values_order: Optional[Tuple[str, ...]] = None
    reads_params: bool = False       # the update reads the parameters beyond weight decay (LAMB's norms, ASGD's average)


# ------------------------------------------------------------------ init / update / fused_apply

def _init(spec: _Spec, params) -> Any:
    names, leaves, treedef = checks.flatten(params, "params")
    buffers = {}
    for field, used, initial in zip(spec.fields, spec.used, spec.initial):
        if not used:
            buffers[field] = None
            continue
        buffers[field] = treedef.unflatten([
            jnp.full(p.shape, initial, checks.state_dtype(checks.param_dtype(p, name)))
            for name, p in zip(names, leaves)])
    return spec.state_type(count=jnp.zeros([], jnp.int32), **buffers)


def _learning_rate(spec: _Spec, count: jax.Array) -> Tuple[float, Optional[jax.Array]]:
    """(lr attribute, lr operand): a Python number stays a double attribute, exactly as fastopt's other
    calls take it; a schedule's value or an array goes in as a 0-d operand, in its own precision."""
    lr = spec.learning_rate
    if not callable(lr) and not isinstance(lr, (jax.Array, np.ndarray)):
        return float(lr), None
    value = jnp.asarray(lr(count) if callable(lr) else lr)
    if value.size != 1:
        raise ValueError(f"{spec.name}: learning_rate must give a scalar, got shape {tuple(value.shape)}")
    value = value.reshape(())
    if np.dtype(value.dtype) not in checks.FLOATS:
        value = value.astype(jnp.float32)
    return 0.0, value


def _decays(spec: _Spec, params, treedef, count: int) -> List[float]:
    """The weight decay of each leaf: spec.weight_decay, or 0 where adamw's mask says no."""
    return leaf_decays(spec.mask, spec.weight_decay, params, treedef, count, "mask")


def leaf_decays(mask, weight_decay: float, params, treedef, count: int, mask_name: str) -> List[float]:
    """The weight decay of each of `count` leaves: weight_decay, or 0 where the mask (optax's: a pytree
    of bools like the parameters, or a function of them giving one) says False."""
    if mask is None or weight_decay == 0.0:
        return [weight_decay] * count
    mask = mask(params) if callable(mask) else mask
    mask_leaves, mask_def = jax.tree_util.tree_flatten(mask)
    checks.same_structure(mask_def, treedef, mask_name, "params")
    for i, m in enumerate(mask_leaves):
        if not isinstance(m, (bool, np.bool_)):
            raise TypeError(f"{mask_name} leaves must be Python bools (known while tracing), got "
                            f"{type(m).__name__} at leaf {i}")
    return [weight_decay if m else 0.0 for m in mask_leaves]


def _step(spec: _Spec, grads, state, params, fused: bool):
    if not isinstance(state, spec.state_type):
        raise TypeError(f"state must be the {spec.state_type.__name__} that {spec.name}'s init returned, "
                        f"got {type(state).__name__}")
    g_leaves, p_leaves, p_def, ref_names, ref_leaves, dtypes = checks.step_leaves(grads, params)
    buffers: Dict[str, List[jax.Array]] = {}
    for field, used in zip(spec.fields, spec.used):
        tree = getattr(state, field)
        if not used:
            continue
        label = f"state.{field}"
        if tree is None:
            raise ValueError(f"{label} is None but {spec.name} keeps it: pass the state its init returned")
        names, leaves, treedef = checks.flatten(tree, label)
        checks.same_structure(treedef, p_def, label, "params" if params is not None else "grads")
        for name, x, dtype, ref, ref_name in zip(names, leaves, dtypes, ref_leaves, ref_names):
            checks.check_like(x, name, checks.state_dtype(dtype), ref.shape, ref_name)
        buffers[field] = leaves
    count = checks.step_count(state.count)
    if params is None and spec.weight_decay != 0.0:
        raise ValueError(f"{spec.name} with weight_decay != 0 reads the parameters: call "
                         f"update(grads, state, params)")
    if params is None and spec.reads_params:
        raise ValueError(f"{spec.name} reads the parameters: call update(grads, state, params)")
    decays = _decays(spec, params, p_def, len(g_leaves))

    lr_attr, lr_operand = _learning_rate(spec, count)
    # optax counts with a saturating int32 increment; so do we (bias corrections are 1 long before)
    step = jnp.where(count == jnp.iinfo(count.dtype).max, count, count + 1)

    new_base: List[Optional[jax.Array]] = [None] * len(g_leaves)
    new_buffers = {field: [None] * len(g_leaves) for field in buffers}
    groups: Dict[Tuple[np.dtype, float], List[int]] = {}
    for i, (dtype, decay) in enumerate(zip(dtypes, decays)):
        groups.setdefault((dtype, decay), []).append(i)
    for (dtype, decay), members in groups.items():
        # The kernel's parameter operand: the parameters for fused_apply, and for update() a zero
        # buffer when the update does not read the parameters (then the kernel's result is the step).
        reads_params = fused or decay != 0.0 or spec.reads_params
        base = [p_leaves[i] if reads_params else jnp.zeros(g_leaves[i].shape, dtype) for i in members]
        blocks = [base, [g_leaves[i] for i in members]] + [[buffers[f][i] for i in members] for f in buffers]
        out = update_call(spec.target, blocks, [True, False] + [True] * len(buffers), lr=lr_operand, step=step,
                          attrs=_call_attrs(spec, lr_attr, decay))
        for i, new in zip(members, out[0]):
            new_base[i] = new if fused or not reads_params else new - p_leaves[i]
        for field, new_list in zip(buffers, out[1:]):
            for i, new in zip(members, new_list):
                new_buffers[field][i] = new
    new_state = spec.state_type(
        count=step,
        **{field: (p_def.unflatten(new_buffers[field]) if field in new_buffers else None) for field in spec.fields})
    return p_def.unflatten(new_base), new_state


def _call_attrs(spec: _Spec, lr: float, weight_decay: float) -> Dict[str, Any]:
    named = dict(spec.attrs, lr=lr, weight_decay=weight_decay)
    if spec.values_order is None:
        return named
    values = [np.nan if named[key] is None else float(named[key]) for key in spec.values_order]
    return dict(lr=lr, values=np.asarray(values, np.float64))


def _transform(spec: _Spec) -> GradientTransformation:
    def init(params):
        return _init(spec, params)

    def update(updates, state, params=None):
        return _step(spec, updates, state, params, fused=False)

    update._fastopt_fused = functools.partial(_step, spec, fused=True)  # what fused_apply runs
    return GradientTransformation(init, update)


def fused_apply(tx: GradientTransformation, grads, state, params):
    """Updates params and state in one fused kernel call (per dtype): ``(new_params, new_state)``.

    ``tx`` is a transform made by fastopt.jax (an optax chain cannot run as one kernel: use its update
    and optax.apply_updates). Under ``jax.jit(step, donate_argnums=...)`` with params and state donated,
    the kernel updates their buffers in place: XLA allocates nothing for them.
    """
    fused = getattr(getattr(tx, "update", None), "_fastopt_fused", None)
    if fused is None:
        raise TypeError("tx must be a transform made by fastopt.jax (sgd, adagrad, rmsprop, adam, adamw, lion, "
                        "nadam, radam, adamax, adadelta, asgd, rprop, lamb, muon, adafactor); "
                        "an optax chain cannot run as one kernel call: use tx.update and optax.apply_updates")
    if params is None:
        raise ValueError("fused_apply needs params: it updates them")
    return fused(grads, state, params)


# ------------------------------------------------------------------ the optimizers

def _lr(learning_rate):
    if callable(learning_rate) or isinstance(learning_rate, (jax.Array, np.ndarray)):
        return learning_rate
    return checks.nonnegative("learning_rate", learning_rate)


def sgd(learning_rate, momentum: Optional[float] = None, nesterov: bool = False, accumulator_dtype=None, *,
        dampening: float = 0.0, weight_decay: float = 0.0, maximize: bool = False) -> GradientTransformation:
    """torch.optim.SGD: ``g = grad + weight_decay * p``; with momentum the buffer starts as g on the
    first update and is ``momentum * b + (1 - dampening) * g`` after; Nesterov adds ``momentum * b`` to
    g; ``p -= learning_rate * g``. optax.sgd's numbers where optax has the option (optax has no
    dampening, weight decay or maximize)."""
    checks.only("accumulator_dtype", accumulator_dtype, None,
                "the momentum buffer has the parameter's dtype (float32 for float16/bfloat16 parameters)")
    momentum = 0.0 if momentum is None else checks.nonnegative("momentum", momentum)
    dampening = checks.real("dampening", dampening)
    if nesterov and (momentum <= 0 or dampening != 0):
        raise ValueError("nesterov=True requires momentum > 0 and dampening == 0")
    return _transform(_Spec(
        "sgd", "fastopt_sgd", SgdState, ("momentum_buffer",), (momentum != 0,), (0.0,),
        dict(momentum=momentum, dampening=dampening, nesterov=bool(nesterov), maximize=bool(maximize)),
        _lr(learning_rate), checks.nonnegative("weight_decay", weight_decay)))


def adagrad(learning_rate, initial_accumulator_value: float = 0.0, eps: float = 1e-10, *, lr_decay: float = 0.0,
            weight_decay: float = 0.0, maximize: bool = False) -> GradientTransformation:
    """torch.optim.Adagrad: ``sum += g * g``; ``p -= clr * g / (sqrt(sum) + eps)`` with
    ``clr = learning_rate / (1 + (t - 1) * lr_decay)``. optax.adagrad puts eps inside the square root
    (``g / sqrt(sum + eps)``) and defaults to initial_accumulator_value=0.1, eps=1e-7; these are torch's
    defaults (0 and 1e-10)."""
    return _transform(_Spec(
        "adagrad", "fastopt_adagrad", AdagradState, ("sum",), (True,),
        (checks.nonnegative("initial_accumulator_value", initial_accumulator_value),),
        dict(lr_decay=checks.nonnegative("lr_decay", lr_decay), eps=checks.positive("eps", eps),
             maximize=bool(maximize)),
        _lr(learning_rate), checks.nonnegative("weight_decay", weight_decay)))


def rmsprop(learning_rate, decay: float = 0.99, eps: float = 1e-8, initial_scale: float = 0.0,
            eps_in_sqrt: bool = False, centered: bool = False, momentum: Optional[float] = None,
            nesterov: bool = False, bias_correction: bool = False, *, weight_decay: float = 0.0,
            maximize: bool = False) -> GradientTransformation:
    """torch.optim.RMSprop (``decay`` is torch's alpha): ``sq = decay * sq + (1 - decay) * g * g``;
    ``avg = sqrt(sq - ga * ga)`` centered (``ga``: the running mean of g) else ``sqrt(sq)``, then
    ``avg += eps``; with momentum ``b = momentum * b + g / avg`` and ``p -= learning_rate * b``, else
    ``p -= learning_rate * g / avg``. optax.rmsprop defaults to decay=0.9 and eps inside the square root
    (eps_in_sqrt=True; only False is fastopt's, and torch's, form), and applies the learning rate before
    its momentum trace (the same numbers for a constant learning rate)."""
    checks.only("eps_in_sqrt", eps_in_sqrt, False, "fastopt adds eps after the square root, as torch does")
    checks.only("nesterov", nesterov, False, "torch's RMSprop has no Nesterov momentum")
    checks.only("bias_correction", bias_correction, False, "torch's RMSprop has no bias correction")
    momentum = 0.0 if momentum is None else checks.nonnegative("momentum", momentum)
    return _transform(_Spec(
        "rmsprop", "fastopt_rmsprop", RmspropState, ("square_avg", "momentum_buffer", "grad_avg"),
        (True, momentum > 0, bool(centered)),
        (checks.nonnegative("initial_scale", initial_scale), 0.0, 0.0),
        dict(alpha=checks.unit_interval("decay", decay, closed=True), eps=checks.positive("eps", eps),
             momentum=momentum, centered=bool(centered), maximize=bool(maximize)),
        _lr(learning_rate), checks.nonnegative("weight_decay", weight_decay)))


def _adam(name: str, decoupled: bool, learning_rate, b1, b2, eps, eps_root, mu_dtype, nesterov, weight_decay,
          mask, amsgrad, maximize) -> GradientTransformation:
    checks.only("eps_root", eps_root, 0.0, "torch's Adam has no eps inside the square root")
    checks.only("mu_dtype", mu_dtype, None,
                "the moments have the parameter's dtype (float32 for float16/bfloat16 parameters)")
    checks.only("nesterov", nesterov, False,
                "optax's Nesterov Adam is not one of fastopt's kernels (fastopt.jax.nadam is torch's NAdam)")
    return _transform(_Spec(
        name, "fastopt_adam", AdamState, ("exp_avg", "exp_avg_sq", "max_exp_avg_sq"), (True, True, bool(amsgrad)),
        (0.0, 0.0, 0.0),
        dict(beta1=checks.unit_interval("b1", b1), beta2=checks.unit_interval("b2", b2),
             eps=checks.positive("eps", eps), amsgrad=bool(amsgrad), decoupled=decoupled, maximize=bool(maximize)),
        _lr(learning_rate), checks.nonnegative("weight_decay", weight_decay), mask))


def adam(learning_rate, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8, eps_root: float = 0.0, mu_dtype=None,
         *, nesterov: bool = False, weight_decay: float = 0.0, amsgrad: bool = False,
         maximize: bool = False) -> GradientTransformation:
    """torch.optim.Adam: weight_decay is L2 (``g += weight_decay * p``, optax has no such option: it
    would chain add_decayed_weights before adam); ``m = b1 * m + (1 - b1) * g``, ``v = b2 * v + (1 - b2)
    * g * g``; ``p -= (learning_rate / (1 - b1^t)) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)``. optax.adam
    computes the same quantity as ``m_hat / (sqrt(v_hat) + eps)`` (other roundings, within a few ulps).
    amsgrad=True keeps torch's max of the raw v (optax.amsgrad takes the max of the bias-corrected v)."""
    return _adam("adam", False, learning_rate, b1, b2, eps, eps_root, mu_dtype, nesterov, weight_decay, None,
                 amsgrad, maximize)


def adamw(learning_rate, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8, eps_root: float = 0.0,
          mu_dtype=None, weight_decay: float = 1e-2, mask=None, *, nesterov: bool = False, amsgrad: bool = False,
          maximize: bool = False) -> GradientTransformation:
    """torch.optim.AdamW: decoupled decay ``p *= 1 - learning_rate * weight_decay`` before Adam's step.
    torch's default weight_decay=1e-2 (optax.adamw's is 1e-4); optax computes ``p - lr * (adam_step +
    weight_decay * p)``, the same quantity with other roundings. mask (optax's): a pytree of bools like
    the parameters, or a function of the parameters returning one; False leaves are not decayed."""
    return _adam("adamw", True, learning_rate, b1, b2, eps, eps_root, mu_dtype, nesterov, weight_decay, mask,
                 amsgrad, maximize)
