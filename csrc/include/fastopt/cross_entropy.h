// Softmax cross-entropy with class weights, label smoothing, ignore_index and z-loss:
// torch.nn.functional.cross_entropy's numbers, plus the z-loss of large-model training.
//
// For a counted row (label y != ignore_index) with scores z, lse = logsumexp(z), p = softmax(z),
// class weights w (all 1 without weights), W = sum_c w_c, smoothing eps over C classes:
//   loss = (1 - eps) * w_y * (lse - z_y)                 cross-entropy with the label
//        + (eps / C) * sum_c w_c * (lse - z_c)           cross-entropy with the uniform distribution
//        + z_loss * lse^2                                 keeps the normaliser near 0
// and its gradient, since d(lse - z_k)/dz_j = p_j - [j == k] and d(lse^2)/dz_j = 2 lse p_j:
//   dz_j = scale * ( p_j * coef - (1 - eps) * w_y * [j == y] - (eps / C) * w_j )
//   coef = (1 - eps) * w_y + (eps / C) * W + 2 * z_loss * lse
// Ignored rows have loss 0 and gradient 0. scale is 1 / sum of w_y over counted rows for
// reduction "mean" and 1 otherwise. The smoothing and z terms are skipped when their factor is 0,
// so -inf masked scores never produce 0 * inf. (lse - z_c) is evaluated as row_neg_log_prob.
#pragma once

#include "fastopt/macros.h"
#include "fastopt/softmax.h"

namespace fastopt {

// Per-call constants (computed in double, rounded to the math type M). Host and device: the CUDA
// cross-entropy computes them on the device once the "mean" denominator and W have been summed there.
template <typename M>
struct CrossEntropyScalars {
  M one_minus_eps;    // 1 - label_smoothing
  M eps_over_c;       // label_smoothing / C
  M z_loss;           // z-loss factor
  M weight_sum;       // W (C without weights)
  M scale;            // 1 / denominator for "mean", else 1
  bool smoothing;     // label_smoothing > 0
};

template <typename M>
FASTOPT_HD CrossEntropyScalars<M> cross_entropy_scalars(double label_smoothing, double z_loss,
                                                        double weight_sum, long long classes,
                                                        double scale) {
  return {M(1.0 - label_smoothing), M(label_smoothing / double(classes)), M(z_loss), M(weight_sum),
          M(scale), label_smoothing > 0.0};
}

// The row's loss; smooth_sum is sum_c w_c (lse - z_c), needed only with smoothing.
template <typename M>
FASTOPT_HD M cross_entropy_row_loss(const SoftmaxRow<M>& r, M z_label, M w_label, M smooth_sum,
                                    const CrossEntropyScalars<M>& s) {
  M loss = s.one_minus_eps * w_label * row_neg_log_prob(z_label, r);
  if (s.smoothing) loss = loss + s.eps_over_c * smooth_sum;
  if (s.z_loss != M(0)) {
    const M lse = row_logsumexp(r);
    loss = loss + s.z_loss * lse * lse;
  }
  return loss;
}

// The factor of p_j in the row's gradient (before scale).
template <typename M>
FASTOPT_HD M cross_entropy_prob_coef(const SoftmaxRow<M>& r, M w_label, const CrossEntropyScalars<M>& s) {
  M coef = s.one_minus_eps * w_label;
  if (s.smoothing) coef = coef + s.eps_over_c * s.weight_sum;
  if (s.z_loss != M(0)) coef = coef + M(2) * s.z_loss * row_logsumexp(r);
  return coef;
}

// One gradient element, with the label's term when `target` (j == y); w_j is class j's weight.
template <typename M>
FASTOPT_HD M cross_entropy_grad(M z, const SoftmaxRow<M>& r, M coef, bool target, M w_label, M w_j,
                                const CrossEntropyScalars<M>& s) {
  M g = row_prob(z, r) * coef;
  if (target) g = g - s.one_minus_eps * w_label;
  if (s.smoothing) g = g - s.eps_over_c * w_j;
  return s.scale * g;
}

}  // namespace fastopt
