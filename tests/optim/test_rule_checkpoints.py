"""fastopt.optim's classes of the optimizers described as rules through .npz checkpoints (save / load), the
numbers kept beside the arrays (NAdam's mu_product, ASGD's eta and mu) included: a run that saves and loads
midway ends with the bits of a run that never stopped."""

from __future__ import annotations

import numpy as np
import pytest

import fastopt.optim as fo
from fastopt.rules import SPECS

KWARGS = {"ASGD": dict(t0=2.0)}  # (averaging starts within the run: mu leaves 1)


@pytest.mark.parametrize("name", [spec.name for spec in SPECS])
def test_save_load_midway_gives_the_uninterrupted_bits(name, tmp_path):
    rng = np.random.default_rng(3)
    shapes = [(5,), (2, 3), (1,)]
    start = [rng.standard_normal(s) for s in shapes]
    grads = [[rng.standard_normal(s) for s in shapes] for _ in range(8)]
    kwargs = KWARGS.get(name, {})
    straight = [x.copy() for x in start]
    resumed = [x.copy() for x in start]
    uninterrupted = getattr(fo, name)(straight, **kwargs)
    first_half = getattr(fo, name)(resumed, **kwargs)
    for g in grads[:4]:
        uninterrupted.step([x.copy() for x in g])
        first_half.step([x.copy() for x in g])
    first_half.save(tmp_path / "ckpt.npz")
    second_half = getattr(fo, name)(resumed, **kwargs)
    second_half.load(tmp_path / "ckpt.npz")
    for g in grads[4:]:
        uninterrupted.step([x.copy() for x in g])
        second_half.step([x.copy() for x in g])
    assert all(np.array_equal(a, b) for a, b in zip(straight, resumed))
    assert not np.array_equal(straight[0], start[0])
    for key in ("mu_product", "eta", "mu"):
        if key in uninterrupted.state[0]:
            assert uninterrupted.state[0][key] == second_half.state[0][key]
