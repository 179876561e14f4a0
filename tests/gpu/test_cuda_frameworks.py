"""CUDA arrays of other frameworks than torch, and what fastopt.cuda reports on a GPU machine.

- CuPy arrays (through __dlpack__), and objects exposing only a CuPy array's
  __cuda_array_interface__, through every optimizer: the CPU's bits; a read-only interface is refused
  as a written array; cupy streams (the current one, or stream=) order the work; a cupy lr is a device
  scalar; the losses return CuPy arrays, and fastopt's own DeviceBuffer for interface-only input.
- JAX arrays are immutable: accepted as grads (and as loss inputs, whose outputs are DeviceBuffers, which
  JAX takes back through DLPack), refused as params.
- DeviceBuffer's DLPack export orders the consumer's stream after the writer's; an interface's "stream"
  is waited for by a call on another stream.
- fastopt.cuda on a GPU: available, the devices and names torch sees, an architecture this GPU runs.

Each framework's tests skip when it (or its GPU support) is missing; all skip without a GPU and a CUDA
build of fastopt (cuda_support.py).
"""

from __future__ import annotations

import os
import re

import numpy as np
import pytest

import fastopt
from cuda_support import CUDA_MARKS, args_to_cuda, assert_bits_equal, gpu_sleep, torch_with_cuda
from interop_cases import CUDA_FULL as FULL, CUDA_FULL_IDS as FULL_IDS, array_names, call_case, convert, copy_args, hyper_of, make_numpy_args
from interop_cases import new_grads
from kernel_cases import CASES_BY_NAME

pytestmark = CUDA_MARKS

SIZES = [0, 1, 3, 1023, 65537, 4]
STEPS = 3


@pytest.fixture(scope="module")
def cupy():
    cp = pytest.importorskip("cupy")
    try:
        if cp.cuda.runtime.getDeviceCount() < 1:
            pytest.skip("cupy sees no GPU")
    except cp.cuda.runtime.CUDARuntimeError:
        pytest.skip("cupy cannot use the GPU")
    return cp


@pytest.fixture(scope="module")
def jax_gpu():
    # JAX takes most of the GPU's memory at its first use unless told not to.
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    jax = pytest.importorskip("jax")
    try:
        gpus = jax.devices("gpu")
    except RuntimeError:
        pytest.skip("jax has no GPU backend")
    return jax, gpus[0]


@pytest.fixture(scope="module")
def torch():
    return torch_with_cuda()


class InterfaceOnly:
    """A producer with nothing but __cuda_array_interface__ (as Numba's device arrays): forwards a CuPy
    array's, optionally marked read-only."""

    def __init__(self, array, read_only=False):
        self.array = array
        self.read_only = read_only

    @property
    def __cuda_array_interface__(self):
        interface = dict(self.array.__cuda_array_interface__)
        if self.read_only:
            interface["data"] = (interface["data"][0], True)
        return interface


def cupy_array(cp, a: np.ndarray, offset: int = 0):
    """A CuPy copy of a; offset=1: a view one element into a larger buffer (as cuda_support.to_cuda)."""
    buf = cp.empty(a.size + offset, dtype=a.dtype)
    view = buf[offset:].reshape(a.shape)
    view[...] = cp.asarray(a)
    return view


def cupy_numpy(cp, x) -> np.ndarray:
    return cp.asnumpy(x.array if isinstance(x, InterfaceOnly) else x)


def spin(cp):
    """Keeps cupy's current stream busy for a while (see cuda_support.gpu_sleep); no timing is
    asserted. Compiled with NVRTC; skipped quietly where that is not available."""
    try:
        kernel = cp.RawKernel(r'''
extern "C" __global__ void fastopt_test_spin(long long cycles) {
  const long long start = clock64();
  while (clock64() - start < cycles) {}
}''', "fastopt_test_spin")
        kernel((1,), (1,), (np.int64(50_000_000),))
    except Exception:  # noqa: BLE001 - no compiler: the test still compares real results
        pass


# ------------------------------------------------------------------------------------------ CuPy


@pytest.mark.parametrize("producer", ["cupy", "interface_only"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("case,config", FULL, ids=FULL_IDS)
def test_cupy_arrays_get_the_cpu_bits(cupy, case, config, dtype, producer):
    hyper = hyper_of(case, config, seed=1500)
    names = array_names(case, hyper)
    base = make_numpy_args(case, hyper, SIZES, dtype, seed=1501)
    wrap = InterfaceOnly if producer == "interface_only" else (lambda x: x)
    cpu = copy_args(base)
    gpu = convert(base, lambda name, i, a: wrap(cupy_array(cupy, a, (i + names.index(name)) % 2)))
    for t in range(1, STEPS + 1):
        grads = new_grads(SIZES, dtype, seed=1510 + t)
        cpu["grads"] = grads
        gpu["grads"] = [wrap(cupy_array(cupy, g, i % 2)) for i, g in enumerate(grads)]
        call_case(case, hyper, cpu, step=t)
        assert call_case(case, hyper, gpu, step=t) is False
    cupy.cuda.Device().synchronize()
    for name in names[2:] + ["params"]:
        for i, (got, want) in enumerate(zip(gpu[name], cpu[name])):
            np.testing.assert_array_equal(cupy_numpy(cupy, got), want, err_msg=f"{name}[{i}]")
    assert any(np.any(cupy_numpy(cupy, p) != p0) for p, p0 in zip(gpu["params"], base["params"]))


def test_read_only_cuda_array_interface_is_refused_as_a_written_array(cupy):
    p = [cupy_array(cupy, np.ones(5, np.float32)) for _ in range(2)]
    g = [cupy_array(cupy, np.full(5, 0.5, np.float32)) for _ in range(2)]
    with pytest.raises(ValueError, match=re.escape("params[1] is read-only")):
        fastopt.sgd_([p[0], InterfaceOnly(p[1], read_only=True)], g, lr=0.5)
    cupy.cuda.Device().synchronize()
    assert all(np.array_equal(cupy.asnumpy(x), np.ones(5, np.float32)) for x in p)
    # As grads, read-only memory is fine.
    fastopt.sgd_(p, [InterfaceOnly(x, read_only=True) for x in g], lr=0.5)
    assert all(np.array_equal(cupy.asnumpy(x), np.full(5, 0.75, np.float32)) for x in p)


@pytest.mark.parametrize("how", ["current_stream", "stream_object", "int_handle"])
def test_cupy_streams_order_the_work(cupy, how):
    case = CASES_BY_NAME["adamw"]
    hyper = hyper_of(case, "amsgrad", seed=1600)
    sizes = [1 << 16, 3]
    base = make_numpy_args(case, hyper, sizes, np.float32, seed=1601)
    base["grads"] = new_grads(sizes, np.float32, seed=1602)
    cpu = copy_args(base)
    call_case(case, hyper, cpu, step=1)
    made = convert(base, lambda name, i, a: cupy_array(cupy, a))
    cupy.cuda.Device().synchronize()
    stream = cupy.cuda.Stream(non_blocking=True)
    with stream:
        spin(cupy)
        args = {name: [a.copy() for a in arrays] for name, arrays in made.items()}
        if how == "current_stream":
            call_case(case, hyper, args, step=1)
    if how == "stream_object":
        call_case(case, hyper, args, step=1, stream=stream)
    elif how == "int_handle":
        call_case(case, hyper, args, step=1, stream=stream.ptr)
    with stream:
        results = {name: [a.copy() for a in arrays] for name, arrays in args.items()}
    stream.synchronize()
    for name in array_names(case, hyper)[2:] + ["params"]:
        for i, (got, want) in enumerate(zip(results[name], cpu[name])):
            np.testing.assert_array_equal(cupy.asnumpy(got), want, err_msg=f"{name}[{i}]")


class WrittenOn:
    """__cuda_array_interface__ as read once while the array's writer stream was current (CuPy reports
    the current stream as the interface's "stream")."""

    def __init__(self, array):
        self.__cuda_array_interface__ = dict(array.__cuda_array_interface__)


def test_the_interfaces_stream_is_waited_for(cupy):
    """Gradients still being written on a busy stream, named in their interface, and an update queued on
    another stream: the update waits for the writer (CUDA array interface v3), without a host wait."""
    rng = np.random.default_rng(1650)
    p, g = rng.standard_normal(1 << 16).astype(np.float32), rng.standard_normal(1 << 16).astype(np.float32)
    want = p.copy()
    fastopt.sgd_(want, g, lr=0.25)
    got, grad = cupy_array(cupy, p), cupy.zeros(g.shape, np.float32)
    cupy.cuda.Device().synchronize()
    writer, reader = cupy.cuda.Stream(non_blocking=True), cupy.cuda.Stream(non_blocking=True)
    with writer:
        spin(cupy)
        grad[...] = cupy.asarray(g)
        interface = WrittenOn(grad)
    assert interface.__cuda_array_interface__["stream"] == writer.ptr
    fastopt.sgd_(got, interface, lr=0.25, stream=reader)
    reader.synchronize()
    np.testing.assert_array_equal(cupy.asnumpy(got), want)


def test_cupy_lr_is_a_device_scalar(cupy):
    rng = np.random.default_rng(1700)
    p, g = rng.standard_normal(1000).astype(np.float32), rng.standard_normal(1000).astype(np.float32)
    want = p.copy()
    fastopt.sgd_(want, g, lr=0.375)
    got = cupy_array(cupy, p)
    fastopt.sgd_(got, cupy_array(cupy, g), lr=cupy.asarray(0.375, dtype=cupy.float32))
    np.testing.assert_array_equal(cupy.asnumpy(got), want)


@pytest.mark.parametrize("producer", ["cupy", "interface_only"])
def test_cupy_losses_return_device_arrays(cupy, producer):
    rng = np.random.default_rng(1800)
    logits = (3 * rng.standard_normal((50, 17))).astype(np.float32)
    labels = rng.integers(0, 17, 50)
    want_loss, want_grad = fastopt.softmax_cross_entropy(logits, labels, label_smoothing=0.1)
    wrap = InterfaceOnly if producer == "interface_only" else (lambda x: x)
    x = wrap(cupy_array(cupy, logits))
    loss, grad = fastopt.softmax_cross_entropy(x, wrap(cupy_array(cupy, labels)), label_smoothing=0.1)
    probabilities = fastopt.softmax(x)
    if producer == "cupy":
        assert isinstance(loss, cupy.ndarray) and loss.shape == () and loss.dtype == np.float32
        assert isinstance(grad, cupy.ndarray) and isinstance(probabilities, cupy.ndarray)
    else:
        # No framework to make outputs with: fastopt's own device memory, readable by any consumer.
        for out in (loss, grad, probabilities):
            assert type(out).__name__ == "DeviceBuffer" and hasattr(out, "__cuda_array_interface__")
    loss, grad, probabilities = (cupy.asarray(o) for o in (loss, grad, probabilities))
    cupy.cuda.Device().synchronize()
    np.testing.assert_allclose(float(loss), want_loss, rtol=1e-5)
    np.testing.assert_allclose(cupy.asnumpy(grad), want_grad, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(cupy.asnumpy(probabilities), fastopt.softmax(logits), rtol=1e-5, atol=1e-7)


# ------------------------------------------------------------------------------------------- JAX


def test_jax_grads_are_read_and_jax_params_refused(jax_gpu, torch):
    jax, gpu = jax_gpu
    case = CASES_BY_NAME["adam"]
    hyper = hyper_of(case, "amsgrad", seed=1900)
    sizes = [1, 3, 1023, 4099]
    base = make_numpy_args(case, hyper, sizes, np.float32, seed=1901)  # float32: JAX's default
    cpu = copy_args(base)
    call_case(case, hyper, cpu, step=1)
    args = args_to_cuda(torch, base)
    args["grads"] = [jax.device_put(g, gpu) for g in base["grads"]]
    assert call_case(case, hyper, args, step=1) is False
    torch.cuda.synchronize()
    assert_bits_equal(torch, args, cpu, array_names(case, hyper)[2:] + ["params"])

    before = {name: [t.clone() for t in args[name]] for name in array_names(case, hyper)[2:]}
    jax_params = [jax.device_put(p, gpu) for p in base["params"]]
    with pytest.raises(ValueError, match=re.escape("params[0] is read-only")):
        call_case(case, hyper, {**args, "params": jax_params}, step=2)
    torch.cuda.synchronize()
    assert_bits_equal(torch, args, before, list(before))
    np.testing.assert_array_equal(np.asarray(jax_params[3]), base["params"][3])


def test_jax_loss_inputs_give_device_buffers(jax_gpu, torch):
    jax, gpu = jax_gpu
    rng = np.random.default_rng(2000)
    logits = (3 * rng.standard_normal((40, 9))).astype(np.float32)
    labels = rng.integers(0, 9, 40).astype(np.int32)
    want_loss, want_grad = fastopt.softmax_cross_entropy(logits, labels)
    loss, grad = fastopt.softmax_cross_entropy(jax.device_put(logits, gpu), jax.device_put(labels, gpu))
    assert type(grad).__name__ == "DeviceBuffer"
    loss_t, grad_t = torch.as_tensor(loss, device="cuda"), torch.as_tensor(grad, device="cuda")
    assert loss_t.shape == () and grad_t.shape == (40, 9)
    np.testing.assert_allclose(loss_t.item(), want_loss, rtol=1e-5)
    np.testing.assert_allclose(grad_t.cpu().numpy(), want_grad, rtol=1e-5, atol=1e-7)
    # Back into JAX without a copy, through DeviceBuffer.__dlpack__.
    loss_j, grad_j = jax.dlpack.from_dlpack(loss), jax.dlpack.from_dlpack(grad)
    assert loss_j.shape == () and grad_j.shape == (40, 9) and grad_j.dtype == np.float32
    np.testing.assert_allclose(float(loss_j), want_loss, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(grad_j), want_grad, rtol=1e-5, atol=1e-7)


def test_device_buffers_export_through_dlpack_in_stream_order(torch):
    """A DeviceBuffer written on a busy side stream, taken by torch.from_dlpack on another stream: the
    consumer's stream is made to wait for the writer's (the DLPack stream protocol), with no host wait."""
    rng = np.random.default_rng(2100)
    logits = (3 * rng.standard_normal((64, 1000))).astype(np.float32)
    want = fastopt.softmax(logits)
    x = torch.as_tensor(logits, device="cuda")
    torch.cuda.synchronize()
    writer, reader = torch.cuda.Stream(), torch.cuda.Stream()
    with torch.cuda.stream(writer):
        gpu_sleep(torch)  # the softmax queued behind this is still pending when the reader takes it
        out = fastopt.softmax(InterfaceOnly(x), stream=writer)
    assert type(out).__name__ == "DeviceBuffer"
    with torch.cuda.stream(reader):
        taken = torch.from_dlpack(out)
        copy = taken.clone()
    torch.cuda.synchronize()
    assert taken.data_ptr() == out.__cuda_array_interface__["data"][0]
    np.testing.assert_allclose(copy.cpu().numpy(), want, rtol=1e-5, atol=1e-7)

    with pytest.raises(BufferError, match="without a copy"):
        out.__dlpack__(copy=True)
    with pytest.raises(BufferError, match="cannot be exported to device"):
        out.__dlpack__(dl_device=(1, 0))
    with pytest.raises(ValueError, match="stream must be"):
        out.__dlpack__(stream=0)
    assert out.__dlpack_device__() == (2, x.device.index or 0)


# ---------------------------------------------------------------------------------- the runtime


def test_fastopt_cuda_on_a_gpu(torch):
    assert fastopt.cuda.is_available() and fastopt.cuda.is_compiled()
    count = fastopt.cuda.device_count()
    assert count == torch.cuda.device_count() >= 1
    for device in range(count):
        assert fastopt.cuda.device_name(device) == torch.cuda.get_device_name(device)
    assert fastopt.cuda.runs_kernels(0) and not fastopt.cuda.runs_kernels(count)
    with pytest.raises(ValueError, match=re.escape(f"device must be in [0, {count})")):
        fastopt.cuda.device_name(count)
    info = fastopt.build_info()["cuda"]
    assert info["device_count"] == count and info["runtime_version"] > 0 and info["driver_version"] > 0
    # Something compiled runs here: machine code for this GPU, or PTX of an older or equal architecture.
    major, minor = torch.cuda.get_device_capability(0)
    mine = 10 * major + minor
    archs = fastopt.cuda.architectures()
    runnable = [a for a in archs if a == f"sm_{mine}" or (a.startswith("compute_") and a[8:].isdigit()
                                                           and int(a[8:]) <= mine)]
    assert runnable or set(archs) & {"all", "all-major", "native"}, archs
