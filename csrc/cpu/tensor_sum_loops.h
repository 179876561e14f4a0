// The loops of a rule with per-tensor sums (fastopt/tensor_sums.h: LAMB): an optional pre-pass that
// sums the squared gradients (global-norm clipping), a first pass that updates the state and sums the
// rule's terms per tensor, and a second pass that applies the per-tensor factor.
//
// The sums are deterministic: blocks are parallel.h's chunks without heads (each tensor cut every
// kChunkElements from its first element, whatever its address, the list around it or the thread count);
// a block adds its terms in double into kSumLanes lanes (element i of the block into lane
// i % kSumLanes), then its lanes in order; the blocks of a tensor are added in order once every block is
// done. Each block writes its own slot (no shared accumulator, no atomics), so threads only change who
// computes a block, never a bit of the result, and every instruction set performs the same additions.
//
// Included only by kernels_for_isa.cpp, once per instruction set, inside that set's namespace, after
// rule_loops.h (RestrictPtr, rule_update).
#pragma once

#include <cmath>
#include <cstddef>
#include <utility>
#include <vector>

#include "cpu/optim_loops.h"
#include "cpu/rule_loops.h"
#include "fastopt/tensor_sums.h"

namespace fastopt::cpu::FASTOPT_ISA_NS {

// The gradient a pass uses: unscaled, then divided by the clip ratio (apex's FusedLAMB divides).
template <bool SCALED, bool CLIP, typename T>
inline T pass_grad(T grad, T gs, T clip) {
  const T g = unscale_grad<SCALED>(grad, gs);
  if constexpr (CLIP) {
    return g / clip;
  } else {
    return g;
  }
}

// body(b) for every block b, on threads when the call is large enough (parallel.h's threshold).
template <typename Body>
void for_each_block(const std::vector<Chunk>& blocks, int64_t total, Body&& body) {
  if (total < kParallelThreshold) {
    for (size_t b = 0; b < blocks.size(); ++b) body(int64_t(b));
    return;
  }
  parallel_for_chunks(int64_t(blocks.size()), body);
}

// The sum of the block's lanes, in lane order.
inline double lane_total(const double (&lanes)[kSumLanes]) {
  double total = 0.0;
  for (int l = 0; l < kSumLanes; ++l) total += lanes[l];
  return total;
}

// Adds terms[0..n) into the lanes (term i into lane i % kSumLanes; n is a multiple of kSumLanes except in a
// block's last piece). Each lane keeps its order of additions, so this vectorises with no reassociation.
inline void add_to_lanes(const double* __restrict terms, int64_t n, double (&lanes)[kSumLanes]) {
  int64_t i = 0;
  for (; i + kSumLanes <= n; i += kSumLanes) {
    for (int l = 0; l < kSumLanes; ++l) lanes[l] += terms[i + l];
  }
  for (int l = 0; i < n; ++i, ++l) lanes[l] += terms[i];
}

// Elements of pass 1 between two additions into the lanes: the element loop writes their terms to a
// small buffer on the stack (it stays element-wise, so it vectorises), then add_to_lanes sums them.
constexpr int64_t kGatherPiece = 512;
static_assert(kGatherPiece % kSumLanes == 0, "a piece must keep every element in its lane");

// Sum of (g / gs)^2 over n gradients (in pieces, as pass 1).
template <bool SCALED, typename T>
inline double grad_square_block(int64_t n, const T* __restrict g, T gs) {
  double lanes[kSumLanes] = {};
  alignas(64) double squares[kGatherPiece];
  for (int64_t base = 0; base < n; base += kGatherPiece) {
    const int64_t count = n - base < kGatherPiece ? n - base : kGatherPiece;
    for (int64_t i = 0; i < count; ++i) {
      const double x = double(unscale_grad<SCALED>(g[base + i], gs));
      squares[i] = x * x;
    }
    add_to_lanes(squares, count, lanes);
  }
  return lane_total(lanes);
}

// Pass 1 over n elements of one block: gather, the terms summed into out[0..S).
template <typename Rule, int V, bool SCALED, bool CLIP, typename T, size_t... J>
inline void gather_block(std::index_sequence<J...>, int64_t n, T gs, T clip,
                         const typename Rule::template Consts<T> c, double* out, RestrictPtr<T, J>... operand) {
  constexpr int S = Rule::kTensorSums;
  constexpr unsigned used = Rule::first_used(V);
  constexpr unsigned written = Rule::first_written(V);
  double lanes[S][kSumLanes] = {};
  alignas(64) double terms[S][kGatherPiece];
  for (int64_t base = 0; base < n; base += kGatherPiece) {
    const int64_t count = n - base < kGatherPiece ? n - base : kGatherPiece;
    for (int64_t i = 0; i < count; ++i) {
      const int64_t at = base + i;
      T e[Rule::kOperands] = {((used & operand_bit(int(J))) ? operand[at] : T(0))...};
      if constexpr ((used & operand_bit(1)) != 0) e[1] = pass_grad<SCALED, CLIP>(e[1], gs, clip);
      double t[S];
      Rule::template gather<V>(c, e, t);
      (((written & operand_bit(int(J))) ? void(operand[at] = e[J]) : void()), ...);
      for (int s = 0; s < S; ++s) terms[s][i] = t[s];
    }
    for (int s = 0; s < S; ++s) add_to_lanes(terms[s], count, lanes[s]);
  }
  for (int s = 0; s < S; ++s) out[s] = lane_total(lanes[s]);
}

// Pass 2 over n elements: finish with the tensor's factor (element-wise, so it vectorises).
template <typename Rule, int V, bool SCALED, bool CLIP, typename T, size_t... J>
inline void finish_block(std::index_sequence<J...>, int64_t n, T gs, T clip, const typename Rule::template Consts<T> c,
                         T factor, RestrictPtr<T, J>... operand) {
  constexpr unsigned used = Rule::second_used(V);
  constexpr unsigned written = Rule::second_written(V);
  for (int64_t i = 0; i < n; ++i) {
    T e[Rule::kOperands] = {((used & operand_bit(int(J))) ? operand[i] : T(0))...};
    if constexpr ((used & operand_bit(1)) != 0) e[1] = pass_grad<SCALED, CLIP>(e[1], gs, clip);
    Rule::template finish<V>(c, factor, e);
    (((written & operand_bit(int(J))) ? void(operand[i] = e[J]) : void()), ...);
  }
}

template <typename Rule, int V, bool SCALED, bool CLIP, typename T, size_t... J>
inline void gather_chunk(std::index_sequence<J...> operands, const TensorList<T, Rule::kOperands>& tensors,
                         const Chunk& k, T gs, T clip, const typename Rule::template Consts<T>& c, double* out) {
  gather_block<Rule, V, SCALED, CLIP>(operands, k.end - k.begin, gs, clip, c, out,
                                      operand_as<T>(tensors, k.tensor, int(J), k.begin)...);
}

template <typename Rule, int V, bool SCALED, bool CLIP, typename T, size_t... J>
inline void finish_chunk(std::index_sequence<J...> operands, const TensorList<T, Rule::kOperands>& tensors, int32_t k,
                         int64_t begin, int64_t end, T gs, T clip, const typename Rule::template Consts<T>& c,
                         T factor) {
  finish_block<Rule, V, SCALED, CLIP>(operands, end - begin, gs, clip, c, factor,
                                      operand_as<T>(tensors, k, int(J), begin)...);
}

// The clip ratio of the call: 1, or norm / max_norm where the global gradient norm exceeds max_norm.
template <typename T, int N>
double global_clip(const TensorList<T, N>& tensors, const std::vector<Chunk>& blocks, int64_t total,
                   double grad_scale, double max_norm) {
  std::vector<double> partial(blocks.size(), 0.0);
  const T scale = T(grad_scale);
  with_flags(
      [&](auto SCALED) {
        for_each_block(blocks, total, [&](int64_t b) {
          const Chunk& k = blocks[size_t(b)];
          partial[size_t(b)] =
              grad_square_block<SCALED.value>(k.end - k.begin, tensors.ptrs[size_t(k.tensor)][1] + k.begin, scale);
        });
      },
      grad_scale != 1.0);
  double sum = 0.0;
  for (double s : partial) sum += s;
  return global_clip_ratio(sum, max_norm);
}

// One call of a rule with per-tensor sums over a list of tensors; returns found_inf.
template <typename Rule, typename T>
bool tensor_sum_update(const TensorList<T, Rule::kOperands>& tensors, const typename Rule::Hyper& hyper) {
  if (skip_call<T, T>(tensors, hyper.scaling)) return true;
  constexpr int S = Rule::kTensorSums;
  constexpr auto operands = std::make_index_sequence<size_t(Rule::kOperands)>{};
  const typename Rule::template Consts<T> c = Rule::template consts<T>(hyper);
  const T scale = T(hyper.scaling.grad_scale);
  const bool scaled = hyper.scaling.grad_scale != 1.0;
  const int64_t total = total_elements(tensors.sizes);
  const std::vector<Chunk> blocks = make_chunks(tensors.sizes, total);  // no heads: fixed blocks

  const double max_norm = Rule::clip_norm(hyper);
  const T clip = T(max_norm > 0.0 ? global_clip(tensors, blocks, total, hyper.scaling.grad_scale, max_norm) : 1.0);
  const bool clipping = clip != T(1);

  std::vector<double> partial(blocks.size() * size_t(S), 0.0);
  std::vector<T> factors(tensors.sizes.size());
  with_variant<Rule::kVariants>(Rule::variant(hyper), [&](auto V) {
    with_flags(
        [&](auto SCALED, auto CLIP) {
          for_each_block(blocks, total, [&](int64_t b) {
            gather_chunk<Rule, V.value, SCALED.value, CLIP.value>(operands, tensors, blocks[size_t(b)], scale, clip, c,
                                                                  &partial[size_t(b) * size_t(S)]);
          });
        },
        scaled, clipping);
    // Each tensor's sums, its blocks in order (blocks run tensor by tensor), then its factor.
    size_t b = 0;
    for (size_t k = 0; k < tensors.sizes.size(); ++k) {
      double sums[S] = {};
      for (; b < blocks.size() && size_t(blocks[b].tensor) == k; ++b) {
        for (int s = 0; s < S; ++s) sums[s] += partial[b * size_t(S) + size_t(s)];
      }
      factors[k] = T(Rule::factor(hyper, sums));
    }
    with_flags(
        [&](auto SCALED, auto CLIP) {
          for_each_update_chunk<T>(tensors, [&](int32_t k, int64_t begin, int64_t end) {
            finish_chunk<Rule, V.value, SCALED.value, CLIP.value>(operands, tensors, k, begin, end, scale, clip, c,
                                                                  factors[size_t(k)]);
          });
        },
        scaled && (Rule::second_used(V.value) & operand_bit(1)) != 0,
        clipping && (Rule::second_used(V.value) & operand_bit(1)) != 0);
  });
  return false;
}

// The update of any registered rule: the element loop (rule_loops.h) or the loops above.
template <typename Rule, typename T>
constexpr bool (*rule_update_of())(const TensorList<T, Rule::kOperands>&, const typename Rule::Hyper&) {
  if constexpr (has_tensor_sums<Rule>) {
    return &tensor_sum_update<Rule, T>;
  } else {
    return &rule_update<Rule, T>;
  }
}

}  // namespace fastopt::cpu::FASTOPT_ISA_NS
