"""fastopt.references (the NumPy witnesses of the optimizers fastopt adds) checked against torch.optim's
single-tensor implementation (foreach=False): NAdam, RAdam, Adamax, Adadelta, ASGD, Rprop, Adafactor.

Each case draws its hyperparameters and data from its own seed, runs 40 steps on a list of mixed
shapes with a fresh random gradient every step, and compares the parameters and every state entry
(arrays and torch's scalar state: mu_product, eta, mu) every few steps. float64 runs with torch's
default dtype set to float64, so torch's 0-dim scalar state is float64 too and the two agree to
rounding (rtol 1e-10); one float32 case per optimizer runs at torch's usual float32 default and is
compared at a float32 tolerance.
"""

from __future__ import annotations

import math
import zlib

import numpy as np
import pytest

from fastopt import references

torch = pytest.importorskip("torch")

STEPS = 40
CHECK_EVERY = 5
SHAPES = [(7,), (3, 5), (33,), (2, 3, 4), (1,), (4, 1)]
TOLERANCE = {
    np.float64: dict(rtol=1e-10, atol=1e-12),
    # float32: torch's lerp against the reference's beta*m + (1-beta)*g, and torch's float32 scalar
    # state (mu_product, eta) against the reference's doubles, differ by ulps that 40 steps compound.
    # Measured over 5 seeds each: at most 5e-7 absolute (ASGD), 0 for Rprop (bit-identical).
    np.float32: dict(rtol=1e-5, atol=1e-6),
}


def _log_uniform(rng, low, high):
    return float(10.0 ** rng.uniform(np.log10(low), np.log10(high)))


def _weight_decay(rng, on):
    return float(rng.uniform(1e-3, 1e-1)) if on else 0.0


# Hyperparameter draws per optimizer: the flags of a case choose the branch, the rng the values.
def _draw_nadam(rng, wd=False, decoupled=False, maximize=False):
    return dict(lr=float(rng.uniform(1e-3, 2e-2)), beta1=float(rng.uniform(0.8, 0.95)),
                beta2=float(rng.uniform(0.9, 0.999)), eps=_log_uniform(rng, 1e-8, 1e-6),
                momentum_decay=float(rng.uniform(1e-3, 1e-2)), weight_decay=_weight_decay(rng, wd),
                decoupled_weight_decay=decoupled, maximize=maximize)


def _draw_radam(rng, wd=False, decoupled=False, maximize=False, beta2_range=(0.9, 0.999)):
    return dict(lr=float(rng.uniform(1e-3, 2e-2)), beta1=float(rng.uniform(0.8, 0.95)),
                beta2=float(rng.uniform(*beta2_range)), eps=_log_uniform(rng, 1e-8, 1e-6),
                weight_decay=_weight_decay(rng, wd), decoupled_weight_decay=decoupled, maximize=maximize)


def _draw_adamax(rng, wd=False, maximize=False):
    return dict(lr=float(rng.uniform(1e-3, 2e-2)), beta1=float(rng.uniform(0.8, 0.95)),
                beta2=float(rng.uniform(0.9, 0.999)), eps=_log_uniform(rng, 1e-8, 1e-6),
                weight_decay=_weight_decay(rng, wd), maximize=maximize)


def _draw_adadelta(rng, wd=False, maximize=False):
    return dict(lr=float(rng.uniform(0.1, 1.0)), rho=float(rng.uniform(0.8, 0.99)),
                eps=_log_uniform(rng, 1e-7, 1e-5), weight_decay=_weight_decay(rng, wd), maximize=maximize)


def _draw_asgd(rng, wd=False, maximize=False, averaging=True):
    # A small t0 makes mu < 1 within the run (the averaging branch); the default t0 = 1e6 never does.
    return dict(lr=float(rng.uniform(1e-3, 5e-2)), lambd=_log_uniform(rng, 1e-4, 1e-2),
                alpha=float(rng.uniform(0.5, 1.0)), t0=float(rng.integers(3, 20)) if averaging else 1e6,
                weight_decay=_weight_decay(rng, wd), maximize=maximize)


def _draw_rprop(rng, maximize=False, tight_bounds=False):
    # tight bounds: the clamp of the step size bites from both sides within 40 steps.
    lr = float(rng.uniform(1e-3, 5e-2))
    return dict(lr=lr, etaminus=float(rng.uniform(0.3, 0.7)), etaplus=float(rng.uniform(1.1, 1.5)),
                step_size_min=lr * 0.3 if tight_bounds else _log_uniform(rng, 1e-7, 1e-5),
                step_size_max=lr * 1.5 if tight_bounds else 50.0, maximize=maximize)


def _draw_adafactor(rng, wd=False, maximize=False, eps1=False, clip=False):
    # lr in (0.2, 0.5): rho_t = min(lr, 1/sqrt(t)) takes lr first, then 1/sqrt(t) within 40 steps.
    # clip: a threshold d just above 1 (the default d = 1 clips only when RMS(U) > 1).
    return dict(lr=float(rng.uniform(0.2, 0.5)), beta2_decay=float(rng.uniform(-1.0, -0.5)),
                eps1=_log_uniform(rng, 1e-8, 1e-7) if eps1 else None, eps2=_log_uniform(rng, 1e-4, 1e-2),
                d=float(rng.uniform(1.0, 1.2)) if clip else 1.0, weight_decay=_weight_decay(rng, wd),
                maximize=maximize)


OPTIMIZERS = {
    "nadam": ("NAdam", _draw_nadam),
    "radam": ("RAdam", _draw_radam),
    "adamax": ("Adamax", _draw_adamax),
    "adadelta": ("Adadelta", _draw_adadelta),
    "asgd": ("ASGD", _draw_asgd),
    "rprop": ("Rprop", _draw_rprop),
    "adafactor": ("Adafactor", _draw_adafactor),
}

CASES = [
    ("nadam", {}),
    ("nadam", dict(wd=True)),
    ("nadam", dict(wd=True, decoupled=True)),
    ("nadam", dict(maximize=True)),
    ("nadam", dict(wd=True, decoupled=True, maximize=True)),
    ("radam", {}),
    ("radam", dict(wd=True)),
    ("radam", dict(wd=True, decoupled=True, maximize=True)),
    ("radam", dict(maximize=True, beta2_range=(0.3, 0.6))),  # rho_inf <= 5: never rectifies
    ("radam", dict(wd=True, beta2_range=(0.7, 0.8))),  # rectifies from the second or third step
    ("adamax", {}),
    ("adamax", dict(wd=True)),
    ("adamax", dict(maximize=True)),
    ("adamax", dict(wd=True, maximize=True)),
    ("adadelta", {}),
    ("adadelta", dict(wd=True)),
    ("adadelta", dict(maximize=True)),
    ("adadelta", dict(wd=True, maximize=True)),
    ("asgd", dict(averaging=False)),
    ("asgd", {}),
    ("asgd", dict(wd=True)),
    ("asgd", dict(wd=True, maximize=True)),
    ("rprop", {}),
    ("rprop", dict(maximize=True)),
    ("rprop", dict(tight_bounds=True)),
    ("rprop", dict(tight_bounds=True, maximize=True)),
    ("adafactor", {}),
    ("adafactor", dict(wd=True)),
    ("adafactor", dict(maximize=True, eps1=True)),
    ("adafactor", dict(wd=True, clip=True)),
]


def _case_id(case):
    name, flags = case
    return name + "".join(f"-{k}" if v is True else f"-{k}={v}" for k, v in flags.items())


def _torch_kwargs(name, hyper):
    """The reference's keywords as torch's constructor spells them."""
    kwargs = dict(hyper)
    if "beta1" in kwargs:
        kwargs["betas"] = (kwargs.pop("beta1"), kwargs.pop("beta2"))
    if name == "rprop":
        kwargs["etas"] = (kwargs.pop("etaminus"), kwargs.pop("etaplus"))
        kwargs["step_sizes"] = (kwargs.pop("step_size_min"), kwargs.pop("step_size_max"))
    if name == "adafactor":
        kwargs["eps"] = (kwargs.pop("eps1"), kwargs.pop("eps2"))
    return kwargs


def _gradient(rng, name, shape, dtype):
    grad = rng.standard_normal(shape)
    if name == "rprop":
        # Exact zeros give Rprop's "no sign information" branch (factor 1, no move).
        grad[rng.random(shape) < 0.15] = 0.0
    if name == "adafactor" and shape in ((33,), (4, 1)):
        # Gradients ~1e-5: V ~ 1e-10 sits between eps1**2 and eps1 for the drawn eps1, so the
        # clamp max(V, eps1**2) is tested on both a vector and a factored parameter.
        grad *= 1e-5
    return grad.astype(dtype)


def _compare(ref_params, ref_states, torch_params, opt, dtype, where):
    tol = TOLERANCE[dtype]
    for i, (p_ref, p_torch) in enumerate(zip(ref_params, torch_params)):
        np.testing.assert_allclose(p_ref, p_torch.detach().numpy(), **tol, err_msg=f"{where}: param {i}")
        torch_state = opt.state[p_torch]
        assert set(torch_state) - {"step"} == set(ref_states[i]), f"{where}: state keys of param {i}"
        for key, value in ref_states[i].items():
            expected = torch_state[key].detach().numpy()
            if isinstance(value, np.ndarray):
                # Adafactor's row_var/col_var have keepdim shapes, not the parameter's.
                assert value.dtype == dtype and value.shape == expected.shape, f"{where}: state {key!r} of param {i}"
            else:
                assert isinstance(value, float), f"{where}: scalar state {key!r} must be a Python float"
            np.testing.assert_allclose(value, expected, **tol, err_msg=f"{where}: state {key!r} of param {i}")


def _run(name, flags, dtype, seed):
    torch_class_name, draw = OPTIMIZERS[name]
    rng = np.random.default_rng(seed)
    hyper = draw(rng, **flags)
    init_state = getattr(references, f"{name}_init_state")
    step_fn = getattr(references, f"{name}_step")

    ref_params = [rng.standard_normal(shape).astype(dtype) for shape in SHAPES]
    torch_params = [torch.nn.Parameter(torch.from_numpy(p.copy())) for p in ref_params]
    opt = getattr(torch.optim, torch_class_name)(torch_params, foreach=False, **_torch_kwargs(name, hyper))
    ref_states = [init_state(p, **hyper) for p in ref_params]

    events = {"rprop_flips": 0, "radam_rectified": 0, "radam_plain": 0, "asgd_averaged": 0}
    for step in range(1, STEPS + 1):
        grads = [_gradient(rng, name, shape, dtype) for shape in SHAPES]
        if name == "rprop":
            g_eff = [-g if hyper["maximize"] else g for g in grads]
            events["rprop_flips"] += sum(int(np.sum(g * s["prev"] < 0)) for g, s in zip(g_eff, ref_states))
        if name == "radam":  # rho_t, written out here rather than taken from the reference
            b2 = hyper["beta2"]
            rho_inf = 2 / (1 - b2) - 1
            rho_t = rho_inf - 2 * step * b2**step / (1 - b2**step)
            events["radam_rectified" if rho_t > 5 else "radam_plain"] += 1
        if name == "asgd" and ref_states[0]["mu"] != 1.0:
            events["asgd_averaged"] += 1
        for p, g in zip(torch_params, grads):
            p.grad = torch.from_numpy(g.copy())
        opt.step()
        step_fn(ref_params, grads, ref_states, step=step, **hyper)
        if step % CHECK_EVERY == 0 or step in (1, 2):
            _compare(ref_params, ref_states, torch_params, opt, dtype, f"{name} {flags} step {step}")
    return hyper, events


@pytest.fixture
def default_dtype():
    """Set torch's default dtype (the dtype of its scalar state) for one test, restoring it after."""
    saved = torch.get_default_dtype()
    yield torch.set_default_dtype
    torch.set_default_dtype(saved)


@pytest.mark.parametrize("case", CASES, ids=[_case_id(c) for c in CASES])
def test_reference_matches_torch_float64(case, default_dtype):
    name, flags = case
    default_dtype(torch.float64)
    hyper, events = _run(name, flags, np.float64, seed=zlib.crc32(_case_id(case).encode()))

    # The cases reach the branches they are named for.
    if name == "rprop":
        assert events["rprop_flips"] > 0
    if name == "radam":
        if hyper["beta2"] <= 2 / 3:
            assert events["radam_rectified"] == 0 and events["radam_plain"] == STEPS
        else:
            assert events["radam_rectified"] > 0 and events["radam_plain"] > 0
    if name == "asgd":
        assert (events["asgd_averaged"] > 0) == flags.get("averaging", True)


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_reference_matches_torch_float32(name, default_dtype):
    default_dtype(torch.float32)
    flags = {"rprop": dict(maximize=True), "radam": dict(wd=True)}.get(name, dict(wd=True, maximize=True))
    _run(name, flags, np.float32, seed=zlib.crc32(f"f32-{name}".encode()))


def test_float32_arithmetic_stays_float32():
    """Scalars never upcast: a NumPy integer step (whose ``beta**step`` would be a float64 scalar) gives
    bit-identical float32 results to a Python int step, and params and state stay float32."""
    for name in OPTIMIZERS:
        rng = np.random.default_rng(zlib.crc32(name.encode()))
        start = [rng.standard_normal(s).astype(np.float32) for s in SHAPES]
        grads = [[rng.standard_normal(s).astype(np.float32) for s in SHAPES] for _ in range(3)]
        runs = []
        for step_type in (int, np.int64):
            params = [p.copy() for p in start]
            states = [getattr(references, f"{name}_init_state")(p) for p in params]
            for step in (1, 2, 3):
                getattr(references, f"{name}_step")(params, grads[step - 1], states, step=step_type(step))
            assert all(p.dtype == np.float32 for p in params), name
            runs.append(params)
        for a, b in zip(*runs):
            np.testing.assert_array_equal(a, b, err_msg=name)


# ---------------------------------------------------------------- Muon
# torch.optim.Muon runs Newton-Schulz in bfloat16, the reference in float32. The exact comparison swaps
# torch's iteration for the same recipe in float32 (written below from torch's function, .float()
# where torch has .bfloat16()), so everything else -- momentum, Nesterov, the lr adjustment, the weight
# decay -- is compared at float32 rounding; one more test compares against torch unmodified at a
# bfloat16 tolerance.

MUON_SHAPES = [(3, 5), (6, 2), (4, 4), (1, 7), (7, 1)]
MUON_CASES = [
    dict(),
    dict(nesterov=False),
    dict(adjust_lr_fn="match_rms_adamw", weight_decay=0.0),
    dict(adjust_lr_fn="original", nesterov=False, ns_steps=3),
]


def _newton_schulz_float32_torch(grad, ns_coefficients, ns_steps, eps):
    a, b, c = ns_coefficients
    x = grad.float()
    if grad.size(0) > grad.size(1):
        x = x.T
    x = x / x.norm().clamp(min=eps)
    for _ in range(ns_steps):
        gram = x @ x.T
        x = a * x + (b * gram + c * gram @ gram) @ x
    return x.T if grad.size(0) > grad.size(1) else x


def _run_muon(flags, seed, steps):
    rng = np.random.default_rng(seed)
    hyper = dict(lr=float(rng.uniform(1e-3, 2e-2)), momentum=float(rng.uniform(0.8, 0.97)),
                 weight_decay=float(rng.uniform(0.0, 0.2)))
    hyper.update(flags)
    ref_params = [rng.standard_normal(s) for s in MUON_SHAPES]
    torch_params = [torch.nn.Parameter(torch.from_numpy(p.copy())) for p in ref_params]
    opt = torch.optim.Muon(torch_params, **hyper)
    ref_states = [references.muon_init_state(p, **hyper) for p in ref_params]
    for step in range(1, steps + 1):
        grads = [rng.standard_normal(s) for s in MUON_SHAPES]
        for p, g in zip(torch_params, grads):
            p.grad = torch.from_numpy(g.copy())
        opt.step()
        references.muon_step(ref_params, grads, ref_states, step=step, **hyper)
        yield step, ref_params, ref_states, torch_params, opt, hyper


@pytest.mark.parametrize("flags", MUON_CASES, ids=[str(c) for c in MUON_CASES])
def test_muon_matches_torch_with_float32_newton_schulz(flags, monkeypatch, default_dtype):
    default_dtype(torch.float64)
    import torch.optim._muon as torch_muon

    monkeypatch.setattr(torch_muon, "_zeropower_via_newtonschulz", _newton_schulz_float32_torch)
    for step, ref_params, ref_states, torch_params, opt, hyper in _run_muon(flags, zlib.crc32(str(flags).encode()), STEPS):
        if step % CHECK_EVERY:
            continue
        for i, (p_ref, p_torch) in enumerate(zip(ref_params, torch_params)):
            # The parameters carry float32 Newton-Schulz rounding (two BLAS orders): measured 2e-7 after 40 steps.
            np.testing.assert_allclose(p_ref, p_torch.detach().numpy(), rtol=1e-6, atol=1e-6,
                                       err_msg=f"step {step} param {i}")
            # The momentum buffer sees no float32 arithmetic.
            np.testing.assert_allclose(ref_states[i]["momentum_buffer"],
                                       opt.state[p_torch]["momentum_buffer"].numpy(), **TOLERANCE[np.float64])


def test_muon_close_to_torch_bfloat16(default_dtype):
    # torch's own bfloat16 Newton-Schulz: each step the difference is bfloat16 rounding of O (entries
    # up to ~1, 8 bits of mantissa: ~0.01) times lr_adj (<= lr*sqrt(7)); bound over 10 steps.
    default_dtype(torch.float64)
    for step, ref_params, ref_states, torch_params, opt, hyper in _run_muon({}, 5, 10):
        pass
    bound = 10 * hyper["lr"] * math.sqrt(7) * 0.02
    for i, (p_ref, p_torch) in enumerate(zip(ref_params, torch_params)):
        diff = float(np.max(np.abs(p_ref - p_torch.detach().numpy())))
        assert diff < bound, (i, diff, bound)


def test_muon_newton_schulz_orthogonalises():
    # Jordan's coefficients push every singular value into roughly (0.5, 1.5) (not exactly 1) in 5 steps.
    rng = np.random.default_rng(3)
    for shape in [(8, 20), (20, 8), (16, 16)]:
        out = references.newton_schulz_float32(rng.standard_normal(shape))
        assert out.dtype == np.float32 and out.shape == shape
        singular = np.linalg.svd(out.astype(np.float64), compute_uv=False)
        assert singular.min() > 0.4 and singular.max() < 1.3, singular


def test_muon_maximize_is_minimizing_the_negated_gradient():
    rng = np.random.default_rng(9)
    start = rng.standard_normal((4, 6))
    grads = [rng.standard_normal((4, 6)) for _ in range(3)]
    a, b = start.copy(), start.copy()
    sa, sb = references.muon_init_state(a), references.muon_init_state(b)
    for step, g in enumerate(grads, 1):
        references.muon_step([a], [g], [sa], step=step, lr=0.02, maximize=True)
        references.muon_step([b], [-g], [sb], step=step, lr=0.02)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, start)


def test_muon_rejects_non_matrices():
    with pytest.raises(ValueError, match="2-D"):
        references.muon_init_state(np.zeros(3))
    p = np.zeros(3)
    with pytest.raises(ValueError, match=r"params\[0\]"):
        references.muon_step([p], [np.ones(3)], [{"momentum_buffer": np.zeros(3)}], step=1)
    np.testing.assert_array_equal(p, np.zeros(3))
