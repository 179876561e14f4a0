"""Training quality with compact optimizer state: a character-level language model (an MLP over the previous
8 characters) trained on English text that ships with Python (the help topics of pydoc_data), with
fastopt.optim.AdamW (or --optimizer sgd|adagrad|rmsprop|nadam|lion: SGD with momentum 0.9, Adagrad, RMSprop, and
two of the optimizers described as rules, NAdam and Lion) keeping its state in float32, bfloat16 and 8-bit
blockwise (not the rules': skipped), and with bfloat16 parameters rounded to nearest or stochastically. Every run starts from the same weights and sees the same batches; the
table gives each run's final training loss (mean of the last 10% of steps) and held-out loss, and their ratio
to the float32 run's. Optional --plot PATH draws the loss curves.

    python bench/bench_state_quality.py [--optimizer adamw] [--steps 3000] [--batch 128] [--lr LR]
                                        [--plot docs/state_precision.png]

A run the installed fastopt cannot do (a state_dtype or parameter dtype it does not take) is reported as
skipped with the reason.
"""

import argparse
import time

import numpy as np

import fastopt

CONTEXT = 8
EMBED = 24
HIDDEN = 512


def corpus_codes():
    """The pydoc help topics as one string of printable ASCII (other characters dropped), as codes 0..V-1."""
    from pydoc_data.topics import topics

    text = "\n".join(topics[k] for k in sorted(topics))
    raw = np.frombuffer(text.encode("ascii", "ignore"), np.uint8)
    raw = raw[(raw >= 32) & (raw < 127) | (raw == 10)]
    alphabet, codes = np.unique(raw, return_inverse=True)
    return codes.astype(np.int64), len(alphabet)


def init_params(vocab, rng):
    return [rng.normal(0, 0.5, (vocab, EMBED)).astype(np.float32),                      # E
            rng.normal(0, (CONTEXT * EMBED) ** -0.5, (CONTEXT * EMBED, HIDDEN)).astype(np.float32),  # W1
            np.zeros(HIDDEN, np.float32),                                                  # b1
            rng.normal(0, HIDDEN ** -0.5, (HIDDEN, vocab)).astype(np.float32),             # W2
            np.zeros(vocab, np.float32)]                                                   # b2


def loss_grad(params32, contexts, targets, with_grad=True):
    """Mean cross-entropy of the next character and its gradients (float32, by hand)."""
    E, W1, b1, W2, b2 = params32
    x = E[contexts].reshape(len(targets), CONTEXT * EMBED)
    h = np.tanh(x @ W1 + b1)
    scores = h @ W2 + b2
    loss, dscores = fastopt.softmax_cross_entropy(scores, targets, out=scores)
    if not with_grad:
        return float(loss), None
    dW2 = h.T @ dscores
    db2 = dscores.sum(axis=0)
    dpre = (dscores @ W2.T) * (1 - h * h)
    dW1 = x.T @ dpre
    db1 = dpre.sum(axis=0)
    dx = (dpre @ W1.T).reshape(len(targets), CONTEXT, EMBED)
    dE = np.zeros_like(E)
    np.add.at(dE, contexts, dx)
    return float(loss), [dE, dW1, db1, dW2, db2]


def batches(codes, batch, steps, rng):
    starts = rng.integers(0, len(codes) - CONTEXT - 1, size=(steps, batch))
    for s in starts:
        idx = s[:, None] + np.arange(CONTEXT)
        yield codes[idx], codes[s + CONTEXT]


RUNS = {  # name -> (parameter dtype, optimizer keyword arguments)
    "float32": ("float32", {}),
    "bfloat16 state": ("float32", dict(state_dtype="bfloat16")),
    "bf16 state, stochastic": ("float32", dict(state_dtype="bfloat16", stochastic_rounding=True)),
    "int8 state": ("float32", dict(state_dtype="int8")),
    "bf16 params, nearest": ("bfloat16", dict(state_dtype="bfloat16")),
    "bf16 params, stochastic": ("bfloat16", dict(state_dtype="bfloat16", stochastic_rounding=True)),
}


#: --optimizer: fastopt.optim's class, its hyperparameters besides lr, and its default lr
OPTIMIZERS = {"adamw": ("AdamW", dict(weight_decay=0.01), 2e-3), "sgd": ("SGD", dict(momentum=0.9), 0.1),
              "adagrad": ("Adagrad", {}, 0.05), "rmsprop": ("RMSprop", {}, 1e-3), "nadam": ("NAdam", {}, 2e-3),
              "lion": ("Lion", dict(weight_decay=0.1), 2e-4)}


def train(name, codes, held_out, vocab, args):
    param_dtype, extra = RUNS[name]
    params = init_params(vocab, np.random.default_rng(0))
    if param_dtype == "bfloat16":
        import ml_dtypes

        params = [p.astype(ml_dtypes.bfloat16) for p in params]
    cls, hyper, _ = OPTIMIZERS[args.optimizer]
    if param_dtype == "float32" or args.optimizer != "adamw":
        opt = getattr(fastopt.optim, cls)(params, lr=args.lr, **hyper, **extra)
        step = opt.step
    else:  # AdamW's bfloat16 params: the functional update (as the figures in BENCHMARKS.md were measured)
        moments = [(np.zeros_like(p), np.zeros_like(p)) for p in params]
        opt = type("BareState", (), {"state": {i: dict(exp_avg=m, exp_avg_sq=v) for i, (m, v) in enumerate(moments)}})
        count = [0]

        def step(grads):
            count[0] += 1
            fastopt.adamw_(params, grads, [m for m, _ in moments], [v for _, v in moments], lr=args.lr,
                           weight_decay=0.01, step=count[0], stochastic_rounding=extra.get("stochastic_rounding", False))
    losses = []
    for contexts, targets in batches(codes, args.batch, args.steps, np.random.default_rng(1)):
        params32 = [p.astype(np.float32) for p in params] if param_dtype != "float32" else params
        loss, grads = loss_grad(params32, contexts, targets)
        if param_dtype != "float32":
            grads = [g.astype(params[0].dtype) for g in grads]
        step(grads)
        losses.append(loss)
    params32 = [p.astype(np.float32) for p in params]
    held = np.mean([loss_grad(params32, c, t, with_grad=False)[0]
                    for c, t in batches(held_out, 1024, 8, np.random.default_rng(2))])
    state_bytes = sum(int(getattr(v, "nbytes", 0)) for s in opt.state.values() for v in s.values())
    return np.asarray(losses), float(held), state_bytes


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--optimizer", choices=sorted(OPTIMIZERS), default="adamw")
    ap.add_argument("--lr", type=float, default=None,
                    help="default: 2e-3 AdamW, 0.1 SGD, 0.05 Adagrad, 1e-3 RMSprop, 2e-3 NAdam, 2e-4 Lion")
    ap.add_argument("--plot", default=None, metavar="PATH")
    ap.add_argument("--runs", nargs="+", default=list(RUNS), choices=list(RUNS))
    args = ap.parse_args()
    cls = OPTIMIZERS[args.optimizer][0]
    if args.lr is None:
        args.lr = OPTIMIZERS[args.optimizer][2]
    codes, vocab = corpus_codes()
    split = int(0.9 * len(codes))
    train_codes, held_out = codes[:split], codes[split:]
    print(f"pydoc help topics: {len(codes)} characters, {vocab} symbols; MLP over {CONTEXT} characters "
          f"(embedding {EMBED}, hidden {HIDDEN}); {cls} lr {args.lr:g}, {args.steps} steps of {args.batch}")
    results = {}
    for name in args.runs:
        start = time.perf_counter()
        try:
            results[name] = train(name, train_codes, held_out, vocab, args)
        except (TypeError, ValueError, ImportError) as error:
            print(f"  {name:24s} skipped: {type(error).__name__}: {error}")
            continue
        print(f"  {name:24s} done in {time.perf_counter() - start:.1f} s", flush=True)
    tail = max(1, args.steps // 10)
    base = results.get("float32")
    print(f"\n{'run':24s} {'final train loss':>16s} {'held-out loss':>14s} {'/ float32':>10s} {'state bytes':>12s}")
    for name, (losses, held, state_bytes) in results.items():
        final = float(losses[-tail:].mean())
        ratio = f"{final / float(base[0][-tail:].mean()):10.4f}" if base is not None else f"{'':10s}"
        print(f"{name:24s} {final:16.4f} {held:14.4f} {ratio} {state_bytes:12d}")
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(9, 5))
        window = max(1, args.steps // 50)
        for name, (losses, _, _) in results.items():
            smooth = np.convolve(losses, np.ones(window) / window, mode="valid")
            ax.plot(np.arange(window, len(losses) + 1), smooth, label=name)
        ax.set_xlabel("step")
        ax.set_ylabel(f"training loss (moving mean of {window} steps)")
        ax.set_title(f"{cls} state and parameter precision: character-level MLP on pydoc's help text")
        ax.grid(True, alpha=0.3)
        ax.legend()
        fig.tight_layout()
        fig.savefig(args.plot, dpi=80)
        print(f"wrote {args.plot}")


if __name__ == "__main__":
    main()
