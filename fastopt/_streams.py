"""The current CUDA stream of an array's framework: where fastopt queues a CUDA call's work when the
caller passes no ``stream=``, so that it runs in order with the framework's own work on the array.

Called by the compiled module (csrc/python/array_intake.cpp) once per CUDA call, with the call's first
CUDA array and its device ordinal; returns a cudaStream_t handle as an int (0: the legacy default stream).
"""

from __future__ import annotations


def handle_of(protocol_stream: int) -> int:
    """A stream as the DLPack and CUDA array interface protocols name it (1: the legacy default stream,
    2: the per-thread default stream, else a handle) as a cudaStream_t handle (0: the legacy default)."""
    return 0 if protocol_stream == 1 else protocol_stream


def protocol_of(handle: int) -> int:
    """The inverse of handle_of: the protocols reserve 0, and name the legacy default stream 1."""
    return 1 if handle == 0 else handle


def current_stream(array: object, device: int) -> int:
    module = type(array).__module__.split(".")[0]
    if module == "torch":
        import torch

        return int(torch.cuda.current_stream(device).cuda_stream)
    if module == "cupy":
        import cupy

        with cupy.cuda.Device(device):
            return int(cupy.cuda.get_current_stream().ptr)
    # __cuda_array_interface__ version 3 names the stream its producer wrote the data on: 1 is the
    # legacy default stream (handle 0), 2 the per-thread default stream (its handle is 2 as well).
    interface = getattr(array, "__cuda_array_interface__", None)
    if isinstance(interface, dict) and interface.get("stream") is not None:
        return handle_of(int(interface["stream"]))
    # JAX and others: the legacy default stream, which waits for the other blocking streams' work.
    return 0


def record_on(array: object, handle: int, device: int) -> None:
    """Tells torch's caching allocator that work queued on stream `handle` reads `array` (a torch CUDA
    tensor; other arrays are left alone): its memory is not handed out again, once the tensor is freed,
    before that work is done. Called by the compiled module for the device scalars (lr, step,
    grad_scale, found_inf) of a call given an explicit ``stream=``: such a scalar is often a temporary
    (``step + 1``) made on another stream and freed as soon as the call returns."""
    if type(array).__module__.split(".")[0] != "torch":
        return
    import torch

    if handle == 0:
        stream = torch.cuda.default_stream(device)
    else:
        stream = torch.cuda.ExternalStream(handle, device=f"cuda:{device}")
    array.record_stream(stream)
