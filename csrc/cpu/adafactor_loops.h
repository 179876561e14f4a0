// The CPU loops of Adafactor (fastopt/adafactor.h), one tensor after the other, threads inside a tensor.
//
// Factored tensor (batch x rows x cols), three passes over its elements:
//   pass 1  read p, g: sum g^2 per row and per column, sum p^2        (8 bytes/element in float32)
//           then, on the calling thread, over the small state: row_var, col_var, the row scales, alpha
//   pass 2  read g: sum U^2                                           (4 bytes/element)
//   pass 3  read p, g, write p: p = decay(p) - step_size * U            (12 bytes/element)
//   24 bytes per element in float32 (48 in float64), against 12 for the write alone; U is recomputed
//   in passes 2 and 3 by the same function, so the same bits.
// Unfactored tensor (n elements, variance of n), two passes:
//   pass A  read p, g, variance, write variance: sum p^2, sum U^2     (16 bytes/element)
//   pass B  read p, g, variance, write p                               (16 bytes/element)
//
// Deterministic sums: the tiling and the order of every addition are fastopt/adafactor_tiles.h's, which
// the CUDA passes keep too: neither the thread count, the instruction set nor the device changes a bit
// (the kernels build with -ffp-contract=off). Every tile writes its own slots (no atomics); the slots
// are added in order afterwards.
//
// Included only by kernels_for_isa.cpp, once per instruction set, after tensor_sum_loops.h (kSumLanes,
// lane_total).
#pragma once

#include <cmath>
#include <cstdint>
#include <vector>

#include "cpu/adafactor_tensor.h"
#include "cpu/parallel.h"
#include "fastopt/adafactor.h"
#include "fastopt/adafactor_tiles.h"
#include "fastopt/tensor_sums.h"

namespace fastopt::cpu::FASTOPT_ISA_NS {

// Adds double(x[j])^2 into lanes (j % kSumLanes) for j in [0, n).
template <typename T>
inline void add_squares(const T* __restrict x, int64_t n, double (&lanes)[kSumLanes]) {
  int64_t j = 0;
  for (; j + kSumLanes <= n; j += kSumLanes) {
    for (int l = 0; l < kSumLanes; ++l) lanes[l] += double(x[j + l]) * double(x[j + l]);
  }
  for (int l = 0; j < n; ++j, ++l) lanes[l] += double(x[j]) * double(x[j]);
}

// Pass 1 of a tile: row sums of g^2 (into row_part), column sums (into col_part), sum p^2 (returned).
template <typename T>
double adafactor_gather_tile(const AdafactorTensor<T>& t, const AdafactorTile& k, double* row_part,
                             int64_t col_tiles, double* col_part) {
  const int64_t width = k.c1 - k.c0;
  double p_total = 0.0;
  for (int64_t c = 0; c < width; ++c) col_part[c] = 0.0;
  for (int64_t r = k.r0; r < k.r1; ++r) {
    const int64_t at = (k.b * t.rows + r) * t.cols + k.c0;
    const T* __restrict g = t.grad + at;
    double lanes[kSumLanes] = {};
    add_squares(g, width, lanes);
    row_part[(k.b * t.rows + r) * col_tiles + k.ct] = lane_total(lanes);
    for (int64_t c = 0; c < width; ++c) col_part[c] += double(g[c]) * double(g[c]);
    double p_lanes[kSumLanes] = {};
    add_squares(t.param + at, width, p_lanes);
    p_total += lane_total(p_lanes);
  }
  return p_total;
}

// Pass 2 of a tile: sum U^2.
template <typename T>
double adafactor_u_tile(const AdafactorTensor<T>& t, const AdafactorTile& k, const AdafactorScalars<T>& s,
                        const T* scales) {
  const int64_t width = k.c1 - k.c0;
  const T scale = scales[k.b];
  const T* __restrict col = t.col_var + k.b * t.cols + k.c0;
  double total = 0.0;
  alignas(64) T u[kSumLanes];
  for (int64_t r = k.r0; r < k.r1; ++r) {
    double lanes[kSumLanes] = {};
    const T row = t.row_var[k.b * t.rows + r];
    const T* __restrict g = t.grad + (k.b * t.rows + r) * t.cols + k.c0;
    int64_t c = 0;
    for (; c + kSumLanes <= width; c += kSumLanes) {
      for (int l = 0; l < kSumLanes; ++l) {
        u[l] = adafactor_direction(s, g[c + l] * s.grad_sign, adafactor_estimate(row, col[c + l], scale));
      }
      add_squares(u, kSumLanes, lanes);
    }
    for (int l = 0; c < width; ++c, ++l) {
      const double x = double(adafactor_direction(s, g[c] * s.grad_sign, adafactor_estimate(row, col[c], scale)));
      lanes[l] += x * x;
    }
    total += lane_total(lanes);
  }
  return total;
}

// Pass 3 of a tile: the write.
template <typename T>
void adafactor_write_tile(const AdafactorTensor<T>& t, const AdafactorTile& k, const AdafactorScalars<T>& s,
                          const T* scales, T step_size) {
  const int64_t width = k.c1 - k.c0;
  const T scale = scales[k.b];
  const T* __restrict col = t.col_var + k.b * t.cols + k.c0;
  for (int64_t r = k.r0; r < k.r1; ++r) {
    const T row = t.row_var[k.b * t.rows + r];
    const int64_t at = (k.b * t.rows + r) * t.cols + k.c0;
    const T* __restrict g = t.grad + at;
    T* __restrict p = t.param + at;
    for (int64_t c = 0; c < width; ++c) {
      const T u = adafactor_direction(s, g[c] * s.grad_sign, adafactor_estimate(row, col[c], scale));
      p[c] = adafactor_apply(s, p[c], u, step_size);
    }
  }
}

template <typename T>
void adafactor_factored(const AdafactorTensor<T>& t, const AdafactorHyper& h, const AdafactorScalars<T>& s) {
  const AdafactorTiles tiles = adafactor_tiles(t.batch, t.rows, t.cols);
  const int64_t count = tile_count(tiles);
  const bool worth = t.size() >= kParallelThreshold;
  std::vector<double> row_part(size_t(t.batch * t.rows * tiles.col_tiles), 0.0);
  std::vector<double> col_part(size_t(t.batch * tiles.row_blocks * t.cols), 0.0);
  std::vector<double> tile_part(size_t(count), 0.0);
  parallel_for(count, worth, [&](int64_t i) {
    const AdafactorTile k = tile_at(tiles, i);
    tile_part[size_t(i)] = adafactor_gather_tile(t, k, row_part.data(), tiles.col_tiles,
                                                 col_part.data() + (k.b * tiles.row_blocks + k.rb) * t.cols + k.c0);
  });
  double p_squares = 0.0;
  for (double x : tile_part) p_squares += x;
  const double alpha = adafactor_alpha(h, p_squares, t.size());

  // The state, on this thread (batch x (rows + cols) elements): the blocks' partial sums in order.
  std::vector<T> scales(size_t(t.batch));
  for (int64_t b = 0; b < t.batch; ++b) {
    double row_var_sum = 0.0;
    for (int64_t r = 0; r < t.rows; ++r) {
      double sum = 0.0;
      for (int64_t ct = 0; ct < tiles.col_tiles; ++ct) sum += row_part[size_t((b * t.rows + r) * tiles.col_tiles + ct)];
      T& rv = t.row_var[b * t.rows + r];
      rv = adafactor_average(s, rv, T(sum / double(t.cols)));
      row_var_sum += double(rv);
    }
    for (int64_t c = 0; c < t.cols; ++c) {
      double sum = 0.0;
      for (int64_t rb = 0; rb < tiles.row_blocks; ++rb) sum += col_part[size_t((b * tiles.row_blocks + rb) * t.cols + c)];
      T& cv = t.col_var[b * t.cols + c];
      cv = adafactor_average(s, cv, T(sum / double(t.rows)));
    }
    scales[size_t(b)] = adafactor_row_scale(s, T(row_var_sum / double(t.rows)));
  }
  if (count == 0) return;  // (no element to update)

  parallel_for(count, worth, [&](int64_t i) { tile_part[size_t(i)] = adafactor_u_tile(t, tile_at(tiles, i), s, scales.data()); });
  double u_squares = 0.0;
  for (double x : tile_part) u_squares += x;
  const T step_size = T(adafactor_step_size(h, alpha, u_squares, t.size()));
  parallel_for(count, worth, [&](int64_t i) { adafactor_write_tile(t, tile_at(tiles, i), s, scales.data(), step_size); });
}

// Pass A of a block of an unfactored tensor: the variance; sums p^2 and U^2 into out[0], out[1].
template <typename T>
void adafactor_vector_gather(const AdafactorTensor<T>& t, int64_t begin, int64_t end, const AdafactorScalars<T>& s,
                             double* out) {
  double p_lanes[kSumLanes] = {}, u_lanes[kSumLanes] = {};
  alignas(64) T u[kSumLanes];
  const T* __restrict g = t.grad;
  T* __restrict v = t.variance;
  add_squares(t.param + begin, end - begin, p_lanes);
  int64_t i = begin;
  for (; i + kSumLanes <= end; i += kSumLanes) {
    for (int l = 0; l < kSumLanes; ++l) {
      const T gi = g[i + l] * s.grad_sign;
      v[i + l] = adafactor_average(s, v[i + l], gi * gi);
      u[l] = adafactor_direction(s, gi, v[i + l]);
    }
    add_squares(u, kSumLanes, u_lanes);
  }
  for (int l = 0; i < end; ++i, ++l) {
    const T gi = g[i] * s.grad_sign;
    v[i] = adafactor_average(s, v[i], gi * gi);
    const double x = double(adafactor_direction(s, gi, v[i]));
    u_lanes[l] += x * x;
  }
  out[0] = lane_total(p_lanes);
  out[1] = lane_total(u_lanes);
}

template <typename T>
void adafactor_unfactored(const AdafactorTensor<T>& t, const AdafactorHyper& h, const AdafactorScalars<T>& s) {
  const int64_t n = t.size();
  const int64_t blocks = (n + kAdafactorBlockElements - 1) / kAdafactorBlockElements;
  const bool worth = n >= kParallelThreshold;
  std::vector<double> part(size_t(2 * blocks), 0.0);
  parallel_for(blocks, worth, [&](int64_t b) {
    const int64_t begin = b * kAdafactorBlockElements;
    const int64_t end = begin + kAdafactorBlockElements < n ? begin + kAdafactorBlockElements : n;
    adafactor_vector_gather(t, begin, end, s, &part[size_t(2 * b)]);
  });
  double p_squares = 0.0, u_squares = 0.0;
  for (int64_t b = 0; b < blocks; ++b) {
    p_squares += part[size_t(2 * b)];
    u_squares += part[size_t(2 * b + 1)];
  }
  const double alpha = adafactor_alpha(h, p_squares, n);
  const T step_size = T(adafactor_step_size(h, alpha, u_squares, n));
  parallel_for(blocks, worth, [&](int64_t b) {
    const int64_t begin = b * kAdafactorBlockElements;
    const int64_t end = begin + kAdafactorBlockElements < n ? begin + kAdafactorBlockElements : n;
    const T* __restrict g = t.grad;
    const T* __restrict v = t.variance;
    T* __restrict p = t.param;
    for (int64_t i = begin; i < end; ++i) {
      p[i] = adafactor_apply(s, p[i], adafactor_direction(s, g[i] * s.grad_sign, v[i]), step_size);
    }
  });
}

// One Adafactor call over a list of tensors (validated by the binding), tensor by tensor.
template <typename T>
void adafactor(const std::vector<AdafactorTensor<T>>& tensors, const AdafactorHyper& hyper) {
  const AdafactorScalars<T> s = adafactor_scalars<T>(hyper);
  for (const AdafactorTensor<T>& t : tensors) {
    if (t.factored) {
      adafactor_factored(t, hyper, s);
    } else {
      adafactor_unfactored(t, hyper, s);
    }
  }
}

}  // namespace fastopt::cpu::FASTOPT_ISA_NS
