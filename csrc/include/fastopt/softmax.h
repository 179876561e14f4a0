// Numerically stable softmax pieces, shared by softmax, log_softmax and the fused cross-entropy.
//
// Online softmax (Milakov & Gimelshein, 2018): one pass over a row keeps the running max m and the
// running sum s = sum_j exp(z_j - m). When a larger z arrives the sum is rescaled:
//   z > m:  s = s * exp(m - z) + 1,  m = z          otherwise:  s = s + exp(z - m)
// so no score is ever exponentiated unshifted, and logsumexp(row) = m + log(s).
// -inf scores (masks) contribute exp(-inf) = 0 and never become the max unless the whole row is -inf.
#pragma once

#include <cmath>

#include "fastopt/macros.h"

namespace fastopt {

FASTOPT_HD float exp_(float x) { return expf(x); }
FASTOPT_HD double exp_(double x) { return exp(x); }
FASTOPT_HD float log_(float x) { return logf(x); }
FASTOPT_HD double log_(double x) { return log(x); }

template <typename M>
struct OnlineSoftmax {
  M max;  // running maximum (-inf before any finite score)
  M sum;  // sum of exp(z - max) over the scores seen

  static FASTOPT_HD OnlineSoftmax empty() { return {-INFINITY, M(0)}; }

  FASTOPT_HD void push(M z) {
    if (z > max) {
      sum = sum * exp_(max - z) + M(1);  // exp(-inf - z) = 0 for the first score
      max = z;
    } else if (z != -INFINITY) {
      sum = sum + exp_(z - max);
    }
  }

  // Combines two partial rows (e.g. SIMD lanes or thread blocks).
  FASTOPT_HD void merge(const OnlineSoftmax& other) {
    if (other.max > max) {
      sum = sum * exp_(max - other.max) + other.sum;
      max = other.max;
    } else if (other.max != -INFINITY) {
      sum = sum + other.sum * exp_(other.max - max);
    }
  }

  // logsumexp of the row: -inf for an empty or all -inf row.
  FASTOPT_HD M logsumexp() const { return max + log_(sum); }
};

}  // namespace fastopt
