"""The implementations under comparison: one class per backend, listed once in BACKENDS.

A backend turns a workload (workloads.py) into named zero-argument callables, each running one call
(one optimizer update, one loss forward+backward) on its own copy of the data. It returns an empty
dict for work it does not do, and leaves out variants its library refuses (torch has no fused
RMSprop on some versions). Timing, tables, JSON and plots only ever see the names and callables.
"""

from __future__ import annotations

from typing import Callable, Dict, Optional, Sequence

import numpy as np

import fastopt
from fastopt import reference
from fastopt.bench.workloads import STATE_ARRAYS, LossWork, UpdateWork

Impls = Dict[str, Callable[[], object]]


def _step_kwargs(work: UpdateWork) -> dict:
    return {} if work.step is None else {"step": work.step}


class FastoptCPU:
    """fastopt's C++ kernels on NumPy arrays: one native call per update, in place."""

    name = "fastopt"

    def update(self, work: UpdateWork) -> Impls:
        kernel = getattr(fastopt, work.optimizer + "_")
        params = [p.copy() for p in work.params]
        states = [[np.zeros_like(p) for p in params] for _ in range(STATE_ARRAYS[work.optimizer])]
        if work.single:  # one array, not a list of one: the cheapest call from Python
            args = (params[0], work.grads[0], *(s[0] for s in states))
        else:
            args = (params, work.grads, *states)
        kwargs = {**work.hyper, **_step_kwargs(work)}
        return {"fastopt": lambda: kernel(*args, **kwargs)}

    def loss(self, work: LossWork) -> Impls:
        logits, labels = work.logits, work.labels
        if work.op == "softmax":
            return {"fastopt": lambda: fastopt.softmax(logits)}
        # In place: the first call overwrites the scratch logits with gradients, later calls run on
        # those; the time does not depend on the values.
        scratch = logits.copy()
        out = np.empty_like(logits)
        return {
            "fastopt (out=logits)": lambda: fastopt.softmax_cross_entropy(scratch, labels, out=scratch),
            "fastopt (out=buffer)": lambda: fastopt.softmax_cross_entropy(logits, labels, out=out),
        }


class NumpyReference:
    """fastopt.reference: plain NumPy that returns new arrays (allocates), as a NumPy loop would."""

    name = "numpy"

    def update(self, work: UpdateWork) -> Impls:
        ref = getattr(reference, work.optimizer)
        params = [p.copy() for p in work.params]
        states = [[np.zeros_like(p) for p in params] for _ in range(STATE_ARRAYS[work.optimizer])]
        kwargs = {**work.hyper, **_step_kwargs(work)}
        per_array = [(p, g, *(s[i] for s in states)) for i, (p, g) in enumerate(zip(params, work.grads))]
        if work.single:
            args = per_array[0]
            return {"numpy": lambda: ref(*args, **kwargs)}
        return {"numpy": lambda: [ref(*a, **kwargs) for a in per_array]}

    def loss(self, work: LossWork) -> Impls:
        logits, labels = work.logits, work.labels
        if work.op == "softmax":
            return {"numpy": lambda: reference.softmax(logits)}
        return {"numpy": lambda: reference.softmax_cross_entropy(logits, labels)}


class TorchCPU:
    """torch on CPU tensors: torch.optim's for-loop, foreach and fused implementations,
    F.cross_entropy + backward and torch.softmax. Everything torch writes is its own copy; the
    arrays it only reads (gradients, softmax input) are shared with the NumPy workload."""

    name = "torch"
    _CLASSES = {"sgd": "SGD", "adagrad": "Adagrad", "rmsprop": "RMSprop", "adam": "Adam", "adamw": "AdamW"}
    _VARIANTS = (("torch-forloop", dict(foreach=False)), ("torch-foreach", dict(foreach=True)),
                 ("torch-fused", dict(fused=True)))

    @staticmethod
    def available() -> bool:
        try:
            import torch  # noqa: F401
        except ImportError:
            return False
        return True

    def update(self, work: UpdateWork) -> Impls:
        import torch

        impls: Impls = {}
        for variant, flags in self._VARIANTS:
            params = []
            for p, g in zip(work.params, work.grads):
                param = torch.nn.Parameter(torch.from_numpy(p.copy()))
                param.grad = torch.from_numpy(g)
                params.append(param)
            try:
                opt = getattr(torch.optim, self._CLASSES[work.optimizer])(params, **work.hyper, **flags)
                opt.step()  # creates the state; raises here when this variant is unsupported
            except (RuntimeError, TypeError, ValueError, NotImplementedError):
                continue
            impls[variant] = opt.step
        return impls

    def loss(self, work: LossWork) -> Impls:
        import torch
        import torch.nn.functional as F

        if work.op == "softmax":
            x = torch.from_numpy(work.logits)
            return {"torch": lambda: torch.softmax(x, dim=-1)}
        t_logits = torch.from_numpy(work.logits.copy()).requires_grad_()  # a leaf: backward stops here
        t_labels = torch.from_numpy(work.labels)

        def forward_backward():
            t_logits.grad = None
            F.cross_entropy(t_logits, t_labels).backward()

        return {"torch": forward_backward}


# Every backend, in table order; the first is the baseline of the "x fastopt" ratios.
# The CUDA backend ("fastopt-cuda") is added here and only here: a class with the same update() and
# loss() methods that copies the workload's arrays to the device once and returns callables that run
# one call and synchronize the device before returning (so that the host-side timer is correct);
# torch's CUDA variants would join it as a further class (tensors on "cuda").
BACKENDS = (FastoptCPU(), NumpyReference(), TorchCPU())


def select_backends(numpy: bool = True, torch: bool = True, names: Optional[Sequence[str]] = None):
    """The backends to run: all of BACKENDS less those switched off or not importable."""
    chosen = []
    for backend in BACKENDS:
        if names is not None and backend.name not in names:
            continue
        if backend.name == "numpy" and not numpy:
            continue
        if backend.name == "torch" and (not torch or not TorchCPU.available()):
            continue
        chosen.append(backend)
    return chosen
