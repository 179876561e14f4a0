"""The two row paths of the CPU loss loops (csrc/cpu/loss_loops.h): a row that fits this core's cache
share is exponentiated once and finished in cache; a longer row takes the split path (a read-only
online max/sum pass, then the outputs from the scores, by blocks from the row's end back). The share
comes from the L2 size the CPU reports; _core._set_loss_row_cache_bytes shrinks it here so that
small rows run the split path. Both paths must agree with the reference, with each other, across
instruction sets, for any thread count, with -inf masks and huge logits; rows of every length near
the vector width and the block size (1024) hit the lane and block tails."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import fastopt
from fastopt import _core, reference
from test_losses import (EPS, check_against_reference, ce_kwargs, make_problem, rng)  # noqa: F401

SUPPORTED = fastopt.build_info()["cpu_isas_supported"]
SMALL_SHARE = 4096  # bytes: rows longer than 1024 float32 / 512 float64 elements take the split path


@pytest.fixture
def split_rows():
    """The split path for rows longer than SMALL_SHARE bytes, for one test."""
    _core._set_loss_row_cache_bytes(SMALL_SHARE)
    yield
    _core._set_loss_row_cache_bytes(0)


@pytest.fixture
def restore_isa():
    before = fastopt.build_info()["cpu_isa"]
    yield
    fastopt.set_cpu_isa(before)


def all_outputs(logits, labels, **kwargs):
    """CE (separate buffer and in place, per-row losses), softmax and log_softmax."""
    loss, grad = fastopt.softmax_cross_entropy(logits, labels, reduction="none", **kwargs)
    scratch = logits.copy()
    loss_in_place, _ = fastopt.softmax_cross_entropy(scratch, labels, reduction="none", out=scratch, **kwargs)
    softmax_in_place, log_softmax_in_place = logits.copy(), logits.copy()
    fastopt.softmax(softmax_in_place, out=softmax_in_place)
    fastopt.log_softmax(log_softmax_in_place, out=log_softmax_in_place)
    return dict(loss=loss, grad=grad, loss_in_place=loss_in_place, grad_in_place=scratch,
                softmax=fastopt.softmax(logits), log_softmax=fastopt.log_softmax(logits),
                softmax_in_place=softmax_in_place, log_softmax_in_place=log_softmax_in_place)


def test_cache_share_is_reported_and_can_be_overridden():
    l2 = _core._l2_cache_bytes()
    detected = _core._loss_row_cache_bytes()
    assert l2 >= 0 and detected > 0
    if l2 > 0:
        assert detected == l2 // 2
    try:
        _core._set_loss_row_cache_bytes(12345)
        assert _core._loss_row_cache_bytes() == 12345
    finally:
        _core._set_loss_row_cache_bytes(0)
    assert _core._loss_row_cache_bytes() == detected
    with pytest.raises(ValueError, match="bytes"):
        _core._set_loss_row_cache_bytes(-1)


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("c", [1025, 2048, 3001, 5000])
def test_split_path_matches_reference(rng, split_rows, c, dtype):
    for weighted, smoothing, reduction in ((False, 0.0, "mean"), (True, 0.0, "none"), (True, 0.1, "sum")):
        logits, labels, kw = make_problem(rng, 9, c, ignore="some-ignored", weighted=weighted, dtype=dtype)
        check_against_reference(logits, labels, kw, label_smoothing=smoothing, reduction=reduction, z_loss=1e-4)
        scratch = logits.copy()
        fastopt.softmax_cross_entropy(scratch, labels, out=scratch, **ce_kwargs(kw, reduction=reduction))
        _, separate = fastopt.softmax_cross_entropy(logits, labels, **ce_kwargs(kw, reduction=reduction))
        assert scratch.tobytes() == separate.tobytes(), "in place and separate buffer differ"
    x = logits.astype(np.float64)
    rtol = 1e-12 if dtype == np.float64 else 1e-5
    np.testing.assert_allclose(fastopt.softmax(logits), reference.softmax(x), rtol=rtol,
                               atol=2 * float(np.finfo(dtype).tiny))
    np.testing.assert_allclose(fastopt.log_softmax(logits), reference.log_softmax(x), rtol=rtol,
                               atol=8 * EPS[dtype])


def test_rows_just_longer_than_the_detected_share(rng):
    """No override: the first float32 length past the detected share (or past the in-cache path's
    256 Ki-element cap, whichever comes first) runs the split path; one shorter runs in cache."""
    longest_cached = min(_core._loss_row_cache_bytes() // 4, 256 * 1024)
    for c in (longest_cached, longest_cached + 17):
        logits, labels, kw = make_problem(rng, 2, c, ignore="no-ignored", dtype=np.float32)
        check_against_reference(logits, labels, kw, reduction="none")
        p = fastopt.softmax(logits).astype(np.float64)
        np.testing.assert_allclose(p, reference.softmax(logits.astype(np.float64)), rtol=1e-5, atol=1e-44)


# Lengths around the lane count (16), the AVX-512 / AVX2 widths, one and two blocks (1024, 2048).
LENGTHS = list(range(1, 41)) + [63, 64, 65, 1023, 1024, 1025, 1039, 2047, 2048, 2049]


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
def test_every_length_near_the_vector_width_on_both_paths(rng, dtype):
    for c in LENGTHS:
        logits, labels, kw = make_problem(rng, 3, c, ignore="no-ignored", dtype=dtype)
        results = {}
        for share in (0, 4 * int(np.dtype(dtype).itemsize)):  # detected (in cache); 4 elements (split)
            _core._set_loss_row_cache_bytes(share)
            try:
                check_against_reference(logits, labels, kw, reduction="none")
                results[share] = all_outputs(logits, labels)
            finally:
                _core._set_loss_row_cache_bytes(0)
        in_cache, split = results.values()
        for path in (in_cache, split):  # in place: the new array's bits, on each path
            for key in ("softmax", "log_softmax"):
                assert path[f"{key}_in_place"].tobytes() == path[key].tobytes(), (key, c)
        # Same online max/sum, block by block, on both paths: the losses agree to the bit.
        assert in_cache["loss"].tobytes() == split["loss"].tobytes(), c
        assert in_cache["log_softmax"].tobytes() == split["log_softmax"].tobytes(), c
        for key in ("grad", "grad_in_place", "softmax"):
            np.testing.assert_allclose(split[key], in_cache[key], rtol=32 * EPS[dtype], atol=1e-30, err_msg=f"{key} c={c}")
        p = results[0]["softmax"].astype(np.float64)
        np.testing.assert_allclose(p.sum(axis=-1), 1.0, rtol=8 * EPS[dtype] * c)


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
def test_split_path_with_masks_and_huge_logits(rng, split_rows, dtype):
    n, c = 6, 3000
    big = 3e4 if dtype == np.float32 else 1e6
    logits = (rng.standard_normal((n, c)) * 3).astype(dtype)
    labels = rng.integers(0, c, n)
    logits[0, :2048] = -np.inf            # whole leading blocks masked: the running max starts late
    labels[0] = 2500
    logits[1, rng.random(c) < 0.5] = -np.inf
    logits[1, labels[1]] = 0.0
    logits[2] = -np.inf                   # everything masked but the label
    logits[2, labels[2]] = 1.0
    logits[3] = big                       # equal huge values: exactly uniform
    logits[4] = (rng.standard_normal(c) * big).astype(dtype)  # a spread far beyond exp's range
    logits[5, -1] = big                   # the max arrives in the last block: every sum rescaled
    mask = np.isneginf(logits)
    kw = dict(weight=None, ignore_index=-100)
    loss, grad = check_against_reference(logits, labels, kw, reduction="none")
    assert np.all(np.isfinite(loss)) and np.all(np.isfinite(grad))
    assert np.all(grad[mask] == 0)
    assert loss[2] == 0 and grad[2].tolist() == [0.0] * c
    np.testing.assert_allclose(loss[3], np.log(c), rtol=1e-6)
    p, logp = fastopt.softmax(logits), fastopt.log_softmax(logits)
    assert np.all(p[mask] == 0) and np.all(np.isneginf(logp[mask]))
    np.testing.assert_allclose(p[3], 1.0 / c, rtol=1e-6)
    np.testing.assert_allclose(p, reference.softmax(logits.astype(np.float64)), rtol=1e-5,
                               atol=2 * float(np.finfo(dtype).tiny))
    everything_masked = np.full((2, c), -np.inf, dtype)
    assert np.all(np.isnan(fastopt.softmax(everything_masked)))


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("isa", [isa for isa in SUPPORTED if isa != "baseline"])
def test_split_path_gives_the_baselines_bits(rng, split_rows, restore_isa, isa, dtype):
    logits, labels, kw = make_problem(rng, 5, 4099, ignore="some-ignored", weighted=True, dtype=dtype)
    logits[1, ::3] = -np.inf
    logits[1, labels[1]] = 0.0
    fastopt.set_cpu_isa("baseline")
    expected = all_outputs(logits, labels, weight=kw["weight"])
    fastopt.set_cpu_isa(isa)
    got = all_outputs(logits, labels, weight=kw["weight"])
    for key in expected:
        assert got[key].tobytes() == expected[key].tobytes(), key


THREAD_SCRIPT = textwrap.dedent("""
    import hashlib
    import numpy as np
    import fastopt
    from fastopt import _core

    _core._set_loss_row_cache_bytes(4096)  # rows of 3001 elements take the split path
    rng = np.random.default_rng(99)
    digest = hashlib.sha256()
    for dtype in (np.float32, np.float64):
        logits = (rng.standard_normal((96, 3001)) * 4).astype(dtype)  # 288k elements: threaded
        logits[7, ::5] = -np.inf
        labels = rng.integers(0, 3001, 96)
        labels[7] = 1
        loss, grad = fastopt.softmax_cross_entropy(logits, labels)
        digest.update(np.float64(loss).tobytes() + grad.tobytes())
        rows, _ = fastopt.softmax_cross_entropy(logits, labels, reduction="none", out=logits.copy())
        digest.update(rows.tobytes())
        digest.update(fastopt.softmax(logits).tobytes() + fastopt.log_softmax(logits).tobytes())
    print(fastopt.build_info()["num_threads"], digest.hexdigest())
""")


@pytest.mark.skipif(not fastopt.build_info()["openmp"], reason="built without OpenMP")
def test_split_path_is_bit_identical_for_any_thread_count():
    results = {}
    for threads in (1, 2, 3):
        out = subprocess.run([sys.executable, "-c", THREAD_SCRIPT], env=dict(os.environ, OMP_NUM_THREADS=str(threads)),
                             capture_output=True, text=True, timeout=300, cwd=os.path.dirname(__file__))
        assert out.returncode == 0, out.stderr
        results[threads] = out.stdout.split()
    assert all(int(used) == threads for threads, (used, _) in results.items()), results
    assert len({digest for _, digest in results.values()}) == 1, results


def test_a_long_float32_row_sums_to_float32_precision():
    """A float32 row longer than any cache share (131,089 elements: the split path) has its sum of
    exponentials kept to float32's precision: added in float32 one lane after another, the sum drifted
    by up to ~2e-5 relative, and with it every probability."""
    for seed in range(12):
        logits = (np.random.default_rng(seed).standard_normal((2, 131089)) * 3).astype(np.float32)
        p = fastopt.softmax(logits).astype(np.float64)
        np.testing.assert_allclose(p, reference.softmax(logits.astype(np.float64)), rtol=6e-6, atol=0,
                                   err_msg=f"seed {seed}")
