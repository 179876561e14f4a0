"""Stateful optimizers over lists of NumPy arrays, with torch.optim's defaults, param_groups and
state_dict layout; every step runs the fused kernels of fastopt."""

from fastopt.optim.adagrad import Adagrad
from fastopt.optim.adam import Adam, AdamW
from fastopt.optim.checkpoint import load_checkpoint, save_checkpoint
from fastopt.optim.optimizer import Optimizer
from fastopt.optim.rmsprop import RMSprop
from fastopt.optim.sgd import SGD

__all__ = ["Optimizer", "SGD", "Adagrad", "RMSprop", "Adam", "AdamW", "save_checkpoint", "load_checkpoint"]
