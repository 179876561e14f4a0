"""fastopt.jax's CUDA handlers on a GPU, under jax.jit: the classic updates (fastopt_adam & co.), the rules
(fastopt_rule_<name>, csrc/jax/rule_handlers.cpp) and Muon (two rule passes around jnp's Newton-Schulz) give
on the GPU what the CPU handlers give for the same numbers (LAMB's per-tensor norms included); Adafactor gives
the CPU handler's bits. Marked
`cuda`; skipped without a CUDA build, a GPU, or jax with its GPU backend."""

from __future__ import annotations

import numpy as np
import pytest

from cuda_support import CUDA_MARKS

pytestmark = CUDA_MARKS

jax = pytest.importorskip("jax")
jnp = pytest.importorskip("jax.numpy")
fj = pytest.importorskip("fastopt.jax")

STEPS = 4
LR = 0.015625
SHAPES = {"big": (300, 700), "v": (1000,), "w": (17, 5)}


def devices():
    try:
        gpu = jax.devices("gpu")[0]
    except RuntimeError:
        pytest.skip("jax has no GPU backend here")
    return jax.devices("cpu")[0], gpu


def run_on(device, tx, start, grads):
    with jax.default_device(device):
        params = jax.device_put(start, device)
        state = tx.init(params)
        step = jax.jit(lambda g, s, p: fj.fused_apply(tx, g, s, p))
        for g in grads:
            params, state = step(jax.device_put(g, device), state, params)
        return jax.tree.map(np.asarray, params), jax.tree.map(np.asarray, state)


@pytest.mark.parametrize("make_tx", [
    lambda: fj.adamw(LR, weight_decay=0.1),
    lambda: fj.lion(LR, weight_decay=0.1),
    lambda: fj.nadam(LR, weight_decay=0.01),
    lambda: fj.radam(LR),
    lambda: fj.asgd(LR, t0=2.0),
    lambda: fj.rprop(LR),
    lambda: fj.adadelta(0.5),
    lambda: fj.adamax(LR),
    lambda: fj.lamb(LR),
    lambda: fj.lamb(LR, max_grad_norm=1.0),  # (the gradients' global norm is far above 1: clipped)
], ids=["adamw", "lion", "nadam", "radam", "asgd", "rprop", "adadelta", "adamax", "lamb", "lamb-clipped"])
def test_gpu_steps_give_the_cpu_handlers_numbers(make_tx):
    cpu, gpu = devices()
    rng = np.random.default_rng(0)
    start = {k: rng.standard_normal(s).astype(np.float32) for k, s in SHAPES.items()}
    grads = [{k: rng.standard_normal(s).astype(np.float32) for k, s in SHAPES.items()} for _ in range(STEPS)]
    tx = make_tx()
    on_cpu, cpu_state = run_on(cpu, tx, start, grads)
    on_gpu, gpu_state = run_on(gpu, tx, start, grads)
    for k in SHAPES:
        np.testing.assert_allclose(on_gpu[k], on_cpu[k], rtol=1e-6, atol=1e-7, err_msg=f"params[{k!r}]")
    for a, b in zip(jax.tree.leaves(gpu_state), jax.tree.leaves(cpu_state)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_muon_on_the_gpu_follows_the_cpu():
    cpu, gpu = devices()
    rng = np.random.default_rng(1)
    shapes = {"big": (300, 700), "w": (17, 5)}
    start = {k: rng.standard_normal(s).astype(np.float32) for k, s in shapes.items()}
    grads = [{k: rng.standard_normal(s).astype(np.float32) for k, s in shapes.items()} for _ in range(STEPS)]
    tx = fj.muon(LR)
    on_cpu, cpu_state = run_on(cpu, tx, start, grads)
    on_gpu, gpu_state = run_on(gpu, tx, start, grads)
    for k in shapes:
        # (the products sum in another order on the GPU: float32's last bits of O, times lr * scale a step)
        np.testing.assert_allclose(on_gpu[k], on_cpu[k], rtol=1e-5, atol=1e-5, err_msg=f"params[{k!r}]")
        np.testing.assert_allclose(gpu_state.momentum_buffer[k], cpu_state.momentum_buffer[k], rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_adafactor_on_the_gpu_gives_the_cpu_handlers_bits(dtype):
    # (its sums keep the CPU's order, and lr and step are read on the host on both platforms)
    cpu, gpu = devices()
    if dtype == np.float64 and not jax.config.jax_enable_x64:
        pytest.skip("float64 needs jax_enable_x64")
    rng = np.random.default_rng(2)
    shapes = dict(SHAPES, batch=(3, 40, 2100), scalar=())
    start = {k: rng.standard_normal(s).astype(dtype) for k, s in shapes.items()}
    grads = [{k: rng.standard_normal(s).astype(dtype) for k, s in shapes.items()} for _ in range(STEPS)]
    tx = fj.adafactor(0.3, weight_decay=0.01)
    on_cpu, cpu_state = run_on(cpu, tx, start, grads)
    on_gpu, gpu_state = run_on(gpu, tx, start, grads)
    for k in shapes:
        np.testing.assert_array_equal(on_gpu[k], on_cpu[k], err_msg=f"params[{k!r}]")
    for a, b in zip(jax.tree.leaves(gpu_state), jax.tree.leaves(cpu_state)):
        np.testing.assert_array_equal(a, b)
