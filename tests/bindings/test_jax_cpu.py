"""JAX arrays on the CPU, a third real framework beside NumPy and PyTorch: read through __dlpack__ (JAX
exports legacy capsules), immutable, so fine wherever fastopt only reads (gradients, logits, labels) and
refused with nothing written wherever it writes. Loss outputs for JAX input are NumPy arrays on the CPU.
The same on a GPU is in test_cuda_frameworks.py. Skipped without jax.
"""

from __future__ import annotations

import re

import numpy as np
import pytest

import fastopt
from interop_cases import FULL, FULL_IDS, array_names, call_case, copy_args, hyper_of, make_numpy_args

jax = pytest.importorskip("jax")
jnp = pytest.importorskip("jax.numpy")

SIZES = [1, 3, 1000, 4099]


def on_jax(arrays):
    return [jnp.asarray(a) for a in arrays]


@pytest.mark.parametrize("case,config", FULL, ids=FULL_IDS)
def test_jax_grads_give_the_numpy_bits(case, config):
    hyper = hyper_of(case, config, seed=2300)
    base = make_numpy_args(case, hyper, SIZES, np.float32, seed=2301)  # float32: JAX's default
    want = copy_args(base)
    call_case(case, hyper, want, step=2)
    got = copy_args(base)
    got["grads"] = on_jax(base["grads"])
    call_case(case, hyper, got, step=2)
    for name in array_names(case, hyper):
        if name == "grads":
            continue
        for i, (g, w) in enumerate(zip(got[name], want[name])):
            np.testing.assert_array_equal(g, w, err_msg=f"{name}[{i}]")


@pytest.mark.parametrize("arg", ["params", "exp_avgs", "max_exp_avg_sqs"])
def test_jax_arrays_are_refused_where_fastopt_writes_and_nothing_changes(arg):
    case = next(c for c, config in FULL if c.name == "adam" and config == "amsgrad")
    hyper = hyper_of(case, "amsgrad", seed=2310)
    args = make_numpy_args(case, hyper, SIZES, np.float32, seed=2311)
    before = copy_args(args)
    frozen = on_jax(args[arg])
    with pytest.raises(ValueError, match=re.escape(f"{arg}[0] is read-only")):
        call_case(case, hyper, {**args, arg: frozen}, step=1)
    for name in array_names(case, hyper):
        for i, (a, b) in enumerate(zip(args[name], before[name])):
            np.testing.assert_array_equal(a, b, err_msg=f"{name}[{i}]")
    np.testing.assert_array_equal(np.asarray(frozen[2]), before[arg][2])


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_losses_of_jax_input_return_numpy_with_the_numpy_numbers(reduction):
    rng = np.random.default_rng(2320)
    logits = (3 * rng.standard_normal((50, 17))).astype(np.float32)
    labels = rng.integers(0, 17, 50).astype(np.int32)
    want_loss, want_grad = fastopt.softmax_cross_entropy(logits, labels, label_smoothing=0.1, reduction=reduction)
    loss, grad = fastopt.softmax_cross_entropy(jnp.asarray(logits), jnp.asarray(labels), label_smoothing=0.1,
                                               reduction=reduction)
    assert isinstance(grad, np.ndarray)
    np.testing.assert_array_equal(loss, want_loss)
    np.testing.assert_array_equal(grad, want_grad)
    probabilities = fastopt.softmax(jnp.asarray(logits))
    assert isinstance(probabilities, np.ndarray)
    np.testing.assert_array_equal(probabilities, fastopt.softmax(logits))
    hinge, dscores = fastopt.multiclass_svm_loss(jnp.asarray(logits), jnp.asarray(labels), reduction=reduction)
    want_hinge, want_dscores = fastopt.multiclass_svm_loss(logits, labels, reduction=reduction)
    np.testing.assert_array_equal(hinge, want_hinge)
    np.testing.assert_array_equal(dscores, want_dscores)


def test_jax_logits_cannot_be_the_out_of_a_loss():
    logits = jnp.asarray(np.ones((4, 3), np.float32))
    with pytest.raises(ValueError, match="out is read-only"):
        fastopt.softmax_cross_entropy(logits, jnp.asarray(np.zeros(4, np.int32)), out=logits)
    np.testing.assert_array_equal(np.asarray(logits), np.ones((4, 3), np.float32))
