"""fastopt.schedules: each schedule against its formula, against torch.optim.lr_scheduler driving
a real torch optimizer over many steps, as the lr of fastopt.optim optimizers (vs torch, and
through a state_dict round trip), and bad arguments."""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest

from fastopt import optim, schedules as S

# ------------------------------------------------------------------------------------ formulas


def test_step_decay_is_the_notes_formula():
    # alpha_t = alpha_0 * 0.1 ** floor(t / 30)
    for t in [0, 1, 29, 30, 59, 60, 95]:
        assert S.step_decay(t, base_lr=0.1, step_size=30) == pytest.approx(0.1 * 0.1 ** (t // 30), rel=1e-15)


def test_exponential():
    assert S.exponential(0, base_lr=2.0, gamma=0.5) == 2.0
    assert S.exponential(3, base_lr=2.0, gamma=0.5) == 0.25


def test_cosine_annealing_is_the_notes_formula():
    # alpha_t = 1/2 alpha_0 (1 + cos(pi t / T)), from alpha_0 to 0 (eta_min = 0)
    T = 50
    for t in range(T + 1):
        assert S.cosine_annealing(t, base_lr=0.3, T_max=T) == pytest.approx(0.5 * 0.3 * (1 + math.cos(math.pi * t / T)),
                                                                             rel=1e-14, abs=1e-17)
    assert S.cosine_annealing(0, base_lr=0.3, T_max=T, eta_min=0.01) == pytest.approx(0.3)
    assert S.cosine_annealing(T, base_lr=0.3, T_max=T, eta_min=0.01) == pytest.approx(0.01)


def test_warmup_cosine_shape():
    kw = dict(base_lr=1.0, warmup_steps=10, total_steps=110, min_lr=0.1)
    # linear warmup alpha_0 * t / T_warmup, then cosine from alpha_0 to min_lr, then min_lr
    assert [S.warmup_cosine(t, **kw) for t in range(10)] == pytest.approx([t / 10 for t in range(10)])
    assert S.warmup_cosine(10, **kw) == pytest.approx(1.0)
    assert S.warmup_cosine(60, **kw) == pytest.approx(0.55)
    assert S.warmup_cosine(110, **kw) == pytest.approx(0.1)
    assert S.warmup_cosine(500, **kw) == pytest.approx(0.1)
    assert S.warmup_cosine(0, base_lr=1.0, warmup_steps=0, total_steps=10) == 1.0


def test_linear_decay_is_the_notes_formula():
    # alpha_t = alpha_0 (1 - t / T), and 0 after T
    for t in [0, 1, 50, 99, 100, 150]:
        assert S.linear(t, base_lr=0.2, total_steps=100) == pytest.approx(0.2 * max(0.0, 1 - t / 100), abs=1e-17)


def test_inverse_sqrt_is_the_notes_formula():
    # alpha_t = alpha_0 / sqrt(t), t the 1-based update number
    for step in [0, 3, 99]:
        assert S.inverse_sqrt(step, base_lr=0.5) == pytest.approx(0.5 / math.sqrt(step + 1))
    # with warmup: rises linearly to base_lr at t = w, then 1/sqrt
    w = 16
    assert S.inverse_sqrt(w // 2 - 1, base_lr=1.0, warmup_steps=w) == pytest.approx(0.5)
    assert S.inverse_sqrt(w - 1, base_lr=1.0, warmup_steps=w) == pytest.approx(1.0)
    assert S.inverse_sqrt(4 * w - 1, base_lr=1.0, warmup_steps=w) == pytest.approx(0.5)


def test_warm_restarts_restart_at_base_lr():
    kw = dict(base_lr=1.0, T_0=4, T_mult=2, eta_min=0.0)
    restarts = [0, 4, 12, 28, 60]  # cycles of 4, 8, 16, 32
    for r in restarts:
        assert S.cosine_warm_restarts(r, **kw) == 1.0
    assert S.cosine_warm_restarts(2, **kw) == pytest.approx(0.5)
    assert S.cosine_warm_restarts(8, **kw) == pytest.approx(0.5)


def test_one_cycle_end_points():
    kw = dict(max_lr=1.0, total_steps=100, div_factor=25.0, final_div_factor=1e4)
    assert S.one_cycle(0, **kw) == pytest.approx(1 / 25)
    assert S.one_cycle(29, **kw) == pytest.approx(1.0)  # pct_start 0.3: the peak at step 0.3 * 100 - 1
    assert S.one_cycle(99, **kw) == pytest.approx(1 / 25 / 1e4)
    three = S.one_cycle(58, **kw, three_phase=True)
    assert three == pytest.approx(1 / 25)  # back to the initial lr at 2 * (0.3 * 100 - 1)


def test_numpy_integer_steps_are_accepted():
    assert S.exponential(np.int64(2), base_lr=1.0, gamma=0.5) == 0.25


# ------------------------------------------------------------------------------------ against torch
def _torch():
    return pytest.importorskip("torch")


def torch_lrs(make_scheduler, steps, base_lr=0.1, momentum=0.0):
    """The lr a torch optimizer uses at each of `steps` updates, its scheduler stepped after each."""
    torch = _torch()
    p = torch.nn.Parameter(torch.zeros(3, dtype=torch.float64))
    opt = torch.optim.SGD([p], lr=base_lr, momentum=momentum)
    sched = make_scheduler(torch.optim.lr_scheduler, opt)
    lrs = []
    for _ in range(steps):
        lrs.append(opt.param_groups[0]["lr"])
        p.grad = torch.ones_like(p)
        opt.step()
        sched.step()
    return lrs


TORCH_CASES = [
    ("StepLR", lambda L, o: L.StepLR(o, step_size=7, gamma=0.5), lambda t: S.step_decay(t, base_lr=0.1, step_size=7, gamma=0.5), 60),
    ("ExponentialLR", lambda L, o: L.ExponentialLR(o, gamma=0.97), lambda t: S.exponential(t, base_lr=0.1, gamma=0.97), 150),
    ("CosineAnnealingLR", lambda L, o: L.CosineAnnealingLR(o, T_max=40, eta_min=1e-4),
     lambda t: S.cosine_annealing(t, base_lr=0.1, T_max=40, eta_min=1e-4), 130),
    ("CosineAnnealingWarmRestarts-1", lambda L, o: L.CosineAnnealingWarmRestarts(o, T_0=9, eta_min=1e-3),
     lambda t: S.cosine_warm_restarts(t, base_lr=0.1, T_0=9, eta_min=1e-3), 100),
    ("CosineAnnealingWarmRestarts-2", lambda L, o: L.CosineAnnealingWarmRestarts(o, T_0=5, T_mult=2, eta_min=1e-3),
     lambda t: S.cosine_warm_restarts(t, base_lr=0.1, T_0=5, T_mult=2, eta_min=1e-3), 200),
    ("LinearLR-warmup", lambda L, o: L.LinearLR(o, start_factor=0.25, end_factor=1.0, total_iters=20),
     lambda t: S.linear(t, base_lr=0.1, total_steps=20, start_factor=0.25, end_factor=1.0), 50),
    ("LinearLR-decay", lambda L, o: L.LinearLR(o, start_factor=1.0, end_factor=0.0, total_iters=80),
     lambda t: S.linear(t, base_lr=0.1, total_steps=80), 100),
    ("LambdaLR-warmup_cosine",
     lambda L, o: L.LambdaLR(o, lambda s: S.warmup_cosine(s, base_lr=1.0, warmup_steps=10, total_steps=100, min_lr=0.05)),
     lambda t: S.warmup_cosine(t, base_lr=0.1, warmup_steps=10, total_steps=100, min_lr=0.005), 120),
    ("LambdaLR-inverse_sqrt", lambda L, o: L.LambdaLR(o, lambda s: 1 / math.sqrt(s + 1)),
     lambda t: S.inverse_sqrt(t, base_lr=0.1), 100),
]
for anneal in ("cos", "linear"):
    for three in (False, True):
        TORCH_CASES.append((
            f"OneCycleLR-{anneal}-{'three' if three else 'two'}",
            lambda L, o, a=anneal, th=three: L.OneCycleLR(o, max_lr=0.1, total_steps=100, pct_start=0.25,
                                                          anneal_strategy=a, three_phase=th, div_factor=10.0,
                                                          final_div_factor=100.0),
            lambda t, a=anneal, th=three: S.one_cycle(t, max_lr=0.1, total_steps=100, pct_start=0.25,
                                                      anneal_strategy=a, three_phase=th, div_factor=10.0,
                                                      final_div_factor=100.0),
            100))


@pytest.mark.parametrize("name, make, ours, steps", TORCH_CASES, ids=[c[0] for c in TORCH_CASES])
def test_matches_torch_scheduler(name, make, ours, steps):
    expected = torch_lrs(make, steps, momentum=0.9 if "OneCycle" in name else 0.0)
    got = [ours(t) for t in range(steps)]
    # torch's recursive forms accumulate rounding: a few ulps over a hundred steps
    np.testing.assert_allclose(got, expected, rtol=1e-11, atol=1e-15)


# ------------------------------------------------------------------------------------ as an optimizer's lr


def _train_pair(make_ours, make_torch, steps=60, seed=0):
    """fastopt and torch optimizers on the same float64 parameters and gradients; returns both."""
    torch = _torch()
    rng = np.random.default_rng(seed)
    params = [rng.standard_normal((4, 3)), rng.standard_normal(5)]
    tparams = [torch.nn.Parameter(torch.tensor(p.copy())) for p in params]
    opt = make_ours(params)
    topt, tsched = make_torch(torch, tparams)
    for _ in range(steps):
        grads = [rng.standard_normal(p.shape) for p in params]
        opt.step(grads)
        for tp, g in zip(tparams, grads):
            tp.grad = torch.tensor(g)
        topt.step()
        tsched.step()
    return params, [tp.detach().numpy() for tp in tparams]


def test_sgd_with_step_decay_matches_torch_steplr():
    ours, theirs = _train_pair(
        lambda ps: optim.SGD(ps, lr=S.StepDecay(base_lr=0.05, step_size=10, gamma=0.5), momentum=0.9),
        lambda torch, ps: (lambda o: (o, torch.optim.lr_scheduler.StepLR(o, step_size=10, gamma=0.5)))(
            torch.optim.SGD(ps, lr=0.05, momentum=0.9)))
    for a, b in zip(ours, theirs):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)


def test_adamw_with_one_cycle_matches_torch():
    def make_torch(torch, ps):
        o = torch.optim.AdamW(ps, lr=0.01, weight_decay=0.1)
        return o, torch.optim.lr_scheduler.OneCycleLR(o, max_lr=0.01, total_steps=60, cycle_momentum=False)
    ours, theirs = _train_pair(lambda ps: optim.AdamW(ps, lr=S.OneCycle(max_lr=0.01, total_steps=60), weight_decay=0.1),
                               make_torch)
    for a, b in zip(ours, theirs):
        np.testing.assert_allclose(a, b, rtol=1e-11, atol=1e-13)


def test_adam_with_warmup_cosine_matches_torch_lambdalr():
    def make_torch(torch, ps):
        o = torch.optim.Adam(ps, lr=0.01)
        lam = lambda s: S.warmup_cosine(s, base_lr=1.0, warmup_steps=5, total_steps=50)
        return o, torch.optim.lr_scheduler.LambdaLR(o, lam)
    ours, theirs = _train_pair(lambda ps: optim.Adam(ps, lr=S.WarmupCosine(base_lr=0.01, warmup_steps=5, total_steps=50)),
                               make_torch)
    for a, b in zip(ours, theirs):
        np.testing.assert_allclose(a, b, rtol=1e-11, atol=1e-13)


def test_schedule_lr_per_group_and_state_dict_round_trip():
    rng = np.random.default_rng(1)
    params = [rng.standard_normal(6), rng.standard_normal(3)]
    twin_params = [p.copy() for p in params]
    groups = lambda ps: [{"params": [ps[0]], "lr": S.CosineAnnealing(base_lr=0.1, T_max=20)},
                         {"params": [ps[1]], "lr": 0.01}]
    opt = optim.AdamW(groups(params))
    grads = [[rng.standard_normal(p.shape) for p in params] for _ in range(20)]
    for g in grads[:7]:
        opt.step(g)
    saved = pickle.loads(pickle.dumps(opt.state_dict()))  # schedules survive pickling
    assert saved["schedule_steps"] == [7, 7]
    twin_params[0][...] = params[0]  # the twin starts where the original is, from the state_dict
    twin_params[1][...] = params[1]
    twin = optim.AdamW(groups(twin_params))
    twin.load_state_dict(saved)
    for g in grads[7:]:
        opt.step(g)
        twin.step([x.copy() for x in g])
    for a, b in zip(params, twin_params):
        assert a.tobytes() == b.tobytes()
    assert opt.schedule_steps == [20, 20]


def test_schedule_lr_is_used_at_the_group_step():
    """The (k + 1)-th step uses lr(k): SGD without momentum moves p by lr(k) * g."""
    p = np.zeros(1)
    seen = []
    def lr(k):
        seen.append(k)
        return 0.5 ** k
    opt = optim.SGD([p], lr=lr)
    for _ in range(4):
        opt.step([np.ones(1)])
    assert p[0] == pytest.approx(-(1 + 0.5 + 0.25 + 0.125))
    assert seen[-1] == 3


def test_schedule_failure_refuses_the_step():
    p = np.ones(2)
    opt = optim.SGD([p], lr=S.OneCycle(max_lr=0.1, total_steps=2))
    for _ in range(3):
        opt.step([np.ones(2)])
    before = p.copy()
    with pytest.raises(ValueError, match="total_steps"):
        opt.step([np.ones(2)])
    assert p.tobytes() == before.tobytes() and opt.schedule_steps == [3]
    bad = optim.SGD([np.ones(2)], lr=lambda k: -1.0 if k else 0.1)
    with pytest.raises(ValueError, match="lr must be >= 0"):
        bad.step([np.ones(2)])
        bad.step([np.ones(2)])
    with pytest.raises(TypeError, match="not a number"):
        optim.SGD([np.ones(2)], lr=lambda k: "fast")


def test_schedule_objects():
    s = S.WarmupCosine(base_lr=1.0, warmup_steps=2, total_steps=10)
    assert s(1) == S.warmup_cosine(1, base_lr=1.0, warmup_steps=2, total_steps=10)
    assert s == S.WarmupCosine(base_lr=1.0, warmup_steps=2, total_steps=10)
    assert "WarmupCosine(base_lr=1.0" in repr(s)
    generic = S.Schedule(S.exponential, base_lr=1.0, gamma=0.5)
    assert generic(2) == 0.25
    with pytest.raises(ValueError, match="T_max"):
        S.CosineAnnealing(base_lr=0.1, T_max=0)  # checked when made


# ------------------------------------------------------------------------------------ bad arguments
BAD = [
    (S.step_decay, dict(base_lr=0.1, step_size=0), "step_size"),
    (S.step_decay, dict(base_lr=-0.1, step_size=3), "base_lr"),
    (S.step_decay, dict(base_lr=0.1, step_size=3, gamma=float("nan")), "gamma"),
    (S.exponential, dict(base_lr=0.1, gamma=-1.0), "gamma"),
    (S.cosine_annealing, dict(base_lr=0.1, T_max=10, eta_min=float("inf")), "eta_min"),
    (S.cosine_warm_restarts, dict(base_lr=0.1, T_0=0), "T_0"),
    (S.cosine_warm_restarts, dict(base_lr=0.1, T_0=3, T_mult=1.5), "T_mult"),
    (S.one_cycle, dict(max_lr=0.1, total_steps=10, pct_start=1.0), "pct_start"),
    (S.one_cycle, dict(max_lr=0.1, total_steps=10, anneal_strategy="cosine"), "anneal_strategy"),
    (S.one_cycle, dict(max_lr=0.1, total_steps=10, div_factor=0), "div_factor"),
    (S.linear, dict(base_lr=0.1, total_steps=0), "total_steps"),
    (S.linear, dict(base_lr=0.1, total_steps=5, end_factor="x"), "end_factor"),
    (S.warmup_cosine, dict(base_lr=0.1, warmup_steps=10, total_steps=10), "total_steps"),
    (S.warmup_cosine, dict(base_lr=0.1, warmup_steps=-1, total_steps=10), "warmup_steps"),
    (S.inverse_sqrt, dict(base_lr=0.1, warmup_steps=2.5), "warmup_steps"),
]


@pytest.mark.parametrize("fn, kwargs, name", BAD, ids=[f"{f.__name__}-{n}" for f, _, n in BAD])
def test_bad_arguments_name_the_argument(fn, kwargs, name):
    with pytest.raises(ValueError, match=name):
        fn(0, **kwargs)


@pytest.mark.parametrize("step, error", [(-1, ValueError), (1.5, TypeError), (True, TypeError)])
def test_bad_step(step, error):
    with pytest.raises(error, match="step"):
        S.exponential(step, base_lr=0.1, gamma=0.9)


def test_one_cycle_past_total_steps():
    assert S.one_cycle(10, max_lr=0.1, total_steps=10) >= 0  # torch allows the total_steps-th call
    with pytest.raises(ValueError, match="total_steps"):
        S.one_cycle(11, max_lr=0.1, total_steps=10)
