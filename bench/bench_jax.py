"""fastopt.jax against optax, everything under jax.jit, on the CPU: medians of interleaved runs.

1. An AdamW step alone: fastopt.jax.fused_apply (one kernel call for every leaf, params and state donated)
   against optax.adamw's update + optax.apply_updates (also donated), on one large tensor and on the
   148 tensors of GPT-2 small; fastopt.adamw_ on NumPy arrays of the same sizes as the floor. Then Lion,
   Adamax and LAMB (the optimizers described as rules that optax computes the same way) likewise.
   Then Adafactor and Muon on the matrices of two GPT-2-small blocks, against optax.adafactor and
   optax.contrib.muon: not the same numbers (torch's algorithms here, optax's own there) but the same
   kind of work, which is what a user choosing between them weighs.
2. The loss alone, forward + backward: jit(value_and_grad) of fastopt.jax.softmax_cross_entropy against
   optax.softmax_cross_entropy_with_integer_labels(...).mean(), 4096 x 32000 float32 by default.
3. A training step of a small MLP (forward, loss, backward, AdamW), each stack with its own loss and
   optimizer, params and state donated.

    python bench/bench_jax.py [--rounds 15] [--adamw-size 16777216] [--loss-shape 4096x32000] [--quick]

Needs jax, optax and a fastopt built with its FFI handlers (FASTOPT_JAX=ON pip install .). Timing only:
tests/fastopt_jax/test_jax_ffi.py checks the numbers.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import sys
import time

import numpy as np


def timed(fn):
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def interleaved(variants, rounds):
    """{name: median seconds}: each round runs every variant once, in turn (after one warm-up each)."""
    for fn in variants.values():
        fn()
    times = {name: [] for name in variants}
    for _ in range(rounds):
        for name, fn in variants.items():
            times[name].append(timed(fn))
    return {name: statistics.median(ts) for name, ts in times.items()}


def report(title, medians, baseline):
    print(f"\n{title}")
    for name, t in medians.items():
        ratio = "" if name == baseline else f"   {medians[baseline] / t:5.2f}x {baseline}'s speed"
        print(f"  {name:34s} {t * 1e3:9.3f} ms{ratio}")


GPT2_SMALL = ([(50257, 768), (1024, 768)] + [s for _ in range(12) for s in
              [(768,), (768,), (768, 2304), (2304,), (768, 768), (768,), (768,), (768,), (768, 3072), (3072,),
               (3072, 768), (768,)]] + [(768,), (768,)])


def bench_pair(jax, jnp, optax, fj, title, ours, theirs, shapes, rounds, bytes_per_element, numpy_path=None):
    """fastopt.jax's transform `ours` through fused_apply against optax's `theirs` through update +
    apply_updates, both jitted with params and state donated, on float32 tensors of `shapes`."""
    rng = np.random.default_rng(0)
    host = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    grads = [jnp.asarray(rng.standard_normal(s).astype(np.float32)) for s in shapes]

    @functools.partial(jax.jit, donate_argnums=(0, 1))
    def fused(p, s, g):
        return fj.fused_apply(ours, g, s, p)

    @functools.partial(jax.jit, donate_argnums=(0, 1))
    def peer(p, s, g):
        updates, s = theirs.update(g, s, p)
        return optax.apply_updates(p, updates), s

    box = {}
    for name, tx in (("fused", ours), ("optax", theirs)):
        params = [jnp.asarray(h) for h in host]
        box[name] = (params, tx.init(params))

    def run(name, fn):
        def go():
            p, s = box[name]
            box[name] = jax.block_until_ready(fn(p, s, grads))
        return go

    variants = {"fastopt.jax.fused_apply (jit)": run("fused", fused), "optax update + apply_updates (jit)": run("optax", peer)}
    if numpy_path is not None:
        variants["the same kernel on NumPy"] = numpy_path(host, [np.asarray(g) for g in grads])
    medians = interleaved(variants, rounds)
    n = sum(int(np.prod(s)) for s in shapes)
    rate = "" if bytes_per_element is None else (
        f" ({bytes_per_element} B/element: "
        f"{bytes_per_element * n / medians['fastopt.jax.fused_apply (jit)'] / 1e9:.1f} GB/s fused)")
    report(f"{title}: {len(shapes)} tensors, {n:,} float32 elements{rate}", medians,
           "optax update + apply_updates (jit)")


def bench_adamw(jax, jnp, optax, fj, fastopt, sizes, rounds):
    def numpy_path(host, grads):
        p, m, v = [h.copy() for h in host], [np.zeros_like(h) for h in host], [np.zeros_like(h) for h in host]
        step = [0]

        def go():
            step[0] += 1
            fastopt.adamw_(p, grads, m, v, lr=1e-3, weight_decay=1e-2, step=step[0])
        return go

    for label, shapes in sizes:
        bench_pair(jax, jnp, optax, fj, f"AdamW step, {label}", fj.adamw(1e-3, weight_decay=1e-2),
                   optax.adamw(1e-3, weight_decay=1e-2), shapes, rounds, 28, numpy_path)


def bench_rules(jax, jnp, optax, fj, sizes, rounds):
    """The optimizers described as rules whose optax twin computes the same quantity."""
    pairs = [("Lion", fj.lion(1e-4, weight_decay=1e-2), optax.lion(1e-4, weight_decay=1e-2), 20),
             ("Adamax", fj.adamax(2e-3), optax.adamax(2e-3), 28),
             ("LAMB", fj.lamb(1e-3, weight_decay=1e-2), optax.lamb(1e-3, weight_decay=1e-2), 28)]
    for name, ours, theirs, bytes_per_element in pairs:
        for label, shapes in sizes:
            bench_pair(jax, jnp, optax, fj, f"{name} step, {label}", ours, theirs, shapes, rounds, bytes_per_element)


GPT2_BLOCKS = [s for _ in range(2) for s in [(768, 2304), (768, 768), (768, 3072), (3072, 768)]]


def bench_matrix_optimizers(jax, jnp, optax, fj, fastopt, rounds):
    """Adafactor (24 B/element: three passes over a factored float32 matrix) and Muon (its Newton-Schulz
    products dominate) on two GPT-2-small blocks' matrices; fastopt.adafactor_ on NumPy (fastopt's threads;
    the FFI call runs on XLA's calling thread) alongside."""
    def numpy_adafactor(host, grads):
        p = [h.copy() for h in host]
        rows = [np.zeros(h.shape[:-1] + (1,), np.float32) for h in host]
        cols = [np.zeros(h.shape[:-2] + (1, h.shape[-1]), np.float32) for h in host]
        step = [0]

        def go():
            step[0] += 1
            fastopt.adafactor_(p, grads, rows, cols, step=step[0], lr=1e-2)
        return go

    bench_pair(jax, jnp, optax, fj, "Adafactor step (optax.adafactor: Shazeer and Stern's, factored the same way)",
               fj.adafactor(1e-2), optax.adafactor(1e-2, min_dim_size_to_factor=1), GPT2_BLOCKS, rounds, 24,
               numpy_adafactor)
    bench_pair(jax, jnp, optax, fj, "Muon step (optax.contrib.muon: its own momentum and scaling)", fj.muon(1e-3),
               optax.contrib.muon(1e-3), GPT2_BLOCKS, max(3, rounds // 3), None)


def bench_loss(jax, jnp, optax, fj, shape, rounds):
    """Two settings: logits donated (as in a training step, where they die at the loss: each round feeds
    the gradient back in as the next logits, so both stacks run in steady state), and logits kept (a jit
    argument that lives on: fastopt.jax's kernel then writes a copy of them, optax allocates as usual)."""
    n, c = shape
    rng = np.random.default_rng(1)
    labels = jnp.asarray(rng.integers(0, c, n).astype(np.int32))

    def ours(x, y):
        return fj.softmax_cross_entropy(x, y)

    def theirs(x, y):
        return optax.softmax_cross_entropy_with_integer_labels(x, y).mean()

    fns = {("fastopt", True): jax.jit(jax.value_and_grad(ours), donate_argnums=0),
           ("optax", True): jax.jit(jax.value_and_grad(theirs), donate_argnums=0),
           ("fastopt", False): jax.jit(jax.value_and_grad(ours)),
           ("optax", False): jax.jit(jax.value_and_grad(theirs))}
    box = {key: jax.jit(lambda k: 3 * jax.random.normal(k, (n, c), jnp.float32))(jax.random.key(i))
           for i, key in enumerate(fns)}

    def run(key):
        def go():
            _, grad = jax.block_until_ready(fns[key](box[key], labels))
            if key[1]:
                box[key] = grad  # the donated logits' buffer, back as the next logits
        return go

    names = {("fastopt", True): "fastopt.jax, logits donated", ("optax", True): "optax, logits donated",
             ("fastopt", False): "fastopt.jax, logits kept", ("optax", False): "optax, logits kept"}
    medians = interleaved({names[key]: run(key) for key in fns}, rounds)
    for donated in (True, False):
        part = {names[key]: medians[names[key]] for key in fns if key[1] == donated}
        report(f"Loss forward + backward (jit(value_and_grad), mean), {n} x {c} float32, "
               f"logits {'donated' if donated else 'kept'}", part, names[("optax", donated)])


def bench_mlp(jax, jnp, optax, fj, rounds, batch=256, sizes=(784, 1024, 1024, 10)):
    rng = np.random.default_rng(2)

    def init():
        return [(jnp.asarray((rng.standard_normal((a, b)) / np.sqrt(a)).astype(np.float32)),
                 jnp.zeros(b, jnp.float32)) for a, b in zip(sizes[:-1], sizes[1:])]

    def forward(params, x):
        for i, (w, b) in enumerate(params):
            x = x @ w + b
            if i < len(params) - 1:
                x = jax.nn.relu(x)
        return x

    x = jnp.asarray(rng.standard_normal((batch, sizes[0])).astype(np.float32))
    y = jnp.asarray(rng.integers(0, sizes[-1], batch).astype(np.int32))
    ours, theirs = fj.adamw(1e-3), optax.adamw(1e-3, weight_decay=1e-2)

    @functools.partial(jax.jit, donate_argnums=(0, 1))
    def fastopt_step(params, state, x, y):
        loss, grads = jax.value_and_grad(lambda p: fj.softmax_cross_entropy(forward(p, x), y))(params)
        params, state = fj.fused_apply(ours, grads, state, params)
        return params, state, loss

    @functools.partial(jax.jit, donate_argnums=(0, 1))
    def optax_step(params, state, x, y):
        loss, grads = jax.value_and_grad(
            lambda p: optax.softmax_cross_entropy_with_integer_labels(forward(p, x), y).mean())(params)
        updates, state = theirs.update(grads, state, params)
        return optax.apply_updates(params, updates), state, loss

    box = {"fastopt": (init(),), "optax": (init(),)}
    box["fastopt"] += (ours.init(box["fastopt"][0]),)
    box["optax"] += (theirs.init(box["optax"][0]),)

    def run(name, fn):
        def go():
            p, s = box[name]
            p, s, loss = jax.block_until_ready(fn(p, s, x, y))
            box[name] = (p, s)
        return go

    medians = interleaved({"fastopt.jax loss + fused AdamW": run("fastopt", fastopt_step),
                           "optax loss + optax.adamw": run("optax", optax_step)}, rounds)
    n = sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:]))
    report(f"MLP training step {'-'.join(map(str, sizes))} (ReLU), batch {batch}, {n:,} parameters", medians,
           "optax loss + optax.adamw")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="bench/bench_jax.py", description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--adamw-size", type=int, default=1 << 24)
    parser.add_argument("--loss-shape", default="4096x32000")
    parser.add_argument("--quick", action="store_true", help="small sizes and 5 rounds (a smoke run)")
    args = parser.parse_args(argv)
    try:
        import jax
        import jax.numpy as jnp
        import optax

        import fastopt
        import fastopt.jax as fj
    except ImportError as error:
        print(f"bench_jax needs jax, optax and fastopt.jax: {error}", file=sys.stderr)
        return 2
    rounds = 5 if args.quick else args.rounds
    size = 1 << 16 if args.quick else args.adamw_size
    n, c = (256, 1000) if args.quick else map(int, args.loss_shape.lower().split("x"))
    print(f"jax {jax.__version__} ({jax.default_backend()}), optax {optax.__version__}, fastopt "
          f"{fastopt.__version__} ({fastopt.build_info()['cpu_isa']}, {fastopt.build_info()['num_threads']} threads); "
          f"medians of {rounds} interleaved rounds")
    sizes = [(f"one tensor", [(size,)])] + ([] if args.quick else [("GPT-2 small's list", GPT2_SMALL)])
    bench_adamw(jax, jnp, optax, fj, fastopt, sizes, rounds)
    bench_rules(jax, jnp, optax, fj, sizes, rounds)
    if not args.quick:
        bench_matrix_optimizers(jax, jnp, optax, fj, fastopt, rounds)
    bench_loss(jax, jnp, optax, fj, (n, c), rounds)
    bench_mlp(jax, jnp, optax, fj, rounds, batch=64 if args.quick else 256)
    return 0


if __name__ == "__main__":
    sys.exit(main())
