"""Every fused kernel against the NumPy reference: 50 steps, random hyperparameters, fresh random
gradients each step, float32 and float64, sizes that hit SIMD tails and thread splits.

float64 kernels must agree with the float64 reference to a few ulps per step. float32 kernels are
compared with the reference run on the same float32 arrays, in float32 arithmetic (NumPy keeps float32
with Python-float hyperparameters): against a float64 run instead, an element whose update is
ill-conditioned (a gradient near eps, or nearly cancelled by weight decay) lands a fraction of a step
away however correctly it is rounded, and 50 steps over 270,000 elements meet one now and then.
tests/references/test_reference_vs_torch.py and test_optim_vs_torch.py hold the float64 comparisons with torch."""

from __future__ import annotations

import numpy as np
import pytest

from kernel_cases import CASES, draw_hyper, kernel_kwargs

STEPS = 50
SMALL_SIZES = {"n0": [0], "n1": [1], "n7": [7], "mixed": [5, 0, 1, 70000, 3, 200001, 17]}
BIG_SIZES = {"n1000003": [1000003]}
# atol is scaled by the largest magnitude in the array: near zero, float32 rounding of the larger
# terms that cancelled there dominates (SGD with momentum 0.99 grows parameters to ~20).
TOLERANCE = {np.float64: dict(rtol=1e-10, atol=1e-12), np.float32: dict(rtol=2e-5, atol=2e-6)}


def tolerance(dtype, ref):
    tol = dict(TOLERANCE[dtype])
    if ref.size:
        tol["atol"] *= max(1.0, float(np.max(np.abs(ref))))
    return tol


def run_kernel_and_reference(case, config, sizes, dtype, seed):
    """Runs STEPS updates through the kernel (as one list call per step) and the reference
    (per array, in the kernel's precision); returns both final parameter and state lists."""
    rng = np.random.default_rng(seed)
    hyper = draw_hyper(case, config, rng)
    kwargs = kernel_kwargs(case, hyper)
    used = case.used_states(hyper)

    params = [rng.standard_normal(n).astype(dtype) for n in sizes]
    states = {s: [np.full(n, case.initial_state(s, hyper), dtype=dtype) for n in sizes] for s in used}
    # (params and every state: the run must have changed something, see assert_matches)
    initial = [p.copy() for p in params] + [a.copy() for arrays in states.values() for a in arrays]
    ref_dtype = np.float64 if dtype == np.float64 else np.float32  # (see the module's docstring)
    ref_params = [p.astype(ref_dtype) for p in params]
    ref_states = {s: [a.astype(ref_dtype) for a in arrays] for s, arrays in states.items()}

    for t in range(1, STEPS + 1):
        grads = [rng.standard_normal(n).astype(dtype) for n in sizes]
        step = {"step": t} if case.takes_step else {}
        case.kernel(params, grads, *[states.get(s) for s in case.states], **kwargs, **step)
        for i in range(len(sizes)):
            ref_args = [ref_states[s][i] if s in used else None for s in case.states]
            out = case.reference(ref_params[i], grads[i].astype(ref_dtype), *ref_args, **kwargs, **step)
            ref_params[i] = out[0]
            for s, new in zip(case.states, out[1:]):
                if s in used:
                    ref_states[s][i] = new
    return initial, params, states, ref_params, ref_states


def assert_matches(case, config, sizes, dtype, seed):
    initial, params, states, ref_params, ref_states = run_kernel_and_reference(case, config, sizes, dtype, seed)
    for i, (p, ref) in enumerate(zip(params, ref_params)):
        assert p.dtype == dtype
        np.testing.assert_allclose(p, ref, err_msg=f"{case.name}/{config} params[{i}]",
                                   **tolerance(dtype, ref))
    for s in states:
        for i, (a, ref) in enumerate(zip(states[s], ref_states[s])):
            np.testing.assert_allclose(a, ref, err_msg=f"{case.name}/{config} {s}[{i}]",
                                       **tolerance(dtype, ref))
    # The run really moved something, so a degenerate draw cannot pass silently. (The state too: Lion's
    # parameter moves by exactly +-lr a step, and one element can come back to its start bit for bit.)
    if sum(sizes) > 0:
        current = params + [a for arrays in states.values() for a in arrays]
        assert any(np.any(x != x0) for x, x0 in zip(current, initial))


SMALL = [(case, config, size_name)
         for case in CASES for config in case.configs for size_name in SMALL_SIZES]


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("case,config,size_name", SMALL,
                         ids=[f"{c.name}-{cfg}-{s}" for c, cfg, s in SMALL])
def test_kernel_matches_reference(case, config, size_name, dtype):
    seed = np.random.SeedSequence().entropy % (2**31)  # fresh data every run; printed on failure
    print(f"seed={seed}")
    assert_matches(case, config, SMALL_SIZES[size_name], dtype, seed)


# The big size goes through the threaded chunk path; one call per optimizer with every flag on.
BIG = [(case, list(case.configs)[-1]) for case in CASES]


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("case,config", BIG, ids=[f"{c.name}-{cfg}" for c, cfg in BIG])
def test_kernel_matches_reference_large(case, config, dtype):
    seed = np.random.SeedSequence().entropy % (2**31)
    print(f"seed={seed}")
    assert_matches(case, config, BIG_SIZES["n1000003"], dtype, seed)
