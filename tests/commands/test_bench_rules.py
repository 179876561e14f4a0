"""`fastopt bench`'s rows for the optimizers described as rules (csrc/include/fastopt/registry.h): their list
comes from the registry (fastopt.rules.SPECS), each row does the same work in every implementation (fastopt,
the NumPy reference, torch.optim where torch has the optimizer), and a small run writes them to its JSON.
The comparison of runs with and without these rows: test_bench_compare.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import fastopt
from fastopt import _core, references
from fastopt.bench import workloads
from fastopt.bench.backends import select_backends
from fastopt.bench.cases import update_case
from fastopt.bench.cli import build_parser
from fastopt.rules import PASSES, SPECS

HERE = os.path.dirname(__file__)
# (the optimizers; Muon's two passes, fastopt.rules.PASSES, are parts of one: no bench rows of their own)
REGISTRY = {info["name"]: info for info in _core._rule_registry() if info["function"] not in PASSES}
SPEC = {spec.kernel[:-1]: spec for spec in SPECS}


def run(*args):
    return subprocess.run([sys.executable, "-m", "fastopt", *args], capture_output=True, text=True, cwd=HERE,
                          timeout=600)


def torch_or_none():
    try:
        import torch
    except ImportError:
        return None
    return torch


def test_the_bench_times_every_registered_rule_by_default():
    assert set(workloads.RULE_OPTIMIZERS) == set(REGISTRY) == set(SPEC)
    assert build_parser().parse_args([]).optimizers == list(workloads.OPTIMIZERS) + list(workloads.RULE_OPTIMIZERS)
    for name in REGISTRY:
        assert build_parser().parse_args(["--optimizers", name]).optimizers == [name]


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_bytes_model_counts_each_operand(name):
    """The gradient is read once, the params and each state read and written; a rule with per-tensor sums
    (LAMB's norms) reads everything and writes its state in a first pass, then reads the params and its
    state again and writes the params."""
    info = REGISTRY[name]
    states = len(info["operands"]) - 2
    if info["tensor_sums"]:
        expected = (2 + states) + states + (1 + states) + 1
    else:
        expected = 1 + 2 * (1 + states)
    assert workloads.TRAFFIC[name] == expected
    work = workloads.update_work(name, 1000)
    assert work.bytes_moved == expected * 1000 * 4
    assert len(work.state_fills) == states == workloads.STATE_ARRAYS[name]


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_fastopt_reference_and_torch_rows_do_the_same_work(name):
    """One float64 step of a workload from the state each implementation starts at: fastopt's kernel with the
    workload's keywords and state fills, the NumPy reference from its own initial state, torch.optim's class
    (where torch has it) with the workload's torch keywords: the same numbers, so that their times compare."""
    work = workloads.update_work(name, [(37,), (5, 3)], np.float64, single=False)
    params = [p.copy() for p in work.params]
    states = [[np.full_like(p, fill) for p in params] for fill in work.state_fills]
    step = {"step": 1} if REGISTRY[name]["takes_step"] else {}
    getattr(fastopt, f"{name}_")(params, work.grads, *states, **work.hyper, **step)

    ref_params = [p.copy() for p in work.params]
    ref_states = [getattr(references, f"{name}_init_state")(p, **work.hyper) for p in ref_params]
    getattr(references, f"{name}_step")(ref_params, work.grads, ref_states, step=1, **work.hyper)
    for k, (mine, theirs) in enumerate(zip(params, ref_params)):
        np.testing.assert_allclose(mine, theirs, rtol=1e-10, atol=1e-14, err_msg=f"{name} params[{k}] vs reference")
    assert not np.array_equal(params[0], work.params[0]), f"{name}: the workload's step changes nothing"

    torch = torch_or_none()
    if torch is None or SPEC[name].torch_name is None:
        return
    tensors = [torch.nn.Parameter(torch.from_numpy(p.copy())) for p in work.params]
    for t, g in zip(tensors, work.grads):
        t.grad = torch.from_numpy(g)
    getattr(torch.optim, SPEC[name].torch_name)(tensors, **work.torch_hyper, foreach=False).step()
    # 1e-7: torch keeps NAdam's mu_product and ASGD's eta and mu as tensors of its default dtype (float32);
    # a hyperparameter that differs (an lr, a weight decay of 1e-2 at lr 1e-3) moves the params far more.
    for k, (mine, t) in enumerate(zip(params, tensors)):
        np.testing.assert_allclose(mine, t.detach().numpy(), rtol=1e-7, atol=1e-12,
                                   err_msg=f"{name} params[{k}] vs torch.optim.{SPEC[name].torch_name}")


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_every_implementation_of_a_rule_case_runs(name):
    case = update_case(name, 1000, select_backends(numpy=True, torch=True, cuda=False), probe=False)
    expected = {"fastopt", "numpy"}
    if torch_or_none() is not None and SPEC[name].torch_name is not None:
        expected |= {"torch-forloop", "torch-foreach"}
    assert expected <= set(case.impls), sorted(case.impls)
    assert case.baseline == "fastopt" and case.bytes_moved == workloads.TRAFFIC[name] * 1000 * 4
    for impl, call in case.impls.items():
        call()
        call()  # (the timed loop calls each many times on its own state)


def test_a_small_run_writes_rule_rows_to_its_json(tmp_path):
    path = tmp_path / "rules.json"
    out = run("bench", "--part", "optimizers", "--optimizers", "sgd", "lion", "rprop", "lamb", "--sizes", "1K",
              "--rounds", "2", "--no-gpt2", "--no-cuda", "--json", str(path), "--plot", str(tmp_path / "rules.png"))
    assert out.returncode == 0, out.stderr
    doc = json.loads(path.read_text())
    assert doc["settings"]["optimizers"] == ["sgd", "lion", "rprop", "lamb"]
    rows = {(r["case"], r["impl"]): r for r in doc["results"]}
    for name in ("lion", "rprop", "lamb"):
        row = rows[(name, "fastopt")]
        assert row["part"] == "optimizers" and row["n"] == 1000 and row["seconds"] > 0
        assert row["bytes_per_call"] == workloads.TRAFFIC[name] * 4000 and row["gb_per_s"] > 0
        assert (name, "numpy") in rows
        has_torch = torch_or_none() is not None and SPEC[name].torch_name is not None
        assert ((name, "torch-foreach") in rows) == has_torch, sorted(rows)
    assert f"{'lion':14s} fastopt" in out.stdout and "lamb" in out.stdout
