"""What the twins' 8-bit state tests share: parameters of given shapes, the gradients of step t (the same for
every optimizer driven with them), stepping, copies, and fastopt's dynamic maps as tensors."""

from __future__ import annotations

import numpy as np
import torch

# 8192 and 5100 elements (a short last block) and 4096 (exactly min_8bit_size): 8-bit; 7, 35, 4095: float32
SHAPES = [(64, 128), (7,), (4096,), (5, 7), (300, 17), (4095,)]


def make(shapes=SHAPES, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(s, generator=gen)) for s in shapes]


def grads_for(shapes, t):
    gen = torch.Generator().manual_seed(1000 + t)
    return [torch.randn(s, generator=gen) * (1 + t % 3) for s in shapes]


def set_grads(params, t):
    for p, g in zip(params, grads_for([p.shape for p in params], t)):
        p.grad = g


def run(opt, params, steps, start=0):
    """`steps` steps of opt, the gradients of steps start, start + 1, ..."""
    for t in range(start, start + steps):
        set_grads(params, t)
        opt.step()


def copies(params):
    return [torch.nn.Parameter(p.detach().clone()) for p in params]


def dynamic_map(signed):
    """fastopt's (and bitsandbytes') dynamic map, signed or unsigned, as a float32 tensor."""
    from fastopt._quantized import SIGNED_MAP, UNSIGNED_MAP
    return torch.from_numpy(np.array(SIGNED_MAP if signed else UNSIGNED_MAP))
