"""What a Python-side optimizer description holds: everything fastopt.optim's class and fastopt.torch's
twin need beyond the kernel (which the C++ rule describes: csrc/include/fastopt/rule.h).

A module per optimizer (fastopt/rules/<name>.py) defines one ``SPEC = RuleSpec(...)``; fastopt.optim and
fastopt.torch build their classes from it (fastopt/optim/_from_rule.py, fastopt/torch/_from_rule.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Optional, Tuple


@dataclass(frozen=True)
class State:
    """One state array per parameter: torch's state name, the kernel argument it is passed as, and its
    first value (``fill(group)``: a number every element starts at; zeros by default)."""

    key: str
    operand: str
    fill: Callable[[Dict[str, Any]], float] = lambda group: 0.0


@dataclass(frozen=True)
class Scalars:
    """Numbers kept per parameter beside the arrays, as torch keeps them (0-d tensors of its default scalar
    dtype in the twin, floats in fastopt.optim): NAdam's mu_product, ASGD's eta and mu.

    ``initial(group)`` gives their first values; ``before(group, values, step)`` updates ``values`` (a dict
    key -> number or 0-d tensor, changed in place with ``*=`` or replaced) ahead of the kernel call of
    update ``step`` and returns the kernel's extra arguments; ``after(group, values, step)`` updates them
    once the call is done."""

    keys: Tuple[str, ...]
    initial: Callable[[Dict[str, Any]], Dict[str, float]]
    before: Callable[[Dict[str, Any], Dict[str, Any], int], Dict[str, float]]
    after: Callable[[Dict[str, Any], Dict[str, Any], int], None] = lambda group, values, step: None


@dataclass(frozen=True)
class RuleSpec:
    #: the class name ("Lion") and the kernel function of fastopt._core ("lion_")
    name: str
    kernel: str
    #: the constructor's hyperparameters after ``params``, in order, with their defaults (fastopt.optim's
    #: class and the twin's positional arguments)
    defaults: Dict[str, Any]
    #: the state arrays, in the kernel's operand order
    state: Tuple[State, ...]
    #: the kernel's hyperparameter arguments from a param group (lr first)
    kernel_args: Callable[[Dict[str, Any]], Dict[str, Any]]
    #: the kernel takes step= (bias corrections, step-dependent factors)
    uses_step: bool
    #: one paragraph for both classes' docstrings
    doc: str
    #: torch.optim's class of the same optimizer, if it has one (the twin then takes torch's signature
    #: and state_dict, and differentiable=True groups are stepped by torch's class)
    torch_name: Optional[str] = None
    #: the twin's keyword-only arguments beyond ``defaults`` (torch's foreach, capturable, ...)
    torch_keywords: Dict[str, Any] = field(default_factory=dict)
    #: numbers kept per parameter beside the arrays (see Scalars)
    scalars: Optional[Scalars] = None
