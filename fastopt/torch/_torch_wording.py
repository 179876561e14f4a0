"""torch.optim's wording for the hyperparameter errors of the twins' constructors and param groups.

fastopt's own messages say the rule ("lr must be >= 0, got -1.0"); torch.optim's constructors say
"Invalid learning rate: -1". Code written against torch.optim matches on torch's words
(`pytest.raises(ValueError, match="Invalid learning rate")`), so a twin's ValueError for a hyperparameter
torch checks starts with torch's phrase and the value as given, and keeps fastopt's rule after it:

    ValueError: Invalid learning rate: -1 (lr must be >= 0, got -1.0)

The phrases are torch 2.13's (torch/optim/*.py), looked up by the name fastopt's rules report.
"""

from __future__ import annotations

import contextlib
import re
from typing import Any, Dict, Optional

# name in fastopt's message -> (torch's phrase, how to find the value as the user gave it)
_PHRASES = {
    "lr": ("Invalid learning rate", lambda h: h.get("lr")),
    "eps": ("Invalid epsilon value", lambda h: h.get("eps")),
    "beta1": ("Invalid beta parameter at index 0", lambda h: _beta(h, 0)),
    "beta2": ("Invalid beta parameter at index 1", lambda h: _beta(h, 1)),
    "momentum": ("Invalid momentum value", lambda h: h.get("momentum")),
    "weight_decay": ("Invalid weight_decay value", lambda h: h.get("weight_decay")),
    "lr_decay": ("Invalid lr_decay value", lambda h: h.get("lr_decay")),
    "initial_accumulator_value": ("Invalid initial_accumulator_value value",
                                  lambda h: h.get("initial_accumulator_value")),
    "alpha": ("Invalid alpha value", lambda h: h.get("alpha")),
}
# Messages torch words without a value.
_WHOLE = {
    "nesterov": "Nesterov momentum requires a momentum and zero dampening",
}
_TENSOR_LR = re.compile(r"lr must be a real number or a one-element tensor, got a tensor of \d+ elements")
# The rules torch words as "Invalid ...": a sign or an interval (not a kind or the float range).
_VALUE_RULE = re.compile(r" must be (>=|>|in [\[(])")
# "[param group k: ]name rest": the prefix fastopt._hyper.named adds, then the name fastopt's rule reports.
_MESSAGE = re.compile(r"^(?P<where>(?:param group \d+: )?)(?P<name>\w+)(?P<rest>[ =].*)$", re.S)


def _beta(hyper: Dict[str, Any], index: int) -> Any:
    betas = hyper.get("betas")
    try:
        return betas[index]
    except (TypeError, IndexError, KeyError):
        return None


def _value_text(value: Any) -> str:
    """The value as torch prints it: its f-string of what the user passed (-1, not -1.0)."""
    try:
        return f"{value}"
    except Exception:  # (a value whose formatting fails: leave the number out)
        return "?"


def reworded(error: ValueError, hyper: Dict[str, Any]) -> Optional[ValueError]:
    """`error` with torch's phrase in front, or None when torch has no words for it."""
    message = str(error)
    match = _MESSAGE.match(message)
    if match is None:
        return None
    where, name = match["where"], match["name"]
    body = message[len(where):]
    if name == "lr" and _TENSOR_LR.match(body):
        return ValueError(f"{where}Tensor lr must be 1-element ({body})")
    if name in _WHOLE:
        return ValueError(f"{where}{_WHOLE[name]} ({body})")
    if name not in _PHRASES or not _VALUE_RULE.match(match["rest"]):
        return None  # (a value of the wrong kind or beyond the float range: fastopt's words alone)
    phrase, value_of = _PHRASES[name]
    return ValueError(f"{where}{phrase}: {_value_text(value_of(hyper))} ({body})")


@contextlib.contextmanager
def torch_wording(hyper: Dict[str, Any]):
    """A plain ValueError raised inside about a hyperparameter of `hyper` (a constructor's defaults or a
    param group) comes out with torch's phrase in front (see the module docstring). Other errors pass."""
    try:
        yield
    except ValueError as error:
        if type(error) is not ValueError:
            raise
        better = reworded(error, hyper)
        if better is None:
            raise
        raise better from error
