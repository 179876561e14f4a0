"""ASGD, averaged SGD (Polyak & Juditsky 1992), torch.optim.ASGD's numbers, with its eta and mu state.
Kernel: csrc/include/fastopt/asgd.h."""

from fastopt.rules._spec import RuleSpec, Scalars, State


def _before(group, values, step):
    return dict(eta=float(values["eta"]), mu=float(values["mu"]))


def _after(group, values, step):
    # torch: the next step's eta and mu, from this step's count and the group's current lr
    lr = float(group["lr"])
    eta = lr / ((1 + group["lambd"] * lr * step) ** group["alpha"])
    mu = 1 / max(1, step - group["t0"])
    for key, value in (("eta", eta), ("mu", mu)):
        if hasattr(values[key], "fill_"):
            values[key].fill_(value)  # (a 0-d tensor: rounded to its dtype, as torch's copy_ does)
        else:
            values[key] = float(value)


SPEC = RuleSpec(
    name="ASGD",
    kernel="asgd_",
    defaults=dict(lr=1e-2, lambd=1e-4, alpha=0.75, t0=1e6, weight_decay=0.0, foreach=None, maximize=False,
                  differentiable=False, capturable=False),
    state=(State("ax", "axs"),),
    kernel_args=lambda group: dict(lr=group["lr"], lambd=group["lambd"], alpha=group["alpha"], t0=group["t0"],
                                   weight_decay=group["weight_decay"], maximize=group["maximize"]),
    uses_step=True,
    doc="ASGD: averaged SGD. State per parameter: ``step``, ``eta``, ``mu``, ``ax``.",
    torch_name="ASGD",
    scalars=Scalars(keys=("eta", "mu"), initial=lambda group: dict(eta=float(group["lr"]), mu=1.0), before=_before,
                    after=_after),
)
