"""One rank of the FSDP2 test (tests/fastopt_torch/test_torch_fsdp2.py starts two of these).

    python torch_fsdp2_worker.py RANK WORLD PORT SEED OUT_DIR

The shared MLP, in float64, under torch.distributed.fsdp.fully_shard (each Linear, then the whole model):
its parameters, gradients and optimizer state are DTensors sharded over the ranks (unevenly for the
3-row layer). Every rank trains on its slice of each batch. The rank saves to OUT_DIR/rank{RANK}.pt what
the test compares (the full parameters, gathered with DTensor.full_tensor):

- "train": {run: {"start", "torch", "twin"}}: torch.optim's optimizer and the twin from the same init and
  batches, and "layout": {run: [(param index, state key, kind, same placements as the parameter)]} of
  the twin's state_dict;
- "checkpoint": {mode: {"torch", "twin", "twin_then_torch", "torch_reference"}}: torch's AdamW trains, its
  state goes through get_optimizer_state_dict / set_optimizer_state_dict (full or sharded) into the twin,
  both continue; then the twin's goes back into torch.optim.AdamW the same way, and both continue again;
- "mixed": a param group of a DTensor and a plain tensor, twin against torch;
- "refused": {case: {"error", "unchanged"}}: steps and a load the twin must refuse, and whether the
  parameters and state stayed bit-identical.
"""

from __future__ import annotations

import copy
import datetime
import sys

import torch
import torch.distributed as dist
from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_model_state_dict,
                                                     get_optimizer_state_dict, set_model_state_dict,
                                                     set_optimizer_state_dict)
from torch.distributed.fsdp import fully_shard
from torch.distributed.tensor import DTensor, Partial, Replicate, Shard, distribute_tensor, init_device_mesh

import fastopt.torch as ft
from torch_mlp import loss_of, make_batches, make_mlp

STEPS, BATCH, DTYPE = 10, 16, torch.float64

# run name -> (optimizer name, hyperparameters, the biases in a param group of their own without weight
# decay? (then a step makes several kernel calls, checked together before the first))
RUNS = {
    "adamw": ("AdamW", dict(lr=1e-2, weight_decay=0.1, amsgrad=True), True),
    "sgd": ("SGD", dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.01), True),
    "rmsprop": ("RMSprop", dict(lr=1e-2, momentum=0.5, centered=True, weight_decay=0.01), False),
    "adagrad": ("Adagrad", dict(lr=0.05, lr_decay=0.01, initial_accumulator_value=0.1), False),
    # optimizers described as rules, with per-parameter numbers kept beside the DTensor state (Rprop is
    # left out: torch.optim.Rprop itself fails under FSDP2, its masked index_put_ on a sharded DTensor)
    "nadam": ("NAdam", dict(lr=1e-2, weight_decay=0.1, decoupled_weight_decay=True), True),
    "asgd": ("ASGD", dict(lr=1e-2, t0=3, weight_decay=0.01), False),
}
CHECKPOINT_HYPER = dict(lr=1e-2, weight_decay=0.1)


def sharded_mlp(seed):
    model = make_mlp(seed, DTYPE)
    for layer in model:
        if isinstance(layer, torch.nn.Linear):
            fully_shard(layer)
    fully_shard(model)
    return model


def full(model):
    """The model's parameters, gathered (a collective: every rank calls it)."""
    return [p.full_tensor().detach().clone() for p in model.parameters()]


def train(model, opt, batches, rank, world):
    share = BATCH // world
    for x, y in batches:
        mine = slice(rank * share, (rank + 1) * share)
        opt.zero_grad()
        loss_of(model, x[mine], y[mine]).backward()  # FSDP2 averages the gradients over the ranks
        opt.step()


def state_layout(opt):
    """[(param index, key, kind, placements equal to the parameter's)] of opt.state_dict()'s state."""
    params = [p for group in opt.param_groups for p in group["params"]]  # (state_dict's ids, in order)
    rows = []
    for i, state in opt.state_dict()["state"].items():
        for key, value in state.items():
            same = isinstance(value, DTensor) and tuple(value.placements) == tuple(params[i].placements)
            rows.append((i, key, type(value).__name__, same))
    return rows


def train_runs(seed, rank, world):
    batches = make_batches(seed, STEPS, BATCH, DTYPE)
    results, layouts = {}, {}
    for run, (name, hyper, bias_group) in RUNS.items():
        results[run] = {"start": full(sharded_mlp(seed))}
        for kind, cls in (("torch", getattr(torch.optim, name)), ("twin", getattr(ft, name))):
            model = sharded_mlp(seed)
            params = list(model.parameters())
            if bias_group:
                params = [{"params": [p for p in params if p.dim() > 1]},
                          {"params": [p for p in params if p.dim() == 1], "weight_decay": 0.0}]
            opt = cls(params, **hyper)
            train(model, opt, batches, rank, world)
            results[run][kind] = full(model)
            if kind == "twin":
                layouts[run] = state_layout(opt)
    return results, layouts


def round_trip(model, opt, new_model, new_opt, options):
    """opt's state (and model's parameters) into new_opt (new_model) through torch's checkpoint helpers;
    deep-copied, as a checkpoint on disk would be (torch's load_state_dict keeps the tensors it is given)."""
    model_state = copy.deepcopy(get_model_state_dict(model, options=options))
    optim_state = copy.deepcopy(get_optimizer_state_dict(model, opt, options=options))
    set_model_state_dict(new_model, model_state, options=options)
    set_optimizer_state_dict(new_model, new_opt, optim_state, options=options)


def checkpoint_runs(seed, rank, world):
    batches = make_batches(seed + 2, 3 * STEPS, BATCH, DTYPE)
    first, second, third = batches[:STEPS], batches[STEPS:2 * STEPS], batches[2 * STEPS:]
    results = {}
    for mode in ("full", "sharded"):
        options = StateDictOptions(full_state_dict=mode == "full")
        reference = sharded_mlp(seed)  # torch.optim.AdamW all the way
        reference_opt = torch.optim.AdamW(reference.parameters(), **CHECKPOINT_HYPER)
        train(reference, reference_opt, first, rank, world)

        twin = sharded_mlp(seed + 5)  # another init: the loaded parameters must take over
        twin_opt = ft.AdamW(twin.parameters(), **CHECKPOINT_HYPER)
        round_trip(reference, reference_opt, twin, twin_opt, options)
        train(reference, reference_opt, second, rank, world)
        train(twin, twin_opt, second, rank, world)
        result = {"torch": full(reference), "twin": full(twin)}

        back = sharded_mlp(seed + 6)  # and the twin's state back into torch.optim.AdamW
        back_opt = torch.optim.AdamW(back.parameters(), **CHECKPOINT_HYPER)
        round_trip(twin, twin_opt, back, back_opt, options)
        train(back, back_opt, third, rank, world)
        train(reference, reference_opt, third, rank, world)
        result.update(twin_then_torch=full(back), torch_reference=full(reference))
        results[mode] = result
    return results


def mixed_group(seed, mesh):
    """One param group of a DTensor (sharded) and a plain tensor: the twin against torch.optim.AdamW."""
    generator = torch.Generator().manual_seed(seed + 3)
    values = [torch.randn(6, 4, generator=generator, dtype=DTYPE), torch.randn(5, generator=generator, dtype=DTYPE)]
    grads = [[torch.randn(6, 4, generator=generator, dtype=DTYPE), torch.randn(5, generator=generator, dtype=DTYPE)]
             for _ in range(4)]
    out = {}
    for kind, cls in (("torch", torch.optim.AdamW), ("twin", ft.AdamW)):
        params = [torch.nn.Parameter(distribute_tensor(values[0].clone(), mesh, [Shard(0)])),
                  torch.nn.Parameter(values[1].clone())]
        opt = cls(params, lr=0.1, weight_decay=0.1)
        for g in grads:
            params[0].grad = distribute_tensor(g[0], mesh, [Shard(0)])
            params[1].grad = g[1].clone()
            opt.step()
        out[kind] = [params[0].full_tensor(), params[1].detach().clone()]
    return out


def snapshot(params, opt):
    """Copies of the parameters' local shards and of every state entry."""
    def local(t):
        return (t.to_local() if isinstance(t, DTensor) else t).detach().clone()
    return ([local(p) for p in params],
            {id(p): {k: local(v) if torch.is_tensor(v) else v for k, v in s.items()} for p, s in opt.state.items()})


def same(a, b):
    (params_a, state_a), (params_b, state_b) = a, b
    if any(not torch.equal(x, y) for x, y in zip(params_a, params_b)) or state_a.keys() != state_b.keys():
        return False
    return all(s.keys() == state_b[k].keys() and all(torch.equal(v, state_b[k][key]) for key, v in s.items())
               for k, s in state_a.items())


def refused_cases(seed, mesh, world):
    """Steps and a load the twin refuses; each case first takes one good step, so that there is state to keep."""
    generator = torch.Generator().manual_seed(seed + 4)

    def rand(*shape):
        return torch.randn(*shape, generator=generator, dtype=DTYPE)

    other_mesh = init_device_mesh("cpu", (world,), mesh_dim_names=("other",))
    good = torch.nn.Parameter(distribute_tensor(rand(4, 3), mesh, [Shard(0)]))
    sharded = torch.nn.Parameter(distribute_tensor(rand(4, 3), mesh, [Shard(0)]))
    replicated = torch.nn.Parameter(distribute_tensor(rand(4, 3), mesh, [Replicate()]))
    partial = torch.nn.Parameter(DTensor.from_local(rand(4, 3), mesh, [Partial()]))
    cases = {
        # (the parameter, the bad gradient it gets after a good step: of both parameters, or of the
        # first only where the second cannot take a step)
        "placements": (sharded, lambda: distribute_tensor(rand(4, 3), mesh, [Replicate()])),
        "mesh": (sharded, lambda: distribute_tensor(rand(4, 3), other_mesh, [Shard(0)])),
        "partial": (replicated, lambda: DTensor.from_local(rand(4, 3), mesh, [Partial()])),
        "plain_grad": (sharded, lambda: rand(4, 3)),
        "partial_param": (partial, lambda: DTensor.from_local(rand(4, 3), mesh, [Partial()])),
    }
    results = {}

    def attempt(case, params, opt):
        before = snapshot(params, opt)
        try:
            opt.step()
            error = None
        except (TypeError, ValueError) as refusal:
            error = f"{type(refusal).__name__}: {refusal}"
        results[case] = {"error": error, "unchanged": same(before, snapshot(params, opt))}

    for case, (param, bad_grad) in cases.items():
        params = [good, param]
        opt = ft.AdamW(params, lr=0.1)
        good.grad = distribute_tensor(rand(4, 3), mesh, [Shard(0)])
        param.grad = None if param is partial else distribute_tensor(rand(4, 3), mesh, list(param.placements))
        opt.step()
        param.grad = bad_grad()
        attempt(case, params, opt)

    # A DTensor gradient of a plain parameter (autograd accepts it) in a group of plain parameters: in a
    # step of one kernel call, and of two (the second group's parameter has the DTensor gradient).
    for case, groups in (("dtensor_grad_of_plain_one_call", lambda a, b: [{"params": [a, b]}]),
                         ("dtensor_grad_of_plain_two_calls", lambda a, b: [{"params": [a]},
                                                                           {"params": [b], "lr": 0.2}])):
        params = [torch.nn.Parameter(rand(4, 3)), torch.nn.Parameter(rand(4, 3))]
        opt = ft.AdamW(groups(*params), lr=0.1)
        for p in params:
            p.grad = rand(4, 3)
        opt.step()
        params[1].grad = distribute_tensor(rand(4, 3), mesh, [Shard(0)])
        attempt(case, params, opt)

    # A state_dict of plain (full) tensors loaded straight into the twin of DTensor parameters: refused at
    # load (set_optimizer_state_dict distributes such a state_dict into DTensors first).
    params = [good, sharded]
    opt = ft.AdamW(params, lr=0.1)
    for p in params:
        p.grad = distribute_tensor(rand(4, 3), mesh, [Shard(0)])
    opt.step()
    state_dict = opt.state_dict()
    plain = copy.deepcopy(state_dict)
    plain["state"] = {i: {k: v.full_tensor() if isinstance(v, DTensor) else v for k, v in s.items()}
                      for i, s in plain["state"].items()}
    before = snapshot(params, opt)
    try:
        opt.load_state_dict(plain)
        error = None
    except ValueError as refusal:
        error = f"{type(refusal).__name__}: {refusal}"
    results["load_plain_state"] = {"error": error, "unchanged": same(before, snapshot(params, opt))}
    return results


def main(rank, world, port, seed, out_dir):
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=60))
    try:
        mesh = init_device_mesh("cpu", (world,))
        train_results, layouts = train_runs(seed, rank, world)
        results = {"train": train_results, "layout": layouts, "checkpoint": checkpoint_runs(seed, rank, world),
                   "mixed": mixed_group(seed, mesh), "refused": refused_cases(seed, mesh, world)}
        torch.save(results, f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    rank, world, port, seed = (int(a) for a in sys.argv[1:5])
    main(rank, world, port, seed, sys.argv[5])
