"""PyTorch twins of torch.optim's SGD, Adagrad, RMSprop, Adam and AdamW, running fastopt's fused kernels.

Each is a torch.optim.Optimizer with torch's constructor arguments and defaults, param_groups, closures,
zero_grad and torch's state_dict format: a torch.optim state_dict loads into the twin and back, and
training continues with the same numbers. torch's LR schedulers, DistributedDataParallel and
ZeroRedundancyOptimizer(optimizer_class=...) work with them unchanged, and so does FSDP2 (fully_shard): DTensor
parameters are updated through their local shards, with state kept as DTensors laid out as the parameters,
as torch.optim keeps it, so torch.distributed.checkpoint's get/set_optimizer_state_dict work (a gradient or
state laid out otherwise, or a Partial placement, is refused). A step makes one fused call per
param group (and dtype), before anything is written checking that the tensors are dense and contiguous:
float32/float64 and float16/bfloat16 on the CPU (the CPU's half precision: SGD, Adagrad, RMSprop, Adam and
AdamW); on CUDA (when fastopt is built with its CUDA backend) the same, the work queued on torch's current
stream. float16/bfloat16 parameters get float32 optimizer state and float32 math, the parameter rounded to
nearest even once per step (torch's fused optimizers keep the state in the parameter's dtype;
load_state_dict converts). One device per param group. capturable=True
(Adam, AdamW, RMSprop) keeps the step counts on the device, so that torch.cuda.graph can capture step();
GradScaler drives the twins on both devices (on CUDA reading its scale and found_inf back once per step).
Anything else is refused with an error naming the parameter.

``linear_cross_entropy`` is torch.nn.functional.linear_cross_entropy's call on fastopt.linear_cross_entropy's
chunked loop, as torch custom ops with an autograd formula (the (N, V) logits never exist; no graph break under
torch.compile).

torch is optional for fastopt; this module is the only one that imports it.
"""

try:
    import torch  # noqa: F401
except ImportError as error:  # pragma: no cover - exercised by a subprocess test without torch
    raise ImportError("fastopt.torch needs PyTorch, which is not installed: `pip install torch` "
                      "(fastopt itself works without it)") from error

from fastopt.torch import _compile
from fastopt.torch._optimizer import FusedOptimizer
from fastopt.torch.adafactor import Adafactor
from fastopt.torch.adagrad import Adagrad
from fastopt.torch.adam import Adam, AdamW
from fastopt.torch.linear_cross_entropy import linear_cross_entropy
from fastopt.torch.muon import Muon
from fastopt.torch.rmsprop import RMSprop
from fastopt.torch.sgd import SGD
from fastopt.torch._from_rule import twin_class
from fastopt.rules import SPECS as _SPECS

# The optimizers described as rules (fastopt/rules/): Lion ...
for _spec in _SPECS:
    globals()[_spec.name] = twin_class(_spec)

# (torch.compile's op finds a traced step's class here: fastopt/torch/_compile.py; Muon's step, with its
# matrix products in torch, is left to the eager path)
_compile.TWINS.update((cls.__name__, cls) for cls in (SGD, Adagrad, RMSprop, Adam, AdamW))
_compile.TWINS.update((s.name, globals()[s.name]) for s in _SPECS)

__all__ = ["FusedOptimizer", "SGD", "Adagrad", "RMSprop", "Adam", "AdamW", *(s.name for s in _SPECS),
           "Muon", "Adafactor", "linear_cross_entropy"]
