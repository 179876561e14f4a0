"""Learning-rate schedules: pure functions of the step, and small callable objects that the
``fastopt.optim`` optimizers accept as ``lr``.

The step is 0-based, as torch.optim.lr_scheduler's ``last_epoch``: ``f(step)`` is the learning rate
of the ``(step + 1)``-th update, so ``f(0)`` is the first update's. A torch scheduler that has been
stepped k times gives the optimizer ``f(k)``; an optimizer here, given a schedule as ``lr``, uses
``schedule(k)`` for its (k + 1)-th ``step()``.

Where torch has the schedule the numbers are its (closed forms of the same curves):

================================  ===========================================================
``step_decay``                    StepLR: ``base_lr * gamma ** (step // step_size)``
``exponential``                   ExponentialLR: ``base_lr * gamma ** step``
``cosine_annealing``              CosineAnnealingLR's closed form (periodic beyond T_max, as torch's)
``cosine_warm_restarts``          CosineAnnealingWarmRestarts (SGDR)
``one_cycle``                     OneCycleLR (the lr only; torch also cycles momentum)
``linear``                        LinearLR; the defaults are the notes' linear decay to 0
``warmup_cosine``                 the notes' default: linear warmup from 0, then cosine to min_lr
``inverse_sqrt``                  ``base_lr / sqrt(step + 1)``, with an optional linear warmup
================================  ===========================================================

Bad arguments raise ValueError naming the argument.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Dict

__all__ = [
    "step_decay", "exponential", "cosine_annealing", "cosine_warm_restarts", "one_cycle", "linear",
    "warmup_cosine", "inverse_sqrt",
    "Schedule", "StepDecay", "Exponential", "CosineAnnealing", "CosineWarmRestarts", "OneCycle", "Linear",
    "WarmupCosine", "InverseSqrt",
]


# ------------------------------------------------------------------------------------ argument checks
def _step(step: Any) -> int:
    if isinstance(step, bool) or not isinstance(step, int) and not hasattr(step, "__index__"):
        raise TypeError(f"step must be an int, got {type(step).__name__}")
    step = int(step)
    if step < 0:
        raise ValueError(f"step must be >= 0 (0-based), got {step}")
    return step


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an int >= 1, got {value!r}")
    return value


def _number(name: str, value: Any, low: float = -math.inf, high: float = math.inf, *,
            low_open: bool = False, high_open: bool = False) -> float:
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None
    ok = math.isfinite(x) and (x > low if low_open else x >= low) and (x < high if high_open else x <= high)
    if not ok:
        lo = "(" if low_open else "["
        hi = ")" if high_open else "]"
        raise ValueError(f"{name} must be a finite number in {lo}{low}, {high}{hi}, got {value!r}")
    return x


def _lr(name: str, value: Any) -> float:
    return _number(name, value, 0.0)


def _cosine(start: float, end: float, fraction: float) -> float:
    """From start (fraction 0) to end (fraction 1) along half a cosine."""
    return end + (start - end) * (1.0 + math.cos(math.pi * fraction)) / 2.0


# ------------------------------------------------------------------------------------ the functions
def step_decay(step: int, *, base_lr: float, step_size: int, gamma: float = 0.1) -> float:
    """The notes' step decay (torch StepLR): multiply by ``gamma`` every ``step_size`` steps."""
    step = _step(step)
    base_lr, step_size = _lr("base_lr", base_lr), _positive_int("step_size", step_size)
    gamma = _number("gamma", gamma, 0.0)
    return base_lr * gamma ** (step // step_size)


def exponential(step: int, *, base_lr: float, gamma: float) -> float:
    """``base_lr * gamma ** step`` (torch ExponentialLR)."""
    step = _step(step)
    return _lr("base_lr", base_lr) * _number("gamma", gamma, 0.0) ** step


def cosine_annealing(step: int, *, base_lr: float, T_max: int, eta_min: float = 0.0) -> float:
    """The notes' cosine annealing, ``eta_min + (base_lr - eta_min) * (1 + cos(pi * step / T_max)) / 2``:
    from base_lr at step 0 to eta_min at step T_max (torch CosineAnnealingLR's closed form, which
    keeps following the cosine, back up, beyond T_max)."""
    step = _step(step)
    base_lr, T_max, eta_min = _lr("base_lr", base_lr), _positive_int("T_max", T_max), _lr("eta_min", eta_min)
    return _cosine(base_lr, eta_min, step / T_max)


def cosine_warm_restarts(step: int, *, base_lr: float, T_0: int, T_mult: int = 1, eta_min: float = 0.0) -> float:
    """SGDR (torch CosineAnnealingWarmRestarts): cosine from base_lr towards eta_min over a cycle of
    T_0 steps, then restart at base_lr; each cycle is T_mult times longer than the one before."""
    step = _step(step)
    base_lr, eta_min = _lr("base_lr", base_lr), _lr("eta_min", eta_min)
    T_0, T_mult = _positive_int("T_0", T_0), _positive_int("T_mult", T_mult)
    # position in the current cycle, in whole steps (no float logarithm: exact at every restart)
    t_cur, t_i = step, T_0
    if T_mult == 1:
        t_cur = step % T_0
    else:
        while t_cur >= t_i:
            t_cur -= t_i
            t_i *= T_mult
    return _cosine(base_lr, eta_min, t_cur / t_i)


def one_cycle(step: int, *, max_lr: float, total_steps: int, pct_start: float = 0.3, anneal_strategy: str = "cos",
              div_factor: float = 25.0, final_div_factor: float = 1e4, three_phase: bool = False) -> float:
    """The 1-cycle policy (torch OneCycleLR's lr): from ``max_lr / div_factor`` up to ``max_lr`` over
    the first ``pct_start`` of ``total_steps``, then down to ``max_lr / div_factor / final_div_factor``
    (three_phase: back to the initial lr first, then down). ``anneal_strategy`` is "cos" or "linear".
    Valid for step <= total_steps, as torch's."""
    step = _step(step)
    max_lr, total_steps = _lr("max_lr", max_lr), _positive_int("total_steps", total_steps)
    pct_start = _number("pct_start", pct_start, 0.0, 1.0, low_open=True, high_open=True)
    div_factor = _number("div_factor", div_factor, 0.0, low_open=True)
    final_div_factor = _number("final_div_factor", final_div_factor, 0.0, low_open=True)
    if anneal_strategy not in ("cos", "linear"):
        raise ValueError(f"anneal_strategy must be 'cos' or 'linear', got {anneal_strategy!r}")
    if step > total_steps:
        raise ValueError(f"step must be <= total_steps ({total_steps}), got {step}")
    initial = max_lr / div_factor
    final = initial / final_div_factor
    up_end = float(pct_start * total_steps) - 1
    if three_phase:
        phases = [(up_end, initial, max_lr), (2 * up_end, max_lr, initial), (total_steps - 1, initial, final)]
    else:
        phases = [(up_end, initial, max_lr), (total_steps - 1, max_lr, final)]
    anneal = _cosine if anneal_strategy == "cos" else (lambda a, b, f: a + (b - a) * f)
    begin = 0.0
    for i, (end, start_lr, end_lr) in enumerate(phases):
        if step <= end or i == len(phases) - 1:
            return anneal(start_lr, end_lr, (step - begin) / (end - begin))
        begin = end
    raise AssertionError("unreachable")


def linear(step: int, *, base_lr: float, total_steps: int, start_factor: float = 1.0,
           end_factor: float = 0.0) -> float:
    """``base_lr`` times a factor going linearly from start_factor to end_factor over total_steps,
    then staying at end_factor (torch LinearLR). The defaults are the notes' linear decay
    ``base_lr * (1 - step / total_steps)``, clamped at 0."""
    step = _step(step)
    base_lr, total_steps = _lr("base_lr", base_lr), _positive_int("total_steps", total_steps)
    start_factor = _number("start_factor", start_factor, 0.0)
    end_factor = _number("end_factor", end_factor, 0.0)
    return base_lr * (start_factor + (end_factor - start_factor) * min(step, total_steps) / total_steps)


def warmup_cosine(step: int, *, base_lr: float, warmup_steps: int, total_steps: int, min_lr: float = 0.0) -> float:
    """The notes' default recipe: linear warmup ``base_lr * step / warmup_steps`` (0 at step 0), then
    cosine decay from base_lr at step warmup_steps to min_lr at total_steps, and min_lr after."""
    step = _step(step)
    base_lr, min_lr = _lr("base_lr", base_lr), _lr("min_lr", min_lr)
    if isinstance(warmup_steps, bool) or not isinstance(warmup_steps, int) or warmup_steps < 0:
        raise ValueError(f"warmup_steps must be an int >= 0, got {warmup_steps!r}")
    total_steps = _positive_int("total_steps", total_steps)
    if total_steps <= warmup_steps:
        raise ValueError(f"total_steps ({total_steps}) must be > warmup_steps ({warmup_steps})")
    if step < warmup_steps:
        return base_lr * step / warmup_steps
    progress = min(1.0, (step - warmup_steps) / (total_steps - warmup_steps))
    return _cosine(base_lr, min_lr, progress)


def inverse_sqrt(step: int, *, base_lr: float, warmup_steps: int = 0) -> float:
    """The notes' inverse square root ``base_lr / sqrt(t)`` with t = step + 1 the update number.
    With warmup_steps = w > 0: ``base_lr * min(t / w, sqrt(w / t))``, a linear rise to base_lr at
    t = w, then the same 1/sqrt decay (the Transformer schedule, normalised to peak at base_lr)."""
    step = _step(step)
    base_lr = _lr("base_lr", base_lr)
    if isinstance(warmup_steps, bool) or not isinstance(warmup_steps, int) or warmup_steps < 0:
        raise ValueError(f"warmup_steps must be an int >= 0, got {warmup_steps!r}")
    t = step + 1
    if warmup_steps == 0:
        return base_lr / math.sqrt(t)
    return base_lr * min(t / warmup_steps, math.sqrt(warmup_steps / t))


# ------------------------------------------------------------------------------------ the objects
class Schedule:
    """A schedule as an object: ``Schedule(fn, **hyperparameters)``, called with a step, returns
    ``fn(step, **hyperparameters)``. The hyperparameters are checked when it is made. The named
    subclasses below fix ``fn``. Pass one as ``lr`` to a ``fastopt.optim`` optimizer: each group's
    lr is then ``schedule(k)`` on the group's (k + 1)-th step."""

    function: Callable[..., float]

    def __init__(self, fn: Callable[..., float] = None, **hyperparameters: Any):
        if fn is not None:
            self.function = fn
        elif not hasattr(type(self), "function"):
            raise TypeError("Schedule needs a function: Schedule(fn, **hyperparameters)")
        self.hyperparameters: Dict[str, Any] = dict(hyperparameters)
        self(0)  # checks the hyperparameters now, not at the first step

    def __call__(self, step: int) -> float:
        return self.function(step, **self.hyperparameters)

    def __eq__(self, other: object) -> bool:
        return (type(other) is type(self) and other.function == self.function
                and other.hyperparameters == self.hyperparameters)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.hyperparameters.items())
        if type(self) is Schedule:
            return f"Schedule({getattr(self.function, '__name__', self.function)}, {args})"
        return f"{type(self).__name__}({args})"


def _named(name: str, fn: Callable[..., float]) -> type:
    cls = type(name, (Schedule,), {"function": staticmethod(fn), "__module__": __name__,
                                   "__doc__": f"``{name}(**kw)(step) == {fn.__name__}(step, **kw)``.\n\n"
                                              + (fn.__doc__ or "")})
    return cls


StepDecay = _named("StepDecay", step_decay)
Exponential = _named("Exponential", exponential)
CosineAnnealing = _named("CosineAnnealing", cosine_annealing)
CosineWarmRestarts = _named("CosineWarmRestarts", cosine_warm_restarts)
OneCycle = _named("OneCycle", one_cycle)
Linear = _named("Linear", linear)
WarmupCosine = _named("WarmupCosine", warmup_cosine)
InverseSqrt = _named("InverseSqrt", inverse_sqrt)
