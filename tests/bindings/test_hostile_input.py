"""Hostile input to the native entry points (issue 14): objects that lie through the array protocols,
arguments changed while a call reads them, and numbers that only look real.

The contract is the house's: a TypeError / ValueError / IndexError naming the argument (and the list index),
nothing written; never a crash, and a KeyboardInterrupt (any BaseException that is not an Exception) raised
by the caller's code comes out untouched. Anything that could crash the interpreter runs in a child process
with a timeout (run_child), so that a regression fails its test instead of ending the run.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import fastopt
from hostile_objects import DL_CPU, DL_CUDA, DeviceClaim, FakeDLPack, Interface, Raising
from test_bad_input import KA_IDS, KERNEL_ARGS, KERNELS, LAST, SHAPES, assert_rejected, make_args, named

try:
    import torch
except ImportError:  # pragma: no cover - torch is in the test extra
    torch = None

needs_torch = pytest.mark.skipif(torch is None, reason="needs torch")
HERE = os.path.dirname(os.path.abspath(__file__))


def run_child(code: str, timeout: float = 300) -> str:
    """Runs `code` in a fresh interpreter started in tests/ (so hostile_objects and test_bad_input import);
    it must print CHILD OK and exit with 0. A crash or a hang fails the calling test."""
    try:
        out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=HERE, capture_output=True,
                             text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the child process did not finish in {timeout} s")
    assert out.returncode == 0 and "CHILD OK" in out.stdout, (
        f"child exited with {out.returncode}\nstdout:\n{out.stdout[-4000:]}\nstderr:\n{out.stderr[-4000:]}")
    return out.stdout


# A child's loop over every (kernel, array argument) pair: the last item of the argument replaced by
# make(kernel, arg); the call must raise TypeError / ValueError naming the argument with nothing written.
CHILD_SWEEP = """
import re, numpy as np, fastopt
from hostile_objects import *
from test_bad_input import KERNEL_ARGS, LAST, SHAPES, make_args, named, snapshot, call

def sweep(make, what, errors=(TypeError, ValueError), index=LAST, into=None):
    failures = []
    for kernel, arg in KERNEL_ARGS:
        args = make_args(kernel)
        bad = make(kernel, arg, args)
        args[arg][index] = bad
        before = snapshot(args)
        try:
            call(kernel, args)
            failures.append(f"{kernel.name}-{arg}: {what} accepted")
            continue
        except errors as e:
            if not re.search(named(arg, index), str(e)):
                failures.append(f"{kernel.name}-{arg}: {what}: message does not name the argument: {e}")
        if snapshot(args) != before or (isinstance(bad, FakeDLPack) and bad.buffer.any()):
            failures.append(f"{kernel.name}-{arg}: {what}: an array was written")
    if into is not None:
        into.extend(failures)
    else:
        assert not failures, "\\n".join(failures)
"""


# ---------------------------------------------------------------------------- 2. labels changed after the check


def test_labels_changed_by_outs_dlpack_are_checked_after_it():
    """out's __dlpack__ is the caller's code, run while the arguments are taken: a label it breaks is
    found by the label check, which runs after every argument was taken."""
    run_child("""
        import numpy as np, fastopt
        logits = np.random.default_rng(0).standard_normal((4, 5))
        labels = np.array([0, 1, 2, 3], np.int64)
        out = np.zeros((4, 5))

        class BreaksALabel:
            def __dlpack_device__(self):
                return out.__dlpack_device__()
            def __dlpack__(self, **kwargs):
                labels[2] = 1 << 40
                return out.__dlpack__(**kwargs)

        for reduction in ("mean", "none"):
            labels[2] = 2
            try:
                fastopt.softmax_cross_entropy(logits, labels, out=BreaksALabel(), reduction=reduction,
                                              weight=np.ones(5))
            except IndexError as e:
                assert "labels[2]" in str(e), e
            else:
                raise AssertionError("a label broken by out.__dlpack__ was used")
            assert not out.any()
        print("CHILD OK")
    """)


def test_labels_changed_while_the_kernels_run_never_index_out_of_range():
    """Another thread rewrites labels to absurd values while the losses run with the GIL released: a
    label the kernel finds out of range is never used as an index (its row's loss is NaN)."""
    run_child("""
        import threading, numpy as np, fastopt
        rng = np.random.default_rng(0)
        n, c = 256, 1024
        logits = rng.standard_normal((n, c)).astype(np.float32)
        labels = rng.integers(0, c, n).astype(np.int64)
        weight = np.ones(c, np.float32)
        stop = threading.Event()

        def flip():
            while not stop.is_set():
                labels[::5] = 1 << 40
                labels[2::5] = -(1 << 40)
                labels[::5] = 1
                labels[2::5] = 3

        thread = threading.Thread(target=flip)
        thread.start()
        outcomes = {"refused": 0, "ran": 0}
        try:
            for i in range(80):
                for call in (
                    lambda: fastopt.softmax_cross_entropy(logits, labels, weight=weight),
                    lambda: fastopt.softmax_cross_entropy(logits, labels, label_smoothing=0.1, reduction="none"),
                    lambda: fastopt.softmax_cross_entropy(logits.copy(), labels, out=None, reduction="sum"),
                    lambda: fastopt.multiclass_svm_loss(logits, labels),
                    lambda: fastopt.multiclass_svm_loss(logits, labels, reduction="none"),
                ):
                    try:
                        call()
                        outcomes["ran"] += 1
                    except IndexError:
                        outcomes["refused"] += 1
        finally:
            stop.set()
            thread.join()
        print(outcomes)
        print("CHILD OK")
    """)


# ---------------------------------------------------------------------------- 3. a list changed while it is read


def test_a_list_cleared_by_its_own_item_is_read_from_a_snapshot():
    """An item whose protocol methods empty (or refill) the list being read: the call goes on with the
    items the list held when the call began, and never reads a freed one."""
    run_child("""
        import gc, numpy as np, fastopt

        class Meddler:
            def __init__(self, target, array, how):
                self.target, self.array, self.how = target, array, how
            def meddle(self):
                if self.how == "clear":
                    self.target.clear()
                else:
                    self.target[:] = [None] * 50
                gc.collect()
            def __dlpack_device__(self):
                self.meddle()
                return self.array.__dlpack_device__()
            def __dlpack__(self, **kwargs):
                self.meddle()
                return self.array.__dlpack__(**kwargs)

        for how in ("clear", "refill"):
            for which in ("params", "grads", "exp_avgs"):
                args = {name: [np.full(1000, 0.5) for _ in range(4)] for name in ("params", "grads", "exp_avgs", "exp_avg_sqs")}
                args[which].insert(1, Meddler(args[which], np.full(1000, 0.5), how))
                for name in args:
                    if name != which:
                        args[name].insert(1, np.full(1000, 0.5))
                lists = [args[n] for n in ("params", "grads", "exp_avgs", "exp_avg_sqs")]
                try:
                    fastopt.adam_(*lists, lr=0.1, step=1)
                except (TypeError, ValueError) as e:
                    assert which in str(e), e
            grads = [np.ones(10) for _ in range(3)]
            grads.insert(1, Meddler(grads, np.ones(10), how))
            assert fastopt._core._found_nonfinite(grads) is False
        print("CHILD OK")
    """)


# ---------------------------------------------------------------------------- 4. torch storage swapped during a call


@needs_torch
def test_a_storage_swapped_by_the_callers_code_stays_alive_for_the_call():
    """exp_avg_sqs' __dlpack__ (the caller's code, run after params was read) swaps the parameter's storage
    and frees the old one: the update lands in the memory the call took, which the call keeps alive."""
    run_child("""
        import gc, numpy as np, torch, fastopt
        n = 1 << 21
        p, g, m = torch.zeros(n), torch.ones(n), torch.zeros(n)
        v = np.zeros(n, np.float32)

        class Swapper:
            def __dlpack_device__(self):
                return v.__dlpack_device__()
            def __dlpack__(self, **kwargs):
                p.set_(torch.zeros(8))
                gc.collect()
                return v.__dlpack__(**kwargs)

        fastopt.adam_([p], [g], [m], [Swapper()], lr=0.1, step=1)
        assert p.shape == (8,) and not p.any()  # the new storage is not the one the call took
        assert (m == 0.1).all()
        print("CHILD OK")
    """)


@needs_torch
def test_a_storage_swapped_by_another_thread_during_the_kernel():
    run_child("""
        import threading, torch, fastopt
        n = 1 << 20
        p, g, m, v = torch.zeros(n), torch.ones(n), torch.zeros(n), torch.zeros(n)
        stop = threading.Event()

        def swap():
            while not stop.is_set():
                p.set_(torch.zeros(n))

        thread = threading.Thread(target=swap)
        thread.start()
        try:
            for step in range(1, 301):
                try:
                    fastopt.adam_(p, g, m, v, lr=1e-3, step=step)
                except ValueError as error:
                    # a swap caught between reading the tensor and checking it: refused by name, and fine
                    # (the point is no crash, no hang); anything else fails the child
                    assert "set_()" in str(error), error
        finally:
            stop.set()
            thread.join()
        print("CHILD OK")
    """)


# ---------------------------------------------------------------------------- 5 and 7. NULL data, absurd exports


def test_null_data_of_a_non_empty_export_is_refused():
    run_child(CHILD_SWEEP + """
sweep(lambda k, a, args: FakeDLPack(SHAPES[LAST], data=None), "NULL data")
# NULL data for an empty export is what producers give: accepted.
fastopt.adam_([FakeDLPack((0,), data=None)], [np.zeros(0)], [np.zeros(0)], [np.zeros(0)], lr=0.1, step=1)
print("CHILD OK")
""")


@needs_torch
def test_a_fake_tensor_is_refused():
    """A FakeTensor (torch.compile's tracing tensor) has no memory: data_ptr() is 0."""
    run_child(CHILD_SWEEP + """
import warnings, torch
from torch._subclasses.fake_tensor import FakeTensorMode
with FakeTensorMode():
    fake = torch.zeros(SHAPES[LAST], dtype=torch.float64)
warnings.simplefilter("ignore")  # torch warns that a FakeTensor's data_ptr() is meaningless
sweep(lambda k, a, args: fake, "a FakeTensor")
print("CHILD OK")
""")


ABSURD_EXPORTS = {
    "negative extent": dict(shape=(-1,)),
    "negative inner extent": dict(shape=(4, -3)),
    "ndim -1": dict(shape=(), ndim=-1),
    "ndim 2**20": dict(shape=(4, 3), ndim=1 << 20),
    "ndim 65": dict(shape=(1,) * 65),
    "NULL shape": dict(shape=(4, 3), null_shape=True),
    "bytes overflow": dict(shape=(1 << 61, 4)),
    "elements overflow": dict(shape=(1 << 31, 1 << 31, 1 << 31)),
    "byte_offset wraps": dict(shape=(4, 3), byte_offset=(1 << 64) - 8),
    "capsule on another device": dict(shape=(4, 3), device=(DL_CUDA, 0), claimed=(DL_CPU, 0)),
    "DLPack 2.0": dict(shape=(4, 3), version=(2, 0)),
    "device id -1": dict(shape=(4, 3), device=(DL_CUDA, -1)),
}


def test_absurd_dlpack_exports_are_refused():
    """Each description of ABSURD_EXPORTS is refused at intake, naming the argument, whichever argument
    holds it; and when every array of the call is one (so that the shapes agree, and a call that only
    reads one array) the first one taken is named. (One child for all: the failures are listed by name.)"""
    run_child(CHILD_SWEEP + """
from test_hostile_input import ABSURD_EXPORTS
failures = []
for what, spec in ABSURD_EXPORTS.items():
    sweep(lambda k, a, args: FakeDLPack(**spec), what, into=failures)
    fakes = [FakeDLPack(**spec) for _ in range(4)]
    attempts = [(lambda: fastopt.adam_([fakes[0]], [fakes[1]], [fakes[2]], [fakes[3]], lr=0.1, step=1), r"params\\[0\\]"),
             # calls that read one array: nothing to compare its shape with
             (lambda: fastopt.penalty(fakes[0], l1=0.1), r"\\bw\\b"),
             (lambda: fastopt._core._found_nonfinite([fakes[0]]), r"grads\\[0\\]")]
    for attempt, name in attempts:
        try:
            attempt()
            failures.append(f"{what}: accepted by {name}")
        except (TypeError, ValueError) as e:
            if not re.search(name, str(e)):
                failures.append(f"{what}: the message does not name {name}: {e}")
    if any(f.buffer.any() for f in fakes):
        failures.append(f"{what}: written")
assert not failures, "\\n".join(failures)
print("CHILD OK")
""")


# ---------------------------------------------------------------------------- 8. torch's negative and conjugate bits


def neg_view(t):
    """`t`'s memory read as -t: a tensor with the negative bit (as x.conj().imag of a complex x)."""
    return torch._neg_view(t)


@needs_torch
@pytest.mark.parametrize("kernel,arg", KERNEL_ARGS, ids=KA_IDS)
def test_negative_bit_is_refused(kernel, arg):
    args = make_args(kernel)
    args = {name: [torch.from_numpy(a) for a in arrays] for name, arrays in args.items()}
    args[arg][LAST] = neg_view(args[arg][LAST].clone())
    assert args[arg][LAST].is_neg()
    before = {name: [a.clone() for a in arrays] for name, arrays in args.items()}
    with pytest.raises(TypeError, match=named(arg) + ".*negative bit"):
        kernel.fn(*(args[a] for a in kernel.arrays), **kernel.kwargs)
    for name, arrays in args.items():
        for a, b in zip(arrays, before[name]):
            assert torch.equal(a.resolve_neg(), b.resolve_neg())


@needs_torch
def test_the_issues_negative_bit_example_and_a_conjugate_bit():
    imag = torch.tensor([1 + 2j]).conj().imag  # -2, stored as 2
    assert imag.is_neg()
    with pytest.raises(TypeError, match=r"params\[0\].*negative bit"):
        fastopt.sgd_([imag], [torch.ones(1)], lr=0.1)
    with pytest.raises(TypeError, match=r"grads\[0\].*negative bit"):
        fastopt.sgd_([torch.ones(1)], [imag], lr=0.1)
    with pytest.raises(TypeError, match=r"logits"):
        fastopt.softmax_cross_entropy(neg_view(torch.ones(2, 3)), torch.zeros(2, dtype=torch.int64))
    conj = torch.tensor([1 + 2j]).conj()
    assert conj.is_conj()
    with pytest.raises(TypeError, match=r"params\[0\]"):
        fastopt.sgd_([conj], [conj.clone()], lr=0.1)


@needs_torch
@pytest.mark.parametrize("where", ["param", "grad"])
def test_twin_finds_a_negative_bit_before_group_0_is_updated(where):
    import fastopt.torch as fot

    p0 = torch.nn.Parameter(torch.ones(3))
    p1 = torch.nn.Parameter(torch.ones(1)) if where == "grad" else \
        torch.nn.Parameter(torch.tensor([1 + 2j]).conj().imag)
    p0.grad = torch.ones(3)
    p1.grad = torch.tensor([1 + 2j]).conj().imag if where == "grad" else torch.ones(1)
    opt = fot.Adam([{"params": [p0]}, {"params": [p1]}], lr=0.1)
    with pytest.raises(TypeError, match=r"params\[1\]" + (r"\.grad" if where == "grad" else "") + ".*negative bit"):
        opt.step()
    assert torch.equal(p0.detach(), torch.ones(3))
    assert not opt.state


# ---------------------------------------------------------------------------- 12. NumPy masked arrays


@pytest.mark.parametrize("kernel,arg", KERNEL_ARGS, ids=KA_IDS)
def test_masked_arrays_are_refused(kernel, arg):
    args = make_args(kernel)
    a = args[arg][LAST]
    args[arg][LAST] = np.ma.masked_array(a, mask=np.arange(a.size).reshape(a.shape) % 2 == 0)
    assert_rejected(kernel, args, TypeError, named(arg) + ".*masked")


def test_masked_arrays_are_refused_by_the_losses_and_without_a_mask():
    logits = np.ma.masked_array(np.zeros((2, 3)))  # no entry masked (nomask): refused all the same
    with pytest.raises(TypeError, match=r"logits.*masked"):
        fastopt.softmax_cross_entropy(logits, np.zeros(2, np.int64))
    with pytest.raises(TypeError, match=r"labels.*masked"):
        fastopt.softmax_cross_entropy(np.zeros((2, 3)), np.ma.masked_array(np.zeros(2, np.int64), mask=[1, 0]))
    with pytest.raises(TypeError, match=r"\bw\b.*masked"):
        fastopt.penalty(np.ma.masked_array(np.ones(3)), l1=1.0)
    # Other ndarray subclasses are still taken (the same memory).
    class Subclass(np.ndarray):
        pass

    m = np.zeros((2, 2)).view(Subclass)
    fastopt.sgd_(m, np.ones((2, 2)).view(Subclass), lr=0.5)
    assert (np.asarray(m) == -0.5).all()


# ---------------------------------------------------------------------------- 14. BaseExceptions go through


class Interrupt(BaseException):
    """Neither an Exception nor a KeyboardInterrupt: any such exception must go through untouched."""


PROTOCOLS = ["__dlpack__", "__dlpack_device__", "__cuda_array_interface__", "attribute"]


@pytest.mark.parametrize("error", [KeyboardInterrupt, SystemExit, Interrupt])
@pytest.mark.parametrize("where", PROTOCOLS)
def test_base_exceptions_in_array_protocols_propagate(where, error):
    kernel = KERNELS[3]  # adam
    for arg in ("params", "grads", "max_exp_avg_sqs"):
        args = make_args(kernel)
        args[arg][LAST] = Raising(error(), where)
        assert_rejected(kernel, args, error, None)
        args[arg] = Raising(error(), where)  # the whole argument
        with pytest.raises(error):
            kernel.fn(*(args[a] for a in kernel.arrays), **kernel.kwargs)
    with pytest.raises(error):
        fastopt.softmax_cross_entropy(np.zeros((2, 3)), Raising(error(), where))
    with pytest.raises(error):
        fastopt.softmax_cross_entropy(np.zeros((2, 3)), np.zeros(2, np.int64), out=Raising(error(), where))


@pytest.mark.parametrize("where", PROTOCOLS)
def test_exceptions_in_array_protocols_are_type_errors_naming_the_argument(where):
    kernel = KERNELS[3]
    args = make_args(kernel)
    args["exp_avgs"][LAST] = Raising(ZeroDivisionError("boom"), where)
    assert_rejected(kernel, args, TypeError, named("exp_avgs") + ".*boom")


@pytest.mark.parametrize("error", [KeyboardInterrupt, Interrupt])
def test_base_exceptions_in_number_conversions_propagate(error):
    kernel = KERNELS[3]
    args = make_args(kernel)
    for name, where in [("lr", "__float__"), ("beta1", "__float__"), ("step", "__index__"),
                        ("grad_scale", "__float__"), ("stream", "cuda_stream")]:
        assert_rejected(kernel, args, error, None, **{name: Raising(error(), where)})
    logits, labels = np.zeros((2, 3)), np.zeros(2, np.int64)
    for name, where in [("label_smoothing", "__float__"), ("z_loss", "__float__"), ("ignore_index", "__index__"),
                        ("stream", "cuda_stream")]:
        with pytest.raises(error):
            fastopt.softmax_cross_entropy(logits, labels, **{name: Raising(error(), where)})
    for name in ("l1", "l2"):
        with pytest.raises(error):
            fastopt.penalty(np.ones(3), **{name: Raising(error(), "__float__")})
    with pytest.raises(error):
        fastopt.multiclass_svm_loss(logits, labels, margin=Raising(error(), "__float__"))
    with pytest.raises(error):
        fastopt._core._found_nonfinite([np.ones(2)], grad_scale=Raising(error(), "__float__"))


# ---------------------------------------------------------------------------- 15. garbage protocol objects

GOOD_CAI = {"shape": (4, 3), "typestr": "<f8", "data": (4096, False), "version": 3}
GARBAGE_INTERFACES = [
    [1, 2],
    {},
    {k: v for k, v in GOOD_CAI.items() if k != "data"},
    {**GOOD_CAI, "data": (None, False)},
    {**GOOD_CAI, "data": "0x1000"},
    {**GOOD_CAI, "data": (4096,)},
    {**GOOD_CAI, "data": (1 << 70, False)},
    {**GOOD_CAI, "data": (-4096, False)},
    {**GOOD_CAI, "data": (4096, "no")},
    {k: v for k, v in GOOD_CAI.items() if k != "shape"},
    {**GOOD_CAI, "shape": "4,3"},
    {**GOOD_CAI, "shape": (4, "3")},
    {**GOOD_CAI, "shape": (4, -3)},
    {**GOOD_CAI, "shape": (1 << 62, 1 << 62)},
    {**GOOD_CAI, "shape": (1,) * 65},
    {**GOOD_CAI, "typestr": 8},
    {k: v for k, v in GOOD_CAI.items() if k != "typestr"},
    {**GOOD_CAI, "strides": (8,)},
    {**GOOD_CAI, "strides": "8,8"},
    {**GOOD_CAI, "strides": (24, None)},
    {**GOOD_CAI, "stream": "default"},
    {**GOOD_CAI, "stream": 1 << 70},
    {**GOOD_CAI, "mask": np.zeros((4, 3), bool)},
    ValueError("the interface cannot be computed"),
]
GARBAGE_DEVICES = [(1,), ("cpu", 0), None, 5, "cpu", (1, 2 ** 70), (2 ** 40, 0), (1, "0"), (1.0, 0),
                   [1, 0], (2, -1), (1, 0, 0), (13, -7), (7, 0), RuntimeError("no device")]


@pytest.mark.parametrize("interface", GARBAGE_INTERFACES, ids=[str(i)[:40] for i in GARBAGE_INTERFACES])
def test_garbage_cuda_array_interfaces_are_refused_naming_the_argument(interface):
    """(No CUDA device reads these: a build without CUDA or a machine without a GPU refuses any interface
    by name, and on a GPU the intake refuses a pointer CUDA does not know.)"""
    for kernel, arg in KERNEL_ARGS:
        args = make_args(kernel)
        args[arg][LAST] = Interface(interface)
        assert_rejected(kernel, args, (TypeError, ValueError), named(arg))
    with pytest.raises((TypeError, ValueError), match=r"\blogits\b"):
        fastopt.softmax_cross_entropy(Interface(interface), np.zeros(4, np.int64))
    with pytest.raises((TypeError, ValueError), match=r"\bw\b"):
        fastopt.penalty(Interface(interface), l1=0.1)


@pytest.mark.parametrize("device", GARBAGE_DEVICES, ids=[str(d) for d in GARBAGE_DEVICES])
def test_garbage_dlpack_devices_are_refused_naming_the_argument(device):
    for kernel, arg in KERNEL_ARGS:
        args = make_args(kernel)
        args[arg][LAST] = DeviceClaim(device, args[arg][LAST].copy())
        assert_rejected(kernel, args, (TypeError, ValueError), named(arg))
    with pytest.raises((TypeError, ValueError), match=r"\blr\b"):
        fastopt.sgd_(np.zeros(3), np.ones(3), lr=DeviceClaim(device))
    with pytest.raises((TypeError, ValueError), match=r"\bstep\b"):
        fastopt.adam_(np.zeros(3), np.ones(3), np.zeros(3), np.zeros(3), step=DeviceClaim(device))


def test_dlpack_that_returns_no_capsule_is_refused():
    class NotACapsule(DeviceClaim):
        def __dlpack__(self, **kwargs):
            return b"dltensor"

    kernel = KERNELS[0]
    args = make_args(kernel)
    args["grads"][LAST] = NotACapsule((DL_CPU, 0))
    assert_rejected(kernel, args, TypeError, named("grads") + ".*capsule")


@pytest.mark.skipif(fastopt.cuda.device_count() > 0, reason="the machine has a CUDA device")
def test_cuda_arrays_without_a_cuda_device_are_value_errors_naming_the_argument():
    """In a build without CUDA, or with CUDA on a machine without a GPU (where a CUDA call would fail
    in cudaGetDevice), a CUDA array is refused by name before anything runs."""
    claims_cuda = DeviceClaim((DL_CUDA, 0))
    for kernel, arg in KERNEL_ARGS:
        args = make_args(kernel)
        args[arg][LAST] = claims_cuda
        assert_rejected(kernel, args, ValueError, named(arg) + ".*cuda:0")
        args = make_args(kernel)
        args[arg][LAST] = Interface({**GOOD_CAI, "stream": 1})
        assert_rejected(kernel, args, ValueError, named(arg))
    with pytest.raises(ValueError, match=r"\blr\b.*cuda:0"):
        fastopt.sgd_(np.zeros(3), np.ones(3), lr=claims_cuda)
    with pytest.raises(ValueError, match=r"\blogits\b.*cuda:0"):
        fastopt.softmax_cross_entropy(claims_cuda, np.zeros(3, np.int64))


# ---------------------------------------------------------------------------- 16. tensors without ordinary storage


@needs_torch
def test_nested_tensors_are_refused_naming_the_argument():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        strided = torch.nested.nested_tensor([torch.zeros(2, dtype=torch.float64), torch.zeros(3, dtype=torch.float64)])
        jagged = torch.nested.nested_tensor([torch.zeros(2, dtype=torch.float64), torch.zeros(3, dtype=torch.float64)],
                                            layout=torch.jagged)
    for nested in (strided, jagged):
        for kernel, arg in KERNEL_ARGS:
            args = make_args(kernel)
            args[arg][LAST] = nested
            assert_rejected(kernel, args, TypeError, named(arg))
        with pytest.raises(TypeError, match=r"\blogits\b"):
            fastopt.softmax_cross_entropy(nested, torch.zeros(2, dtype=torch.int64))


@needs_torch
def test_tensors_inside_torch_func_transforms_are_refused_naming_the_argument():
    seen = []

    def update(p, g):
        with pytest.raises(TypeError, match=r"params\b.*(vmap|storage)") as info:
            fastopt.sgd_(p, g, lr=0.1)
        seen.append(str(info.value))
        return p * 1

    torch.func.vmap(update)(torch.zeros(3, 4), torch.ones(3, 4))

    def loss(x):
        with pytest.raises(TypeError, match=r"\bw\b"):
            fastopt.penalty(x, l1=1.0)
        seen.append("grad")
        return (x * x).sum()

    torch.func.grad(loss)(torch.ones(3))
    assert len(seen) == 2


# ---------------------------------------------------------------------------- 17. scalars


@pytest.mark.parametrize("value", [2 ** 70, -(2 ** 70), 2 ** 64])
def test_stream_out_of_range_is_an_error_naming_stream(value):
    class Stream:
        cuda_stream = value

    for stream in (value, Stream()):
        with pytest.raises((ValueError, OverflowError), match=r"\bstream\b"):
            fastopt.sgd_(np.zeros(3), np.ones(3), lr=0.1, stream=stream)
        with pytest.raises((ValueError, OverflowError), match=r"\bstream\b"):
            fastopt.softmax(np.zeros((2, 3)), stream=stream)


COMPLEX = [np.complex128(1e-3 + 1j), np.complex64(0.5), np.clongdouble(0.25 + 0j), complex(0.5, 0)]


@pytest.mark.parametrize("value", COMPLEX, ids=[type(v).__name__ for v in COMPLEX])
@pytest.mark.parametrize("kernel", KERNELS, ids=[k.name for k in KERNELS])
def test_complex_numbers_are_refused_for_every_float_hyperparameter(kernel, value):
    args = make_args(kernel)
    for name in kernel.floats + ("grad_scale",):
        assert_rejected(kernel, args, TypeError, rf"\b{name}\b.*real", **{name: value})


@pytest.mark.parametrize("value", COMPLEX, ids=[type(v).__name__ for v in COMPLEX])
def test_complex_numbers_are_refused_by_the_losses(value):
    logits, labels = np.zeros((2, 3)), np.zeros(2, np.int64)
    for name in ("label_smoothing", "z_loss"):
        with pytest.raises(TypeError, match=rf"\b{name}\b.*real"):
            fastopt.softmax_cross_entropy(logits, labels, **{name: value})
    with pytest.raises(TypeError, match=r"\bmargin\b.*real"):
        fastopt.multiclass_svm_loss(logits, labels, margin=value)
    for name in ("l1", "l2"):
        with pytest.raises(TypeError, match=rf"\b{name}\b.*real"):
            fastopt.penalty(np.ones(3), **{name: value})
    with pytest.raises(TypeError, match=r"\bgrad_scale\b.*real"):
        fastopt._core._found_nonfinite([np.ones(2)], grad_scale=value)


def test_loss_integers_out_of_range_name_the_argument():
    with pytest.raises((ValueError, OverflowError), match=r"\bignore_index\b"):
        fastopt.softmax_cross_entropy(np.zeros((2, 3)), np.zeros(2, np.int64), ignore_index=2 ** 70)
    with pytest.raises(TypeError, match=r"\bignore_index\b"):
        fastopt.softmax_cross_entropy(np.zeros((2, 3)), np.zeros(2, np.int64), ignore_index=1.5)
    # NumPy scalars of a real kind are still numbers.
    loss, _ = fastopt.softmax_cross_entropy(np.zeros((2, 3)), np.zeros(2, np.int64), ignore_index=np.int32(-1),
                                            label_smoothing=np.float32(0.0), z_loss=np.float16(0))
    assert np.isclose(loss, np.log(3))
