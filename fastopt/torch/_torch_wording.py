"""torch.optim's wording for the hyperparameter errors of the twins' constructors and param groups.

fastopt's own messages say the rule ("lr must be >= 0, got -1.0"); torch.optim's constructors say
"Invalid learning rate: -1". Code written against torch.optim matches on torch's words
(`pytest.raises(ValueError, match="Invalid learning rate")`), so a twin's ValueError for a hyperparameter
torch checks starts with torch's phrase and the value as given, and keeps fastopt's rule after it:

    ValueError: Invalid learning rate: -1 (lr must be >= 0, got -1.0)

The phrases are torch 2.13's (torch/optim/*.py), looked up by the name fastopt's rules report; a twin whose
torch class words them its own way (Adafactor: "Learning rate should be >= 0 but is: -1") passes its own.
"""

from __future__ import annotations

import contextlib
import re
from typing import Any, Callable, Dict, Optional, Tuple

Phrases = Dict[str, Tuple[str, Callable[[Dict[str, Any]], Any]]]


def _value(name: str) -> Callable[[Dict[str, Any]], Any]:
    return lambda h: h.get(name)


def _item(name: str, index: int) -> Callable[[Dict[str, Any]], Any]:
    """The value at `index` of a pair option (betas, eps), or None."""
    def value_of(hyper: Dict[str, Any]) -> Any:
        try:
            return hyper.get(name)[index]
        except (TypeError, IndexError, KeyError):
            return None
    return value_of


def _etas(hyper: Dict[str, Any]) -> str:
    """Rprop's pair as torch prints it: "{etas[0]}, {etas[1]}"."""
    return f"{_item('etas', 0)(hyper)}, {_item('etas', 1)(hyper)}"


# name in fastopt's message -> (torch's message, its "{}" the value as the user gave it; how to find the value)
PHRASES: Phrases = {
    "lr": ("Invalid learning rate: {}", _value("lr")),
    "eps": ("Invalid epsilon value: {}", _value("eps")),
    "beta1": ("Invalid beta parameter at index 0: {}", _item("betas", 0)),
    "beta2": ("Invalid beta parameter at index 1: {}", _item("betas", 1)),
    "momentum": ("Invalid momentum value: {}", _value("momentum")),
    "weight_decay": ("Invalid weight_decay value: {}", _value("weight_decay")),
    "lr_decay": ("Invalid lr_decay value: {}", _value("lr_decay")),
    "initial_accumulator_value": ("Invalid initial_accumulator_value value: {}", _value("initial_accumulator_value")),
    "alpha": ("Invalid alpha value: {}", _value("alpha")),
    "rho": ("Invalid rho value: {}", _value("rho")),  # Adadelta
    "momentum_decay": ("Invalid momentum_decay value: {}", _value("momentum_decay")),  # NAdam
    "etaminus": ("Invalid eta values: {}", _etas),  # Rprop: one message for the pair
    "etaplus": ("Invalid eta values: {}", _etas),
}
# torch.optim.Adafactor's own words ("... should be >= 0 but is: -1")
ADAFACTOR_PHRASES: Phrases = {
    "lr": ("Learning rate should be >= 0 but is: {}", _value("lr")),
    "beta2_decay": ("beta2_decay should be <= 0 but is: {}", _value("beta2_decay")),
    "eps1": ("epsilon1 should be >= 0 but is: {}", _item("eps", 0)),
    "eps2": ("epsilon2 should be >= 0 but is: {}", _item("eps", 1)),
    "d": ("Clipping threshold d should be >= 1 but is: {}", _value("d")),
    "weight_decay": ("weight_decay should be >= 0 but is: {}", _value("weight_decay")),
}
# Messages torch words without a value.
_WHOLE = {
    "nesterov": "Nesterov momentum requires a momentum and zero dampening",
}
_TENSOR_LR = re.compile(r"lr must be a real number or a one-element tensor, got a tensor of \d+ elements")
# The rules torch words as "Invalid ...": a sign, a bound or an interval (not a kind or the float range).
_VALUE_RULE = re.compile(r" must be (>=|>|<=|<|in [\[(])")
# "[param group k: ]name rest": the prefix fastopt._hyper.named adds, then the name fastopt's rule reports.
_MESSAGE = re.compile(r"^(?P<where>(?:param group \d+: )?)(?P<name>\w+)(?P<rest>[ =].*)$", re.S)


def _value_text(value: Any) -> str:
    """The value as torch prints it: its f-string of what the user passed (-1, not -1.0)."""
    try:
        return f"{value}"
    except Exception:  # (a value whose formatting fails: leave the number out)
        return "?"


def reworded(error: ValueError, hyper: Dict[str, Any], phrases: Optional[Phrases] = None) -> Optional[ValueError]:
    """`error` with torch's phrase in front, or None when torch has no words for it."""
    phrases = PHRASES if phrases is None else phrases
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
    if name not in phrases or not _VALUE_RULE.match(match["rest"]):
        return None  # (a value of the wrong kind or beyond the float range: fastopt's words alone)
    phrase, value_of = phrases[name]
    return ValueError(f"{where}{phrase.format(_value_text(value_of(hyper)))} ({body})")


@contextlib.contextmanager
def torch_wording(hyper: Dict[str, Any], phrases: Optional[Phrases] = None):
    """A plain ValueError raised inside about a hyperparameter of `hyper` (a constructor's defaults or a
    param group) comes out with torch's phrase in front (see the module docstring; `phrases`: the twin's
    torch class's own words, PHRASES by default). Other errors pass."""
    try:
        yield
    except ValueError as error:
        if type(error) is not ValueError:
            raise
        better = reworded(error, hyper, phrases)
        if better is None:
            raise
        raise better from error
