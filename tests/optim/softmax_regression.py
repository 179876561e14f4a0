"""A small training run for the state-precision tests: softmax regression (128 features, 64 classes: one
8192-element weight, 8-bit under state_dtype="int8") on a random teacher's labels, minibatches of 128 from zero
weights (loss log(64) = 4.16)."""

from __future__ import annotations

import numpy as np

import fastopt


def train(cls, hyper, state_dtype, steps=300):
    """(final loss over all 1024 examples, the optimizer) after `steps` steps of cls(**hyper, state_dtype=)."""
    rng = np.random.default_rng(5)
    X = rng.standard_normal((1024, 128)).astype(np.float32)
    y = np.argmax(X @ rng.standard_normal((128, 64)), axis=1)
    W = np.zeros((128, 64), np.float32)
    opt = cls([W], **hyper, state_dtype=state_dtype)
    order = np.random.default_rng(6)
    for _ in range(steps):
        batch = order.integers(0, len(y), 128)
        _, dscores = fastopt.softmax_cross_entropy(X[batch] @ W, y[batch])
        opt.step([X[batch].T @ dscores])
    return fastopt.softmax_cross_entropy(X @ W, y)[0], opt
