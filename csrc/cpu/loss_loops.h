// Row loops of the losses. Rows run in parallel; each row's loss goes to its own slot and the slots
// are summed in row order afterwards, so the result does not depend on the thread count.
//
// Inside a row the work is spread over kLanes independent accumulators (lane l takes the elements
// j with j % kLanes == l) that are combined in a fixed order at the end: the compiler vectorises
// the lane loops for whatever instruction set this file is built for, and every build adds the
// same numbers in the same order, so all instruction sets give the same bits.
//
// Memory traffic. A row is read in two passes (its max and sum, then its outputs). When the row fits
// in this core's share of L2 (row_fits_cache: loss_row_cache_bytes() from cpu_info.h), the second pass
// finds it in cache, so the call reads the logits from memory once and writes its output once: the
// floor. Such a row is exponentiated once: pass 1 stores e_j = exp(z_j - m_b) (m_b: the running max
// of its block) in the output, pass 2 multiplies each block by one factor. A longer row (the split
// path) is summarised by a read-only online max/sum pass, then its outputs are computed from the
// scores again, block by block from the end of the row back, so that the blocks the first pass read
// last, still in cache, are used first: memory sees two reads and one write, not two of each.
// Which path a row takes depends on its length and the cache size, never on the thread count.
//
// Included only by kernels_for_isa.cpp, once per instruction set, inside that set's namespace.
#pragma once

#include <cmath>
#include <limits>
#include <vector>

#include "cpu/loss_args.h"
#include "cpu/parallel.h"
#include "cpu/static_switch.h"
#include "fastopt/fastopt.h"

namespace fastopt::cpu::FASTOPT_ISA_NS {

constexpr int64_t kLanes = 16;
// The online max is tracked per block of this many elements (4 KiB of float32, resident in L1
// while the block's max and then its exponentials are computed).
constexpr int64_t kBlock = 1024;
// The in-cache path keeps one running max per block on the stack: rows of up to this many blocks
// (256 Ki elements, 1 MiB of float32) take it when the cache share allows.
constexpr int64_t kMaxCachedBlocks = 256;

// Whether rows of c elements of T take the in-cache path (decided once per call).
template <typename T>
bool row_fits_cache(int64_t c) {
  return c <= kMaxCachedBlocks * kBlock && c * int64_t(sizeof(T)) <= loss_row_cache_bytes();
}

// body(row) for every row, in parallel when the work (rows x row length) is large enough.
template <typename Body>
void for_each_row(int64_t rows, int64_t row_length, Body&& body) {
  parallel_for(rows, rows > 1 && rows * row_length >= kParallelThreshold, body);
}

// Sums per-row losses in row order (double), then applies the reduction's divisor.
inline double reduce_rows(const std::vector<double>& losses, double divisor) {
  double total = 0.0;
  for (double v : losses) total += v;
  return total / divisor;
}

// The max of z[b..end): lane maxima over whole groups of kLanes (vectorised), the tail into the
// first lanes, then the lanes in order. full_end is where the whole groups stop.
template <typename T>
T block_max_of(const T* __restrict z, int64_t b, int64_t full_end, int64_t end) {
  T lane_max[kLanes];
  for (int64_t l = 0; l < kLanes; ++l) lane_max[l] = T(-INFINITY);
  for (int64_t j = b; j < full_end; j += kLanes) {
    for (int64_t l = 0; l < kLanes; ++l) lane_max[l] = z[j + l] > lane_max[l] ? z[j + l] : lane_max[l];
  }
  for (int64_t j = full_end; j < end; ++j) {
    lane_max[j - full_end] = z[j] > lane_max[j - full_end] ? z[j] : lane_max[j - full_end];
  }
  T block_max = lane_max[0];
  for (int64_t l = 1; l < kLanes; ++l) block_max = lane_max[l] > block_max ? lane_max[l] : block_max;
  return block_max;
}

// A row's sum of exponentials: each block's elements are added into kLanes accumulators of T (64
// terms each: the inner loops stay vectorised), and the block sums into kLanes doubles, so that a
// long float32 row's sum keeps float32's precision (131,072 terms added in float32 one after another
// drift by up to ~1e-4 relative). The lanes are combined in a fixed order: the same bits on every
// instruction set and for any thread count.
template <typename T>
inline void add_block_sums(double* __restrict lane_sum, const T* __restrict block_sum) {
  for (int64_t l = 0; l < kLanes; ++l) lane_sum[l] += double(block_sum[l]);
}

template <typename T>
inline T lanes_total(const double* lane_sum) {
  double sum = 0.0;
  for (int64_t l = 0; l < kLanes; ++l) sum += lane_sum[l];
  return T(sum);
}

// max and log-sum of z[0..c) in one pass over memory: online softmax at block granularity. For
// each block, the lane maxima give the block max; when it exceeds the running max, the lane sums
// are rescaled once (exp(old - new)); then every element adds exp(z - running max) to its lane.
// COPY: each score is also stored in copy[j] as it is exponentiated (log_softmax's in-cache path:
// the output's lines are then fetched while this compute-bound pass runs, and its second pass finds
// the scores in cache, in the output itself).
template <typename T, bool COPY = false>
SoftmaxRow<T> row_softmax_stats(const T* __restrict z, int64_t c, T* __restrict copy = nullptr) {
  double lane_sum[kLanes] = {};
  T running_max = T(-INFINITY);
  for (int64_t b = 0; b < c; b += kBlock) {
    const int64_t end = b + kBlock < c ? b + kBlock : c;
    const int64_t full_end = b + (end - b) / kLanes * kLanes;
    const T block_max = block_max_of(z, b, full_end, end);
    if (block_max == T(-INFINITY)) {  // all masked: every exp is 0
      if constexpr (COPY) {
        for (int64_t j = b; j < end; ++j) copy[j] = z[j];
      }
      continue;
    }
    if (block_max > running_max) {
      const T rescale = exp_(running_max - block_max);  // 0 while running_max is -inf
      for (int64_t l = 0; l < kLanes; ++l) lane_sum[l] *= double(rescale);
      running_max = block_max;
    }
    const T m = running_max;
    T block_sum[kLanes] = {};
    for (int64_t j = b; j < full_end; j += kLanes) {
      for (int64_t l = 0; l < kLanes; ++l) {
        block_sum[l] += exp_(z[j + l] - m);
        if constexpr (COPY) copy[j + l] = z[j + l];
      }
    }
    for (int64_t j = full_end; j < end; ++j) {
      block_sum[j - full_end] += exp_(z[j] - m);
      if constexpr (COPY) copy[j] = z[j];
    }
    add_block_sums(lane_sum, block_sum);
  }
  return {running_max, log_(lanes_total<T>(lane_sum))};  // all -inf: {-inf, -inf}, every probability NaN
}

// Pass 1 of the cross-entropy without label smoothing: the same blocked online softmax as
// row_softmax_stats, which also stores each e_j = exp(z_j - m_b) in out (m_b: the running max
// when block b was summed) and each block's m_b in block_max. Pass 2 then turns e_j into the
// gradient with one multiplication per element (exp(m_b - max - log_sum) per block), so each
// element is exponentiated once. IN_PLACE: out holds the scores (read before written); z unused.
// block_max holds (c + kBlock - 1) / kBlock entries (at most kMaxCachedBlocks: the in-cache path).
template <bool IN_PLACE, typename T>
SoftmaxRow<T> row_softmax_stats_store(const T* __restrict z, T* __restrict out, int64_t c,
                                      T* __restrict block_max) {
  double lane_sum[kLanes] = {};
  T running_max = T(-INFINITY);
  for (int64_t b = 0; b < c; b += kBlock) {
    const T* in = IN_PLACE ? out : z;
    const int64_t end = b + kBlock < c ? b + kBlock : c;
    const int64_t full_end = b + (end - b) / kLanes * kLanes;
    const T block = block_max_of(in, b, full_end, end);
    if (block > running_max) {
      const T rescale = exp_(running_max - block);  // 0 while running_max is -inf
      for (int64_t l = 0; l < kLanes; ++l) lane_sum[l] *= double(rescale);
      running_max = block;
    }
    const T m = running_max;
    block_max[b / kBlock] = m;
    if (m == T(-INFINITY)) {  // everything so far masked: exp(-inf - -inf) would be NaN
      for (int64_t j = b; j < end; ++j) out[j] = T(0);
      continue;
    }
    T block_sum[kLanes] = {};
    for (int64_t j = b; j < full_end; j += kLanes) {
      for (int64_t l = 0; l < kLanes; ++l) {
        const T e = exp_(in[j + l] - m);
        block_sum[l] += e;
        out[j + l] = e;
      }
    }
    for (int64_t j = full_end; j < end; ++j) {
      const T e = exp_(in[j] - m);
      block_sum[j - full_end] += e;
      out[j] = e;
    }
    add_block_sums(lane_sum, block_sum);
  }
  return {running_max, log_(lanes_total<T>(lane_sum))};
}

// Pass 2 of the in-cache path: out_j = e_j * exp(m_b - max - log_sum) * p_scale, one factor per
// block (p_scale folds in the cross-entropy's scale * coef; 1 for softmax). The row is in cache.
template <typename T>
void scale_stored_row(T* __restrict out, int64_t c, const T* block_max, const SoftmaxRow<T>& r, T p_scale) {
  for (int64_t b = 0; b < c; b += kBlock) {
    const T factor = exp_((block_max[b / kBlock] - r.max) - r.log_sum) * p_scale;
    const int64_t end = b + kBlock < c ? b + kBlock : c;
    for (int64_t j = b; j < end; ++j) out[j] = out[j] * factor;
  }
}

// Pass 2 of the split path: out_j = p_j * p_scale, or log p_j when LOG, from the scores again, by
// blocks from the row's end back (see the top of the file). IN_PLACE: the scores are in out (each
// element read before it is written); z unused.
template <bool IN_PLACE, bool LOG, typename T>
void write_row_from_stats(const T* __restrict z, T* __restrict out, int64_t c, const SoftmaxRow<T>& r,
                          T p_scale) {
  for (int64_t b = (c - 1) / kBlock * kBlock; b >= 0; b -= kBlock) {
    const int64_t end = b + kBlock < c ? b + kBlock : c;
    for (int64_t j = b; j < end; ++j) {
      const T zj = IN_PLACE ? out[j] : z[j];
      out[j] = LOG ? row_log_prob(zj, r) : row_prob(zj, r) * p_scale;
    }
  }
}

// The gradient of one counted row with label smoothing (see cross_entropy.h): written over all
// classes without the label's own term, which the caller then rewrites from the saved label score.
// Returns sum_j w_j (lse - z_j). IN_PLACE: the gradient overwrites the scores in `out` (each
// element read before it is written) and `z` is unused; both pointers are restrict so the loop
// vectorises either way.
template <bool IN_PLACE, bool WEIGHTED, typename T>
T cross_entropy_row_grad(const T* __restrict z, T* __restrict out, const T* __restrict weight, int64_t c,
                         const SoftmaxRow<T>& r, T coef, const CrossEntropyScalars<T>& s) {
  T lane_smooth[kLanes] = {};
  const T p_scale = s.scale * coef;
  const T w_scale = s.scale * s.eps_over_c;
  const int64_t full_end = c / kLanes * kLanes;
  auto element = [&](int64_t j, int64_t l) {
    const T zj = IN_PLACE ? out[j] : z[j];
    const T wj = WEIGHTED ? weight[j] : T(1);
    lane_smooth[l] += wj * row_neg_log_prob(zj, r);
    out[j] = row_prob(zj, r) * p_scale - w_scale * wj;
  };
  for (int64_t j = 0; j < full_end; j += kLanes) {
    for (int64_t l = 0; l < kLanes; ++l) element(j + l, l);
  }
  for (int64_t j = full_end; j < c; ++j) element(j, j - full_end);
  T smooth = 0;
  for (int64_t l = 0; l < kLanes; ++l) smooth += lane_smooth[l];
  return smooth;
}

// Labels as the loops use them. The binding checks every label before the loops run, but another thread
// may change one while they run (the GIL is released): each label is read once, with a volatile read (the
// compiler may not read it again), and one outside [0, c) is never used as an index. Such a row counts
// nothing, gets a zero gradient and a NaN loss, so that the result shows it.
constexpr int64_t kIgnoredRow = -1;
constexpr int64_t kBrokenRow = -2;  // a label out of range when the loop read it

template <typename L>
int64_t read_label(const L* labels, int64_t i) {
  return int64_t(static_cast<const volatile L*>(labels)[i]);
}

// The class of every row (or kIgnoredRow / kBrokenRow), read once: the denominator and the rows agree.
template <typename L>
std::vector<int64_t> row_classes(const L* labels, int64_t n, int64_t c, const int64_t* ignore_index) {
  std::vector<int64_t> classes(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    const int64_t y = read_label(labels, i);
    classes[size_t(i)] = ignore_index && y == *ignore_index ? kIgnoredRow : (y >= 0 && y < c ? y : kBrokenRow);
  }
  return classes;
}

template <typename T, typename L>
double softmax_cross_entropy(const CrossEntropyArgs<T, L>& a) {
  const std::vector<int64_t> classes = row_classes(a.labels, a.n, a.c, &a.ignore_index);
  // The "mean" denominator: summed weights of the rows that count (torch's weighted mean).
  double denominator = 0.0;
  for (int64_t i = 0; i < a.n; ++i) {
    const int64_t y = classes[size_t(i)];
    if (y >= 0) denominator += a.weight ? double(a.weight[y]) : 1.0;
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
  const bool in_cache = row_fits_cache<T>(a.c);
  with_flags(
      [&](auto IN_PLACE, auto WEIGHTED, auto SMOOTHING) {
        for_each_row(a.n, a.c, [&](int64_t i) {
          const T* z = a.logits + i * a.c;
          T* out = a.dlogits + i * a.c;
          const int64_t y = classes[size_t(i)];
          if (y < 0) {  // ignored, or a label changed out of range after the binding checked it
            for (int64_t j = 0; j < a.c; ++j) out[j] = T(0);
            if (y == kBrokenRow) losses[size_t(i)] = std::numeric_limits<double>::quiet_NaN();
            return;
          }
          const T z_label = z[y];  // before an in-place pass overwrites it
          const T w_label = a.weight ? a.weight[y] : T(1);
          SoftmaxRow<T> r;
          T smooth_sum = 0;
          if constexpr (SMOOTHING.value) {
            // sum_j w_j (lse - z_j) needs every score after lse is known: exponentiate in pass 2.
            r = row_softmax_stats(z, a.c);
            smooth_sum = cross_entropy_row_grad<IN_PLACE.value, WEIGHTED.value>(
                IN_PLACE.value ? nullptr : z, out, a.weight, a.c, r, cross_entropy_prob_coef(r, w_label, s), s);
          } else if (in_cache) {
            T block_max[kMaxCachedBlocks];  // the running max of each block in pass 1
            r = row_softmax_stats_store<IN_PLACE.value>(IN_PLACE.value ? nullptr : z, out, a.c, block_max);
            scale_stored_row(out, a.c, block_max, r, s.scale * cross_entropy_prob_coef(r, w_label, s));
          } else {  // split path: a read-only stats pass, then the gradient from the scores
            r = row_softmax_stats(IN_PLACE.value ? out : z, a.c);
            write_row_from_stats<IN_PLACE.value, false>(IN_PLACE.value ? nullptr : z, out, a.c, r,
                                                         s.scale * cross_entropy_prob_coef(r, w_label, s));
          }
          out[y] = cross_entropy_grad(z_label, r, cross_entropy_prob_coef(r, w_label, s), true, w_label,
                                      w_label, s);
          losses[size_t(i)] = double(cross_entropy_row_loss(r, z_label, w_label, smooth_sum, s));
        });
      },
      a.dlogits == a.logits, a.weight != nullptr, s.smoothing);
  if (a.row_losses) {
    for (int64_t i = 0; i < a.n; ++i) a.row_losses[i] = T(losses[size_t(i)]);
  }
  return reduce_rows(losses, mean ? denominator : 1.0);
}

template <typename T>
void softmax(const T* x, T* out, int64_t rows, int64_t c, bool log) {
  // out is x itself (in place: each element read before it is written) or a separate array (the
  // binding refuses a partial overlap). softmax on the in-cache path exponentiates each score once
  // (stored, then scaled); log_softmax needs no exponential in its second pass, and on the in-cache
  // path copies the scores into out in its first (row_softmax_stats' COPY), so that both passes touch
  // memory as softmax's do. Both give the split path's bits.
  const bool in_cache = row_fits_cache<T>(c);
  with_flags(
      [&](auto IN_PLACE) {
        for_each_row(rows, c, [&](int64_t i) {
          const T* z = IN_PLACE.value ? nullptr : x + i * c;
          T* o = out + i * c;
          const T* in = IN_PLACE.value ? o : z;
          if (log && in_cache && !IN_PLACE.value) {  // the scores copied into o on the way, then in place
            const SoftmaxRow<T> r = row_softmax_stats<T, true>(z, c, o);
            write_row_from_stats<true, true>(static_cast<const T*>(nullptr), o, c, r, T(1));
          } else if (log) {
            const SoftmaxRow<T> r = row_softmax_stats(in, c);
            write_row_from_stats<IN_PLACE.value, true>(z, o, c, r, T(1));
          } else if (in_cache) {
            T block_max[kMaxCachedBlocks];
            const SoftmaxRow<T> r = row_softmax_stats_store<IN_PLACE.value>(z, o, c, block_max);
            scale_stored_row(o, c, block_max, r, T(1));
          } else {
            const SoftmaxRow<T> r = row_softmax_stats(in, c);
            write_row_from_stats<IN_PLACE.value, false>(z, o, c, r, T(1));
          }
        });
      },
      x == out);
}

template <typename T, typename L>
double multiclass_svm_loss(const HingeArgs<T, L>& a) {
  const T scale = a.reduction == Reduction::Mean ? T(1.0 / double(a.n)) : T(1);
  const T margin = T(a.margin);
  std::vector<double> losses(size_t(a.n), 0.0);
  for_each_row(a.n, a.c, [&](int64_t i) {
    const T* s = a.scores + i * a.c;
    T* d = a.dscores + i * a.c;  // may alias s
    const int64_t y = read_label(a.labels, i);
    if (y < 0 || y >= a.c) {  // changed out of range after the binding checked it: see read_label
      for (int64_t j = 0; j < a.c; ++j) d[j] = T(0);
      losses[size_t(i)] = std::numeric_limits<double>::quiet_NaN();
      return;
    }
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
  parallel_for(blocks, n >= kParallelThreshold, [&](int64_t b) {
    const int64_t begin = b * kChunkElements;
    const int64_t end = begin + kChunkElements < n ? begin + kChunkElements : n;
    double sum = 0.0;
    for (int64_t i = begin; i < end; ++i) {
      sum += double(penalty_value(w[i], l1_t, l2_t));
      if (grad) grad[i] += penalty_grad(w[i], l1_t, l2_t);
    }
    partial[size_t(b)] = sum;
  });
  double total = 0.0;
  for (double v : partial) total += v;
  return total;
}

template <typename T>
void exp_array(const T* x, T* out, int64_t n) {
  const T* __restrict in = x;
  T* __restrict o = out;
  for (int64_t i = 0; i < n; ++i) o[i] = vexp(in[i]);
}

}  // namespace fastopt::cpu::FASTOPT_ISA_NS
