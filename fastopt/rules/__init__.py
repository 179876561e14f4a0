"""The Python side of the optimizers described as rules (csrc/include/fastopt/registry.h): one module per
optimizer with its ``SPEC``, from which fastopt.optim and fastopt.torch build their classes."""

from fastopt.rules import adadelta, adamax, asgd, lamb, lion, nadam, radam, rprop

#: every rule's description, in the order the classes are exported
SPECS = (nadam.SPEC, radam.SPEC, adamax.SPEC, adadelta.SPEC, asgd.SPEC, rprop.SPEC, lion.SPEC, lamb.SPEC)

#: the registered rules that are passes of an optimizer rather than one: Muon's elementwise steps around its
#: Newton-Schulz iteration (fastopt._muon), public as fastopt.muon_momentum_ and fastopt.muon_apply_
PASSES = ("muon_momentum_", "muon_apply_")

__all__ = ["SPECS", "PASSES"]
