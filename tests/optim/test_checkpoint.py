"""Checkpoints (opt.save / opt.load, fastopt.optim.save_checkpoint / load_checkpoint).

A run saved and resumed is bit-identical to an uninterrupted one; a truncated, corrupted or
mismatched file raises ValueError naming what is wrong and leaves the optimizer exactly as it was
(hyperparameters, state arrays, step counts), so training can go on.
"""

from __future__ import annotations

import json
import os
import re
import zipfile

import numpy as np
import pytest

from fastopt import optim
from optim_cases import CASE_IDS, OPTIM_CASES


def make(name, hyper, seed=0, shapes=((3, 4), (7,), (70_001,))):
    rng = np.random.default_rng(seed)
    params = [rng.standard_normal(s) for s in shapes[:-1]] + [rng.standard_normal(shapes[-1]).astype(np.float32)]
    # two groups, two dtypes
    opt = getattr(optim, name)([{"params": params[:2]}, {"params": params[2:], "lr": hyper["lr"] / 2}], **hyper)
    return opt, params


def grads(params, seed):
    rng = np.random.default_rng(1000 + seed)
    return [rng.standard_normal(p.shape).astype(p.dtype) for p in params]


def fingerprint(opt, params):
    state = sorted((i, k, v.dtype.str, v.shape, v.tobytes()) if isinstance(v, np.ndarray) else (i, k, repr(v))
                   for i, s in opt.state.items() for k, v in s.items())
    groups = [sorted((k, repr(v)) for k, v in g.items() if k != "params") for g in opt.param_groups]
    return [p.tobytes() for p in params], state, groups


@pytest.mark.parametrize("name,hyper", OPTIM_CASES, ids=CASE_IDS)
def test_resumed_run_is_bit_identical(name, hyper, tmp_path):
    straight, straight_params = make(name, hyper)
    for t in range(6):
        straight.step(grads(straight_params, t))

    first, first_params = make(name, hyper)
    for t in range(3):
        first.step(grads(first_params, t))
    first.save(tmp_path / "opt.npz")
    np.savez(tmp_path / "params.npz", *first_params)  # the parameters are the caller's to save

    # a new process would start from fresh objects: build them, then load
    resumed, resumed_params = make(name, hyper, seed=99)
    with np.load(tmp_path / "params.npz") as saved:
        for k, p in enumerate(resumed_params):
            p[...] = saved[f"arr_{k}"]
    resumed.load(tmp_path / "opt.npz")
    for t in range(3, 6):
        resumed.step(grads(resumed_params, t))
    assert fingerprint(resumed, resumed_params) == fingerprint(straight, straight_params)


def test_module_functions_and_fresh_optimizer(tmp_path):
    opt, params = make("Adam", dict(lr=1e-2))
    optim.save_checkpoint(opt, tmp_path / "fresh.npz")  # no step yet: empty state
    opt.step(grads(params, 0))
    optim.load_checkpoint(opt, tmp_path / "fresh.npz")
    assert opt.state == {}


def test_save_replaces_atomically_and_leaves_no_temporary(tmp_path):
    opt, params = make("AdamW", dict(lr=1e-2))
    path = tmp_path / "ckpt"  # no suffix: the name is used as given
    opt.save(path)
    opt.step(grads(params, 0))
    opt.save(path)
    assert sorted(os.listdir(tmp_path)) == ["ckpt"]


# --------------------------------------------------------------------------------- bad checkpoints


def saved(tmp_path, name="Adam", hyper=None, steps=2):
    opt, params = make(name, hyper or dict(lr=1e-2, amsgrad=True))
    for t in range(steps):
        opt.step(grads(params, t))
    path = tmp_path / "c.npz"
    opt.save(path)
    return path


def target():
    """The optimizer a bad checkpoint is loaded into: stepped, so it has state to lose."""
    opt, params = make("Adam", dict(lr=1e-2, amsgrad=True), seed=5)
    opt.step(grads(params, 7))
    return opt, params


def assert_refused(path, match, opt=None):
    opt, params = opt or target()
    before = fingerprint(opt, params)
    with pytest.raises(ValueError, match=match):
        opt.load(path)
    assert fingerprint(opt, params) == before
    opt.step(grads(params, 8))  # and it still works


def rewrite(path, edit):
    """Loads the archive's members, lets `edit` change the dict, writes it back."""
    with np.load(path, allow_pickle=False) as f:
        members = {k: f[k] for k in f.files}
    edit(members)
    with open(path, "wb") as out:
        np.savez(out, **members)


@pytest.mark.parametrize("keep", [0.0, 0.1, 0.5, 0.9, 0.999])
def test_truncated_file(tmp_path, keep):
    path = saved(tmp_path)
    data = path.read_bytes()
    path.write_bytes(data[:int(len(data) * keep)])
    assert_refused(path, "not a readable fastopt checkpoint")


@pytest.mark.parametrize("where", [0.3, 0.6, 0.95])
def test_corrupted_bytes(tmp_path, where):
    """A flipped byte in the middle of the data (state arrays) fails zip's CRC-32 check."""
    path = saved(tmp_path)
    data = bytearray(path.read_bytes())
    data[int(len(data) * where)] ^= 0x5A
    path.write_bytes(bytes(data))
    assert_refused(path, "checkpoint")


def test_not_a_checkpoint(tmp_path):
    path = tmp_path / "c.npz"
    np.savez(path, x=np.arange(3))
    assert_refused(path, "not a fastopt checkpoint")
    np.save(tmp_path / "a.npy", np.arange(3))
    assert_refused(tmp_path / "a.npy", "not a fastopt checkpoint: it is a single .npy array")
    (tmp_path / "t.npz").write_text("hello")
    assert_refused(tmp_path / "t.npz", "not a fastopt checkpoint: not an .npz archive")


def test_pickled_content_is_not_loaded(tmp_path):
    path = saved(tmp_path)
    with zipfile.ZipFile(path, "a") as z:
        with z.open("state/0/evil.npy", "w") as f:
            np.lib.format.write_array(f, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    assert_refused(path, "holds Python objects")


def test_wrong_optimizer_type(tmp_path):
    assert_refused(saved(tmp_path, "AdamW", dict(lr=1e-2, amsgrad=True)), "holds a AdamW optimizer, not a Adam")
    assert_refused(saved(tmp_path, "SGD", dict(lr=0.1, momentum=0.9)), "holds a SGD")


def test_wrong_format_version(tmp_path):
    path = saved(tmp_path)
    rewrite(path, lambda m: m.update(fastopt_checkpoint=np.array(99)))
    assert_refused(path, "format version 99")


def test_wrong_param_count(tmp_path):
    opt, params = make("Adam", dict(lr=1e-2, amsgrad=True), shapes=((3, 4), (70_001,)))
    opt.save(tmp_path / "c.npz")
    assert_refused(tmp_path / "c.npz", "has 2 parameters, the optimizer has 3")


def test_wrong_param_shape(tmp_path):
    opt, params = make("Adam", dict(lr=1e-2, amsgrad=True), shapes=((4, 3), (7,), (70_001,)))
    opt.step(grads(params, 0))
    opt.save(tmp_path / "c.npz")
    assert_refused(tmp_path / "c.npz", re.escape("params[0] was float64 (4, 3)"))


def test_wrong_param_dtype(tmp_path):
    rng = np.random.default_rng(0)
    params = [rng.standard_normal((3, 4)), rng.standard_normal(7), rng.standard_normal(70_001)]  # last f64
    opt = optim.Adam([{"params": params[:2]}, {"params": params[2:]}], lr=1e-2, amsgrad=True)
    opt.save(tmp_path / "c.npz")
    assert_refused(tmp_path / "c.npz", "params.2. was float64")


def test_wrong_group_split(tmp_path):
    rng = np.random.default_rng(0)
    params = [rng.standard_normal((3, 4)), rng.standard_normal(7), rng.standard_normal(70_001).astype(np.float32)]
    opt = optim.Adam([{"params": params[:1]}, {"params": params[1:]}], lr=1e-2, amsgrad=True)
    opt.save(tmp_path / "c.npz")
    assert_refused(tmp_path / "c.npz", "param group 0 has 1 parameters")


def test_state_array_of_wrong_shape_or_dtype(tmp_path):
    path = saved(tmp_path)
    rewrite(path, lambda m: m.update({"state/1/exp_avg": np.zeros(8)}))
    assert_refused(path, re.escape("state[1]['exp_avg']"))
    path = saved(tmp_path)
    rewrite(path, lambda m: m.update({"state/2/exp_avg_sq": m["state/2/exp_avg_sq"].astype(np.float64)}))
    assert_refused(path, re.escape("state[2]['exp_avg_sq']"))


def test_missing_and_unknown_state(tmp_path):
    path = saved(tmp_path)
    rewrite(path, lambda m: m.pop("state/0/exp_avg"))
    assert_refused(path, "lacks")
    path = saved(tmp_path)
    rewrite(path, lambda m: m.update({"state/0/momentum_buffer": np.zeros((3, 4))}))
    assert_refused(path, "unknown entry 'momentum_buffer'")
    path = saved(tmp_path)
    rewrite(path, lambda m: m.update({"state/9/exp_avg": np.zeros(3)}))
    assert_refused(path, "state for parameter 9")
    path = saved(tmp_path)
    rewrite(path, lambda m: m.update({"junk": np.zeros(3)}))
    assert_refused(path, "unexpected entry 'junk'")


def edit_meta(edit):
    def apply(members):
        meta = json.loads(str(members["meta"]))
        edit(meta)
        members["meta"] = np.array(json.dumps(meta))
    return apply


@pytest.mark.parametrize("key,value,match", [("lr", -1.0, "lr"), ("eps", 0.0, "eps"), ("betas", [1.0, 0.5], "beta1"),
                                             ("lr", "fast", "lr")])
def test_bad_hyperparameter_in_the_file(tmp_path, key, value, match):
    path = saved(tmp_path)
    rewrite(path, edit_meta(lambda m: m["param_groups"][1]["hyper"].update({key: value})))
    assert_refused(path, match)


def test_bad_step_count_and_malformed_meta(tmp_path):
    path = saved(tmp_path)
    rewrite(path, edit_meta(lambda m: m["state"]["0"].update(step=-3)))
    assert_refused(path, "step")
    path = saved(tmp_path)
    rewrite(path, edit_meta(lambda m: m["param_groups"][0]["hyper"].update(momentum=0.9)))
    assert_refused(path, "hyperparameters")
    path = saved(tmp_path)
    rewrite(path, edit_meta(lambda m: m.pop("params")))
    assert_refused(path, "malformed")
    path = saved(tmp_path)
    rewrite(path, lambda m: m.update(meta=np.array("{not json")))
    assert_refused(path, "unreadable header")


def test_missing_file_is_a_file_not_found_error(tmp_path):
    opt, _ = target()
    with pytest.raises(FileNotFoundError):
        opt.load(tmp_path / "nope.npz")


def test_unstorable_hyperparameter_is_a_type_error(tmp_path):
    opt, _ = target()
    opt.param_groups[0]["lr"] = object()
    with pytest.raises(TypeError, match="lr"):
        opt.save(tmp_path / "c.npz")
    assert not os.listdir(tmp_path)



def test_schedule_lr_resumes_bit_identically(tmp_path):
    """A schedule as lr: the checkpoint keeps the groups' schedule step counts, so the resumed run
    takes the same learning rates as the uninterrupted one."""
    from fastopt import schedules

    def build(seed):
        opt, params = make("AdamW", dict(lr=1e-2), seed=seed)
        opt.param_groups[0]["lr"] = schedules.WarmupCosine(base_lr=1e-2, warmup_steps=2, total_steps=8)
        return opt, params

    straight, straight_params = build(0)
    for t in range(6):
        straight.step(grads(straight_params, t))
    first, first_params = build(0)
    for t in range(3):
        first.step(grads(first_params, t))
    first.save(tmp_path / "opt.npz")
    resumed, resumed_params = build(0)  # the same starting parameters ...
    for p, q in zip(resumed_params, first_params):
        p[...] = q  # ... moved to where the first run stopped
    resumed.load(tmp_path / "opt.npz")
    assert resumed.schedule_steps == [3, 3]
    for t in range(3, 6):
        resumed.step(grads(resumed_params, t))
    assert fingerprint(resumed, resumed_params) == fingerprint(straight, straight_params)


def test_a_different_schedule_is_refused_and_changes_nothing(tmp_path):
    from fastopt import schedules

    opt, params = make("Adam", dict(lr=1e-2))
    opt.param_groups[0]["lr"] = schedules.Exponential(base_lr=1e-2, gamma=0.9)
    opt.step(grads(params, 0))
    opt.save(tmp_path / "c.npz")
    other, other_params = make("Adam", dict(lr=1e-2))
    other.param_groups[0]["lr"] = schedules.Exponential(base_lr=1e-2, gamma=0.5)
    other.step(grads(other_params, 0))
    other.step(grads(other_params, 1))
    before = fingerprint(other, other_params), list(other.schedule_steps)
    with pytest.raises(ValueError, match="schedule"):
        other.load(tmp_path / "c.npz")
    assert (fingerprint(other, other_params), list(other.schedule_steps)) == before


def test_a_zero_dimensional_parameter_round_trips(tmp_path):
    # Its state arrays are 0-d too, and must come back 0-d (np.ascontiguousarray made them 1-d, and the
    # checkpoint was refused as a shape mismatch).
    w = np.array(1.5)
    opt = optim.Adam([w], lr=0.1)
    opt.step([np.array(0.3)])
    opt.save(tmp_path / "scalar.npz")
    again = optim.Adam([w.copy()], lr=0.1)
    again.load(tmp_path / "scalar.npz")
    assert again.state[0]["exp_avg"].shape == ()
    assert again.state[0]["exp_avg"] == opt.state[0]["exp_avg"]
