"""The XLA FFI targets of fastopt.jax: registered with JAX once, and called through jax.ffi.ffi_call.

The handlers are compiled into fastopt._core (csrc/jax/); this module registers them for the CPU and,
where fastopt has its CUDA backend, for CUDA, and builds the calls: operand layout, results,
input_output_aliases and attributes. Everything a user passes is checked before a call is built
(fastopt/jax/_checks.py), so the handlers' own checks only guard against hand-made calls.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence

import jax
import numpy as np

from fastopt import _core

NOT_BUILT = (
    "this fastopt was built without fastopt.jax's XLA FFI handlers (FASTOPT_JAX=OFF, or AUTO where the "
    "building Python had no jaxlib). Reinstall with them: `FASTOPT_JAX=ON pip install .` (pip fetches "
    "jaxlib's headers into its build environment), or `pip install --no-build-isolation .` where jax is "
    "installed"
)

PLATFORMS = {"cpu": "cpu", "cuda": "CUDA"}


def register() -> None:
    """Registers every handler of this build with JAX (idempotent: called once, at import)."""
    if not hasattr(_core, "_jax_ffi_targets"):
        raise ImportError(NOT_BUILT)
    for name, handlers in _core._jax_ffi_targets().items():
        for platform, capsule in handlers.items():
            jax.ffi.register_ffi_target(name, capsule, platform=PLATFORMS[platform], api_version=1)


def _real(x) -> np.float64:
    return np.float64(x)


def attributes(**values) -> Dict[str, object]:
    """FFI attributes of the types the handlers decode: bool -> pred, int -> int64, float -> float64,
    str as is (a Python float would do too; spelled out so no setting changes a width)."""
    out: Dict[str, object] = {}
    for key, value in values.items():
        if isinstance(value, (bool, np.bool_)):
            out[key] = np.bool_(value)
        elif isinstance(value, (int, np.integer)):
            out[key] = np.int64(value)
        elif isinstance(value, (float, np.floating)):
            out[key] = _real(value)
        else:
            out[key] = value
    return out


def update_call(target: str, blocks: Sequence[Sequence[jax.Array]], written: Sequence[bool], *,
                lr: Optional[jax.Array], step: jax.Array, attrs: Dict[str, object]) -> List[List[jax.Array]]:
    """One update call over k tensors: blocks[j] holds operand j (params, grads, then each state) of
    every tensor; written[j] says whether the kernel writes it (all but the grads). Returns the new
    arrays of the written blocks, in order. Each result aliases its operand, so that XLA hands the
    kernel the operand's buffer to update in place (its own copy when the operand is still needed
    elsewhere; none when the caller donated it)."""
    k = len(blocks[0])
    head = [] if lr is None else [lr]
    head.append(step)
    operands = head + [a for block in blocks for a in block]
    results, aliases = [], {}
    for j, block in enumerate(blocks):
        if not written[j]:
            continue
        for i, a in enumerate(block):
            aliases[len(head) + j * k + i] = len(results)
            results.append(jax.ShapeDtypeStruct(a.shape, a.dtype))
    call = jax.ffi.ffi_call(target, results, input_output_aliases=aliases, vmap_method="sequential")
    flat = call(*operands, **attributes(lr_operand=lr is not None, tensors=k, **attrs))
    out, at = [], 0
    for j in range(len(blocks)):
        if written[j]:
            out.append(list(flat[at:at + k]))
            at += k
    return out
