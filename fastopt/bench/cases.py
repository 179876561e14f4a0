"""Benchmark cases: a workload, the callables of every selected backend, and the bandwidth probe.

A case is built only when it is about to run (PendingCase.build) and dropped after, so that the big
sizes (64M elements, GPT-2 small, 4096 x 32000 logits) never hold memory at the same time.

CUDA cases (part "cuda", when a GPU is there): AdamW over 64M float32 elements and over GPT-2 small's list,
cross-entropy forward+backward at 32768 x 50257, fastopt-cuda against torch on the same GPU (and Liger-Kernel's
cross-entropy where it is installed). Their probe is
a device-to-device copy (torch dst.copy_(src)) sized to move the bytes of the case's call: it reads and
writes every byte once, so src and dst each hold half of them (at most COPY_BYTES_MAX in all). The device
is synchronised before and after each timed batch of calls (Case.sync), and the loss case also records
each implementation's peak extra memory (torch.cuda.max_memory_allocated over one call, less what was
allocated before it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Dict, Optional, Sequence, Tuple

import numpy as np

from fastopt import _core
from fastopt.bench import workloads
from fastopt.bench.workloads import (
    PROBE_TRAFFIC,
    cuda_loss_work,
    cuda_update_work,
    gpt2_small_shapes,
    loss_work,
    update_work,
)

PROBE = "probe (a += b)"
COPY_PROBE = "probe (d2d copy)"
COPY_BYTES_MAX = 4 << 30
CUDA_ADAMW_SIZE = 64_000_000
CUDA_LOSS_SHAPE = (32768, 50257)


@dataclass
class Case:
    """One timed comparison: every implementation does the same work of bytes_moved bytes per call."""

    part: str    # "optimizers", "gpt2" or "losses": the table it belongs to
    name: str    # the optimizer or loss
    label: str   # the size, as the table heads it
    n: int       # elements per call
    bytes_moved: int
    impls: Dict[str, Callable[[], object]]
    probe: Optional[Callable[[], object]] = None  # a += b on n float32 elements (CUDA: a copy)
    shape: Optional[Tuple[int, ...]] = None
    device: str = "cpu"
    probe_name: str = PROBE
    copy_bytes: Optional[int] = None         # bytes the CUDA copy probe moves
    sync: Optional[Callable[[], None]] = None  # waits for the device (CUDA cases)
    peak_extra: Dict[str, int] = field(default_factory=dict)  # impl -> bytes (the CUDA and linear loss cases)
    peak_how: str = "torch.cuda.max_memory_allocated - allocated before"
    peak_unit: Optional[Tuple[str, int]] = None  # the peak's yardstick: (name, bytes); None: N*C*4

    @property
    def baseline(self) -> str:
        """The implementation the ratios divide by: fastopt's first (BACKENDS lists it first)."""
        return next(iter(self.impls))

    @property
    def probe_bytes(self) -> int:
        return self.copy_bytes if self.copy_bytes is not None else PROBE_TRAFFIC * self.n * 4


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


def _collect(backends, method: str, work, **kwargs) -> Dict[str, Callable[[], object]]:
    """Every backend's callables for the work (a backend without the method does none of it)."""
    impls: Dict[str, Callable[[], object]] = {}
    for backend in backends:
        make = getattr(backend, method, None)
        if make is not None:
            impls.update(make(work, **kwargs))
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


def linear_label(n: int, d: int, v: int) -> str:
    return f"linear CE {n} x {d} -> {v} float32"


def linear_loss_case(n: int, d: int, v: int, backends: Sequence, memory: bool = True) -> Case:
    """Linear cross-entropy forward + backward (gradients of hidden and weight) at hidden (n, d), weight
    (v, d); no probe (it is compute-bound). With memory, each implementation's peak extra memory in one call
    is measured in a child process of its own (fastopt.bench.linear_memory)."""
    from fastopt.bench import linear_memory

    work = workloads.linear_loss_work(n, d, v)
    case = Case("losses", "linear_ce", linear_label(n, d, v), n * v, work.bytes_moved,
                _collect(backends, "linear_loss", work), None, shape=(n, d, v))
    if memory:
        case.peak_extra = {impl: linear_memory.measure(impl, n, d, v) for impl in case.impls}
        case.peak_how = ("peak resident memory of a child process over one call, gradients allocated by the "
                         "call, less before it")
        case.peak_unit = ("the logits N*V*4", n * v * 4)
    return case


def make_copy_probe(nbytes: int) -> Tuple[Callable[[], object], int]:
    """torch dst.copy_(src) on the GPU moving nbytes (read src, write dst: nbytes / 2 each, float32, at
    most COPY_BYTES_MAX in all): the callable and the bytes it moves."""
    import torch

    elements = max(1, min(nbytes, COPY_BYTES_MAX) // 8)
    src = torch.ones(elements, device=workloads.CUDA_DEVICE)
    dst = torch.empty_like(src)
    return (lambda: dst.copy_(src)), 8 * elements


def _cuda_case(part: str, name: str, label: str, work, method: str, backends, probe: bool,
               shape=None) -> Case:
    import torch

    impls = _collect(backends, method, work)
    copy, copy_bytes = make_copy_probe(work.bytes_moved) if probe else (None, None)
    return Case(part, name, label, work.n, work.bytes_moved, impls, copy, shape=shape, device="cuda",
                probe_name=COPY_PROBE, copy_bytes=copy_bytes, sync=torch.cuda.synchronize)


def cuda_label(what: str) -> str:
    return f"CUDA {what}"


def cuda_update_case(n: int, backends: Sequence, probe: bool = True) -> Case:
    """AdamW over one float32 CUDA array of n elements."""
    return _cuda_case("cuda", "adamw", cuda_label(f"AdamW: {n:,} float32 elements"),
                      cuda_update_work("adamw", n), "update", backends, probe)


def cuda_gpt2_case(backends: Sequence, probe: bool = True) -> Case:
    """AdamW over GPT-2 small's 148 parameter tensors on the GPU, one call."""
    work = cuda_update_work("adamw", [shape for _, shape in gpt2_small_shapes()])
    return _cuda_case("cuda", "adamw", cuda_label(GPT2_LABEL), work, "update", backends, probe)


def peak_extra_bytes(fn: Callable[[], object]) -> int:
    """The most memory torch's allocator held during one call of fn beyond what it held before (what the
    call allocates and frees again: its outputs and temporaries). Memory fastopt's CUDA backend allocates
    itself (stream-ordered, outside torch's allocator) is not seen."""
    import torch

    fn()  # warm-up: lazy initialisation is not the call's memory
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    fn()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() - before


def cuda_loss_case(n: int, c: int, backends: Sequence, probe: bool = True) -> Case:
    """Cross-entropy forward + backward over (n, c) float32 CUDA logits, with each implementation's peak
    extra memory (the gradient alone is n * c * 4 bytes)."""
    case = _cuda_case("cuda", "cross_entropy", cuda_label(loss_label(n, c)), cuda_loss_work("cross_entropy", n, c),
                      "loss", backends, probe, shape=(n, c))
    case.peak_extra = {impl: peak_extra_bytes(fn) for impl, fn in case.impls.items()}
    return case


def cuda_loss_fits(n: int, c: int, copies: int = 0) -> Optional[str]:
    """None when the loss case should fit in the GPU's free memory, else why not: the logits, torch's
    forward+backward (log-probabilities, their gradient and the logits' gradient: three more n x c), the
    copy probe, and `copies` more n x c (an implementation's own copy of the logits: Liger's)."""
    import torch

    free, _ = torch.cuda.mem_get_info()
    need = (4 + copies) * n * c * 4 + min(3 * n * c * 4, COPY_BYTES_MAX)
    if need > free:
        return f"needs about {need / 1e9:.1f} GB, the GPU has {free / 1e9:.1f} GB free"
    return None


def plan_cuda_cases(adamw: bool, gpt2: bool, cross_entropy: bool, backends: Sequence,
                    size: int = CUDA_ADAMW_SIZE, shape: Tuple[int, int] = CUDA_LOSS_SHAPE):
    """The CUDA cases, in run order, and notes on cases left out."""
    pending, notes = [], []
    if adamw:
        pending.append(PendingCase("cuda", "adamw", cuda_label(f"AdamW: {size:,} float32 elements"), size,
                                   lambda: cuda_update_case(size, backends)))
    if gpt2:
        pending.append(PendingCase("cuda", "adamw", cuda_label(GPT2_LABEL), gpt2_elements(),
                                   lambda: cuda_gpt2_case(backends)))
    if cross_entropy:
        n, c = shape
        too_big = cuda_loss_fits(n, c, copies=sum(b.name == "liger" for b in backends))
        if too_big:
            notes.append(f"CUDA cross-entropy at {n} x {c} left out: {too_big}")
        else:
            pending.append(PendingCase("cuda", "cross_entropy", cuda_label(loss_label(n, c)), n * c,
                                       lambda: cuda_loss_case(n, c, backends)))
    return pending, notes


def plan_cases(sizes: Sequence[int], optimizers: Sequence[str], gpt2: bool,
               shapes: Sequence[Tuple[int, int]], losses: Sequence[str], backends: Sequence,
               linear_shapes: Sequence[Tuple[int, int, int]] = (), linear_memory: bool = True):
    """Every case of a run, in run order: sizes (each with every optimizer), GPT-2, the losses, then the
    linear cross-entropy at each (N, D, V) of linear_shapes (when "linear_cross_entropy" is in losses; with
    linear_memory, each implementation's peak memory too: a child process each, seconds)."""
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
            if op == workloads.LINEAR_LOSS:
                continue
            pending.append(PendingCase("losses", op, loss_label(n, c), n * c,
                                       lambda op=op, n=n, c=c: loss_case(op, n, c, backends)))
    if workloads.LINEAR_LOSS in losses:
        for n, d, v in linear_shapes:
            pending.append(PendingCase("losses", "linear_ce", linear_label(n, d, v), n * v,
                                       lambda n=n, d=d, v=v: linear_loss_case(n, d, v, backends,
                                                                              memory=linear_memory)))
    return pending
