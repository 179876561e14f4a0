// Adafactor (Shazeer & Stern 2018, "Adafactor: Adaptive Learning Rates with Sublinear Memory Cost") with
// torch.optim.Adafactor's semantics (its single-tensor loop: no first moment), t the 1-based step:
//
//   g = maximize ? -grad : grad;  w = t^beta2_decay;  rho = min(lr, 1/sqrt(t))
//   alpha = max(eps2, RMS(p)) * rho                     (RMS(p) = ||p|| / sqrt(numel), before the decay)
//   p *= 1 - lr * weight_decay                          (when weight_decay != 0)
//   ndim >= 2, factored over the last two dims (R rows x C columns, leading dims a batch):
//     row_var = lerp(row_var, sum_c(g^2) / C, w)        shape (..., R, 1)
//     col_var = lerp(col_var, sum_r(g^2) / R, w)        shape (..., 1, C)
//     V[r, c] = row_var[r] * col_var[c] / max(mean_r(row_var), eps1)
//   else:  variance = lerp(variance, g^2, w);  V = variance
//   U = g / sqrt(max(V, eps1^2))
//   p -= alpha / max(1, RMS(U) / d) * U
//
// eps1 None (NaN here) is the dtype's machine epsilon, as torch. lerp is torch's formula (scalar_math.h).
// A tensor with no elements along the reduced axis gets the mean 0/0 = NaN, as torch and the reference.
//
// Precision: the elementwise arithmetic runs in the arrays' dtype; the sums (g^2 per row and column,
// p^2, U^2, row_var over rows) are accumulated in double with a fixed order (fastopt/adafactor_tiles.h),
// so float32 sums do not drift with the length of a row (torch sums in the tensor's dtype). The per-tensor
// numbers alpha and the clip factor are computed in double.
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>

#include "fastopt/scalar_math.h"

namespace fastopt {

struct AdafactorHyper {
  double lr, beta2_decay;
  double eps1;  // NaN: the dtype's machine epsilon
  double eps2, d, weight_decay;
  bool maximize;
  int64_t step;
};

// The per-call constants in the arithmetic's type M.
template <typename M>
struct AdafactorScalars {
  M w, one_minus_w;  // the weight of the new mean, and 1 - it
  bool small_w;      // w < 0.5: the branch of torch's lerp
  M eps1, eps1_squared;
  M decay;           // 1 - lr * weight_decay
  bool decays;       // weight_decay != 0
  M grad_sign;
};

template <typename M>
inline AdafactorScalars<M> adafactor_scalars(const AdafactorHyper& h) {
  const double w = std::pow(double(h.step), h.beta2_decay);
  const double eps1 = std::isnan(h.eps1) ? double(std::numeric_limits<M>::epsilon()) : h.eps1;
  return {M(w),
          M(1.0 - w),
          w < 0.5,
          M(eps1),
          M(eps1 * eps1),
          M(1.0 - h.lr * h.weight_decay),
          h.weight_decay != 0.0,
          M(h.maximize ? -1.0 : 1.0)};
}

// The moving average of a squared gradient (mean or element) with weight w on the new term.
template <typename M>
FASTOPT_HD M adafactor_average(const AdafactorScalars<M>& s, M old, M fresh) {
  return lerp_(old, fresh, s.w, s.one_minus_w, s.small_w);
}

// The factored estimate of the second moment at (r, c); scale = max(mean_r(row_var), eps1).
template <typename M>
FASTOPT_HD M adafactor_estimate(M row, M col, M scale) {
  return (row * col) / scale;
}

// The row scale of one matrix: max(mean of its row_var, eps1), NaN kept (torch's clamp_).
template <typename M>
FASTOPT_HD M adafactor_row_scale(const AdafactorScalars<M>& s, M mean) {
  return mean < s.eps1 ? s.eps1 : mean;
}

// U = g / sqrt(max(V, eps1^2)), NaN kept.
template <typename M>
FASTOPT_HD M adafactor_direction(const AdafactorScalars<M>& s, M g, M v) {
  const M floor = v < s.eps1_squared ? s.eps1_squared : v;
  return g / sqrt_(floor);
}

// The parameter's new value from U and the tensor's step size alpha / max(1, RMS(U) / d).
template <typename M>
FASTOPT_HD M adafactor_apply(const AdafactorScalars<M>& s, M p, M u, M step_size) {
  const M decayed = s.decays ? p * s.decay : p;
  return decayed + (-step_size) * u;
}

// alpha = max(eps2, RMS(p)) * min(lr, 1/sqrt(t)), from sum p^2 over n elements (Python's max: a NaN
// RMS gives eps2, as torch's max(eps2, nan)). Host and device (the CUDA passes compute it there, with the
// same IEEE division and square root).
FASTOPT_HD double adafactor_alpha(const AdafactorHyper& h, double p_squares, int64_t n) {
  const double t = double(h.step);
  const double inverse_root = 1.0 / sqrt_(t);
  const double rho = h.lr < inverse_root ? h.lr : inverse_root;  // (both numbers, never NaN)
  const double rms = n > 0 ? sqrt_(p_squares) / sqrt_(double(n)) : 0.0;
  return (rms > h.eps2 ? rms : h.eps2) * rho;
}

// alpha / max(1, RMS(U) / d), RMS(U) / d as torch writes it: ||U|| / (sqrt(n) * d).
FASTOPT_HD double adafactor_step_size(const AdafactorHyper& h, double alpha, double u_squares, int64_t n) {
  const double ratio = n > 0 ? sqrt_(u_squares) / (sqrt_(double(n)) * h.d) : 0.0;
  return alpha / (ratio > 1.0 ? ratio : 1.0);
}

}  // namespace fastopt
