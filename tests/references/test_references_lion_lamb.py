"""Lion and LAMB references (no torch.optim twin) checked against values worked out by hand here.

Small arrays and binary-friendly numbers (betas 0.5 / 0.75, lr 0.125 ...) so the expected values are
written as arithmetic in the test; every test states the formula it evaluates.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from fastopt.references import lamb_init_state, lamb_step, lion_init_state, lion_step

EXACT = dict(rtol=1e-15, atol=0)


def _arr(*values):
    return np.array(values, dtype=np.float64)


# ---------------------------------------------------------------- Lion


def test_lion_one_step_by_hand():
    # b1 = 0.5, b2 = 0.75, lr = 0.125, wd = 0.5: decay factor 1 - 0.125*0.5 = 0.9375.
    p = _arr(1.0, -2.0, 0.5, 0.25, 0.5)
    m = _arr(0.25, -0.5, 0.0, 1.0, 1.0)
    g = _arr(0.5, 0.25, 0.0, -0.5, -1.5)
    state = lion_init_state(p)
    state["exp_avg"][...] = m
    lion_step([p], [g], [state], step=3, lr=0.125, beta1=0.5, beta2=0.75, weight_decay=0.5)
    # c = 0.5*m + 0.5*g = [0.375, -0.125, 0, 0.25, -0.25]  -> sign [1, -1, 0, 1, -1]
    # (the 4th: g < 0 but the interpolation with m is > 0, so p still moves down; the 5th: c uses
    # beta1 -- with beta2 it would be 0.75 - 0.375 > 0 and p would move the other way)
    expected_p = _arr(1.0 * 0.9375 - 0.125, -2.0 * 0.9375 + 0.125, 0.5 * 0.9375, 0.25 * 0.9375 - 0.125,
                      0.5 * 0.9375 + 0.125)
    # m = 0.75*m + 0.25*g
    expected_m = _arr(0.1875 + 0.125, -0.375 + 0.0625, 0.0, 0.75 - 0.125, 0.75 - 0.375)
    np.testing.assert_allclose(p, expected_p, **EXACT)
    np.testing.assert_allclose(state["exp_avg"], expected_m, **EXACT)


def test_lion_sign_of_zero_does_not_move():
    # c = 0 exactly (m = 0, g = 0) without weight decay: p unchanged; the others move by exactly lr.
    p = _arr(0.3, 0.3, 0.3)
    g = _arr(0.0, 1e-30, -7.0)
    state = lion_init_state(p)
    lion_step([p], [g], [state], step=1, lr=0.01)
    np.testing.assert_array_equal(p, _arr(0.3, 0.3 - 0.01, 0.3 + 0.01))


def test_lion_update_size_ignores_gradient_magnitude():
    # Only the sign of c matters: gradients 1000x apart give the same parameters.
    rng = np.random.default_rng(11)
    g = rng.standard_normal(9)
    results = []
    for scale in (1.0, 1000.0):
        p = np.linspace(-1, 1, 9)
        state = lion_init_state(p)
        lion_step([p], [g * scale], [state], step=1, lr=0.05)
        results.append(p)
    np.testing.assert_array_equal(results[0], results[1])
    np.testing.assert_allclose(np.abs(results[0] - np.linspace(-1, 1, 9)), 0.05, rtol=1e-12)


def test_lion_weight_decay_shrinks_before_the_signed_step():
    # m = 0, g = 0 everywhere: only the decay acts, p *= 1 - lr*wd.
    p = _arr(2.0, -4.0)
    state = lion_init_state(p)
    lion_step([p], [np.zeros(2)], [state], step=1, lr=0.125, weight_decay=0.25)
    np.testing.assert_allclose(p, _arr(2.0 * (1 - 0.03125), -4.0 * (1 - 0.03125)), **EXACT)


def test_lion_maximize_climbs():
    # maximize negates g: c = 0.1*(-g) -> p moves along g; m stores the negated gradient.
    p = _arr(1.0, 1.0)
    g = _arr(2.0, -3.0)
    state = lion_init_state(p)
    lion_step([p], [g], [state], step=1, lr=0.25, maximize=True)
    np.testing.assert_array_equal(p, _arr(1.25, 0.75))
    np.testing.assert_allclose(state["exp_avg"], _arr(-0.01 * 2.0, 0.01 * 3.0), rtol=1e-15)
    np.testing.assert_array_equal(g, _arr(2.0, -3.0))  # the caller's gradient is not modified


def test_lion_defaults():
    # lr = 1e-4, b2 = 0.99: one step from zeros moves p by 1e-4 against g and sets m = 0.01*g.
    p = _arr(0.0)
    state = lion_init_state(p)
    lion_step([p], [_arr(5.0)], [state], step=1)
    np.testing.assert_allclose(p, _arr(-1e-4), rtol=1e-15)
    np.testing.assert_allclose(state["exp_avg"], _arr(0.05), rtol=1e-14)


# ---------------------------------------------------------------- LAMB


def test_lamb_first_step_by_hand():
    # step 1 with bias correction: m_hat = g, v_hat = g^2 exactly, so
    # u = g/(|g| + eps) + wd*p; eps = 0.5, wd = 0.25, p = [3, 4] (||p|| = 5), g = [0.5, -1.5]:
    # u = [0.5/1.0 + 0.75, -1.5/2.0 + 1.0] = [1.25, 0.25], ||u|| = sqrt(1.625), r = 5/sqrt(1.625).
    p = _arr(3.0, 4.0)
    g = _arr(0.5, -1.5)
    state = lamb_init_state(p)
    lamb_step([p], [g], [state], step=1, lr=0.1, eps=0.5, weight_decay=0.25)
    r = 5.0 / math.sqrt(1.625)
    np.testing.assert_allclose(p, _arr(3.0 - 0.1 * r * 1.25, 4.0 - 0.1 * r * 0.25), rtol=1e-14)
    np.testing.assert_allclose(state["exp_avg"], 0.1 * g, rtol=1e-14)
    np.testing.assert_allclose(state["exp_avg_sq"], 0.001 * g * g, rtol=1e-12)


def test_lamb_later_step_with_bias_correction_by_hand():
    # step 2, b1 = 0.5, b2 = 0.75: bc1 = 1 - 0.25 = 0.75, bc2 = 1 - 0.5625 = 0.4375; eps = 0.25, wd = 0.5.
    p = _arr(1.0, -2.0)
    g = _arr(1.0, 2.0)
    state = lamb_init_state(p)
    state["exp_avg"][...] = _arr(0.5, -1.0)
    state["exp_avg_sq"][...] = _arr(0.25, 1.0)
    lamb_step([p], [g], [state], step=2, lr=0.5, beta1=0.5, beta2=0.75, eps=0.25, weight_decay=0.5)
    m = _arr(0.5 * 0.5 + 0.5 * 1.0, 0.5 * -1.0 + 0.5 * 2.0)  # [0.75, 0.5]
    v = _arr(0.75 * 0.25 + 0.25 * 1.0, 0.75 * 1.0 + 0.25 * 4.0)  # [0.4375, 1.75]
    # m_hat = m/0.75 = [1, 2/3], v_hat = v/0.4375 = [1, 4]: u = m_hat/(sqrt(v_hat) + 0.25) + 0.5*p
    u = _arr(1.0 / 1.25 + 0.5, (2.0 / 3.0) / 2.25 - 1.0)
    r = math.sqrt(5.0) / math.sqrt(u[0] ** 2 + u[1] ** 2)
    np.testing.assert_allclose(p, _arr(1.0, -2.0) - 0.5 * r * u, rtol=1e-14)
    np.testing.assert_allclose(state["exp_avg"], m, **EXACT)
    np.testing.assert_allclose(state["exp_avg_sq"], v, **EXACT)


def test_lamb_without_bias_correction_by_hand():
    # Same moments as above, bias_correction=False, eps = 0.5, wd = 0.25 (with eps = wd = 0 the trust
    # ratio would cancel any common factor such as the bias correction, and the test could not fail):
    # m = [0.75, 0.5], v = [0.4375, 1.75], u = m/(sqrt(v) + 0.5) + 0.25*p.
    p = _arr(1.0, -2.0)
    state = lamb_init_state(p)
    state["exp_avg"][...] = _arr(0.5, -1.0)
    state["exp_avg_sq"][...] = _arr(0.25, 1.0)
    lamb_step([p], [_arr(1.0, 2.0)], [state], step=2, lr=0.5, beta1=0.5, beta2=0.75, eps=0.5,
              weight_decay=0.25, bias_correction=False)
    u = _arr(0.75 / (math.sqrt(0.4375) + 0.5) + 0.25, 0.5 / (math.sqrt(1.75) + 0.5) - 0.5)
    r = math.sqrt(5.0) / math.sqrt(u[0] ** 2 + u[1] ** 2)
    np.testing.assert_allclose(p, _arr(1.0, -2.0) - 0.5 * r * u, rtol=1e-14)


def test_lamb_trust_ratio_is_one_for_zero_param():
    # ||p|| = 0: r = 1, so p = -lr*u; step 1, eps = 0.5: u = g/(|g| + 0.5) (wd*p = 0).
    p = np.zeros(2)
    state = lamb_init_state(p)
    lamb_step([p], [_arr(0.5, -1.5)], [state], step=1, lr=0.1, eps=0.5)
    np.testing.assert_allclose(p, _arr(-0.1 * 0.5, 0.1 * 0.75), rtol=1e-15)


def test_lamb_trust_ratio_is_one_for_zero_update():
    # g = 0 and wd = 0: u = 0, ||u|| = 0; r = 1 (not 0/0 = NaN) and p does not move.
    p = _arr(1.0, -3.0)
    state = lamb_init_state(p)
    lamb_step([p], [np.zeros(2)], [state], step=1, weight_decay=0.0)
    np.testing.assert_array_equal(p, _arr(1.0, -3.0))


def test_lamb_trust_ratio_is_per_tensor():
    # Two tensors with the same gradient but params 10x apart: each moves by lr*||p_i|| in norm.
    p1, p2 = _arr(0.3, 0.4), _arr(3.0, 4.0)
    g = _arr(1.0, -1.0)
    states = [lamb_init_state(p1), lamb_init_state(p2)]
    lamb_step([p1, p2], [g, g.copy()], states, step=1, lr=0.01, weight_decay=0.0)
    np.testing.assert_allclose(np.linalg.norm(p1 - _arr(0.3, 0.4)), 0.01 * 0.5, rtol=1e-12)
    np.testing.assert_allclose(np.linalg.norm(p2 - _arr(3.0, 4.0)), 0.01 * 5.0, rtol=1e-12)


def test_lamb_max_grad_norm_scales_the_whole_list_by_one_factor():
    # Global norm of ([3, 0], [0, 4]) is 5; max_grad_norm = 1 divides both by 5 (per-tensor
    # clipping would divide by 3 and 4). Step 1: m = 0.1 * g_clipped.
    p1, p2 = _arr(1.0, 1.0), _arr(2.0, 2.0)
    g1, g2 = _arr(3.0, 0.0), _arr(0.0, 4.0)
    states = [lamb_init_state(p1), lamb_init_state(p2)]
    lamb_step([p1, p2], [g1, g2], states, step=1, lr=0.01, max_grad_norm=1.0)
    np.testing.assert_allclose(states[0]["exp_avg"], _arr(0.1 * 0.6, 0.0), rtol=1e-14)
    np.testing.assert_allclose(states[1]["exp_avg"], _arr(0.0, 0.1 * 0.8), rtol=1e-14)
    np.testing.assert_allclose(states[0]["exp_avg_sq"], _arr(0.001 * 0.36, 0.0), rtol=1e-12)
    np.testing.assert_array_equal(g1, _arr(3.0, 0.0))  # the caller's gradients are not modified

    # The same as an unclipped step on the pre-scaled gradients.
    q1, q2 = _arr(1.0, 1.0), _arr(2.0, 2.0)
    other = [lamb_init_state(q1), lamb_init_state(q2)]
    lamb_step([q1, q2], [g1 / 5.0, g2 / 5.0], other, step=1, lr=0.01)
    np.testing.assert_allclose(p1, q1, rtol=1e-14)
    np.testing.assert_allclose(p2, q2, rtol=1e-14)


def test_lamb_max_grad_norm_above_the_norm_changes_nothing():
    # Global norm 5 <= 10: no scaling, m = 0.1 * g exactly as without max_grad_norm.
    p = _arr(1.0, 1.0)
    state = lamb_init_state(p)
    lamb_step([p], [_arr(3.0, 4.0)], [state], step=1, max_grad_norm=10.0)
    np.testing.assert_allclose(state["exp_avg"], _arr(0.3, 0.4), rtol=1e-14)


def test_lamb_maximize_negates_the_gradient():
    # maximize: m = 0.1 * (-g); with wd = 0 and p's direction, step 1: u = -g/(|g|+eps).
    p = _arr(3.0, 4.0)
    state = lamb_init_state(p)
    lamb_step([p], [_arr(0.5, -1.5)], [state], step=1, lr=0.1, eps=0.5, weight_decay=0.0, maximize=True)
    u = _arr(-0.5, 0.75)
    r = 5.0 / math.sqrt(0.25 + 0.5625)
    np.testing.assert_allclose(p, _arr(3.0, 4.0) - 0.1 * r * u, rtol=1e-14)
    np.testing.assert_allclose(state["exp_avg"], _arr(-0.05, 0.15), rtol=1e-14)


def test_lamb_float32_stays_float32():
    p = np.array([3.0, 4.0], dtype=np.float32)
    state = lamb_init_state(p)
    lamb_step([p], [np.array([0.5, -1.5], dtype=np.float32)], [state], step=np.int64(1), max_grad_norm=0.1)
    assert p.dtype == state["exp_avg"].dtype == state["exp_avg_sq"].dtype == np.float32


@pytest.mark.parametrize("bad", [dict(max_grad_norm=-1.0), dict(step=0)])
def test_lamb_bad_arguments_change_nothing(bad):
    p = _arr(1.0, 2.0)
    state = lamb_init_state(p)
    kwargs = dict(step=1)
    kwargs.update(bad)
    with pytest.raises(ValueError):
        lamb_step([p], [_arr(1.0, 1.0)], [state], **kwargs)
    np.testing.assert_array_equal(p, _arr(1.0, 2.0))
    np.testing.assert_array_equal(state["exp_avg"], np.zeros(2))


def test_init_state_rejects_unknown_hyperparameters():
    with pytest.raises(TypeError, match="betas"):
        lamb_init_state(np.zeros(2), betas=(0.9, 0.999))
    with pytest.raises(TypeError, match="eps"):
        lion_init_state(np.zeros(2), eps=1e-8)
