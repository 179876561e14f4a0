"""A refused step changes nothing, in fastopt.optim and in the torch twins (fastopt.torch).

A step may make several kernel calls (one per param group, dtype and step number). Everything the step will
use (every group's parameters and hyperparameters, every gradient, every state entry and step count) is checked
before the first call, errors name the parameter by its index in the whole optimizer, and a step count is
advanced only by an update that happened. Loading (load_state_dict) refuses a state the optimizer could not
step from, instead of failing at the next step.

Each case builds an optimizer whose FIRST group is valid and has taken steps, with the fault in a later
group, and compares every parameter, state entry and step count bit for bit after the refusal.
"""

from __future__ import annotations

import copy
import re

import numpy as np
import pytest

import fastopt
from fastopt import optim

NAMES = ["SGD", "Adagrad", "RMSprop", "Adam", "AdamW"]
HYPER = {"SGD": dict(lr=0.1, momentum=0.9), "Adagrad": dict(lr=0.1), "RMSprop": dict(lr=0.01, centered=True),
         "Adam": dict(lr=0.01, amsgrad=True), "AdamW": dict(lr=0.01)}
MAX_COUNT = 2**63 - 2  # the largest step count whose next step number fits the kernels' int64


# ------------------------------------------------------------------------------------ fastopt.optim

def two_groups(name, second_dtype=np.float32, **hyper):
    """Group 0: a float64 parameter; group 1: one of `second_dtype` (two kernel calls); both stepped twice."""
    rng = np.random.default_rng(0)
    params = [rng.standard_normal(5), rng.standard_normal(3).astype(second_dtype)]
    opt = getattr(optim, name)([{"params": params[:1]}, {"params": params[1:]}], **{**HYPER[name], **hyper})
    for _ in range(2):
        opt.step(grads_for(params))
    return opt, params


def grads_for(params):
    return [np.full(p.shape, 0.5, p.dtype) for p in params]


def fingerprint(opt):
    params = [np.asarray(p).tobytes() for p in opt._all_params()]
    state = {i: {k: (v.tobytes() if isinstance(v, np.ndarray) else repr(v)) for k, v in s.items()}
             for i, s in opt.state.items()}
    return params, state, list(opt.schedule_steps)


def refused(opt, grads, error, match):
    before = fingerprint(opt)
    with pytest.raises(error, match=match):
        opt.step(grads)
    assert fingerprint(opt) == before


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("bad,error,what", [
    (np.ones(3, np.complex64), TypeError, "dtype complex64"),
    (np.ones(3, np.int32), TypeError, "dtype int32"),
    (np.ones((3, 2))[:, 0], ValueError, "not C-contiguous"),
    (np.ma.masked_array(np.ones(3), [0, 1, 0]), TypeError, "masked"),
    ([1.0, 2.0, 3.0], TypeError, "must be a numpy.ndarray"),
], ids=["complex64", "int32", "strided", "masked", "list"])
def test_an_array_appended_to_a_group_is_refused_by_its_own_index(name, bad, error, what):
    """The issue's case: an array appended to param_groups[0]['params'] after construction. It is
    params[1] (group 0's second), and params[0] (in a call of its own) must not have been updated."""
    opt, params = two_groups(name)
    opt.param_groups[0]["params"].append(bad)
    grads = [np.ones(5), np.ones(3, getattr(bad, "dtype", np.float64)), np.ones(3, np.float32)]
    refused(opt, grads, error, re.escape("params[1]") + ".*" + what)


@pytest.mark.parametrize("name", NAMES)
def test_a_read_only_array_appended_to_a_group_is_refused(name):
    opt, params = two_groups(name)
    bad = np.ones(3)
    bad.flags.writeable = False
    opt.param_groups[0]["params"].append(bad)
    refused(opt, [np.ones(5), np.ones(3), np.ones(3, np.float32)], ValueError, re.escape("params[1] is read-only"))


STATE_FAULTS = [  # (name, edit of the LAST parameter's state, error, message)
    ("Adam", lambda s: s.update(exp_avg=np.zeros(4, np.float32)), ValueError, r"state\[1\]\['exp_avg'\]"),
    ("Adam", lambda s: s.update(exp_avg=np.zeros(3)), ValueError, r"state\[1\]\['exp_avg'\] is float64"),
    ("Adam", lambda s: s.update(exp_avg=[0.0, 0.0, 0.0]), TypeError, r"state\[1\]\['exp_avg'\] must be a numpy"),
    ("Adam", lambda s: s.update(step="3"), TypeError, r"state\[1\]\['step'\] must be an int"),
    ("Adam", lambda s: s.update(step=2.0), TypeError, r"state\[1\]\['step'\] must be an int"),
    ("Adam", lambda s: s.update(step=-1), ValueError, r"state\[1\]\['step'\] is -1"),
    ("Adam", lambda s: s.update(step=2**70), ValueError, r"state\[1\]\['step'\] is 1180591620717411303424"),
    ("Adam", lambda s: s.pop("exp_avg_sq"), ValueError, r"params\[1\] lacks \['exp_avg_sq'\]"),
    ("Adam", lambda s: s.update(momentum_buffer=np.zeros(3, np.float32)), ValueError, "unknown entry 'momentum_buffer'"),
    ("Adagrad", lambda s: s.update(sum=None), TypeError, r"state\[1\]\['sum'\] must be a numpy"),
    ("RMSprop", lambda s: s.update(grad_avg=np.zeros(3, np.float32)[::-1]), ValueError, "not a writeable C-contiguous"),
    ("SGD", lambda s: s.update(momentum_buffer=np.zeros(2, np.float32)), ValueError, r"state\[1\]\['momentum_buffer'\]"),
    ("SGD", lambda s: s.update(momentum_buffer="zeros"), TypeError, r"state\[1\]\['momentum_buffer'\]"),
]


@pytest.mark.parametrize("name,edit,error,match", STATE_FAULTS)
def test_bad_state_in_a_later_group_is_refused_before_the_first_call(name, edit, error, match):
    opt, params = two_groups(name)
    edit(opt.state[1])
    refused(opt, grads_for(params), error, match)


@pytest.mark.parametrize("grads_first", [None, "ones"])
def test_indices_count_parameters_without_a_gradient(grads_first):
    """A parameter skipped (grad None) still has its index: the fault of params[2] is named params[2]."""
    rng = np.random.default_rng(1)
    params = [rng.standard_normal(4) for _ in range(3)]
    opt = optim.Adam(params, lr=0.1)
    opt.step([np.ones(4) for _ in range(3)])
    opt.state[2]["exp_avg"] = np.zeros(5)
    first = None if grads_first is None else np.ones(4)
    refused(opt, [first, np.ones(4), np.ones(4)], ValueError, re.escape("state[2]['exp_avg']"))


@pytest.mark.parametrize("name", NAMES)
def test_bad_hyperparameter_in_a_later_group_names_the_group(name):
    opt, params = two_groups(name)
    opt.param_groups[1]["lr"] = "fast"
    refused(opt, grads_for(params), TypeError, "param group 1: lr must be a real number")


def test_tiny_eps_with_a_float32_group_after_a_float64_group():
    """When the kernels refuse an eps that is 0 in float32 (issue 14, item 10), the float64 group in front
    of the float32 one must not have been updated: the later call's rules run on empty stand-ins of its
    dtype before the first call writes."""
    opt, params = two_groups("Adam")
    opt.param_groups[1]["eps"] = 1e-50
    refused(opt, grads_for(params), ValueError, "eps")


@pytest.mark.parametrize("name", ["Adagrad", "Adam", "AdamW"])
def test_a_refused_step_never_advances_a_count(name):
    """The issue's case: a count at the top of the range. Its next step is the last one the kernels can
    number; the step after it is refused, and refused again, without the count moving."""
    opt, params = two_groups(name)
    opt.state[1]["step"] = MAX_COUNT
    opt.step(grads_for(params))
    assert opt.state[1]["step"] == MAX_COUNT + 1 and opt.state[0]["step"] == 3
    for _ in range(2):
        refused(opt, grads_for(params), ValueError, re.escape("state[1]['step']"))
    assert opt.state[0]["step"] == 3


class Refusing(optim.Adam):
    """An Adam whose kernel refuses every call with elements to update (not the checks' calls on empty
    stand-ins): a refusal only the kernel itself makes."""

    def _update(self, group, params, grads, states, step_key, grad_scale=1.0):
        if any(p.size for p in params):
            raise ValueError("refused by the kernel")
        super()._update(group, params, grads, states, step_key, grad_scale)


def test_a_call_refused_by_the_kernel_keeps_no_state_and_counts_nothing():
    """Fresh state is made for a parameter's first step and counts are advanced per call; when the call
    is refused, neither is kept (before, the count moved and the fresh state stayed)."""
    p = np.ones(3)
    opt = Refusing([p], lr=0.1)
    for _ in range(2):
        refused(opt, [np.ones(3)], ValueError, "refused by the kernel")
    assert opt.state == {}
    opt.state[0] = {"step": 4, "exp_avg": np.zeros(3), "exp_avg_sq": np.zeros(3)}
    refused(opt, [np.ones(3)], ValueError, "refused by the kernel")
    assert opt.state[0]["step"] == 4


# ---------------------------------------------------------------- fastopt.optim: load_state_dict

def stepped(name, **hyper):
    rng = np.random.default_rng(3)
    params = [rng.standard_normal(4), rng.standard_normal(3)]
    opt = getattr(optim, name)(params, **{**HYPER[name], **hyper})
    opt.step(grads_for(params))
    return opt, params


def load_refused(opt, state_dict, match):
    before = fingerprint(opt), copy.deepcopy([{k: v for k, v in g.items() if k != "params"} for g in opt.param_groups])
    with pytest.raises(ValueError, match=match):
        opt.load_state_dict(state_dict)
    assert (fingerprint(opt), [{k: v for k, v in g.items() if k != "params"} for g in opt.param_groups]) == before


@pytest.mark.parametrize("step,match", [(2**70, "is 1180591620717411303424, not a step count"),
                                        (-1, "is -1, not a step count"), ("3", "must be an int"),
                                        (1.0, "must be an int"), (True, "must be an int"), (None, "must be an int")])
def test_load_refuses_a_step_count_out_of_range(step, match):
    opt, params = stepped("Adam")
    sd = opt.state_dict()
    sd["state"][1]["step"] = step
    load_refused(opt, sd, re.escape("state[1]['step'] ") + match)
    opt.step(grads_for(params))  # and it still steps
    # The top of the range loads (a NumPy integer too) and takes its last step.
    sd = opt.state_dict()
    sd["state"][0]["step"] = np.int64(MAX_COUNT)
    opt.load_state_dict(sd)
    opt.step(grads_for(params))
    assert opt.state[0]["step"] == MAX_COUNT + 1


@pytest.mark.parametrize("source,target", [("SGD", "Adam"), ("Adam", "SGD"), ("Adam", "Adagrad"),
                                           ("RMSprop", "Adam"), ("Adagrad", "RMSprop")])
def test_load_refuses_another_optimizers_state_dict(source, target):
    """The issue's case: an SGD state_dict loaded into an Adam was accepted, then its step raised KeyError
    and left a 'step' entry behind."""
    saved, _ = stepped(source)
    opt, params = stepped(target)
    load_refused(opt, saved.state_dict(), "another optimizer|does not take")
    opt.step(grads_for(params))


def test_load_refuses_another_optimizers_state_with_matching_hyperparameters():
    """SGD's state under Adam's hyperparameters: the state itself is refused, naming what it lacks."""
    saved, _ = stepped("SGD")
    opt, params = stepped("Adam")
    sd = opt.state_dict()
    sd["state"] = saved.state_dict()["state"]
    load_refused(opt, sd, re.escape("lacks ['step', 'exp_avg', 'exp_avg_sq']"))


@pytest.mark.parametrize("edit,match", [
    (lambda sd: sd["state"][0].update(exp_avg=np.zeros(4, np.int64)), "dtype int64"),
    (lambda sd: sd["state"][0].update(exp_avg="zeros"), "must be a numpy.ndarray"),
    (lambda sd: sd["state"][0].update(junk=np.zeros(4)), "unknown entry 'junk'"),
    (lambda sd: sd["state"].update({0: [1, 2]}), "must be a dict"),
    (lambda sd: sd["state"].update({7: {}}), "parameter 7"),
    (lambda sd: sd["param_groups"][0].update(lr="fast"), "param group 0: lr must be a real number"),
    (lambda sd: sd["param_groups"][0].update(betas=(0.9, 1j)), re.escape("betas[1]")),
    (lambda sd: sd["param_groups"][0].update(eps=-1.0), "eps"),
    (lambda sd: sd.update(schedule_steps=[2**70]), re.escape("schedule_steps[0]")),
    (lambda sd: sd.update(schedule_steps=["1"]), re.escape("schedule_steps[0]")),
    (lambda sd: sd.update(param_groups="groups"), "list of dicts"),
    (lambda sd: sd.update(state=[]), "must be a dict"),
    (lambda sd: sd["param_groups"][0].update(params=[0, 0]), "more than one place"),
])
def test_load_refuses_wrong_types_anywhere(edit, match):
    opt, params = stepped("Adam")
    sd = opt.state_dict()
    edit(sd)
    load_refused(opt, sd, match)
    opt.step(grads_for(params))


# ------------------------------------------------------------------------------------ the torch twins

def twin_two_groups(name, second_size=3, **hyper):
    """Group 0: a float64 parameter; group 1: a float32 one (two kernel calls); both stepped twice."""
    torch = pytest.importorskip("torch")
    import fastopt.torch as ft

    params = [torch.nn.Parameter(torch.linspace(-1, 1, 5, dtype=torch.float64)),
              torch.nn.Parameter(torch.linspace(-1, 1, second_size, dtype=torch.float32))]
    opt = getattr(ft, name)([{"params": params[:1]}, {"params": params[1:]}], **{**HYPER[name], **hyper})
    for _ in range(2):
        for p in params:
            p.grad = torch.full_like(p, 0.5)
        opt.step()
    return opt, params


def twin_fingerprint(opt):
    import torch

    params = [p.detach().clone() for g in opt.param_groups for p in g["params"]]
    state = {i: {k: v.detach().clone() if torch.is_tensor(v) else v for k, v in opt.state[p].items()}
             for i, p in enumerate(p for g in opt.param_groups for p in g["params"]) if p in opt.state}
    return params, state


def twin_refused(opt, error, match):
    import torch

    before = twin_fingerprint(opt)
    with pytest.raises(error, match=match):
        opt.step()
    params, state = twin_fingerprint(opt)
    assert all(torch.equal(a, b) for a, b in zip(params, before[0]))
    assert state.keys() == before[1].keys()
    for i, s in state.items():
        assert s.keys() == before[1][i].keys(), f"state[{i}] gained or lost entries"
        for k, v in s.items():
            w = before[1][i][k]
            assert (torch.equal(v, w) if torch.is_tensor(v) else v == w) or (v != v and w != w), f"state[{i}][{k!r}]"


@pytest.mark.parametrize("name,edit,error,match", [
    ("Adam", lambda s: s.update(step=float("nan")), TypeError, r"state\[1\]\['step'\] must be a one-element"),
    ("Adam", lambda s: s["step"].fill_(float("nan")), ValueError, r"state\[1\]\['step'\] is nan"),
    ("Adam", lambda s: s["step"].fill_(-3.0), ValueError, r"state\[1\]\['step'\] is -3"),
    ("Adam", lambda s: s["step"].fill_(2.5), ValueError, r"state\[1\]\['step'\] is 2.5"),
    ("Adagrad", lambda s: s["step"].fill_(float("inf")), ValueError, r"state\[1\]\['step'\] is inf"),
    ("AdamW", lambda s: s["step"].fill_(2.0**70), ValueError, r"state\[1\]\['step'\] is 1180591620717411303424"),
    ("Adam", lambda s: s.pop("exp_avg"), ValueError, r"state\[1\] lacks \['exp_avg'\]"),
    ("Adagrad", lambda s: s.pop("step"), ValueError, r"state\[1\] lacks \['step'\]"),
    ("RMSprop", lambda s: s.update(square_avg=None), TypeError, r"state\[1\]\['square_avg'\] must be a tensor"),
    ("Adam", lambda s: s.update(max_exp_avg_sq=None), TypeError, r"state\[1\]\['max_exp_avg_sq'\] must be a tensor"),
])
def test_twin_bad_state_in_a_later_group_changes_nothing(name, edit, error, match):
    opt, params = twin_two_groups(name)
    edit(opt.state[params[1]])
    twin_refused(opt, error, match)


def test_twin_integer_step_tensor_is_refused_before_any_update():
    """torch's `step += 1` on an integer count would fail after the update; the step refuses it first."""
    torch = pytest.importorskip("torch")
    opt, params = twin_two_groups("Adam")
    opt.state[params[1]]["step"] = torch.tensor(2)
    twin_refused(opt, TypeError, r"state\[1\]\['step'\] must be a one-element floating-point tensor")


def test_twin_refused_call_keeps_no_new_state_entries():
    """amsgrad switched on in a later group with a bad eps: the refused step must not leave the
    'max_exp_avg_sq' entries it would have created."""
    opt, params = twin_two_groups("Adam", amsgrad=False)
    for group in opt.param_groups:
        group["amsgrad"] = True
    opt.param_groups[1]["eps"] = -1.0
    twin_refused(opt, ValueError, "param group 1: eps")
    opt.param_groups[0]["eps"] = -1.0  # one call only: the kernel's refusal itself
    opt.param_groups[1]["params"][0].grad = None
    twin_refused(opt, ValueError, "param group 0: eps")


def test_twin_negated_view_in_a_later_group_is_refused_first():
    """A gradient with torch's negative bit (issue 14, item 8: `.conj().imag`) was found only when group 1's
    arrays were taken, after group 0 was updated."""
    torch = pytest.importorskip("torch")
    opt, params = twin_two_groups("SGD", second_size=1)
    params[1].grad = torch.tensor([1 + 2j], dtype=torch.complex64).conj().imag  # value -2, memory +2
    assert params[1].grad.is_neg() and params[1].grad.is_contiguous()
    twin_refused(opt, TypeError, r"params\[1\]\.grad has its negative bit set")


@pytest.mark.parametrize("name", ["Adam", "Adagrad", "RMSprop"])
def test_twin_load_refuses_a_step_count_out_of_range(name):
    torch = pytest.importorskip("torch")
    opt, params = twin_two_groups(name)
    for bad, match in [(torch.tensor(2.0**70), "1180591620717411303424, not a step count"),
                       (torch.tensor(float("nan")), "nan, not a whole number"), (-1, "-1, not a step count"),
                       ("3", "must be a real number"), (torch.tensor([1.0, 2.0]), "not a step count")]:
        sd = opt.state_dict()
        sd["state"][1] = dict(sd["state"][1], step=bad)  # (state_dict() shares the optimizer's own dicts)
        before = twin_fingerprint(opt)
        with pytest.raises(ValueError, match=re.escape("state[1]['step']") + ".*" + re.escape(match)):
            opt.load_state_dict(sd)
        after = twin_fingerprint(opt)
        assert all(torch.equal(a, b) for a, b in zip(after[0], before[0]))
        assert all(torch.equal(after[1][i]["step"], before[1][i]["step"]) for i in before[1])


@pytest.mark.parametrize("source,target,match", [
    ("SGD", "Adam", r"lacks \['step', 'exp_avg', 'exp_avg_sq'\]"),
    ("Adam", "SGD", "entries .* that SGD does not keep"),
    ("Adagrad", "RMSprop", r"lacks \['square_avg'\]"),
])
def test_twin_load_refuses_another_optimizers_state(source, target, match):
    torch = pytest.importorskip("torch")
    saved, _ = twin_two_groups(source)
    opt, params = twin_two_groups(target)
    before = twin_fingerprint(opt)
    with pytest.raises(ValueError, match=match):
        opt.load_state_dict(saved.state_dict())
    after = twin_fingerprint(opt)
    assert all(torch.equal(a, b) for a, b in zip(after[0], before[0]))
    assert after[1].keys() == before[1].keys()
    opt.step()  # still steps


def test_twin_load_refuses_a_bad_hyperparameter():
    opt, params = twin_two_groups("Adam")
    sd = opt.state_dict()
    sd["param_groups"][1]["lr"] = "fast"
    lr = opt.param_groups[1]["lr"]
    with pytest.raises(ValueError, match="param group 1: lr must be a real number"):
        opt.load_state_dict(sd)
    assert opt.param_groups[1]["lr"] == lr


def test_twin_load_still_takes_torch_optims_state_dict():
    """The checks accept what torch.optim writes (a float step tensor, or a number from older versions)."""
    torch = pytest.importorskip("torch")
    import fastopt.torch as ft

    model = torch.nn.Linear(3, 2).double()
    reference = torch.optim.Adam(model.parameters(), lr=0.01, amsgrad=True)
    model(torch.ones(1, 3, dtype=torch.float64)).sum().backward()
    reference.step()
    twin = ft.Adam(model.parameters(), lr=0.01, amsgrad=True)
    sd = reference.state_dict()
    twin.load_state_dict(sd)
    sd["state"][0]["step"] = 1  # (a number, as torch < 1.12 saved it)
    twin.load_state_dict(sd)
    twin.step()
    assert float(twin.state[model.weight]["step"]) == 2.0
