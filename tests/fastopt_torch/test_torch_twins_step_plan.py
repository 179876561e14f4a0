"""The twins' repeated step (fastopt/torch/_step_plan.py): after a full step a twin keeps views of its
parameters and state and only checks, at later steps, that they are still what the full step checked. Each
test changes one thing between steps that a stale plan would get wrong (a replaced parameter tensor, state
tensor, step count, gradient, option, group...) and compares the twin with torch.optim doing the same, in
float64, or checks that a bad change is refused as the full step refuses it, changing nothing."""

from __future__ import annotations

import copy

import pytest

torch = pytest.importorskip("torch")
import fastopt.torch as ft  # noqa: E402

TOL = dict(rtol=1e-10, atol=1e-12)
# (twin name, hyperparameters); each twin with a plan, and one with per-parameter numbers (NAdam: planned
# never, the full path every step) as a witness that the comparisons themselves hold.
CASES = [
    ("AdamW", dict(lr=1e-2, weight_decay=0.1)),
    ("Adam", dict(lr=1e-2, amsgrad=True)),
    ("SGD", dict(lr=0.05, momentum=0.9)),
    ("SGD", dict(lr=0.05)),
    ("Adagrad", dict(lr=0.1, lr_decay=0.01)),
    ("RMSprop", dict(lr=1e-2, momentum=0.5, centered=True)),
    ("RAdam", dict(lr=1e-2)),
    ("Adamax", dict(lr=1e-2)),
    ("Rprop", dict(lr=1e-2)),
    ("Adadelta", dict(lr=0.5)),
    ("NAdam", dict(lr=1e-2)),
]
IDS = [f"{name}-{i}" for i, (name, _) in enumerate(CASES)]
SHAPES = [(7, 5), (5,), (33,), (3, 4, 2)]


def make_pair(name, hyper, seed=0, shapes=SHAPES, groups=1):
    """Parameters for a twin and copies for torch.optim's class of the same name (float64)."""
    gen = torch.Generator().manual_seed(seed)
    ours = [torch.nn.Parameter(torch.randn(s, generator=gen, dtype=torch.float64)) for s in shapes]
    theirs = [torch.nn.Parameter(p.detach().clone()) for p in ours]

    def grouped(params):
        if groups == 1:
            return params
        return [{"params": params[::2]}, {"params": params[1::2], "lr": hyper["lr"] / 2}]

    twin = getattr(ft, name)(grouped(ours), **hyper)
    ref = getattr(torch.optim, name)(grouped(theirs), **hyper, foreach=False)
    return ours, theirs, twin, ref


def new_grads(ours, theirs, seed):
    """Fresh gradient tensors (as after zero_grad(set_to_none=True) and backward), the same on both sides."""
    gen = torch.Generator().manual_seed(1000 + seed)
    for p, q in zip(ours, theirs):
        g = torch.randn(p.shape, generator=gen, dtype=p.dtype)
        p.grad, q.grad = g, g.clone()


def assert_same(ours, theirs, twin, ref):
    for i, (p, q) in enumerate(zip(ours, theirs)):
        torch.testing.assert_close(p.detach(), q.detach(), **TOL, msg=lambda m: f"params[{i}]: {m}")
        for key, value in ref.state[q].items():
            mine = twin.state[p][key]
            if torch.is_tensor(value):
                torch.testing.assert_close(mine.to(value.dtype), value, **TOL, msg=lambda m: f"state[{i}][{key}]: {m}")


def step_both(ours, theirs, twin, ref, seed):
    new_grads(ours, theirs, seed)
    twin.step()
    ref.step()


def planned(twin) -> bool:
    return twin.__dict__.get("_step_plan") is not None


@pytest.mark.parametrize("name, hyper", CASES, ids=IDS)
def test_repeated_steps_match_torch_and_are_planned(name, hyper):
    ours, theirs, twin, ref = make_pair(name, hyper, groups=2)
    for k in range(6):
        step_both(ours, theirs, twin, ref, k)
        assert_same(ours, theirs, twin, ref)
    # The plan is what these steps ran (else every test below would test the full path only).
    assert planned(twin) == (name != "NAdam")


@pytest.mark.parametrize("name, hyper", CASES, ids=IDS)
def test_a_replaced_parameter_tensor_is_updated(name, hyper):
    ours, theirs, twin, ref = make_pair(name, hyper)
    for k in range(2):
        step_both(ours, theirs, twin, ref, k)
    # p.data = ... gives the parameter other memory: an update through the old view would be lost.
    new = torch.randn(ours[0].shape, dtype=torch.float64)
    ours[0].data, theirs[0].data = new.clone(), new.clone()
    for k in range(2, 4):
        step_both(ours, theirs, twin, ref, k)
    assert_same(ours, theirs, twin, ref)


def test_a_state_tensor_narrowed_in_place_is_refused_as_by_the_full_step():
    ours, theirs, twin, ref = make_pair("Adam", dict(lr=0.1), shapes=[(8,)])
    step_both(ours, theirs, twin, ref, 0)
    step_both(ours, theirs, twin, ref, 1)
    exp_avg = twin.state[ours[0]]["exp_avg"]
    exp_avg.data = exp_avg.data[:4]  # (the same tensor at the same address, half the elements)
    new_grads(ours, theirs, 2)
    before = snapshot(ours, twin)
    with pytest.raises(ValueError, match=r"state\[0\]\['exp_avg'\] has shape \(4,\)"):
        twin.step()
    assert_unchanged(before, ours, twin)


def test_a_parameter_reshaped_over_the_same_memory_is_checked_as_by_the_full_step():
    ours, theirs, twin, ref = make_pair("SGD", dict(lr=0.1, momentum=0.9), shapes=[(4, 3)])
    for k in range(2):
        step_both(ours, theirs, twin, ref, k)
    ours[0].data = ours[0].data.view(12)  # (the same address and size, another shape; its buffer keeps (4, 3))
    ours[0].grad = torch.randn(12, dtype=torch.float64)
    before = snapshot(ours, twin)
    with pytest.raises(ValueError, match=r"state\[0\]\['momentum_buffer'\] has shape \(4, 3\)"):
        twin.step()
    assert_unchanged(before, ours, twin)


@pytest.mark.parametrize("name, hyper", [c for c in CASES if c[0] in ("AdamW", "Adagrad", "RMSprop", "Rprop")])
def test_replaced_state_tensors_are_used(name, hyper):
    ours, theirs, twin, ref = make_pair(name, hyper)
    for k in range(3):
        step_both(ours, theirs, twin, ref, k)
    for p, q in zip(ours, theirs):
        for key, value in ref.state[q].items():
            if key != "step" and torch.is_tensor(value):
                fill = torch.rand(value.shape, dtype=value.dtype) + 0.5
                if key == "grad_avg":  # (centered RMSprop: square_avg - grad_avg**2 stays positive)
                    fill = fill / 10
                ref.state[q][key] = fill.clone()
                twin.state[p][key] = fill.clone()
    for k in range(3, 5):
        step_both(ours, theirs, twin, ref, k)
    assert_same(ours, theirs, twin, ref)


@pytest.mark.parametrize("how", ["in place", "replaced", "one of them"])
def test_changed_step_counts_are_followed(how):
    ours, theirs, twin, ref = make_pair("Adam", dict(lr=1e-2))
    for k in range(4):
        step_both(ours, theirs, twin, ref, k)
    for i, (p, q) in enumerate(zip(ours, theirs)):
        if how == "one of them" and i:
            continue
        if how in ("in place", "one of them"):
            twin.state[p]["step"].fill_(1.0)
            ref.state[q]["step"].fill_(1.0)
        else:
            twin.state[p]["step"] = torch.tensor(1.0)
            ref.state[q]["step"] = torch.tensor(1.0)
    for k in range(4, 6):
        step_both(ours, theirs, twin, ref, k)
    assert_same(ours, theirs, twin, ref)


def test_a_scheduler_changing_lr_and_betas_is_followed():
    ours, theirs, twin, ref = make_pair("AdamW", dict(lr=1e-2), groups=2)
    sched = [torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.1, total_steps=20, cycle_momentum=True)
             for opt in (twin, ref)]
    for k in range(12):
        step_both(ours, theirs, twin, ref, k)
        for s in sched:
            s.step()
    assert_same(ours, theirs, twin, ref)
    assert planned(twin)  # (lr and betas move every step: the plan re-checks them, it is not dropped)


@pytest.mark.parametrize("name, hyper, change", [
    ("SGD", dict(lr=0.05), dict(momentum=0.9)),
    ("SGD", dict(lr=0.05, momentum=0.9), dict(momentum=0.0)),
    ("RMSprop", dict(lr=1e-2, momentum=0.5, centered=True), dict(momentum=0.0, centered=False)),
    ("Adam", dict(lr=1e-2), dict(maximize=True, weight_decay=0.1)),
])
def test_options_that_change_the_state_are_followed(name, hyper, change):
    ours, theirs, twin, ref = make_pair(name, hyper)
    for k in range(3):
        step_both(ours, theirs, twin, ref, k)
    for opt in (twin, ref):
        opt.param_groups[0].update(change)
    for k in range(3, 6):
        step_both(ours, theirs, twin, ref, k)
    assert_same(ours, theirs, twin, ref)


def test_parameters_losing_and_regaining_gradients():
    ours, theirs, twin, ref = make_pair("Adam", dict(lr=1e-2))
    for k in range(2):
        step_both(ours, theirs, twin, ref, k)
    new_grads(ours, theirs, 2)
    ours[1].grad = theirs[1].grad = None
    twin.step()
    ref.step()
    for k in range(3, 5):
        step_both(ours, theirs, twin, ref, k)
    assert_same(ours, theirs, twin, ref)


def test_a_group_added_and_a_state_dict_loaded_between_steps():
    ours, theirs, twin, ref = make_pair("AdamW", dict(lr=1e-2), shapes=[(6,), (4, 3)])
    for k in range(2):
        step_both(ours, theirs, twin, ref, k)
    extra = torch.nn.Parameter(torch.randn(5, dtype=torch.float64))
    extra_ref = torch.nn.Parameter(extra.detach().clone())
    twin.add_param_group({"params": [extra], "lr": 0.1})
    ref.add_param_group({"params": [extra_ref], "lr": 0.1})
    ours.append(extra)
    theirs.append(extra_ref)
    for k in range(2, 4):
        step_both(ours, theirs, twin, ref, k)
    assert_same(ours, theirs, twin, ref)
    saved = copy.deepcopy(ref.state_dict())  # (state_dict() holds the live tensors)
    for k in range(4, 6):
        step_both(ours, theirs, twin, ref, k)
    twin.load_state_dict(copy.deepcopy(saved))  # (two steps ago: the plan's views are of other tensors now)
    ref.load_state_dict(copy.deepcopy(saved))
    for k in range(6, 8):
        step_both(ours, theirs, twin, ref, k)
    assert_same(ours, theirs, twin, ref)


def snapshot(ours, twin):
    return [p.detach().clone() for p in ours] + [v.clone() for s in twin.state.values() for v in s.values()
                                                  if torch.is_tensor(v)]


def assert_unchanged(before, ours, twin):
    after = snapshot(ours, twin)
    assert len(before) == len(after)
    assert all(torch.equal(a, b) for a, b in zip(before, after))


@pytest.mark.parametrize("bad, match", [
    (lambda g: torch.randn(g.shape[::-1], dtype=g.dtype).t(), r"params\[1\]\.grad has strides"),
    (lambda g: torch.randn(g.shape[0], 2 * g.shape[1], dtype=g.dtype)[:, ::2], r"params\[1\]\.grad .*gaps"),
    (lambda g: g.to_sparse(), "sparse"),
])
def test_a_bad_gradient_after_planned_steps_is_refused_by_name(bad, match):
    ours, theirs, twin, ref = make_pair("AdamW", dict(lr=1e-2), shapes=[(4, 3), (3, 4)], groups=2)
    for k in range(3):
        step_both(ours, theirs, twin, ref, k)
    new_grads(ours, theirs, 3)
    ours[1].grad = bad(ours[1].grad.detach().clone())
    before = snapshot(ours, twin)
    with pytest.raises((TypeError, ValueError, RuntimeError), match=match):
        twin.step()
    assert_unchanged(before, ours, twin)


def test_a_bad_hyperparameter_in_one_group_changes_no_group():
    ours, theirs, twin, ref = make_pair("AdamW", dict(lr=1e-2), groups=2)
    for k in range(3):
        step_both(ours, theirs, twin, ref, k)
    new_grads(ours, theirs, 3)
    twin.param_groups[1]["lr"] = -1.0
    before = snapshot(ours, twin)
    with pytest.raises(ValueError, match="lr"):
        twin.step()
    assert_unchanged(before, ours, twin)
    twin.param_groups[1]["eps"] = 1e-60  # (valid in float64 arithmetic: the float64 parameters step)
    twin.param_groups[1]["lr"] = 1e-2
    twin.step()


def test_a_gradient_sharing_memory_across_groups_is_refused():
    ours, theirs, twin, ref = make_pair("SGD", dict(lr=0.1, momentum=0.9), shapes=[(6,), (6,)], groups=2)
    for k in range(2):
        step_both(ours, theirs, twin, ref, k)
    new_grads(ours, theirs, 2)
    ours[1].grad = twin.state[ours[0]]["momentum_buffer"]  # (group 1's gradient is group 0's buffer)
    before = snapshot(ours, twin)
    with pytest.raises(ValueError, match="shares memory"):
        twin.step()
    assert_unchanged(before, ours, twin)


def test_updates_land_in_the_tensors_and_autograd_sees_them():
    ours, theirs, twin, ref = make_pair("AdamW", dict(lr=1e-2), shapes=[(3,)])
    for k in range(2):
        step_both(ours, theirs, twin, ref, k)
    address = ours[0].data_ptr()
    saved = ours[0] * 2  # (autograd saved nothing of p here; use a graph that saves p)
    y = (ours[0] ** 2).sum()
    new_grads(ours, theirs, 2)
    twin.step()
    assert ours[0].data_ptr() == address
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        y.backward()
    del saved


def test_a_gradient_with_its_negative_bit_set_is_refused_by_name():
    # x.conj().imag of a one-element complex tensor: a real, contiguous view whose memory holds -values.
    ours, theirs, twin, ref = make_pair("SGD", dict(lr=0.1, momentum=0.9), shapes=[(1,)])
    for k in range(3):
        step_both(ours, theirs, twin, ref, k)
    ours[0].grad = torch.tensor([1 + 2j], dtype=torch.complex128).conj().imag
    assert ours[0].grad.is_neg() and ours[0].grad.is_contiguous()
    before = snapshot(ours, twin)
    with pytest.raises(TypeError, match=r"params\[0\]\.grad has its negative bit set"):
        twin.step()
    assert_unchanged(before, ours, twin)


@pytest.mark.parametrize("name, hyper", [CASES[0], CASES[2], CASES[8]], ids=[IDS[0], IDS[2], IDS[8]])
def test_a_state_dict_replaced_for_a_parameter_is_used(name, hyper):
    ours, theirs, twin, ref = make_pair(name, hyper)
    for k in range(3):
        step_both(ours, theirs, twin, ref, k)
    # A new dict of new tensors under the same key (as a user restoring one parameter's state would):
    # a plan that looked only at the tensors it took would update the old ones.
    state = {key: (value.clone() * 0.5 if torch.is_tensor(value) and value.dim() else value)
             for key, value in ref.state[theirs[2]].items()}
    ref.state[theirs[2]] = {key: (v.clone() if torch.is_tensor(v) else v) for key, v in state.items()}
    twin.state[ours[2]] = {key: (v.clone() if torch.is_tensor(v) else v) for key, v in state.items()}
    for k in range(3, 5):
        step_both(ours, theirs, twin, ref, k)
    assert_same(ours, theirs, twin, ref)
    assert planned(twin)


def test_parameters_reordered_in_their_group_are_followed():
    ours, theirs, twin, ref = make_pair("AdamW", dict(lr=1e-2), shapes=[(5,), (5,), (3,)])
    for k in range(3):
        step_both(ours, theirs, twin, ref, k)
    for opt in (twin, ref):  # (the same list object, its items swapped: state follows each parameter)
        params = opt.param_groups[0]["params"]
        params[0], params[1] = params[1], params[0]
    for k in range(3, 5):
        step_both(ours, theirs, twin, ref, k)
    assert_same(ours, theirs, twin, ref)


def test_a_torch_function_mode_is_stepped_by_the_full_path():
    # A mode may answer a tensor's reads with Python code: the repeated step declines while one is active
    # (steps still equal torch's), and plans again afterwards.
    from torch.overrides import TorchFunctionMode

    class Counting(TorchFunctionMode):
        calls = 0

        def __torch_function__(self, func, types, args=(), kwargs=None):
            Counting.calls += 1
            return func(*args, **(kwargs or {}))

    ours, theirs, twin, ref = make_pair("AdamW", dict(lr=1e-2))
    for k in range(3):
        step_both(ours, theirs, twin, ref, k)
    assert planned(twin)
    new_grads(ours, theirs, 3)
    with Counting():
        twin.step()
    ref.step()
    assert Counting.calls > 0
    assert_same(ours, theirs, twin, ref)
    for k in range(4, 6):
        step_both(ours, theirs, twin, ref, k)
    assert_same(ours, theirs, twin, ref)
    assert planned(twin)


@pytest.mark.parametrize("name, hyper, key", [("SGD", dict(lr=0.1, momentum=0.9), "momentum_buffer"),
                                              ("AdamW", dict(lr=1e-2), "exp_avg_sq")])
def test_a_planned_step_bumps_the_versions_of_parameters_and_state(name, hyper, key):
    ours, theirs, twin, ref = make_pair(name, hyper, shapes=[(4,), (2, 2)])
    for k in range(3):
        step_both(ours, theirs, twin, ref, k)
    assert planned(twin)
    before = [(p._version, twin.state[p][key]._version) for p in ours]
    new_grads(ours, theirs, 3)
    twin.step()
    assert all(p._version > v and twin.state[p][key]._version > s for p, (v, s) in zip(ours, before))


def test_gradients_that_require_grad_are_read_by_the_planned_step_as_by_torch():
    # backward(create_graph=True) leaves gradients that require grad; torch.optim reads them under no_grad.
    ours, theirs, twin, ref = make_pair("AdamW", dict(lr=1e-2), shapes=[(4,), (3, 2)])
    for k in range(5):
        new_grads(ours, theirs, k)
        if k >= 2:
            for p in ours:
                p.grad = p.grad.clone().requires_grad_()
        twin.step()
        ref.step()
        assert_same(ours, theirs, twin, ref)
    assert planned(twin)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("name, hyper", [("AdamW", dict(lr=1e-2, weight_decay=0.1)), ("Adam", dict(lr=1e-2, amsgrad=True)),
                                         ("SGD", dict(lr=0.05, momentum=0.9, nesterov=True)),
                                         ("Adagrad", dict(lr=0.1, lr_decay=0.01)),
                                         ("RMSprop", dict(lr=1e-2, momentum=0.5, centered=True))])
def test_half_parameters_are_planned_and_step_as_the_full_path_bit_for_bit(name, hyper, dtype):
    # float16/bfloat16 parameters with float32 state: the repeated step against the same twin made to take
    # the full step every time (its plan dropped before each step).
    gen = torch.Generator().manual_seed(3)
    planned_params = [torch.nn.Parameter(torch.randn(s, generator=gen).to(dtype)) for s in SHAPES]
    full_params = [torch.nn.Parameter(p.detach().clone()) for p in planned_params]
    twin, full = getattr(ft, name)(planned_params, **hyper), getattr(ft, name)(full_params, **hyper)
    for k in range(5):
        for p, q in zip(planned_params, full_params):
            p.grad = torch.randn(p.shape, generator=gen).to(dtype)
            q.grad = p.grad.clone()
        full.__dict__["_step_plan"] = None
        twin.step()
        full.step()
        for i, (p, q) in enumerate(zip(planned_params, full_params)):
            assert torch.equal(p, q), (k, i)
            for key, value in full.state[q].items():
                assert torch.equal(twin.state[p][key], value), (k, i, key)
                assert value.dtype == (torch.float32 if key != "step" else value.dtype)
        if k >= 1:
            assert planned(twin)


def test_a_subclass_that_advances_its_counts_its_own_way_is_not_planned():
    """The plan advances step counts as torch does (+1): a twin whose _advance differs keeps the full path,
    and its counts move by its own rule at every step."""

    class CountsTwice(ft.AdamW):
        def _advance(self, states):
            for state in states:
                state["step"] += 2

    p = torch.nn.Parameter(torch.randn(5, dtype=torch.float64))
    twin = CountsTwice([p], lr=1e-2)
    for k in range(4):
        p.grad = torch.randn(5, dtype=torch.float64)
        twin.step()
    assert not planned(twin)
    assert twin.state[p]["step"].item() == 8
    plain = ft.AdamW([torch.nn.Parameter(torch.randn(5, dtype=torch.float64))], lr=1e-2)
    for k in range(2):
        plain.param_groups[0]["params"][0].grad = torch.randn(5, dtype=torch.float64)
        plain.step()
    assert planned(plain)  # (the witness: the same twin without the override is planned)
