"""A small MLP, its data and its loss, shared by the torch twin tests and the distributed worker (which
runs in another process, so this module imports nothing from the tests)."""

from __future__ import annotations

import numpy as np
import torch

IN, HIDDEN, OUT = 6, 16, 3


def make_mlp(seed: int, dtype: torch.dtype) -> torch.nn.Module:
    generator = torch.Generator().manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(IN, HIDDEN), torch.nn.Tanh(), torch.nn.Linear(HIDDEN, OUT))
    with torch.no_grad():  # our own draw, independent of torch's global seed
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=generator) * 0.5)
    return model.to(dtype)


def make_batches(seed: int, steps: int, batch: int, dtype: torch.dtype):
    generator = torch.Generator().manual_seed(seed + 1)
    return [(torch.randn(batch, IN, generator=generator).to(dtype),
             torch.randint(0, OUT, (batch,), generator=generator)) for _ in range(steps)]


def loss_of(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, sign: float = 1.0) -> torch.Tensor:
    """Mean cross-entropy; sign=-1 gives the objective a `maximize=True` optimizer climbs."""
    return sign * torch.nn.functional.cross_entropy(model(x), y)


def fresh_seed() -> int:
    seed = int(np.random.SeedSequence().entropy % (2**31))
    print(f"seed={seed}")
    return seed


def groups(model, lr):
    """Two param groups: weights at lr, biases at lr/2 (so per-group hyperparameters matter)."""
    weights = [p for n, p in model.named_parameters() if n.endswith("weight")]
    biases = [p for n, p in model.named_parameters() if n.endswith("bias")]
    return [{"params": weights}, {"params": biases, "lr": lr / 2}]
