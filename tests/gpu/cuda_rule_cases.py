"""The optimizers described as rules (fastopt/rules/, csrc/include/fastopt/registry.h) for the CUDA tests.

kernel_cases.py is the table every kernel test draws from; a rule it has an entry for is taken from there
by name. For a rule it has no entry for yet, the small KernelCase below stands in (reference=None: the CUDA
tests then compare with fastopt's CPU kernel alone, which the CPU tests check against torch.optim), so that
the CUDA tests cover every registered rule either way. Each table's configurations reach every variant
of its rule (weight-decay modes, ASGD's averaging) that a few steps can reach; RAdam's rectification
needs step >= 6, which the many-step test of test_cuda_optim.py reaches.
"""

from __future__ import annotations

from typing import List, Tuple

import numpy as np

import fastopt
import fastopt.rules
from kernel_cases import CASES_BY_NAME, KernelCase

#: every registered rule's kernel name ("lion", "nadam", ...), in fastopt.rules.SPECS' order, then the passes
#: (Muon's), less any kernel_cases.py marks as having no CUDA path (cuda=False)
RULE_NAMES = [kernel.rstrip("_") for kernel in [spec.kernel for spec in fastopt.rules.SPECS] + list(fastopt.rules.PASSES)
              if getattr(CASES_BY_NAME.get(kernel.rstrip("_")), "cuda", True)]


def _maybe(rng: np.random.Generator, on: bool, low: float, high: float) -> float:
    return float(rng.uniform(low, high)) if on else 0.0


def _draw_lion(rng, cfg):
    return dict(lr=float(rng.uniform(1e-4, 1e-2)), beta1=float(rng.uniform(0.8, 0.95)),
                beta2=float(rng.uniform(0.9, 0.999)), weight_decay=_maybe(rng, cfg.get("wd", False), 1e-3, 0.1),
                maximize=cfg.get("maximize", False))


def _draw_adamax(rng, cfg):
    return dict(lr=float(rng.uniform(1e-4, 1e-2)), beta1=float(rng.uniform(0.8, 0.95)),
                beta2=float(rng.uniform(0.9, 0.9999)), eps=float(rng.choice([1e-8, 1e-6])),
                weight_decay=_maybe(rng, cfg.get("wd", False), 1e-3, 0.1), maximize=cfg.get("maximize", False))


def _draw_adadelta(rng, cfg):
    return dict(lr=float(rng.uniform(0.1, 1.0)), rho=float(rng.uniform(0.8, 0.95)), eps=float(rng.choice([1e-6, 1e-4])),
                weight_decay=_maybe(rng, cfg.get("wd", False), 1e-3, 0.1), maximize=cfg.get("maximize", False))


def _draw_adam_like(rng, cfg):  # RAdam and NAdam
    hyper = dict(lr=float(rng.uniform(1e-4, 1e-2)), beta1=float(rng.uniform(0.8, 0.95)),
                 beta2=float(rng.uniform(0.9, 0.9999)), eps=float(rng.choice([1e-8, 1e-6])),
                 weight_decay=_maybe(rng, cfg.get("wd", False), 1e-3, 0.1),
                 decoupled_weight_decay=cfg.get("decoupled", False), maximize=cfg.get("maximize", False))
    if cfg.get("nadam"):
        hyper["momentum_decay"] = float(rng.uniform(1e-3, 1e-2))
    return hyper


def _draw_rprop(rng, cfg):
    return dict(etaminus=float(rng.uniform(0.3, 0.7)), etaplus=float(rng.uniform(1.1, 1.5)),
                step_size_min=float(rng.choice([1e-6, 1e-4])), step_size_max=float(rng.choice([50.0, 0.05])),
                maximize=cfg.get("maximize", False))


def _draw_asgd(rng, cfg):
    # t0=0: mu = 1 / (t - 1) from step 3 on (ax averages); the default t0 keeps mu = 1 (ax copies p)
    return dict(lr=float(rng.uniform(1e-3, 0.1)), lambd=float(rng.choice([1e-4, 1e-2])),
                alpha=float(rng.uniform(0.5, 1.0)), t0=0.0 if cfg.get("average") else 1e6,
                weight_decay=_maybe(rng, cfg.get("wd", False), 1e-3, 0.1), maximize=cfg.get("maximize", False))


FALLBACK = [
    KernelCase("lion", fastopt.lion_, None, ("exp_avgs",), False,
               {"plain": dict(), "decay": dict(wd=True, maximize=True)}, _draw_lion),
    KernelCase("adamax", fastopt.adamax_, None, ("exp_avgs", "exp_infs"), True,
               {"plain": dict(), "l2": dict(wd=True, maximize=True)}, _draw_adamax),
    KernelCase("adadelta", fastopt.adadelta_, None, ("square_avgs", "acc_deltas"), False,
               {"plain": dict(), "l2": dict(wd=True, maximize=True)}, _draw_adadelta),
    KernelCase("radam", fastopt.radam_, None, ("exp_avgs", "exp_avg_sqs"), True,
               {"plain": dict(), "l2": dict(wd=True), "decoupled": dict(wd=True, decoupled=True, maximize=True)},
               _draw_adam_like),
    KernelCase("nadam", fastopt.nadam_, None, ("exp_avgs", "exp_avg_sqs"), True,
               {"plain": dict(nadam=True), "l2": dict(nadam=True, wd=True),
                "decoupled": dict(nadam=True, wd=True, decoupled=True, maximize=True)},
               _draw_adam_like),
    KernelCase("rprop", fastopt.rprop_, None, ("prevs", "step_sizes"), False,
               {"plain": dict(), "maximize": dict(maximize=True)}, _draw_rprop,
               initial_state=lambda state, hyper: 0.01 if state == "step_sizes" else 0.0),  # torch's lr
    KernelCase("asgd", fastopt.asgd_, None, ("axs",), True,
               {"plain": dict(), "averaged": dict(average=True, wd=True, maximize=True)}, _draw_asgd),
]
FALLBACK_BY_NAME = {case.name: case for case in FALLBACK}


def rule_case(name: str) -> KernelCase:
    """kernel_cases.py's entry for the rule when it has one, else the stand-in above."""
    return CASES_BY_NAME.get(name) or FALLBACK_BY_NAME[name]


# The (case, config) pairs of the rules kernel_cases.py has no entry for (the others are in its CASES, and
# so in interop_cases.CONFIGS already), and their configurations with the most flags on.
# (a rule in neither table is reported by test_cuda_rules.py's test_every_rule_has_cuda_cases)
MISSING = [FALLBACK_BY_NAME[name] for name in RULE_NAMES if name not in CASES_BY_NAME and name in FALLBACK_BY_NAME]
CONFIGS: List[Tuple[KernelCase, str]] = [(case, config) for case in MISSING for config in case.configs]
CONFIG_IDS = [f"{case.name}-{config}" for case, config in CONFIGS]
FULL: List[Tuple[KernelCase, str]] = [(case, list(case.configs)[-1]) for case in MISSING]
FULL_IDS = [case.name for case, _ in FULL]

# The rules whose per-call constants need the host step (RuleDefaults::kDeviceStep false in their headers:
# NAdam's mu_product, RAdam's rectification, ASGD's eta and mu): a device step is refused.
HOST_STEP_RULES = ("nadam", "radam", "asgd")


def takes_lr(case: KernelCase) -> bool:
    """The case's kernel takes lr (every optimizer but Rprop)."""
    return "lr" in case.draw(np.random.default_rng(0), case.configs[list(case.configs)[0]])


def takes_device_step(case: KernelCase) -> bool:
    """The case's kernel takes step as a device value (computing its constants on the device from it)."""
    return case.takes_step and case.name not in HOST_STEP_RULES
