"""The twins under FSDP2 (torch.distributed.fsdp.fully_shard), whose parameters, gradients and optimizer
state are DTensors: two processes (gloo, loopback) train the MLP in float64 with torch.optim's optimizer
and with the twin, from the same init and batches, and get the same parameters; the state round-trips
through torch.distributed.checkpoint.state_dict (full and sharded) between torch.optim.AdamW and the twin;
refused steps and loads name the parameter and change nothing. See tests/fastopt_torch/torch_fsdp2_worker.py."""

from __future__ import annotations

import pathlib

import numpy as np
import pytest

torch = pytest.importorskip("torch")
if not torch.distributed.is_available() or not torch.distributed.is_gloo_available():
    pytest.skip("torch was built without distributed/gloo", allow_module_level=True)
try:
    from torch.distributed.fsdp import fully_shard  # noqa: F401
except ImportError:
    pytest.skip("this torch has no FSDP2 (torch.distributed.fsdp.fully_shard)", allow_module_level=True)

import torch_fsdp2_worker as worker  # noqa: E402

from gloo_ranks import WORLD, run_ranks  # noqa: E402

WORKER = pathlib.Path(worker.__file__).resolve()


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    """The two ranks' results (one launch for the module's tests)."""
    seed = int(np.random.SeedSequence().entropy % (2**31))
    print(f"seed={seed}")
    out_dir = tmp_path_factory.mktemp("fsdp2")
    run_ranks(WORKER, seed, out_dir, timeout=300.0)
    return [torch.load(out_dir / f"rank{r}.pt") for r in range(WORLD)]


def assert_params_equal(got, expected, where):
    assert len(got) == len(expected), where
    for i, (a, b) in enumerate(zip(got, expected)):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12, msg=lambda m: f"{where} params[{i}]: {m}")


@pytest.mark.parametrize("run", list(worker.RUNS))
def test_twin_trains_as_torch_under_fully_shard(ranks, run):
    for r, result in enumerate(ranks):
        trained = result["train"][run]
        for i, (p0, p) in enumerate(zip(trained["start"], trained["twin"])):
            assert (p - p0).abs().max() > 1e-3, f"{run}: params[{i}] hardly moved; the test would prove nothing"
        assert_params_equal(trained["twin"], trained["torch"], f"{run} rank {r}")
        assert_params_equal(trained["twin"], ranks[0]["train"][run]["twin"], f"{run} rank {r} against rank 0")


@pytest.mark.parametrize("run", list(worker.RUNS))
def test_twin_state_is_dtensors_laid_out_as_the_parameters(ranks, run):
    for result in ranks:
        rows = result["layout"][run]
        assert rows, f"{run}: the twin kept no state"
        for i, key, kind, same in rows:
            if key in ("step", "mu_product", "eta", "mu"):  # plain tensors, as torch.optim keeps them
                assert kind == "Tensor", (run, i, key, kind)
            else:
                assert kind == "DTensor" and same, (run, i, key, kind, same)


@pytest.mark.parametrize("mode", ["full", "sharded"])
def test_state_dict_round_trips_between_torch_and_the_twin(ranks, mode):
    for r, result in enumerate(ranks):
        trained = result["checkpoint"][mode]
        assert_params_equal(trained["twin"], trained["torch"], f"{mode}: torch -> twin, rank {r}")
        assert_params_equal(trained["twin_then_torch"], trained["torch_reference"], f"{mode}: twin -> torch, rank {r}")


def test_a_group_of_dtensors_and_plain_tensors(ranks):
    for r, result in enumerate(ranks):
        assert_params_equal(result["mixed"]["twin"], result["mixed"]["torch"], f"mixed group, rank {r}")


REFUSALS = {
    "placements": ("ValueError", "params[1].grad has placements (Replicate(),) but params[1] has (Shard(dim=0),)"),
    "mesh": ("ValueError", "params[1].grad is a DTensor on DeviceMesh((other=2)"),
    "partial": ("ValueError", "params[1].grad has placements (Partial(sum),) but params[1] has (Replicate(),)"),
    "plain_grad": ("TypeError", "params[1].grad is a plain Tensor but params[1] is a DTensor"),
    "partial_param": ("ValueError", "params[1] is a DTensor with placements (Partial(sum),)"),
    "dtensor_grad_of_plain_one_call": ("TypeError", "a DTensor (a tensor subclass) is among the tensors"),
    "dtensor_grad_of_plain_two_calls": ("TypeError", "params[1].grad has no memory of its own"),
    "load_plain_state": ("ValueError", "state_dict: state[0]['exp_avg'] is a plain Tensor but params[0] is a DTensor"),
}


@pytest.mark.parametrize("case", list(REFUSALS))
def test_mismatched_layouts_are_refused_and_change_nothing(ranks, case):
    kind, words = REFUSALS[case]
    for r, result in enumerate(ranks):
        outcome = result["refused"][case]
        assert outcome["error"] is not None, f"{case}: rank {r} accepted it"
        assert outcome["error"].startswith(f"{kind}: ") and words in outcome["error"], (case, r, outcome["error"])
        assert outcome["unchanged"], f"{case}: rank {r} changed the parameters or the state"

