"""Adadelta (Zeiler 2012), torch.optim.Adadelta's numbers. Kernel: csrc/include/fastopt/adadelta.h."""

from fastopt.rules._spec import RuleSpec, State

SPEC = RuleSpec(
    name="Adadelta",
    kernel="adadelta_",
    defaults=dict(lr=1.0, rho=0.9, eps=1e-6, weight_decay=0.0, foreach=None),
    state=(State("square_avg", "square_avgs"), State("acc_delta", "acc_deltas")),
    kernel_args=lambda group: dict(lr=group["lr"], rho=group["rho"], eps=group["eps"],
                                   weight_decay=group["weight_decay"], maximize=group["maximize"]),
    uses_step=False,
    doc="Adadelta. State per parameter: ``step``, ``square_avg``, ``acc_delta``.",
    torch_name="Adadelta",
    torch_keywords=dict(capturable=False, maximize=False, differentiable=False),
)
