// What every update over bfloat16 storage shares (adam_bf16_loops.h, bf16_state_loops.h): an element
// widened to float32 (exact) and stored back, rounded to nearest-even or stochastically with bits that
// depend only on (seed, step, tensor, operand, element) (fastopt/bf16.h), so every thread count and
// instruction set writes the same bits; the skip_nonfinite pre-pass; the chunk heads.
//
// Included only by kernels_for_isa.cpp (through those loops), inside the instruction set's namespace,
// after optim_loops.h.
#pragma once

#include <cstdint>
#include <type_traits>
#include <vector>

#include "cpu/bf16_call.h"
#include "cpu/optim_loops.h"
#include "fastopt/bf16.h"

namespace fastopt::cpu::FASTOPT_ISA_NS {

// Storage S is float (float32) or uint16_t (bfloat16 bits).
template <typename S>
inline float load_f32(S x) {
  if constexpr (std::is_same_v<S, float>) {
    return x;
  } else {
    return bf16_to_float(x);
  }
}

// The value stored for x: itself (float32), or x rounded to bfloat16, stochastically with the bits of
// element i under key when SR.
template <bool SR, typename S>
inline S store_as(float x, uint64_t key, uint64_t i) {
  if constexpr (std::is_same_v<S, float>) {
    return x;
  } else if constexpr (SR) {
    return float_to_bf16_stochastic(x, rounding_bits(key, i));
  } else {
    return float_to_bf16(x);
  }
}

// The rounding keys of tensor k's operands 0..3 (0 the params, then the state operands in the
// optimizer's order): zeros unless SR (nothing random is drawn then).
template <bool SR>
inline void rounding_keys(const Bf16Call& call, int32_t k, uint64_t keys[4]) {
  for (uint64_t j = 0; j < 4; ++j) keys[j] = SR ? rounding_key(call.seed, call.step, uint64_t(k), j) : 0;
}

// skip_nonfinite's pre-pass over grads of storage P: any unscaled gradient NaN or +-Inf (SCALED a
// compile-time flag, as in optim_loops.h, so the loop vectorises either way).
template <typename P>
bool any_nonfinite_grad_bf16(const Bf16Call& call, float scale, bool scaled) {
  bool found = false;
  with_flags(
      [&](auto SCALED) {
        found = any_chunk(call.tensors.sizes, [&](int32_t k, int64_t begin, int64_t end) {
          const P* __restrict g = static_cast<const P*>(call.tensors.ptrs[size_t(k)][1]);
          unsigned bad = 0;
          for (int64_t i = begin; i < end; ++i) {
            const float gi = load_f32(g[i]);
            bad |= unsigned(!is_finite_(SCALED.value ? gi / scale : gi));
          }
          return bad != 0;
        });
      },
      scaled);
  return found;
}

// Chunk heads on the params' cache lines (parallel.h; where chunks fall changes no bit).
template <typename P>
std::vector<int64_t> bf16_chunk_heads(const Bf16Call& call) {
  std::vector<int64_t> heads;
  if (total_elements(call.tensors.sizes) >= kParallelThreshold) {
    for (const auto& ptrs : call.tensors.ptrs) heads.push_back(elements_to_alignment(static_cast<const P*>(ptrs[0])));
  }
  return heads;
}

// typed(P{}, S{}) with the call's storage types: P of the params and grads, S of the state (float for
// float32, uint16_t for bfloat16). float32 params come with bfloat16 state: float32 params and state
// is no bfloat16 call (the bindings send it to the float32 kernels or refuse stochastic_rounding there).
template <typename Typed>
inline bool with_bf16_storage(const Bf16Call& call, Typed&& typed) {
  if (call.param_bf16) return call.state_bf16 ? typed(uint16_t{}, uint16_t{}) : typed(uint16_t{}, float{});
  return typed(float{}, uint16_t{});
}

// operand j of tensor k as storage X from element `begin` (nullptr stays nullptr: an unused operand).
template <typename X>
inline X* bf16_operand(const Bf16Call& call, int32_t k, int j, int64_t begin) {
  return operand_as<X>(call.tensors, k, j, begin);
}

}  // namespace fastopt::cpu::FASTOPT_ISA_NS
