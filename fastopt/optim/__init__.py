"""Stateful optimizers over lists of NumPy arrays, with torch.optim's defaults, param_groups and
state_dict layout; every step runs the fused kernels of fastopt."""

from fastopt.optim.adafactor import Adafactor
from fastopt.optim.adagrad import Adagrad
from fastopt.optim.adam import Adam, AdamW
from fastopt.optim.checkpoint import load_checkpoint, save_checkpoint
from fastopt.optim.optimizer import Optimizer
from fastopt.optim.muon import Muon
from fastopt.optim.rmsprop import RMSprop
from fastopt.optim.sgd import SGD
from fastopt.optim._from_rule import optimizer_class
from fastopt.rules import SPECS as _SPECS

# The optimizers described as rules (fastopt/rules/): Lion ...
for _spec in _SPECS:
    globals()[_spec.name] = optimizer_class(_spec)

__all__ = ["Optimizer", "SGD", "Adagrad", "RMSprop", "Adam", "AdamW", *(s.name for s in _SPECS),
           "Muon", "Adafactor", "save_checkpoint", "load_checkpoint"]
