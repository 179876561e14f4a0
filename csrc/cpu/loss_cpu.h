// CPU entry points of the losses: loops over the per-row math in csrc/include/fastopt/.
// The binding has checked every array and every label before these run.
#pragma once

#include <cstdint>

namespace fastopt::cpu {

enum class Reduction { Mean, Sum, None };

template <typename T, typename L>
struct CrossEntropyArgs {
  const T* logits;     // (n, c)
  const L* labels;     // (n,), each in [0, c) or == ignore_index
  const T* weight;     // (c,) or nullptr
  T* dlogits;          // (n, c); may be logits itself
  T* row_losses;       // (n,) for Reduction::None, else nullptr
  int64_t n, c;
  int64_t ignore_index;
  double label_smoothing, z_loss;
  Reduction reduction;
};

// Writes dlogits (and row_losses) and returns the sum ("sum", "none") or mean ("mean") loss.
template <typename T, typename L>
double softmax_cross_entropy(const CrossEntropyArgs<T, L>& args);

// out = softmax(x) or log_softmax(x) over rows of length c; out may be x.
template <typename T>
void softmax(const T* x, T* out, int64_t rows, int64_t c, bool log);

template <typename T, typename L>
struct HingeArgs {
  const T* scores;  // (n, c)
  const L* labels;  // (n,), each in [0, c)
  T* dscores;       // (n, c); may be scores itself
  T* row_losses;    // (n,) for Reduction::None, else nullptr
  int64_t n, c;
  double margin;
  Reduction reduction;
};

template <typename T, typename L>
double multiclass_svm_loss(const HingeArgs<T, L>& args);

// Returns l1 * sum|w| + l2 * sum w^2; adds its gradient into grad unless grad is nullptr.
template <typename T>
double penalty(const T* w, T* grad, int64_t n, double l1, double l2);

}  // namespace fastopt::cpu
