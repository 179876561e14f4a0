"""fastopt.torch's twins under torch.compile (fastopt/torch/_compile.py): a compiled step() has no graph
break (after one eager step, as torch.optim's own), gives the eager twin's numbers exactly and torch.optim's
to float64 rounding, follows a tensor lr without recompiling, refuses bad input by name changing nothing, and
its custom op passes torch.library.opcheck."""

from __future__ import annotations

import pytest
from optim_cases import EVERY_OPTIMIZER

torch = pytest.importorskip("torch")
import fastopt.torch as ft  # noqa: E402
from fastopt.torch import _compile  # noqa: E402

pytestmark = pytest.mark.skipif(not _compile._HAS_CUSTOM_OP, reason="torch.library.custom_op needs torch >= 2.4")

# Every elementwise twin, with options that give it state to carry, and SGD without state.
CASES = [case for case in EVERY_OPTIMIZER if case[0] not in ("Adafactor", "Muon")] + [("SGD", dict(lr=0.05))]
IDS = [f"{name}-{i}" for i, (name, _) in enumerate(CASES)]
SHAPES = [(4, 3), (7,), (2, 2, 5)]


def make_params(seed=0, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(s, generator=gen, dtype=dtype)) for s in SHAPES]


def grouped(params, lr):
    return [{"params": params[:2]}, {"params": params[2:], "lr": lr / 2}]


def set_grads(sides, seed):
    gen = torch.Generator().manual_seed(100 + seed)
    for tensors in zip(*sides):
        g = torch.randn(tensors[0].shape, generator=gen, dtype=tensors[0].dtype)
        for p in tensors:
            p.grad = g.clone()


def assert_equal(a, b, **tol):
    for i, (p, q) in enumerate(zip(a, b)):
        if tol:
            torch.testing.assert_close(p.detach(), q.detach(), **tol)
        else:
            assert torch.equal(p.detach(), q.detach()), f"params[{i}]"


@pytest.mark.parametrize("name, hyper", CASES, ids=IDS)
def test_a_compiled_step_equals_the_eager_one_and_torch_and_has_no_graph_break(name, hyper):
    torch._dynamo.reset()
    compiled_params, eager_params = make_params(), make_params()
    compiled = getattr(ft, name)(grouped(compiled_params, hyper["lr"]), **hyper)
    eager = getattr(ft, name)(grouped(eager_params, hyper["lr"]), **hyper)
    sides = [compiled_params, eager_params]
    reference = None
    if hasattr(torch.optim, name):
        torch_params = make_params()
        reference = getattr(torch.optim, name)(grouped(torch_params, hyper["lr"]), **hyper, foreach=False)
        sides.append(torch_params)
    set_grads(sides, 0)
    compiled.step()  # (the first step makes the state, eagerly)
    eager.step()
    if reference:
        reference.step()
    set_grads(sides, 1)
    explained = torch._dynamo.explain(compiled.step)()
    assert explained.graph_break_count == 0, explained.break_reasons
    eager.step()
    if reference:
        reference.step()
    step = torch.compile(compiled.step, backend="aot_eager", fullgraph=True)
    for k in range(2, 6):
        set_grads(sides, k)
        step()
        eager.step()
        if reference:
            reference.step()
    assert_equal(compiled_params, eager_params)
    for p, q in zip(compiled_params, eager_params):
        for key, value in eager.state[q].items():
            assert torch.equal(torch.as_tensor(compiled.state[p][key]), torch.as_tensor(value)), key
    if reference:
        assert_equal(compiled_params, torch_params, rtol=1e-10, atol=1e-12)


def test_inductor_compiles_the_step_of_a_training_loop():
    torch._dynamo.reset()
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3)).double()
    twin_model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3)).double()
    twin_model.load_state_dict(model.state_dict())
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, foreach=False)
    twin = ft.AdamW(twin_model.parameters(), lr=1e-2)
    step = torch.compile(twin.step)
    for k in range(6):
        x, y = torch.randn(32, 8, dtype=torch.float64), torch.randint(0, 3, (32,))
        for m, o in ((model, opt), (twin_model, None)):
            m.zero_grad()
            torch.nn.functional.cross_entropy(m(x), y).backward()
        opt.step()
        step()
    assert_equal(list(twin_model.parameters()), list(model.parameters()), rtol=1e-10, atol=1e-12)


def test_a_tensor_lr_changed_every_step_does_not_recompile():
    from torch._dynamo.testing import CompileCounter

    torch._dynamo.reset()
    params, torch_params = make_params(), make_params()
    twin = ft.Adam(params, lr=torch.tensor(0.01, dtype=torch.float64))
    reference = torch.optim.Adam(torch_params, lr=torch.tensor(0.01, dtype=torch.float64), foreach=False)
    set_grads([params, torch_params], 0)
    twin.step()
    reference.step()
    counter = CompileCounter()
    step = torch.compile(twin.step, backend=counter)
    for k in range(1, 6):
        for opt in (twin, reference):
            opt.param_groups[0]["lr"].fill_(0.01 / k)
        set_grads([params, torch_params], k)
        step()
        reference.step()
    assert counter.frame_count == 1
    assert_equal(params, torch_params, rtol=1e-10, atol=1e-12)


def test_bad_input_under_compile_is_refused_by_name_and_changes_nothing():
    torch._dynamo.reset()
    params = make_params()
    twin = ft.AdamW(grouped(params, 1e-2), lr=1e-2)
    set_grads([params], 0)
    twin.step()
    step = torch.compile(twin.step, backend="aot_eager")
    set_grads([params], 1)
    step()
    twin.param_groups[1]["lr"] = -1.0
    set_grads([params], 2)
    before = [p.detach().clone() for p in params] + [v.clone() for s in twin.state.values() for v in s.values()]
    with pytest.raises(ValueError, match="param group 1.*lr"):
        step()
    after = [p.detach().clone() for p in params] + [v.clone() for s in twin.state.values() for v in s.values()]
    assert all(torch.equal(a, b) for a, b in zip(before, after))


def test_the_custom_op_passes_opcheck():
    params = make_params()
    twin = ft.AdamW(params, lr=1e-2)
    set_grads([params], 0)
    twin.step()
    keys = tuple(twin.state[params[0]])
    detached = [p.detach().clone() for p in params]
    grads = [p.grad.clone() for p in params]
    states = [twin.state[p][key].clone() for key in keys for p in params]
    options = _compile._group_options(twin.param_groups[0])
    layout = repr(((len(params), keys, options),))
    torch.library.opcheck(torch.ops.fastopt.twin_step_.default, ("AdamW", detached, grads, states, [None], layout))


def test_a_first_compiled_step_runs_eagerly_without_dynamo_tracing_into_fastopt():
    # The first step makes the state eagerly (outside the graph): Dynamo must not trace into the step's
    # Python up to the kernel, a C function it cannot trace (it warned "does not know how to trace the
    # builtin fastopt._core.adamw_").
    import warnings

    torch._dynamo.reset()
    params, torch_params = make_params(), make_params()
    twin = ft.AdamW(params, lr=1e-2)
    reference = torch.optim.AdamW(torch_params, lr=1e-2, foreach=False)
    step = torch.compile(twin.step)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for k in range(3):
            set_grads([params, torch_params], k)
            step()
            reference.step()
    assert not [w for w in caught if "fastopt" in str(w.message)], [str(w.message) for w in caught]
    assert_equal(params, torch_params, rtol=1e-10, atol=1e-12)
