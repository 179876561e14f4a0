"""The twins' constructor errors in torch.optim's words: for every bad hyperparameter torch.optim's own
constructor refuses, the twin raises the same exception type, and for a ValueError its message contains
torch's message exactly (so `pytest.raises(ValueError, match="Invalid learning rate")` written against
torch.optim keeps working), followed by fastopt's rule. torch's messages are read from torch itself."""
import re

import pytest

torch = pytest.importorskip("torch")
import fastopt.torch as ft  # noqa: E402

BAD = {
    "SGD": [dict(lr=-1), dict(lr=0.1, momentum=-0.5), dict(lr=0.1, weight_decay=-1e-3),
            dict(lr=0.1, nesterov=True), dict(lr=0.1, momentum=0.9, dampening=0.1, nesterov=True),
            dict(lr=-0.0 - 1e-9)],
    "Adam": [dict(lr=-1), dict(eps=-1e-8), dict(betas=(1.0, 0.9)), dict(betas=(0.9, -0.1)),
             dict(betas=(0.9, 1.5)), dict(weight_decay=-1), dict(lr=torch.tensor([1e-3, 2e-3]))],
    "AdamW": [dict(lr=-1e-3), dict(eps=-1), dict(betas=(-0.5, 0.9)), dict(weight_decay=-0.01)],
    "Adagrad": [dict(lr=-1), dict(lr_decay=-1), dict(weight_decay=-1), dict(initial_accumulator_value=-1),
                dict(eps=-1)],
    "RMSprop": [dict(lr=-1), dict(eps=-1), dict(momentum=-1), dict(weight_decay=-1), dict(alpha=-1)],
}
CASES = [(name, kwargs) for name, cases in BAD.items() for kwargs in cases]


def params():
    return [torch.zeros(3, requires_grad=True)]


def refusal(cls, kwargs):
    with pytest.raises(Exception) as info:
        cls(params(), **kwargs)
    return info.value


@pytest.mark.parametrize("name,kwargs", CASES, ids=[f"{n}-{sorted(k)}" for n, k in CASES])
def test_constructor_errors_carry_torchs_type_and_message(name, kwargs):
    theirs = refusal(getattr(torch.optim, name), kwargs)
    ours = refusal(getattr(ft, name), kwargs)
    assert type(ours) is type(theirs), (ours, theirs)
    assert str(ours).startswith(str(theirs)), (str(ours), str(theirs))
    assert "(" in str(ours) and str(ours).endswith(")"), "fastopt's own rule follows torch's words"


@pytest.mark.parametrize("name,kwargs", CASES, ids=[f"{n}-{sorted(k)}" for n, k in CASES])
def test_a_bad_param_group_says_which_in_torchs_words(name, kwargs):
    if "initial_accumulator_value" in kwargs:
        pytest.skip("Adagrad fills every sum from the constructor's value (as torch): a group's is not read")
    theirs = refusal(getattr(torch.optim, name), kwargs)
    opt = getattr(ft, name)(params(), **({"lr": 0.1} if name == "SGD" else {}))
    group = dict(kwargs, params=params())
    if name == "SGD":
        group.setdefault("lr", 0.1)
    before = len(opt.param_groups)
    with pytest.raises(ValueError) as info:
        opt.add_param_group(group)
    assert str(info.value).startswith(f"param group 1: {theirs}"), str(info.value)
    assert len(opt.param_groups) == before  # (a refused group is not kept, as by torch's own refusals)


def test_a_value_torch_accepts_keeps_fastopts_own_words():
    # fastopt needs eps > 0 where torch takes eps = 0: the message says fastopt's rule, in torch's form.
    torch.optim.Adam(params(), eps=0.0)
    with pytest.raises(ValueError, match=re.escape("Invalid epsilon value: 0.0 (eps must be > 0")):
        ft.Adam(params(), eps=0.0)


def test_kind_errors_are_type_errors_as_in_torch():
    for cls in (torch.optim.SGD, ft.SGD):
        with pytest.raises(TypeError):
            cls(params(), lr="x")
