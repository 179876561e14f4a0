"""New arrays that calls return (the losses' gradients and values, softmax) for non-NumPy input.

A new array is made by the framework of the call's input, so that a PyTorch user gets a torch.Tensor
and a CuPy user a cupy.ndarray, each from its own (caching) allocator. Other CPU inputs get NumPy arrays.
Other CUDA inputs (JAX, Numba, anything with only ``__cuda_array_interface__``) get a
:class:`DeviceBuffer`: memory fastopt allocates itself, stream-ordered, that any consumer of
``__cuda_array_interface__`` (CuPy, Numba, ``torch.as_tensor``) takes without a copy.
"""

from __future__ import annotations

from typing import Optional, Tuple

from fastopt import _core, _streams

_DL_CUDA = 2  # DLPack's device type of CUDA device memory


def empty(like: object, shape: Tuple[int, ...], dtype: str, device: int, stream: int) -> object:
    """An uninitialised C-contiguous array of `shape` and `dtype` ("float32", ...) of `like`'s framework,
    on CUDA `device` (-1: the CPU); called by the compiled module for a call's outputs."""
    module = type(like).__module__.split(".")[0]
    if module == "torch":
        import torch

        if device < 0:
            return torch.empty(shape, dtype=getattr(torch, dtype))
        # Allocated on the call's stream, so that the caching allocator reuses the memory only after
        # the work queued there (allocating on another stream and freeing early could race).
        with torch.cuda.device(device), torch.cuda.stream(_torch_stream(torch, device, stream)):
            return torch.empty(shape, dtype=getattr(torch, dtype), device=f"cuda:{device}")
    if device < 0:
        import numpy

        return numpy.empty(shape, dtype=dtype)
    if module == "cupy":
        import cupy

        with cupy.cuda.Device(device), cupy.cuda.ExternalStream(stream):
            return cupy.empty(shape, dtype=dtype)
    return DeviceBuffer(shape, dtype, device, stream)


def _torch_stream(torch, device: int, stream: int):
    current = torch.cuda.current_stream(device)
    if current.cuda_stream == stream:
        return current
    return torch.cuda.ExternalStream(stream, device=f"cuda:{device}")


class DeviceBuffer:
    """Device memory owned by fastopt, exposed through ``__cuda_array_interface__`` (version 3) and
    DLPack (``__dlpack__``), so that CuPy, Numba, PyTorch and JAX (``jax.dlpack.from_dlpack``) take it
    without a copy.

    Allocated with cudaMallocAsync on the stream of the call that made it and freed with cudaFreeAsync
    on that stream when the last reference goes (a DLPack consumer's array holds one). Consumers on other
    streams are safe both ways: ``__dlpack__(stream=s)`` makes s wait for the buffer's stream, and
    remembers s, so that the free waits for the work queued on s by then (torch's record_stream idea:
    without it, the memory could be handed out again while a consumer on s still reads it). A stream
    handed to ``__dlpack__`` must therefore outlive the buffer. Consumers through
    ``__cuda_array_interface__`` name no stream: ordering their work is theirs, as the interface says.
    """

    _TYPESTR = {"float16": "<f2", "float32": "<f4", "float64": "<f8", "int32": "<i4", "int64": "<i8"}
    _ITEMSIZE = {"float16": 2, "float32": 4, "float64": 8, "int32": 4, "int64": 8}

    def __init__(self, shape: Tuple[int, ...], dtype: str, device: int, stream: int):
        self.shape = tuple(int(n) for n in shape)
        self.dtype = dtype
        self.device = device
        self._stream = stream
        nbytes = self._ITEMSIZE[dtype]
        for n in self.shape:
            nbytes *= n
        self._ptr = 0
        self._consumers = set()  # stream handles __dlpack__ exported to: the free waits for them
        self._ptr = _core._cuda_allocate(nbytes, device, stream)

    @property
    def __cuda_array_interface__(self) -> dict:
        return {
            "shape": self.shape,
            "typestr": self._TYPESTR[self.dtype],
            "data": (self._ptr, False),
            "strides": None,
            "version": 3,
            # The producer's stream, in the interface's terms.
            "stream": _streams.protocol_of(self._stream),
        }

    def __dlpack_device__(self) -> Tuple[int, int]:
        return (_DL_CUDA, self.device)

    def __dlpack__(self, *, stream: Optional[int] = None, max_version: Optional[Tuple[int, int]] = None,
                   dl_device: Optional[Tuple[int, int]] = None, copy: Optional[bool] = None) -> object:
        """A DLPack capsule of this memory (the Python array API's protocol). `stream` is the consumer's
        CUDA stream in the protocol's terms (None or 1: the legacy default stream, 2: the per-thread
        default stream, -1: no ordering, else a handle); it is made to wait for the work that wrote this
        buffer, without a host wait. A versioned capsule (DLPack 1.0) when `max_version` allows it."""
        if dl_device is not None and tuple(dl_device) != self.__dlpack_device__():
            raise BufferError(f"a DeviceBuffer on cuda:{self.device} cannot be exported to device {tuple(dl_device)}")
        if copy:
            raise BufferError("a DeviceBuffer is exported without a copy only (copy=True was asked)")
        if stream is None:
            stream = 1
        if isinstance(stream, bool) or not isinstance(stream, int) or stream == 0 or stream < -1:
            raise ValueError(f"stream must be None, -1, 1, 2 or a CUDA stream handle, got {stream!r}")
        if stream != -1:
            consumer = _streams.handle_of(stream)
            _core._cuda_order_after(self.device, self._stream, consumer)
            if consumer != self._stream:
                self._consumers.add(consumer)
        versioned = max_version is not None and int(max_version[0]) >= 1
        return _core._dlpack_export(self, self._ptr, self.shape, self.dtype, _DL_CUDA, self.device, versioned)

    def __del__(self) -> None:
        if getattr(self, "_ptr", 0):
            ptr, self._ptr = self._ptr, 0
            # The free is queued on the buffer's own stream: first make that stream wait for every
            # consumer stream's work so far (an event each; nothing waits on the host).
            for consumer in getattr(self, "_consumers", ()):
                try:
                    _core._cuda_order_after(self.device, consumer, self._stream)
                except Exception:  # a consumer stream that is gone: its work is done or invalid  # noqa: BLE001
                    pass
            _core._cuda_release(ptr, self.device, self._stream)

    def __repr__(self) -> str:
        return f"DeviceBuffer(shape={self.shape}, dtype={self.dtype}, device=cuda:{self.device})"
