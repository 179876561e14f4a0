// Adafactor's step on CUDA (fastopt/adafactor.h), written once over a Runner: the GPU runner of
// adafactor.cu, or the host simulation of tests/gpu/cuda_host.
//
// Each pass is a functor whose operator()(i) does item i's whole work and writes only item i's slots, so
// a pass is one launch of independent threads (GpuRunner: one thread per item) and the host simulation
// can run the items in any order. The order of every addition is fastopt/adafactor_tiles.h's, the CPU
// loops' own, so a GPU step gives the CPU's bits:
//
// Factored tensor (batch x rows x cols):
//   RowLanes     item (segment, lane): lane sums of g^2 and p^2 over the segment's columns j = lane (mod 16)
//   RowTotals    item segment: the lanes in order: row_part (g^2) and seg_total (p^2)
//   ColumnSums   item (matrix, row block, column): g^2 down the tile's rows into col_part
//   TileTotals   item tile: its segments' seg_total in row order
//   State        item row or column: row_var / col_var from their partial sums
//   RowScales    item matrix: max(mean(row_var), eps1); item `batch`: alpha from the tiles' p^2
//   ULanes, RowTotals, TileTotals: the same for U^2 (row_part is no longer needed: it takes U's lanes)
//   StepSize     one item: the clip factor from the tiles' U^2
//   Write        item element: p = decay(p) - step_size * U
// Unfactored tensor (n elements, blocks of kAdafactorBlockElements):
//   VectorLanes  item (block, lane): variance updated, lane sums of p^2 and U^2
//   VectorStep   one item: each block's lanes in order, the blocks in order, alpha and the step size
//   VectorWrite  item element
//
// Scratch (one double buffer per tensor, stream-ordered): the partial sums, the row scales (values of T
// held exactly in double) and two slots for alpha and the step size. Nothing waits for the device.
#pragma once

#include <cstdint>
#include <vector>

#include "cpu/adafactor_tensor.h"
#include "fastopt/adafactor.h"
#include "fastopt/adafactor_tiles.h"
#include "fastopt/tensor_sums.h"

namespace fastopt::cuda::adafactor_passes {

template <typename T>
using Tensor = cpu::AdafactorTensor<T>;

// The scratch of one factored tensor, as offsets into its double buffer.
struct FactoredScratch {
  int64_t lanes, row_part, seg_total, col_part, tile_part, scales, alpha, step_size, total;

  static FASTOPT_HD FactoredScratch of(const AdafactorTiles& k) {
    FactoredScratch s{};
    const int64_t segments = segment_count(k);
    s.lanes = 0;                                       // 2 x kSumLanes per segment
    s.row_part = s.lanes + 2 * kSumLanes * segments;   // per segment
    s.seg_total = s.row_part + segments;               // per segment
    s.col_part = s.seg_total + segments;               // batch x row_blocks x cols
    s.tile_part = s.col_part + k.batch * k.row_blocks * k.cols;
    s.scales = s.tile_part + tile_count(k);            // per matrix
    s.alpha = s.scales + k.batch;
    s.step_size = s.alpha + 1;
    s.total = s.step_size + 1;
    return s;
  }
};

// Lane `lane` of x[0..width)'s squares: x[lane], x[lane + 16], ... in order, from 0.
template <typename T>
FASTOPT_HD double lane_squares(const T* x, int64_t width, int lane) {
  double sum = 0.0;
  for (int64_t j = lane; j < width; j += kSumLanes) sum += double(x[j]) * double(x[j]);
  return sum;
}

// The lanes in lane order, from 0 (tensor_sum_loops.h's lane_total).
FASTOPT_HD double lanes_in_order(const double* lanes, int64_t stride) {
  double total = 0.0;
  for (int l = 0; l < kSumLanes; ++l) total += lanes[l * stride];
  return total;
}

// The segment's first element, width and (matrix, row).
struct Segment {
  int64_t at, width, b, r, ct;
};
FASTOPT_HD Segment segment_at(const AdafactorTiles& k, int64_t seg) {
  const int64_t ct = seg % k.col_tiles, row = seg / k.col_tiles;
  const int64_t c0 = ct * k.tile_cols;
  const int64_t c1 = c0 + k.tile_cols < k.cols ? c0 + k.tile_cols : k.cols;
  return {row * k.cols + c0, c1 - c0, row / k.rows, row % k.rows, ct};
}

// U at one element of a factored tensor (the CPU's expression: adafactor_u_tile, adafactor_write_tile).
template <typename T>
FASTOPT_HD T factored_u(const Tensor<T>& t, const AdafactorScalars<T>& s, T scale, int64_t b, int64_t r, int64_t c,
                        int64_t at) {
  return adafactor_direction(s, t.grad[at] * s.grad_sign,
                             adafactor_estimate(t.row_var[b * t.rows + r], t.col_var[b * t.cols + c], scale));
}

template <typename T>
struct Factored {
  Tensor<T> t;
  AdafactorTiles k;
  AdafactorScalars<T> s;
  AdafactorHyper h;
  FactoredScratch at;
  double* scratch;

  FASTOPT_HD T scale(int64_t b) const { return T(scratch[at.scales + b]); }
};

template <typename T>
struct RowLanes : Factored<T> {  // items: segments x kSumLanes
  FASTOPT_HD void operator()(int64_t i) const {
    const int64_t seg = i / kSumLanes;
    const int lane = int(i % kSumLanes);
    const Segment g = segment_at(this->k, seg);
    double* out = this->scratch + this->at.lanes + 2 * kSumLanes * seg;
    out[lane] = lane_squares(this->t.grad + g.at, g.width, lane);
    out[kSumLanes + lane] = lane_squares(this->t.param + g.at, g.width, lane);
  }
};

template <typename T>
struct ULanes : Factored<T> {  // items: segments x kSumLanes; U^2's lanes into the p^2 lanes' slots
  FASTOPT_HD void operator()(int64_t i) const {
    const int64_t seg = i / kSumLanes;
    const int lane = int(i % kSumLanes);
    const Segment g = segment_at(this->k, seg);
    const T scale = this->scale(g.b);
    const int64_t c0 = g.ct * this->k.tile_cols;
    double sum = 0.0;
    for (int64_t j = lane; j < g.width; j += kSumLanes) {
      const double u = double(factored_u(this->t, this->s, scale, g.b, g.r, c0 + j, g.at + j));
      sum += u * u;
    }
    this->scratch[this->at.lanes + 2 * kSumLanes * seg + kSumLanes + lane] = sum;
  }
};

// items: segments. The g^2 lanes into row_part (pass 1 only: `rows`), the other lanes into seg_total.
template <typename T>
struct RowTotals : Factored<T> {
  bool rows;
  FASTOPT_HD void operator()(int64_t seg) const {
    const double* lanes = this->scratch + this->at.lanes + 2 * kSumLanes * seg;
    if (rows) this->scratch[this->at.row_part + seg] = lanes_in_order(lanes, 1);
    this->scratch[this->at.seg_total + seg] = lanes_in_order(lanes + kSumLanes, 1);
  }
};

template <typename T>
struct ColumnSums : Factored<T> {  // items: batch x row_blocks x cols
  FASTOPT_HD void operator()(int64_t i) const {
    const int64_t c = i % this->k.cols, block = i / this->k.cols;
    const int64_t b = block / this->k.row_blocks, rb = block % this->k.row_blocks;
    const int64_t r0 = rb * this->k.block_rows;
    const int64_t r1 = r0 + this->k.block_rows < this->k.rows ? r0 + this->k.block_rows : this->k.rows;
    double sum = 0.0;
    for (int64_t r = r0; r < r1; ++r) {
      const double g = double(this->t.grad[(b * this->k.rows + r) * this->k.cols + c]);
      sum += g * g;
    }
    this->scratch[this->at.col_part + i] = sum;
  }
};

template <typename T>
struct TileTotals : Factored<T> {  // items: tiles
  FASTOPT_HD void operator()(int64_t i) const {
    const AdafactorTile tile = tile_at(this->k, i);
    double sum = 0.0;
    for (int64_t r = tile.r0; r < tile.r1; ++r) {
      sum += this->scratch[this->at.seg_total + (tile.b * this->k.rows + r) * this->k.col_tiles + tile.ct];
    }
    this->scratch[this->at.tile_part + i] = sum;
  }
};

template <typename T>
struct State : Factored<T> {  // items: batch x rows (row_var), then batch x cols (col_var)
  FASTOPT_HD void operator()(int64_t i) const {
    const AdafactorTiles& k = this->k;
    double sum = 0.0;
    if (i < k.batch * k.rows) {
      for (int64_t ct = 0; ct < k.col_tiles; ++ct) sum += this->scratch[this->at.row_part + i * k.col_tiles + ct];
      T& rv = this->t.row_var[i];
      rv = adafactor_average(this->s, rv, T(sum / double(k.cols)));
      return;
    }
    const int64_t j = i - k.batch * k.rows, b = j / k.cols, c = j % k.cols;
    for (int64_t rb = 0; rb < k.row_blocks; ++rb) sum += this->scratch[this->at.col_part + (b * k.row_blocks + rb) * k.cols + c];
    T& cv = this->t.col_var[j];
    cv = adafactor_average(this->s, cv, T(sum / double(k.rows)));
  }
};

// items: batch + 1. Matrix b's row scale; the last item alpha from the tiles' p^2.
template <typename T>
struct RowScales : Factored<T> {
  FASTOPT_HD void operator()(int64_t b) const {
    const AdafactorTiles& k = this->k;
    if (b < k.batch) {
      double sum = 0.0;
      for (int64_t r = 0; r < k.rows; ++r) sum += double(this->t.row_var[b * k.rows + r]);
      this->scratch[this->at.scales + b] = double(adafactor_row_scale(this->s, T(sum / double(k.rows))));
      return;
    }
    double p_squares = 0.0;
    for (int64_t i = 0; i < tile_count(k); ++i) p_squares += this->scratch[this->at.tile_part + i];
    this->scratch[this->at.alpha] = adafactor_alpha(this->h, p_squares, k.batch * k.rows * k.cols);
  }
};

template <typename T>
struct StepSize : Factored<T> {  // one item
  FASTOPT_HD void operator()(int64_t) const {
    double u_squares = 0.0;
    for (int64_t i = 0; i < tile_count(this->k); ++i) u_squares += this->scratch[this->at.tile_part + i];
    const int64_t n = this->k.batch * this->k.rows * this->k.cols;
    this->scratch[this->at.step_size] = double(T(adafactor_step_size(this->h, this->scratch[this->at.alpha], u_squares, n)));
  }
};

template <typename T>
struct Write : Factored<T> {  // items: elements
  FASTOPT_HD void operator()(int64_t e) const {
    // (the element's matrix, row and column: two divisions an element, in 32 bits where the tensor allows,
    // a fraction of the cost of 64-bit ones on a GPU; the same numbers either way)
    const AdafactorTiles& k = this->k;
    int64_t row, b;
    if (k.batch * k.rows * k.cols <= int64_t(UINT32_MAX)) {
      row = int64_t(uint32_t(e) / uint32_t(k.cols));
      b = int64_t(uint32_t(row) / uint32_t(k.rows));
    } else {
      row = e / k.cols;
      b = row / k.rows;
    }
    const int64_t c = e - row * k.cols, r = row - b * k.rows;
    const T u = factored_u(this->t, this->s, this->scale(b), b, r, c, e);
    this->t.param[e] = adafactor_apply(this->s, this->t.param[e], u, T(this->scratch[this->at.step_size]));
  }
};

// ---- unfactored: scratch = 2 x kSumLanes lanes per block (p^2, then U^2), then the step size
template <typename T>
struct Vector {
  Tensor<T> t;
  AdafactorScalars<T> s;
  AdafactorHyper h;
  int64_t n, blocks;
  double* scratch;

  FASTOPT_HD int64_t step_slot() const { return 2 * kSumLanes * blocks; }
};

template <typename T>
struct VectorLanes : Vector<T> {  // items: blocks x kSumLanes
  FASTOPT_HD void operator()(int64_t i) const {
    const int64_t block = i / kSumLanes;
    const int lane = int(i % kSumLanes);
    const int64_t begin = block * kAdafactorBlockElements;
    const int64_t end = begin + kAdafactorBlockElements < this->n ? begin + kAdafactorBlockElements : this->n;
    double p_sum = 0.0, u_sum = 0.0;
    for (int64_t e = begin + lane; e < end; e += kSumLanes) {
      const double p = double(this->t.param[e]);
      p_sum += p * p;
      const T g = this->t.grad[e] * this->s.grad_sign;
      T& v = this->t.variance[e];
      v = adafactor_average(this->s, v, g * g);
      const double u = double(adafactor_direction(this->s, g, v));
      u_sum += u * u;
    }
    double* out = this->scratch + 2 * kSumLanes * block;
    out[lane] = p_sum;
    out[kSumLanes + lane] = u_sum;
  }
};

template <typename T>
struct VectorStep : Vector<T> {  // one item
  FASTOPT_HD void operator()(int64_t) const {
    double p_squares = 0.0, u_squares = 0.0;
    for (int64_t b = 0; b < this->blocks; ++b) {
      p_squares += lanes_in_order(this->scratch + 2 * kSumLanes * b, 1);
      u_squares += lanes_in_order(this->scratch + 2 * kSumLanes * b + kSumLanes, 1);
    }
    const double alpha = adafactor_alpha(this->h, p_squares, this->n);
    this->scratch[this->step_slot()] = double(T(adafactor_step_size(this->h, alpha, u_squares, this->n)));
  }
};

template <typename T>
struct VectorWrite : Vector<T> {  // items: elements
  FASTOPT_HD void operator()(int64_t e) const {
    const T u = adafactor_direction(this->s, this->t.grad[e] * this->s.grad_sign, this->t.variance[e]);
    this->t.param[e] = adafactor_apply(this->s, this->t.param[e], u, T(this->scratch[this->step_slot()]));
  }
};

// ---- the call

template <typename T, typename Runner>
void factored(Runner& runner, const Tensor<T>& t, const AdafactorHyper& h, const AdafactorScalars<T>& s) {
  const AdafactorTiles k = adafactor_tiles(t.batch, t.rows, t.cols);
  const FactoredScratch at = FactoredScratch::of(k);
  typename Runner::Scratch scratch(runner, at.total);
  const Factored<T> base{t, k, s, h, at, scratch.get()};
  const int64_t segments = segment_count(k), tiles = tile_count(k);
  runner.items(segments * kSumLanes, RowLanes<T>{base});
  runner.items(segments, RowTotals<T>{base, true});
  runner.items(k.batch * k.row_blocks * k.cols, ColumnSums<T>{base});
  runner.items(tiles, TileTotals<T>{base});
  runner.items(k.batch * (k.rows + k.cols), State<T>{base});
  runner.items(k.batch + 1, RowScales<T>{base});
  if (tiles == 0) return;  // (no element to update)
  runner.items(segments * kSumLanes, ULanes<T>{base});
  runner.items(segments, RowTotals<T>{base, false});
  runner.items(tiles, TileTotals<T>{base});
  runner.items(1, StepSize<T>{base});
  runner.items(t.size(), Write<T>{base});
}

template <typename T, typename Runner>
void unfactored(Runner& runner, const Tensor<T>& t, const AdafactorHyper& h, const AdafactorScalars<T>& s) {
  const int64_t n = t.size();
  if (n == 0) return;
  const int64_t blocks = (n + kAdafactorBlockElements - 1) / kAdafactorBlockElements;
  typename Runner::Scratch scratch(runner, 2 * kSumLanes * blocks + 1);
  const Vector<T> base{t, s, h, n, blocks, scratch.get()};
  runner.items(blocks * kSumLanes, VectorLanes<T>{base});
  runner.items(1, VectorStep<T>{base});
  runner.items(n, VectorWrite<T>{base});
}

// One Adafactor call over a list of tensors (validated by the binding), tensor by tensor, as the CPU.
template <typename T, typename Runner>
void run(Runner& runner, const std::vector<Tensor<T>>& tensors, const AdafactorHyper& hyper) {
  const AdafactorScalars<T> s = adafactor_scalars<T>(hyper);
  for (const Tensor<T>& t : tensors) {
    if (t.factored) {
      factored(runner, t, hyper, s);
    } else {
      unfactored(runner, t, hyper, s);
    }
  }
}

}  // namespace fastopt::cuda::adafactor_passes
