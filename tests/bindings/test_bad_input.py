"""Bad input to the fused kernels and the stateful optimizers.

The contract: every bad input is refused with a TypeError or ValueError whose message names the
argument (and the list index, like "grads[2]"), and it is refused BEFORE any array is written, so
every array passed stays bit-identical. The arrays hold random non-zero values (an accidental write
shows) and the bad item is the LAST of a list of three (a kernel that updated the first items before
checking the last would be caught). Valid edge cases (empty lists, zero-size and 0-d arrays, tuples,
a single array) must work.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from typing import Callable, Dict, List, Tuple

import numpy as np
import pytest

import fastopt
from fastopt import optim

# --------------------------------------------------------------------------------------- the table


@dataclass(frozen=True)
class Kernel:
    name: str
    fn: Callable
    arrays: Tuple[str, ...]  # array arguments in positional order; all are used with `kwargs`
    kwargs: dict  # valid hyperparameters that use every state argument (and the required step)
    floats: Tuple[str, ...]  # float hyperparameters: each must be finite
    nonneg: Tuple[str, ...]  # ... and these must be >= 0

    @property
    def states(self) -> Tuple[str, ...]:
        return self.arrays[2:]

    def __repr__(self) -> str:
        return self.name


_ADAM_ARRAYS = ("params", "grads", "exp_avgs", "exp_avg_sqs", "max_exp_avg_sqs")
_ADAM_FLOATS = ("lr", "beta1", "beta2", "eps", "weight_decay")

KERNELS = [
    Kernel("sgd", fastopt.sgd_, ("params", "grads", "momentum_buffers"),
           dict(lr=0.1, momentum=0.9, dampening=0.1, weight_decay=1e-2, step=2),
           ("lr", "momentum", "dampening", "weight_decay"), ("lr", "momentum", "weight_decay")),
    Kernel("adagrad", fastopt.adagrad_, ("params", "grads", "state_sums"),
           dict(lr=0.1, lr_decay=1e-2, weight_decay=1e-2, step=3),
           ("lr", "lr_decay", "weight_decay", "eps"), ("lr", "lr_decay", "weight_decay", "eps")),
    Kernel("rmsprop", fastopt.rmsprop_, ("params", "grads", "square_avgs", "momentum_buffers", "grad_avgs"),
           dict(lr=1e-2, alpha=0.9, weight_decay=1e-2, momentum=0.9, centered=True),
           ("lr", "alpha", "eps", "weight_decay", "momentum"), ("lr", "alpha", "eps", "weight_decay", "momentum")),
    Kernel("adam", fastopt.adam_, _ADAM_ARRAYS, dict(lr=1e-2, weight_decay=1e-2, amsgrad=True, step=3),
           _ADAM_FLOATS, ("lr", "eps", "weight_decay")),
    Kernel("adamw", fastopt.adamw_, _ADAM_ARRAYS, dict(lr=1e-2, weight_decay=1e-2, amsgrad=True, step=3),
           _ADAM_FLOATS, ("lr", "eps", "weight_decay")),
]
BY_NAME = {k.name: k for k in KERNELS}
WITH_STEP = [k for k in KERNELS if "step" in k.kwargs]

# Every (kernel, array argument) pair; and the pairs whose arrays the kernel writes.
KERNEL_ARGS = [(k, a) for k in KERNELS for a in k.arrays]
WRITTEN_ARGS = [(k, a) for k, a in KERNEL_ARGS if a != "grads"]
KA_IDS = [f"{k.name}-{a}" for k, a in KERNEL_ARGS]
WA_IDS = [f"{k.name}-{a}" for k, a in WRITTEN_ARGS]

SHAPES = [(5,), (2, 3), (4, 3)]  # three parameters; the last (where bad items go) is 2-d
LAST = len(SHAPES) - 1

# --------------------------------------------------------------------------------------- helpers


def rand(rng, shape, dtype=np.float64, name="params"):
    """Random non-zero values; second-moment states are positive so valid updates stay finite."""
    if name in ("exp_avg_sqs", "max_exp_avg_sqs", "square_avgs", "state_sums"):
        values = rng.uniform(1.0, 2.0, shape)
    else:
        values = rng.uniform(0.1, 0.5, shape) * rng.choice([-1.0, 1.0], shape)
    return np.asarray(values, dtype=dtype)


def make_args(kernel: Kernel, shapes=SHAPES, dtype=np.float64, seed=0) -> Dict[str, List[np.ndarray]]:
    rng = np.random.default_rng(seed)
    return {a: [rand(rng, s, dtype, a) for s in shapes] for a in kernel.arrays}


def call(kernel: Kernel, args: dict, **overrides):
    kernel.fn(*(args[a] for a in kernel.arrays), **{**kernel.kwargs, **overrides})


def _all_arrays(args: dict) -> List[np.ndarray]:
    out = []
    for value in args.values():
        if isinstance(value, np.ndarray):
            out.append(value)
        elif isinstance(value, (list, tuple)):
            out.extend(v for v in value if isinstance(v, np.ndarray))
    return out


def snapshot(args: dict) -> List[bytes]:
    """The bytes of every array passed (including the bad one and every state)."""
    return [a.tobytes() for a in _all_arrays(args)]


def assert_unchanged(args: dict, before: List[bytes]) -> None:
    after = snapshot(args)
    changed = [i for i, (x, y) in enumerate(zip(before, after)) if x != y]
    assert not changed, f"arrays {changed} (in argument order) were written before the error"


def assert_rejected(kernel: Kernel, args: dict, error, match: str, **overrides) -> None:
    """The call raises `error` with a message matching `match`, and leaves every array untouched."""
    before = snapshot(args)
    with pytest.raises(error, match=match):
        call(kernel, args, **overrides)
    assert_unchanged(args, before)


def named(arg: str, index: int = LAST) -> str:
    return re.escape(f"{arg}[{index}]")


def ids(values) -> List[str]:
    return [str(v) for v in values]


# --------------------------------------------------------------------------------------- a control


@pytest.mark.parametrize("kernel", KERNELS, ids=ids(KERNELS))
def test_control_valid_call_writes_every_written_array(kernel):
    """The base arguments are valid, and a valid call visibly writes params and every state (so the
    "unchanged" checks below are meaningful)."""
    args = make_args(kernel)
    before = {a: [x.copy() for x in args[a]] for a in kernel.arrays}
    call(kernel, args)
    for a in kernel.arrays:
        for old, new in zip(before[a], args[a]):
            assert np.isfinite(new).all()
            if a == "grads":
                assert old.tobytes() == new.tobytes()
            else:
                assert not np.array_equal(old, new), f"{kernel.name} did not update {a}"


# --------------------------------------------------------------------------------------- dtypes

BAD_DTYPES = [np.int32, np.int64, np.float16, np.bool_, np.complex128, np.longdouble,
              np.dtype(">f8"), np.dtype(">f4")]
BAD_DTYPE_IDS = ["int32", "int64", "float16", "bool", "complex128", "longdouble", "f8-byteswapped",
                 "f4-byteswapped"]


@pytest.mark.parametrize("dtype", BAD_DTYPES, ids=BAD_DTYPE_IDS)
@pytest.mark.parametrize("kernel,arg", KERNEL_ARGS, ids=KA_IDS)
def test_unsupported_dtype_is_a_type_error(kernel, arg, dtype):
    args = make_args(kernel)
    args[arg][LAST] = (np.arange(12).reshape(SHAPES[LAST]) % 2 + 1).astype(dtype)
    assert_rejected(kernel, args, TypeError, named(arg))


@pytest.mark.parametrize("dtypes", [(np.float32, np.float64), (np.float64, np.float32)], ids=["f32+f64", "f64+f32"])
@pytest.mark.parametrize("kernel,arg", KERNEL_ARGS, ids=KA_IDS)
def test_dtype_mismatch_is_a_type_error(kernel, arg, dtypes):
    """All arrays of one float dtype but the last item of `arg` of the other (for params: a list
    of mixed dtypes)."""
    common, odd = dtypes
    args = make_args(kernel, dtype=common)
    args[arg][LAST] = args[arg][LAST].astype(odd)
    assert_rejected(kernel, args, TypeError, named(arg))


@pytest.mark.parametrize("kernel", KERNELS, ids=ids(KERNELS))
def test_float32_params_with_float64_grads_is_a_type_error(kernel):
    args = make_args(kernel, dtype=np.float32)
    args["grads"] = [g.astype(np.float64) for g in args["grads"]]
    assert_rejected(kernel, args, TypeError, named("grads", 0))


# --------------------------------------------------------------------------------------- non-arrays

NOT_ARRAYS = {
    "list_of_floats": lambda shape: np.ones(shape).ravel().tolist(),
    "scalar": lambda shape: 0.5,
    "string": lambda shape: "abc",
    "none": lambda shape: None,
}


@pytest.mark.parametrize("what", list(NOT_ARRAYS))
@pytest.mark.parametrize("kernel,arg", KERNEL_ARGS, ids=KA_IDS)
def test_non_array_item_is_a_type_error(kernel, arg, what):
    args = make_args(kernel)
    args[arg][LAST] = NOT_ARRAYS[what](SHAPES[LAST])
    assert_rejected(kernel, args, TypeError, named(arg))


@pytest.mark.parametrize("what", ["list_of_floats", "scalar", "string"])
@pytest.mark.parametrize("kernel,arg", KERNEL_ARGS, ids=KA_IDS)
def test_non_array_argument_is_a_type_error(kernel, arg, what):
    """The whole argument is not an array: one parameter, a python list of floats or a scalar."""
    args = make_args(kernel, shapes=[(4,)])
    args = {a: v[0] for a, v in args.items()}
    args[arg] = [0.1, 0.2, 0.3, 0.4] if what == "list_of_floats" else NOT_ARRAYS[what]((4,))
    assert_rejected(kernel, args, TypeError, re.escape(arg))


# --------------------------------------------------------------------------------------- shapes


@pytest.mark.parametrize("bad_shape", [(4, 2), (3, 4), (12,), (4, 3, 1), ()], ids=ids([(4, 2), (3, 4), (12,), (4, 3, 1), ()]))
@pytest.mark.parametrize("kernel,arg", KERNEL_ARGS, ids=KA_IDS)
def test_shape_mismatch_is_a_value_error(kernel, arg, bad_shape):
    """Also the same size in another shape ((3, 4), (12,) vs (4, 3)). For params the message names
    the first other argument and params[2]."""
    args = make_args(kernel)
    args[arg][LAST] = rand(np.random.default_rng(9), bad_shape)
    assert_rejected(kernel, args, ValueError, named(arg))


# --------------------------------------------------------------------------------------- layout

NON_CONTIGUOUS = {
    "strided": lambda rng: rand(rng, (8, 3))[::2],
    "reversed": lambda rng: rand(rng, (4, 3))[::-1],
    "column_slice": lambda rng: rand(rng, (4, 6))[:, ::2],
    "transposed": lambda rng: rand(rng, (3, 4)).T,
    "fortran": lambda rng: np.asfortranarray(rand(rng, (4, 3))),
}


@pytest.mark.parametrize("layout", list(NON_CONTIGUOUS))
@pytest.mark.parametrize("kernel,arg", KERNEL_ARGS, ids=KA_IDS)
def test_non_c_contiguous_is_a_value_error(kernel, arg, layout):
    args = make_args(kernel)
    bad = NON_CONTIGUOUS[layout](np.random.default_rng(9))
    assert bad.shape == SHAPES[LAST] and not bad.flags.c_contiguous
    args[arg][LAST] = bad
    assert_rejected(kernel, args, ValueError, named(arg))


@pytest.mark.parametrize("kernel,arg", WRITTEN_ARGS, ids=WA_IDS)
def test_read_only_param_or_state_is_a_value_error(kernel, arg):
    args = make_args(kernel)
    args[arg][LAST].flags.writeable = False
    assert_rejected(kernel, args, ValueError, named(arg))


@pytest.mark.parametrize("kernel", KERNELS, ids=ids(KERNELS))
def test_read_only_grads_are_accepted(kernel):
    args, twin = make_args(kernel), make_args(kernel)
    for g in args["grads"]:
        g.flags.writeable = False
    call(kernel, args)
    call(kernel, twin)
    assert snapshot(args) == snapshot(twin)


# --------------------------------------------------------------------------------------- lengths


@pytest.mark.parametrize("delta", [-1, +1], ids=["shorter", "longer"])
@pytest.mark.parametrize("kernel,arg", KERNEL_ARGS, ids=KA_IDS)
def test_list_length_mismatch_is_a_value_error(kernel, arg, delta):
    """`arg` holds one array fewer or more than the others (for params, a mismatch with every other
    argument; the message names the argument holding the odd count or params)."""
    args = make_args(kernel, shapes=[(4,)] * 4)
    args = {a: v[:3] for a, v in args.items()}
    full = make_args(kernel, shapes=[(4,)] * 4, seed=1)[arg]
    args[arg] = full[:2] if delta < 0 else full
    assert_rejected(kernel, args, ValueError, re.escape(arg if arg != "params" else "params holds"))


@pytest.mark.parametrize("kernel,arg", [(k, a) for k, a in KERNEL_ARGS if a != "params"],
                         ids=[i for i in KA_IDS if not i.endswith("-params")])
def test_single_array_against_a_list_is_a_value_error(kernel, arg):
    args = make_args(kernel, shapes=[(4,)] * 3)
    args[arg] = args[arg][0]
    assert_rejected(kernel, args, ValueError, re.escape(arg))


# --------------------------------------------------------------------------------------- aliasing

PAIRS = [(k, a, b) for k in KERNELS for i, a in enumerate(k.arrays) for b in k.arrays[i + 1:]]
PAIR_IDS = [f"{k.name}-{a}-{b}" for k, a, b in PAIRS]


@pytest.mark.parametrize("kernel,first,second", PAIRS, ids=PAIR_IDS)
def test_same_array_as_two_arguments_is_a_value_error(kernel, first, second):
    """param passed as its own grad, a state passed as another state, ..."""
    args = make_args(kernel)
    args[second][LAST] = args[first][LAST]
    assert_rejected(kernel, args, ValueError, "shares memory")


@pytest.mark.parametrize("kernel,first,second", PAIRS, ids=PAIR_IDS)
def test_overlapping_views_of_one_buffer_are_a_value_error(kernel, first, second):
    args = make_args(kernel, shapes=[(6,)] * 3)
    buf = rand(np.random.default_rng(9), (10,))
    args[first][LAST], args[second][LAST] = buf[:6], buf[4:]
    assert_rejected(kernel, args, ValueError, "shares memory")


@pytest.mark.parametrize("kernel,arg", WRITTEN_ARGS, ids=WA_IDS)
def test_overlapping_views_within_one_argument_are_a_value_error(kernel, arg):
    args = make_args(kernel, shapes=[(6,)] * 3)
    buf = rand(np.random.default_rng(9), (11,))
    args[arg][1], args[arg][LAST] = buf[:6], buf[5:]  # one shared element
    assert_rejected(kernel, args, ValueError, "shares memory")


def _gradients_sharing(kernel: Kernel, how: str) -> Tuple[dict, dict]:
    """A call whose gradients share memory (`how`), and the same call with a copy of each gradient."""
    args = make_args(kernel, shapes=[(6,)] * 3)
    buf = rand(np.random.default_rng(9), (11,), name="grads")
    if how == "one array":  # (one gradient handed to two parameters)
        args["grads"][1] = args["grads"][LAST]
    else:  # partly overlapping views of one buffer
        args["grads"][1], args["grads"][LAST] = buf[:6], buf[5:]
    apart = copy.deepcopy(args)
    apart["grads"] = [g.copy() for g in args["grads"]]
    return args, apart


@pytest.mark.parametrize("how", ["one array", "overlapping views"])
@pytest.mark.parametrize("kernel", KERNELS, ids=ids(KERNELS))
def test_gradients_sharing_memory_are_read(kernel, how):
    """Gradients are only read, so they may share memory with one another (torch.optim reads them so): the
    update is the one of separate copies, bit for bit, and leaves the gradients as they were."""
    args, apart = _gradients_sharing(kernel, how)
    grads_before = [g.tobytes() for g in args["grads"]]
    call(kernel, args)
    call(kernel, apart)
    assert snapshot(args) == snapshot(apart)
    assert [g.tobytes() for g in args["grads"]] == grads_before


@pytest.mark.parametrize("kernel", KERNELS, ids=ids(KERNELS))
def test_a_gradient_sharing_memory_with_a_written_array_is_still_refused(kernel):
    """Gradients may share memory with one another only: not with a parameter or a state, which the call writes."""
    args, _ = _gradients_sharing(kernel, "one array")
    args["grads"][0] = args[kernel.arrays[-1]][0]
    assert_rejected(kernel, args, ValueError, "shares memory")


def test_overlap_is_found_after_a_call_of_many_arrays_and_on_several_threads():
    """The memory check keeps its buffer per thread from call to call (csrc/python/array_intake.cpp,
    ExtentBuffer) and gives back one grown past its kept size: after a call of 90,000 arrays (more than it
    keeps), and on four threads at once, an overlap is still refused with nothing written and a clean call
    still runs."""
    from concurrent.futures import ThreadPoolExecutor

    def calls(n: int, seed: int) -> None:
        rng = np.random.default_rng(seed)
        params = [rng.standard_normal(1).astype(np.float32) for _ in range(n)]
        grads = [rng.standard_normal(1).astype(np.float32) for _ in range(n)]
        bufs = [np.zeros(1, np.float32) for _ in range(n)]
        fastopt.sgd_(params, grads, bufs, lr=0.1, momentum=0.9, step=1)  # (3n extents)
        before = [a.copy() for a in params + bufs]
        bad = list(bufs)
        bad[n // 2] = params[n // 3]  # a state that is another parameter
        with pytest.raises(ValueError, match="shares memory with") as refused:
            fastopt.sgd_(params, grads, bad, lr=0.1, momentum=0.9, step=2)
        assert {f"params[{n // 3}]", f"momentum_buffers[{n // 2}]"} <= set(re.findall(r"\w+\[\d+\]", str(refused.value)))
        assert all(np.array_equal(a, b) for a, b in zip(params + bufs, before))
        fastopt.sgd_(params[:3], grads[:3], bufs[:3], lr=0.1, momentum=0.9, step=2)

    calls(30000, 0)
    calls(5, 1)
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(calls, [20000, 7, 3000, 30000], range(4)))


@pytest.mark.parametrize("kernel", KERNELS, ids=ids(KERNELS))
def test_same_state_list_passed_twice_is_a_value_error(kernel):
    args = make_args(kernel)
    last_state = kernel.arrays[-1]
    args[last_state] = args["params"]
    assert_rejected(kernel, args, ValueError, "shares memory")


@pytest.mark.parametrize("kernel", KERNELS, ids=ids(KERNELS))
def test_adjacent_views_of_one_buffer_are_accepted(kernel):
    """Touching is not overlapping: every array a separate slice of one buffer works."""
    n = len(kernel.arrays) * 3
    buf = np.abs(rand(np.random.default_rng(9), (4 * n,))) + 1.0  # positive: valid for every state
    views = iter(np.split(buf, n))
    args = {a: [next(views) for _ in range(3)] for a in kernel.arrays}
    twin = {a: [v.copy() for v in vs] for a, vs in args.items()}
    call(kernel, args)
    call(kernel, twin)
    assert snapshot(args) == snapshot(twin)


# --------------------------------------------------------------------------------------- scalars


@pytest.mark.parametrize("step", [0, -3])
@pytest.mark.parametrize("kernel", WITH_STEP, ids=ids(WITH_STEP))
def test_step_below_one_is_a_value_error(kernel, step):
    assert_rejected(kernel, make_args(kernel), ValueError, "step", step=step)


FLOAT_HYPERS = [(k, h) for k in KERNELS for h in k.floats]
NONNEG_HYPERS = [(k, h) for k in KERNELS for h in k.nonneg]


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")], ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize("kernel,hyper", FLOAT_HYPERS, ids=[f"{k.name}-{h}" for k, h in FLOAT_HYPERS])
def test_non_finite_hyperparameter_is_a_value_error(kernel, hyper, value):
    assert_rejected(kernel, make_args(kernel), ValueError, hyper, **{hyper: value})


@pytest.mark.parametrize("value", [-1e-3, -1.0])
@pytest.mark.parametrize("kernel,hyper", NONNEG_HYPERS, ids=[f"{k.name}-{h}" for k, h in NONNEG_HYPERS])
def test_negative_hyperparameter_is_a_value_error(kernel, hyper, value):
    assert_rejected(kernel, make_args(kernel), ValueError, hyper, **{hyper: value})


BAD_BETAS = [("beta1", 1.0), ("beta1", 1.5), ("beta1", -0.1), ("beta2", 1.0), ("beta2", -0.1), ("beta2", 2.0)]


@pytest.mark.parametrize("beta,value", BAD_BETAS, ids=[f"{b}={v}" for b, v in BAD_BETAS])
@pytest.mark.parametrize("kernel", [BY_NAME["adam"], BY_NAME["adamw"]], ids=["adam", "adamw"])
def test_beta_outside_unit_interval_is_a_value_error(kernel, beta, value):
    assert_rejected(kernel, make_args(kernel), ValueError, beta, **{beta: value})


@pytest.mark.parametrize("value", [1.5, 2.0])
def test_rmsprop_alpha_above_one_is_a_value_error(value):
    # torch accepts alpha > 1 and then produces NaN everywhere; fastopt refuses it.
    kernel = BY_NAME["rmsprop"]
    assert_rejected(kernel, make_args(kernel), ValueError, "alpha", alpha=value)


@pytest.mark.parametrize("kernel", [BY_NAME["adam"], BY_NAME["adamw"]], ids=["adam", "adamw"])
def test_beta_zero_is_accepted(kernel):
    args = make_args(kernel)
    call(kernel, args, beta1=0.0, beta2=0.0)
    assert all(np.isfinite(p).all() for p in args["params"])


@pytest.mark.parametrize("hyper", [dict(momentum=0.0, dampening=0.0), dict(momentum=0.9, dampening=0.1)],
                         ids=["no-momentum", "dampening"])
def test_sgd_nesterov_needs_momentum_and_no_dampening(hyper):
    kernel = BY_NAME["sgd"]
    assert_rejected(kernel, make_args(kernel), ValueError, "nesterov", nesterov=True, **hyper)


MISSING_STATE = [
    ("sgd", "momentum_buffers", dict(momentum=0.9)),
    ("sgd", "momentum_buffers", dict(momentum=0.9, nesterov=True, dampening=0.0)),
    ("rmsprop", "momentum_buffers", dict(momentum=0.9, centered=False)),
    ("rmsprop", "grad_avgs", dict(momentum=0.0, centered=True)),
    ("adam", "max_exp_avg_sqs", dict(amsgrad=True)),
    ("adamw", "max_exp_avg_sqs", dict(amsgrad=True)),
]


@pytest.mark.parametrize("name,state,hyper", MISSING_STATE,
                         ids=[f"{n}-{s}-{i}" for i, (n, s, _) in enumerate(MISSING_STATE)])
def test_missing_required_state_is_a_value_error(name, state, hyper):
    kernel = BY_NAME[name]
    args = make_args(kernel)
    args[state] = None
    assert_rejected(kernel, args, ValueError, state, **hyper)


# --------------------------------------------------------------------------------------- valid edges


@pytest.mark.parametrize("container", [list, tuple], ids=["list", "tuple"])
@pytest.mark.parametrize("kernel", KERNELS, ids=ids(KERNELS))
def test_empty_lists_are_a_no_op(kernel, container):
    call(kernel, {a: container() for a in kernel.arrays})


@pytest.mark.parametrize("kernel", KERNELS, ids=ids(KERNELS))
def test_zero_size_arrays_work(kernel):
    """Zero-size arrays among normal ones: they stay as they are, the others update as they would
    alone."""
    shapes = [(0,), (3,), (2, 0), (0, 4, 3)]
    args = make_args(kernel, shapes=shapes)
    alone = {a: [v[1].copy()] for a, v in args.items()}
    call(kernel, args)
    call(kernel, alone)
    for a in kernel.arrays:
        assert [v.shape for v in args[a]] == shapes
        assert args[a][1].tobytes() == alone[a][0].tobytes()


@pytest.mark.parametrize("kernel", KERNELS, ids=ids(KERNELS))
def test_only_zero_size_arrays_work(kernel):
    call(kernel, make_args(kernel, shapes=[(0,), (0, 3)]))


@pytest.mark.parametrize("kernel", KERNELS, ids=ids(KERNELS))
def test_zero_d_arrays_work(kernel):
    """A 0-d array updates like the one-element array of the same value."""
    args = make_args(kernel, shapes=[(), (1,)])
    for a in kernel.arrays:
        args[a][0][...] = args[a][1][0]
    call(kernel, args)
    for a in kernel.arrays:
        assert args[a][0].shape == ()
        assert args[a][0].tobytes() == args[a][1].tobytes()
    assert not np.array_equal(args["params"][0], make_args(kernel, shapes=[(1,)])["params"][0])


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("kernel", KERNELS, ids=ids(KERNELS))
def test_tuples_and_single_arrays_work_like_lists(kernel, dtype):
    as_list = make_args(kernel, dtype=dtype)
    as_tuple = {a: tuple(v) for a, v in make_args(kernel, dtype=dtype).items()}
    call(kernel, as_list)
    call(kernel, as_tuple)
    assert snapshot(as_list) == snapshot(as_tuple)

    single = {a: v[0] for a, v in make_args(kernel, dtype=dtype).items()}
    call(kernel, single)
    assert all(single[a].tobytes() == as_list[a][0].tobytes() for a in kernel.arrays)


OPTIONAL_STATE_OFF = {
    "sgd": (["momentum_buffers"], dict(momentum=0.0)),
    "rmsprop": (["momentum_buffers", "grad_avgs"], dict(momentum=0.0, centered=False)),
    "adam": (["max_exp_avg_sqs"], dict(amsgrad=False)),
    "adamw": (["max_exp_avg_sqs"], dict(amsgrad=False)),
}


@pytest.mark.parametrize("name", list(OPTIONAL_STATE_OFF))
def test_unused_state_argument_may_be_omitted(name):
    """With the flags that need no optional state, it can be left out (None)."""
    kernel = BY_NAME[name]
    optional, off = OPTIONAL_STATE_OFF[name]
    args = make_args(kernel)
    for a in optional:
        args[a] = None
    before = make_args(kernel)["params"]
    call(kernel, args, **off)
    assert all(not np.array_equal(p, q) for p, q in zip(args["params"], before))


# --------------------------------------------------------------------------------------- optimizers

OPTIMIZERS = {
    "SGD": dict(lr=0.1, momentum=0.9, dampening=0.1),
    "Adagrad": dict(lr=0.1, initial_accumulator_value=0.1),
    "RMSprop": dict(lr=1e-2, momentum=0.9, centered=True),
    "Adam": dict(lr=1e-2, amsgrad=True),
    "AdamW": dict(lr=1e-2, amsgrad=True),
}
OPT_NAMES = list(OPTIMIZERS)


def make_params(seed=0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    return [rand(rng, s, dtype) for s in SHAPES]


def grads_for(params, seed=1):
    rng = np.random.default_rng(seed)
    return [rand(rng, p.shape, p.dtype) for p in params]


def state_snapshot(opt) -> dict:
    """Deep copy of the per-parameter state (arrays as bytes, so the comparison is bitwise)."""
    return {i: {k: (v.dtype, v.shape, v.tobytes()) if isinstance(v, np.ndarray) else copy.deepcopy(v)
                for k, v in s.items()} for i, s in opt.state.items()}


def stepped_optimizer(name, params, steps=1):
    opt = getattr(optim, name)(params, **OPTIMIZERS[name])
    for _ in range(steps):
        opt.step(grads_for(params, seed=5))
    return opt


@pytest.mark.parametrize("name", OPT_NAMES)
def test_optimizer_negative_lr_is_a_value_error(name):
    with pytest.raises(ValueError, match="lr"):
        getattr(optim, name)(make_params(), **{**OPTIMIZERS[name], "lr": -1.0})


@pytest.mark.parametrize("betas", [(1.0, 0.9), (0.9, 1.0), (-0.1, 0.999)], ids=ids([(1.0, 0.9), (0.9, 1.0), (-0.1, 0.999)]))
@pytest.mark.parametrize("name", ["Adam", "AdamW"])
def test_optimizer_bad_betas_are_a_value_error(name, betas):
    with pytest.raises(ValueError, match="beta"):
        getattr(optim, name)(make_params(), betas=betas)


@pytest.mark.parametrize("bad", [[0.5, 0.5], 1.0, np.arange(3)], ids=["list", "scalar", "int-array"])
@pytest.mark.parametrize("name", OPT_NAMES)
def test_optimizer_bad_param_is_a_type_error(name, bad):
    with pytest.raises(TypeError, match=named("params")):
        getattr(optim, name)(make_params()[:LAST] + [bad], **OPTIMIZERS[name])


@pytest.mark.parametrize("count", [LAST, LAST + 2], ids=["fewer", "more"])
@pytest.mark.parametrize("name", OPT_NAMES)
def test_optimizer_wrong_number_of_grads_is_a_value_error(name, count):
    params = make_params()
    opt = stepped_optimizer(name, params)
    before, state = snapshot({"p": params}), state_snapshot(opt)
    grads = grads_for(make_params(seed=2) + make_params(seed=3))[:count]
    with pytest.raises(ValueError, match="grads"):
        opt.step(grads)
    assert_unchanged({"p": params}, before)
    assert state_snapshot(opt) == state


BAD_GRADS = {
    "float32": (TypeError, lambda p: p.astype(np.float32)),
    "int64": (TypeError, lambda p: np.ones(p.shape, np.int64)),
    "list": (TypeError, lambda p: p.tolist()),
    "shape": (ValueError, lambda p: np.ones(p.shape + (1,))),
    "transposed": (ValueError, lambda p: np.ones(p.shape[::-1]).T),
}


@pytest.mark.parametrize("bad", list(BAD_GRADS))
@pytest.mark.parametrize("name", OPT_NAMES)
def test_optimizer_bad_grad_names_it_and_changes_nothing(name, bad):
    params = make_params()
    opt = stepped_optimizer(name, params)
    before, state = snapshot({"p": params}), state_snapshot(opt)
    error, make_bad = BAD_GRADS[bad]
    grads = grads_for(params)
    grads[LAST] = make_bad(params[LAST])
    with pytest.raises(error, match=named("grads")):
        opt.step(grads)
    assert_unchanged({"p": params}, before)
    assert state_snapshot(opt) == state


@pytest.mark.parametrize("steps", [0, 1], ids=["fresh", "stepped"])
@pytest.mark.parametrize("name", OPT_NAMES)
def test_optimizer_grad_sharing_memory_with_its_param_changes_nothing(name, steps):
    """A grad that IS its parameter passes the optimizer's own grad checks and is refused by the
    kernel; the refused step must not count: params and state unchanged, and the next valid step
    gives what it gives on an optimizer that never saw the bad call."""
    params, twin_params = make_params(), make_params()
    opt, twin = stepped_optimizer(name, params, steps), stepped_optimizer(name, twin_params, steps)
    before, state = snapshot({"p": params}), state_snapshot(opt)
    grads = grads_for(params)
    grads[LAST] = params[LAST]
    with pytest.raises(ValueError, match="shares memory"):
        opt.step(grads)
    assert_unchanged({"p": params}, before)
    assert state_snapshot(opt) == state
    opt.step(grads_for(params, seed=7))
    twin.step(grads_for(twin_params, seed=7))
    assert snapshot({"p": params}) == snapshot({"p": twin_params})


@pytest.mark.parametrize("name", OPT_NAMES)
def test_optimizer_refused_step_over_mixed_dtypes_writes_nothing(name):
    """float32 and float64 params in one optimizer run as two kernel calls; a bad grad for the
    float64 one must not leave the float32 one already updated."""
    params = [make_params(dtype=np.float32)[0], make_params()[1]]
    opt = stepped_optimizer(name, params)
    before, state = snapshot({"p": params}), state_snapshot(opt)
    grads = grads_for(params)
    grads[1] = params[1]
    with pytest.raises(ValueError, match="shares memory"):
        opt.step(grads)
    assert_unchanged({"p": params}, before)
    assert state_snapshot(opt) == state


@pytest.mark.parametrize("name", OPT_NAMES)
def test_optimizer_none_grad_skips_that_param(name):
    params, twin_params = make_params(), make_params()
    opt = getattr(optim, name)(params, **OPTIMIZERS[name])
    twin = getattr(optim, name)(twin_params[:LAST], **OPTIMIZERS[name])
    before_last = params[LAST].tobytes()
    grads = grads_for(params)
    opt.step(grads[:LAST] + [None])
    twin.step(grads[:LAST])
    assert params[LAST].tobytes() == before_last
    assert LAST not in opt.state or state_snapshot(opt)[LAST] == {}
    assert snapshot({"p": params[:LAST]}) == snapshot({"p": twin_params[:LAST]})
    # a None for an earlier parameter also skips only that one
    opt.step([None] + grads[1:])
    assert params[LAST].tobytes() != before_last


@pytest.mark.parametrize("name", OPT_NAMES)
def test_optimizer_read_only_grad_is_accepted(name):
    params, twin_params = make_params(), make_params()
    opt, twin = getattr(optim, name)(params, **OPTIMIZERS[name]), getattr(optim, name)(twin_params, **OPTIMIZERS[name])
    grads = grads_for(params)
    for g in grads:
        g.flags.writeable = False
    opt.step(grads)
    twin.step(grads_for(twin_params))
    assert snapshot({"p": params}) == snapshot({"p": twin_params})
