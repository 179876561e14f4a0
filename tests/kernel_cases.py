"""The table every kernel test draws from: for each optimizer, its fused kernel, its NumPy reference,
its state arguments, the flag combinations worth covering and a random draw of the other
hyperparameters."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Dict, List, Sequence

import numpy as np

import fastopt
from fastopt import reference


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

CASES_BY_NAME = {case.name: case for case in CASES}


def draw_hyper(case: KernelCase, config: str, rng: np.random.Generator) -> dict:
    hyper = case.draw(rng, case.configs[config])
    if case.name == "adagrad":
        # Not a kernel argument: the value the caller starts state_sums at.
        hyper["initial_accumulator_value"] = float(rng.choice([0.0, 0.1]))
    return hyper


def kernel_kwargs(case: KernelCase, hyper: dict) -> dict:
    return {k: v for k, v in hyper.items() if k != "initial_accumulator_value"}
