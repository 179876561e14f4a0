"""What the benchmarks compute: the work of one call (arrays and hyperparameters) and its bytes model.

A workload says what is computed, never by whom (that is backends.py): every implementation gets
the same initial values and hyperparameters, and effective bandwidth is the bytes an ideal fused pass
must move divided by the time of one call. CPU workloads hold NumPy arrays; CUDA workloads (device
"cuda") hold torch CUDA tensors drawn on the GPU, where the big sizes take milliseconds to make.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Tuple

import numpy as np

from fastopt.rules import SPECS

OPTIMIZERS = ("sgd", "adagrad", "rmsprop", "adam", "adamw")
# The optimizers described as rules (fastopt.rules.SPECS, the registry's Python side), by kernel name
# without its "_": a rule added there gets its rows here without a change to this file.
RULE_SPECS = {spec.kernel[:-1]: spec for spec in SPECS}
RULE_OPTIMIZERS = tuple(RULE_SPECS)
ALL_OPTIMIZERS = OPTIMIZERS + RULE_OPTIMIZERS
LOSSES = ("cross_entropy", "softmax", "linear_cross_entropy")
LINEAR_LOSS = "linear_cross_entropy"  # timed at its own (N, D, V) shapes, not at the logits shapes

# Arrays moved per element by one fused update (reads + writes of params, grads and state), in units
# of the element size: AdamW in float32 moves 7 * 4 = 28 bytes per element.
TRAFFIC = {
    "sgd": 5,      # momentum: read p, g, buf; write p, buf
    "adagrad": 5,  # read p, g, sum; write p, sum
    "rmsprop": 5,  # read p, g, square_avg; write p, square_avg
    "adam": 7,     # read p, g, m, v; write p, m, v
    "adamw": 7,
}
# The losses: read the logits twice (online max and sum, then the output), write the output once.
LOSS_TRAFFIC = 3
# On the CPU a row stays in cache between its two passes (csrc/cpu/loss_loops.h, rows up to half the
# L2 of a core: every default shape), so memory sees one read and one write: the floor.
LOSS_TRAFFIC_CPU = 2
# The bandwidth probe a += b: read a and b, write a.
PROBE_TRAFFIC = 3

# State arrays each update takes in the benchmark's configuration (SGD with momentum, no amsgrad).
STATE_ARRAYS = {"sgd": 1, "adagrad": 1, "rmsprop": 1, "adam": 2, "adamw": 2}
# torch.optim's argument names; torch's defaults for everything not listed.
HYPER = {
    "sgd": dict(lr=1e-3, momentum=0.9),
    "adagrad": dict(lr=1e-2),
    "rmsprop": dict(lr=1e-2),
    "adam": dict(lr=1e-3),
    "adamw": dict(lr=1e-3, weight_decay=1e-2),
}
# The step number every timed call passes (RMSprop takes none). Not 1: SGD's first step only copies
# the gradient into the momentum buffer, a lighter pass than the steady state torch runs.
STEP = {"sgd": 10, "adagrad": 10, "rmsprop": None, "adam": 10, "adamw": 10}


def _rule_traffic(name: str) -> int:
    """A rule's arrays moved per element: the gradient read, params and every state read and written; a
    rule with per-tensor sums (LAMB's norms, tensor_sums in the registry) makes a second pass, which
    reads the params and the state again and writes the params (its first pass reads everything and
    writes the state)."""
    from fastopt import _core

    info = next(r for r in _core._rule_registry() if r["name"] == name)
    states = len(info["operands"]) - 2
    if info["tensor_sums"]:
        return (2 + states) + states + (1 + states) + 1
    return 1 + 2 * (1 + states)


def rule_group(name: str) -> dict:
    """A rule's hyperparameters as a param group holds them: the defaults of its fastopt.optim class
    (torch's, where torch has the optimizer), not maximizing."""
    return {**RULE_SPECS[name].defaults, "maximize": False}


# The rules run at their defaults (torch's defaults for torch's implementations: the same numbers);
# their kernels take the flat keywords RuleSpec.kernel_args makes of a group.
for _name, _spec in RULE_SPECS.items():
    TRAFFIC[_name] = _rule_traffic(_name)
    STATE_ARRAYS[_name] = len(_spec.state)
    HYPER[_name] = {}
    STEP[_name] = 10 if _spec.uses_step else None
# The torch device of the CUDA workloads (and of their copy probe).
CUDA_DEVICE = "cuda"


def gpt2_small_shapes() -> List[Tuple[str, Tuple[int, ...]]]:
    """The 148 parameter tensors of GPT-2 small (124,439,808 elements), in Hugging Face's order."""
    d, vocab, ctx, layers = 768, 50257, 1024, 12
    shapes = [("wte", (vocab, d)), ("wpe", (ctx, d))]
    for i in range(layers):
        h = f"h.{i}."
        shapes += [
            (h + "ln_1.weight", (d,)), (h + "ln_1.bias", (d,)),
            (h + "attn.c_attn.weight", (d, 3 * d)), (h + "attn.c_attn.bias", (3 * d,)),
            (h + "attn.c_proj.weight", (d, d)), (h + "attn.c_proj.bias", (d,)),
            (h + "ln_2.weight", (d,)), (h + "ln_2.bias", (d,)),
            (h + "mlp.c_fc.weight", (d, 4 * d)), (h + "mlp.c_fc.bias", (4 * d,)),
            (h + "mlp.c_proj.weight", (4 * d, d)), (h + "mlp.c_proj.bias", (d,)),
        ]
    shapes += [("ln_f.weight", (d,)), ("ln_f.bias", (d,))]
    return shapes


@dataclass
class UpdateWork:
    """One optimizer update over one array (single=True) or a list of arrays in one call."""

    optimizer: str
    params: list   # initial values (NumPy arrays, or CUDA tensors): every implementation updates its own copy
    grads: list    # shared by all implementations (an update only reads them)
    single: bool
    device: str = "cpu"

    @property
    def hyper(self) -> dict:
        """fastopt's keywords (and the NumPy reference's) for the update."""
        if self.optimizer in RULE_SPECS:
            return RULE_SPECS[self.optimizer].kernel_args(rule_group(self.optimizer))
        return HYPER[self.optimizer]

    @property
    def torch_hyper(self) -> dict:
        """torch.optim's keywords for the same update."""
        return HYPER[self.optimizer]

    @property
    def state_fills(self) -> List[float]:
        """The value each state array starts at (Rprop's step sizes start at lr; the rest at 0)."""
        if self.optimizer in RULE_SPECS:
            group = rule_group(self.optimizer)
            return [float(state.fill(group)) for state in RULE_SPECS[self.optimizer].state]
        return [0.0] * STATE_ARRAYS[self.optimizer]

    @property
    def step(self) -> Optional[int]:
        return STEP[self.optimizer]

    @property
    def n(self) -> int:
        return sum(_elements(p) for p in self.params)

    @property
    def bytes_moved(self) -> int:
        return TRAFFIC[self.optimizer] * self.n * self.params[0].itemsize


@dataclass
class LossWork:
    """A loss over (N, C) logits: "cross_entropy" (forward + backward) or "softmax" (forward)."""

    op: str
    logits: np.ndarray  # (or a CUDA tensor)
    labels: np.ndarray
    device: str = "cpu"

    @property
    def n(self) -> int:
        return _elements(self.logits)

    @property
    def bytes_moved(self) -> int:
        traffic = LOSS_TRAFFIC_CPU if self.device == "cpu" else LOSS_TRAFFIC
        return traffic * self.n * self.logits.itemsize


@dataclass
class LinearLossWork:
    """Linear cross-entropy forward + backward: hidden (N, D), weight (V, D) float32, labels (N,); gradients of
    hidden and weight. Compute-bound (6 N V D flops): its bytes model is only what must be read and written
    once (hidden, weight, their gradients), so its GB/s say little; time and memory are the figures."""

    hidden: np.ndarray
    weight: np.ndarray
    labels: np.ndarray

    @property
    def shape(self) -> Tuple[int, int, int]:
        (n, d), v = self.hidden.shape, self.weight.shape[0]
        return n, d, v

    @property
    def n(self) -> int:  # the logits a plain implementation holds
        n, _, v = self.shape
        return n * v

    @property
    def bytes_moved(self) -> int:
        n, d, v = self.shape
        return 2 * (n * d + v * d) * self.hidden.itemsize


def linear_loss_work(n: int, d: int, v: int, seed: int = 0) -> LinearLossWork:
    """Unit-variance hidden states, weights of scale 1/sqrt(D) (logits of about unit scale), uniform labels."""
    rng = np.random.default_rng(seed)
    hidden = rng.standard_normal((n, d), dtype=np.float32)
    weight = rng.standard_normal((v, d), dtype=np.float32)
    weight *= 1 / np.sqrt(d)
    return LinearLossWork(hidden, weight, rng.integers(0, v, n))


def _elements(a) -> int:
    return int(np.prod(a.shape))


def update_work(optimizer: str, shapes, dtype=np.float32, single: bool = True, seed: int = 0) -> UpdateWork:
    """Random parameters and small gradients of the given shapes (a list of shapes, or one size)."""
    if optimizer not in TRAFFIC:
        raise ValueError(f"unknown optimizer {optimizer!r}; choose from {ALL_OPTIMIZERS}")
    if isinstance(shapes, int):
        shapes = [(shapes,)]
    rng = np.random.default_rng(seed)
    params, grads = [], []
    for shape in shapes:
        params.append(rng.standard_normal(shape, dtype=dtype))
        g = rng.standard_normal(shape, dtype=dtype)
        g *= 1e-2
        grads.append(g)
    if single and len(params) != 1:
        raise ValueError("single=True takes one array")
    return UpdateWork(optimizer, params, grads, single)


def loss_work(op: str, n: int, c: int, dtype=np.float32, seed: int = 0) -> LossWork:
    """Logits of scale 3 (a realistic spread of probabilities) and uniform integer labels."""
    if op not in LOSSES:
        raise ValueError(f"unknown loss {op!r}; choose from {LOSSES}")
    rng = np.random.default_rng(seed)
    logits = rng.standard_normal((n, c), dtype=dtype)
    logits *= 3
    labels = rng.integers(0, c, n)
    return LossWork(op, logits, labels)


def cuda_update_work(optimizer: str, shapes, seed: int = 0) -> UpdateWork:
    """update_work on the GPU: float32 CUDA tensors of the given shapes (a list of shapes, or one size)
    from torch's CUDA generator, always passed as a list (single=False)."""
    import torch

    if isinstance(shapes, int):
        shapes = [(shapes,)]
    generator = torch.Generator(device=CUDA_DEVICE).manual_seed(seed)
    params = [torch.randn(shape, generator=generator, device=CUDA_DEVICE) for shape in shapes]
    grads = [torch.randn(shape, generator=generator, device=CUDA_DEVICE).mul_(1e-2) for shape in shapes]
    return UpdateWork(optimizer, params, grads, single=False, device="cuda")


def cuda_loss_work(op: str, n: int, c: int, seed: int = 0) -> LossWork:
    """loss_work on the GPU: (n, c) float32 logits of scale 3 and int64 labels, CUDA tensors."""
    import torch

    generator = torch.Generator(device=CUDA_DEVICE).manual_seed(seed)
    logits = torch.randn((n, c), generator=generator, device=CUDA_DEVICE).mul_(3)
    labels = torch.randint(0, c, (n,), generator=generator, device=CUDA_DEVICE)
    return LossWork(op, logits, labels, device="cuda")
