"""Timing helpers shared by ``python -m fastopt`` and the scripts in bench/.

Every implementation of an update is timed in interleaved rounds (A, B, C, A, B, C, ...) so that
drift of the machine (frequency, other load) hits all of them alike; the figure reported is the
median over rounds. Effective bandwidth counts the bytes an ideal fused pass must move.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional

import numpy as np

import fastopt
from fastopt import reference

# Bytes moved per element by one fused update, in units of the element size:
# arrays read + arrays written (params, grads and state).
TRAFFIC = {
    "sgd": 5,      # momentum: read p, g, buf; write p, buf
    "adagrad": 5,  # read p, g, sum; write p, sum
    "rmsprop": 5,  # read p, g, square_avg; write p, square_avg
    "adam": 7,     # read p, g, m, v; write p, m, v
    "adamw": 7,
}
# State arrays each update takes in the benchmark's configuration (SGD with momentum, no amsgrad).
STATE_ARRAYS = {"sgd": 1, "adagrad": 1, "rmsprop": 1, "adam": 2, "adamw": 2}


def interleaved_medians(fns: Dict[str, Callable[[], object]], rounds: int, calls: int = 1,
                        progress: Optional[Callable[[], None]] = None) -> Dict[str, float]:
    """Median seconds per call of each function, over `rounds` interleaved rounds of `calls` calls."""
    samples: Dict[str, List[float]] = {name: [] for name in fns}
    names = list(fns)
    for fn in fns.values():  # warm-up: first-touch page faults, lazy initialisation
        fn()
    for r in range(rounds):
        order = names[r % len(names):] + names[:r % len(names)]  # rotate who goes first
        for name in order:
            fn = fns[name]
            start = time.perf_counter()
            for _ in range(calls):
                fn()
            samples[name].append((time.perf_counter() - start) / calls)
        if progress is not None:
            progress()
    return {name: statistics.median(s) for name, s in samples.items()}


@dataclass
class UpdateBench:
    """One optimizer at one size: the callables of every implementation to compare."""

    optimizer: str
    n: int
    dtype: np.dtype
    impls: Dict[str, Callable[[], object]]

    @property
    def bytes_moved(self) -> int:
        return TRAFFIC[self.optimizer] * self.n * np.dtype(self.dtype).itemsize


def _hyper(optimizer: str) -> dict:
    return {
        "sgd": dict(lr=1e-3, momentum=0.9),
        "adagrad": dict(lr=1e-2),
        "rmsprop": dict(lr=1e-2),
        "adam": dict(lr=1e-3),
        "adamw": dict(lr=1e-3, weight_decay=1e-2),
    }[optimizer]


def make_update_bench(optimizer: str, n: int, dtype=np.float32, with_torch: bool = True) -> UpdateBench:
    """fastopt, the NumPy reference and (when importable) torch's for-loop, foreach and fused
    implementations of one update on n elements."""
    rng = np.random.default_rng(0)
    p = rng.standard_normal(n).astype(dtype)
    g = (rng.standard_normal(n) * 1e-2).astype(dtype)
    states = [np.zeros(n, dtype) for _ in range(STATE_ARRAYS[optimizer])]
    hyper = _hyper(optimizer)
    step = {} if optimizer == "rmsprop" else {"step": 1 if optimizer == "sgd" else 10}
    kernel = getattr(fastopt, optimizer + "_")
    ref = getattr(reference, optimizer)

    impls: Dict[str, Callable[[], object]] = {
        "fastopt": lambda: kernel(p, g, *states, **hyper, **step),
        "numpy": lambda: ref(p, g, *states, **hyper, **step),
    }
    if with_torch:
        impls.update(_torch_impls(optimizer, p, g, hyper))
    return UpdateBench(optimizer, n, np.dtype(dtype), impls)


def _torch_impls(optimizer: str, p: np.ndarray, g: np.ndarray, hyper: dict) -> Dict[str, Callable]:
    try:
        import torch
    except ImportError:
        return {}
    name = {"sgd": "SGD", "adagrad": "Adagrad", "rmsprop": "RMSprop", "adam": "Adam", "adamw": "AdamW"}
    impls = {}
    for variant, flags in (("torch-forloop", dict(foreach=False)), ("torch-foreach", dict(foreach=True)),
                           ("torch-fused", dict(fused=True))):
        param = torch.nn.Parameter(torch.from_numpy(p.copy()))
        param.grad = torch.from_numpy(g.copy())
        try:
            opt = getattr(torch.optim, name[optimizer])([param], **hyper, **flags)
            opt.step()  # creates the state; also raises here when a variant is unsupported
        except (RuntimeError, TypeError, ValueError):
            continue
        impls[variant] = opt.step
    return impls


def bandwidth_probe(n: int, dtype=np.float32) -> Callable[[], object]:
    """NumPy's in-place a += b: reads two arrays and writes one (3 element-sizes per element)."""
    a = np.ones(n, dtype)
    b = np.ones(n, dtype)
    return lambda: np.add(a, b, out=a)
