"""The C ABI (fastopt/c_api.h) through ctypes: the FFI claim. Every optimizer's list and single
forms against the NumPy reference over several steps, the cross-entropy against the reference,
the same bits as the pybind11 functions, and the error paths (code, message, nothing written).
A plain C program compiled against the header calls every function too (test_c_program)."""

from __future__ import annotations

import ctypes
import math
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

import fastopt
from fastopt import capi, reference

LIB = capi.load()
C_DOUBLE_P = ctypes.POINTER(ctypes.c_double)
SIZES = [1, 7, 0, 1003]  # a scalar, a SIMD tail, an empty tensor, several vectors
STEPS = 4

# name: (state names, hyperparameters using every state, reference function, its state outputs)
CASES = {
    "sgd": (["momentum_buffer"], dict(lr=0.1, momentum=0.9, dampening=0.0, weight_decay=1e-2, nesterov=1,
                                      maximize=0)),
    "adagrad": (["state_sum"], dict(lr=0.1, lr_decay=1e-2, weight_decay=1e-2, eps=1e-10, maximize=0)),
    "rmsprop": (["square_avg", "momentum_buffer", "grad_avg"],
                dict(lr=1e-2, alpha=0.9, eps=1e-8, weight_decay=1e-2, momentum=0.9, centered=1, maximize=0)),
    "adam": (["exp_avg", "exp_avg_sq", "max_exp_avg_sq"],
             dict(lr=1e-2, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=1e-2, amsgrad=1, maximize=1)),
    "adamw": (["exp_avg", "exp_avg_sq", "max_exp_avg_sq"],
              dict(lr=1e-2, beta1=0.8, beta2=0.99, eps=1e-8, weight_decay=1e-1, amsgrad=1, maximize=0)),
}
HAS_STEP = {"sgd", "adagrad", "adam", "adamw"}


def ptr(a):
    if a is None:
        return None
    return a.ctypes.data_as(ctypes.POINTER(np.ctypeslib.as_ctypes_type(a.dtype)))


def ptr_list(arrays):
    if arrays is None:
        return None
    t = ctypes.POINTER(np.ctypeslib.as_ctypes_type(arrays[0].dtype))
    return (t * len(arrays))(*[ptr(a) for a in arrays])


def hyper_args(name, hyper, step):
    values = list(hyper.values())
    return values + [step] if name in HAS_STEP else values


def reference_step(name, p, g, states, hyper, step):
    """One reference update of one tensor; returns (param, states) as new arrays."""
    kw = {k: (bool(v) if k in ("nesterov", "maximize", "centered", "amsgrad") else v) for k, v in hyper.items()}
    if name in HAS_STEP:
        kw["step"] = step
    if name == "sgd":
        new_p, buf = reference.sgd(p, g, None if step == 1 else states[0], **kw)
        return new_p, [buf]
    out = getattr(reference, name)(p, g, *states, **kw)
    return out[0], list(out[1:])


def check(status, expected=0):
    assert capi.STATUS[status] == capi.STATUS[expected], LIB.fastopt_last_error().decode()


@pytest.mark.parametrize("name", list(CASES))
def test_list_form_matches_reference(name):
    state_names, hyper = CASES[name]
    rng = np.random.default_rng(1)
    params = [rng.standard_normal(n) for n in SIZES]
    states = [[np.zeros(n) + (0.1 if s == "state_sum" else 0.0) for n in SIZES] for s in state_names]
    expected_p = [p.copy() for p in params]
    expected_s = [[a.copy() for a in col] for col in states]
    sizes = (ctypes.c_int64 * len(SIZES))(*SIZES)
    for step in range(1, STEPS + 1):
        grads = [rng.standard_normal(n) for n in SIZES]
        fn = getattr(LIB, f"fastopt_{name}_list_f64")
        check(fn(len(SIZES), sizes, ptr_list(params), ptr_list(grads), *[ptr_list(c) for c in states],
                 *hyper_args(name, hyper, step)))
        for k in range(len(SIZES)):
            new_p, new_s = reference_step(name, expected_p[k], grads[k], [c[k] for c in expected_s], hyper, step)
            expected_p[k] = new_p
            for j, s in enumerate(new_s):
                expected_s[j][k] = s
    for k in range(len(SIZES)):
        np.testing.assert_allclose(params[k], expected_p[k], rtol=1e-12, atol=1e-14)
        for j in range(len(state_names)):
            np.testing.assert_allclose(states[j][k], expected_s[j][k], rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("name", list(CASES))
def test_single_form_float32_equals_python_binding(name):
    """The C ABI and the pybind11 functions run the same kernels: the same bits."""
    state_names, hyper = CASES[name]
    rng = np.random.default_rng(2)
    n = 1001
    p_c = rng.standard_normal(n).astype(np.float32)
    s_c = [np.zeros(n, np.float32) for _ in state_names]
    p_py, s_py = p_c.copy(), [a.copy() for a in s_c]
    py_fn = getattr(fastopt, f"{name}_")
    kw = {k: (bool(v) if k in ("nesterov", "maximize", "centered", "amsgrad") else v) for k, v in hyper.items()}
    for step in range(1, STEPS + 1):
        g = rng.standard_normal(n).astype(np.float32)
        check(getattr(LIB, f"fastopt_{name}_f32")(n, ptr(p_c), ptr(g), *[ptr(a) for a in s_c],
                                                  *hyper_args(name, hyper, step)))
        py_fn(p_py, g, *s_py, **kw, **({"step": step} if name in HAS_STEP else {}))
    assert p_c.tobytes() == p_py.tobytes()
    for a, b in zip(s_c, s_py):
        assert a.tobytes() == b.tobytes()


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("in_place", [False, True])
def test_cross_entropy_matches_reference(reduction, in_place):
    rng = np.random.default_rng(3)
    n, c = 37, 11
    logits = rng.standard_normal((n, c)) * 3
    labels = rng.integers(0, c, n).astype(np.int64)
    labels[::5] = -1  # ignored rows
    weight = rng.uniform(0.5, 2.0, c)
    kw = dict(weight=weight, ignore_index=-1, label_smoothing=0.1, reduction=reduction, z_loss=1e-3)
    ref_loss, ref_grad = reference.softmax_cross_entropy(logits, labels, **kw)
    dlogits = logits if in_place else np.empty_like(logits)
    row_losses = np.empty(n)
    loss = ctypes.c_double(-1.0)
    check(LIB.fastopt_softmax_cross_entropy_f64(ptr(logits), ptr(labels), ptr(weight), n, c, -1, 0.1,
                                                capi.REDUCTIONS[reduction], 1e-3, ptr(dlogits), ptr(row_losses),
                                                ctypes.byref(loss)))
    np.testing.assert_allclose(dlogits, ref_grad, rtol=1e-12, atol=1e-15)
    if reduction == "none":
        np.testing.assert_allclose(row_losses, ref_loss, rtol=1e-12, atol=1e-15)
        assert loss.value == 0.0
    else:
        assert math.isclose(loss.value, float(ref_loss), rel_tol=1e-12)


def adamw_single(p, g, m, v, **overrides):
    kw = dict(lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=1e-2, amsgrad=0, maximize=0, step=1)
    kw.update(overrides)
    return LIB.fastopt_adamw_f64(p.size, ptr(p), ptr(g), ptr(m), ptr(v), None, *kw.values())


@pytest.mark.parametrize("overrides, status, match", [
    (dict(lr=float("nan")), 3, "lr must be a finite number, got nan"),
    (dict(lr=-1.0), 3, "lr must be >= 0"),
    (dict(beta2=1.0), 3, "beta2 must be in [0, 1)"),
    (dict(step=0), 3, "step must be >= 1"),
    (dict(amsgrad=1), 1, "max_exp_avg_sq is NULL"),
])
def test_adamw_errors(overrides, status, match):
    rng = np.random.default_rng(4)
    p, g, m, v = (rng.standard_normal(9) for _ in range(4))
    before = [a.copy() for a in (p, g, m, v)]
    assert adamw_single(p, g, m, v, **overrides) == status
    assert match in LIB.fastopt_last_error().decode()
    for a, b in zip((p, g, m, v), before):
        assert a.tobytes() == b.tobytes()
    # a successful call clears the message
    check(adamw_single(p, g, m, v))
    assert LIB.fastopt_last_error() == b""


def test_list_errors_name_the_index():
    p = [np.zeros(3), np.zeros(4)]
    g = [np.zeros(3), np.zeros(4)]
    m = [np.zeros(3), np.zeros(4)]
    sizes = (ctypes.c_int64 * 2)(3, -4)
    assert LIB.fastopt_adagrad_list_f64(2, sizes, ptr_list(p), ptr_list(g), ptr_list(m), 0.1, 0, 0, 1e-10, 0, 1) == 2
    assert LIB.fastopt_last_error() == b"sizes[1] must be >= 0, got -4"
    sizes = (ctypes.c_int64 * 2)(3, 4)
    grads = ptr_list(g)
    grads[1] = None
    assert LIB.fastopt_adagrad_list_f64(2, sizes, ptr_list(p), grads, ptr_list(m), 0.1, 0, 0, 1e-10, 0, 1) == 1
    assert LIB.fastopt_last_error() == b"grads[1] is NULL"
    # overlapping operands: state_sums[1] is params[1]
    assert LIB.fastopt_adagrad_list_f64(2, sizes, ptr_list(p), ptr_list(g), ptr_list([m[0], p[1]]), 0.1, 0, 0,
                                        1e-10, 0, 1) == 4
    assert "overlaps" in LIB.fastopt_last_error().decode()
    # gradients are only read: two tensors may take one gradient (and update as with copies of it)
    q, m2 = [a.copy() for a in p], [a.copy() for a in m]
    p[0] += 1.0
    q[0] += 1.0
    g2 = [np.arange(3.0), np.arange(4.0)]
    shared = [g2[1][:3], g2[1]]
    assert LIB.fastopt_adagrad_list_f64(2, sizes, ptr_list(p), ptr_list(shared), ptr_list(m), 0.1, 0, 0,
                                        1e-10, 0, 1) == 0, LIB.fastopt_last_error()
    assert LIB.fastopt_adagrad_list_f64(2, sizes, ptr_list(q), ptr_list([a.copy() for a in shared]), ptr_list(m2),
                                        0.1, 0, 0, 1e-10, 0, 1) == 0
    assert [a.tobytes() for a in p + m] == [a.tobytes() for a in q + m2]
    assert p[1].any() and m[1].any()  # (the call did update: the gradients are not zero)
    assert LIB.fastopt_adagrad_list_f64(-1, sizes, None, None, None, 0.1, 0, 0, 1e-10, 0, 1) == 2
    assert LIB.fastopt_adagrad_list_f64(0, None, None, None, None, 0.1, 0, 0, 1e-10, 0, 1) == 0


def test_cross_entropy_errors():
    logits = np.zeros((2, 3))
    out = np.empty_like(logits)
    loss = ctypes.c_double()
    labels = np.array([0, 3], np.int64)
    assert LIB.fastopt_softmax_cross_entropy_f64(ptr(logits), ptr(labels), None, 2, 3, -100, 0.0, 0, 0.0, ptr(out),
                                                 None, ctypes.byref(loss)) == 5
    assert LIB.fastopt_last_error().decode().startswith("labels[1] = 3 is out of range for 3 classes")
    labels[1] = 2
    assert LIB.fastopt_softmax_cross_entropy_f64(ptr(logits), ptr(labels), None, 2, 3, -100, 0.0, 7, 0.0, ptr(out),
                                                 None, ctypes.byref(loss)) == 3
    assert LIB.fastopt_softmax_cross_entropy_f64(ptr(logits), ptr(labels), None, 2, 3, -100, 1.5, 0, 0.0, ptr(out),
                                                 None, ctypes.byref(loss)) == 3
    assert "label_smoothing" in LIB.fastopt_last_error().decode()
    assert LIB.fastopt_softmax_cross_entropy_f64(ptr(logits), ptr(labels), None, 2, 3, -100, 0.0, 2, 0.0, ptr(out),
                                                 None, None) == 1
    assert "row_losses" in LIB.fastopt_last_error().decode()


def test_version_and_names():
    assert LIB.fastopt_version().decode() == fastopt.__version__
    assert LIB.fastopt_cpu_isa().decode() in fastopt.build_info()["cpu_isas_supported"]
    for code, name in capi.STATUS.items():
        assert LIB.fastopt_status_name(code).decode() == name


def test_c_program(tmp_path):
    """tests/capi/c/c_api_smoke.c, plain C99, compiled against the installed header and library."""
    cc = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if cc is None:
        pytest.skip("no C compiler")
    source = Path(__file__).parent / "c" / "c_api_smoke.c"
    exe = tmp_path / "c_api_smoke"
    lib = capi.library_path()
    subprocess.run([cc, "-std=c99", "-Wall", "-Wextra", "-pedantic", "-Werror", str(source),
                    f"-I{capi.include_dir()}", str(lib), f"-Wl,-rpath,{lib.parent}", "-lm", "-o", str(exe)],
                   check=True)
    run = subprocess.run([str(exe)], capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "all C ABI checks passed" in run.stdout
