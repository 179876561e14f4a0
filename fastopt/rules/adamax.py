"""Adamax (Kingma & Ba 2015, section 7.1), torch.optim.Adamax's numbers. Kernel: csrc/include/fastopt/adamax.h."""

from fastopt.rules._spec import RuleSpec, State

SPEC = RuleSpec(
    name="Adamax",
    kernel="adamax_",
    defaults=dict(lr=2e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, foreach=None),
    state=(State("exp_avg", "exp_avgs"), State("exp_inf", "exp_infs")),
    kernel_args=lambda group: dict(lr=group["lr"], beta1=group["betas"][0], beta2=group["betas"][1], eps=group["eps"],
                                   weight_decay=group["weight_decay"], maximize=group["maximize"]),
    uses_step=True,
    doc="Adamax: Adam with the infinity norm. State per parameter: ``step``, ``exp_avg``, ``exp_inf``.",
    torch_name="Adamax",
    torch_keywords=dict(maximize=False, differentiable=False, capturable=False),
)
