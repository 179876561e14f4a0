"""bfloat16 storage for Adam/AdamW on the CPU (issue 18, part A): bfloat16 optimizer state with float32
params, bfloat16 params+grads (state float32 or bfloat16), round-to-nearest-even and stochastic rounding.

Witnesses: the NumPy reference of bf16_reference.py (written from the definitions), ml_dtypes' own
astype(bfloat16) (round-to-nearest-even, independent of both), and fastopt's float32 kernel fed the
widened values (the update between load and store must be the float32 kernel's, bit for bit)."""

from __future__ import annotations

import numpy as np
import pytest

import fastopt
import bf16_reference as ref
from isa_sweep import assert_same_everywhere

ml_dtypes = pytest.importorskip("ml_dtypes")
BF16 = ml_dtypes.bfloat16

SIZES = [0, 1, 7, 33, 1000, 300007]  # (300007: past the threading threshold, odd tails)
CONFIGS = [
    dict(kernel="adamw", amsgrad=False, maximize=False, weight_decay=1e-2, grad_scale=1.0),
    dict(kernel="adam", amsgrad=True, maximize=False, weight_decay=1e-3, grad_scale=1.0),
    dict(kernel="adamw", amsgrad=True, maximize=True, weight_decay=0.1, grad_scale=4.0),
    dict(kernel="adam", amsgrad=False, maximize=True, weight_decay=0.0, grad_scale=0.5),
]
HYPER = dict(lr=1e-2, beta1=0.9, beta2=0.999, eps=1e-8)


def bits(a) -> np.ndarray:
    return np.asarray(a).view(np.uint16)


def bf16(x) -> np.ndarray:
    return np.asarray(x, np.float32).astype(BF16)


def kernel(config):
    return fastopt.adamw_ if config["kernel"] == "adamw" else fastopt.adam_


def call(config, params, grads, m, v, vmax, step, **extra):
    kw = dict(HYPER, weight_decay=config["weight_decay"], amsgrad=config["amsgrad"], maximize=config["maximize"],
              grad_scale=config["grad_scale"], step=step)
    kw.update(extra)
    return kernel(config)(params, grads, m, v, vmax if config["amsgrad"] else None, **kw)


def fresh(rng, sizes, param_dtype, state_dtype):
    params = [rng.standard_normal(n).astype(np.float32).astype(param_dtype) for n in sizes]
    state = [[np.zeros(n, state_dtype) for n in sizes] for _ in range(3)]
    return params, state


def f32(a) -> np.ndarray:
    return np.asarray(a).astype(np.float32)


# ---------------------------------------------------------------- the reference itself

def test_reference_rounding_matches_ml_dtypes_on_every_kind_of_value():
    rng = np.random.default_rng(0)
    u = rng.integers(0, 2**32, 200000, dtype=np.uint64).astype(np.uint32)
    u[:8] = [0x3F808000, 0x3F818000, 0x7F7FFFFF, 0xFF7F8000, 0x7F800000, 0xFF800000, 0x7FC00001, 0xFFFFFFFF]
    u[8:1000] = (u[8:1000] & 0xFFFF0000) | 0x8000  # ties
    x = u.view(np.float32)
    with np.errstate(invalid="ignore"):
        assert np.array_equal(ref.round_nearest_even(x), bits(x.astype(BF16)))


def test_reference_hash_is_splitmix64():
    # splitmix64 seeded with 0: its first outputs are 0xE220A8397B1DCDAF, 0x6E789E6AA1B965F4 (the
    # published sequence), so with key 0 the bits of elements 0 and 1 are their top 16 bits.
    i = np.arange(1, 3, dtype=np.uint64)
    with np.errstate(over="ignore"):
        out = ref.mix64(np.uint64(0) + i * ref.GAMMA)
    assert [int(o) for o in out] == [0xE220A8397B1DCDAF, 0x6E789E6AA1B965F4]


# ---------------------------------------------------------------- bfloat16 state, float32 params

@pytest.mark.parametrize("config", CONFIGS)
def test_bf16_state_is_the_float32_kernel_then_round_to_nearest_even(config):
    rng = np.random.default_rng(1)
    params, (m, v, vmax) = fresh(rng, SIZES, np.float32, BF16)
    for step in range(1, 5):
        grads = [rng.standard_normal(n).astype(np.float32) for n in SIZES]
        # the witness: the float32 kernel on float32 copies of the widened state
        wp = [p.copy() for p in params]
        wm, wv, wx = ([f32(a) for a in s] for s in (m, v, vmax))
        call(config, wp, grads, wm, wv, wx, step)
        assert call(config, params, grads, m, v, vmax, step) is False
        for k in range(len(SIZES)):
            assert np.array_equal(params[k].view(np.uint32), wp[k].view(np.uint32))
            assert np.array_equal(bits(m[k]), bits(wm[k].astype(BF16)))
            assert np.array_equal(bits(v[k]), bits(wv[k].astype(BF16)))
            if config["amsgrad"]:
                assert np.array_equal(bits(vmax[k]), bits(wx[k].astype(BF16)))
            else:
                assert not bits(vmax[k]).any()


@pytest.mark.parametrize("config", CONFIGS)
def test_bf16_state_against_float64_adam(config):
    rng = np.random.default_rng(2)
    n = 5003
    p = rng.standard_normal(n).astype(np.float32)
    m, v, vmax = (np.zeros(n, BF16) for _ in range(3))
    for step in range(1, 6):
        g = rng.standard_normal(n).astype(np.float32)
        kw = dict(HYPER, weight_decay=config["weight_decay"], amsgrad=config["amsgrad"],
                  maximize=config["maximize"], decoupled=config["kernel"] == "adamw", step=step)
        ep, em, ev, ex = ref.adam64(p, g / np.float64(config["grad_scale"]), f32(m), f32(v), f32(vmax), **kw)
        call(config, p, g, m, v, vmax, step)
        # the stored state is the exact float64 value rounded to bfloat16 (relative 2**-8) after the float32
        # arithmetic (relative ~1e-6); p is float32 arithmetic from bfloat16 inputs
        assert np.allclose(f32(m), em, rtol=2**-8 + 1e-5, atol=1e-30)
        assert np.allclose(f32(v), ev, rtol=2**-8 + 1e-5, atol=1e-30)
        if config["amsgrad"]:
            assert np.allclose(f32(vmax), ex, rtol=2**-8 + 1e-5, atol=1e-30)
        assert np.allclose(p, ep, rtol=1e-5, atol=1e-6)


def test_torch_bf16_state_tensors_give_the_numpy_bits():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    n = 777
    p = rng.standard_normal(n).astype(np.float32)
    g = rng.standard_normal(n).astype(np.float32)
    m, v = np.zeros(n, BF16), np.zeros(n, BF16)
    tp, tm, tv = torch.tensor(p), torch.zeros(n, dtype=torch.bfloat16), torch.zeros(n, dtype=torch.bfloat16)
    for step in (1, 2, 3):
        fastopt.adamw_(p, g, m, v, step=step)
        fastopt.adamw_(tp, torch.tensor(g), tm, tv, step=step)
    assert np.array_equal(tp.numpy(), p)
    assert np.array_equal(tm.view(torch.int16).numpy().view(np.uint16), bits(m))
    assert np.array_equal(tv.view(torch.int16).numpy().view(np.uint16), bits(v))


def test_nan_and_inf_are_kept():
    p = np.array([1.0, 2.0, 3.0, 4.0, np.nan], np.float32)
    g = np.array([np.nan, -np.inf, 1.0, 1.0, 1.0], np.float32)
    m = bf16([0.0, 0.0, np.inf, -np.nan, 0.5])
    v = bf16([0.0, 0.0, 1.0, 1.0, 1.0])
    fastopt.adam_(p, g, m, v, step=1)
    assert np.isnan(p[0]) and np.isnan(f32(m)[0]) and np.isnan(f32(v)[0])
    assert np.isnan(p[1]) and f32(m)[1] == -np.inf and f32(v)[1] == np.inf
    assert f32(m)[2] == np.inf
    assert np.isnan(f32(m)[3]) and bits(m)[3] in (0x7FC0, 0xFFC0)
    assert np.isnan(p[4])
    assert set(bits(m)[np.isnan(f32(m))]) <= {0x7FC0, 0xFFC0}


# ---------------------------------------------------------------- bfloat16 params and grads

@pytest.mark.parametrize("state_dtype", [np.float32, BF16])
@pytest.mark.parametrize("config", CONFIGS[:3])
def test_bf16_params_are_the_float32_kernel_then_round_to_nearest_even(config, state_dtype):
    rng = np.random.default_rng(4)
    params, (m, v, vmax) = fresh(rng, SIZES, BF16, state_dtype)
    for step in range(1, 4):
        grads = [bf16(rng.standard_normal(n)) for n in SIZES]
        wp = [f32(p) for p in params]
        wm, wv, wx = ([f32(a) for a in s] for s in (m, v, vmax))
        call(config, wp, [f32(g) for g in grads], wm, wv, wx, step)
        call(config, params, grads, m, v, vmax, step)
        for k in range(len(SIZES)):
            assert np.array_equal(bits(params[k]), ref.round_nearest_even(wp[k]))
            for got, want in ((m, wm), (v, wv)) + (((vmax, wx),) if config["amsgrad"] else ()):
                if state_dtype is np.float32:
                    assert np.array_equal(got[k].view(np.uint32), want[k].view(np.uint32))
                else:
                    assert np.array_equal(bits(got[k]), ref.round_nearest_even(want[k]))


def test_bf16_params_against_torch_fused_adamw():
    # torch keeps the state in the parameter's dtype, so the comparison is with bfloat16 state. torch's
    # fused CPU kernel computes in float32 too, but in its own order: it moves exp_avg by a lerp,
    # m + (1 - b1) * (g - m), where fastopt (and DESIGN.md) computes b1 * m + (1 - b1) * g, so about 1% of
    # the float32 moments differ by an ulp and a few of those round to the neighbouring bfloat16. The
    # step's relative change carries into p as a change of about lr * 2**-8, visible in the bits only
    # where |p| is near lr. So: almost all bits equal, and the rest within that bound.
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(5)
    n = 4099
    lr = 1e-2
    p0 = rng.standard_normal(n).astype(np.float32)
    tp = torch.nn.Parameter(torch.tensor(p0).to(torch.bfloat16))
    opt = torch.optim.AdamW([tp], lr=lr, weight_decay=1e-2, fused=True)
    p = bf16(p0)
    m, v = np.zeros(n, BF16), np.zeros(n, BF16)
    for step in range(1, 6):
        g = bf16(rng.standard_normal(n))
        tp.grad = torch.tensor(f32(g)).to(torch.bfloat16)
        opt.step()
        fastopt.adamw_(p, g, m, v, lr=lr, weight_decay=1e-2, step=step)
    theirs = tp.detach().float().numpy()
    ours = f32(p)
    assert np.mean(ours == theirs) > 0.99
    assert np.allclose(ours, theirs, rtol=2**-8, atol=lr * 2**-3)
    assert np.mean(f32(m) == opt.state[tp]["exp_avg"].float().numpy()) > 0.95
    assert np.mean(f32(v) == opt.state[tp]["exp_avg_sq"].float().numpy()) > 0.99


# ---------------------------------------------------------------- every thread count and instruction set

def _digest_run(stochastic):
    rng = np.random.default_rng(6)
    sizes = [300007, 7, 131072 + 5]
    out = []
    for param_dtype, state_dtype in ((np.float32, BF16), (BF16, np.float32), (BF16, BF16)):
        params, (m, v, vmax) = fresh(rng, sizes, param_dtype, state_dtype)
        for step in (1, 2):
            grads = [rng.standard_normal(n).astype(np.float32).astype(param_dtype) for n in sizes]
            fastopt.adam_(params, grads, m, v, vmax, amsgrad=True, weight_decay=0.01, step=step,
                          stochastic_rounding=stochastic and True, seed=11)
        out.append(b"".join(np.asarray(a).tobytes() for a in params + m + v + vmax))
    return b"".join(out)


@pytest.mark.parametrize("stochastic", [False, True])
def test_same_bits_for_every_thread_count_and_instruction_set(stochastic):
    assert_same_everywhere(lambda: _digest_run(stochastic))


# ---------------------------------------------------------------- stochastic rounding

@pytest.mark.parametrize("param_dtype,state_dtype", [(np.float32, BF16), (BF16, np.float32), (BF16, BF16)])
def test_stochastic_rounding_matches_the_numpy_reference(param_dtype, state_dtype):
    rng = np.random.default_rng(7)
    sizes = [1000, 0, 300007]
    params, (m, v, vmax) = fresh(rng, sizes, param_dtype, state_dtype)
    seed = 2**64 - 5
    for step in (1, 2, 3):
        grads = [rng.standard_normal(n).astype(np.float32).astype(param_dtype) for n in sizes]
        wp = [f32(p) for p in params]
        wm, wv, wx = ([f32(a) for a in s] for s in (m, v, vmax))
        fastopt.adamw_(wp, [f32(g) for g in grads], wm, wv, wx, amsgrad=True, step=step)
        fastopt.adamw_(params, grads, m, v, vmax, amsgrad=True, step=step, stochastic_rounding=True, seed=seed)
        for k, n in enumerate(sizes):
            for operand, got, want, dtype in ((0, params, wp, param_dtype), (1, m, wm, state_dtype),
                                              (2, v, wv, state_dtype), (3, vmax, wx, state_dtype)):
                if dtype is np.float32:
                    assert np.array_equal(got[k].view(np.uint32), want[k].view(np.uint32))
                else:
                    expected = ref.round_stochastic(want[k], ref.random_bits(seed, step, k, operand, n))
                    assert np.array_equal(bits(got[k]), expected), (step, k, operand)


def _one_sr_call(seed, step, n=4096):
    p = np.zeros(n, np.float32)
    m, v = np.zeros(n, BF16), np.zeros(n, BF16)
    g = np.full(n, 1.2345678, np.float32)
    fastopt.adam_(p, g, m, v, step=step, stochastic_rounding=True, seed=seed)
    return m


def test_stochastic_rounding_is_reproducible_and_depends_on_seed_and_step():
    a = _one_sr_call(seed=1, step=3)
    assert np.array_equal(bits(a), bits(_one_sr_call(seed=1, step=3)))
    assert not np.array_equal(bits(a), bits(_one_sr_call(seed=2, step=3)))
    assert not np.array_equal(bits(a), bits(_one_sr_call(seed=1, step=4)))


def test_stochastic_rounding_is_unbiased():
    n = 200000
    m = _one_sr_call(seed=9, step=1, n=n)
    exact = np.float64(np.float32(np.float32(1 - 0.9) * np.float32(1.2345678)))  # (1 - b1) * g in float32
    values = f32(m).astype(np.float64)
    lo, hi = np.unique(values)  # the two neighbours only
    assert lo < exact < hi
    q = (exact - lo) / (hi - lo)
    sigma = (hi - lo) * np.sqrt(q * (1 - q) / n)
    assert abs(values.mean() - exact) < 3 * sigma
    # round-to-nearest would put every element on one neighbour
    assert 0.05 < np.mean(values == hi) < 0.95


# ---------------------------------------------------------------- bad input: a clear error, nothing written

def _snapshot(*groups):
    return [np.asarray(a).tobytes() for group in groups for a in (group if isinstance(group, list) else [group])]


@pytest.mark.parametrize("case", ["float64_params", "shape", "mixed_in_operand", "mixed_operands", "grads_dtype",
                                  "sr_float32", "seed_negative", "seed_big", "seed_float", "float16_state",
                                  "shared_memory", "readonly_state", "sr_float64"])
def test_bad_input_raises_and_writes_nothing(case):
    rng = np.random.default_rng(8)
    p = [rng.standard_normal(5).astype(np.float32), rng.standard_normal(6).astype(np.float32)]
    g = [np.ones(5, np.float32), np.ones(6, np.float32)]
    m = [bf16(rng.standard_normal(5)), bf16(rng.standard_normal(6))]
    v = [bf16(np.ones(5)), bf16(np.ones(6))]
    kwargs = dict(step=1)
    error, words = TypeError, "exp_avgs"
    if case == "float64_params":
        p = [a.astype(np.float64) for a in p]
        g = [a.astype(np.float64) for a in g]
        words = "params[0]"
    elif case == "shape":
        m[1] = bf16(np.zeros(7))
        error, words = ValueError, "exp_avgs[1] has shape (7,)"
    elif case == "mixed_in_operand":
        m[1] = np.zeros(6, np.float32)
        words = "exp_avgs[1]"
    elif case == "mixed_operands":
        v = [np.ones(5, np.float32), np.ones(6, np.float32)]
        words = "exp_avg_sqs[0]"
    elif case == "grads_dtype":
        g = [bf16(a) for a in g]
        words = "grads[0]"
    elif case == "sr_float32":
        m = [f32(a) for a in m]
        v = [f32(a) for a in v]
        kwargs["stochastic_rounding"] = True
        error, words = ValueError, "stochastic_rounding"
    elif case == "sr_float64":
        p, g, m, v = ([a.astype(np.float64) for a in arrays] for arrays in (p, g, m, v))
        kwargs["stochastic_rounding"] = True
        error, words = ValueError, "stochastic_rounding"
    elif case == "seed_negative":
        kwargs.update(stochastic_rounding=True, seed=-1)
        error, words = ValueError, "seed"
    elif case == "seed_big":
        kwargs.update(stochastic_rounding=True, seed=2**64)
        error, words = ValueError, "seed"
    elif case == "seed_float":
        kwargs.update(stochastic_rounding=True, seed=1.0)
        error, words = TypeError, "seed"
    elif case == "float16_state":
        m[0] = np.zeros(5, np.float16)
        words = "exp_avgs[0]"
    elif case == "shared_memory":
        both = bf16(np.zeros(12))
        m = [both[:5], both[6:]]
        v = [both[5:10], bf16(np.ones(6))]
        error, words = ValueError, "shares memory"
    elif case == "readonly_state":
        v[1].flags.writeable = False
        error, words = ValueError, "exp_avg_sqs[1] is read-only"
    before = _snapshot(p, g, m, v)
    with pytest.raises(error, match=words.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
        fastopt.adamw_(p, g, m, v, **kwargs)
    assert _snapshot(p, g, m, v) == before


def test_cuda_arrays_with_bf16_state_are_refused_and_nothing_is_written():
    class FakeCuda:  # a CUDA array by its protocol; its pointer is never written
        def __init__(self, n):
            self.__cuda_array_interface__ = dict(shape=(n,), typestr="<f4", data=(8, False), version=3)
    p, g = FakeCuda(4), FakeCuda(4)
    m, v = bf16(np.ones(4)), bf16(np.ones(4))
    before = _snapshot(m, v)
    with pytest.raises((TypeError, ValueError), match="cuda|CUDA"):
        fastopt.adamw_(p, g, m, v, step=1)
    assert _snapshot(m, v) == before


def test_lamb_still_refuses_bf16_on_the_cpu():
    # (the classic four take bfloat16 params with float32 state: tests/kernels/test_half_params_cpu.py; the
    # element-wise rules bfloat16 storage: test_bf16_state_rules.py; LAMB's per-tensor sums have no such loop)
    p = bf16(np.ones(4))
    with pytest.raises(TypeError, match=r"lamb_\(\) takes float32 or float64 arrays only"):
        fastopt.lamb_(p, bf16(np.ones(4)), np.zeros(4, np.float32), np.zeros(4, np.float32), lr=0.1, step=1)
    assert np.array_equal(np.asarray(p, np.float32), np.ones(4, np.float32))


@pytest.mark.parametrize("param_dtype", [np.float32, BF16])
def test_skip_nonfinite_and_found_inf_write_nothing(param_dtype):
    p = bf16([1.0, 2.0, 3.0]).astype(param_dtype)
    g = np.array([0.5, np.inf, 1.0], np.float32).astype(param_dtype)
    m, v = bf16([0.1, 0.2, 0.3]), bf16([0.1, 0.2, 0.3])
    before = _snapshot(p, g, m, v)
    assert fastopt.adamw_(p, g, m, v, step=1, skip_nonfinite=True) is True
    assert _snapshot(p, g, m, v) == before
    g[1] = 2.0
    before = _snapshot(p, g, m, v)
    assert fastopt.adamw_(p, g, m, v, step=1, found_inf=1.0) is True
    assert _snapshot(p, g, m, v) == before
    # a finite gradient that grad_scale < 1 pushes past float32's range is found too
    g[1] = np.float32(3e38).astype(param_dtype)
    before = _snapshot(p, g, m, v)
    assert fastopt.adamw_(p, g, m, v, step=1, skip_nonfinite=True, grad_scale=0.5) is True
    assert _snapshot(p, g, m, v) == before
    assert fastopt.adamw_(p, g, m, v, step=1, skip_nonfinite=True) is False
    assert _snapshot(p, g, m, v) != before
