"""PyTorch twins of torch.optim's SGD, Adagrad, RMSprop, Adam and AdamW, running fastopt's fused kernels.

Each is a torch.optim.Optimizer with torch's constructor arguments and defaults, param_groups, closures,
zero_grad and torch's state_dict format: a torch.optim state_dict loads into the twin and back, and
training continues with the same numbers. torch's LR schedulers, DistributedDataParallel and
ZeroRedundancyOptimizer(optimizer_class=...) work with them unchanged. A step makes one fused call per
param group. Today the tensors must be dense, contiguous, float32/float64 and on the CPU; anything else is
refused with an error naming the parameter, before anything is written.

torch is optional for fastopt; this module is the only one that imports it.
"""

try:
    import torch  # noqa: F401
except ImportError as error:  # pragma: no cover - exercised by a subprocess test without torch
    raise ImportError("fastopt.torch needs PyTorch, which is not installed: `pip install torch` "
                      "(fastopt itself works without it)") from error

from fastopt.torch._optimizer import FusedOptimizer
from fastopt.torch.adagrad import Adagrad
from fastopt.torch.adam import Adam, AdamW
from fastopt.torch.rmsprop import RMSprop
from fastopt.torch.sgd import SGD

__all__ = ["FusedOptimizer", "SGD", "Adagrad", "RMSprop", "Adam", "AdamW"]
