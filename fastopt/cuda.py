"""The CUDA side of fastopt: is there a usable GPU, and what this build was compiled for.

Every fastopt function runs on CUDA when its arrays live on a CUDA device (PyTorch tensors, CuPy arrays,
anything with ``__dlpack__`` or ``__cuda_array_interface__``); there is no separate GPU API. This module
answers the questions around that::

    fastopt.cuda.is_available()   # a CUDA build and at least one usable device
    fastopt.cuda.device_count()
    fastopt.cuda.architectures()  # e.g. ['sm_75', 'sm_80', 'sm_86', 'sm_89', 'sm_90', 'compute_90']

A machine with nvcc but no GPU builds everything: ``is_available()`` is then False and
``architectures()`` still lists what was compiled.
"""

from __future__ import annotations

from typing import List

from fastopt import _core


def is_compiled() -> bool:
    """True when this fastopt was built with its CUDA backend (FASTOPT_CUDA=ON, or AUTO with nvcc)."""
    return bool(_core.build_info()["cuda"]["compiled"])


def device_count() -> int:
    """Usable CUDA devices (0 without a CUDA build, a driver or a GPU)."""
    return int(_core._cuda_device_count())


def is_available() -> bool:
    """True when CUDA is compiled in and at least one device can run its kernels (a GPU older than every
    compiled architecture, e.g. sm_70 with the default build, cannot: see architectures())."""
    return is_compiled() and any(runs_kernels(device) for device in range(device_count()))


def runs_kernels(device: int = 0) -> bool:
    """Whether this build has machine code or PTX for CUDA device `device` (False for no such device).
    Asks the driver to load the kernels for that device, which starts CUDA there as any first use does."""
    return bool(_core._cuda_runs_kernels(device))


def architectures() -> List[str]:
    """The compiled targets: machine code ("sm_XX") and PTX ("compute_XX") for newer devices."""
    return list(_core.build_info()["cuda"]["architectures"])


def device_name(device: int = 0) -> str:
    """The name of CUDA device `device` (ValueError when there is no such device)."""
    return str(_core._cuda_device_name(device))


def kernel_arg_bytes(device: int = 0) -> int:
    """The kernel-argument space the optimizer launches use on CUDA device `device`: 32764 where this build
    has kernels for CUDA 12.1's larger arguments and the driver takes them (a list of up to 608 Adam
    tensors in one launch), else 4096 (67); 0 without CUDA, a driver or such a device."""
    return int(_core._cuda_kernel_arg_bytes(device))


__all__ = ["architectures", "device_count", "device_name", "is_available", "is_compiled", "kernel_arg_bytes",
           "runs_kernels"]
