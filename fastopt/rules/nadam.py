"""NAdam (Dozat 2016), torch.optim.NAdam's numbers, with its mu_product state. Kernel:
csrc/include/fastopt/nadam.h."""

from fastopt.rules._spec import RuleSpec, Scalars, State


def _mu(group, step):
    return group["betas"][0] * (1.0 - 0.5 * 0.96 ** (step * group["momentum_decay"]))


def _before(group, values, step):
    # torch: mu_product *= mu_t in its state's dtype (a tensor in the twin), then read back as a number
    values["mu_product"] *= _mu(group, step)
    return dict(mu_product=float(values["mu_product"]))


SPEC = RuleSpec(
    name="NAdam",
    kernel="nadam_",
    defaults=dict(lr=2e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, momentum_decay=4e-3,
                  decoupled_weight_decay=False),
    state=(State("exp_avg", "exp_avgs"), State("exp_avg_sq", "exp_avg_sqs")),
    kernel_args=lambda group: dict(lr=group["lr"], beta1=group["betas"][0], beta2=group["betas"][1], eps=group["eps"],
                                   weight_decay=group["weight_decay"], momentum_decay=group["momentum_decay"],
                                   decoupled_weight_decay=group["decoupled_weight_decay"],
                                   maximize=group["maximize"]),
    uses_step=True,
    doc="NAdam: Adam with Nesterov momentum. State per parameter: ``step``, ``mu_product``, ``exp_avg``, "
        "``exp_avg_sq``.",
    torch_name="NAdam",
    torch_keywords=dict(foreach=None, maximize=False, capturable=False, differentiable=False),
    scalars=Scalars(keys=("mu_product",), initial=lambda group: dict(mu_product=1.0), before=_before),
)
