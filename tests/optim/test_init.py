"""fastopt.init: the initialisers' statistics against their formulas (tolerances from the sample
size), the bounds of the uniform versions, in-place semantics, seeds, torch.nn.init's formulas,
and bad arguments."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fastopt import init

SHAPE = (300, 200)  # (fan_out, fan_in) in torch's layout: 60,000 samples
N = SHAPE[0] * SHAPE[1]
Z = 5.0  # standard errors allowed: a false failure is a 1-in-a-million event per check


def expected_std(name, shape, gain=1.0, mode="fan_in", nonlinearity="leaky_relu", a=0.0):
    fan_in, fan_out = shape[1], shape[0]
    if name.startswith("xavier"):
        return gain * math.sqrt(2.0 / (fan_in + fan_out))
    g = init.calculate_gain(nonlinearity, a)
    return g / math.sqrt(fan_in if mode == "fan_in" else fan_out)


def fill(name, array, **kw):
    return getattr(init, name + "_")(array, **kw)


def check_moments(x, std, uniform):
    """Sample mean and variance within Z standard errors of 0 and std^2."""
    n = x.size
    assert abs(x.mean()) < Z * std / math.sqrt(n)
    var = std ** 2
    # Var(x^2): normal 2 sigma^4; uniform on (-b, b), b^2 = 3 sigma^2: b^4/5 - b^4/9 = 4 b^4 / 45
    var_of_square = (4 * (3 * var) ** 2 / 45) if uniform else 2 * var ** 2
    assert abs(np.mean(x ** 2) - var) < Z * math.sqrt(var_of_square / n)


@pytest.mark.parametrize("name", ["xavier_uniform", "xavier_normal"])
@pytest.mark.parametrize("gain", [1.0, 5.0 / 3])
def test_xavier_moments(name, gain):
    x = fill(name, np.empty(SHAPE), gain=gain, rng=0)
    check_moments(x, expected_std(name, SHAPE, gain), name.endswith("uniform"))


@pytest.mark.parametrize("name", ["kaiming_uniform", "kaiming_normal"])
@pytest.mark.parametrize("mode", ["fan_in", "fan_out"])
@pytest.mark.parametrize("nonlinearity, a", [("relu", 0.0), ("leaky_relu", 0.2), ("tanh", 0.0)])
def test_kaiming_moments(name, mode, nonlinearity, a):
    x = fill(name, np.empty(SHAPE), a=a, mode=mode, nonlinearity=nonlinearity, rng=1)
    check_moments(x, expected_std(name, SHAPE, mode=mode, nonlinearity=nonlinearity, a=a), name.endswith("uniform"))


def test_the_notes_variances():
    """Xavier N(0, 2 / (n_in + n_out)) and He N(0, 2 / n_in) with the defaults."""
    fan_out, fan_in = SHAPE
    x = init.xavier_normal_(np.empty(SHAPE), rng=2)
    check_moments(x, math.sqrt(2 / (fan_in + fan_out)), False)
    k = init.kaiming_normal_(np.empty(SHAPE), rng=3)
    check_moments(k, math.sqrt(2 / fan_in), False)


@pytest.mark.parametrize("name", ["xavier_uniform", "kaiming_uniform"])
def test_uniform_bounds(name):
    x = fill(name, np.empty(SHAPE), rng=4)
    bound = math.sqrt(3) * expected_std(name, SHAPE)
    assert np.abs(x).max() <= bound
    # with 60,000 samples the extremes come within 0.1% of the bound (P(miss) ~ e^-60 each side)
    assert x.max() > bound * 0.999 and x.min() < -bound * 0.999


def test_conv_shapes_use_the_receptive_field():
    assert init.fans((16, 3, 5, 5)) == (3 * 25, 16 * 25)
    x = init.kaiming_normal_(np.empty((64, 32, 3, 3)), rng=5)
    check_moments(x, math.sqrt(2 / (32 * 9)), False)


def test_in_place_dtype_seed_and_views():
    a = np.zeros((50, 40), np.float32)
    out = init.xavier_uniform_(a, rng=7)
    assert out is a and a.dtype == np.float32 and np.count_nonzero(a) == a.size
    b = init.xavier_uniform_(np.zeros((50, 40), np.float32), rng=7)
    assert a.tobytes() == b.tobytes()  # same seed, same numbers
    g = np.random.default_rng(7)
    c = init.xavier_uniform_(np.zeros((50, 40), np.float32), rng=g)
    assert c.tobytes() == a.tobytes()
    # a NumPy X @ W weight (in, out): fill it through its transpose (torch's (out, in) layout)
    W = np.zeros((784, 10))
    init.kaiming_normal_(W.T, rng=8)
    check_moments(W, math.sqrt(2 / 784), False)
    assert init.kaiming_normal_(np.empty((0, 5))).shape == (0, 5)


def test_formulas_match_torch_nn_init():
    torch = pytest.importorskip("torch")
    for shape in [(30, 20), (16, 3, 5, 5)]:
        assert init.fans(shape) == torch.nn.init._calculate_fan_in_and_fan_out(torch.empty(shape))
    for nl, param in [("linear", None), ("sigmoid", None), ("tanh", None), ("relu", None), ("leaky_relu", None),
                      ("leaky_relu", 0.2), ("selu", None)]:
        assert init.calculate_gain(nl, param) == pytest.approx(torch.nn.init.calculate_gain(nl, param), rel=1e-15)
    # the same distribution as torch's: torch's samples sit inside our bound and reach it, and
    # have our variance
    torch.manual_seed(0)
    cases = [("xavier_uniform", dict(gain=2.0), dict(gain=2.0)),
             ("kaiming_uniform", dict(a=0.1, mode="fan_out"), dict(a=0.1, mode="fan_out"))]
    for name, ours, theirs in cases:
        t = getattr(torch.nn.init, name + "_")(torch.empty(SHAPE, dtype=torch.float64), **theirs).numpy()
        std = expected_std(name, SHAPE, **ours)
        assert np.abs(t).max() <= math.sqrt(3) * std and np.abs(t).max() > 0.999 * math.sqrt(3) * std
        check_moments(t, std, True)
    for name, kw in [("xavier_normal", dict(gain=0.5)), ("kaiming_normal", dict(mode="fan_in", nonlinearity="relu"))]:
        t = getattr(torch.nn.init, name + "_")(torch.empty(SHAPE, dtype=torch.float64), **kw).numpy()
        check_moments(t, expected_std(name, SHAPE, **kw), False)


@pytest.mark.parametrize("call, error, match", [
    (lambda: init.xavier_normal_(np.empty(5)), ValueError, "2 dimensions"),
    (lambda: init.xavier_normal_(np.empty((3, 3), np.int64)), TypeError, "floating-point"),
    (lambda: init.xavier_normal_([[1.0, 2.0]]), TypeError, "numpy.ndarray"),
    (lambda: init.xavier_uniform_(np.empty((3, 3)), gain=-1.0), ValueError, "gain"),
    (lambda: init.kaiming_uniform_(np.empty((3, 3)), mode="fan"), ValueError, "mode"),
    (lambda: init.kaiming_uniform_(np.empty((3, 3)), nonlinearity="gelu"), ValueError, "nonlinearity"),
    (lambda: init.kaiming_uniform_(np.empty((3, 3)), a=float("nan")), ValueError, "slope"),
    (lambda: init.kaiming_normal_(np.empty((3, 3)), rng=1.5), TypeError, "rng"),
    (lambda: init.kaiming_normal_(np.broadcast_to(np.zeros(3), (3, 3))), ValueError, "read-only"),
])
def test_bad_arguments(call, error, match):
    with pytest.raises(error, match=match):
        call()
