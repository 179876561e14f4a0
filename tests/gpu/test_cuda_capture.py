"""Device scalars, CUDA graphs and streams (PyTorch).

- lr (float32/float64) and step (int32/int64/float32/float64) given as one-element CUDA tensors are
  read on the device and give the bits of the same call with host numbers; bad device scalars are
  refused before anything is written, and so is a device step for the rules whose constants need the
  host step (NAdam, RAdam, ASGD). Every optimizer, the rules included (cuda_rule_cases.py).
- adam_/adamw_ captured in a CUDA graph (torch.cuda.graph) with device lr and step, replayed with new
  values in those tensors and new gradients in the static grads, equal eager calls with host values;
  skip_nonfinite (which must read found_inf back) is refused inside a capture, and so are the losses
  with check_labels=True (that check reads its answer back); by default the losses are captured,
  the kernels guarding the labels.
- Work is queued on the caller's stream: stream= as a torch.cuda.Stream, as an int handle, or None (the
  framework's current stream). Inputs are produced on a side stream behind a long GPU sleep and the
  results read on that stream: work put on any other stream would run before its inputs exist.

Skipped without a GPU and a CUDA build of fastopt, or without torch with CUDA (cuda_support.py).
"""

from __future__ import annotations

import re

import numpy as np
import pytest

import fastopt
import cuda_rule_cases as rule_cases
from cuda_rule_cases import HOST_STEP_RULES, rule_case, takes_device_step, takes_lr
from cuda_support import CUDA_MARKS, args_to_cuda, assert_bits_equal, clone_all, gpu_sleep, to_cuda, torch_with_cuda
from interop_cases import CUDA_FULL as FULL, CUDA_FULL_IDS as FULL_IDS, array_names, call_case, copy_args, hyper_of, make_numpy_args, new_grads
from kernel_cases import CASES_BY_NAME

pytestmark = CUDA_MARKS

SIZES = [3, 1023, 1, 4099]


@pytest.fixture(scope="module")
def torch():
    return torch_with_cuda()


def f32(x: float) -> float:
    """x rounded to float32: a value a float32 device lr holds exactly."""
    return float(np.float32(x))


def written(case, hyper):
    return [n for n in array_names(case, hyper) if n != "grads"]


# ------------------------------------------------------------------------------- device scalars

# (lr dtype, step dtype, shape of both): 0-d and one-element 1-d tensors.
SCALARS = [("float32", "int64", ()), ("float64", "int32", (1,)), ("float32", "float32", (1,)),
           ("float64", "float64", ())]
SCALAR_IDS = [f"lr_{lr}-step_{step}-{'0d' if not shape else '1d'}" for lr, step, shape in SCALARS]


# Every optimizer (kernel_cases', and the rules it has no entry for yet: cuda_rule_cases.py) that takes lr
# or step as a device value: all but Rprop, which has no lr and no step.
ALL_FULL = FULL + rule_cases.FULL
DEVICE_VALUE_CASES = [(c, cfg) for c, cfg in ALL_FULL
                      if (takes_lr(c) and c.name != "asgd") or takes_device_step(c)]  # (asgd: host lr only)
DEVICE_VALUE_IDS = [c.name for c, _ in DEVICE_VALUE_CASES]


def test_asgd_refuses_a_device_lr(torch):
    # asgd_ computes eta on the host from lr (eta=None: lr / (1 + lambd lr (t - 1))^alpha), so a device lr
    # (whose value the host never reads) is refused rather than taken as 0 (AsgdRule::kDeviceLr)
    case = rule_cases.rule_case("asgd")
    hyper = hyper_of(case, list(case.configs)[-1], seed=704)
    base = make_numpy_args(case, hyper, SIZES, np.float32, seed=705)
    args = args_to_cuda(torch, base)
    args["grads"] = [to_cuda(torch, g) for g in new_grads(SIZES, np.float32, seed=706)]
    before = [p.clone() for p in args["params"]]
    with pytest.raises(TypeError, match="needs lr as a host number"):
        call_case(case, dict(hyper, lr=torch.tensor(0.01, device="cuda")), args, step=1)
    assert all(torch.equal(a, b) for a, b in zip(args["params"], before))


@pytest.mark.parametrize("lr_dtype,step_dtype,shape", SCALARS, ids=SCALAR_IDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("case,config", DEVICE_VALUE_CASES, ids=DEVICE_VALUE_IDS)
def test_device_lr_and_step_match_host_values(torch, request, case, config, dtype, lr_dtype, step_dtype, shape):
    # A device step makes the kernel compute the bias corrections (pow(beta, t) in double) on the GPU,
    # whose double pow may differ from the C library's by an ulp: so near the host bits, not at them.
    # The optimizers without a power of beta give the host bits with a device lr
    # (test_device_lr_gives_the_bits_of_host_lr). The rules that need the host step (HOST_STEP_RULES)
    # get it as a host number, and lr on the device.
    hyper = hyper_of(case, config, seed=700)
    for key in ("eta", "mu"):  # (ASGD's: left to the kernel, which computes them from lr and the step)
        hyper.pop(key, None)
    base = make_numpy_args(case, hyper, SIZES, dtype, seed=701)
    host = args_to_cuda(torch, base)
    device = args_to_cuda(torch, base)
    for t in range(1, 4):
        grads = [to_cuda(torch, g) for g in new_grads(SIZES, dtype, seed=710 + t)]
        host["grads"] = device["grads"] = grads
        on_host, on_device = dict(hyper), dict(hyper)
        if takes_lr(case):
            on_host["lr"] = lr = f32(hyper["lr"] * (1.0 - 0.2 * t))  # a schedule: a new lr every step
            on_device["lr"] = torch.tensor(lr, dtype=getattr(torch, lr_dtype), device="cuda").reshape(shape)
        step_dev = torch.tensor(t, dtype=getattr(torch, step_dtype), device="cuda").reshape(shape)
        call_case(case, on_host, host, step=t)
        assert call_case(case, on_device, device, step=step_dev if takes_device_step(case) else t) is False
    torch.cuda.synchronize()
    rtol = 1e-13 if dtype == np.float64 else 1e-6
    for name in written(case, hyper):
        for d, h in zip(device[name], host[name]):
            np.testing.assert_allclose(d.cpu().numpy(), h.cpu().numpy(), rtol=rtol, atol=rtol * 1e-3, err_msg=name)
    assert not torch.equal(device["params"][2], to_cuda(torch, base["params"][2]))


NO_POWER = [(c, cfg) for c, cfg in ALL_FULL if c.name in ("sgd", "adagrad", "rmsprop", "lion", "adadelta")]


@pytest.mark.parametrize("lr_dtype", ["float32", "float64"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("case,config", NO_POWER, ids=[f"{c.name}-{cfg}" for c, cfg in NO_POWER])
def test_device_lr_gives_the_bits_of_host_lr(torch, case, config, dtype, lr_dtype):
    # With a device lr the kernel computes its per-call constants on the device from the same double
    # arithmetic; without a pow (Adam's bias corrections) that is the host's arithmetic exactly.
    hyper = hyper_of(case, config, seed=702)
    base = make_numpy_args(case, hyper, SIZES, dtype, seed=703)
    host = args_to_cuda(torch, base)
    device = args_to_cuda(torch, base)
    for t in range(1, 4):
        lr = f32(hyper["lr"] * (1.0 - 0.2 * t))
        grads = [to_cuda(torch, g) for g in new_grads(SIZES, dtype, seed=720 + t)]
        host["grads"] = device["grads"] = grads
        call_case(case, {**hyper, "lr": lr}, host, step=t)
        lr_dev = torch.tensor(lr, dtype=getattr(torch, lr_dtype), device="cuda")
        assert call_case(case, {**hyper, "lr": lr_dev}, device, step=t) is False
    torch.cuda.synchronize()
    assert_bits_equal(torch, device, host, written(case, hyper))
    assert not torch.equal(device["params"][2], to_cuda(torch, base["params"][2]))


BAD_SCALARS = [
    ("lr", "int32", (), TypeError, "lr has dtype int32; a device lr is float32 or float64"),
    ("lr", "float16", (), TypeError, "lr has dtype float16; a device lr is float32 or float64"),
    ("lr", "float32", (2,), ValueError, "lr must be a number or a one-element device array, got shape (2,)"),
    ("step", "float16", (), TypeError, "step has dtype float16; a device step is int32, int64, float32 or float64"),
    ("step", "int64", (1, 2), ValueError, "step must be a number or a one-element device array, got shape (1, 2)"),
]


@pytest.mark.parametrize("which,dtype,shape,error,message", BAD_SCALARS,
                         ids=[f"{w}-{d}-{len(s)}d" for w, d, s, _, _ in BAD_SCALARS])
def test_bad_device_scalars_are_refused(torch, which, dtype, shape, error, message):
    case = CASES_BY_NAME["adam"]
    hyper = hyper_of(case, "amsgrad", seed=720)
    args = args_to_cuda(torch, make_numpy_args(case, hyper, SIZES, np.float32, seed=721))
    call_case(case, hyper, args, step=1)  # non-zero state
    before = clone_all(args)
    bad = torch.ones(shape, dtype=getattr(torch, dtype), device="cuda")
    with pytest.raises(error, match=re.escape(message)):
        if which == "lr":
            call_case(case, {**hyper, "lr": bad}, args, step=2)
        else:
            call_case(case, hyper, args, step=bad)
    torch.cuda.synchronize()
    assert_bits_equal(torch, args, before)


@pytest.mark.parametrize("name", HOST_STEP_RULES)
def test_a_device_step_is_refused_where_the_host_computes_the_constants(torch, name):
    # NAdam's mu_product, RAdam's rectification (a variant: which loop runs) and ASGD's eta and mu come
    # from the host step; the kernels cannot compute them from a device step, so it is refused first.
    case = rule_case(name)
    hyper = hyper_of(case, list(case.configs)[-1], seed=730)
    args = args_to_cuda(torch, make_numpy_args(case, hyper, SIZES, np.float32, seed=731))
    call_case(case, hyper, args, step=1)  # non-zero state
    before = clone_all(args)
    for dtype in ("int64", "float32"):
        step = torch.tensor(2, dtype=getattr(torch, dtype), device="cuda")
        with pytest.raises(TypeError, match=rf"^{name}_\(\) needs step as a host number"):
            call_case(case, hyper, args, step=step)
    torch.cuda.synchronize()
    assert_bits_equal(torch, args, before)
    assert call_case(case, hyper, args, step=2) is False  # the same call with the host number runs


def test_device_lr_beside_cpu_arrays_is_refused(torch):
    p, g = np.ones(4), np.ones(4)
    with pytest.raises(ValueError, match=re.escape("lr is on cuda:0 but params is on cpu")):
        fastopt.sgd_(p, g, lr=torch.tensor(0.5, dtype=torch.float64, device="cuda"))
    np.testing.assert_array_equal(p, np.ones(4))


# ----------------------------------------------------------------------------------- CUDA graphs

GRAPH_CASES = [("adam", "plain"), ("adam", "amsgrad"), ("adamw", "decay"), ("adamw", "amsgrad")]


@pytest.mark.parametrize("name,config", GRAPH_CASES, ids=[f"{n}-{c}" for n, c in GRAPH_CASES])
def test_captured_update_replays_with_new_lr_and_step(torch, name, config):
    case = CASES_BY_NAME[name]
    hyper = hyper_of(case, config, seed=800)
    base = make_numpy_args(case, hyper, SIZES, np.float32, seed=801)
    static = args_to_cuda(torch, base)  # the graph's tensors: updated in place by every replay
    eager = args_to_cuda(torch, base)
    lr_dev = torch.full((), f32(hyper["lr"]), dtype=torch.float32, device="cuda")
    step_dev = torch.ones((), dtype=torch.int64, device="cuda")

    # Warm up on a side stream (as torch asks before a capture), on scratch copies.
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        call_case(case, {**hyper, "lr": lr_dev}, clone_all(static), step=step_dev)
    torch.cuda.current_stream().wait_stream(side)

    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        call_case(case, {**hyper, "lr": lr_dev}, static, step=step_dev)
    torch.cuda.synchronize()
    assert_bits_equal(torch, static, base)  # capturing ran nothing

    for t in range(1, 6):
        lr = f32(hyper["lr"] * (1.0 - 0.15 * t))
        grads = new_grads(SIZES, np.float32, seed=810 + t)
        for g, new in zip(static["grads"], grads):
            g.copy_(torch.from_numpy(new))
        lr_dev.fill_(lr)
        step_dev.fill_(t)
        graph.replay()
        eager["grads"] = [to_cuda(torch, g) for g in grads]
        call_case(case, {**hyper, "lr": lr}, eager, step=t)
        torch.cuda.synchronize()
        assert_bits_equal(torch, static, eager, written(case, hyper), f"replay {t}: ")
    assert not torch.equal(static["params"][1], to_cuda(torch, base["params"][1]))


def test_skip_nonfinite_is_refused_inside_a_capture(torch):
    case = CASES_BY_NAME["adam"]
    hyper = hyper_of(case, "plain", seed=820)
    base = make_numpy_args(case, hyper, SIZES, np.float32, seed=821)
    args = args_to_cuda(torch, base)
    call_case(case, hyper, clone_all(args), step=1, skip_nonfinite=True)  # warm-up
    torch.cuda.synchronize()
    marker = torch.zeros(4, device="cuda")
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        marker.add_(1.0)  # so that the graph is not empty, and its replay shows
        with pytest.raises((RuntimeError, ValueError), match="(?i)captur"):
            call_case(case, hyper, args, step=1, skip_nonfinite=True)
    graph.replay()
    torch.cuda.synchronize()
    assert marker.tolist() == [1.0] * 4
    assert_bits_equal(torch, args, base)  # neither the refused call nor the replay wrote anything
    # Outside a capture the same call works, with the CPU's bits.
    assert call_case(case, hyper, args, step=1, skip_nonfinite=True) is False
    cpu = copy_args(base)
    call_case(case, hyper, cpu, step=1, skip_nonfinite=True)
    torch.cuda.synchronize()
    assert_bits_equal(torch, args, cpu, written(case, hyper))


def test_loss_label_check_true_is_refused_inside_a_capture(torch):
    # check_labels=True: the labels are checked on the device and the answer read back on the host;
    # inside a capture that copy and wait would fail and invalidate the capture. The call must refuse
    # first, and the capture (with the work queued before it) stay usable.
    rng = np.random.default_rng(850)
    logits = rng.standard_normal((64, 10)).astype(np.float32)
    labels = rng.integers(0, 10, 64)
    x, y = to_cuda(torch, logits), to_cuda(torch, labels)
    fastopt.softmax_cross_entropy(x, y)  # warm-up
    torch.cuda.synchronize()
    marker = torch.zeros(4, device="cuda")
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        marker.add_(1.0)
        with pytest.raises(RuntimeError, match="(?i)captur"):
            fastopt.softmax_cross_entropy(x, y, out=x, check_labels=True)
        with pytest.raises(RuntimeError, match="(?i)captur"):
            fastopt.multiclass_svm_loss(x, y, check_labels=True)
    graph.replay()
    torch.cuda.synchronize()
    assert marker.tolist() == [1.0] * 4
    np.testing.assert_array_equal(x.cpu().numpy(), logits)


@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_losses_are_captured_by_default_and_replay_with_new_values(torch, reduction):
    # check_labels=None: inside a capture the host check is left out (the kernels guard every label),
    # so the losses can be captured; each replay computes them from the values the inputs hold then,
    # and a label made bad between replays gives its row a NaN loss and a zero gradient.
    rng = np.random.default_rng(851)
    x = to_cuda(torch, rng.standard_normal((64, 10)).astype(np.float32))
    y = to_cuda(torch, rng.integers(0, 10, 64))
    grad = torch.empty_like(x)
    fastopt.softmax_cross_entropy(x, y, reduction=reduction, out=grad)  # warm-up
    fastopt.multiclass_svm_loss(x, y, reduction=reduction)
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        loss, _ = fastopt.softmax_cross_entropy(x, y, reduction=reduction, out=grad)
        svm_loss, svm_grad = fastopt.multiclass_svm_loss(x, y, reduction=reduction)
    for seed in (852, 853):
        logits = np.random.default_rng(seed).standard_normal((64, 10)).astype(np.float32)
        labels = np.random.default_rng(seed + 10).integers(0, 10, 64)
        x.copy_(to_cuda(torch, logits))
        y.copy_(to_cuda(torch, labels))
        graph.replay()
        torch.cuda.synchronize()
        want_loss, want_grad = fastopt.softmax_cross_entropy(logits, labels, reduction=reduction)
        np.testing.assert_allclose(loss.cpu().numpy(), want_loss, rtol=1e-5)
        np.testing.assert_allclose(grad.cpu().numpy(), want_grad, rtol=1e-5, atol=1e-7)
        want_svm, want_dsvm = fastopt.multiclass_svm_loss(logits, labels, reduction=reduction)
        np.testing.assert_allclose(svm_loss.cpu().numpy(), want_svm, rtol=1e-5)
        np.testing.assert_allclose(svm_grad.cpu().numpy(), want_dsvm, rtol=1e-5, atol=1e-7)
    y[5] = 10  # out of range: guarded by the kernels
    graph.replay()
    torch.cuda.synchronize()
    row_losses = loss.cpu().numpy()
    assert np.isnan(row_losses[5] if reduction == "none" else row_losses)
    assert (grad[5] == 0).all().item()


# --------------------------------------------------------------------------------------- streams


@pytest.mark.parametrize("how", ["stream_object", "int_handle", "current_stream"])
def test_update_is_queued_on_the_callers_stream(torch, how):
    case = CASES_BY_NAME["adam"]
    hyper = hyper_of(case, "amsgrad", seed=830)
    sizes = [1 << 16, 5]
    base = make_numpy_args(case, hyper, sizes, np.float32, seed=831)
    grads = new_grads(sizes, np.float32, seed=832)
    cpu = copy_args(base)
    cpu["grads"] = grads
    call_case(case, hyper, cpu, step=1)

    made = args_to_cuda(torch, base)
    made["grads"] = [to_cuda(torch, g) for g in grads]
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        gpu_sleep(torch)
        args = clone_all(made)  # the inputs exist only once the sleep is over
        if how == "current_stream":
            call_case(case, hyper, args, step=1)  # stream=None: torch's current stream, `side`
    if how == "stream_object":
        call_case(case, hyper, args, step=1, stream=side)
    elif how == "int_handle":
        call_case(case, hyper, args, step=1, stream=side.cuda_stream)
    with torch.cuda.stream(side):
        results = clone_all(args)  # read on the same stream
    side.synchronize()
    assert_bits_equal(torch, results, cpu, written(case, hyper))


def test_default_stream_call_sees_earlier_torch_work(torch):
    # Everything on torch's current (default) stream: inputs made by torch ops right before the call.
    x = torch.linspace(-2, 2, 5000, device="cuda")
    p = torch.sin(x) * 3
    g = torch.cos(x)
    fastopt.sgd_(p, g, lr=0.25, stream=torch.cuda.current_stream())
    # fastopt on the CPU from torch's own inputs (torch's sin/cos need not match NumPy's bits).
    start = (torch.sin(x) * 3).cpu().numpy()
    want = start.copy()
    fastopt.sgd_(want, g.cpu().numpy(), lr=0.25)
    got = p.cpu().numpy()
    np.testing.assert_array_equal(got, want)
    assert not np.array_equal(got, start)


@pytest.mark.parametrize("how", ["stream_object", "current_stream"])
def test_loss_is_queued_on_the_callers_stream(torch, how):
    rng = np.random.default_rng(840)
    logits = rng.standard_normal((512, 100)).astype(np.float32)
    labels = rng.integers(0, 100, 512)
    want_loss, want_grad = fastopt.softmax_cross_entropy(logits, labels, label_smoothing=0.1)
    made, made_labels = to_cuda(torch, logits), to_cuda(torch, labels)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        gpu_sleep(torch)
        x, y = made.clone(), made_labels.clone()
        if how == "current_stream":
            loss, grad = fastopt.softmax_cross_entropy(x, y, label_smoothing=0.1)
    if how == "stream_object":
        loss, grad = fastopt.softmax_cross_entropy(x, y, label_smoothing=0.1, stream=side)
    with torch.cuda.stream(side):
        loss_copy, grad_copy = loss.clone(), grad.clone()
    side.synchronize()
    np.testing.assert_allclose(loss_copy.item(), want_loss, rtol=1e-5)
    np.testing.assert_allclose(grad_copy.cpu().numpy(), want_grad, rtol=1e-5, atol=1e-7)
