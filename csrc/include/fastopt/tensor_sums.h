// Rules whose update needs sums over each whole parameter tensor (layer-wise rules: LAMB's trust
// ratio, LARS's local learning rate), and optional clipping by the global gradient norm. Such a rule
// declares what rule.h lists (kName ... used(v), Consts<M>, consts<M>(h)) except apply, and instead:
//
//   kTensorSums = S                 the number of sums per tensor its first pass accumulates
//   first_used(v), first_written(v) the operand masks of the first pass (bit j: operand j)
//   gather<V, M>(c, e, terms)       first pass, one element: may update state in e; writes the S terms
//                                   (in M) that are added into the tensor's sums
//   factor(h, sums)                 the per-tensor number (in double, on the host) from its S sums
//   second_used(v), second_written(v)  the operand masks of the second pass
//   finish<V, M>(c, factor, e)      second pass, one element, with the tensor's factor (cast to M)
//   clip_norm(h)                    0: no clipping; else the maximum global gradient norm
//
// used(v) (read by the binding to require the state) is the union of both passes' masks.
//
// The CPU loops (csrc/cpu/tensor_sum_loops.h) run, for one call:
//   pre-pass  (only when clip_norm(h) > 0): norm = sqrt(sum over every tensor of g^2), g unscaled;
//             clip = norm > clip_norm ? norm / clip_norm : 1, and every gradient the passes read is
//             g / clip (apex's FusedLAMB: multi_tensor_lamb.cu divides by the clipped norm ratio)
//   pass 1    gather over every element, the terms summed per tensor
//   pass 2    finish over every element with factor(h, sums of its tensor)
//
// The sums are deterministic: each tensor is cut into fixed blocks (parallel.h's kChunkElements, from
// the tensor's first element, whatever the list, the threads or the addresses), each block sums its
// elements into kSumLanes partial sums in double (element i into lane i % kSumLanes), the lanes are
// added in order, then the blocks in order. No atomics, so the bits do not depend on the thread count
// or the instruction set.
#pragma once

#include <type_traits>

#include "fastopt/macros.h"
#include "fastopt/scalar_math.h"

namespace fastopt {

// Lanes of a block's partial sums: element i of a block goes to lane i % kSumLanes (a fixed choice, so
// wider vectors do not change the order of the additions).
constexpr int kSumLanes = 16;

// The number of per-tensor sums a rule accumulates (0: an element-wise rule, rule.h).
template <typename Rule, typename = void>
struct tensor_sums : std::integral_constant<int, 0> {};

template <typename Rule>
struct tensor_sums<Rule, std::void_t<decltype(Rule::kTensorSums)>> : std::integral_constant<int, Rule::kTensorSums> {};

template <typename Rule>
constexpr bool has_tensor_sums = tensor_sums<Rule>::value > 0;

// The clip ratio of a call from the sum of every gradient's squares: norm / max_norm where the global norm
// exceeds max_norm, else 1 (the CPU loops and the CUDA passes both end their pre-pass with it).
FASTOPT_HD double global_clip_ratio(double squares, double max_norm) {
  const double norm = sqrt_(squares);
  return norm > max_norm ? norm / max_norm : 1.0;
}

}  // namespace fastopt
