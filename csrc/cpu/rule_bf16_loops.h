// Every element-wise rule (fastopt/registry.h) over bfloat16 storage (issue 18): bfloat16 state with
// float32 or bfloat16 params, or bfloat16 params with float32 state, written to nearest-even or
// stochastically. As the classic four's loops (adam_bf16_loops.h, bf16_state_loops.h): each operand
// is widened to float32 (exact), the float32 kernel's own loop runs over it (so the values between load
// and store are its bits), and each bfloat16 operand it changes is rounded back (bf16_elements.h).
// Rounding operands: 0 the params, j - 1 the rule's operand j >= 2 (its state).
//
// Rules with per-tensor sums (LAMB's norms, tensor_sums.h) run a two-pass loop of their own and have
// no entry here (the table holds nullptr; the binding refuses bfloat16 storage for them by name).
//
// Included only by rules_bf16_for_isa.cpp, once per instruction set, inside that set's namespace.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "cpu/bf16_elements.h"
#include "cpu/rule_loops.h"
#include "fastopt/tensor_sums.h"

namespace fastopt::cpu::FASTOPT_ISA_NS {

// The storage of operand J: P for the params and the gradient (0, 1), S for the state.
template <typename P, typename S, size_t J>
using StorageOf = std::conditional_t<(J < 2), P, S>;

// The rounding operand of rule operand J (0 the params; the state from 1, as bf16_elements.h numbers them).
constexpr size_t rounding_operand(size_t j) { return j == 0 ? 0 : j - 1; }

// A block of elements goes through float32 buffers: the bfloat16 operands in use are widened into them
// (exact), the float32 rule loop itself (rule_loops.h's rule_elements, float32 operands read in place) runs
// over the block, and the bfloat16 operands it changes are rounded back. Written as one loop with the
// conversions inside, the body outgrew what GCC unswitches, and a rule's run-time select (lerp_'s small_w)
// then left it scalar (tests/kernels/test_loop_vectorised.py); apart, each of the three loops vectorises,
// and the buffers (4 KB at most) stay in L1.
constexpr int64_t kBf16Block = 256;

template <typename S>
inline void widen_block(const S* __restrict from, float* __restrict to, int64_t n) {
  for (int64_t i = 0; i < n; ++i) to[i] = load_f32(from[i]);
}

template <bool SR, typename S>
inline void narrow_block(const float* __restrict from, S* __restrict to, int64_t n, uint64_t key, uint64_t first) {
  for (int64_t i = 0; i < n; ++i) to[i] = store_as<SR, S>(from[i], key, first + uint64_t(i));
}

// Operand J of the block at `at`: read in place when float32, else widened into its buffer (an operand
// the variant does not use stays nullptr).
template <unsigned kUsed, size_t J, typename X>
inline float* block_operand(X* stored, float (&buffer)[kBf16Block], int64_t n) {
  if constexpr (std::is_same_v<X, float>) {
    return stored;
  } else {
    if (!(kUsed & operand_bit(int(J))) || stored == nullptr) return nullptr;
    widen_block(stored, buffer, n);
    return buffer;
  }
}

template <unsigned kWritten, size_t J, bool SR, typename X>
inline void store_block(const float* block, X* stored, int64_t n, uint64_t key, uint64_t first) {
  if constexpr (!std::is_same_v<X, float>) {
    if ((kWritten & operand_bit(int(J))) && stored != nullptr) narrow_block<SR>(block, stored, n, key, first);
  }
}

// One chunk of tensor k: elements [begin, end), a block at a time.
template <typename Rule, int V, bool SCALED, bool SR, typename P, typename S, size_t... J>
inline void rule_bf16_chunk(std::index_sequence<J...> operands, const Bf16Call& call, int32_t k, int64_t begin,
                            int64_t end, float gs, const typename Rule::template Consts<float>& c) {
  constexpr unsigned used = Rule::used(V);
  constexpr unsigned written = used & ~operand_bit(1);
  uint64_t keys[4];
  rounding_keys<SR>(call, k, keys);
  alignas(64) float buffers[Rule::kOperands][kBf16Block];
  for (int64_t at = begin; at < end; at += kBf16Block) {
    const int64_t n = std::min(kBf16Block, end - at);
    const std::tuple<StorageOf<P, S, J>*...> stored{bf16_operand<StorageOf<P, S, J>>(call, k, int(J), at)...};
    float* block[] = {block_operand<used, J>(std::get<J>(stored), buffers[J], n)...};
    rule_elements<Rule, V, SCALED, float>(operands, n, gs, c, block[J]...);
    (store_block<written, J, SR>(block[J], std::get<J>(stored), n, keys[rounding_operand(J)], uint64_t(at)), ...);
  }
}

template <typename Rule, typename P, typename S>
bool rule_bf16_typed(const Bf16Call& call, const typename Rule::Hyper& hyper) {
  const float scale = float(hyper.scaling.grad_scale);
  const bool scaled = hyper.scaling.grad_scale != 1.0;
  if (hyper.scaling.skip_nonfinite && any_nonfinite_grad_bf16<P>(call, scale, scaled)) return true;
  const typename Rule::template Consts<float> c = Rule::template consts<float>(hyper);
  const std::vector<int64_t> heads = bf16_chunk_heads<P>(call);
  constexpr auto operands = std::make_index_sequence<size_t(Rule::kOperands)>{};
  with_variant<Rule::kVariants>(Rule::variant(hyper), [&](auto V) {
    with_flags(
        [&](auto SCALED, auto SR) {
          for_each_chunk(call.tensors.sizes, [&](int32_t k, int64_t begin, int64_t end) {
            rule_bf16_chunk<Rule, V.value, SCALED.value, SR.value, P, S>(operands, call, k, begin, end, scale, c);
          }, heads);
        },
        scaled, call.stochastic_rounding);
  });
  return false;
}

// The table's entry of Rule: found_inf, as the other updates return it.
template <typename Rule>
bool rule_bf16(const Bf16Call& call, const typename Rule::Hyper& hyper) {
  return with_bf16_storage(call, [&](auto p, auto s) {
    return rule_bf16_typed<Rule, decltype(p), decltype(s)>(call, hyper);
  });
}

template <typename Rule>
constexpr bool (*rule_bf16_of())(const Bf16Call&, const typename Rule::Hyper&) {
  if constexpr (has_tensor_sums<Rule>) {
    return nullptr;
  } else {
    return &rule_bf16<Rule>;
  }
}

}  // namespace fastopt::cpu::FASTOPT_ISA_NS
