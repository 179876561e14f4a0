"""fastopt.optim against torch.optim's for-loop implementation (foreach=False): same hyperparameters,
param groups with different lrs, an lr change mid-run, 60 steps of random gradients."""

from __future__ import annotations

import numpy as np
import pytest

from fastopt import optim
from optim_cases import CASE_IDS, OPTIM_CASES

torch = pytest.importorskip("torch")

SIZES = [7, 1, 1000, 65]
TOLERANCE = {np.float64: dict(rtol=1e-10, atol=1e-12), np.float32: dict(rtol=1e-5, atol=1e-6)}


@pytest.mark.parametrize("name,hyper", OPTIM_CASES, ids=CASE_IDS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
def test_matches_torch_optim(name, hyper, dtype):
    seed = np.random.SeedSequence().entropy % (2**31)
    print(f"seed={seed}")
    rng = np.random.default_rng(seed)
    params = [rng.standard_normal(n).astype(dtype) for n in SIZES]
    tparams = [torch.nn.Parameter(torch.from_numpy(p.copy())) for p in params]

    def groups(ps):
        return [{"params": ps[:2]}, {"params": ps[2:], "lr": hyper["lr"] * 0.3}]

    ours = getattr(optim, name)(groups(params), **hyper)
    theirs = getattr(torch.optim, name)(groups(tparams), foreach=False, **hyper)
    for step in range(60):
        if step == 30:
            for group in ours.param_groups + theirs.param_groups:
                group["lr"] *= 0.5
        grads = [rng.standard_normal(n).astype(dtype) for n in SIZES]
        for tp, g in zip(tparams, grads):
            tp.grad = torch.from_numpy(g.copy())
        theirs.step()
        ours.step(grads)
    for i, (p, tp) in enumerate(zip(params, tparams)):
        np.testing.assert_allclose(p, tp.detach().numpy(), err_msg=f"params[{i}]", **TOLERANCE[dtype])
