"""GradScaler's tensors on the device, capture and stream safety (marked `cuda`; written without a GPU,
run by tools/gpu-check on a lent one).

- grad_scale as a one-element CUDA tensor (float32, as GradScaler keeps it, or float64) gives the bits
  of the same host grad_scale, and of the CPU; found_inf as a CUDA tensor: set, the call writes nothing
  (and returns False: the host never reads it); clear, nothing changes; skip_nonfinite's pre-pass
  divides by a device grad_scale too.
- Nothing waits for the device: a call with device lr, step, grad_scale and found_inf returns while a
  long GPU sleep queued before it still runs (the stream has not finished).
- adam_ captured in a CUDA graph with device grad_scale and found_inf replays with new values.
- The twins under torch.amp.GradScaler("cuda"), capturable: no host read of found_inf or the scale, the
  same numbers as torch's fused capturable optimizer, step counts that skip with the step; the whole
  `scaler.step(opt); scaler.update()` captured in a graph and replayed equals eager steps bit for bit.
- A non-capturable twin refuses to be captured (torch's capture health check), as torch.optim does.
- A device scalar that is a temporary, passed with stream= another stream, is recorded on that stream:
  torch's allocator does not hand its memory out before the work queued there ran.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest

import fastopt
import cuda_rule_cases as rule_cases
from cuda_support import CUDA_MARKS, args_to_cuda, assert_bits_equal, clone_all, gpu_sleep, to_cuda, torch_with_cuda
from interop_cases import CUDA_FULL as FULL, CUDA_FULL_IDS as FULL_IDS, array_names, call_case, copy_args, hyper_of, make_numpy_args, new_grads
from kernel_cases import CASES_BY_NAME

pytestmark = CUDA_MARKS

SIZES = [3, 1023, 1, 4099]


@pytest.fixture(scope="module")
def torch():
    return torch_with_cuda()


def written(case, hyper):
    return [n for n in array_names(case, hyper) if n != "grads"]


def device_number(torch, value, dtype="float32"):
    return torch.full((), value, dtype=getattr(torch, dtype), device="cuda")


# kernel_cases' optimizers and the rules it has no entry for yet (cuda_rule_cases.py)
ALL_FULL = FULL + rule_cases.FULL
ALL_FULL_IDS = FULL_IDS + rule_cases.FULL_IDS


def has_gpu_sleep(torch):
    return getattr(torch.cuda, "_sleep", None) is not None


# ------------------------------------------------------------------------------- the raw calls

@pytest.mark.parametrize("scale_dtype", ["float32", "float64"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("case,config", ALL_FULL, ids=ALL_FULL_IDS)
def test_device_grad_scale_gives_the_bits_of_a_host_one(torch, case, config, dtype, scale_dtype):
    hyper = hyper_of(case, config, seed=900)
    base = make_numpy_args(case, hyper, SIZES, dtype, seed=901)
    on_device, on_host = args_to_cuda(torch, base), args_to_cuda(torch, base)
    cpu = copy_args(base)
    scale = 1024.0  # a power of two, as GradScaler's: exact in every dtype
    found = device_number(torch, 0.0)
    assert call_case(case, hyper, on_device, step=3, grad_scale=device_number(torch, scale, scale_dtype),
                     found_inf=found) is False
    call_case(case, hyper, on_host, step=3, grad_scale=scale)
    call_case(case, hyper, cpu, step=3, grad_scale=scale)
    torch.cuda.synchronize()
    assert_bits_equal(torch, on_device, on_host, written(case, hyper))
    assert_bits_equal(torch, on_device, cpu, written(case, hyper), "CPU: ")


@pytest.mark.parametrize("found_dtype", ["float32", "int64"])
@pytest.mark.parametrize("case,config", ALL_FULL, ids=ALL_FULL_IDS)
def test_a_set_device_found_inf_writes_nothing(torch, case, config, found_dtype):
    hyper = hyper_of(case, config, seed=910)
    base = make_numpy_args(case, hyper, SIZES, np.float32, seed=911)
    args = args_to_cuda(torch, base)
    found = device_number(torch, 1, found_dtype)
    assert call_case(case, hyper, args, step=2, grad_scale=device_number(torch, 8.0), found_inf=found) is False
    torch.cuda.synchronize()
    assert_bits_equal(torch, args, base)
    found.zero_()  # the same call once the flag is clear: an ordinary update
    call_case(case, hyper, args, step=2, grad_scale=device_number(torch, 8.0), found_inf=found)
    cpu = copy_args(base)
    call_case(case, hyper, cpu, step=2, grad_scale=8.0)
    torch.cuda.synchronize()
    assert_bits_equal(torch, args, cpu, written(case, hyper))


def test_skip_nonfinite_divides_by_the_device_grad_scale(torch):
    case = CASES_BY_NAME["adam"]
    hyper = hyper_of(case, "plain", seed=920)
    base = make_numpy_args(case, hyper, SIZES, np.float32, seed=921)
    base["grads"][1][-1] = 3e38  # finite, but not once divided by 0.25
    args = args_to_cuda(torch, base)
    assert call_case(case, hyper, args, step=1, grad_scale=device_number(torch, 0.25), skip_nonfinite=True) is True
    torch.cuda.synchronize()
    assert_bits_equal(torch, args, base)


@pytest.mark.parametrize("which,value,error,message", [
    ("grad_scale", ("int32", 4), TypeError, "grad_scale has dtype int32"),
    ("grad_scale", ("float32", None), ValueError, "grad_scale must be a number or a one-element"),
    ("found_inf", ("float16", 0), TypeError, "found_inf has dtype float16"),
    ("found_inf", ("float32", None), ValueError, "found_inf must be a number or a one-element"),
], ids=["scale-int32", "scale-shape", "found-float16", "found-shape"])
def test_bad_device_scaling_is_refused(torch, which, value, error, message):
    case = CASES_BY_NAME["adamw"]
    hyper = hyper_of(case, "plain", seed=930)
    base = make_numpy_args(case, hyper, SIZES, np.float32, seed=931)
    args = args_to_cuda(torch, base)
    dtype, fill = value
    scalar = torch.ones(2, dtype=getattr(torch, dtype), device="cuda") if fill is None else \
        torch.full((), fill, dtype=getattr(torch, dtype), device="cuda")
    with pytest.raises(error, match=message):
        call_case(case, hyper, args, step=1, **{which: scalar})
    torch.cuda.synchronize()
    assert_bits_equal(torch, args, base)


def test_nothing_waits_for_the_device(torch):
    if not has_gpu_sleep(torch):
        pytest.skip("torch.cuda._sleep is not available")
    case = CASES_BY_NAME["adamw"]
    hyper = hyper_of(case, "amsgrad", seed=940)
    args = args_to_cuda(torch, make_numpy_args(case, hyper, SIZES, np.float32, seed=941))
    lr, step = device_number(torch, 1e-3), device_number(torch, 4, "int64")
    scale, found = device_number(torch, 256.0), device_number(torch, 0.0)
    call_case(case, {**hyper, "lr": lr}, args, step=step, grad_scale=scale, found_inf=found)  # warm-up
    torch.cuda.synchronize()
    gpu_sleep(torch)
    call_case(case, {**hyper, "lr": lr}, args, step=step, grad_scale=scale, found_inf=found)
    assert not torch.cuda.current_stream().query(), "the call waited for the stream"
    torch.cuda.synchronize()


def test_captured_update_replays_with_new_scale_and_found_inf(torch):
    case = CASES_BY_NAME["adam"]
    hyper = hyper_of(case, "amsgrad", seed=950)
    base = make_numpy_args(case, hyper, SIZES, np.float32, seed=951)
    static, eager = args_to_cuda(torch, base), args_to_cuda(torch, base)
    scale, found = device_number(torch, 2.0**10), device_number(torch, 0.0)
    step = torch.ones((), dtype=torch.float32, device="cuda")
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up on scratch copies, as torch asks before a capture
        call_case(case, hyper, clone_all(static), step=step, grad_scale=scale, found_inf=found)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        call_case(case, hyper, static, step=step, grad_scale=scale, found_inf=found)
    torch.cuda.synchronize()
    assert_bits_equal(torch, static, base)  # capturing ran nothing
    t = 0
    for replay in range(1, 7):
        s, skipped = 2.0 ** (10 - replay), replay in (3, 5)
        grads = new_grads(SIZES, np.float32, seed=960 + replay)
        for g, new in zip(static["grads"], grads):
            g.copy_(torch.from_numpy(new))
        scale.fill_(s)
        found.fill_(1.0 if skipped else 0.0)
        if not skipped:
            t += 1
        step.fill_(max(t, 1))
        graph.replay()
        if not skipped:
            eager["grads"] = [to_cuda(torch, g) for g in grads]
            call_case(case, hyper, eager, step=t, grad_scale=s)
        torch.cuda.synchronize()
        assert_bits_equal(torch, static, eager, written(case, hyper), f"replay {replay}: ")


def test_device_scalar_temporaries_on_another_stream_are_recorded(torch):
    if not has_gpu_sleep(torch):
        pytest.skip("torch.cuda._sleep is not available")
    case = CASES_BY_NAME["adam"]
    hyper = hyper_of(case, "plain", seed=970)
    base = make_numpy_args(case, hyper, SIZES, np.float32, seed=971)
    args = args_to_cuda(torch, base)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        gpu_sleep(torch)  # the side stream stays busy: the update queued behind it runs late
        gpu_sleep(torch)
    step = torch.full((), 3.0, device="cuda")  # a temporary, made on the current stream
    address = step.data_ptr()
    call_case(case, hyper, args, step=step, stream=side)
    del step
    # Without record_stream the allocator would hand the step's block to one of these at once (same size,
    # same stream), and the update, still waiting behind the sleep, would read 100 as its step.
    fillers = [torch.empty((), device="cuda") for _ in range(1024)]
    torch._foreach_zero_(fillers)
    torch._foreach_add_(fillers, 100.0)
    assert all(f.data_ptr() != address for f in fillers)
    torch.cuda.synchronize()
    cpu = copy_args(base)
    call_case(case, hyper, cpu, step=3)
    assert_bits_equal(torch, args, cpu, written(case, hyper))


# ------------------------------------------------------------------------------- the twins

def twin_and_torch(torch, seed, name="AdamW", **hyper):
    import fastopt.torch as ft
    from torch_mlp import make_mlp

    model = make_mlp(seed, torch.float32).to("cuda")
    twin_model, torch_model = copy.deepcopy(model), copy.deepcopy(model)
    hyper = dict(lr=torch.tensor(1e-2, device="cuda"), capturable=True, **hyper)
    twin = getattr(ft, name)(twin_model.parameters(), **hyper)
    hyper_t = dict(hyper, lr=torch.tensor(1e-2, device="cuda"))
    theirs = getattr(torch.optim, name)(torch_model.parameters(), fused=True, **hyper_t)
    return twin_model, twin, torch_model, theirs


def scaled_grads(torch, model, seed, t, poisoned):
    generator = torch.Generator(device="cuda").manual_seed(seed * 100 + t)
    grads = [torch.randn(p.shape, device="cuda", generator=generator) * 2.0**8 for p in model.parameters()]
    if poisoned:
        grads[0][0, 0] = float("inf")
    return grads


@pytest.mark.parametrize("name,hyper", [("Adam", dict(amsgrad=True)), ("AdamW", dict(weight_decay=0.1)),
                                        ("RMSprop", dict(momentum=0.9, centered=True))],
                         ids=["Adam", "AdamW", "RMSprop"])
def test_grad_scaler_drives_a_capturable_twin_without_a_host_read(torch, name, hyper):
    seed = 980
    twin_model, twin, torch_model, theirs = twin_and_torch(torch, seed, name, **hyper)
    scalers = [torch.amp.GradScaler("cuda", init_scale=2.0**8, growth_interval=3) for _ in range(2)]
    for t in range(12):
        poisoned = t in (4, 5, 9)
        grads = scaled_grads(torch, twin_model, seed, t, poisoned)
        for model in (twin_model, torch_model):
            for p, g in zip(model.parameters(), grads):
                p.grad = g.clone()
        if has_gpu_sleep(torch):
            gpu_sleep(torch)
        scalers[0].step(twin)
        if has_gpu_sleep(torch):
            assert not torch.cuda.current_stream().query(), f"step {t}: the twin waited for the device"
        scalers[1].step(theirs)
        for s in scalers:
            s.update()
    torch.cuda.synchronize()
    assert scalers[0].get_scale() == scalers[1].get_scale()
    for p, q in zip(twin_model.parameters(), torch_model.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)
        assert twin.state[p]["step"].item() == theirs.state[q]["step"].item() == 12 - 3


def test_grad_scaler_step_captured_with_a_capturable_twin(torch):
    seed = 990
    eager_model, eager, _, _ = twin_and_torch(torch, seed, "Adam", amsgrad=True)
    graph_model, graphed, _, _ = twin_and_torch(torch, seed, "Adam", amsgrad=True)
    scalers = [torch.amp.GradScaler("cuda", init_scale=2.0**8, growth_interval=2) for _ in range(2)]
    for p in graph_model.parameters():
        p.grad = torch.zeros_like(p)  # static gradients: the graph reads these addresses

    def set_grads(t):
        grads = scaled_grads(torch, eager_model, seed, t, t in (5, 6))
        for p, q, g in zip(eager_model.parameters(), graph_model.parameters(), grads):
            p.grad = g.clone()
            q.grad.copy_(g)

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # eager warm-up steps: the state and the scalers' tensors exist before the capture
        for t in range(3):
            set_grads(t)
            for scaler, opt in zip(scalers, (eager, graphed)):
                scaler.step(opt)
                scaler.update()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        scalers[1].step(graphed)
        scalers[1].update()
    for t in range(3, 12):
        set_grads(t)
        graph.replay()
        scalers[0].step(eager)
        scalers[0].update()
    torch.cuda.synchronize()
    assert scalers[0]._scale.item() == scalers[1]._scale.item()
    for p, q in zip(eager_model.parameters(), graph_model.parameters()):
        assert torch.equal(p, q)
        for key, value in eager.state[p].items():
            assert torch.equal(value, graphed.state[q][key]), key


@pytest.mark.parametrize("name", ["SGD", "Adam", "RMSprop"])
def test_a_non_capturable_twin_refuses_capture_as_torch_does(torch, name):
    import fastopt.torch as ft
    from torch_mlp import make_mlp

    model = make_mlp(5, torch.float32).to("cuda")
    opt = getattr(ft, name)(model.parameters(), lr=1e-2)
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        opt.step()  # warm-up: the state exists
    torch.cuda.current_stream().wait_stream(side)
    torch.cuda.synchronize()
    before = [p.detach().clone() for p in model.parameters()]
    marker = torch.zeros(4, device="cuda")
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        marker.add_(1.0)
        with pytest.raises(RuntimeError, match="capturable is False"):
            opt.step()
    graph.replay()
    torch.cuda.synchronize()
    assert marker.tolist() == [1.0] * 4
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
