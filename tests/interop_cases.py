"""Shared by the array-intake tests (test_interop_cpu.py, test_cuda_*.py): one optimizer call described as
named argument lists, made once as NumPy arrays and then moved to any framework, so that the same update
can be run on NumPy (the CPU witness) and on torch / CuPy / DLPack producers and compared bit for bit.

The optimizers, their flag combinations and hyperparameter draws come from kernel_cases.py."""

from __future__ import annotations

from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

from kernel_cases import CASES, KernelCase, draw_hyper, kernel_kwargs

# Every (optimizer, flag combination) of kernel_cases, as pytest parameters.
CONFIGS = [(case, config) for case in CASES for config in case.configs]
CONFIG_IDS = [f"{case.name}-{config}" for case, config in CONFIGS]
# The combination with the most flags on, one per optimizer.
FULL = [(case, list(case.configs)[-1]) for case in CASES]
FULL_IDS = [case.name for case, _ in FULL]
# The same for the CUDA backend (optimizers it has), and for CUDA graph capture (device lr and step).
CUDA_CONFIGS = [(case, config) for case, config in CONFIGS if case.cuda]
CUDA_CONFIG_IDS = [f"{case.name}-{config}" for case, config in CUDA_CONFIGS]
CUDA_FULL = [(case, config) for case, config in FULL if case.cuda]
CUDA_FULL_IDS = [case.name for case, _ in CUDA_FULL]
CAPTURE_FULL = [(case, config) for case, config in CUDA_FULL if case.device_step]
CAPTURE_FULL_IDS = [case.name for case, _ in CAPTURE_FULL]

Args = Dict[str, List[object]]  # argument name -> one array per parameter tensor


def hyper_of(case: KernelCase, config: str, seed: int) -> dict:
    """A random draw of the configuration's hyperparameters (initial_accumulator_value included)."""
    return draw_hyper(case, config, np.random.default_rng(seed))


def array_names(case: KernelCase, hyper: dict) -> List[str]:
    """params, grads and the state arguments the configuration uses, in positional order."""
    return ["params", "grads"] + case.used_states(hyper)


def make_numpy_args(case: KernelCase, hyper: dict, sizes: Sequence[int], dtype, seed: int) -> Args:
    """Random params and grads, and every state at its starting value, one array per size (run more
    than one step to get state a kernel must read)."""
    rng = np.random.default_rng(seed)
    args: Args = {
        "params": [rng.standard_normal(n).astype(dtype) for n in sizes],
        "grads": [rng.standard_normal(n).astype(dtype) for n in sizes],
    }
    for state in case.used_states(hyper):
        args[state] = [np.full(n, case.initial_state(state, hyper), dtype=dtype) for n in sizes]
    return args


def new_grads(sizes: Sequence[int], dtype, seed: int) -> List[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(n).astype(dtype) for n in sizes]


def call_case(case: KernelCase, hyper: dict, args: Args, step: Optional[object] = None, **extra) -> object:
    """One call of the case's kernel with `args` (lists in any framework); returns found_inf."""
    states = [args.get(s) for s in case.states]
    kwargs = kernel_kwargs(case, hyper)
    if case.takes_step:
        kwargs["step"] = 1 if step is None else step
    kwargs.update(extra)
    return case.kernel(args["params"], args["grads"], *states, **kwargs)


def convert(args: Args, fn: Callable[[str, int, np.ndarray], object]) -> Args:
    """The same arguments, each array passed through fn(name, index, array)."""
    return {name: [fn(name, i, a) for i, a in enumerate(arrays)] for name, arrays in args.items()}


def copy_args(args: Args) -> Args:
    return {name: [a.copy() for a in arrays] for name, arrays in args.items()}


def run_reference(case: KernelCase, hyper: dict, args: Args, grads_per_step: Sequence[Sequence[np.ndarray]]) -> Args:
    """fastopt.reference in float64 from `args` (NumPy), one step per entry of grads_per_step; returns
    the final params and states."""
    used = case.used_states(hyper)
    kwargs = kernel_kwargs(case, hyper)
    ref = {name: [a.astype(np.float64) for a in arrays] for name, arrays in args.items() if name != "grads"}
    for t, grads in enumerate(grads_per_step, start=1):
        step = {"step": t} if case.takes_step else {}
        for i, g in enumerate(grads):
            states = [ref[s][i] if s in used else None for s in case.states]
            out = case.reference(ref["params"][i], g.astype(np.float64), *states, **kwargs, **step)
            ref["params"][i] = out[0]
            for s, new in zip(case.states, out[1:]):
                if s in used:
                    ref[s][i] = new
    return ref
