"""The implementations under comparison: one class per backend, listed once in BACKENDS.

A backend turns a workload (workloads.py) into named zero-argument callables, each running one call
(one optimizer update, one loss forward+backward) on its own copy of the data. It returns an empty
dict for work it does not do (work on another device included), and leaves out variants its library
refuses (torch has no fused RMSprop on some versions). Timing, tables, JSON and plots only ever see the
names and callables. The CUDA backends queue work on torch's current stream and return without waiting
for it: their cases synchronise the device around each timed batch of calls (cases.py, timing.py).
"""

from __future__ import annotations

from typing import Callable, Dict, Optional, Sequence

import numpy as np

import fastopt
import fastopt.cuda
from fastopt import reference, references
from fastopt.bench.workloads import RULE_SPECS, LinearLossWork, LossWork, UpdateWork

Impls = Dict[str, Callable[[], object]]


def _step_kwargs(work: UpdateWork) -> dict:
    return {} if work.step is None else {"step": work.step}


class FastoptCPU:
    """fastopt's C++ kernels on NumPy arrays: one native call per update, in place."""

    name = "fastopt"

    def update(self, work: UpdateWork) -> Impls:
        if work.device != "cpu":
            return {}
        kernel = getattr(fastopt, work.optimizer + "_")
        params = [p.copy() for p in work.params]
        states = [[np.full_like(p, fill) for p in params] for fill in work.state_fills]
        if work.single:  # one array, not a list of one: the cheapest call from Python
            args = (params[0], work.grads[0], *(s[0] for s in states))
        else:
            args = (params, work.grads, *states)
        kwargs = {**work.hyper, **_step_kwargs(work)}
        return {"fastopt": lambda: kernel(*args, **kwargs)}

    def loss(self, work: LossWork) -> Impls:
        if work.device != "cpu":
            return {}
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

    def linear_loss(self, work: LinearLossWork, preallocated: bool = True) -> Impls:
        """fastopt.linear_cross_entropy on NumPy arrays, writing into gradient buffers made once (as a
        training loop would; preallocated=False: new ones per call, for the memory count)."""
        h, w, y = work.hidden, work.weight, work.labels
        if not preallocated:
            return {"fastopt": lambda: fastopt.linear_cross_entropy(h, w, y)}
        dh, dw = np.empty_like(h), np.empty_like(w)
        return {"fastopt": lambda: fastopt.linear_cross_entropy(h, w, y, out_dhidden=dh, out_dweight=dw)}


class NumpyReference:
    """fastopt.reference: plain NumPy that returns new arrays (allocates), as a NumPy loop would."""

    name = "numpy"

    def update(self, work: UpdateWork) -> Impls:
        if work.device != "cpu":
            return {}
        if work.optimizer in RULE_SPECS:
            return self._rule_update(work)
        ref = getattr(reference, work.optimizer)
        params = [p.copy() for p in work.params]
        states = [[np.full_like(p, fill) for p in params] for fill in work.state_fills]
        kwargs = {**work.hyper, **_step_kwargs(work)}
        per_array = [(p, g, *(s[i] for s in states)) for i, (p, g) in enumerate(zip(params, work.grads))]
        if work.single:
            args = per_array[0]
            return {"numpy": lambda: ref(*args, **kwargs)}
        return {"numpy": lambda: [ref(*a, **kwargs) for a in per_array]}

    @staticmethod
    def _rule_update(work: UpdateWork) -> Impls:
        """fastopt.references' <name>_step over the list, in place (those references update lists of
        arrays and torch-style state dicts, made by <name>_init_state)."""
        step_fn = getattr(references, f"{work.optimizer}_step")
        init = getattr(references, f"{work.optimizer}_init_state")
        kwargs = work.hyper
        params = [p.copy() for p in work.params]
        states = [init(p, **kwargs) for p in params]
        step = work.step if work.step is not None else 1
        return {"numpy": lambda: step_fn(params, work.grads, states, step=step, **kwargs)}

    def loss(self, work: LossWork) -> Impls:
        if work.device != "cpu":
            return {}
        logits, labels = work.logits, work.labels
        if work.op == "softmax":
            return {"numpy": lambda: reference.softmax(logits)}
        return {"numpy": lambda: reference.softmax_cross_entropy(logits, labels)}


class TorchCPU:
    """torch on CPU tensors: torch.optim's for-loop, foreach and fused implementations,
    F.cross_entropy + backward and torch.softmax. Everything torch writes is its own copy; the
    arrays it only reads (gradients, softmax input) are shared with the NumPy workload."""

    name = "torch"
    device = "cpu"
    _CLASSES = {"sgd": "SGD", "adagrad": "Adagrad", "rmsprop": "RMSprop", "adam": "Adam", "adamw": "AdamW",
                # the rules torch.optim has (Lion and LAMB have no torch class: no torch rows)
                **{name: spec.torch_name for name, spec in RULE_SPECS.items() if spec.torch_name}}
    _VARIANTS = (("torch-forloop", dict(foreach=False)), ("torch-foreach", dict(foreach=True)),
                 ("torch-fused", dict(fused=True)))

    @staticmethod
    def available() -> bool:
        try:
            import torch  # noqa: F401
        except ImportError:
            return False
        return True

    @staticmethod
    def _tensor(a, copy: bool):
        """A workload array as a torch tensor: a copy (written by torch) or the array's own memory."""
        import torch

        if isinstance(a, torch.Tensor):
            return a.clone() if copy else a
        return torch.from_numpy(a.copy() if copy else a)

    def update(self, work: UpdateWork) -> Impls:
        import torch

        if work.device != self.device or work.optimizer not in self._CLASSES:
            return {}
        impls: Impls = {}
        for variant, flags in self._VARIANTS:
            params = []
            for p, g in zip(work.params, work.grads):
                param = torch.nn.Parameter(self._tensor(p, copy=True))
                param.grad = self._tensor(g, copy=False)
                params.append(param)
            try:
                opt = getattr(torch.optim, self._CLASSES[work.optimizer])(params, **work.torch_hyper, **flags)
                opt.step()  # creates the state; raises here when this variant is unsupported
            except (RuntimeError, TypeError, ValueError, NotImplementedError):
                continue
            impls[variant] = opt.step
        return impls

    def loss(self, work: LossWork) -> Impls:
        import torch
        import torch.nn.functional as F

        if work.device != "cpu":
            return {}
        if work.op == "softmax":
            x = torch.from_numpy(work.logits)
            return {"torch": lambda: torch.softmax(x, dim=-1)}
        t_logits = torch.from_numpy(work.logits.copy()).requires_grad_()  # a leaf: backward stops here
        t_labels = torch.from_numpy(work.labels)

        def forward_backward():
            t_logits.grad = None
            F.cross_entropy(t_logits, t_labels).backward()

        return {"torch": forward_backward}

    def linear_loss(self, work: LinearLossWork, preallocated: bool = True) -> Impls:
        """Forward + backward through autograd, gradients of hidden and weight (released after each call):
        fastopt.torch.linear_cross_entropy, torch's F.linear_cross_entropy (reference path, and chunked with
        its default options and with chunking_method="aspect_ratio", its bigger chunks), F.linear +
        F.cross_entropy."""
        import torch
        import torch.nn.functional as F

        import fastopt.torch as ft

        h = torch.from_numpy(work.hidden).requires_grad_()
        w = torch.from_numpy(work.weight).requires_grad_()
        y = torch.from_numpy(work.labels)

        def run(loss_fn):
            def forward_backward():
                h.grad = w.grad = None
                loss_fn().backward()
            return forward_backward

        impls = {"fastopt.torch": run(lambda: ft.linear_cross_entropy(h, w, y)),
                 "torch linear+ce": run(lambda: F.cross_entropy(F.linear(h, w), y))}
        if hasattr(F, "linear_cross_entropy"):
            impls["torch lce"] = run(lambda: F.linear_cross_entropy(h, w, y))
            options = getattr(torch.nn, "LinearCrossEntropyOptions", None)
            if options is not None:
                auto, ratio = options(), options(chunking_method="aspect_ratio")
                impls["torch lce chunked"] = run(lambda: F.linear_cross_entropy(h, w, y, options=auto))
                impls["torch lce chunk:ratio"] = run(lambda: F.linear_cross_entropy(h, w, y, options=ratio))
        return impls


def cuda_unavailable() -> Optional[str]:
    """Why the CUDA backends cannot run here (None when they can): they need fastopt's CUDA backend with a
    usable device and torch with CUDA (the CUDA workloads are torch tensors)."""
    if not fastopt.cuda.is_compiled():
        return "fastopt was built without CUDA"
    if fastopt.cuda.device_count() == 0:
        return "fastopt's CUDA backend finds no usable device"
    if not fastopt.cuda.runs_kernels(0):
        return f"this build has no kernels for {fastopt.cuda.device_name(0)} (built for {', '.join(fastopt.cuda.architectures())})"
    if not TorchCPU.available():
        return "torch is not installed (the CUDA workloads are torch tensors)"
    import torch

    if not torch.cuda.is_available():
        return "torch has no CUDA"
    return None


class FastoptCUDA:
    """fastopt's CUDA kernels on torch CUDA tensors (taken through DLPack, updated in place), queued on
    torch's current stream: one call per update over the whole list, softmax_cross_entropy allocating
    its gradient (a torch tensor) as F.cross_entropy's backward does."""

    name = "fastopt-cuda"

    def update(self, work: UpdateWork) -> Impls:
        import torch

        if work.device != "cuda":
            return {}
        kernel = getattr(fastopt, work.optimizer + "_")
        params = [p.clone() for p in work.params]
        states = [[torch.full_like(p, fill) for p in params] for fill in work.state_fills]
        args = (params, work.grads, *states)
        kwargs = {**work.hyper, **_step_kwargs(work)}
        return {"fastopt-cuda": lambda: kernel(*args, **kwargs)}

    def loss(self, work: LossWork) -> Impls:
        if work.device != "cuda" or work.op != "cross_entropy":
            return {}
        logits, labels = work.logits, work.labels
        return {"fastopt-cuda": lambda: fastopt.softmax_cross_entropy(logits, labels)}


class TorchCUDA(TorchCPU):
    """torch on the same GPU: torch.optim's fused and foreach implementations, F.cross_entropy + backward
    on a leaf sharing the workload's logits (its gradient released after each call, as fastopt's is)."""

    name = "torch-cuda"
    device = "cuda"
    _VARIANTS = (("torch-cuda-fused", dict(fused=True)), ("torch-cuda-foreach", dict(foreach=True)))

    def loss(self, work: LossWork) -> Impls:
        import torch.nn.functional as F

        if work.device != "cuda" or work.op != "cross_entropy":
            return {}
        t_logits = work.logits.detach().requires_grad_()  # a leaf over the same memory, only read
        labels = work.labels

        def forward_backward():
            F.cross_entropy(t_logits, labels).backward()
            t_logits.grad = None

        return {"torch-cuda": forward_backward}


class LigerCUDA:
    """Liger-Kernel's cross-entropy (``liger_kernel.transformers.LigerCrossEntropyLoss``, Triton kernels) on the
    same GPU, where the package is installed (tools/gpu-check installs its wheel when one is carried). Liger
    writes the gradient into its input to save memory, so it gets its own copy of the logits (a leaf,
    allocated when the case is built, outside the peak-memory count), which every call overwrites with its
    gradient: later calls run on those values, which changes nothing in the work a row does."""

    name = "liger"

    @staticmethod
    def available() -> bool:
        import importlib.util

        return importlib.util.find_spec("liger_kernel") is not None

    def update(self, work: UpdateWork) -> Impls:
        return {}

    def loss(self, work: LossWork) -> Impls:
        if work.device != "cuda" or work.op != "cross_entropy":
            return {}
        try:
            from liger_kernel.transformers import LigerCrossEntropyLoss
        except ImportError:
            return {}
        loss_fn = LigerCrossEntropyLoss()
        t_logits = work.logits.detach().clone().requires_grad_()
        labels = work.labels

        def forward_backward():
            loss_fn(t_logits, labels).backward()
            t_logits.grad = None

        return {"liger": forward_backward}


# Every backend, in table order; the first of a case's implementations is the baseline of its "x fastopt"
# ratios (fastopt's on the CPU, fastopt-cuda's on the GPU).
BACKENDS = (FastoptCPU(), NumpyReference(), TorchCPU(), FastoptCUDA(), TorchCUDA(), LigerCUDA())


def select_backends(numpy: bool = True, torch: bool = True, names: Optional[Sequence[str]] = None,
                    cuda: bool = True):
    """The backends to run: all of BACKENDS less those switched off or not importable (the CUDA ones
    also need cuda_unavailable() to be None)."""
    gpu = cuda and cuda_unavailable() is None
    chosen = []
    for backend in BACKENDS:
        if names is not None and backend.name not in names:
            continue
        if backend.name == "numpy" and not numpy:
            continue
        if backend.name in ("torch", "torch-cuda") and (not torch or not TorchCPU.available()):
            continue
        if backend.name in ("fastopt-cuda", "torch-cuda", "liger") and not gpu:
            continue
        if backend.name == "liger" and not (torch and LigerCUDA.available()):
            continue
        chosen.append(backend)
    return chosen
