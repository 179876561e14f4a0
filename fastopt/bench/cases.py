"""Benchmark cases: a workload, the callables of every selected backend, and the bandwidth probe.

A case is built only when it is about to run (PendingCase.build) and dropped after, so that the big
sizes (64M elements, GPT-2 small, 4096 x 32000 logits) never hold memory at the same time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Dict, Optional, Sequence, Tuple

import numpy as np

from fastopt import _core
from fastopt.bench.workloads import (
    PROBE_TRAFFIC,
    gpt2_small_shapes,
    loss_work,
    update_work,
)

PROBE = "probe (a += b)"


@dataclass
class Case:
    """One timed comparison: every implementation does the same work of bytes_moved bytes per call."""

    part: str    # "optimizers", "gpt2" or "losses": the table it belongs to
    name: str    # the optimizer or loss
    label: str   # the size, as the table heads it
    n: int       # elements per call
    bytes_moved: int
    impls: Dict[str, Callable[[], object]]
    probe: Optional[Callable[[], object]] = None  # a += b on n float32 elements
    shape: Optional[Tuple[int, ...]] = None

    @property
    def baseline(self) -> str:
        """The implementation the ratios divide by: fastopt's first (BACKENDS lists it first)."""
        return next(iter(self.impls))

    @property
    def probe_bytes(self) -> int:
        return PROBE_TRAFFIC * self.n * 4


@dataclass
class PendingCase:
    """What run order and progress need to know before the (memory-hungry) case is built."""

    part: str
    name: str
    label: str
    n: int
    build: Callable[[], Case] = field(repr=False)


def make_probe(n: int) -> Callable[[], object]:
    """fastopt._core._probe_add: a += b on float32, threaded and chunked like the kernels (12 B/element)."""
    a = np.ones(n, np.float32)
    b = np.ones(n, np.float32)
    return lambda: _core._probe_add(a, b)


def _collect(backends, method: str, work) -> Dict[str, Callable[[], object]]:
    impls: Dict[str, Callable[[], object]] = {}
    for backend in backends:
        impls.update(getattr(backend, method)(work))
    return impls


def size_label(n: int) -> str:
    return f"{n:,} float32 elements"


def update_case(optimizer: str, n: int, backends: Sequence, probe: bool = True) -> Case:
    """One optimizer on one float32 array of n elements."""
    work = update_work(optimizer, n, np.float32, single=True)
    return Case("optimizers", optimizer, size_label(n), n, work.bytes_moved,
                _collect(backends, "update", work), make_probe(n) if probe else None)


GPT2_LABEL = "GPT-2 small: 148 float32 tensors in one call"


def gpt2_case(backends: Sequence, probe: bool = True) -> Case:
    """AdamW over GPT-2 small's parameter list, one call (the NumPy reference is left out)."""
    work = update_work("adamw", [shape for _, shape in gpt2_small_shapes()], np.float32, single=False)
    chosen = [b for b in backends if b.name != "numpy"]
    return Case("gpt2", "adamw", GPT2_LABEL, work.n, work.bytes_moved,
                _collect(chosen, "update", work), make_probe(work.n) if probe else None)


def gpt2_elements() -> int:
    return sum(int(np.prod(shape)) for _, shape in gpt2_small_shapes())


def loss_label(n: int, c: int) -> str:
    return f"{n} x {c} float32 logits"


def loss_case(op: str, n: int, c: int, backends: Sequence, probe: bool = True) -> Case:
    """Softmax cross-entropy forward + backward, or softmax alone, over (n, c) float32 logits."""
    work = loss_work(op, n, c, np.float32)
    return Case("losses", op, loss_label(n, c), n * c, work.bytes_moved,
                _collect(backends, "loss", work), make_probe(n * c) if probe else None, shape=(n, c))


def plan_cases(sizes: Sequence[int], optimizers: Sequence[str], gpt2: bool,
               shapes: Sequence[Tuple[int, int]], losses: Sequence[str], backends: Sequence):
    """Every case of a run, in run order: sizes (each with every optimizer), GPT-2, then the losses."""
    pending = []
    for n in sizes:
        for opt in optimizers:
            pending.append(PendingCase("optimizers", opt, size_label(n), n,
                                       lambda opt=opt, n=n: update_case(opt, n, backends)))
    if gpt2:
        pending.append(PendingCase("gpt2", "adamw", GPT2_LABEL, gpt2_elements(),
                                   lambda: gpt2_case(backends)))
    for n, c in shapes:
        for op in losses:
            pending.append(PendingCase("losses", op, loss_label(n, c), n * c,
                                       lambda op=op, n=n, c=c: loss_case(op, n, c, backends)))
    return pending
