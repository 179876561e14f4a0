"""Garbage arguments never crash the interpreter.

Hypothesis draws calls of every public native entry point (the updates, the losses, softmax,
penalty, the found_inf pre-pass, set_cpu_isa / set_num_threads) and of the stateful optimizers from
a mix of near-valid arguments and garbage: None, strings, bytes, huge ints, NaN and Inf, nested lists,
list subclasses that lie about their length, objects whose __float__ / __index__ raise, NumPy
scalars, and arrays of odd dtypes, shapes and strides (non-contiguous, read-only, misaligned,
zero-stride, 0-d, empty). A call either succeeds or raises TypeError, ValueError, IndexError or
OverflowError; anything else fails the test, and a crash would end the run.

The native entry points also get objects that speak the array protocols badly (hostile_objects.py):
DLPack exports with absurd extents, ndim, dtypes, devices, versions and NULL data, __cuda_array_interface__
values of every wrong shape, __dlpack_device__ answers that are not (type, id), protocol methods that
raise. A refused native call must leave every array it was given bit-identical.

Together the tests below draw well over 2,000 examples (see EXAMPLES), in a few seconds.
fastopt.reference and fastopt.gradcheck are pure NumPy/Python (no native memory access) and are
not fuzzed here.
"""

from __future__ import annotations

import inspect

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fastopt
from fastopt import optim
from hostile_objects import DL_CPU, DL_CUDA, FLOAT, INT, DeviceClaim, FakeDLPack, Interface, Raising

ALLOWED = (TypeError, ValueError, IndexError, OverflowError)
EXAMPLES = 500  # per test; 6 tests below -> 3,000 examples
SETTINGS = settings(max_examples=EXAMPLES, deadline=None, database=None,
                    suppress_health_check=list(HealthCheck))


class Boom(Exception):
    """Raised by the hostile objects below."""


class BadNumber:
    def __float__(self):
        raise Boom("__float__")

    def __index__(self):
        raise Boom("__index__")

    def __int__(self):
        raise Boom("__int__")


class LyingList(list):
    """A list whose len() claims many more items than it holds."""

    def __len__(self):
        return 1 << 20

    def __getitem__(self, i):
        raise Boom("__getitem__")

    def __iter__(self):
        raise Boom("__iter__")


class ShortTuple(tuple):
    def __len__(self):
        return 0


# ------------------------------------------------------------------------------------ strategies

DTYPES = [np.float32, np.float64, np.int32, np.int64, np.float16, np.bool_, np.complex64,
          np.dtype(">f8"), np.dtype(">f4"), np.uint8]


@st.composite
def odd_arrays(draw):
    dtype = np.dtype(draw(st.sampled_from(DTYPES)))
    shape = tuple(draw(st.lists(st.integers(0, 4), max_size=3)))
    size = int(np.prod(shape)) if shape else 1
    a = (np.arange(size) % 3 + 1).astype(dtype).reshape(shape)
    kind = draw(st.sampled_from(["plain", "strided", "readonly", "misaligned", "broadcast", "fortran",
                                 "object"]))
    if kind == "strided" and a.ndim:
        a = np.repeat(a, 2, axis=-1)[..., ::2]
    elif kind == "readonly":
        a.flags.writeable = False
    elif kind == "misaligned" and dtype.itemsize > 1:
        raw = np.zeros(a.nbytes + 1, np.uint8)
        a = np.frombuffer(raw.data, dtype=dtype, count=size, offset=1).reshape(shape)
    elif kind == "broadcast" and a.ndim:
        a = np.broadcast_to(a[..., :1], a.shape)
    elif kind == "fortran" and a.ndim > 1:
        a = np.asfortranarray(np.repeat(a, 2, axis=0))
    elif kind == "object":
        a = np.array([None, 1.5, "x"], dtype=object)
    return a


scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.integers(-3, 3),
    st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([0.0, -0.0, 1e-300, 1e300, 0.5, 1.0]),
    st.text(max_size=4), st.binary(max_size=4), st.just(BadNumber()), st.just(object()),
    st.just(np.float32(0.5)), st.just(np.bool_(True)), st.just(np.int64(3)), st.just(complex(1, 1)),
    st.just(Ellipsis), st.sampled_from(["mean", "sum", "none", "avx2", "baseline"]),
)
garbage = st.recursive(
    st.one_of(scalars, odd_arrays()),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.tuples(inner, inner),
                            st.builds(LyingList, st.lists(inner, max_size=2)),
                            st.builds(ShortTuple, st.lists(inner, max_size=2)),
                            st.dictionaries(st.text(max_size=3), inner, max_size=2)),
    max_leaves=6,
)


# ------------------------------------------------------------------------------------ protocol objects

# A GPU would take a host buffer that claims to be CUDA memory through DLPack (nothing can tell it is not),
# so CUDA claims are drawn only where there is no CUDA device to reach.
_NO_GPU = fastopt.cuda.device_count() == 0
_ABSURD_EXTENTS = [-1, -(1 << 62), 1 << 40, 1 << 62]


@st.composite
def fake_dlpack(draw, shape=None, dtype=None):
    """A DLPack export that is absurd somewhere, or else describes memory its own buffer holds; half of
    the time of `shape` and `dtype` (a NumPy float dtype) when they are given, so that a call can take it."""
    if shape is None or draw(st.booleans()):
        shape = draw(st.lists(st.one_of(st.integers(0, 5), st.sampled_from(_ABSURD_EXTENTS)), max_size=4))
    kinds = [(FLOAT, 64, 1), (FLOAT, 32, 1), (FLOAT, 16, 1), (INT, 64, 1), (INT, 32, 1), (FLOAT, 64, 2),
             (FLOAT, 0, 1), (9, 8, 1)]
    if dtype is not None:
        kinds = [(FLOAT, 8 * np.dtype(dtype).itemsize, 1)] * 4 + kinds
    code, bits, lanes = draw(st.sampled_from(kinds))
    # Only an ndim that is refused before the extents are read may differ from len(shape): the capsule's
    # shape array has len(shape) entries.
    ndim = draw(st.sampled_from([None, None, None, -1, 65, 1 << 20]))
    sane = all(0 <= n <= 5 for n in shape)
    absurd = st.sampled_from([(1 << 64) - 8, 1 << 63])
    elements = int(np.prod(shape)) if sane and shape else 1
    devices = [(DL_CPU, 0), (3, 0), (7, 0)] + ([(DL_CUDA, 0), (DL_CUDA, -1)] if _NO_GPU else [])
    device = draw(st.sampled_from(devices))
    return FakeDLPack(
        shape, ndim=ndim, dtype=(code, bits, lanes), data=draw(st.sampled_from(["buffer", "buffer", "buffer", None])),
        device=device, claimed=draw(st.sampled_from([device, device, (DL_CPU, 0)] + ([(DL_CUDA, 0)] if _NO_GPU else []))),
        versioned=draw(st.booleans()), version=draw(st.sampled_from([(1, 0), (1, 0), (1, 3), (2, 0), (0, 9)])),
        flags=draw(st.sampled_from([0, 0, 1, 2])), null_shape=draw(st.integers(0, 9)) == 0,
        strides=draw(st.sampled_from([None, [1] * len(shape), [-1] * len(shape)])),
        byte_offset=draw(absurd) if draw(st.integers(0, 5)) == 0 else 0,
        buffer_elements=elements * max(1, bits * lanes // 64 + 1))


_INTERFACE_VALUES = {
    "shape": [(3,), (2, 3), (), (-1,), (1 << 62, 4), "3", (3, "x"), [3], None, (1,) * 65],
    "typestr": ["<f8", "<f4", "|b1", ">f8", 8, None, ""],
    "data": [(4096, False), (0, False), (None, False), (4096,), (1 << 70, False), (-1, False), (4096, "no"), "x",
             None],
    "strides": [None, (8,), (8, 8), "8", (None,)],
    "stream": [None, 1, 2, 0, -1, "default", 1 << 70, 1.5],
    "mask": [None, np.zeros(3, bool)],
    "version": [3, 2, None],
}


@st.composite
def cuda_interfaces(draw):
    """An object whose __cuda_array_interface__ is a dict with any subset of the keys, each of any value,
    or not a dict at all, or raises. (Nothing reads its pointer: without a GPU every one is refused, and
    on a GPU the pointer is no device memory.)"""
    if draw(st.integers(0, 5)) == 0:
        return Interface(draw(st.sampled_from([[1, 2], (("data", 0),), "cai", None, 3, Boom("interface")])))
    keys = draw(st.lists(st.sampled_from(sorted(_INTERFACE_VALUES)), unique=True))
    return Interface({k: draw(st.sampled_from(_INTERFACE_VALUES[k])) for k in keys})


@st.composite
def device_claims(draw):
    """__dlpack_device__ answers that are not (device_type, device_id), and some that are; __dlpack__
    exports a real float64 array (taken, when the rest of the call is fine)."""
    answer = draw(st.sampled_from([(1,), ("cpu", 0), None, 5, "cpu", (1, 2 ** 70), (2 ** 40, 0), (1, "0"),
                                   (1.0, 0), [1, 0], (1, 0, 0), (13, -7), (7, 0), (True, 0), (1, 0), (3, 0),
                                   Boom("device")] + ([(2, 0), (2, -1)] if _NO_GPU else [])))
    return DeviceClaim(answer, np.ones(draw(st.integers(0, 4))))


protocol_objects = st.one_of(
    fake_dlpack(), cuda_interfaces(), device_claims(),
    st.builds(Raising, st.just(Boom("protocol")),
              st.sampled_from(["__dlpack__", "__dlpack_device__", "__cuda_array_interface__", "attribute",
                               "__float__", "__index__", "cuda_stream"])),
)
# Garbage for the native entry points: the leaves above, and protocol objects.
native_garbage = st.recursive(
    st.one_of(scalars, odd_arrays(), protocol_objects),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.tuples(inner, inner),
                            st.builds(LyingList, st.lists(inner, max_size=2)),
                            st.builds(ShortTuple, st.lists(inner, max_size=2))),
    max_leaves=6,
)


def arrays_in(value) -> list:
    """Every NumPy array an argument can reach (through lists, tuples, dicts and the protocol objects), for
    the check that a refused call wrote none of them. (A list subclass's own __iter__ is not called.)"""
    found, stack = [], [value]
    while stack:
        v = stack.pop()
        if isinstance(v, np.ndarray):
            if v.dtype != object:
                found.append(v)
        elif isinstance(v, list):
            stack.extend(list.__iter__(v))
        elif isinstance(v, tuple):
            stack.extend(tuple.__iter__(v))
        elif isinstance(v, dict):
            stack.extend(dict.values(v))
        elif isinstance(v, FakeDLPack):
            found.append(v.buffer)
        elif isinstance(v, DeviceClaim):
            found.append(v.array)
    return found


@st.composite
def near_valid_arrays(draw, shape, dtype):
    """One array or a list of arrays of the call's shape and dtype: valid most of the time."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    count = draw(st.integers(0, 3))
    make = lambda: (rng.uniform(0.5, 2.0, shape)).astype(dtype)  # noqa: E731
    if draw(st.booleans()):
        return make()
    return [make() for _ in range(count)]


@st.composite
def lists_with_a_protocol_object(draw, shape, dtype):
    """Near-valid arrays with a protocol object among them (often one of the call's shape and dtype)."""
    arrays = draw(near_valid_arrays(shape, dtype))
    arrays = list(arrays) if isinstance(arrays, list) else [arrays]
    hostile = draw(st.one_of(fake_dlpack(shape, dtype), protocol_objects))
    arrays.insert(draw(st.integers(0, len(arrays))), hostile)
    return arrays


def call_and_check(fn, args, kwargs, allowed=ALLOWED, unchanged=False):
    """fn(*args, **kwargs) succeeds or raises one of `allowed`; with `unchanged`, a refused call must have
    left every array it could reach bit-identical."""
    watched = [(a, a.tobytes()) for a in arrays_in([args, kwargs])] if unchanged else []
    try:
        fn(*args, **kwargs)
    except allowed:
        for a, before in watched:
            assert a.tobytes() == before, f"a refused call of {getattr(fn, '__name__', fn)} wrote an array"


# The optimizer classes are Python: iterating the caller's own object (list(params)) lets an
# exception from its __iter__ through unchanged, as any Python function does. The native entry
# points never call __iter__ or __len__ of a list subclass, and turn a failing __float__ / __index__
# into a TypeError naming the argument.
CLASS_ALLOWED = ALLOWED + (Boom,)


# ------------------------------------------------------------------------------------ the kernels

UPDATES = [fastopt.sgd_, fastopt.adagrad_, fastopt.rmsprop_, fastopt.adam_, fastopt.adamw_]


def parameters(fn):
    return list(inspect.signature(fn).parameters.values())


@st.composite
def update_calls(draw):
    fn = draw(st.sampled_from(UPDATES))
    params = parameters(fn)
    shape = tuple(draw(st.lists(st.integers(0, 5), max_size=2)))
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    args, kwargs = [], {}
    for p in params:
        if p.kind is p.POSITIONAL_OR_KEYWORD:
            value = draw(st.one_of(near_valid_arrays(shape, dtype), near_valid_arrays(shape, dtype),
                                   lists_with_a_protocol_object(shape, dtype), st.none(), native_garbage))
            args.append(value)
        elif draw(st.integers(0, 3)) == 0:
            kwargs[p.name] = draw(native_garbage)
        elif p.name in ("step",):
            kwargs[p.name] = draw(st.integers(-2, 5))
        elif p.name in ("nesterov", "maximize", "amsgrad", "centered", "skip_nonfinite"):
            kwargs[p.name] = draw(st.booleans())
        elif p.name != "lr" or draw(st.booleans()):
            kwargs[p.name] = draw(st.sampled_from([0.0, 0.1, 0.9, 1.0, -1.0, float("nan"), 2.0, 1e-8]))
        else:
            kwargs[p.name] = 0.1
    cut = draw(st.integers(0, len(args)))  # sometimes too few positional arguments
    if draw(st.integers(0, 4)) == 0:
        args = args[:cut]
    if draw(st.integers(0, 9)) == 0:
        kwargs[draw(st.text(min_size=1, max_size=5))] = draw(native_garbage)
    return fn, args, kwargs


@SETTINGS
@given(update_calls())
def test_updates_never_crash(call):
    call_and_check(*call, unchanged=True)


@st.composite
def loss_calls(draw):
    name = draw(st.sampled_from(["softmax_cross_entropy", "multiclass_svm_loss", "penalty", "softmax",
                                 "log_softmax", "_found_nonfinite"]))
    fn = getattr(fastopt, name, None) or getattr(fastopt._core, name)
    n, c = draw(st.integers(0, 4)), draw(st.integers(0, 4))
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    scores = rng.standard_normal((n, c)).astype(dtype)
    labels = rng.integers(-1, c + 1, n).astype(draw(st.sampled_from([np.int32, np.int64])))
    pick = lambda valid: draw(st.one_of(st.just(valid), native_garbage)) if draw(st.booleans()) else valid  # noqa: E731
    if name == "softmax_cross_entropy":
        args = [pick(scores), pick(labels)]
        kwargs = dict(weight=pick(None), ignore_index=pick(-100), label_smoothing=pick(0.1), reduction=pick("mean"),
                      z_loss=pick(0.0), out=pick(draw(st.sampled_from([None, scores, scores.copy()]))))
    elif name == "multiclass_svm_loss":
        args = [pick(scores), pick(labels)]
        kwargs = dict(margin=pick(1.0), reduction=pick("sum"))
    elif name == "penalty":
        args = [pick(scores)]
        kwargs = dict(l1=pick(0.1), l2=pick(0.2), out_grad=pick(scores.copy()))
    elif name == "_found_nonfinite":
        args = [pick([scores, scores.copy().astype(np.float64)])]
        kwargs = dict(grad_scale=pick(2.0))
    else:
        args, kwargs = [pick(scores)], {}
    kwargs = {k: v for k, v in kwargs.items() if draw(st.integers(0, 3))}
    return fn, args, kwargs


@SETTINGS
@given(loss_calls())
def test_losses_and_helpers_never_crash(call):
    call_and_check(*call, unchanged=True)


@SETTINGS
@given(name=st.sampled_from(["set_cpu_isa", "set_num_threads", "build_info"]), value=garbage,
       small=st.integers(-2, 8))
def test_settings_never_crash(name, value, small):
    isa, threads = fastopt.build_info()["cpu_isa"], fastopt.build_info()["num_threads"]
    try:
        fn = getattr(fastopt, name)
        call_and_check(fn, [] if name == "build_info" else [value], {})
        if name == "set_num_threads":
            call_and_check(fn, [small], {})
    finally:
        fastopt.set_cpu_isa(isa)
        fastopt.set_num_threads(threads)


# ------------------------------------------------------------------------------------ the classes

CLASSES = [optim.SGD, optim.Adagrad, optim.RMSprop, optim.Adam, optim.AdamW]
HYPERS = {"lr": 0.1, "momentum": 0.5, "dampening": 0.0, "weight_decay": 0.01, "nesterov": False, "maximize": False,
          "lr_decay": 0.0, "initial_accumulator_value": 0.0, "eps": 1e-8, "alpha": 0.9, "centered": True,
          "betas": (0.9, 0.99), "amsgrad": True,
          # Adam/AdamW's state precision (optimizer-wide options)
          "state_dtype": "bfloat16", "stochastic_rounding": True, "seed": 3}


@st.composite
def optimizer_calls(draw):
    cls = draw(st.sampled_from(CLASSES))
    names = [p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "params")]
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    shapes = draw(st.lists(st.lists(st.integers(0, 3), max_size=2).map(tuple), min_size=0, max_size=3))
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    params = [rng.standard_normal(s).astype(dtype) for s in shapes]
    if draw(st.integers(0, 4)) == 0:
        params = draw(garbage)
    hyper = {k: (draw(garbage) if draw(st.integers(0, 5)) == 0 else HYPERS[k]) for k in names
             if draw(st.booleans())}
    grads = [rng.standard_normal(s).astype(dtype) for s in shapes]
    if draw(st.booleans()):
        grads = draw(st.one_of(garbage, st.lists(st.one_of(st.none(), odd_arrays(), garbage), max_size=3)))
    step_kw = {}
    if draw(st.booleans()):
        step_kw["grad_scale"] = draw(st.one_of(garbage, st.just(2.0)))
    if draw(st.booleans()):
        step_kw["skip_nonfinite"] = draw(st.one_of(garbage, st.booleans()))
    return cls, params, hyper, grads, step_kw


@SETTINGS
@given(optimizer_calls())
def test_optimizers_never_crash(call):
    cls, params, hyper, grads, step_kw = call
    try:
        opt = cls(params, **hyper)
    except CLASS_ALLOWED:
        return
    call_and_check(opt.step, [grads], step_kw, CLASS_ALLOWED)
    call_and_check(opt.load_state_dict, [opt.state_dict()], {}, CLASS_ALLOWED)


@SETTINGS
@given(optimizer_calls(), st.integers(0, 2**32 - 1), st.one_of(garbage, odd_arrays()))
def test_optimizer_steps_on_valid_grads_then_garbage_state(call, seed, junk):
    """A valid optimizer whose state a user has overwritten with garbage: the next step refuses it."""
    cls, params, hyper, grads, step_kw = call
    try:
        opt = cls([np.ones(3, np.float32), np.ones((2, 2), np.float32)], **hyper)
        opt.step([np.ones(3, np.float32), np.ones((2, 2), np.float32)])
    except CLASS_ALLOWED:
        return
    rng = np.random.default_rng(seed)
    for state in opt.state.values():
        for key in list(state):
            if rng.integers(0, 3) == 0:
                state[key] = junk
    call_and_check(opt.step, [[np.ones(3, np.float32), np.ones((2, 2), np.float32)]], step_kw, CLASS_ALLOWED)


def test_enough_examples_in_ci():
    fuzz_tests = [v for k, v in globals().items() if k.startswith("test_") and hasattr(v, "hypothesis")]
    assert len(fuzz_tests) * EXAMPLES >= 2000
