"""fastopt.torch's twins on CUDA (marked `cuda`: skipped unless fastopt has its CUDA backend and torch a GPU).

- every twin against torch.optim's fastest CUDA implementation of the same optimizer (fused=True where torch
  has it, else foreach) on the small MLP of the CPU tests, 20 steps, float32 and float64;
- float16/bfloat16 parameters: fastopt keeps float32 state and does the math in float32, rounding only the
  parameter, so the reference is torch.optim on a float32 copy rounded to the half dtype after every step
  (torch's fused optimizers keep half state, which rounds every step and, for exp_avg_sq in float16,
  underflows: a different optimizer, not a tolerance);
- capturable=True: opt.step() captured in a CUDA graph and replayed equals eager steps bit for bit, with the
  step counts on the device and a schedule writing into a device lr between replays;
- torch.amp.GradScaler("cuda") with poisoned steps;
- state_dicts: twin <-> torch mid-training, a CPU checkpoint resumed on CUDA, half parameters' state,
  capturable state into a non-capturable twin; and what is refused (devices mixed within a group).

Tolerances: float64 1e-9 relative (the kernels differ from torch's in rounding only: torch's CUDA kernels
contract multiply-adds, fastopt's are built with -fmad=false), float32 those of
tests/fastopt_torch/test_torch_twins.py.
"""

from __future__ import annotations

import copy

import pytest

torch = pytest.importorskip("torch")
import fastopt.cuda  # noqa: E402
import fastopt.torch as ft  # noqa: E402
from torch_mlp import fresh_seed, groups  # noqa: E402  (shared with the CPU twin tests)
from torch_mlp import loss_of, make_batches, make_mlp  # noqa: E402

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not (fastopt.cuda.is_available() and torch.cuda.is_available()),
                       reason="needs an NVIDIA GPU and fastopt built with CUDA"),
]

DEVICE = "cuda"
STEPS = 20
CASES = [
    ("SGD", dict(lr=0.1)),
    ("SGD", dict(lr=0.05, momentum=0.9, dampening=0.2, weight_decay=1e-3)),
    ("SGD", dict(lr=0.05, momentum=0.9, nesterov=True, maximize=True)),
    ("Adagrad", dict(lr=0.1, lr_decay=0.01, weight_decay=1e-3, initial_accumulator_value=0.1)),
    ("RMSprop", dict(lr=1e-2)),
    ("RMSprop", dict(lr=1e-3, momentum=0.8, centered=True, weight_decay=1e-3, maximize=True)),
    ("Adam", dict(lr=1e-2)),
    ("Adam", dict(lr=1e-2, betas=(0.8, 0.99), weight_decay=1e-2, amsgrad=True)),
    ("AdamW", dict(lr=1e-2)),
    ("AdamW", dict(lr=1e-2, betas=(0.85, 0.995), weight_decay=0.1, amsgrad=True)),
    # the twins built from the rules (fastopt/rules/), every weight-decay mode and branch
    ("NAdam", dict(lr=1e-2)),
    ("NAdam", dict(lr=1e-2, betas=(0.85, 0.99), weight_decay=1e-2, momentum_decay=8e-3, maximize=True)),
    ("NAdam", dict(lr=1e-2, weight_decay=0.1, decoupled_weight_decay=True)),
    ("RAdam", dict(lr=1e-2)),  # 20 steps: unrectified at first, rectified from step 6
    ("RAdam", dict(lr=1e-2, betas=(0.8, 0.99), weight_decay=1e-2, maximize=True)),
    ("RAdam", dict(lr=1e-2, weight_decay=0.1, decoupled_weight_decay=True)),
    ("Adamax", dict(lr=1e-2)),
    ("Adamax", dict(lr=1e-2, betas=(0.8, 0.99), weight_decay=1e-2, maximize=True)),
    ("Adadelta", dict(lr=1.0, eps=1e-4)),
    ("Adadelta", dict(lr=0.5, rho=0.8, eps=1e-4, weight_decay=1e-2, maximize=True)),
    ("ASGD", dict(lr=0.05)),
    ("ASGD", dict(lr=0.05, lambd=1e-2, alpha=0.6, t0=3.0, weight_decay=1e-2, maximize=True)),  # averages from step 5
    ("Rprop", dict(lr=0.01)),
    ("Rprop", dict(lr=0.005, etas=(0.4, 1.3), step_sizes=(1e-5, 0.02), maximize=True)),
]
RULE_TWINS = ("NAdam", "RAdam", "Adamax", "Adadelta", "ASGD", "Rprop")
IDS = [f"{name}-{i}" for i, (name, _) in enumerate(CASES)]
TOLERANCE = {torch.float64: dict(rtol=1e-9, atol=1e-11), torch.float32: dict(rtol=1e-5, atol=1e-6)}
STATE_TOLERANCE = {torch.float64: TOLERANCE[torch.float64], torch.float32: dict(rtol=5e-4, atol=1e-5)}


def torch_optimizer(name, params, **hyper):
    """torch.optim's fastest CUDA implementation of `name`: fused where torch has it, else foreach."""
    cls = getattr(torch.optim, name)
    probe = torch.zeros(1, device=DEVICE, requires_grad=True)
    probe.grad = torch.zeros(1, device=DEVICE)
    try:
        cls([probe], fused=True, **hyper).step()
    except (RuntimeError, TypeError, ValueError, NotImplementedError):
        return cls(params, foreach=True, **hyper)
    return cls(params, fused=True, **hyper)


def cuda_batches(seed, steps, batch, dtype):
    return [(x.to(DEVICE), y.to(DEVICE)) for x, y in make_batches(seed, steps, batch, dtype)]


def train(model, opt, batches, sign=1.0):
    for x, y in batches:
        opt.zero_grad()
        loss_of(model, x, y, sign).backward()
        opt.step()


def assert_close_models(model, twin_model, tolerance):
    for (name, p), q in zip(model.named_parameters(), twin_model.parameters()):
        torch.testing.assert_close(q, p, msg=lambda m: f"{name}: {m}", **tolerance)


@pytest.mark.parametrize("name,hyper", CASES, ids=IDS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
def test_mlp_matches_torch_on_cuda(name, hyper, dtype):
    seed = fresh_seed()
    model = make_mlp(seed, dtype).to(DEVICE)
    twin_model = copy.deepcopy(model)
    start = copy.deepcopy(model)
    theirs = torch_optimizer(name, groups(model, hyper["lr"]), **hyper)
    ours = getattr(ft, name)(groups(twin_model, hyper["lr"]), **hyper)
    batches = cuda_batches(seed, STEPS, 32, dtype)
    sign = -1.0 if hyper.get("maximize") else 1.0
    train(model, theirs, batches, sign)
    train(twin_model, ours, batches, sign)
    assert_close_models(model, twin_model, TOLERANCE[dtype])
    assert max((p - p0).abs().max().item() for p, p0 in zip(model.parameters(), start.parameters())) > 1e-3
    theirs_sd, ours_sd = theirs.state_dict(), ours.state_dict()
    for i, s in theirs_sd["state"].items():
        for key, value in s.items():
            mine = ours_sd["state"][i][key]
            if key == "step":  # torch fused keeps it on the device, a non-capturable twin on the CPU
                assert mine.device.type == "cpu" and mine.item() == value.item()
            else:
                assert mine.device == value.device and mine.dtype == value.dtype
                torch.testing.assert_close(mine, value, **STATE_TOLERANCE[dtype])


HALF_CASES = [CASES[1], CASES[3], CASES[5], CASES[7], CASES[9]]
# each rule twin's case with maximize and weight decay on
HALF_CASES += [case for case in CASES if case[0] in RULE_TWINS and case[1].get("maximize")]


@pytest.mark.parametrize("name,hyper", HALF_CASES, ids=[c[0] for c in HALF_CASES])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["f16", "bf16"])
def test_half_parameters_with_float32_state(name, hyper, dtype):
    seed = fresh_seed()
    model = make_mlp(seed, torch.float32).to(DEVICE, dtype)
    shadow = [torch.nn.Parameter(p.detach().float()) for p in model.parameters()]
    ours = getattr(ft, name)(model.parameters(), **hyper)
    reference = getattr(torch.optim, name)(shadow, foreach=False, **hyper)
    start = [p.detach().clone() for p in model.parameters()]
    sign = -1.0 if hyper.get("maximize") else 1.0
    for x, y in cuda_batches(seed, STEPS, 32, dtype):
        ours.zero_grad()
        loss_of(model, x, y, sign).backward()
        for s, p in zip(shadow, model.parameters()):
            s.grad = p.grad.float()  # the same gradients (exactly: half -> float32)
        ours.step()
        reference.step()
        with torch.no_grad():
            for s in shadow:
                s.copy_(s.to(dtype))  # the parameter lives in the half dtype
    eps = torch.finfo(dtype).eps
    for i, (p, s, p0) in enumerate(zip(model.parameters(), shadow, start)):
        assert p.dtype == dtype
        # float32 results a last bit apart round to neighbouring half values now and then: 2 ulps
        torch.testing.assert_close(p.detach(), s.detach().to(dtype), rtol=2 * eps, atol=1e-5, msg=f"params[{i}]")
        assert not torch.equal(p, p0)
        for key, value in ours.state[p].items():
            if key != "step":
                assert value.dtype == torch.float32 and value.device == p.device, key
                torch.testing.assert_close(value, reference.state[s][key], rtol=5e-4, atol=1e-5,
                                           msg=f"state[{i}][{key!r}]")


@pytest.mark.parametrize("name,hyper", [("Adam", dict(amsgrad=True)), ("AdamW", dict(weight_decay=0.1)),
                                        ("RMSprop", dict(momentum=0.9, centered=True))],
                         ids=["Adam", "AdamW", "RMSprop"])
def test_capturable_step_replayed_in_a_cuda_graph_equals_eager_steps(name, hyper):
    seed, dtype = fresh_seed(), torch.float32
    generator = torch.Generator(device=DEVICE).manual_seed(seed)
    eager_model = make_mlp(seed, dtype).to(DEVICE)
    graph_model = copy.deepcopy(eager_model)
    torch_model = copy.deepcopy(eager_model)
    lrs = [torch.tensor(1e-2, device=DEVICE) for _ in range(3)]
    eager = getattr(ft, name)(eager_model.parameters(), lr=lrs[0], capturable=True, **hyper)
    graphed = getattr(ft, name)(graph_model.parameters(), lr=lrs[1], capturable=True, **hyper)
    theirs = torch_optimizer(name, torch_model.parameters(), lr=lrs[2], capturable=True, **hyper)
    models = (eager_model, graph_model, torch_model)
    grads = [[torch.randn(p.shape, device=DEVICE, generator=generator) * 0.1 for p in eager_model.parameters()]
             for _ in range(STEPS)]
    for p in graph_model.parameters():
        p.grad = torch.zeros_like(p)  # static gradients: the graph reads these addresses

    def set_grads(t):
        for p, q, r, g in zip(*(m.parameters() for m in models), grads[t]):
            p.grad = g.clone()
            q.grad.copy_(g)
            r.grad = g.clone()

    warmup = 3  # eager steps on a side stream first (state made outside the graph), as torch.cuda.graph asks
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for t in range(warmup):
            set_grads(t)
            for opt in (eager, graphed, theirs):
                opt.step()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        graphed.step()
    for t in range(warmup, STEPS):
        if t == 10:
            for lr in lrs:
                lr.fill_(4e-3)  # a schedule writing into the device lr: replays must see it
        set_grads(t)
        graph.replay()
        eager.step()
        theirs.step()
    torch.cuda.synchronize()
    for p, q in zip(eager_model.parameters(), graph_model.parameters()):
        assert torch.equal(p, q)
        for key, value in eager.state[p].items():
            assert torch.equal(value, graphed.state[q][key]), key
        step = graphed.state[q]["step"]
        assert step.device == q.device and step.dtype == torch.float32 and step.item() == STEPS
    assert_close_models(torch_model, graph_model, TOLERANCE[dtype])


POISONED = {7, 8, 15}


@pytest.mark.parametrize("name,hyper", [("SGD", dict(lr=0.05, momentum=0.9)), ("Adagrad", dict(lr=0.05)),
                                        ("RMSprop", dict(lr=1e-3)), ("Adam", dict(lr=1e-2)),
                                        ("AdamW", dict(lr=1e-2, amsgrad=True))],
                         ids=["SGD", "Adagrad", "RMSprop", "Adam", "AdamW"])
def test_grad_scaler_on_cuda(name, hyper):
    seed, dtype = fresh_seed(), torch.float32
    model = make_mlp(seed, dtype).to(DEVICE)
    twin_model = copy.deepcopy(model)
    theirs = torch_optimizer(name, model.parameters(), **hyper)
    ours = getattr(ft, name)(twin_model.parameters(), **hyper)
    batches = cuda_batches(seed, 24, 32, dtype)
    scales = []
    for m, opt in ((model, theirs), (twin_model, ours)):
        scaler = torch.amp.GradScaler("cuda", init_scale=2.0**12, growth_interval=4)
        scales.append([])
        for t, (x, y) in enumerate(batches):
            opt.zero_grad()
            scaler.scale(loss_of(m, x, y)).backward()
            if t in POISONED:
                next(m.parameters()).grad[0, 0] = float("nan") if t == 8 else float("inf")
            before = [p.detach().clone() for p in m.parameters()]
            scaler.step(opt)
            if t in POISONED:
                assert all(torch.equal(b, p) for b, p in zip(before, m.parameters())), f"step {t} was not skipped"
            scales[-1].append(scaler.get_scale())
            scaler.update()
    assert scales[0] == scales[1] and min(scales[1]) < max(scales[1])
    assert_close_models(model, twin_model, TOLERANCE[dtype])


@pytest.mark.parametrize("name,hyper", [CASES[2], CASES[3], CASES[5], CASES[7], CASES[9]],
                         ids=["SGD", "Adagrad", "RMSprop", "Adam", "AdamW"])
@pytest.mark.parametrize("direction", ["torch_to_twin", "twin_to_torch"])
def test_state_dict_moves_mid_training_on_cuda(name, hyper, direction):
    seed, dtype = fresh_seed(), torch.float64
    batches = cuda_batches(seed, 2 * 10, 16, dtype)
    sign = -1.0 if hyper.get("maximize") else 1.0
    reference = make_mlp(seed, dtype).to(DEVICE)
    first_model, second_model = copy.deepcopy(reference), copy.deepcopy(reference)
    ref_opt = torch_optimizer(name, reference.parameters(), **hyper)
    train(reference, ref_opt, batches, sign)
    twin, theirs = getattr(ft, name), lambda params, **h: torch_optimizer(name, params, **h)
    make_first, make_second = (theirs, twin) if direction == "torch_to_twin" else (twin, theirs)
    first = make_first(first_model.parameters(), **hyper)
    train(first_model, first, batches[:10], sign)
    second = make_second(second_model.parameters(), **hyper)
    second_model.load_state_dict(first_model.state_dict())
    second.load_state_dict(copy.deepcopy(first.state_dict()))
    train(second_model, second, batches[10:], sign)
    assert_close_models(reference, second_model, TOLERANCE[dtype])


def test_cpu_checkpoint_resumes_on_cuda():
    seed, dtype, hyper = fresh_seed(), torch.float64, dict(lr=1e-2, amsgrad=True)
    batches = make_batches(seed, 20, 16, dtype)
    cpu_model = make_mlp(seed, dtype)
    cpu_opt = ft.Adam(cpu_model.parameters(), **hyper)
    train(cpu_model, cpu_opt, batches[:10])
    cuda_model = copy.deepcopy(cpu_model).to(DEVICE)
    cuda_opt = ft.Adam(cuda_model.parameters(), **hyper)
    cuda_opt.load_state_dict(copy.deepcopy(cpu_opt.state_dict()))  # torch's load moves the state to the device
    assert all(s["exp_avg"].is_cuda and s["step"].is_cpu for s in cuda_opt.state.values())
    train(cpu_model, cpu_opt, batches[10:])
    train(cuda_model, cuda_opt, [(x.to(DEVICE), y.to(DEVICE)) for x, y in batches[10:]])
    assert_close_models(cpu_model.to(DEVICE), cuda_model, TOLERANCE[dtype])


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["f16", "bf16"])
def test_half_state_dicts_move_both_ways(dtype):
    seed = fresh_seed()
    model = make_mlp(seed, torch.float32).to(DEVICE, dtype)
    ours = ft.AdamW(model.parameters(), lr=1e-2)
    train(model, ours, cuda_batches(seed, 5, 16, dtype))
    saved = copy.deepcopy(ours.state_dict())
    assert all(s["exp_avg"].dtype == torch.float32 for s in saved["state"].values())
    theirs = torch_optimizer("AdamW", copy.deepcopy(model).parameters(), lr=1e-2)
    theirs.load_state_dict(saved)  # torch casts to the parameters' dtype
    assert all(s["exp_avg"].dtype == dtype for s in theirs.state.values())
    again = ft.AdamW(model.parameters(), lr=1e-2)
    again.load_state_dict(theirs.state_dict())  # half state back to float32 (exact: a widening)
    for i, s in enumerate(again.state.values()):
        assert s["exp_avg"].dtype == torch.float32
        assert torch.equal(s["exp_avg"], theirs.state_dict()["state"][i]["exp_avg"].float())
    again.load_state_dict(saved)  # float32 state is never rounded through the half dtype
    for i, s in enumerate(again.state.values()):
        assert torch.equal(s["exp_avg"], saved["state"][i]["exp_avg"])


def test_capturable_state_into_a_non_capturable_twin():
    seed, dtype = fresh_seed(), torch.float64
    batches = cuda_batches(seed, 20, 16, dtype)
    model = make_mlp(seed, dtype).to(DEVICE)
    reference = copy.deepcopy(model)
    capturable = ft.Adam(model.parameters(), lr=1e-2, capturable=True)
    ref_opt = ft.Adam(reference.parameters(), lr=1e-2)
    train(reference, ref_opt, batches)
    train(model, capturable, batches[:10])
    assert all(s["step"].is_cuda for s in capturable.state.values())
    saved = copy.deepcopy(capturable.state_dict())
    saved["param_groups"][0]["capturable"] = False
    plain = ft.Adam(model.parameters(), lr=1e-2)
    plain.load_state_dict(saved)
    assert all(s["step"].is_cpu and s["step"].item() == 10 for s in plain.state.values())
    train(model, plain, batches[10:])
    assert_close_models(reference, model, TOLERANCE[dtype])


def test_devices_mixed_within_a_group_are_refused():
    on_cpu = torch.nn.Parameter(torch.ones(3))
    on_gpu = torch.nn.Parameter(torch.ones(3, device=DEVICE))
    on_cpu.grad, on_gpu.grad = torch.ones(3), torch.ones(3, device=DEVICE)
    opt = ft.Adam([on_cpu, on_gpu], lr=0.1)
    with pytest.raises(ValueError, match=r"param group 0 mixes devices: params\[1\] is on cuda:0 but params\[0\]"):
        opt.step()
    assert torch.equal(on_cpu, torch.ones(3)) and opt.state_dict()["state"] == {}
    alone = ft.Adam([on_gpu], lr=0.1)
    alone.step()
    alone.state[on_gpu]["exp_avg"] = torch.zeros(3)  # state on another device than its parameter
    with pytest.raises(ValueError, match=r"state\[0\]\['exp_avg'\] is on cpu but its parameter is on cuda:0"):
        alone.step()


def test_update_lands_in_place_on_the_current_stream():
    p = torch.nn.Parameter(torch.randn(1000, device=DEVICE))
    p.grad = torch.randn(1000, device=DEVICE)
    expected = p.detach().clone()
    address = p.data_ptr()
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        ft.SGD([p], lr=0.5).step()  # queued on `side`, after the work that made p and its gradient
        expected.sub_(0.5 * p.grad)
    side.synchronize()
    assert p.data_ptr() == address
    torch.testing.assert_close(p.detach(), expected, rtol=0, atol=1e-6)
