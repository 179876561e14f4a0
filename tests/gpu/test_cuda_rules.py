"""The optimizers described as rules (fastopt/rules/: Lion, Adamax, Adadelta, RAdam, NAdam, Rprop, ASGD, LAMB)
on CUDA, beyond the table-driven tests that run every rule's cases (kernel_cases.py's entry, or
cuda_rule_cases.py's stand-in): test_cuda_optim.py (bits of the CPU, half params, grad_scale,
skip_nonfinite) and test_cuda_capture.py (device lr and step, a device step refused for NAdam, RAdam, ASGD).

- ten steps bit for bit against the CPU kernel (RAdam's rectified branch starts at step 6; NAdam's
  mu_product and ASGD's eta and mu move with the step), each rule's first and last configuration, and
  LAMB clipped by its global gradient norm (its per-tensor and global sums keep the CPU's order);
- on the CPU (no GPU needed): every registered rule has CUDA cases, and the stand-in cases are calls the
  kernels take.

The CUDA test is skipped without a GPU and a CUDA build (cuda_support.py).
"""

from __future__ import annotations

import numpy as np
import pytest

import fastopt
from cuda_rule_cases import FALLBACK, FALLBACK_BY_NAME, RULE_NAMES, rule_case
from cuda_support import CUDA_MARKS, args_to_cuda, assert_bits_equal, to_cuda, to_numpy, torch_with_cuda
from interop_cases import array_names, call_case, copy_args, hyper_of, make_numpy_args, new_grads
from kernel_cases import CASES_BY_NAME

SIZES = [0, 1, 3, 1023, 65537, 4]


@pytest.fixture(scope="module")
def torch():
    return torch_with_cuda()


# ------------------------------------------------------------------------------ on the CPU


@pytest.mark.parametrize("name", RULE_NAMES)
def test_every_rule_has_cuda_cases(name):
    assert name in CASES_BY_NAME or name in FALLBACK_BY_NAME, (
        f"the registered rule {name!r} has no entry in kernel_cases.py and no stand-in in cuda_rule_cases.py: "
        "the CUDA tests do not cover it")
    assert rule_case(name).kernel is getattr(fastopt, f"{name}_")


@pytest.mark.parametrize("case,config", [(c, k) for c in FALLBACK for k in c.configs],
                         ids=[f"{c.name}-{k}" for c in FALLBACK for k in c.configs])
def test_stand_in_cases_are_valid_calls(case, config):
    # The CUDA tests draw from these on a GPU; here they must at least be calls the CPU kernel takes and
    # that move the parameters (so that a GPU run does not fail on the table itself).
    hyper = hyper_of(case, config, seed=1)
    base = make_numpy_args(case, hyper, [5, 1000], np.float64, seed=2)
    args = copy_args(base)
    for t in range(1, 4):
        args["grads"] = new_grads([5, 1000], np.float64, seed=10 + t)
        assert call_case(case, hyper, args, step=t) is False
    assert all(np.any(p != p0) for p, p0 in zip(args["params"], base["params"]))


# ------------------------------------------------------------------------------ on CUDA


def offsets_for(names, count):
    return {name: [(i + k) % 2 for i in range(count)] for k, name in enumerate(names)}


def ten_steps_on_both(torch, case, hyper, dtype, seed, **extra):
    """Ten steps of the case on the CPU and on the GPU (operands at alternating offsets), the arrays compared
    bit for bit after each; extra: more keyword arguments of every call (LAMB's max_grad_norm)."""
    names = array_names(case, hyper)
    base = make_numpy_args(case, hyper, SIZES, dtype, seed=seed)
    offsets = offsets_for(names, len(SIZES))
    cpu, gpu = copy_args(base), args_to_cuda(torch, base, offsets)
    for t in range(1, 11):
        grads = new_grads(SIZES, dtype, seed=seed + 9 + t)
        cpu["grads"] = grads
        gpu["grads"] = [to_cuda(torch, g, off) for g, off in zip(grads, offsets["grads"])]
        assert call_case(case, hyper, cpu, step=t, **extra) is False
        assert call_case(case, hyper, gpu, step=t, **extra) is False
        torch.cuda.synchronize()
        assert_bits_equal(torch, gpu, cpu, [n for n in names if n != "grads"], f"step {t}: ")
    assert any(np.any(to_numpy(p) != p0) for p, p0 in zip(gpu["params"], base["params"]))


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("name", RULE_NAMES)
@pytest.mark.parametrize("which", ["first", "last"])
@CUDA_MARKS[0]
@CUDA_MARKS[1]
def test_ten_steps_match_the_cpu_bit_for_bit(torch, name, which, dtype):
    case = rule_case(name)
    config = list(case.configs)[0 if which == "first" else -1]
    ten_steps_on_both(torch, case, hyper_of(case, config, seed=700), dtype, seed=701)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@CUDA_MARKS[0]
@CUDA_MARKS[1]
def test_lamb_clipped_by_the_global_norm_matches_the_cpu_bit_for_bit(torch, dtype):
    # The clip ratio is one number for the whole list (a pre-pass over every gradient); the standard-normal
    # gradients' norm (about 256 over SIZES) is far above 0.5, so every step divides by it.
    case = rule_case("lamb")
    ten_steps_on_both(torch, case, hyper_of(case, "plain", seed=720), dtype, seed=721, max_grad_norm=0.5)
