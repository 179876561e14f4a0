"""fastopt.optim.Adam / AdamW with state_dtype="bfloat16" (issue 18, part A): the state is kept as
ml_dtypes.bfloat16 arrays, the steps equal the functional update's, state_dict / load_state_dict and
checkpoints round-trip bit-exactly, stochastic_rounding passes the seed and the step."""

from __future__ import annotations

import numpy as np
import pytest

import fastopt
from fastopt.optim import Adam, AdamW

ml_dtypes = pytest.importorskip("ml_dtypes")
BF16 = np.dtype(ml_dtypes.bfloat16)


def problem(seed=0, sizes=(7, 1000)):
    rng = np.random.default_rng(seed)
    params = [rng.standard_normal(n).astype(np.float32) for n in sizes]
    grads = [[rng.standard_normal(n).astype(np.float32) for n in sizes] for _ in range(4)]
    return params, grads


def run(opt_class, params, grads, **kwargs):
    opt = opt_class(params, lr=1e-2, **kwargs)
    for g in grads:
        opt.step(g)
    return opt


@pytest.mark.parametrize("opt_class,kernel", [(Adam, fastopt.adam_), (AdamW, fastopt.adamw_)])
@pytest.mark.parametrize("stochastic", [False, True])
def test_steps_equal_the_functional_update_with_bf16_state(opt_class, kernel, stochastic):
    params, grads = problem()
    mine = [p.copy() for p in params]
    opt = run(opt_class, mine, grads, amsgrad=True, state_dtype="bfloat16", stochastic_rounding=stochastic, seed=5)
    m = [np.zeros(p.shape, BF16) for p in params]
    v = [np.zeros(p.shape, BF16) for p in params]
    x = [np.zeros(p.shape, BF16) for p in params]
    extra = dict(stochastic_rounding=True, seed=5) if stochastic else {}
    for step, g in enumerate(grads, start=1):
        kernel(params, g, m, v, x, lr=1e-2, amsgrad=True, step=step,
               weight_decay=1e-2 if opt_class is AdamW else 0.0, **extra)
    for i in range(len(params)):
        assert np.array_equal(mine[i], params[i])
        state = opt.state[i]
        assert state["exp_avg"].dtype == BF16 and state["max_exp_avg_sq"].dtype == BF16
        for key, ref in (("exp_avg", m), ("exp_avg_sq", v), ("max_exp_avg_sq", x)):
            assert np.array_equal(state[key].view(np.uint16), ref[i].view(np.uint16))


def test_state_dict_round_trip_is_bit_exact():
    params, grads = problem(1)
    a_params = [p.copy() for p in params]
    a = run(AdamW, a_params, grads[:2], state_dtype="bfloat16")
    b_params = [p.copy() for p in a_params]
    b = AdamW(b_params, lr=1e-2, state_dtype="bfloat16")
    b.load_state_dict(a.state_dict())
    for g in grads[2:]:
        a.step(g)
        b.step(g)
    for pa, pb in zip(a_params, b_params):
        assert np.array_equal(pa, pb)
    for i in a.state:
        for key in ("exp_avg", "exp_avg_sq"):
            assert b.state[i][key].dtype == BF16
            assert np.array_equal(a.state[i][key].view(np.uint16), b.state[i][key].view(np.uint16))


def test_checkpoint_round_trip_is_bit_exact(tmp_path):
    params, grads = problem(2)
    a_params = [p.copy() for p in params]
    a = run(Adam, a_params, grads[:2], state_dtype="bfloat16", amsgrad=True, stochastic_rounding=True, seed=3)
    path = tmp_path / "ckpt.npz"
    a.save(path)
    with np.load(path, allow_pickle=False) as archive:  # bfloat16 is stored as its uint16 bit patterns
        assert archive["state/0/exp_avg"].dtype == np.uint16
    b_params = [p.copy() for p in a_params]
    b = Adam(b_params, lr=1e-2, state_dtype="bfloat16", amsgrad=True, stochastic_rounding=True, seed=3)
    b.load(path)
    for i in a.state:
        for key in ("exp_avg", "exp_avg_sq", "max_exp_avg_sq"):
            assert b.state[i][key].dtype == BF16
            assert np.array_equal(a.state[i][key].view(np.uint16), b.state[i][key].view(np.uint16))
    for g in grads[2:]:
        a.step(g)
        b.step(g)
    for pa, pb in zip(a_params, b_params):
        assert np.array_equal(pa, pb)


def test_checkpoint_with_a_bad_bfloat16_tag_is_refused(tmp_path):
    params, grads = problem(3)
    a = run(AdamW, [p.copy() for p in params], grads[:1], state_dtype="bfloat16")
    path = tmp_path / "ckpt.npz"
    a.save(path)
    with np.load(path, allow_pickle=False) as archive:
        contents = {k: archive[k] for k in archive.files}
    import json
    meta = json.loads(str(contents["meta"]))
    meta["bfloat16_arrays"] = ["meta"]
    contents["meta"] = np.array(json.dumps(meta))
    bad = tmp_path / "bad.npz"
    np.savez(bad, **contents)
    b = AdamW([p.copy() for p in params], lr=1e-2, state_dtype="bfloat16")
    with pytest.raises(ValueError, match="bfloat16_arrays"):
        b.load(bad)
    assert b.state == {} or all(not s for s in b.state.values())


def test_float32_state_dtype_is_todays_behaviour():
    params, grads = problem(4)
    a_params = [p.copy() for p in params]
    b_params = [p.copy() for p in params]
    a = run(AdamW, a_params, grads)
    b = run(AdamW, b_params, grads, state_dtype="float32")
    assert b.state[0]["exp_avg"].dtype == np.float32
    for pa, pb in zip(a_params, b_params):
        assert np.array_equal(pa, pb)


@pytest.mark.parametrize("kwargs,error,words", [
    (dict(state_dtype="float16"), ValueError,
     "state_dtype must be None (the params' dtype) or one of 'float32', 'bfloat16', 'int8', got 'float16'"),
    (dict(state_dtype="none"), ValueError, "state_dtype must be None"),
    (dict(stochastic_rounding=True), ValueError, "stochastic_rounding"),
    (dict(state_dtype="bfloat16", stochastic_rounding="yes"), TypeError, "stochastic_rounding"),
    (dict(state_dtype="bfloat16", seed=-1), ValueError, "seed"),
    (dict(state_dtype="bfloat16", seed=2**64), ValueError, "seed"),
])
def test_bad_arguments(kwargs, error, words):
    with pytest.raises(error, match=words.replace("(", r"\(").replace(")", r"\)")):
        AdamW([np.zeros(3, np.float32)], **kwargs)


def test_bfloat16_state_needs_float32_or_bfloat16_params():
    with pytest.raises(ValueError, match="state_dtype='bfloat16' keeps the state of float32 or bfloat16 params; "
                                         "params\\[1\\] has dtype float64"):
        Adam([np.zeros(3, np.float32), np.zeros(3)], state_dtype="bfloat16")


def test_loading_a_float32_state_dict_into_a_bfloat16_optimizer_rounds_it():
    params, grads = problem(5)
    a = run(Adam, [p.copy() for p in params], grads[:2])
    b = Adam([p.copy() for p in params], lr=1e-2, state_dtype="bfloat16")
    b.load_state_dict(a.state_dict())
    want = a.state[1]["exp_avg"].astype(BF16)
    assert b.state[1]["exp_avg"].dtype == BF16
    assert np.array_equal(b.state[1]["exp_avg"].view(np.uint16), want.view(np.uint16))
