"""The C ABI's generic entries for the optimizers described as rules (fastopt_update_f32/_f64 and the
introspection of c_api.h) through ctypes: every registered optimizer gives the same bits as its Python
function fastopt.<name>_ on the same arrays, the introspection agrees with the Python signatures, and bad
input returns the right status and a message naming the argument, and writes nothing."""

from __future__ import annotations

import ctypes
import inspect
import math

import numpy as np
import pytest

import fastopt
from fastopt import capi
from fastopt.rules import PASSES, SPECS

LIB = capi.load()
DESCRIBED = capi.optimizers(LIB)
NAMES = list(DESCRIBED)
SIZES = [1, 7, 0, 1003]  # a scalar, a SIMD tail, an empty tensor (NULL pointers), several vectors
STEPS = 7  # RAdam's rectification starts within these
NAN = float("nan")
DTYPES = [np.float32, np.float64]
SUFFIX = {np.float32: "f32", np.float64: "f64"}

# Values away from the defaults, where an optimizer has them: the other weight-decay modes and
# directions, ASGD's averaging from step 2 on.
OTHER = dict(weight_decay=1e-2, maximize=1.0, decoupled_weight_decay=1.0, t0=2.0, lr=3e-3)
# The optional values given rather than computed from step.
GIVEN = dict(mu_product=0.5, eta=2e-3, mu=0.25)
CONFIGS = ["defaults", "other", "given"]


def hyper_values(name, config):
    """The hyperparameters in the C order for a configuration."""
    values = []
    for h, default, kind in DESCRIBED[name]["hyper"]:
        v = default
        if config in ("other", "given") and h in OTHER:
            v = OTHER[h]
        if config == "given" and h in GIVEN:
            v = GIVEN[h]
        values.append(v)
    return values


def python_kwargs(name, values):
    """The same hyperparameters as the Python function's keywords (flags as bools, NaN as None)."""
    kw = {}
    for (h, _, kind), v in zip(DESCRIBED[name]["hyper"], values):
        kw[h] = bool(v) if kind == "flag" else (None if kind == "optional" and math.isnan(v) else v)
    return kw


def state_start(rng, n, dtype):
    # positive: a valid start for every state (second moments, Rprop's step sizes, ...)
    return (np.abs(rng.standard_normal(n)) * 0.1 + 1e-3).astype(dtype)


def make_arrays(name, dtype, seed):
    """operands[j][k]: every operand of every tensor (params random, states positive)."""
    rng = np.random.default_rng(seed)
    n_ops = len(DESCRIBED[name]["operands"])
    params = [rng.standard_normal(n).astype(dtype) for n in SIZES]
    grads = [rng.standard_normal(n).astype(dtype) for n in SIZES]
    states = [[state_start(rng, n, dtype) for n in SIZES] for _ in range(n_ops - 2)]
    return [params, grads] + states


def operand_table(operands, dtype, null=()):
    """The tensor-major pointer table of fastopt_update: operands[k * n_operands + j]; NULL for an
    empty tensor and for the (j, k) pairs in `null` (j alone: every tensor)."""
    scalar = np.ctypeslib.as_ctypes_type(dtype)
    count, n_ops = len(operands[0]), len(operands)
    table = (ctypes.POINTER(scalar) * (count * n_ops))()
    for k in range(count):
        for j in range(n_ops):
            a = operands[j][k]
            if a.size == 0 or j in null or (j, k) in null:
                continue  # stays NULL
            table[k * n_ops + j] = a.ctypes.data_as(ctypes.POINTER(scalar))
    return table


def c_update(name, operands, values, step, dtype, grad_scale=1.0, skip_nonfinite=0, null=(), sizes=None,
             n_operands=None, n_hyper=None, hyper="values", count=None):
    """One fastopt_update call; returns (status, found_inf or the sentinel -7 when not written).
    null="table": the operand table itself is NULL."""
    sizes = [a.size for a in operands[0]] if sizes is None else sizes
    c_sizes = (ctypes.c_int64 * len(sizes))(*sizes)
    c_hyper = (ctypes.c_double * len(values))(*values) if hyper == "values" else hyper
    found = ctypes.c_int32(-7)
    fn = getattr(LIB, f"fastopt_update_{SUFFIX[dtype]}")
    status = fn(name.encode() if isinstance(name, str) else name, len(sizes) if count is None else count, c_sizes,
                None if null == "table" else operand_table(operands, dtype, null), len(operands) if n_operands is None else n_operands,
                c_hyper, len(values) if n_hyper is None else n_hyper, step, grad_scale, skip_nonfinite,
                ctypes.byref(found))
    return status, found.value


def check(status):
    assert capi.STATUS[status] == "FASTOPT_OK", LIB.fastopt_last_error().decode()


def python_update(name, operands, values, step, **scaling):
    kw = python_kwargs(name, values)
    if DESCRIBED[name]["takes_step"]:
        kw["step"] = step
    return getattr(fastopt, f"{name}_")(*operands, **kw, **scaling)


def snapshot(operands):
    return [[a.tobytes() for a in column] for column in operands]


# ---------------------------------------------------------------- the same bits as Python


def test_registry_is_the_python_rules():
    """Every optimizer described as a rule is reachable through the C ABI, and nothing else."""
    assert sorted(f"{n}_" for n in NAMES) == sorted([spec.kernel for spec in SPECS] + list(PASSES))
    assert LIB.fastopt_optimizer_count() == len(NAMES)


def has_optional_hyper(name):
    return any(kind == "optional" for _, _, kind in DESCRIBED[name]["hyper"])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name, config", [(n, c) for n in NAMES for c in CONFIGS
                                          if c != "given" or has_optional_hyper(n)])
def test_same_bits_as_python(name, dtype, config):
    values = hyper_values(name, config)
    c_ops = make_arrays(name, dtype, seed=1)
    py_ops = [[a.copy() for a in column] for column in c_ops]
    rng = np.random.default_rng(2)
    grad_scale = 2.0 if config == "other" else 1.0
    for step in range(1, STEPS + 1):
        grads = [rng.standard_normal(n).astype(dtype) for n in SIZES]
        c_ops[1], py_ops[1] = grads, [g.copy() for g in grads]
        status, found = c_update(name, c_ops, values, step, dtype, grad_scale=grad_scale, skip_nonfinite=1)
        check(status)
        assert found == 0
        assert python_update(name, py_ops, values, step, grad_scale=grad_scale, skip_nonfinite=True) is False
    assert snapshot(c_ops) == snapshot(py_ops)
    # the update did something (a call that wrote nothing would also agree)
    assert snapshot(c_ops)[0] != snapshot(make_arrays(name, dtype, seed=1))[0]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", NAMES)
def test_skip_nonfinite_sets_found_inf_and_writes_nothing(name, dtype):
    values = hyper_values(name, "defaults")
    ops = make_arrays(name, dtype, seed=3)
    ops[1][3][5] = np.inf
    before = snapshot(ops)
    status, found = c_update(name, ops, values, 1, dtype, skip_nonfinite=1)
    check(status)
    assert found == 1
    assert snapshot(ops) == before
    assert python_update(name, ops, values, 1, skip_nonfinite=True) is True


@pytest.mark.parametrize("name", NAMES)
def test_found_inf_may_be_null(name):
    values = hyper_values(name, "defaults")
    ops = make_arrays(name, np.float64, seed=4)
    sizes = (ctypes.c_int64 * len(SIZES))(*SIZES)
    check(LIB.fastopt_update_f64(name.encode(), len(SIZES), sizes, operand_table(ops, np.float64), len(ops),
                                 (ctypes.c_double * len(values))(*values), len(values), 1, 1.0, 0, None))


def optional_operands(name):
    return [j for j, (_, needed_when) in enumerate(DESCRIBED[name]["operands"]) if needed_when]


# (empty, so skipped, while no registered optimizer has an optional state)
@pytest.mark.parametrize("name", [n for n in NAMES if optional_operands(n)])
def test_unused_optional_operands_may_be_null(name):
    """An optional state (needed_when) that the defaults do not read may be NULL, as it may be None in
    Python."""
    optional = optional_operands(name)
    values = hyper_values(name, "defaults")
    ops = make_arrays(name, np.float64, seed=5)
    py_ops = [[a.copy() for a in column] for column in ops]
    check(c_update(name, ops, values, 1, np.float64, null=set(optional))[0])
    for j in optional:
        py_ops[j] = None
    python_update(name, py_ops, values, 1)
    for j in range(2):
        assert [a.tobytes() for a in ops[j]] == [a.tobytes() for a in py_ops[j]]


# ---------------------------------------------------------------- introspection


@pytest.mark.parametrize("name", NAMES)
def test_introspection_matches_python_signature(name):
    info = DESCRIBED[name]
    params = list(inspect.signature(getattr(fastopt, f"{name}_")).parameters.values())
    operands, rest = params[:len(info["operands"])], params[len(info["operands"]):]
    assert [p.name for p in operands] == [op for op, _ in info["operands"]]
    for p, (_, needed_when) in zip(operands, info["operands"]):
        assert (p.default is None) == (needed_when is not None)
    hyper = rest[:len(info["hyper"])]
    assert [p.name for p in hyper] == [h for h, _, _ in info["hyper"]]
    for p, (_, default, kind) in zip(hyper, info["hyper"]):
        if kind == "optional":
            assert p.default is None and math.isnan(default)
        elif kind == "flag":
            assert p.default is bool(default) and default in (0.0, 1.0)
        else:
            assert p.default == default
    tail = rest[len(info["hyper"]):]
    # step: required where the rule reads it, else None (read by stochastic rounding alone)
    assert tail[0].name == "step"
    assert (tail[0].default is inspect.Parameter.empty) if info["takes_step"] else tail[0].default is None
    assert [p.name for p in tail[1:4]] == ["stochastic_rounding", "seed", "grad_scale"]
    assert info["summary"].split("\n")[0] in getattr(fastopt, f"{name}_").__doc__


def test_introspection_errors():
    n = LIB.fastopt_optimizer_count()
    assert LIB.fastopt_optimizer_name(n) is None
    assert LIB.fastopt_last_error() == f"index must be in [0, {n}) (fastopt_optimizer_count), got {n}".encode()
    assert LIB.fastopt_optimizer_name(-1) is None
    name = ctypes.c_char_p(b"unchanged")
    assert LIB.fastopt_optimizer_operand(b"lion", 3, ctypes.byref(name), None) == 2
    assert LIB.fastopt_last_error() == b"j must be in [0, 3) for lion, got 3"
    assert name.value == b"unchanged"
    assert LIB.fastopt_optimizer_hyper(b"lion", -1, None, None, None, None) == 2
    assert LIB.fastopt_optimizer_info(b"nope", None, None, None, None) == 7
    assert LIB.fastopt_optimizer_info(None, None, None, None, None) == 1
    assert LIB.fastopt_last_error() == b"optimizer is NULL"
    # every output may be NULL
    assert LIB.fastopt_optimizer_info(b"lion", None, None, None, None) == 0
    assert LIB.fastopt_last_error() == b""


# ---------------------------------------------------------------- bad input


def refused(name, dtype, status, match, **call):
    """Runs a call that must fail: its status, the message containing `match`, nothing written (the
    arrays and found_inf)."""
    values = call.pop("values", None) or hyper_values(name, "defaults")
    ops = call.pop("ops", None) or make_arrays(name, dtype, seed=6)
    before = snapshot(ops)
    got, found = c_update(name, ops, values, call.pop("step", 2), dtype, **call)
    message = LIB.fastopt_last_error().decode()
    assert capi.STATUS[got] == capi.STATUS[status], message
    assert match in message
    assert found == -7
    assert snapshot(ops) == before
    return message


@pytest.mark.parametrize("name", NAMES)
def test_unknown_name(name):
    ops = make_arrays(name, np.float64, seed=7)
    before = snapshot(ops)
    values = hyper_values(name, "defaults")
    for bad in (name.upper(), name + "_", "", "adam"):
        status, found = c_update(bad, ops, values, 1, np.float64)
        assert status == 7 and found == -7
        message = LIB.fastopt_last_error().decode()
        assert message.startswith(f'unknown optimizer "{bad}"')
        assert message.endswith("the registered optimizers: " + ", ".join(NAMES))
    assert "fastopt_adam_f32" in message  # a classic optimizer: where it is
    assert c_update(None, ops, values, 1, np.float64)[0] == 1
    assert LIB.fastopt_last_error() == b"optimizer is NULL"
    assert snapshot(ops) == before


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", NAMES)
def test_null_operand(name, dtype):
    n_ops = len(DESCRIBED[name]["operands"])
    for j, (op, _) in enumerate(DESCRIBED[name]["operands"]):
        refused(name, dtype, 1, f"{op}[1] (operands[{n_ops + j}]) is NULL", null={(j, 1)})
    refused(name, dtype, 1, "operands is NULL", null="table")
    refused(name, dtype, 1, "hyper is NULL", hyper=None)


@pytest.mark.parametrize("name", NAMES)
def test_negative_size_and_count(name):
    refused(name, np.float64, 2, "sizes[2] must be >= 0, got -4", sizes=[1, 7, -4, 1003])
    refused(name, np.float64, 2, "count must be >= 0, got -1", count=-1)


@pytest.mark.parametrize("name", NAMES)
def test_wrong_counts(name):
    info = DESCRIBED[name]
    n_ops, n_hyper = len(info["operands"]), len(info["hyper"])
    message = refused(name, np.float64, 2, f"n_hyper must be {n_hyper} for {name} (", n_hyper=n_hyper - 1)
    assert message.endswith(f"), got {n_hyper - 1}")
    assert ", ".join(h for h, _, _ in info["hyper"]) in message
    operands = ", ".join(name for name, _ in info["operands"][:2])  # ("params, grads"; Muon's momentum pass: "updates, grads")
    refused(name, np.float64, 2, f"n_operands must be {n_ops} for {name} ({operands}", n_operands=n_ops + 1)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", NAMES)
def test_hyperparameter_out_of_range(name, dtype):
    hyper = DESCRIBED[name]["hyper"]
    first = hyper[0][0]
    values = hyper_values(name, "defaults")
    values[0] = NAN
    refused(name, dtype, 3, f"{first} must be a finite number, got nan", values=values)
    flags = [i for i, (_, _, kind) in enumerate(hyper) if kind == "flag"]
    if flags:  # (Muon's apply pass has none)
        values = hyper_values(name, "defaults")
        values[flags[0]] = 0.5
        refused(name, dtype, 3, f"{hyper[flags[0]][0]} must be a bool (0 or 1), got 0.5", values=values)
    refused(name, dtype, 3, "grad_scale must be > 0, got 0", grad_scale=0.0)
    if DESCRIBED[name]["takes_step"]:
        refused(name, dtype, 3, "step must be >= 1", step=0)
    if first == "lr":
        # the arithmetic's range: 1e39 is no float32 number (float64 takes it)
        values = hyper_values(name, "defaults")
        values[0] = 1e39
        if dtype is np.float32:
            refused(name, dtype, 3, "lr", values=values)
        else:
            check(c_update(name, make_arrays(name, dtype, seed=8), values, 2, dtype)[0])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", NAMES)
def test_overlapping_arrays(name, dtype):
    ops = make_arrays(name, dtype, seed=9)
    last = len(ops) - 1
    ops[last][3] = ops[0][3][1:]  # the last state of tensor 3 shares memory with its param
    message = refused(name, dtype, 4, "overlaps", ops=ops, sizes=[1, 7, 0, 1002])
    op_names = [op for op, _ in DESCRIBED[name]["operands"]]
    assert f"{op_names[last]}[3]" in message and f"{op_names[0]}[3]" in message


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", NAMES)
def test_gradients_sharing_memory_are_read(name, dtype):
    """The gradients (operand 1), only read, may share memory with one another: every tensor's gradient a
    view of the start of one buffer. The C ABI and the Python entry give the update of separate copies."""
    shared = make_arrays(name, dtype, seed=10)
    buf = shared[1][-1]  # (the largest gradient)
    shared[1] = [buf[:n] for n in SIZES]
    apart = [[a.copy() for a in column] for column in shared]
    through_python = [[a.copy() for a in column] for column in apart]
    through_python[1] = [buf[:n] for n in SIZES]
    values = hyper_values(name, "defaults")
    check(c_update(name, shared, values, 2, dtype)[0])
    check(c_update(name, apart, values, 2, dtype)[0])
    python_update(name, through_python, values, 2)
    assert snapshot(shared) == snapshot(apart) == snapshot(through_python)
