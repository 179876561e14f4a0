"""Rprop (Riedmiller & Braun 1993), torch.optim.Rprop's numbers. Kernel: csrc/include/fastopt/rprop.h.
torch's lr is only the first step size of every element."""

from fastopt.rules._spec import RuleSpec, State

SPEC = RuleSpec(
    name="Rprop",
    kernel="rprop_",
    defaults=dict(lr=1e-2, etas=(0.5, 1.2), step_sizes=(1e-6, 50.0)),
    state=(State("prev", "prevs"), State("step_size", "step_sizes", fill=lambda group: group["lr"])),
    kernel_args=lambda group: dict(etaminus=group["etas"][0], etaplus=group["etas"][1],
                                   step_size_min=group["step_sizes"][0], step_size_max=group["step_sizes"][1],
                                   maximize=group["maximize"]),
    uses_step=False,
    doc="Rprop. State per parameter: ``step``, ``prev``, ``step_size`` (starting at lr).",
    torch_name="Rprop",
    torch_keywords=dict(capturable=False, foreach=None, maximize=False, differentiable=False),
)
