"""fastopt.torch.Adam / AdamW over bfloat16 parameters on the CPU (torch's fused CPU Adam takes them; issues
16 and 18): float32 state (the twins' rule for half parameters), each step the functional kernel's, the first
step torch's fused one bit for bit, stochastic rounding of the parameters with a chosen seed, state_dict round
trips, bfloat16 state beside them (state_dtype="bfloat16"), and the refusals (other twins, stochastic rounding
with nothing bfloat16 to round, a bad seed, 8-bit state)."""

from __future__ import annotations

import copy

import pytest

torch = pytest.importorskip("torch")
import fastopt  # noqa: E402
import fastopt.torch as ft  # noqa: E402

HYPER = dict(lr=1e-2, betas=(0.9, 0.99), eps=1e-8, weight_decay=0.05)
SHAPES = [(33, 17), (1000,)]


def make_params(seed=0, dtype=torch.bfloat16):
    gen = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(s, generator=gen).to(dtype)) for s in SHAPES]


def grads_for(params, step):
    gen = torch.Generator().manual_seed(1000 + step)
    return [torch.randn(p.shape, generator=gen).to(p.dtype) for p in params]


def train(opt, params, steps, first=0):
    for step in range(first, first + steps):
        for p, g in zip(params, grads_for(params, step)):
            p.grad = g
        opt.step()


@pytest.mark.parametrize("twin,kernel", [(ft.Adam, fastopt.adam_), (ft.AdamW, fastopt.adamw_)])
@pytest.mark.parametrize("stochastic", [False, True])
def test_steps_are_the_functional_kernels_with_float32_state(twin, kernel, stochastic):
    params = make_params()
    mine = [torch.nn.Parameter(p.detach().clone()) for p in params]
    opt = twin(mine, **HYPER, amsgrad=True, stochastic_rounding=stochastic, seed=4)
    train(opt, mine, 5)
    flat = [p.detach().clone() for p in params]
    m, v, x = ([torch.zeros(p.shape) for p in params] for _ in range(3))
    # a twin's seed for param group k: seed * 0x9E3779B97F4A7C15 + k (mod 2**64)
    extra = dict(stochastic_rounding=True, seed=(4 * 0x9E3779B97F4A7C15) % 2**64) if stochastic else {}
    for step in range(5):
        kernel(flat, grads_for(params, step), m, v, x, lr=HYPER["lr"], beta1=0.9, beta2=0.99, eps=1e-8,
               weight_decay=HYPER["weight_decay"], amsgrad=True, step=step + 1, **extra)
    for i, p in enumerate(mine):
        assert p.dtype == torch.bfloat16 and torch.equal(p.detach(), flat[i])
        state = opt.state[p]
        assert state["exp_avg"].dtype == torch.float32
        assert torch.equal(state["exp_avg"], m[i]) and torch.equal(state["max_exp_avg_sq"], x[i])


@pytest.mark.parametrize("stochastic", [False, True])
def test_bfloat16_state_for_bfloat16_params(stochastic):
    """state_dtype="bfloat16": parameters and moments all bfloat16 (6 bytes per parameter, as torch's fused CPU
    AdamW keeps them, here with stochastic rounding of all three), each step the functional kernel's."""
    params = make_params(8)
    mine = [torch.nn.Parameter(p.detach().clone()) for p in params]
    opt = ft.AdamW(mine, **HYPER, state_dtype="bfloat16", stochastic_rounding=stochastic, seed=2)
    train(opt, mine, 4)
    flat = [p.detach().clone() for p in params]
    m, v = ([torch.zeros(p.shape, dtype=torch.bfloat16) for p in params] for _ in range(2))
    extra = dict(stochastic_rounding=True, seed=(2 * 0x9E3779B97F4A7C15) % 2**64) if stochastic else {}
    for step in range(4):
        fastopt.adamw_(flat, grads_for(params, step), m, v, lr=HYPER["lr"], beta1=0.9, beta2=0.99, eps=1e-8,
                       weight_decay=HYPER["weight_decay"], step=step + 1, **extra)
    for i, p in enumerate(mine):
        assert torch.equal(p.detach(), flat[i])
        assert opt.state[p]["exp_avg"].dtype == torch.bfloat16 and torch.equal(opt.state[p]["exp_avg_sq"], v[i])


def test_first_step_is_torchs_fused_step_bit_for_bit():
    """From zero state the twin's first step is torch.optim.AdamW(fused=True)'s on the CPU (both update in
    float32 and round the parameter to nearest-even); later steps differ by torch's bfloat16 state."""
    params = make_params(1)
    mine = [torch.nn.Parameter(p.detach().clone()) for p in params]
    theirs = [torch.nn.Parameter(p.detach().clone()) for p in params]
    train(ft.AdamW(mine, **HYPER), mine, 1)
    train(torch.optim.AdamW(theirs, **HYPER, fused=True), theirs, 1)
    assert all(torch.equal(a.detach(), b.detach()) for a, b in zip(mine, theirs))


def test_stochastic_rounding_is_seeded_and_rounds_only_bfloat16():
    low, high = make_params(2), make_params(2, torch.float32)

    def run(seed, rounding=True):
        ps = [torch.nn.Parameter(p.detach().clone()) for p in low + high]
        train(ft.AdamW(ps, **HYPER, stochastic_rounding=rounding, seed=seed), ps, 4)
        return [p.detach() for p in ps]

    a, b, c, nearest = run(7), run(7), run(8), run(0, rounding=False)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not torch.equal(a[1], c[1])
    assert not torch.equal(a[1], nearest[1])
    # the float32 parameters (their own kernel call) are untouched by it
    assert all(torch.equal(x, y) for x, y in zip(a[2:], nearest[2:]))


def test_state_dict_round_trip_continues_bit_exactly():
    params = make_params(3)
    a_params = [torch.nn.Parameter(p.detach().clone()) for p in params]
    a = ft.AdamW(a_params, **HYPER, stochastic_rounding=True, seed=5)
    train(a, a_params, 2)
    saved = copy.deepcopy(a.state_dict())
    assert saved["param_groups"][0]["seed"] == 5 and saved["param_groups"][0]["stochastic_rounding"] is True
    b_params = [torch.nn.Parameter(p.detach().clone()) for p in a_params]
    b = ft.AdamW(b_params, **HYPER)
    b.load_state_dict(saved)
    train(a, a_params, 2, first=2)
    train(b, b_params, 2, first=2)
    assert all(torch.equal(x.detach(), y.detach()) for x, y in zip(a_params, b_params))


def test_default_groups_are_torchs():
    opt = ft.AdamW(make_params(), **HYPER)
    assert not {"seed", "stochastic_rounding", "state_dtype"} & set(opt.param_groups[0])


@pytest.mark.parametrize("make,error,words", [
    (lambda: ft.LAMB(make_params(), lr=0.1), TypeError,
     r"params\[0\] has dtype torch.bfloat16; .* \(float16 and bfloat16: fastopt.torch.SGD, Adagrad, RMSprop, Adam"),
    (lambda: ft.AdamW(make_params(dtype=torch.float32), stochastic_rounding=True), ValueError,
     "stochastic_rounding=True rounds bfloat16 values, but state_dtype is 'float32' and no parameter is bfloat16"),
    (lambda: ft.AdamW(make_params(), seed=-1), ValueError, r"seed must be an int with 0 <= seed < 2\*\*64"),
    (lambda: ft.AdamW(make_params(), seed=1.5), ValueError, "seed must be an int"),
    (lambda: ft.AdamW(make_params(), state_dtype="int8"), ValueError,
     r"state_dtype='int8': params\[0\] has dtype torch.bfloat16, but this compact optimizer state goes with float32"),
])
def test_refusals_name_the_argument(make, error, words):
    with pytest.raises(error, match=words):
        opt = make()
        train(opt, opt.param_groups[0]["params"], 1)


def test_float32_grad_for_a_bfloat16_param_is_refused_before_anything_is_written():
    params = make_params(6)
    before = [p.detach().clone() for p in params]
    opt = ft.AdamW(params, **HYPER)
    if hasattr(params[0], "grad_dtype"):
        params[0].grad_dtype = None  # (torch 2.10+ refuses the mismatched assignment itself unless told not to)
    params[0].grad = torch.ones(params[0].shape)
    params[1].grad = torch.ones(params[1].shape, dtype=torch.bfloat16)
    with pytest.raises(TypeError, match=r"params\[0\].grad has dtype torch.float32 but its parameter has torch.bfloat16"):
        opt.step()
    assert all(torch.equal(p.detach(), q) for p, q in zip(params, before)) and not opt.state
