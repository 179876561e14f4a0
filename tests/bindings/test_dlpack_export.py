"""fastopt's DLPack producer (_core._dlpack_export, behind DeviceBuffer.__dlpack__) on host memory, where
real consumers run without a GPU: NumPy, PyTorch and fastopt's own intake take the capsule without a copy,
in both the versioned (DLPack 1.0) and the legacy form; the owner lives exactly as long as a consumer's
array; a capsule nobody consumed releases it; refusals leak nothing. DeviceBuffer's own export is the
same call with CUDA's device type (test_cuda_frameworks.py runs it on a GPU).
"""

from __future__ import annotations

import gc
import sys
import weakref

import numpy as np
import pytest

import fastopt
from fastopt import _core

DL_CPU = 1


class Exported:
    """Host memory exported through fastopt's producer, as DeviceBuffer exports device memory."""

    def __init__(self, array: np.ndarray, read_only: bool = False, versioned: bool = True):
        self.array = array
        self.read_only = read_only
        self.versioned = versioned

    def __dlpack_device__(self):
        return (DL_CPU, 0)

    def __dlpack__(self, *, stream=None, max_version=None, dl_device=None, copy=None):
        versioned = self.versioned and max_version is not None and max_version[0] >= 1
        return _core._dlpack_export(self, self.array.ctypes.data, self.array.shape, str(self.array.dtype),
                                    DL_CPU, 0, versioned, self.read_only)


SHAPES = [(), (0,), (1,), (7,), (2, 3), (2, 0, 3), (3, 1, 4, 2)]
DTYPES = [np.float16, np.float32, np.float64, np.int32, np.int64]


@pytest.mark.parametrize("versioned", [True, False], ids=["versioned", "legacy"])
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_numpy_takes_the_memory_itself(shape, dtype, versioned):
    rng = np.random.default_rng(abs(hash((shape, np.dtype(dtype).name))) % 2**32)
    source = np.asarray(100 * rng.standard_normal(shape)).astype(dtype)
    taken = np.from_dlpack(Exported(source, versioned=versioned))
    assert taken.shape == source.shape and taken.dtype == source.dtype
    np.testing.assert_array_equal(taken, source)
    if source.size:
        assert np.shares_memory(taken, source)
        source.reshape(-1)[-1] = 42  # (NumPy marks arrays from legacy capsules read-only, so write here)
        assert taken.reshape(-1)[-1] == 42


@pytest.mark.parametrize("versioned", [True, False], ids=["versioned", "legacy"])
@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32", "float64", "int32", "int64"])
def test_torch_takes_the_memory_itself(dtype, versioned):
    torch = pytest.importorskip("torch")
    source = torch.randn(3, 5).to(getattr(torch, dtype)) if "float" in dtype else torch.arange(15).reshape(3, 5).to(
        getattr(torch, dtype))
    capsule = _core._dlpack_export(source, source.data_ptr(), tuple(source.shape), dtype, DL_CPU, 0, versioned)
    taken = torch.from_dlpack(capsule)
    assert taken.dtype == source.dtype and tuple(taken.shape) == (3, 5) and taken.data_ptr() == source.data_ptr()
    assert torch.equal(taken, source)
    assert "used_" in repr(capsule)  # the consumer took ownership


def test_the_owner_lives_as_long_as_the_consumers_array():
    owner = Exported(np.arange(12, dtype=np.float64))
    alive = weakref.ref(owner)
    taken = np.from_dlpack(owner)
    del owner
    gc.collect()
    assert alive() is not None
    np.testing.assert_array_equal(taken, np.arange(12))
    del taken
    gc.collect()
    assert alive() is None


@pytest.mark.parametrize("versioned", [True, False], ids=["versioned", "legacy"])
def test_a_capsule_nobody_consumed_releases_its_owner(versioned):
    owner = Exported(np.ones(4, np.float32))
    alive = weakref.ref(owner)
    capsule = owner.__dlpack__(max_version=(1, 0) if versioned else None)
    del owner
    gc.collect()
    assert alive() is not None
    del capsule
    gc.collect()
    assert alive() is None


def test_read_only_exports_reach_consumers_as_read_only():
    source = np.ones(5, np.float32)
    assert not np.from_dlpack(Exported(source, read_only=True)).flags.writeable
    grads = Exported(np.full(5, 0.5, np.float32), read_only=True)
    fastopt.sgd_(source, grads, lr=0.5)  # read-only is fine for what is only read
    np.testing.assert_array_equal(source, np.full(5, 0.75, np.float32))
    with pytest.raises(ValueError, match=r"params\[0\] is read-only"):
        fastopt.sgd_(Exported(source, read_only=True), grads, lr=0.5)
    np.testing.assert_array_equal(source, np.full(5, 0.75, np.float32))


def test_fastopt_updates_exported_memory_in_place():
    rng = np.random.default_rng(7)
    params = [rng.standard_normal(n).astype(np.float32) for n in (1, 33, 1000)]
    grads = [rng.standard_normal(p.shape).astype(np.float32) for p in params]
    want = [p.copy() for p in params]
    fastopt.adam_(want, grads, [np.zeros_like(p) for p in params], [np.zeros_like(p) for p in params], lr=0.1,
                  step=1)
    fastopt.adam_([Exported(p) for p in params], [Exported(g, versioned=False) for g in grads],
                  [Exported(np.zeros_like(p)) for p in params], [Exported(np.zeros_like(p)) for p in params],
                  lr=0.1, step=1)
    for got, expected in zip(params, want):
        np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("kwargs,message", [
    (dict(dtype="complex64"), "dtype must be"),
    (dict(shape=(2, -1)), r"shape\[1\] must be >= 0"),
    (dict(versioned=False, read_only=True), "read-only export needs a versioned capsule"),
])
def test_refusals_name_the_argument_and_keep_no_reference(kwargs, message):
    owner = np.zeros(4, np.float32)
    call = dict(owner=owner, data=owner.ctypes.data, shape=(4,), dtype="float32", device_type=DL_CPU, device_id=0,
                versioned=True, read_only=False)
    call.update(kwargs)
    references = sys.getrefcount(owner)
    with pytest.raises(ValueError, match=message):
        _core._dlpack_export(**call)
    assert sys.getrefcount(owner) == references
