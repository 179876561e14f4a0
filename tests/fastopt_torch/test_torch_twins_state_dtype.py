"""fastopt.torch.Adam / AdamW with compact state (state_dtype="bfloat16" / "int8", issue 18; see
fastopt/torch/_state_dtype.py): each step against torch.optim.AdamW run in float32 from the twin's state
(bfloat16: torch's new state rounded to bfloat16 equals the twin's; int8: within the quantisation error),
state_dict round trips through torch.save, bad state_dtype, the repeated-step plan and torch.compile not
touching compact state, bitsandbytes' AdamW8bit loading a twin's state and back, and a tiny model trained to
within 1% of float32 state's final loss."""

from __future__ import annotations

import copy
import io

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import fastopt  # noqa: E402
import fastopt.torch as ft  # noqa: E402
from fastopt.torch import _compile, _state_dtype  # noqa: E402

HAS_INT8 = hasattr(fastopt, "QuantizedState")
needs_int8 = pytest.mark.skipif(not HAS_INT8, reason="this fastopt has no 8-bit state (fastopt.QuantizedState)")

# Sizes on both sides of bitsandbytes' min_8bit_size (4096): int8 keeps the small ones in float32.
SHAPES = [(64, 80), (7,), (4100,), (3, 5)]
HYPER = dict(lr=1e-2, betas=(0.9, 0.99), eps=1e-8, weight_decay=0.05)


def make_params(seed=0, shapes=SHAPES):
    gen = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(s, generator=gen)) for s in shapes]


def set_grads(params, seed):
    gen = torch.Generator().manual_seed(1000 + seed)
    for p in params:
        p.grad = torch.randn(p.shape, generator=gen) * (1 + seed % 3)


def copies(params):
    return [torch.nn.Parameter(p.detach().clone()) for p in params]


def dequantised(state, j):
    """A twin's int8-mode moment j (1: exp_avg, 2: exp_avg_sq) as float32."""
    codes = state[f"state{j}"]
    if codes.dtype == torch.float32:
        return codes.clone()
    q = fastopt.QuantizedState(codes=codes.numpy(), absmax=state[f"absmax{j}"].numpy(), signed=j == 1)
    return torch.from_numpy(np.asarray(q.dequantize(), dtype=np.float32)).reshape(codes.shape)


def float_state(state, form):
    """(exp_avg, exp_avg_sq) of a twin's state as float32 tensors."""
    if form == "int8":
        return dequantised(state, 1), dequantised(state, 2)
    return state["exp_avg"].float(), state["exp_avg_sq"].float()


def torch_step(params, grads, states, steps, hyper):
    """One torch.optim.AdamW step (float32) from the given parameters and float32 state; returns the new
    parameters and (exp_avg, exp_avg_sq) per parameter."""
    ps = [torch.nn.Parameter(p.detach().clone()) for p in params]
    opt = torch.optim.AdamW(ps, **hyper)
    for p, g, (m, v), step in zip(ps, grads, states, steps):
        p.grad = g.clone()
        opt.state[p] = {"step": torch.tensor(float(step)), "exp_avg": m.clone(), "exp_avg_sq": v.clone()}
    opt.step()
    return [p.detach() for p in ps], [(opt.state[p]["exp_avg"], opt.state[p]["exp_avg_sq"]) for p in ps]


# ---------------------------------------------------------------------------------------------- the step
def torch_step_from(opt, params, t, form):
    """torch's float32 step t from the twin's current state (read back from `form`; zeros before the first)."""
    before = [p.detach().clone() for p in params]
    states = [float_state(opt.state[p], form) if opt.state.get(p) else (torch.zeros_like(p), torch.zeros_like(p))
              for p in params]
    return torch_step(before, [p.grad for p in params], states, [t] * len(params), HYPER)


def test_bfloat16_state_is_torchs_float32_update_rounded_each_step():
    params = make_params()
    opt = ft.AdamW(params, state_dtype="bfloat16", **HYPER)
    for t in range(6):
        set_grads(params, t)
        want_p, want_state = torch_step_from(opt, params, t, "bfloat16")
        opt.step()
        for i, p in enumerate(params):
            s = opt.state[p]
            assert s["exp_avg"].dtype == torch.bfloat16 and s["exp_avg_sq"].dtype == torch.bfloat16
            assert torch.equal(s["exp_avg"], want_state[i][0].to(torch.bfloat16)), (t, i)
            assert torch.equal(s["exp_avg_sq"], want_state[i][1].to(torch.bfloat16)), (t, i)
            # the parameter moves with the float32 moments (rounded only when stored)
            torch.testing.assert_close(p.detach(), want_p[i], rtol=1e-6, atol=1e-7)
            assert s["step"].item() == t + 1


def test_bfloat16_amsgrad_and_stochastic_rounding_reproducible():
    runs = []
    for _ in range(2):
        params = make_params(shapes=[(300,), (17,)])
        opt = ft.Adam(params, amsgrad=True, state_dtype=torch.bfloat16, stochastic_rounding=True, lr=1e-2)
        for t in range(3):
            set_grads(params, t)
            opt.step()
        assert opt.state[params[0]]["max_exp_avg_sq"].dtype == torch.bfloat16
        runs.append(([p.detach().clone() for p in params], copy.deepcopy(opt.state_dict()["state"])))
    for a, b in zip(runs[0][0], runs[1][0]):
        assert torch.equal(a, b)
    for k in runs[0][1]:
        for key in ("exp_avg", "exp_avg_sq", "max_exp_avg_sq"):
            assert torch.equal(runs[0][1][k][key], runs[1][1][k][key])
    # stochastic rounding differs from round-to-nearest somewhere
    params = make_params(shapes=[(300,), (17,)])
    nearest = ft.Adam(params, amsgrad=True, state_dtype="bfloat16", lr=1e-2)
    for t in range(3):
        set_grads(params, t)
        nearest.step()
    assert not torch.equal(nearest.state[params[0]]["exp_avg_sq"], runs[0][1][0]["exp_avg_sq"])


@needs_int8
def test_int8_state_within_the_quantisation_error_of_torchs_update():
    params = make_params()
    opt = ft.AdamW(params, state_dtype="int8", **HYPER)
    gaps = {j: float(np.max(np.diff(np.sort(_state_dtype.qmap(j == 1).numpy())))) for j in (1, 2)}
    for t in range(5):
        set_grads(params, t)
        want_p, want_state = torch_step_from(opt, params, t, "int8")
        held = {(i, key): (v, v.data_ptr()) for i, p in enumerate(params) for key, v in opt.state.get(p, {}).items()}
        opt.step()
        for (i, key), (v, address) in held.items():  # updated in place: the kernel wrote the tensors' own memory
            assert opt.state[params[i]][key] is v and v.data_ptr() == address, (i, key)
        for i, p in enumerate(params):
            s = opt.state[p]
            torch.testing.assert_close(p.detach(), want_p[i], rtol=1e-6, atol=1e-7)
            if p.numel() < _state_dtype.MIN_8BIT_SIZE:
                assert s["state1"].dtype == torch.float32 and "absmax1" not in s
                torch.testing.assert_close(s["state1"], want_state[i][0], rtol=1e-5, atol=1e-8)
                torch.testing.assert_close(s["state2"], want_state[i][1], rtol=1e-5, atol=1e-12)
                continue
            assert s["state1"].dtype == torch.uint8 and s["absmax1"].shape == ((p.numel() + 255) // 256,)
            for j in (1, 2):
                exact = want_state[i][j - 1].flatten()
                blocks = torch.nn.functional.pad(exact, (0, (-exact.numel()) % 256)).reshape(-1, 256)
                absmax = blocks.abs().amax(dim=1)
                torch.testing.assert_close(s[f"absmax{j}"], absmax, rtol=1e-6, atol=0)
                bound = (absmax * gaps[j] / 2 * 1.0001 + 1e-30).repeat_interleave(256)[: exact.numel()]
                err = (dequantised(s, j).flatten() - exact).abs()
                assert bool((err <= bound).all()), (t, i, j, float((err - bound).max()))


def test_int8_small_parameters_keep_float32_state_under_bitsandbytes_keys():
    """Under min_8bit_size (4096 elements) int8 keeps float32 moments, as bitsandbytes does, under its keys
    state1/state2: the same numbers as float32 state."""
    shapes = [(7,), (64, 63)]
    params, others = make_params(shapes=shapes), None
    others = copies(params)
    small = ft.AdamW(params, state_dtype="int8", **HYPER)
    plain = ft.AdamW(others, **HYPER)
    for t in range(3):
        set_grads(params, t)
        set_grads(others, t)
        small.step()
        plain.step()
    for p, q in zip(params, others):
        assert sorted(small.state[p]) == ["state1", "state2", "step"]
        assert torch.equal(p, q)
        assert torch.equal(small.state[p]["state1"], plain.state[q]["exp_avg"])
        assert torch.equal(small.state[p]["state2"], plain.state[q]["exp_avg_sq"])


# ---------------------------------------------------------------------------------------------- checkpoints
@pytest.mark.parametrize("form", ["bfloat16", pytest.param("int8", marks=needs_int8)])
def test_state_dict_round_trips_through_torch_save_and_continues_identically(form):
    params = make_params()
    opt = ft.AdamW(params, state_dtype=form, **HYPER)
    for t in range(3):
        set_grads(params, t)
        opt.step()
    buffer = io.BytesIO()
    torch.save(opt.state_dict(), buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=True)
    twin_params = copies(params)
    twin = ft.AdamW(twin_params, state_dtype=form, **HYPER)
    twin.load_state_dict(loaded)
    for p, q in zip(params, twin_params):
        a, b = opt.state[p], twin.state[q]
        assert sorted(a) == sorted(b)
        for key in a:
            assert a[key].dtype == b[key].dtype and torch.equal(a[key], b[key]), key
    for t in range(3, 5):
        set_grads(params, t)
        set_grads(twin_params, t)
        opt.step()
        twin.step()
    for p, q in zip(params, twin_params):
        assert torch.equal(p, q)
        for key in opt.state[p]:
            assert torch.equal(opt.state[p][key], twin.state[q][key])
    # deepcopy keeps the compact state too
    clone = copy.deepcopy(opt)
    assert all(torch.equal(clone.state[c][k], opt.state[p][k]) for c, p in zip(clone.param_groups[0]["params"],
                                                                               params) for k in opt.state[p])


def test_torchs_state_dict_loads_into_a_bfloat16_twin_rounded():
    """torch.optim.AdamW's state_dict (no state_dtype in its groups: the twin's own applies) gives a bfloat16
    twin its state rounded to bfloat16; a twin's state_dict carries its state_dtype, as torch's groups carry
    every option."""
    params = make_params()
    ref = torch.optim.AdamW(params, **HYPER)
    set_grads(params, 0)
    ref.step()
    twin_params = copies(params)
    twin = ft.AdamW(twin_params, state_dtype="bfloat16", **HYPER)
    twin.load_state_dict(ref.state_dict())
    for p, q in zip(params, twin_params):
        assert torch.equal(twin.state[q]["exp_avg"], ref.state[p]["exp_avg"].to(torch.bfloat16))
    set_grads(twin_params, 1)
    twin.step()  # steps with it
    f32 = ft.AdamW(copies(params), **HYPER)
    f32.load_state_dict(twin.state_dict())
    assert f32.param_groups[0]["state_dtype"] == "bfloat16"
    assert f32.state[f32.param_groups[0]["params"][0]]["exp_avg"].dtype == torch.bfloat16


@needs_int8
def test_a_state_of_another_layout_is_refused_at_load_changing_nothing():
    params = make_params()
    ref = torch.optim.AdamW(params, **HYPER)
    set_grads(params, 0)
    ref.step()
    twin = ft.AdamW(copies(params), state_dtype="int8", **HYPER)
    with pytest.raises(ValueError, match="state_dtype"):
        twin.load_state_dict(ref.state_dict())
    assert not twin.state
    # a bad absmax in an int8 state_dict is named
    good = ft.AdamW(params, state_dtype="int8", **HYPER)
    set_grads(params, 1)
    good.step()
    sd = good.state_dict()
    sd["state"][0]["absmax1"] = sd["state"][0]["absmax1"][:-1].clone()
    with pytest.raises(ValueError, match=r"state\[0\]\['absmax1'\]"):
        twin.load_state_dict(sd)
    assert not twin.state


# ---------------------------------------------------------------------------------------------- bad input
def test_bad_state_dtype_is_refused_at_construction():
    params = make_params(shapes=[(5,)])
    for bad in ("int4", "fp8", torch.float16, torch.int8, 3, ["int8"]):
        with pytest.raises(ValueError, match="state_dtype"):
            ft.AdamW(params, state_dtype=bad)
    with pytest.raises(ValueError, match="stochastic_rounding"):
        ft.Adam(params, stochastic_rounding=True)
    with pytest.raises(ValueError, match="stochastic_rounding"):
        ft.Adam(params, state_dtype="int8", stochastic_rounding=True)
    with pytest.raises(TypeError, match="stochastic_rounding"):
        ft.Adam(params, state_dtype="bfloat16", stochastic_rounding="yes")
    with pytest.raises(ValueError, match="amsgrad"):
        ft.Adam(params, state_dtype="int8", amsgrad=True)
    with pytest.raises(ValueError, match="differentiable"):
        ft.Adam(params, state_dtype="bfloat16", differentiable=True)
    with pytest.raises(ValueError, match=r"params\[0\] has dtype torch.float64"):
        ft.Adam([torch.nn.Parameter(torch.zeros(3, dtype=torch.float64))], state_dtype="bfloat16")
    # the same values in any accepted spelling
    for good, name in ((None, None), ("float32", None), (torch.float32, None),
                       (torch.bfloat16, "bfloat16"), ("bfloat16", "bfloat16")):
        # (float32: no option of fastopt's own in the groups, whose state_dict is then torch's exactly)
        assert ft.Adam(params, state_dtype=good).defaults.get("state_dtype") == name


def test_compact_state_off_the_cpu_is_refused_at_construction_and_step():
    # (no CUDA here: a meta tensor stands for any parameter off the CPU; the check is the device's kind)
    off = torch.nn.Parameter(torch.empty(10, device="meta"))
    with pytest.raises(ValueError, match="CPU only"):
        ft.AdamW([off], state_dtype="bfloat16")
    params = make_params(shapes=[(5,)])
    opt = ft.AdamW(params, state_dtype="bfloat16")
    opt.add_param_group  # a group edited to a compact state_dtype later is checked at the step
    plain = ft.AdamW([off])
    plain.param_groups[0]["state_dtype"] = "bfloat16"
    off.grad = torch.empty(10, device="meta")
    with pytest.raises(ValueError, match="CPU only"):
        plain.step()


def test_a_bad_state_is_refused_by_the_step_changing_nothing():
    params = make_params(shapes=[(6,), (9,)])
    opt = ft.AdamW(params, state_dtype="bfloat16", lr=0.1)
    set_grads(params, 0)
    opt.step()
    opt.state[params[1]]["exp_avg"] = torch.zeros(9)  # float32 where bfloat16 belongs
    before = [p.detach().clone() for p in params]
    m0 = opt.state[params[0]]["exp_avg"].clone()
    set_grads(params, 1)
    with pytest.raises(ValueError, match=r"state\[1\]"):
        opt.step()
    assert all(torch.equal(p, b) for p, b in zip(params, before))
    assert torch.equal(opt.state[params[0]]["exp_avg"], m0) and opt.state[params[0]]["step"].item() == 1


# ---------------------------------------------------------------------------------------------- plan, compile
@pytest.mark.parametrize("form,shapes", [("bfloat16", SHAPES), ("int8", [(7,), (3, 5)]),
                                         pytest.param("int8", SHAPES, marks=needs_int8)])
def test_repeated_steps_with_nothing_changed_match_full_steps(form, shapes):
    """The repeated-step plan (fastopt/torch/_step_plan.py) declines compact groups (int8's small parameters,
    float32 state1/state2, too): steps that change nothing but the gradients' values match a twin forced
    through the full path each step, bit for bit."""
    params, others = make_params(shapes=shapes), None
    others = copies(params)
    fast = ft.AdamW(params, state_dtype=form, **HYPER)
    slow = ft.AdamW(others, state_dtype=form, **HYPER)
    for t in range(4):
        for side in (params, others):
            set_grads(side, 0)  # the same gradient tensors' values each step
        fast.step()
        slow.__dict__["_step_plan"] = None
        slow.step()
        assert fast.__dict__.get("_step_plan") is None
    for p, q in zip(params, others):
        assert torch.equal(p, q)
        for key in fast.state[p]:
            assert torch.equal(fast.state[p][key], slow.state[q][key])


def test_float32_groups_beside_a_compact_one_keep_their_plan():
    a, b = make_params(shapes=[(5,)]), make_params(1, shapes=[(6,)])
    opt = ft.AdamW([{"params": a}], lr=0.01)
    set_grads(a, 0)
    opt.step()
    assert opt.__dict__.get("_step_plan") is not None  # (float32: planned, as before)
    opt.add_param_group({"params": b, "state_dtype": "bfloat16"})
    set_grads(a + b, 1)
    opt.step()
    assert opt.__dict__.get("_step_plan") is None
    assert opt.state[b[0]]["exp_avg"].dtype == torch.bfloat16 and opt.state[a[0]]["exp_avg"].dtype == torch.float32


@pytest.mark.skipif(not _compile._HAS_CUSTOM_OP, reason="torch.library.custom_op needs torch >= 2.4")
def test_torch_compile_steps_compact_state_eagerly_with_the_same_numbers():
    params, others = make_params(shapes=[(40,), (7,)]), None
    others = copies(params)
    compiled = ft.AdamW(params, state_dtype="bfloat16", **HYPER)
    eager = ft.AdamW(others, state_dtype="bfloat16", **HYPER)
    step = torch.compile(compiled.step, backend="eager")
    for t in range(3):
        set_grads(params, t)
        set_grads(others, t)
        step()
        eager.step()
    for p, q in zip(params, others):
        assert torch.equal(p, q)
        assert torch.equal(compiled.state[p]["exp_avg"], eager.state[q]["exp_avg"])
        assert compiled.state[p]["exp_avg"].dtype == torch.bfloat16


# ---------------------------------------------------------------------------------------------- bitsandbytes
def _bnb():
    bnb = pytest.importorskip("bitsandbytes")
    return bnb


@needs_int8
def test_fastopt_maps_are_bitsandbytes_maps():
    bnb = _bnb()
    for signed, j in ((True, 1), (False, 2)):
        assert torch.equal(_state_dtype.qmap(signed), bnb.functional.create_dynamic_map(signed=signed).float()), j


@needs_int8
def test_a_twins_int8_state_dict_loads_into_bitsandbytes_and_back():
    bnb = _bnb()
    shapes = [(64, 80), (7,), (4100,)]
    params = make_params(shapes=shapes)
    twin = ft.AdamW(params, state_dtype="int8", **HYPER)
    for t in range(3):
        set_grads(params, t)
        twin.step()
    sd = copy.deepcopy(twin.state_dict())
    theirs_params = copies(params)
    theirs = bnb.optim.AdamW8bit(theirs_params, **HYPER)
    theirs.load_state_dict(sd)
    back_params = copies(params)
    back = ft.AdamW(back_params, state_dtype="int8", **HYPER)
    # (bitsandbytes nests its tensors under its own key; its state_dict shares its live tensors, which a load
    # keeps, as torch.optim's does: a copy, so that the two step apart)
    back.load_state_dict(copy.deepcopy(theirs.state_dict()))
    for p, q in zip(params, back_params):
        for key, value in twin.state[p].items():
            assert torch.equal(back.state[q][key], value) and back.state[q][key].dtype == value.dtype, key
    # and both continue from it: one step each, the same to within the quantisation error
    set_grads(theirs_params, 3)
    set_grads(back_params, 3)
    theirs.step()
    back.step()
    for p, q in zip(theirs_params, back_params):
        torch.testing.assert_close(p.detach(), q.detach(), rtol=1e-4, atol=1e-5)
        for j in (1, 2):
            s, r = theirs.state[p], back.state[q]
            ref = s[f"state{j}"].float() if s[f"state{j}"].dtype == torch.float32 else \
                s[f"qmap{j}"][s[f"state{j}"].long()].flatten() * s[f"absmax{j}"].repeat_interleave(256)[:p.numel()]
            scale = float(dequantised(r, j).abs().max())
            torch.testing.assert_close(dequantised(r, j).flatten(), ref.flatten().float(), rtol=0,
                                       atol=0.02 * scale + 1e-12)


@needs_int8
def test_bitsandbytes_state_dict_loads_into_a_twin():
    bnb = _bnb()
    params = make_params(shapes=[(4100,), (9,)])
    theirs = bnb.optim.AdamW8bit(params, **HYPER)
    for t in range(2):
        set_grads(params, t)
        theirs.step()
    twin_params = copies(params)
    twin = ft.AdamW(twin_params, state_dtype="int8", **HYPER)
    twin.load_state_dict(theirs.state_dict())
    for p, q in zip(params, twin_params):
        assert twin.state[q]["step"].item() == 2
        for key in ("state1", "state2"):
            assert torch.equal(twin.state[q][key], theirs.state[p][key])
    set_grads(twin_params, 2)
    twin.step()


# ---------------------------------------------------------------------------------------------- training
def _train(form, steps=300):
    """A small MLP (its first layer 4096 weights: 8-bit with "int8") on a fixed regression problem it cannot fit
    exactly (so the final loss is not a difference of near-zeros); the final training loss."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(8192, 64, generator=gen)
    y = torch.sin(x @ torch.randn(64, 4, generator=gen) * 1.5)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.Tanh(), torch.nn.Linear(64, 4))
    opt = ft.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-2, state_dtype=form)
    for _ in range(steps):
        loss = torch.nn.functional.mse_loss(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        return float(torch.nn.functional.mse_loss(model(x), y))


@pytest.mark.parametrize("form", ["bfloat16", pytest.param("int8", marks=needs_int8)])
def test_compact_state_trains_to_within_one_percent_of_float32(form):
    base = _train("float32")
    assert base < 0.75 * _train("float32", steps=1)  # (it trained)
    assert abs(_train(form) - base) <= 0.01 * base
