// Numerically stable softmax pieces, shared by softmax, log_softmax and the fused cross-entropy.
//
// A row is summarised by its max m and log_sum = log(sum_j exp(z_j - m)), so no score is ever
// exponentiated unshifted: logsumexp = m + log_sum, log p_j = (z_j - m) - log_sum and
// p_j = exp((z_j - m) - log_sum). Keeping m and log_sum apart (rather than adding them into
// logsumexp first) loses nothing when |z| is large: a row of equal scores 1e6 gives exactly 1/C.
// The backends compute m and the sum in one pass over the row (online softmax: the sum is rescaled
// by exp(old max - new max) when the max grows); -inf scores (masks) add exp(-inf) = 0.
#pragma once

#include <cmath>

#include "fastopt/macros.h"
#include "fastopt/vec_exp.h"

namespace fastopt {

// exp_ is the branch-free vexp (vec_exp.h): the same bits on every instruction set, and vectorisable.
// Softmax only ever exponentiates x <= 0 (a score minus the row max), where the cheaper form serves.
FASTOPT_HD float exp_(float x) { return vexp_nonpositive(x); }
FASTOPT_HD double exp_(double x) { return vexp_nonpositive(x); }
FASTOPT_HD float log_(float x) { return logf(x); }
FASTOPT_HD double log_(double x) { return log(x); }

template <typename M>
struct SoftmaxRow {
  M max;      // the row's max (-inf for an all -inf row)
  M log_sum;  // log(sum_j exp(z_j - max))
};

template <typename M>
FASTOPT_HD M row_logsumexp(const SoftmaxRow<M>& r) {
  return r.max + r.log_sum;
}

// -log p_j (>= 0), the cross-entropy of one class.
template <typename M>
FASTOPT_HD M row_neg_log_prob(M z, const SoftmaxRow<M>& r) {
  return (r.max - z) + r.log_sum;
}

template <typename M>
FASTOPT_HD M row_log_prob(M z, const SoftmaxRow<M>& r) {
  return (z - r.max) - r.log_sum;
}

template <typename M>
FASTOPT_HD M row_prob(M z, const SoftmaxRow<M>& r) {
  return exp_((z - r.max) - r.log_sum);
}

}  // namespace fastopt
