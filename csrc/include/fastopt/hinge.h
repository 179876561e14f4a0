// Multiclass SVM (hinge) loss of the course notes, and the L1/L2 penalty.
//
//   L_i = sum over j != y_i of max(0, s_j - s_{y_i} + margin)
//   dL_i/ds_j = [s_j - s_{y_i} + margin > 0] for j != y_i,   dL_i/ds_{y_i} = -(number of such j)
//
//   penalty(w) = l1 * sum |w| + l2 * sum w^2,   d/dw = l1 * sign(w) + 2 * l2 * w
#pragma once

#include "fastopt/macros.h"

namespace fastopt {

// The margin violation of class j against the label's score (0 when satisfied).
template <typename M>
FASTOPT_HD M hinge_term(M s_j, M s_label, M margin) {
  const M t = s_j - s_label + margin;
  return t > M(0) ? t : M(0);
}

template <typename M>
FASTOPT_HD M sign_(M x) {
  return M((x > M(0)) - (x < M(0)));
}

template <typename M>
FASTOPT_HD M penalty_value(M w, M l1, M l2) {
  const M a = w < M(0) ? -w : w;
  return l1 * a + l2 * w * w;
}

template <typename M>
FASTOPT_HD M penalty_grad(M w, M l1, M l2) {
  return l1 * sign_(w) + M(2) * l2 * w;
}

}  // namespace fastopt
