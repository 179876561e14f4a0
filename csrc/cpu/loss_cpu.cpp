// Row loops of the losses. Rows run in parallel; each row's loss goes to its own slot and the slots
// are summed in row order afterwards, so the result does not depend on the thread count.
#include "cpu/loss_cpu.h"

#include <vector>

#include "cpu/parallel.h"
#include "fastopt/fastopt.h"

namespace fastopt::cpu {

namespace {

// body(row) for every row, in parallel when the work (rows x row length) is large enough.
template <typename Body>
void for_each_row(int64_t rows, int64_t row_length, Body&& body) {
  const bool parallel = rows > 1 && rows * row_length >= kParallelThreshold;
#pragma omp parallel for schedule(static) if (parallel)
  for (int64_t i = 0; i < rows; ++i) body(i);
}

// Sums per-row losses in row order (double), then applies the reduction's divisor.
double reduce_rows(const std::vector<double>& losses, double divisor) {
  double total = 0.0;
  for (double v : losses) total += v;
  return total / divisor;
}

}  // namespace

template <typename T, typename L>
double softmax_cross_entropy(const CrossEntropyArgs<T, L>& a) {
  // The "mean" denominator: summed weights of the rows that count (torch's weighted mean).
  double denominator = 0.0;
  for (int64_t i = 0; i < a.n; ++i) {
    const int64_t y = int64_t(a.labels[i]);
    if (y != a.ignore_index) denominator += a.weight ? double(a.weight[y]) : 1.0;
  }
  double weight_sum = double(a.c);
  if (a.weight) {
    weight_sum = 0.0;
    for (int64_t j = 0; j < a.c; ++j) weight_sum += double(a.weight[j]);
  }
  const bool mean = a.reduction == Reduction::Mean;
  const CrossEntropyScalars<T> s = cross_entropy_scalars<T>(
      a.label_smoothing, a.z_loss, weight_sum, a.c, mean ? 1.0 / denominator : 1.0);

  std::vector<double> losses(size_t(a.n), 0.0);
  for_each_row(a.n, a.c, [&](int64_t i) {
    const T* __restrict z = a.logits + i * a.c;
    T* out = a.dlogits + i * a.c;  // may alias z: each element is read before it is written
    const int64_t y = int64_t(a.labels[i]);
    if (y == a.ignore_index) {
      for (int64_t j = 0; j < a.c; ++j) out[j] = T(0);
      return;
    }
    OnlineSoftmax<T> row = OnlineSoftmax<T>::empty();
    for (int64_t j = 0; j < a.c; ++j) row.push(z[j]);
    const T lse = row.logsumexp();
    const T z_label = z[y];
    const T w_label = a.weight ? a.weight[y] : T(1);
    const T coef = cross_entropy_prob_coef(lse, w_label, s);
    T smooth_sum = 0;
    for (int64_t j = 0; j < a.c; ++j) {
      const T zj = z[j];
      const T wj = a.weight ? a.weight[j] : T(1);
      if (s.smoothing) smooth_sum += wj * (lse - zj);
      out[j] = cross_entropy_grad(zj, lse, coef, j == y, w_label, wj, s);
    }
    losses[size_t(i)] = double(cross_entropy_row_loss(lse, z_label, w_label, smooth_sum, s));
  });
  if (a.row_losses) {
    for (int64_t i = 0; i < a.n; ++i) a.row_losses[i] = T(losses[size_t(i)]);
  }
  return reduce_rows(losses, mean ? denominator : 1.0);
}

template <typename T>
void softmax(const T* x, T* out, int64_t rows, int64_t c, bool log) {
  for_each_row(rows, c, [&](int64_t i) {
    const T* z = x + i * c;
    T* o = out + i * c;
    OnlineSoftmax<T> row = OnlineSoftmax<T>::empty();
    for (int64_t j = 0; j < c; ++j) row.push(z[j]);
    const T lse = row.logsumexp();
    if (log) {
      for (int64_t j = 0; j < c; ++j) o[j] = z[j] - lse;
    } else {
      for (int64_t j = 0; j < c; ++j) o[j] = exp_(z[j] - lse);
    }
  });
}

template <typename T, typename L>
double multiclass_svm_loss(const HingeArgs<T, L>& a) {
  const T scale = a.reduction == Reduction::Mean ? T(1.0 / double(a.n)) : T(1);
  const T margin = T(a.margin);
  std::vector<double> losses(size_t(a.n), 0.0);
  for_each_row(a.n, a.c, [&](int64_t i) {
    const T* s = a.scores + i * a.c;
    T* d = a.dscores + i * a.c;  // may alias s
    const int64_t y = int64_t(a.labels[i]);
    const T s_label = s[y];
    T loss = 0;
    int64_t violations = 0;
    for (int64_t j = 0; j < a.c; ++j) {
      const T term = j == y ? T(0) : hinge_term(s[j], s_label, margin);
      loss += term;
      violations += term > T(0);
      d[j] = term > T(0) ? scale : T(0);
    }
    d[y] = T(0) - T(violations) * scale;  // (0 - 0 gives +0, not -0, for a row without violations)
    losses[size_t(i)] = double(loss);
  });
  if (a.row_losses) {
    for (int64_t i = 0; i < a.n; ++i) a.row_losses[i] = T(losses[size_t(i)]);
  }
  return reduce_rows(losses, a.reduction == Reduction::Mean ? double(a.n) : 1.0);
}

template <typename T>
double penalty(const T* w, T* grad, int64_t n, double l1, double l2) {
  // Fixed blocks, each summed in double, then the blocks in order: the same bits for any thread count.
  const int64_t blocks = (n + kChunkElements - 1) / kChunkElements;
  std::vector<double> partial(size_t(blocks), 0.0);
  const T l1_t = T(l1), l2_t = T(l2);
#pragma omp parallel for schedule(static) if (n >= kParallelThreshold)
  for (int64_t b = 0; b < blocks; ++b) {
    const int64_t begin = b * kChunkElements;
    const int64_t end = begin + kChunkElements < n ? begin + kChunkElements : n;
    double sum = 0.0;
    for (int64_t i = begin; i < end; ++i) {
      sum += double(penalty_value(w[i], l1_t, l2_t));
      if (grad) grad[i] += penalty_grad(w[i], l1_t, l2_t);
    }
    partial[size_t(b)] = sum;
  }
  double total = 0.0;
  for (double v : partial) total += v;
  return total;
}

#define FASTOPT_INSTANTIATE_LOSSES(T, L)                                              \
  template double softmax_cross_entropy<T, L>(const CrossEntropyArgs<T, L>&);         \
  template double multiclass_svm_loss<T, L>(const HingeArgs<T, L>&);

FASTOPT_INSTANTIATE_LOSSES(float, int32_t)
FASTOPT_INSTANTIATE_LOSSES(float, int64_t)
FASTOPT_INSTANTIATE_LOSSES(double, int32_t)
FASTOPT_INSTANTIATE_LOSSES(double, int64_t)
#undef FASTOPT_INSTANTIATE_LOSSES

template void softmax<float>(const float*, float*, int64_t, int64_t, bool);
template void softmax<double>(const double*, double*, int64_t, int64_t, bool);
template double penalty<float>(const float*, float*, int64_t, double, double);
template double penalty<double>(const double*, double*, int64_t, double, double);

}  // namespace fastopt::cpu
