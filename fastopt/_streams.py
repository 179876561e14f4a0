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
