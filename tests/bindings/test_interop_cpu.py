"""The array intake on the CPU: arrays of other frameworks (PyTorch CPU tensors, any object with
__dlpack__ / __dlpack_device__) next to NumPy, and what it refuses.

- Every optimizer and flag combination updates torch CPU tensors in their own memory (data_ptr()
  unchanged), with the same bits as the same call on NumPy copies; NumPy and torch arrays mix in one
  call; a minimal DLPack producer (a wrapper that forwards __dlpack__ / __dlpack_device__ to a NumPy
  array, over the versioned and the legacy protocol) works.
- Losses with torch input return torch tensors for their array outputs (the reduced loss of a CPU
  call is a Python float), with NumPy's bits.
- Refused, with the argument named and nothing written: objects with only __array__, lists of floats,
  float16/bfloat16 params on the CPU ("CUDA devices only"), non-contiguous tensors, read-only DLPack
  exports as written arrays, tensors that require grad (torch's own reason), arrays claiming another
  device.
- a valid stream= is accepted and ignored on the CPU, a garbage one refused; fastopt.cuda and build_info()["cuda"] agree with each
  other, and on a machine without a GPU say so.
"""

from __future__ import annotations

import re

import numpy as np
import pytest

import fastopt
from interop_cases import CONFIG_IDS, CONFIGS, FULL, FULL_IDS, array_names, call_case, convert, copy_args
from interop_cases import hyper_of, make_numpy_args, new_grads
from kernel_cases import CASES_BY_NAME

try:
    import torch
except ImportError:  # the torch tests skip; the DLPack-wrapper and fastopt.cuda tests still run
    torch = None

needs_torch = pytest.mark.skipif(torch is None, reason="needs torch")

SIZES = [0, 1, 7, 1000, 4099]  # empty, one element, SIMD tails, more than one vector block
STEPS = 3
DTYPES = [np.float32, np.float64]
DTYPE_IDS = ["f32", "f64"]


# ------------------------------------------------------------------------------------------ helpers


class DLPackArray:
    """A minimal DLPack producer: forwards the two protocol methods to a NumPy array (what an array
    library without NumPy's type does). fastopt asks for a versioned capsule (max_version, copy)."""

    def __init__(self, array: np.ndarray):
        self.array = array

    def __dlpack__(self, **kwargs):
        return self.array.__dlpack__(**kwargs)

    def __dlpack_device__(self):
        return self.array.__dlpack_device__()


class LegacyDLPackArray(DLPackArray):
    """A producer from before DLPack 1.0: __dlpack__ takes only `stream` and returns a "dltensor"
    capsule (fastopt retries without max_version / copy on the TypeError)."""

    def __dlpack__(self, stream=None):
        return self.array.__dlpack__(stream=stream)


class ArrayLike:
    """Has __array__ only: NumPy could convert it, but fastopt never converts (an update of a
    temporary copy would be lost)."""

    def __init__(self, array: np.ndarray):
        self.array = array

    def __array__(self, dtype=None, copy=None):
        return self.array


class ClaimsCuda:
    """An object whose __dlpack_device__ says CUDA device 0: the intake must refuse it from the
    device alone, before asking for its memory (its __dlpack__ fails the test if called)."""

    def __init__(self, shape=(3,)):
        self.shape = shape

    def __dlpack_device__(self):
        return (2, 0)  # kDLCUDA

    def __dlpack__(self, **kwargs):
        raise AssertionError("__dlpack__ must not be called for an array on the wrong device")


def numpy_of(a) -> np.ndarray:
    """The values of any CPU array of these tests, as a NumPy array sharing its memory."""
    if isinstance(a, np.ndarray):
        return a
    if isinstance(a, DLPackArray):
        return a.array
    if a.dtype == torch.bfloat16:  # NumPy has no bfloat16: compare the bits
        return a.view(torch.int16).numpy()
    return a.numpy()


def snapshot(*groups) -> list:
    """Copies of every array in `groups` (dicts of lists, lists, or arrays)."""
    flat = []
    for group in groups:
        if isinstance(group, dict):
            for arrays in group.values():
                flat.extend(arrays if isinstance(arrays, (list, tuple)) else [arrays])
        elif isinstance(group, (list, tuple)):
            flat.extend(group)
        else:
            flat.append(group)
    arrays = (np.ndarray, DLPackArray) if torch is None else (np.ndarray, DLPackArray, torch.Tensor)
    return [(a, numpy_of(a).copy()) for a in flat if isinstance(a, arrays)]


def assert_unchanged(before: list) -> None:
    for i, (a, old) in enumerate(before):
        np.testing.assert_array_equal(numpy_of(a), old, err_msg=f"array {i} was written by a refused call")


def assert_same_bits(args, expected, what=""):
    for name, arrays in expected.items():
        for i, (a, e) in enumerate(zip(args[name], arrays)):
            got = numpy_of(a)
            assert got.dtype == e.dtype, f"{what}{name}[{i}]"
            np.testing.assert_array_equal(got, e, err_msg=f"{what}{name}[{i}]")


def run_steps(case, hyper, args, grads_per_step):
    for t, grads in enumerate(grads_per_step, start=1):
        args["grads"] = grads
        assert call_case(case, hyper, args, step=t) is False


def moved(args, initial):
    """True when some parameter changed: the run was not a no-op that any intake would pass."""
    return any(np.any(numpy_of(p) != p0) for p, p0 in zip(args["params"], initial["params"]))


def to_torch(a: np.ndarray):
    return torch.tensor(a)  # its own storage: nothing shared with the NumPy witness


# ------------------------------------------------------------------------------------ optimizers


@needs_torch
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("case,config", CONFIGS, ids=CONFIG_IDS)
def test_torch_cpu_tensors_are_updated_in_place_like_numpy(case, config, dtype):
    hyper = hyper_of(case, config, seed=1)
    base = make_numpy_args(case, hyper, SIZES, dtype, seed=2)
    grads = [new_grads(SIZES, dtype, seed=10 + t) for t in range(STEPS)]

    witness = copy_args(base)
    run_steps(case, hyper, witness, grads)

    tensors = convert(base, lambda name, i, a: to_torch(a))
    pointers = {name: [t.data_ptr() for t in arrays] for name, arrays in tensors.items()}
    run_steps(case, hyper, tensors, [[to_torch(g) for g in step] for step in grads])

    written = {name: arrays for name, arrays in witness.items() if name != "grads"}
    assert_same_bits(tensors, written)
    for name in written:
        assert [t.data_ptr() for t in tensors[name]] == pointers[name], f"{name} moved to new memory"
        assert all(t.dtype == getattr(torch, np.dtype(dtype).name) for t in tensors[name])
    assert moved(tensors, base)


@needs_torch
@pytest.mark.parametrize("first", ["numpy", "torch"])
@pytest.mark.parametrize("case,config", FULL, ids=FULL_IDS)
def test_numpy_and_torch_arrays_mix_in_one_call(case, config, first):
    # Alternate frameworks along each list and between arguments; the first array of the call (which
    # fixes its device) is NumPy or torch.
    hyper = hyper_of(case, config, seed=3)
    base = make_numpy_args(case, hyper, SIZES, np.float64, seed=4)
    grads = [new_grads(SIZES, np.float64, seed=20 + t) for t in range(STEPS)]
    witness = copy_args(base)
    run_steps(case, hyper, witness, grads)

    names = array_names(case, hyper)
    offset = 0 if first == "numpy" else 1

    def mixed(name, i, a):
        use_torch = (i + names.index(name) + offset) % 2 == 1
        return to_torch(a) if use_torch else a.copy()

    args = convert(base, mixed)
    assert isinstance(args["params"][0], np.ndarray) == (first == "numpy")
    run_steps(case, hyper, args, [[mixed("grads", i, g) for i, g in enumerate(step)] for step in grads])
    assert_same_bits(args, {n: a for n, a in witness.items() if n != "grads"})
    assert moved(args, base)


@pytest.mark.parametrize("producer", [DLPackArray, LegacyDLPackArray], ids=["versioned", "legacy"])
@pytest.mark.parametrize("case,config", FULL, ids=FULL_IDS)
def test_a_minimal_dlpack_producer_works(case, config, producer):
    hyper = hyper_of(case, config, seed=5)
    base = make_numpy_args(case, hyper, SIZES, np.float32, seed=6)
    grads = [new_grads(SIZES, np.float32, seed=30 + t) for t in range(STEPS)]
    witness = copy_args(base)
    run_steps(case, hyper, witness, grads)

    args = convert(base, lambda name, i, a: producer(a.copy()))
    run_steps(case, hyper, args, [[producer(g) for g in step] for step in grads])
    assert_same_bits(args, {n: a for n, a in witness.items() if n != "grads"})
    assert moved(args, base)


def test_empty_dlpack_export_with_any_strides_is_contiguous():
    # An empty array is C-contiguous whatever its strides (NumPy says so, and takes it directly): through
    # __dlpack__ too. Only the trailing extent is non-empty, so a row-by-row stride check would refuse it.
    p = np.empty((4, 6), np.float32)[:0, ::2]
    assert p.shape == (0, 3) and p.flags.c_contiguous
    for producer in (DLPackArray, LegacyDLPackArray):
        assert fastopt.sgd_(producer(p), producer(p.copy()), lr=0.1) is False


@needs_torch
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_single_torch_tensors_and_cpu_scalar_tensors(dtype):
    # One tensor per argument (not a list), and lr / step given as 0-d CPU tensors: read on the host
    # like Python numbers.
    rng = np.random.default_rng(7)
    p, g = rng.standard_normal(100).astype(dtype), rng.standard_normal(100).astype(dtype)
    m, v = np.zeros(100, dtype), np.zeros(100, dtype)
    witness = [p.copy(), m.copy(), v.copy()]
    for t in (1, 2):
        fastopt.adamw_(witness[0], g, witness[1], witness[2], lr=0.125, weight_decay=0.25, step=t)
    tp, tm, tv = to_torch(p), to_torch(m), to_torch(v)
    for t in (1, 2):
        fastopt.adamw_(tp, torch.from_numpy(g), tm, tv, lr=torch.tensor(0.125, dtype=torch.float64),
                       weight_decay=0.25, step=torch.tensor(t))
    for got, want in zip((tp, tm, tv), witness):
        np.testing.assert_array_equal(got.numpy(), want)
    assert not np.array_equal(witness[0], p)


# ---------------------------------------------------------------------------------------- losses


LABEL_DTYPES = ["int64", "int32"]


def loss_inputs(dtype, n=37, c=11, seed=8):
    rng = np.random.default_rng(seed)
    logits = (3 * rng.standard_normal((n, c))).astype(dtype)
    labels = rng.integers(0, c, n)
    labels[::5] = -100  # ignored rows
    weight = rng.uniform(0.5, 2.0, c).astype(dtype)
    return logits, labels, weight


@needs_torch
@pytest.mark.parametrize("label_dtype", LABEL_DTYPES)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_cross_entropy_with_torch_cpu_input_returns_torch_tensors(dtype, reduction, label_dtype):
    logits, labels, weight = loss_inputs(dtype)
    labels = labels.astype(label_dtype)
    kwargs = dict(label_smoothing=0.1, reduction=reduction, z_loss=1e-3)
    want_loss, want_grad = fastopt.softmax_cross_entropy(logits, labels, weight=weight, **kwargs)
    t_logits = to_torch(logits)
    loss, grad = fastopt.softmax_cross_entropy(t_logits, to_torch(labels), weight=to_torch(weight), **kwargs)
    assert isinstance(grad, torch.Tensor) and grad.device.type == "cpu" and grad.dtype == t_logits.dtype
    np.testing.assert_array_equal(grad.numpy(), want_grad)
    if reduction == "none":
        assert isinstance(loss, torch.Tensor) and loss.shape == (len(labels),) and loss.dtype == t_logits.dtype
        np.testing.assert_array_equal(loss.numpy(), want_loss)
    else:
        assert type(loss) is float  # a CPU call returns the reduced loss as a Python float
        assert loss == want_loss
    np.testing.assert_array_equal(t_logits.numpy(), logits)  # the input is not written


@needs_torch
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_cross_entropy_in_place_out_is_the_torch_tensor_itself(dtype):
    logits, labels, weight = loss_inputs(dtype)
    want_loss, want_grad = fastopt.softmax_cross_entropy(logits, labels, weight=weight)
    t_logits = to_torch(logits)
    pointer = t_logits.data_ptr()
    loss, grad = fastopt.softmax_cross_entropy(t_logits, to_torch(labels), weight=to_torch(weight), out=t_logits)
    assert grad is t_logits and t_logits.data_ptr() == pointer
    assert loss == want_loss
    np.testing.assert_array_equal(t_logits.numpy(), want_grad)


@needs_torch
def test_cross_entropy_bad_torch_label_writes_nothing():
    logits, labels, _ = loss_inputs(np.float32)
    labels[23] = 11  # == C
    t_logits, t_labels = to_torch(logits), to_torch(labels)
    with pytest.raises(IndexError, match=re.escape("labels[23] = 11")):
        fastopt.softmax_cross_entropy(t_logits, t_labels, out=t_logits)
    np.testing.assert_array_equal(t_logits.numpy(), logits)


@needs_torch
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("shape", [(5,), (6, 9), (2, 3, 1000)], ids=["1d", "2d", "3d"])
def test_softmax_and_log_softmax_of_torch_cpu_tensors(shape, dtype):
    x = (4 * np.random.default_rng(9).standard_normal(shape)).astype(dtype)
    for fn in (fastopt.softmax, fastopt.log_softmax):
        want = fn(x)
        got = fn(to_torch(x))
        assert isinstance(got, torch.Tensor) and tuple(got.shape) == shape and got.dtype == to_torch(x).dtype
        np.testing.assert_array_equal(got.numpy(), want)


@needs_torch
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_multiclass_svm_and_penalty_with_torch_cpu_tensors(dtype, reduction):
    rng = np.random.default_rng(10)
    scores = rng.standard_normal((20, 7)).astype(dtype)
    labels = rng.integers(0, 7, 20).astype(np.int32)
    want_loss, want_grad = fastopt.multiclass_svm_loss(scores, labels, margin=0.5, reduction=reduction)
    loss, grad = fastopt.multiclass_svm_loss(to_torch(scores), to_torch(labels), margin=0.5, reduction=reduction)
    assert isinstance(grad, torch.Tensor)
    np.testing.assert_array_equal(grad.numpy(), want_grad)
    if reduction == "none":
        assert isinstance(loss, torch.Tensor)
        np.testing.assert_array_equal(loss.numpy(), want_loss)
    else:
        assert loss == want_loss

    w = rng.standard_normal((4, 5)).astype(dtype)
    out = rng.standard_normal((4, 5)).astype(dtype)
    want_out = out.copy()
    want_value = fastopt.penalty(w, l1=0.25, l2=0.5, out_grad=want_out)
    t_out = to_torch(out)
    pointer = t_out.data_ptr()
    value = fastopt.penalty(to_torch(w), l1=0.25, l2=0.5, out_grad=t_out)
    assert value == want_value and t_out.data_ptr() == pointer
    np.testing.assert_array_equal(t_out.numpy(), want_out)
    assert not np.array_equal(want_out, out)


@needs_torch
def test_loss_outputs_follow_the_framework_of_the_scores():
    logits, labels, _ = loss_inputs(np.float64)
    want_loss, want_grad = fastopt.softmax_cross_entropy(logits, labels)
    # NumPy logits with torch labels: NumPy outputs.
    loss, grad = fastopt.softmax_cross_entropy(logits, to_torch(labels))
    assert type(grad) is np.ndarray and loss == want_loss
    np.testing.assert_array_equal(grad, want_grad)
    # torch logits with NumPy labels: torch outputs.
    loss, grad = fastopt.softmax_cross_entropy(to_torch(logits), labels)
    assert isinstance(grad, torch.Tensor) and loss == want_loss
    np.testing.assert_array_equal(grad.numpy(), want_grad)


def test_loss_of_a_dlpack_producer_returns_numpy():
    logits, labels, _ = loss_inputs(np.float64)
    want_loss, want_grad = fastopt.softmax_cross_entropy(logits, labels)
    loss, grad = fastopt.softmax_cross_entropy(DLPackArray(logits), DLPackArray(labels))
    assert type(grad) is np.ndarray and loss == want_loss
    np.testing.assert_array_equal(grad, want_grad)
    got = fastopt.softmax(LegacyDLPackArray(logits))
    assert type(got) is np.ndarray
    np.testing.assert_array_equal(got, fastopt.softmax(logits))


# -------------------------------------------------------------------------------------- refusals


def full_args(name="adam", dtype=np.float64, sizes=(5, 6, 7), seed=11):
    """A valid call (every state used) with non-zero state, so that a write shows."""
    case = CASES_BY_NAME[name]
    hyper = hyper_of(case, list(case.configs)[-1], seed)
    args = make_numpy_args(case, hyper, sizes, dtype, seed)
    rng = np.random.default_rng(seed + 1)
    for state in case.used_states(hyper):
        args[state] = [a + rng.uniform(0.5, 1.0, a.shape).astype(dtype) for a in args[state]]
    return case, hyper, args


def assert_refused(case, hyper, args, error, match, **extra):
    before = snapshot(args)
    with pytest.raises(error, match=match):
        call_case(case, hyper, args, step=2, **extra)
    assert_unchanged(before)


def test_control_full_args_call_writes_every_written_array():
    # The refusal tests below would pass for a kernel that writes nothing; this one would not.
    case, hyper, args = full_args()
    before = copy_args(args)
    call_case(case, hyper, args, step=2)
    for name in array_names(case, hyper):
        changed = any(not np.array_equal(a, b) for a, b in zip(args[name], before[name]))
        assert changed == (name != "grads"), name


@pytest.mark.parametrize("arg", ["params", "grads", "exp_avgs", "max_exp_avg_sqs"])
@pytest.mark.parametrize("what", ["array_like", "floats"])
def test_non_arrays_are_type_errors_naming_the_argument(arg, what):
    case, hyper, args = full_args()
    last = args[arg][-1]
    if what == "array_like":
        args[arg][-1] = ArrayLike(last)
        match = re.escape(f"{arg}[2] must be an array") + ".*ArrayLike"
    else:
        args[arg][-1] = [float(x) for x in last]
        match = re.escape(f"{arg}[2] must be an array") + ".*list"
    assert_refused(case, hyper, args, TypeError, match)
    # The whole argument as such an object.
    args[arg] = ArrayLike(np.stack([np.zeros(5)] * 3)) if what == "array_like" else [1.0, 2.0, 3.0]
    word = "ArrayLike" if what == "array_like" else "float"
    assert_refused(case, hyper, args, TypeError, rf"\b{arg}\b.*{word}")


def test_losses_refuse_non_arrays():
    logits, labels, _ = loss_inputs(np.float64)
    with pytest.raises(TypeError, match=r"\blogits\b.*ArrayLike"):
        fastopt.softmax_cross_entropy(ArrayLike(logits), labels)
    with pytest.raises(TypeError, match=r"\blabels\b.*list"):
        fastopt.softmax_cross_entropy(logits, labels.tolist())
    with pytest.raises(TypeError, match=r"\bx\b.*list"):
        fastopt.softmax(logits.tolist())
    with pytest.raises(TypeError, match=r"\bw\b.*ArrayLike"):
        fastopt.penalty(ArrayLike(logits), l1=1.0)


def half_arrays(kind: str, n: int):
    values = np.linspace(-1, 1, n)
    if kind == "numpy-float16":
        return values.astype(np.float16)
    if kind == "dlpack-float16":
        return DLPackArray(values.astype(np.float16))
    return to_torch(values).to(getattr(torch, kind.split("-")[1]))


HALF_KINDS = ["numpy-float16", "dlpack-float16",
              pytest.param("torch-float16", marks=needs_torch), pytest.param("torch-bfloat16", marks=needs_torch)]


# (sgd_, adagrad_, rmsprop_, adam_ and adamw_ update half params on the CPU: tests/kernels/test_half_params_cpu.py;
# the element-wise rules bfloat16 ones: tests/kernels/test_bf16_state_rules.py)
@pytest.mark.parametrize("kind", HALF_KINDS)
@pytest.mark.parametrize("name", ["nadam", "lion", "lamb"])
def test_half_params_are_refused_on_the_cpu_by_the_rules(name, kind):
    dtype = kind.split("-")[1]
    if dtype == "bfloat16" and name != "lamb":
        pytest.skip(f"{name}_ takes bfloat16 params on the CPU")
    case, hyper, args = full_args(name, np.float32)
    args["params"] = [half_arrays(kind, a.size) for a in args["params"]]
    args["grads"] = [half_arrays(kind, a.size) for a in args["grads"]]
    words = (r"lamb_\(\) takes float32 or float64 arrays only" if dtype == "bfloat16" else
             re.escape(f"params[0] has dtype {dtype}; float16 and bfloat16 are updated on CUDA devices only, "
                       "except by sgd_, adagrad_, rmsprop_, adam_ and adamw_, whose CPU kernels take them too, and "
                       "by the other element-wise optimizers"))
    assert_refused(case, hyper, args, TypeError, words)


@pytest.mark.parametrize("kind", HALF_KINDS)
def test_half_inputs_to_losses_are_refused(kind):
    x = half_arrays(kind, 12)
    x = x.reshape(3, 4) if not isinstance(x, DLPackArray) else DLPackArray(x.array.reshape(3, 4))
    with pytest.raises(TypeError, match=r"\blogits\b has dtype b?float16"):
        fastopt.softmax_cross_entropy(x, np.zeros(3, np.int64))
    with pytest.raises(TypeError, match=r"\bx\b has dtype b?float16"):
        fastopt.softmax(x)


@needs_torch
@pytest.mark.parametrize("layout", ["strided", "transposed", "expanded"])
@pytest.mark.parametrize("arg", ["params", "grads", "exp_avg_sqs"])
def test_non_contiguous_torch_tensor_is_refused(arg, layout):
    case, hyper, args = full_args(sizes=(5, 6, 12))
    args = convert(args, lambda name, i, a: to_torch(a))
    values = args[arg][-1]
    if layout == "strided":
        bad = torch.zeros(24, dtype=values.dtype)[::2]
        bad.copy_(values)
    elif layout == "transposed":
        for arrays in args.values():
            arrays[-1] = arrays[-1].reshape(4, 3)
        bad = values.reshape(3, 4).t()  # shape (4, 3) with strides (1, 4)
    else:
        bad = values[:1].expand(12)  # stride 0: one element seen twelve times
    assert not bad.is_contiguous()
    args[arg][-1] = bad
    assert_refused(case, hyper, args, ValueError, re.escape(f"{arg}[2] is not C-contiguous"))


@pytest.mark.parametrize("arg", ["params", "exp_avgs", "max_exp_avg_sqs"])
def test_read_only_dlpack_export_is_refused_as_a_written_array(arg):
    # NumPy exports a read-only array only as a versioned capsule with DLPack's READ_ONLY flag set.
    case, hyper, args = full_args()
    frozen = args[arg][-1].copy()
    frozen.flags.writeable = False
    args[arg][-1] = DLPackArray(frozen)
    assert_refused(case, hyper, args, ValueError, re.escape(f"{arg}[2] is read-only"))


def test_read_only_dlpack_grads_are_accepted():
    case, hyper, args = full_args()
    witness = copy_args(args)
    call_case(case, hyper, witness, step=2)
    for g in args["grads"]:
        g.flags.writeable = False
    args["grads"] = [DLPackArray(g) for g in args["grads"]]
    call_case(case, hyper, args, step=2)
    assert_same_bits(args, {n: a for n, a in witness.items() if n != "grads"})


def test_legacy_export_of_a_read_only_array_is_a_type_error():
    # Without a versioned capsule NumPy cannot flag read-only memory, so it refuses the export.
    case, hyper, args = full_args()
    frozen = args["grads"][-1].copy()
    frozen.flags.writeable = False
    args["grads"][-1] = LegacyDLPackArray(frozen)
    assert_refused(case, hyper, args, TypeError,
                   re.escape("grads[2] (LegacyDLPackArray) could not be shared through __dlpack__: BufferError"))


@needs_torch
@pytest.mark.parametrize("arg", ["params", "grads", "exp_avgs"])
def test_tensor_requiring_grad_is_refused_with_torchs_reason(arg):
    case, hyper, args = full_args()
    args = convert(args, lambda name, i, a: to_torch(a))
    args[arg][-1].requires_grad_(True)
    before = [(t, t.detach().numpy().copy()) for arrays in args.values() for t in arrays]
    # torch tensors are read through their own methods (array_intake.cpp, from_torch), which refuse a
    # tensor that requires grad as torch's __dlpack__ would, in fastopt's words.
    with pytest.raises(TypeError, match=re.escape(f"{arg}[2] requires grad; pass it detached")):
        call_case(case, hyper, args, step=2)
    for t, old in before:
        np.testing.assert_array_equal(t.detach().numpy(), old)


@needs_torch
def test_torch_view_of_a_numpy_argument_is_caught_sharing_memory():
    # torch.from_numpy shares the NumPy array's memory: the overlap check sees through frameworks.
    case, hyper, args = full_args()
    args["grads"][1] = torch.from_numpy(args["exp_avgs"][1])
    assert_refused(case, hyper, args, ValueError, r"(grads\[1\] shares memory with exp_avgs\[1\]|"
                                                  r"exp_avgs\[1\] shares memory with grads\[1\])")
    logits, labels, _ = loss_inputs(np.float64)
    out = torch.from_numpy(logits)[1:]  # rows 1.. of logits: a partial overlap
    before = logits.copy()
    with pytest.raises(ValueError, match="out partly overlaps logits"):
        fastopt.softmax_cross_entropy(logits[:-1], labels[:-1], out=out)
    np.testing.assert_array_equal(logits, before)


def test_array_on_another_device_is_a_value_error_naming_both():
    case, hyper, args = full_args()
    args["grads"][1] = ClaimsCuda()
    assert_refused(case, hyper, args, ValueError,
                   re.escape("grads[1] is on cuda:0 but params[0] is on cpu; all arrays of one call must be on one device"))


def test_device_lr_beside_cpu_arrays_is_a_value_error():
    case, hyper, args = full_args()
    before = snapshot(args)
    with pytest.raises(ValueError, match=re.escape("lr is on cuda:0 but params[0] is on cpu")):
        fastopt.adam_(*(args[n] for n in array_names(case, hyper)), lr=ClaimsCuda(()), amsgrad=True, step=2)
    assert_unchanged(before)


@pytest.mark.skipif(fastopt.cuda.is_compiled(), reason="a CUDA build takes CUDA arrays")
def test_cuda_array_in_a_build_without_cuda_is_refused_with_the_reason():
    with pytest.raises(ValueError, match=re.escape("params is on cuda:0, but this fastopt was built without CUDA")):
        fastopt.sgd_(ClaimsCuda(), ClaimsCuda(), lr=0.1)
    with pytest.raises(ValueError, match=re.escape("logits is on cuda:0, but this fastopt was built without CUDA")):
        fastopt.softmax_cross_entropy(ClaimsCuda((2, 3)), np.zeros(2, np.int64))


# ----------------------------------------------------------------------------------------- stream


class StreamLike:
    cuda_stream = 12345  # what a torch.cuda.Stream shows; never used for a CPU call


@pytest.mark.parametrize("stream", [None, 0, 7, StreamLike()], ids=["none", "zero", "int", "object"])
def test_stream_is_ignored_on_the_cpu(stream):
    # A valid stream= changes nothing on the CPU: the same bits as without it.
    case, hyper, args = full_args()
    witness = copy_args(args)
    call_case(case, hyper, witness, step=2)
    call_case(case, hyper, args, step=2, stream=stream)
    assert_same_bits(args, {n: a for n, a in witness.items() if n != "grads"})
    logits, labels, _ = loss_inputs(np.float64)
    want = fastopt.softmax_cross_entropy(logits, labels)
    got = fastopt.softmax_cross_entropy(logits, labels, stream=stream)
    assert got[0] == want[0]
    np.testing.assert_array_equal(got[1], want[1])
    np.testing.assert_array_equal(fastopt.softmax(logits, stream=stream), fastopt.softmax(logits))
    assert fastopt.penalty(logits, l1=1.0, stream=stream) == fastopt.penalty(logits, l1=1.0)


@pytest.mark.parametrize("stream", ["not a stream", 2.5, -1], ids=["str", "float", "negative"])
def test_garbage_stream_is_refused_on_the_cpu_too(stream):
    # A CPU call does not use the stream, but a bad one is refused before anything is written, so the
    # mistake shows up before the code first meets a GPU.
    case, hyper, args = full_args()
    witness = copy_args(args)
    with pytest.raises((TypeError, ValueError), match="stream"):
        call_case(case, hyper, args, step=2, stream=stream)
    assert_same_bits(args, witness)
    logits, labels, _ = loss_inputs(np.float64)
    with pytest.raises((TypeError, ValueError), match="stream"):
        fastopt.softmax_cross_entropy(logits, labels, stream=stream)


# ------------------------------------------------------------------------------------ fastopt.cuda


def test_build_info_cuda_is_consistent():
    info = fastopt.build_info()["cuda"]
    assert set(info) == {"compiled", "architectures", "option", "runtime_version", "driver_version",
                         "device_count"}
    assert info["compiled"] is fastopt.cuda.is_compiled()
    assert info["architectures"] == fastopt.cuda.architectures()
    assert info["device_count"] == fastopt.cuda.device_count()
    assert info["option"] in ("AUTO", "ON", "OFF")
    if info["compiled"]:
        assert info["option"] != "OFF"
        assert info["architectures"], "a CUDA build lists what it was compiled for"
        # "sm_XX" machine code, "compute_XX" PTX; CMake's special values are reported as given.
        assert all(re.fullmatch(r"(sm|compute)_\w+|all|all-major|native", arch) for arch in info["architectures"])
        assert info["runtime_version"] > 0
    else:
        assert info["option"] != "ON"  # ON fails the build when CUDA cannot be compiled
        assert info["architectures"] == [] and info["runtime_version"] == 0
        assert info["device_count"] == 0 and info["driver_version"] == 0
    if not (info["compiled"] and info["device_count"] > 0):
        assert fastopt.cuda.is_available() is False


@pytest.mark.skipif(fastopt.cuda.is_available(), reason="this machine has a usable GPU")
def test_fastopt_cuda_without_a_gpu():
    assert fastopt.cuda.is_available() is False
    assert fastopt.cuda.device_count() == 0
    assert fastopt.cuda.runs_kernels(0) is False and fastopt.cuda.runs_kernels(-1) is False
    assert isinstance(fastopt.cuda.architectures(), list)
    with pytest.raises(ValueError, match="no CUDA device is available"):
        fastopt.cuda.device_name()
    with pytest.raises(ValueError, match=re.escape("device must be in [0, 0)")):
        fastopt.cuda.device_name(1)


def test_device_name_of_a_missing_device_is_a_value_error():
    count = fastopt.cuda.device_count()
    for bad in (-1, count):
        with pytest.raises(ValueError, match=re.escape(f"device must be in [0, {count})")):
            fastopt.cuda.device_name(bad)
