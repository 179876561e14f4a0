"""What the Adafactor kernel tests share (tests/kernels/test_adafactor.py on the CPU,
tests/gpu/test_cuda_adafactor.py on CUDA): the hyperparameters they draw and the state lists the kernel takes."""

from __future__ import annotations

from fastopt.references import adafactor_init_state


def draw_hyper(rng):
    """fastopt.adafactor_'s keyword arguments. lr in (0.2, 0.5): rho = min(lr, 1/sqrt(t)) takes both branches
    within 40 steps; d just above 1 or 1."""
    return dict(lr=float(rng.uniform(0.2, 0.5)), beta2_decay=float(rng.uniform(-1.0, -0.5)),
                eps1=None if rng.random() < 0.5 else float(10 ** rng.uniform(-8, -7)),
                eps2=float(10 ** rng.uniform(-4, -2)), d=float(rng.choice([1.0, rng.uniform(1.0, 1.2)])),
                weight_decay=float(rng.choice([0.0, rng.uniform(0.0, 0.1)])), maximize=bool(rng.integers(2)))


def make_state(params):
    """The reference's state dicts (torch's keepdim shapes, zeros) and the kernel's three state lists
    (row_vars, col_vars, variances: None where a parameter has no such buffer) over the same arrays."""
    states = [adafactor_init_state(p) for p in params]
    return states, ([s.get("row_var") for s in states], [s.get("col_var") for s in states],
                    [s.get("variance") for s in states])
