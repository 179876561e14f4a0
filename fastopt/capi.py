"""The C ABI from Python: where the shared library and its header are, and a ctypes handle on it.

A pip-installed fastopt carries ``libfastopt`` (``fastopt/lib/``) and ``fastopt/c_api.h``
(``fastopt/include/``), the same library that ``cmake --install`` installs, so any language with a
C FFI can use the kernels of this installation. ``load()`` is the Python instance of that: a
``ctypes.CDLL`` with every function's argument and result types declared. It exists for FFI users
and for the tests; from Python, the pybind11 functions (``fastopt.adamw_`` ...) are the better API.
"""

from __future__ import annotations

import ctypes
import sys
from pathlib import Path

__all__ = ["library_path", "include_dir", "load", "REDUCTIONS", "STATUS"]

_HERE = Path(__file__).resolve().parent

# The status codes of c_api.h (enum fastopt_status) and its reductions.
STATUS = {0: "FASTOPT_OK", 1: "FASTOPT_ERROR_NULL_POINTER", 2: "FASTOPT_ERROR_SIZE",
          3: "FASTOPT_ERROR_HYPERPARAMETER", 4: "FASTOPT_ERROR_OVERLAP", 5: "FASTOPT_ERROR_LABEL",
          6: "FASTOPT_ERROR_INTERNAL"}
REDUCTIONS = {"mean": 0, "sum": 1, "none": 2}


def library_path() -> Path:
    """The path of this installation's ``libfastopt`` shared library."""
    name = {"win32": "fastopt.dll", "darwin": "libfastopt.dylib"}.get(sys.platform, "libfastopt.so")
    path = _HERE / "lib" / name
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: this fastopt was installed without its C library")
    return path


def include_dir() -> Path:
    """The folder to put on the include path for ``#include <fastopt/c_api.h>``."""
    return _HERE / "include"


# Argument lists of the optimizers after (n, param, grad) / (count, sizes, params, grads):
# the state operands and the hyperparameters, in c_api.h's order. "d": double, "i": int32, "l": int64.
_OPTIMIZERS = {
    "sgd": (1, "ddddiil"),
    "adagrad": (1, "ddddil"),
    "rmsprop": (3, "dddddii"),
    "adam": (3, "dddddiil"),
    "adamw": (3, "dddddiil"),
}
_SCALARS = {"d": ctypes.c_double, "i": ctypes.c_int32, "l": ctypes.c_int64}


def load() -> ctypes.CDLL:
    """This installation's libfastopt, with argtypes/restype set for every function of c_api.h."""
    lib = ctypes.CDLL(str(library_path()))
    for name in ("fastopt_last_error", "fastopt_version", "fastopt_cpu_isa"):
        getattr(lib, name).argtypes = []
        getattr(lib, name).restype = ctypes.c_char_p
    lib.fastopt_status_name.argtypes = [ctypes.c_int32]
    lib.fastopt_status_name.restype = ctypes.c_char_p
    i64, i64p = ctypes.c_int64, ctypes.POINTER(ctypes.c_int64)
    for suffix, scalar in (("f32", ctypes.c_float), ("f64", ctypes.c_double)):
        ptr = ctypes.POINTER(scalar)
        ptrs = ctypes.POINTER(ptr)
        for opt, (states, hyper) in _OPTIMIZERS.items():
            tail = [_SCALARS[c] for c in hyper]
            single = getattr(lib, f"fastopt_{opt}_{suffix}")
            single.argtypes = [i64, ptr, ptr] + [ptr] * states + tail
            single.restype = ctypes.c_int32
            many = getattr(lib, f"fastopt_{opt}_list_{suffix}")
            many.argtypes = [i64, i64p, ptrs, ptrs] + [ptrs] * states + tail
            many.restype = ctypes.c_int32
        ce = getattr(lib, f"fastopt_softmax_cross_entropy_{suffix}")
        ce.argtypes = [ptr, i64p, ptr, i64, i64, i64, ctypes.c_double, ctypes.c_int32, ctypes.c_double,
                       ptr, ptr, ctypes.POINTER(ctypes.c_double)]
        ce.restype = ctypes.c_int32
    return lib
