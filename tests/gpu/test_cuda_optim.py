"""The optimizer updates on CUDA tensors (PyTorch), against fastopt on the CPU and fastopt.reference.

float32/float64 updates are compiled with -fmad=false and share the per-element functions of the CPU
kernels, so every optimizer and flag combination must give the CPU's bits: on lists with empty, tiny
and odd-sized tensors, views that start one element into a buffer (no vector loads), and 200-tensor
lists. float16/bfloat16 params (float32 state) must follow the float32 computation on the same upcast
inputs, to one rounding of the half type. torch.optim's fused CUDA Adam/AdamW/SGD agree within float32
rounding. grad_scale gives the CPU's bits; skip_nonfinite reports found_inf and writes nothing on a
poisoned step, also for half types. Bad calls (arrays on two devices, half state, non-contiguous or
grad-requiring tensors) are refused before anything is written.

Every optimizer of kernel_cases.py runs through the table-driven tests, and with it every optimizer described
as a rule (fastopt/rules/): kernel_cases' entry by name, or cuda_rule_cases.py's stand-in (compared with the
CPU kernel only) while kernel_cases has none; test_cuda_rules.py adds what is particular to the rules.

Skipped without a GPU and a CUDA build of fastopt, or without torch with CUDA (cuda_support.py).
"""

from __future__ import annotations

import re

import numpy as np
import pytest

import fastopt
import cuda_rule_cases as rule_cases
from cuda_support import CUDA_MARKS, args_to_cuda, assert_bits_equal, clone_all, to_cuda, to_numpy, torch_with_cuda
from interop_cases import CUDA_CONFIG_IDS as CONFIG_IDS, CUDA_CONFIGS as CONFIGS, CUDA_FULL as FULL
from interop_cases import CUDA_FULL_IDS as FULL_IDS, array_names, call_case, copy_args, hyper_of
from interop_cases import make_numpy_args, new_grads, run_reference
from optim_cases import CASE_IDS, OPTIM_CASES

pytestmark = CUDA_MARKS

# kernel_cases' optimizers, and the rules (fastopt/rules/) it has no entry for yet (cuda_rule_cases.py):
# every registered optimizer goes through the table-driven tests below.
ALL_CONFIGS = CONFIGS + rule_cases.CONFIGS
ALL_CONFIG_IDS = CONFIG_IDS + rule_cases.CONFIG_IDS
ALL_FULL = FULL + rule_cases.FULL
ALL_FULL_IDS = FULL_IDS + rule_cases.FULL_IDS

SIZES = [0, 1, 3, 1023, 65537, 4]
STEPS = 3
DTYPES = [np.float32, np.float64]
DTYPE_IDS = ["f32", "f64"]
# fastopt.reference runs in float64: float32 results differ by float32 rounding only (as in
# test_kernels_vs_reference.py); atol is scaled by the largest magnitude of the array.
REFERENCE_TOLERANCE = {np.float64: dict(rtol=1e-10, atol=1e-12), np.float32: dict(rtol=2e-5, atol=2e-6)}


@pytest.fixture(scope="module")
def torch():
    return torch_with_cuda()


def alternating_offsets(names, count, shift=0):
    """Offsets 0/1 that differ between neighbouring tensors and between the arguments of one tensor,
    so that every tensor has some operand off the vector alignment and some on it."""
    return {name: [(i + k + shift) % 2 for i in range(count)] for k, name in enumerate(names)}


def run_both(torch, case, hyper, base, grads_per_step, offsets):
    """The same steps on NumPy (CPU fastopt) and on CUDA tensors; returns (cpu, gpu) arguments."""
    cpu = copy_args(base)
    gpu = args_to_cuda(torch, base, offsets)
    pointers = {name: [t.data_ptr() for t in arrays] for name, arrays in gpu.items()}
    for t, grads in enumerate(grads_per_step, start=1):
        cpu["grads"] = grads
        gpu["grads"] = [to_cuda(torch, g, off) for g, off in zip(grads, offsets["grads"])]
        assert call_case(case, hyper, cpu, step=t) is False
        assert call_case(case, hyper, gpu, step=t) is False
    torch.cuda.synchronize()
    for name, arrays in gpu.items():
        if name != "grads":
            assert [a.data_ptr() for a in arrays] == pointers[name], f"{name} moved to new memory"
    # The grads were read, not written.
    assert_bits_equal(torch, gpu, cpu, ["grads"], "grads (read only): ")
    return cpu, gpu


def assert_moved(gpu, base):
    assert any(np.any(to_numpy(p) != p0) for p, p0 in zip(gpu["params"], base["params"])), \
        "no parameter changed: the comparison would not show a missing update"


# --------------------------------------------------------------------------- float32 / float64


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("case,config", ALL_CONFIGS, ids=ALL_CONFIG_IDS)
def test_every_optimizer_matches_the_cpu_bit_for_bit(torch, case, config, dtype):
    hyper = hyper_of(case, config, seed=100)
    names = array_names(case, hyper)
    base = make_numpy_args(case, hyper, SIZES, dtype, seed=101)
    grads = [new_grads(SIZES, dtype, seed=110 + t) for t in range(STEPS)]
    cpu, gpu = run_both(torch, case, hyper, base, grads, alternating_offsets(names, len(SIZES)))
    written = [n for n in names if n != "grads"]
    assert_bits_equal(torch, gpu, cpu, written)
    assert_moved(gpu, base)

    # And the independent witness: fastopt.reference in float64 (a stand-in rule case has none: the CPU
    # kernel it matched is checked against torch.optim by the CPU tests).
    if case.reference is None:
        return
    ref = run_reference(case, hyper, base, grads)
    for name in written:
        for i, (got, want) in enumerate(zip(gpu[name], ref[name])):
            tol = dict(REFERENCE_TOLERANCE[dtype])
            if want.size:
                tol["atol"] *= max(1.0, float(np.max(np.abs(want))))
            np.testing.assert_allclose(to_numpy(got), want, err_msg=f"{name}[{i}] vs reference", **tol)


MANY_SIZES = [(0, 1, 3, 5, 17, 31, 64, 127, 1023, 2)[i % 10] for i in range(200)]
MANY_SIZES[50] = MANY_SIZES[150] = 65537


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("case,config", ALL_FULL, ids=ALL_FULL_IDS)
def test_two_hundred_tensors_with_odd_sizes_and_offsets(torch, case, config, dtype):
    hyper = hyper_of(case, config, seed=200)
    names = array_names(case, hyper)
    base = make_numpy_args(case, hyper, MANY_SIZES, dtype, seed=201)
    grads = [new_grads(MANY_SIZES, dtype, seed=210 + t) for t in range(2)]
    rng = np.random.default_rng(202)
    offsets = {name: [int(x) for x in rng.integers(0, 2, len(MANY_SIZES))] for name in names}
    cpu, gpu = run_both(torch, case, hyper, base, grads, offsets)
    assert_bits_equal(torch, gpu, cpu, [n for n in names if n != "grads"])
    assert_moved(gpu, base)


# ------------------------------------------------------------------------------ float16 / bfloat16


def half_spacing(x: np.ndarray, half: str) -> np.ndarray:
    """The distance between neighbouring values of the half type around x (subnormals included)."""
    mantissa_bits, min_exponent = (10, -14) if half == "float16" else (7, -126)
    _, e = np.frexp(np.abs(x.astype(np.float64)))  # |x| = m * 2**e, m in [0.5, 1)
    return np.ldexp(1.0, np.maximum(e - 1, min_exponent) - mantissa_bits)


@pytest.mark.parametrize("half", ["float16", "bfloat16"])
@pytest.mark.parametrize("case,config", ALL_CONFIGS, ids=ALL_CONFIG_IDS)
def test_half_params_with_float32_state_follow_the_float32_math(torch, case, config, half):
    half_dtype = getattr(torch, half)
    hyper = hyper_of(case, config, seed=300)
    names = array_names(case, hyper)
    sizes = [1, 3, 1023, 4099]
    base = make_numpy_args(case, hyper, sizes, np.float32, seed=301)
    offsets = alternating_offsets(names, len(sizes))
    gpu = args_to_cuda(torch, base, offsets, dtypes={"params": half_dtype, "grads": half_dtype})
    start = [to_numpy(p) for p in gpu["params"]]
    for t in range(1, STEPS + 1):
        grads = new_grads(sizes, np.float32, seed=310 + t)
        gpu["grads"] = [to_cuda(torch, g, off, half_dtype) for g, off in zip(grads, offsets["grads"])]
        # The float32 computation on the same inputs: the GPU's half values upcast (exactly) and its
        # float32 state, through fastopt's float32 CPU kernel.
        cpu = {name: [to_numpy(a) for a in gpu[name]] for name in names}
        call_case(case, hyper, cpu, step=t)
        assert call_case(case, hyper, gpu, step=t) is False
        torch.cuda.synchronize()
        for i, (got, want) in enumerate(zip(gpu["params"], cpu["params"])):
            assert got.dtype == half_dtype
            # One rounding to the half type (plus a float32 ulp of slack for the rounding direction).
            err = np.abs(to_numpy(got) - want)
            bound = half_spacing(want, half) + np.abs(want) * 2.0**-22
            worst = int(np.argmax(err - bound))
            assert np.all(err <= bound), (f"step {t} params[{i}][{worst}]: {to_numpy(got)[worst]} vs the float32 "
                                          f"result {want[worst]}")
        for name in names[2:]:
            for i, (got, want) in enumerate(zip(gpu[name], cpu[name])):
                assert got.dtype == torch.float32, f"{name}[{i}] must stay float32"
                np.testing.assert_allclose(to_numpy(got), want, rtol=1e-5, atol=1e-7 * max(1.0, np.abs(want).max()),
                                           err_msg=f"step {t} {name}[{i}]")
    # The params and the float32 state (where there is one: plain SGD has none) changed from their start,
    # so a kernel that did nothing would have failed here (an update below half a half-type spacing
    # would pass the comparison above unchanged).
    assert any(np.any(to_numpy(p) != p0) for p, p0 in zip(gpu["params"], start))
    for state in names[2:3]:
        assert any(np.any(to_numpy(s) != s0) for s, s0 in zip(gpu[state], base[state]))


def test_half_params_need_float32_state(torch):
    p = [to_cuda(torch, np.ones(5, np.float32), dtype=torch.float16) for _ in range(2)]
    g = [to_cuda(torch, np.ones(5, np.float32), dtype=torch.float16) for _ in range(2)]
    m = [torch.full((5,), 0.5, dtype=torch.float16, device="cuda") for _ in range(2)]
    v = [torch.full((5,), 0.5, dtype=torch.float32, device="cuda") for _ in range(2)]
    before = [t.clone() for t in p + m + v]
    with pytest.raises(TypeError, match=re.escape("exp_avgs[0] has dtype float16 but params[0] has float16; "
                                                  "its optimizer state must be float32")):
        fastopt.adam_(p, g, m, v, step=1)
    with pytest.raises(TypeError, match=re.escape("grads[1] has dtype float32 but params[1] has float16")):
        fastopt.adam_(p, [g[0], g[1].float()], v, [x.clone() for x in v], step=1)
    torch.cuda.synchronize()
    assert all(torch.equal(a, b) for a, b in zip(p + m + v, before))


# ----------------------------------------------------------------------------- torch.optim fused

FUSED_CASES = [(name, hyper) for name, hyper in OPTIM_CASES if name in ("SGD", "Adam", "AdamW")]
FUSED_IDS = [i for (name, _), i in zip(OPTIM_CASES, CASE_IDS) if name in ("SGD", "Adam", "AdamW")]


def fastopt_step(name, hyper, params, grads, state, step):
    if name == "SGD":
        momentum = hyper.get("momentum", 0.0)
        fastopt.sgd_(params, grads, state["momentum_buffer"] if momentum else None, lr=hyper["lr"],
                     momentum=momentum, dampening=hyper.get("dampening", 0.0),
                     weight_decay=hyper.get("weight_decay", 0.0), nesterov=hyper.get("nesterov", False),
                     maximize=hyper.get("maximize", False), step=step)
        return
    beta1, beta2 = hyper.get("betas", (0.9, 0.999))
    amsgrad = hyper.get("amsgrad", False)
    fn = fastopt.adam_ if name == "Adam" else fastopt.adamw_
    fn(params, grads, state["exp_avg"], state["exp_avg_sq"], state["max_exp_avg_sq"] if amsgrad else None,
       lr=hyper["lr"], beta1=beta1, beta2=beta2, eps=hyper.get("eps", 1e-8),
       weight_decay=hyper.get("weight_decay", 0.0 if name == "Adam" else 1e-2), amsgrad=amsgrad,
       maximize=hyper.get("maximize", False), step=step)


@pytest.mark.parametrize("name,hyper", FUSED_CASES, ids=FUSED_IDS)
def test_matches_torch_fused_optimizers(torch, name, hyper):
    sizes = [1, 1023, 4099]
    rng = np.random.default_rng(400)
    initial = [rng.standard_normal(n).astype(np.float32) for n in sizes]
    theirs = [torch.nn.Parameter(to_cuda(torch, p).clone()) for p in initial]
    optimizer = getattr(torch.optim, name)(theirs, fused=True, **hyper)
    ours = [to_cuda(torch, p) for p in initial]
    keys = {"SGD": ["momentum_buffer"], "Adam": ["exp_avg", "exp_avg_sq", "max_exp_avg_sq"]}[name.replace("AdamW", "Adam")]
    state = {k: [torch.zeros_like(p) for p in ours] for k in keys}
    for step in range(1, 11):
        grads = [to_cuda(torch, rng.standard_normal(n).astype(np.float32)) for n in sizes]
        for p, g in zip(theirs, grads):
            p.grad = g.clone()
        optimizer.step()
        fastopt_step(name, hyper, ours, grads, state, step)
    torch.cuda.synchronize()

    def close(got, want, what):
        want = to_numpy(want)
        np.testing.assert_allclose(to_numpy(got), want, rtol=1e-5, atol=1e-6 * max(1.0, np.abs(want).max()),
                                   err_msg=what)

    for i, (p, q) in enumerate(zip(ours, theirs)):
        close(p, q, f"params[{i}]")
        assert not np.array_equal(to_numpy(p), initial[i])
        compared = 0
        for k in keys:
            if optimizer.state[q].get(k) is not None:
                close(state[k][i], optimizer.state[q][k], f"{k}[{i}]")
                compared += 1
        assert compared or hyper.get("momentum", 0.0) == 0.0, "torch's state was not found"


# -------------------------------------------------------------------- grad_scale, skip_nonfinite


@pytest.mark.parametrize("scale", [1024.0, 3.0])
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("case,config", ALL_FULL, ids=ALL_FULL_IDS)
def test_grad_scale_matches_the_cpu(torch, case, config, dtype, scale):
    hyper = hyper_of(case, config, seed=500)
    names = array_names(case, hyper)
    base = make_numpy_args(case, hyper, SIZES, dtype, seed=501)
    grads = [[(g * dtype(scale)).astype(dtype) for g in new_grads(SIZES, dtype, seed=510 + t)] for t in range(2)]
    offsets = alternating_offsets(names, len(SIZES))
    cpu = copy_args(base)
    gpu = args_to_cuda(torch, base, offsets)
    for t, g in enumerate(grads, start=1):
        cpu["grads"] = g
        gpu["grads"] = [to_cuda(torch, a, off) for a, off in zip(g, offsets["grads"])]
        call_case(case, hyper, cpu, step=t, grad_scale=scale)
        call_case(case, hyper, gpu, step=t, grad_scale=scale)
    torch.cuda.synchronize()
    assert_bits_equal(torch, gpu, cpu, [n for n in names if n != "grads"])
    if scale == 1024.0:
        # Dividing by a power of two is exact: the same bits as the unscaled gradients.
        plain = copy_args(base)
        for t, g in enumerate(grads, start=1):
            plain["grads"] = [a / dtype(scale) for a in g]
            call_case(case, hyper, plain, step=t)
        assert_bits_equal(torch, gpu, plain, [n for n in names if n != "grads"])
    assert_moved(gpu, base)


POISON_SIZES = [3, 1023, 0, 5, 4099, 1, 17, 65537, 2, 7, 31, 9]


@pytest.mark.parametrize("poison", [np.nan, np.inf], ids=["nan", "inf"])
@pytest.mark.parametrize("dtype", ["float32", "float64", "float16", "bfloat16"])
@pytest.mark.parametrize("case,config", ALL_FULL, ids=ALL_FULL_IDS)
def test_skip_nonfinite_writes_nothing_on_a_poisoned_step(torch, case, config, dtype, poison):
    half = dtype in ("float16", "bfloat16")
    np_dtype = np.float32 if half else np.dtype(dtype).type
    torch_dtype = getattr(torch, dtype)
    hyper = hyper_of(case, config, seed=600)
    names = array_names(case, hyper)
    base = make_numpy_args(case, hyper, POISON_SIZES, np_dtype, seed=601)
    offsets = alternating_offsets(names, len(POISON_SIZES))
    arg_dtypes = {"params": torch_dtype, "grads": torch_dtype} if half else None
    gpu = args_to_cuda(torch, base, offsets, arg_dtypes)
    cpu = copy_args(base)
    steps = [(1, None), (2, (7, 40000)), (2, (4, 4098)), (2, None)]  # (step, where the poison goes)
    for k, (t, where) in enumerate(steps):
        grads = new_grads(POISON_SIZES, np_dtype, seed=610 + k)
        if where:
            grads[where[0]][where[1]] = poison
        gpu["grads"] = [to_cuda(torch, g, off, torch_dtype if half else None)
                        for g, off in zip(grads, offsets["grads"])]
        before = clone_all(gpu)
        found = call_case(case, hyper, gpu, step=t, skip_nonfinite=True)
        assert found is (where is not None), f"step {k}: found_inf"
        if where:
            assert_bits_equal(torch, gpu, before, [n for n in names if n != "grads"], f"poisoned step {k}: ")
        else:
            assert any(not torch.equal(a, b) for a, b in zip(gpu["params"], before["params"]))
        if not half:
            cpu["grads"] = grads
            assert call_case(case, hyper, cpu, step=t, skip_nonfinite=True) is (where is not None)
            assert_bits_equal(torch, gpu, cpu, [n for n in names if n != "grads"], f"step {k}: ")


# ------------------------------------------------------------------------------------- refusals


def adam_tensors(torch, n=3, size=6):
    rng = np.random.default_rng(900)
    return {name: [to_cuda(torch, rng.uniform(0.5, 1.0, size).astype(np.float32)) for _ in range(n)]
            for name in ("params", "grads", "exp_avgs", "exp_avg_sqs")}


def assert_refused(torch, args, error, match, **kwargs):
    before = clone_all(args)
    with pytest.raises(error, match=match):
        fastopt.adam_(args["params"], args["grads"], args["exp_avgs"], args["exp_avg_sqs"], step=2, **kwargs)
    torch.cuda.synchronize()
    assert_bits_equal(torch, args, before, None, "refused call: ")


@pytest.mark.parametrize("other", ["torch", "numpy"])
@pytest.mark.parametrize("arg", ["grads", "exp_avgs"])
def test_arrays_on_the_cpu_beside_cuda_params_are_refused(torch, arg, other):
    args = adam_tensors(torch)
    host = args[arg][2].cpu()
    args[arg][2] = host if other == "torch" else host.numpy()
    assert_refused(torch, args, ValueError,
                   re.escape(f"{arg}[2] is on cpu but params[0] is on cuda:0; all arrays of one call must be on one device"))


def test_cuda_arrays_beside_cpu_params_are_refused(torch):
    args = adam_tensors(torch)
    args["params"] = [t.cpu() for t in args["params"]]
    before = [t.clone() for t in args["params"]]
    with pytest.raises(ValueError, match=re.escape("grads[0] is on cuda:0 but params[0] is on cpu")):
        fastopt.adam_(args["params"], args["grads"], args["exp_avgs"], args["exp_avg_sqs"], step=1)
    assert all(torch.equal(a, b) for a, b in zip(args["params"], before))


@pytest.mark.skipif(not fastopt.cuda.is_available() or fastopt.cuda.device_count() < 2, reason="needs two GPUs")
def test_arrays_on_two_gpus_are_refused(torch):
    args = adam_tensors(torch)
    args["grads"][1] = args["grads"][1].to("cuda:1")
    assert_refused(torch, args, ValueError, re.escape("grads[1] is on cuda:1 but params[0] is on cuda:0"))


@pytest.mark.parametrize("layout", ["strided", "expanded"])
def test_non_contiguous_cuda_tensor_is_refused(torch, layout):
    args = adam_tensors(torch)
    values = args["exp_avg_sqs"][2]
    if layout == "strided":
        bad = torch.zeros(12, device="cuda")[::2]
        bad.copy_(values)
    else:
        bad = values[:1].expand(6)
    args["exp_avg_sqs"][2] = bad
    assert_refused(torch, args, ValueError, re.escape("exp_avg_sqs[2] is not C-contiguous"))


def test_cuda_tensor_requiring_grad_is_refused(torch):
    args = adam_tensors(torch)
    args["params"][2].requires_grad_(True)
    before = [t.detach().clone() for t in args["params"]]
    # torch tensors are read through their own methods (array_intake.cpp, from_torch), not __dlpack__:
    # the refusal is fastopt's own, as on the CPU (test_interop_cpu.py).
    with pytest.raises(TypeError, match=re.escape("params[2] requires grad; pass it detached")):
        fastopt.adam_(args["params"], args["grads"], args["exp_avgs"], args["exp_avg_sqs"], step=1)
    torch.cuda.synchronize()
    assert all(torch.equal(a.detach(), b) for a, b in zip(args["params"], before))


def test_bad_stream_argument_on_cuda_is_a_type_error(torch):
    args = adam_tensors(torch)
    assert_refused(torch, args, TypeError, "stream must be an int", stream="not a stream")
    assert_refused(torch, args, ValueError, re.escape("stream must be a cudaStream_t handle (>= 0), got -5"),
                   stream=-5)


def test_default_adam_call_on_one_tensor(torch):
    # The plainest call, one tensor per argument (not lists), checked against the CPU.
    p, g = np.linspace(-1, 1, 999, dtype=np.float32), np.linspace(2, -1, 999, dtype=np.float32)
    want = [p.copy(), np.zeros_like(p), np.zeros_like(p)]
    fastopt.adam_(want[0], g, want[1], want[2], step=1)
    got = [to_cuda(torch, p), torch.zeros(999, device="cuda"), torch.zeros(999, device="cuda")]
    assert fastopt.adam_(got[0], to_cuda(torch, g), got[1], got[2], step=1) is False
    for a, b in zip(got, want):
        np.testing.assert_array_equal(a.cpu().numpy(), b)
    assert not np.array_equal(want[0], p)
