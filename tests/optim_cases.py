"""Hyperparameter sets for the stateful optimizers, in torch.optim's argument names (shared by the
optimizer tests with and without torch)."""

OPTIM_CASES = [
    ("SGD", dict(lr=0.05)),
    ("SGD", dict(lr=0.05, momentum=0.9, dampening=0.1, weight_decay=1e-3)),
    ("SGD", dict(lr=0.05, momentum=0.9, nesterov=True, maximize=True)),
    ("Adagrad", dict(lr=0.05, lr_decay=0.01, weight_decay=1e-3, initial_accumulator_value=0.1)),
    ("Adagrad", dict(lr=0.05, maximize=True)),
    ("RMSprop", dict(lr=1e-3)),
    ("RMSprop", dict(lr=1e-3, alpha=0.9, momentum=0.8, centered=True, weight_decay=1e-3)),
    ("Adam", dict(lr=1e-2)),
    ("Adam", dict(lr=1e-2, betas=(0.8, 0.99), weight_decay=1e-2, amsgrad=True)),
    ("AdamW", dict(lr=1e-2)),
    ("AdamW", dict(lr=1e-2, betas=(0.85, 0.995), weight_decay=0.1, amsgrad=True, maximize=True)),
]

CASE_IDS = [f"{name}-{i}" for i, (name, _) in enumerate(OPTIM_CASES)]

# One set for each optimizer with a torch twin, with options that give it every state to carry (NAdam and
# ASGD: per-parameter numbers too). Adafactor and Muon last (their twins take matrices their own way).
EVERY_OPTIMIZER = [
    ("SGD", dict(lr=0.05, momentum=0.9, nesterov=True)),
    ("Adagrad", dict(lr=0.1, lr_decay=0.01)),
    ("RMSprop", dict(lr=1e-2, momentum=0.5, centered=True)),
    ("Adam", dict(lr=1e-2, amsgrad=True)),
    ("AdamW", dict(lr=1e-2, weight_decay=0.1)),
    ("NAdam", dict(lr=1e-2)),
    ("RAdam", dict(lr=1e-2)),
    ("Adamax", dict(lr=1e-2)),
    ("Adadelta", dict(lr=0.5)),
    ("ASGD", dict(lr=1e-2, t0=2)),
    ("Rprop", dict(lr=1e-2)),
    ("Lion", dict(lr=1e-3, weight_decay=0.1)),
    ("LAMB", dict(lr=1e-2)),
    ("Adafactor", dict(lr=1e-2)),
    ("Muon", dict(lr=1e-2)),
]
