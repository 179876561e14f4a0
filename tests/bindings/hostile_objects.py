"""Objects that speak the array protocols badly, on purpose: for test_hostile_input.py and test_fuzz.py.

- FakeDLPack: a DLPack producer whose capsule says whatever the test wants (data pointer, ndim, extents,
  dtype, device, version), built with ctypes over memory the object owns. Every extent list a test gives
  either is absurd (the intake must refuse it) or fits the object's buffer, so that an accepted call can
  only write memory the object owns.
- Interface: an object whose __cuda_array_interface__ is any value (or raises).
- DeviceClaim: an object whose __dlpack_device__ returns any value (or raises); its __dlpack__ exports a
  real NumPy array.
- Raising: protocol methods and number conversions that raise a given exception.
"""

from __future__ import annotations

import ctypes
from typing import Optional, Sequence, Tuple

import numpy as np

DL_CPU, DL_CUDA = 1, 2
FLOAT, INT = 2, 0


class DLDevice(ctypes.Structure):
    _fields_ = [("device_type", ctypes.c_int32), ("device_id", ctypes.c_int32)]


class DLDataType(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint8), ("bits", ctypes.c_uint8), ("lanes", ctypes.c_uint16)]


class DLTensor(ctypes.Structure):
    _fields_ = [("data", ctypes.c_void_p), ("device", DLDevice), ("ndim", ctypes.c_int32),
                ("dtype", DLDataType), ("shape", ctypes.POINTER(ctypes.c_int64)),
                ("strides", ctypes.POINTER(ctypes.c_int64)), ("byte_offset", ctypes.c_uint64)]


class DLManagedTensor(ctypes.Structure):
    _fields_ = [("dl_tensor", DLTensor), ("manager_ctx", ctypes.c_void_p), ("deleter", ctypes.c_void_p)]


class DLPackVersion(ctypes.Structure):
    _fields_ = [("major", ctypes.c_uint32), ("minor", ctypes.c_uint32)]


class DLManagedTensorVersioned(ctypes.Structure):
    _fields_ = [("version", DLPackVersion), ("manager_ctx", ctypes.c_void_p), ("deleter", ctypes.c_void_p),
                ("flags", ctypes.c_uint64), ("dl_tensor", DLTensor)]


_new_capsule = ctypes.pythonapi.PyCapsule_New
_new_capsule.restype = ctypes.py_object
_new_capsule.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p]
# The capsule keeps a pointer to its name: module-level bytes live as long as the process.
_VERSIONED_NAME = b"dltensor_versioned"
_LEGACY_NAME = b"dltensor"


class FakeDLPack:
    """A DLPack producer of memory it owns (`buffer`: buffer_elements zeros of 8 bytes), describing it as told.

    shape: the extents written into the capsule; ndim: the capsule's ndim (default len(shape)); data:
    "buffer" (the buffer's address), None (NULL) or an int; device: the capsule's (type, id); claimed:
    what __dlpack_device__ returns (default `device`). The capsule has no deleter: the memory belongs to
    this object, which the intake holds while it uses it.
    """

    def __init__(self, shape: Sequence[int] = (8,), *, ndim: Optional[int] = None, data="buffer",
                 dtype: Tuple[int, int, int] = (FLOAT, 64, 1), device=(DL_CPU, 0), claimed=None,
                 versioned: bool = True, version=(1, 0), flags: int = 0, strides: Optional[Sequence[int]] = None,
                 byte_offset: int = 0, null_shape: bool = False, buffer_elements: int = 64):
        self.buffer = np.zeros(max(buffer_elements, 1), np.float64)
        self._shape = (ctypes.c_int64 * max(len(shape), 1))(*shape)
        self._strides = None if strides is None else (ctypes.c_int64 * max(len(strides), 1))(*strides)
        self.ndim = len(shape) if ndim is None else ndim
        self.data = self.buffer.ctypes.data if data == "buffer" else data
        self.dtype, self.device, self.claimed = dtype, device, device if claimed is None else claimed
        self.versioned, self.version, self.flags = versioned, version, flags
        self.byte_offset, self.null_shape = byte_offset, null_shape
        self.exports = []  # every struct handed out stays alive with this object

    def _tensor(self) -> DLTensor:
        return DLTensor(self.data, DLDevice(*self.device), self.ndim, DLDataType(*self.dtype),
                        None if self.null_shape else ctypes.cast(self._shape, ctypes.POINTER(ctypes.c_int64)),
                        None if self._strides is None else ctypes.cast(self._strides, ctypes.POINTER(ctypes.c_int64)),
                        self.byte_offset)

    def __dlpack__(self, stream=None, max_version=None, copy=None, dl_device=None):
        if self.versioned and max_version is not None:
            managed = DLManagedTensorVersioned(DLPackVersion(*self.version), None, None, self.flags, self._tensor())
            name = _VERSIONED_NAME
        else:
            managed = DLManagedTensor(self._tensor(), None, None)
            name = _LEGACY_NAME
        self.exports.append(managed)
        return _new_capsule(ctypes.addressof(managed), name, None)

    def __dlpack_device__(self):
        return self.claimed

    def __repr__(self) -> str:
        return f"FakeDLPack(ndim={self.ndim}, shape={list(self._shape)[:4]}, data={self.data})"


class Interface:
    """__cuda_array_interface__ is `value` (an exception instance is raised instead)."""

    def __init__(self, value):
        self.value = value

    @property
    def __cuda_array_interface__(self):
        if isinstance(self.value, BaseException):
            raise self.value
        return self.value

    def __repr__(self) -> str:
        return f"Interface({self.value!r})"


class DeviceClaim:
    """__dlpack_device__ returns `value` (an exception instance is raised instead); __dlpack__ exports
    `array` (a float32 NumPy array by default)."""

    def __init__(self, value, array: Optional[np.ndarray] = None):
        self.value = value
        self.array = np.ones(3, np.float32) if array is None else array

    def __dlpack_device__(self):
        if isinstance(self.value, BaseException):
            raise self.value
        return self.value

    def __dlpack__(self, **kwargs):
        return self.array.__dlpack__(**kwargs)

    def __repr__(self) -> str:
        return f"DeviceClaim({self.value!r})"


class Raising:
    """Raises `error` from the protocol named by `where`: "__dlpack__", "__dlpack_device__",
    "__cuda_array_interface__" (a property), "attribute" (looking up __dlpack__ at all), "__float__",
    "__index__", "cuda_stream" (a stream object's handle)."""

    def __init__(self, error: BaseException, where: str):
        self.error, self.where = error, where

    def __getattribute__(self, name):
        where = object.__getattribute__(self, "where")
        if where == "attribute" and name == "__dlpack__":
            raise object.__getattribute__(self, "error")
        if where == "cuda_stream" and name == "cuda_stream":
            raise object.__getattribute__(self, "error")
        if where == "__cuda_array_interface__" and name == "__cuda_array_interface__":
            raise object.__getattribute__(self, "error")
        if name in ("__dlpack__", "__dlpack_device__") and where in ("__dlpack__", "__dlpack_device__"):
            if name == where:
                def fail(*args, **kwargs):
                    raise object.__getattribute__(self, "error")
                return fail
            return lambda *args, **kwargs: (DL_CPU, 0)
        return object.__getattribute__(self, name)

    def __float__(self):
        if self.where == "__float__":
            raise self.error
        return 0.5

    def __index__(self):
        if self.where == "__index__":
            raise self.error
        return 1

    def __repr__(self) -> str:
        return f"Raising({type(self.error).__name__}, {self.where})"
