"""RAdam (Liu et al. 2020), torch.optim.RAdam's numbers. Kernel: csrc/include/fastopt/radam.h."""

from fastopt.rules._spec import RuleSpec, State

SPEC = RuleSpec(
    name="RAdam",
    kernel="radam_",
    defaults=dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, decoupled_weight_decay=False),
    state=(State("exp_avg", "exp_avgs"), State("exp_avg_sq", "exp_avg_sqs")),
    kernel_args=lambda group: dict(lr=group["lr"], beta1=group["betas"][0], beta2=group["betas"][1], eps=group["eps"],
                                   weight_decay=group["weight_decay"],
                                   decoupled_weight_decay=group["decoupled_weight_decay"],
                                   maximize=group["maximize"]),
    uses_step=True,
    doc="RAdam: rectified Adam. State per parameter: ``step``, ``exp_avg``, ``exp_avg_sq``.",
    torch_name="RAdam",
    torch_keywords=dict(foreach=None, maximize=False, capturable=False, differentiable=False),
)
