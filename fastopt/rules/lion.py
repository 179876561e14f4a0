"""Lion (Chen et al. 2023, "Symbolic Discovery of Optimization Algorithms"): the sign of an interpolated
momentum, with decoupled weight decay. The kernel is csrc/include/fastopt/lion.h; the reference, written
from the paper, is fastopt/references/lion.py."""

from fastopt.rules._spec import RuleSpec, State

SPEC = RuleSpec(
    name="Lion",
    kernel="lion_",
    defaults=dict(lr=1e-4, betas=(0.9, 0.99), weight_decay=0.0),
    state=(State("exp_avg", "exp_avgs"),),
    kernel_args=lambda group: dict(lr=group["lr"], beta1=group["betas"][0], beta2=group["betas"][1],
                                   weight_decay=group["weight_decay"], maximize=group["maximize"]),
    uses_step=False,
    doc="Lion: ``p = p * (1 - lr * weight_decay) - lr * sign(beta1 * m + (1 - beta1) * g)``, then "
        "``m = beta2 * m + (1 - beta2) * g``. State per parameter: ``step`` and ``exp_avg``.",
    torch_keywords=dict(maximize=False),
)
