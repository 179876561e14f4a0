"""The table every kernel test draws from: for each optimizer, its fused kernel, its NumPy reference,
its state arguments, the flag combinations worth covering and a random draw of the other
hyperparameters."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Dict, List, Sequence

import numpy as np

import fastopt
from fastopt import reference, references


@dataclass(frozen=True)
class KernelCase:
    name: str
    kernel: Callable
    reference: Callable
    states: Sequence[str]  # the kernel's state arguments, in positional order
    takes_step: bool
    configs: Dict[str, dict]  # named flag combinations
    draw: Callable[[np.random.Generator, dict], dict]  # hyperparameters for one config
    initial_state: Callable[[str, dict], float] = field(default=lambda state, hyper: 0.0)
    cuda: bool = True         # the CUDA backend has it
    device_step: bool = True  # takes lr/step as device arrays (not NAdam, RAdam, ASGD: host constants)

    def used_states(self, hyper: dict) -> List[str]:
        """The state arguments this configuration reads and writes (others are passed as None)."""
        return [s for s in self.states if _state_used(self.name, s, hyper)]


def _state_used(name: str, state: str, hyper: dict) -> bool:
    if state == "momentum_buffers":
        return hyper.get("momentum", 0.0) != 0.0
    if state == "grad_avgs":
        return hyper.get("centered", False)
    if state == "max_exp_avg_sqs":
        return hyper.get("amsgrad", False)
    return True


def _maybe(rng: np.random.Generator, on: bool, low: float, high: float) -> float:
    return float(rng.uniform(low, high)) if on else 0.0


def _draw_sgd(rng, cfg):
    return dict(lr=float(rng.uniform(1e-3, 0.1)),
                momentum=_maybe(rng, cfg["momentum"], 0.5, 0.99),
                dampening=_maybe(rng, cfg.get("dampening", False), 0.05, 0.5),
                weight_decay=_maybe(rng, cfg.get("wd", False), 1e-4, 1e-2),
                nesterov=cfg.get("nesterov", False), maximize=cfg.get("maximize", False))


def _draw_adagrad(rng, cfg):
    return dict(lr=float(rng.uniform(1e-3, 0.1)),
                lr_decay=_maybe(rng, cfg.get("lr_decay", False), 1e-3, 0.1),
                weight_decay=_maybe(rng, cfg.get("wd", False), 1e-4, 1e-2),
                eps=float(rng.choice([1e-10, 1e-6])), maximize=cfg.get("maximize", False))


def _draw_rmsprop(rng, cfg):
    return dict(lr=float(rng.uniform(1e-4, 1e-2)), alpha=float(rng.uniform(0.8, 0.999)),
                eps=float(rng.choice([1e-8, 1e-6])),
                weight_decay=_maybe(rng, cfg.get("wd", False), 1e-4, 1e-2),
                momentum=_maybe(rng, cfg.get("momentum", False), 0.5, 0.95),
                centered=cfg.get("centered", False), maximize=cfg.get("maximize", False))


def _draw_adam(rng, cfg):
    return dict(lr=float(rng.uniform(1e-4, 1e-2)), beta1=float(rng.uniform(0.8, 0.95)),
                beta2=float(rng.uniform(0.9, 0.9999)), eps=float(rng.choice([1e-8, 1e-6])),
                weight_decay=_maybe(rng, cfg.get("wd", False), 1e-3, 0.1),
                amsgrad=cfg.get("amsgrad", False), maximize=cfg.get("maximize", False))


CASES = [
    KernelCase(
        "sgd", fastopt.sgd_, reference.sgd, ("momentum_buffers",), True,
        {"plain": dict(momentum=False),
         "momentum": dict(momentum=True, dampening=True, wd=True),
         "nesterov": dict(momentum=True, nesterov=True, wd=True),
         "maximize": dict(momentum=True, maximize=True)},
        _draw_sgd),
    KernelCase(
        "adagrad", fastopt.adagrad_, reference.adagrad, ("state_sums",), True,
        {"plain": dict(), "decay": dict(lr_decay=True, wd=True), "maximize": dict(maximize=True, wd=True)},
        _draw_adagrad,
        initial_state=lambda state, hyper: hyper["initial_accumulator_value"]),
    KernelCase(
        "rmsprop", fastopt.rmsprop_, reference.rmsprop, ("square_avgs", "momentum_buffers", "grad_avgs"),
        False,
        {"plain": dict(), "momentum": dict(momentum=True, wd=True),
         "centered": dict(centered=True, momentum=True, maximize=True), "centered_only": dict(centered=True)},
        _draw_rmsprop),
    KernelCase(
        "adam", fastopt.adam_, reference.adam, ("exp_avgs", "exp_avg_sqs", "max_exp_avg_sqs"), True,
        {"plain": dict(), "l2": dict(wd=True), "amsgrad": dict(amsgrad=True, wd=True, maximize=True)},
        _draw_adam),
    KernelCase(
        "adamw", fastopt.adamw_, reference.adamw, ("exp_avgs", "exp_avg_sqs", "max_exp_avg_sqs"), True,
        {"plain": dict(), "decay": dict(wd=True), "amsgrad": dict(amsgrad=True, wd=True, maximize=True)},
        _draw_adam),
]



# ------------------------------------------------------------------ the optimizers described as rules
# Their references (fastopt/references/, written from torch's documented algorithms and the papers) update
# lists in place with torch's state names; _functional turns one into this table's form: a function of
# (param, grad, *states, **hyper, step) returning new arrays.

def _scalar_state(name: str, hyper: dict, step: int) -> dict:
    """The numbers torch keeps beside the arrays, as they are before update `step` of a run whose
    hyperparameters never changed (what the kernels compute from `step` when they are not given)."""
    if name == "nadam":
        product = 1.0
        for i in range(1, step):
            product *= hyper["beta1"] * (1.0 - 0.5 * 0.96 ** (i * hyper["momentum_decay"]))
        return {"mu_product": product}
    if name == "asgd":
        lr, t = hyper["lr"], step - 1
        return {"eta": lr / (1 + hyper["lambd"] * lr * t) ** hyper["alpha"],
                "mu": 1.0 if step == 1 else 1 / max(1, t - hyper["t0"])}
    return {}


def _functional(name: str, keys: Sequence[str]):
    step_fn = getattr(references, f"{name}_step")

    def reference_update(param, grad, *states, step=1, **hyper):
        p = param.copy()
        state = {key: s.copy() for key, s in zip(keys, states)}
        state.update(_scalar_state(name, hyper, step))
        step_fn([p], [grad], [state], step=step, **hyper)
        return (p, *[state[key] for key in keys])

    return reference_update


def _unit(rng, low=0.8, high=0.95):
    return float(rng.uniform(low, high))


def _draw_nadam(rng, cfg):
    return dict(lr=float(rng.uniform(1e-4, 1e-2)), beta1=_unit(rng), beta2=_unit(rng, 0.9, 0.9999),
                eps=float(rng.choice([1e-8, 1e-6])), weight_decay=_maybe(rng, cfg.get("wd", False), 1e-3, 0.1),
                momentum_decay=float(rng.uniform(1e-3, 1e-2)),
                decoupled_weight_decay=cfg.get("decoupled", False), maximize=cfg.get("maximize", False))


def _draw_radam(rng, cfg):
    return dict(lr=float(rng.uniform(1e-4, 1e-2)), beta1=_unit(rng),
                beta2=float(rng.uniform(0.85, 0.95)) if cfg.get("rectified") else float(rng.uniform(0.99, 0.9999)),
                eps=float(rng.choice([1e-8, 1e-6])), weight_decay=_maybe(rng, cfg.get("wd", False), 1e-3, 0.1),
                decoupled_weight_decay=cfg.get("decoupled", False), maximize=cfg.get("maximize", False))


def _draw_adamax(rng, cfg):
    return dict(lr=float(rng.uniform(1e-4, 1e-2)), beta1=_unit(rng), beta2=_unit(rng, 0.9, 0.9999),
                eps=float(rng.choice([1e-8, 1e-6])), weight_decay=_maybe(rng, cfg.get("wd", False), 1e-3, 0.1),
                maximize=cfg.get("maximize", False))


def _draw_adadelta(rng, cfg):
    return dict(lr=float(rng.uniform(0.1, 1.0)), rho=_unit(rng), eps=float(rng.choice([1e-6, 1e-4])),
                weight_decay=_maybe(rng, cfg.get("wd", False), 1e-3, 0.1), maximize=cfg.get("maximize", False))


def _draw_asgd(rng, cfg):
    return dict(lr=float(rng.uniform(1e-3, 1e-2)), lambd=float(rng.uniform(1e-5, 1e-3)),
                alpha=float(rng.uniform(0.5, 0.9)), t0=float(rng.integers(3, 20)) if cfg.get("average") else 1e6,
                weight_decay=_maybe(rng, cfg.get("wd", False), 1e-3, 0.1), maximize=cfg.get("maximize", False))


def _draw_rprop(rng, cfg):
    return dict(etaminus=float(rng.uniform(0.3, 0.7)), etaplus=float(rng.uniform(1.1, 1.5)),
                step_size_min=float(rng.uniform(1e-6, 1e-4)), step_size_max=float(rng.uniform(0.05, 1.0)),
                maximize=cfg.get("maximize", False))


def _draw_lion(rng, cfg):
    return dict(lr=float(rng.uniform(1e-5, 1e-3)), beta1=_unit(rng), beta2=_unit(rng, 0.95, 0.999),
                weight_decay=_maybe(rng, cfg.get("wd", False), 1e-3, 0.1), maximize=cfg.get("maximize", False))


def _draw_muon_momentum(rng, cfg):
    return dict(momentum=_unit(rng, 0.8, 0.99), nesterov=cfg.get("nesterov", False),
                maximize=cfg.get("maximize", False))


def _draw_muon_apply(rng, cfg):
    return dict(lr=float(rng.uniform(1e-4, 1e-2)), weight_decay=_maybe(rng, cfg.get("wd", False), 1e-3, 0.1),
                lr_scale=float(rng.uniform(0.5, 4.0)))


def _draw_lamb(rng, cfg):
    return dict(lr=float(rng.uniform(1e-4, 1e-2)), beta1=_unit(rng), beta2=_unit(rng, 0.9, 0.9999),
                eps=float(rng.choice([1e-6, 1e-8])), weight_decay=_maybe(rng, cfg.get("wd", True), 1e-3, 0.1),
                bias_correction=cfg.get("bias_correction", True), maximize=cfg.get("maximize", False))


RULE_CASES = [
    KernelCase("nadam", fastopt.nadam_, _functional("nadam", ("exp_avg", "exp_avg_sq")),
               ("exp_avgs", "exp_avg_sqs"), True,
               {"plain": dict(), "l2": dict(wd=True), "decoupled": dict(wd=True, decoupled=True, maximize=True)},
               _draw_nadam, device_step=False),
    KernelCase("radam", fastopt.radam_, _functional("radam", ("exp_avg", "exp_avg_sq")),
               ("exp_avgs", "exp_avg_sqs"), True,
               {"plain": dict(), "rectified": dict(rectified=True, wd=True),
                "decoupled": dict(rectified=True, wd=True, decoupled=True, maximize=True)},
               _draw_radam, device_step=False),
    KernelCase("adamax", fastopt.adamax_, _functional("adamax", ("exp_avg", "exp_inf")), ("exp_avgs", "exp_infs"),
               True, {"plain": dict(), "l2": dict(wd=True, maximize=True)}, _draw_adamax),
    KernelCase("adadelta", fastopt.adadelta_, _functional("adadelta", ("square_avg", "acc_delta")),
               ("square_avgs", "acc_deltas"), False, {"plain": dict(), "l2": dict(wd=True, maximize=True)},
               _draw_adadelta),
    KernelCase("asgd", fastopt.asgd_, _functional("asgd", ("ax",)), ("axs",), True,
               {"plain": dict(), "averaging": dict(average=True, wd=True, maximize=True)}, _draw_asgd,
               device_step=False),
    KernelCase("rprop", fastopt.rprop_, _functional("rprop", ("prev", "step_size")), ("prevs", "step_sizes"), False,
               {"plain": dict(), "maximize": dict(maximize=True)}, _draw_rprop,
               initial_state=lambda state, hyper: 0.01 if state == "step_sizes" else 0.0),
    KernelCase("lion", fastopt.lion_, _functional("lion", ("exp_avg",)), ("exp_avgs",), False,
               {"plain": dict(), "decay": dict(wd=True, maximize=True)}, _draw_lion),
    KernelCase("lamb", fastopt.lamb_, _functional("lamb", ("exp_avg", "exp_avg_sq")), ("exp_avgs", "exp_avg_sqs"),
               True, {"plain": dict(), "no_bias_correction": dict(bias_correction=False, maximize=True)},
               _draw_lamb),
    # Muon's elementwise passes (the Newton-Schulz iteration between them is matrix work, not a rule): the
    # momentum pass writes the iteration's input into its first operand; the apply pass reads the
    # orthogonalised update in the gradient's slot.
    KernelCase("muon_momentum", fastopt.muon_momentum_, _functional("muon_momentum", ("momentum_buffer",)),
               ("momentum_buffers",), False,
               {"plain": dict(), "nesterov": dict(nesterov=True), "maximize": dict(nesterov=True, maximize=True)},
               _draw_muon_momentum),
    KernelCase("muon_apply", fastopt.muon_apply_, _functional("muon_apply", ()), (), False,
               {"plain": dict(), "decay": dict(wd=True)}, _draw_muon_apply),
]
CASES = CASES + RULE_CASES

CASES_BY_NAME = {case.name: case for case in CASES}


def draw_hyper(case: KernelCase, config: str, rng: np.random.Generator) -> dict:
    hyper = case.draw(rng, case.configs[config])
    if case.name == "adagrad":
        # Not a kernel argument: the value the caller starts state_sums at.
        hyper["initial_accumulator_value"] = float(rng.choice([0.0, 0.1]))
    return hyper


def kernel_kwargs(case: KernelCase, hyper: dict) -> dict:
    return {k: v for k, v in hyper.items() if k != "initial_accumulator_value"}
