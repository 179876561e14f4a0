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

__all__ = ["library_path", "include_dir", "load", "optimizers", "HYPER_KINDS", "REDUCTIONS", "STATUS"]

_HERE = Path(__file__).resolve().parent

# The status codes of c_api.h (enum fastopt_status) and its reductions.
STATUS = {0: "FASTOPT_OK", 1: "FASTOPT_ERROR_NULL_POINTER", 2: "FASTOPT_ERROR_SIZE",
          3: "FASTOPT_ERROR_HYPERPARAMETER", 4: "FASTOPT_ERROR_OVERLAP", 5: "FASTOPT_ERROR_LABEL",
          6: "FASTOPT_ERROR_INTERNAL", 7: "FASTOPT_ERROR_UNKNOWN_OPTIMIZER"}
REDUCTIONS = {"mean": 0, "sum": 1, "none": 2}
# enum fastopt_hyper_kind: what a hyperparameter of a registered optimizer holds.
HYPER_KINDS = {0: "real", 1: "flag", 2: "optional"}


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
        # The generic entry of the optimizers described as rules (operands tensor-major).
        update = getattr(lib, f"fastopt_update_{suffix}")
        update.argtypes = [ctypes.c_char_p, i64, i64p, ptrs, ctypes.c_int32, ctypes.POINTER(ctypes.c_double),
                           ctypes.c_int32, i64, ctypes.c_double, ctypes.c_int32, ctypes.POINTER(ctypes.c_int32)]
        update.restype = ctypes.c_int32
        # Adafactor: a shape per tensor (ndims, then the sizes one after the other), its three state lists.
        adafactor = getattr(lib, f"fastopt_adafactor_{suffix}")
        adafactor.argtypes = ([i64, ctypes.POINTER(ctypes.c_int32), i64p] + [ptrs] * 5 +
                              [i64] + [ctypes.c_double] * 6 + [ctypes.c_int32])
        adafactor.restype = ctypes.c_int32
    i32p, strp = ctypes.POINTER(ctypes.c_int32), ctypes.POINTER(ctypes.c_char_p)
    lib.fastopt_optimizer_count.argtypes = []
    lib.fastopt_optimizer_count.restype = ctypes.c_int32
    lib.fastopt_optimizer_name.argtypes = [ctypes.c_int32]
    lib.fastopt_optimizer_name.restype = ctypes.c_char_p
    lib.fastopt_optimizer_info.argtypes = [ctypes.c_char_p, i32p, i32p, i32p, strp]
    lib.fastopt_optimizer_operand.argtypes = [ctypes.c_char_p, ctypes.c_int32, strp, strp]
    lib.fastopt_optimizer_hyper.argtypes = [ctypes.c_char_p, ctypes.c_int32, strp, ctypes.POINTER(ctypes.c_double),
                                            i32p, strp]
    for name in ("fastopt_optimizer_info", "fastopt_optimizer_operand", "fastopt_optimizer_hyper"):
        getattr(lib, name).restype = ctypes.c_int32
    return lib


def _ok(lib: ctypes.CDLL, status: int) -> None:
    if status != 0:
        raise RuntimeError(f"{STATUS.get(status, status)}: {lib.fastopt_last_error().decode()}")


def optimizers(lib: ctypes.CDLL | None = None) -> dict:
    """The registered optimizers as the C ABI describes them (its introspection entries), in registry
    order: ``{name: {"summary", "takes_step", "operands": [(name, needed_when or None)], "hyper":
    [(name, default, kind)]}}``, kind one of ``HYPER_KINDS``' values (an optional value's default is
    NaN: computed from step). What a binding generator for another language reads."""
    lib = lib or load()
    out = {}
    for index in range(lib.fastopt_optimizer_count()):
        name = lib.fastopt_optimizer_name(index)
        n_operands, n_hyper, takes_step = ctypes.c_int32(), ctypes.c_int32(), ctypes.c_int32()
        summary = ctypes.c_char_p()
        _ok(lib, lib.fastopt_optimizer_info(name, ctypes.byref(n_operands), ctypes.byref(n_hyper),
                                            ctypes.byref(takes_step), ctypes.byref(summary)))
        operands = []
        for j in range(n_operands.value):
            op, needed_when = ctypes.c_char_p(), ctypes.c_char_p()
            _ok(lib, lib.fastopt_optimizer_operand(name, j, ctypes.byref(op), ctypes.byref(needed_when)))
            operands.append((op.value.decode(), needed_when.value.decode() if needed_when.value else None))
        hyper = []
        for i in range(n_hyper.value):
            h, default, kind, doc = ctypes.c_char_p(), ctypes.c_double(), ctypes.c_int32(), ctypes.c_char_p()
            _ok(lib, lib.fastopt_optimizer_hyper(name, i, ctypes.byref(h), ctypes.byref(default), ctypes.byref(kind),
                                                 ctypes.byref(doc)))
            hyper.append((h.value.decode(), default.value, HYPER_KINDS[kind.value]))
        out[name.decode()] = {"summary": summary.value.decode(), "takes_step": bool(takes_step.value),
                              "operands": operands, "hyper": hyper}
    return out
