"""Runtime instruction-set dispatch: every instruction set this CPU supports gives the same bits as
the portable baseline; the vectorised exp meets its stated accuracy; the settings and their
environment variables behave."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys

import numpy as np
import pytest

import fastopt
from fastopt import _core
from kernel_cases import CASES, draw_hyper, kernel_kwargs

SUPPORTED = fastopt.build_info()["cpu_isas_supported"]


@pytest.fixture
def restore_isa():
    before = fastopt.build_info()["cpu_isa"]
    yield
    fastopt.set_cpu_isa(before)


def run_everything(dtype) -> str:
    """A digest of every kernel's output on fixed random data."""
    digest = hashlib.sha256()
    for case in CASES:
        rng = np.random.default_rng(7)
        hyper = draw_hyper(case, list(case.configs)[-1], rng)
        used = case.used_states(hyper)
        sizes = [300007, 7, 33, 0]
        params = [rng.standard_normal(n).astype(dtype) for n in sizes]
        states = {s: [np.full(n, case.initial_state(s, hyper), dtype) for n in sizes] for s in used}
        for t in range(1, 4):
            grads = [rng.standard_normal(n).astype(dtype) for n in sizes]
            step = {"step": t} if case.takes_step else {}
            case.kernel(params, grads, *[states.get(s) for s in case.states], **kernel_kwargs(case, hyper), **step)
        for a in params + [a for arrays in states.values() for a in arrays]:
            digest.update(a.tobytes())

    rng = np.random.default_rng(8)
    logits = (rng.standard_normal((67, 1003)) * 5).astype(dtype)
    logits[3, ::7] = -np.inf
    labels = rng.integers(0, 1003, 67)
    labels[5] = -100
    weight = rng.uniform(0.5, 2.0, 1003).astype(dtype)
    for kwargs in (dict(), dict(weight=weight, label_smoothing=0.1, z_loss=1e-3, reduction="sum"),
                   dict(reduction="none", label_smoothing=0.3)):
        loss, grad = fastopt.softmax_cross_entropy(logits, labels, **kwargs)
        digest.update(np.asarray(loss, dtype=np.float64).tobytes() + grad.tobytes())
    digest.update(fastopt.softmax(logits).tobytes() + fastopt.log_softmax(logits).tobytes())
    scores = rng.standard_normal((50, 13)).astype(dtype)
    loss, dscores = fastopt.multiclass_svm_loss(scores, rng.integers(0, 13, 50))
    digest.update(np.float64(loss).tobytes() + dscores.tobytes())
    w = rng.standard_normal(200003).astype(dtype)
    g = np.zeros_like(w)
    digest.update(np.float64(fastopt.penalty(w, l1=0.1, l2=0.2, out_grad=g)).tobytes() + g.tobytes())
    digest.update(_core._exp(np.linspace(-100, 100, 10007).astype(dtype)).tobytes())
    return digest.hexdigest()


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("isa", [isa for isa in SUPPORTED if isa != "baseline"])
def test_instruction_sets_give_the_baselines_bits(isa, dtype, restore_isa):
    assert fastopt.set_cpu_isa("baseline") == "baseline"
    expected = run_everything(dtype)
    assert fastopt.set_cpu_isa(isa) == isa
    assert fastopt.build_info()["cpu_isa"] == isa
    assert run_everything(dtype) == expected


def test_set_cpu_isa_refuses_unknown_names(restore_isa):
    with pytest.raises(ValueError, match="name must be one of"):
        fastopt.set_cpu_isa("sse9")


def test_baseline_is_always_available():
    info = fastopt.build_info()
    assert info["cpu_isas_compiled"][-1] == "baseline" and "baseline" in info["cpu_isas_supported"]
    assert info["cpu_isa"] == info["cpu_isas_supported"][0]  # the best one is chosen by default
    assert set(info["cpu_isas_supported"]) <= set(info["cpu_isas_compiled"])


def ulp_error(dtype, x):
    exact = np.exp(x.astype(np.longdouble))
    got = _core._exp(x).astype(np.longdouble)
    ulp = np.spacing(exact.astype(dtype)).astype(np.longdouble)
    return float(np.max(np.abs(got - exact) / ulp))


@pytest.mark.skipif(np.finfo(np.longdouble).eps >= np.finfo(np.float64).eps,
                    reason="needs a long double wider than double as the exact reference")
@pytest.mark.parametrize("isa", SUPPORTED)
def test_vectorised_exp_accuracy(isa, restore_isa):
    """Stated bound: float32 within 1 ulp on [-87.3, 88.7]; float64 within 2 ulp on [-708, 709]."""
    fastopt.set_cpu_isa(isa)
    rng = np.random.default_rng()
    x32 = np.concatenate([rng.uniform(-87.3, 88.7, 2_000_000), np.linspace(-87.3, 88.7, 100_001),
                          rng.uniform(-1, 1, 100_000)]).astype(np.float32)
    assert ulp_error(np.float32, x32) <= 1.0
    x64 = np.concatenate([rng.uniform(-708, 709, 1_000_000), rng.uniform(-1, 1, 100_000)])
    assert ulp_error(np.float64, x64) <= 2.0


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_vectorised_exp_special_values(dtype):
    x = np.array([-np.inf, np.inf, np.nan, 0.0, -1e4, 1e4], dtype=dtype)
    got = _core._exp(x)
    assert got[0] == 0.0 and got[1] == np.inf and np.isnan(got[2]) and got[3] == 1.0
    assert got[4] == 0.0 and got[5] == np.inf


def python_with_env(code: str, **env) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], env=dict(os.environ, **env), capture_output=True,
                          text=True, cwd=os.path.dirname(__file__))


def test_environment_variables_set_isa_and_threads():
    out = python_with_env("import fastopt; i = fastopt.build_info(); print(i['cpu_isa'], i['num_threads'])",
                          FASTOPT_CPU_ISA="baseline", FASTOPT_NUM_THREADS="1")
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["baseline", "1"]


def test_bad_environment_variables_fail_the_import_clearly():
    out = python_with_env("import fastopt", FASTOPT_CPU_ISA="sse9")
    assert out.returncode != 0 and "FASTOPT_CPU_ISA" in out.stderr
    out = python_with_env("import fastopt", FASTOPT_NUM_THREADS="many")
    assert out.returncode != 0 and "FASTOPT_NUM_THREADS" in out.stderr


def test_set_num_threads():
    before = fastopt.build_info()["num_threads"]
    try:
        fastopt.set_num_threads(1)
        assert fastopt.build_info()["num_threads"] == 1
    finally:
        fastopt.set_num_threads(before)
    with pytest.raises(ValueError, match="threads"):
        fastopt.set_num_threads(0)
