"""Independent NumPy references for the optimizers fastopt adds (NAdam, RAdam, Adamax, Adadelta, ASGD,
Rprop, Adafactor, Muon: torch.optim's for-loop semantics; Lion and LAMB: from their papers).

Each module defines ``<name>_init_state(param, **hyper) -> dict`` (the state torch creates on the
first step, with torch's key names, without "step") and ``<name>_step(params, grads, states, *, step,
**hyper) -> None`` (one update of a list of arrays, in place; ``step`` is the 1-based number of this
update). Arithmetic happens in the arrays' dtype; per-step scalars are Python floats. Written from the
documented algorithms, sharing no code with fastopt's kernels or with ``fastopt.reference``.
"""

from fastopt.references.adafactor import adafactor_init_state, adafactor_step
from fastopt.references.adadelta import adadelta_init_state, adadelta_step
from fastopt.references.adamax import adamax_init_state, adamax_step
from fastopt.references.asgd import asgd_init_state, asgd_step
from fastopt.references.lamb import lamb_init_state, lamb_step
from fastopt.references.lion import lion_init_state, lion_step
from fastopt.references.muon import muon_init_state, muon_step, newton_schulz_float32
from fastopt.references.muon_passes import (muon_apply_init_state, muon_apply_step, muon_momentum_init_state,
                                          muon_momentum_step)
from fastopt.references.nadam import nadam_init_state, nadam_step
from fastopt.references.radam import radam_init_state, radam_rectifies, radam_step
from fastopt.references.rprop import rprop_init_state, rprop_step

__all__ = [
    "adafactor_init_state",
    "adafactor_step",
    "adadelta_init_state",
    "adadelta_step",
    "adamax_init_state",
    "adamax_step",
    "asgd_init_state",
    "asgd_step",
    "lamb_init_state",
    "lamb_step",
    "lion_init_state",
    "lion_step",
    "muon_init_state",
    "muon_step",
    "muon_apply_init_state",
    "muon_apply_step",
    "muon_momentum_init_state",
    "muon_momentum_step",
    "nadam_init_state",
    "nadam_step",
    "radam_init_state",
    "radam_rectifies",
    "radam_step",
    "rprop_init_state",
    "rprop_step",
    "newton_schulz_float32",
]
