// Adam/AdamW over bfloat16 storage (params+grads, state, or both): one pass per element, in registers.
// Each element is loaded and widened to float32 (exact), updated by the float32 rule adam_update
// (fastopt/adam.h, the same code as the float32 kernel, so the float32 values between load and store
// are the float32 kernel's bit for bit), and each bfloat16 operand is rounded back (fastopt/bf16.h):
// round-to-nearest-even, or stochastically with bits that depend only on (seed, step, tensor, operand,
// element), so every thread count and instruction set writes the same bits.
//
// Included only by kernels_for_isa.cpp, inside the instruction set's namespace, after optim_loops.h.
#pragma once

#include <cstdint>
#include <type_traits>

#include "cpu/adam_bf16_call.h"
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

// Elements [0, n) of one chunk, whose first element is element `first` of its tensor. keys[j]: the
// rounding key of operand j (0 params, 1 exp_avg, 2 exp_avg_sq, 3 max_exp_avg_sq).
template <bool AMSGRAD, bool DECOUPLED, bool SCALED, bool SR, typename P, typename S>
inline void adam_bf16_elements(int64_t n, P* __restrict p, const P* __restrict g, S* __restrict m,
                               S* __restrict v, S* __restrict vmax, float gs, const AdamScalars<float> s,
                               uint64_t first, const uint64_t k0, const uint64_t k1, const uint64_t k2,
                               const uint64_t k3) {
  for (int64_t i = 0; i < n; ++i) {
    float pi = load_f32(p[i]), mi = load_f32(m[i]), vi = load_f32(v[i]), vmaxi = 0;
    if constexpr (AMSGRAD) vmaxi = load_f32(vmax[i]);
    adam_update<AMSGRAD, DECOUPLED>(pi, unscale_grad<SCALED>(load_f32(g[i]), gs), mi, vi, vmaxi, s);
    const uint64_t e = first + uint64_t(i);
    p[i] = store_as<SR, P>(pi, k0, e);
    m[i] = store_as<SR, S>(mi, k1, e);
    v[i] = store_as<SR, S>(vi, k2, e);
    if constexpr (AMSGRAD) vmax[i] = store_as<SR, S>(vmaxi, k3, e);
  }
}

// skip_nonfinite's pre-pass over grads of storage P: any unscaled gradient NaN or +-Inf.
template <typename P>
bool any_nonfinite_grad_bf16(const Bf16AdamCall& call, float scale, bool scaled) {
  return any_chunk(call.tensors.sizes, [&](int32_t k, int64_t begin, int64_t end) {
    const P* __restrict g = static_cast<const P*>(call.tensors.ptrs[size_t(k)][1]);
    unsigned bad = 0;
    for (int64_t i = begin; i < end; ++i) {
      const float gi = load_f32(g[i]);
      bad |= unsigned(!is_finite_(scaled ? gi / scale : gi));
    }
    return bad != 0;
  });
}

template <typename P, typename S>
bool adam_bf16_typed(const Bf16AdamCall& call, const AdamHyper& hyper) {
  const float scale = float(hyper.scaling.grad_scale);
  const bool scaled = hyper.scaling.grad_scale != 1.0;
  if (hyper.scaling.skip_nonfinite && any_nonfinite_grad_bf16<P>(call, scale, scaled)) return true;
  const AdamScalars<float> s = adam_scalars<float>(hyper);
  const uint64_t step = uint64_t(hyper.step);
  // chunk heads on the params' cache lines (parallel.h; where chunks fall changes no bit)
  std::vector<int64_t> heads;
  if (total_elements(call.tensors.sizes) >= kParallelThreshold) {
    for (const auto& ptrs : call.tensors.ptrs) heads.push_back(elements_to_alignment(static_cast<const P*>(ptrs[0])));
  }
  with_flags(
      [&](auto AMSGRAD, auto DECOUPLED, auto SCALED, auto SR) {
        for_each_chunk(call.tensors.sizes, [&](int32_t k, int64_t begin, int64_t end) {
          const auto& ptrs = call.tensors.ptrs[size_t(k)];
          uint64_t keys[4] = {0, 0, 0, 0};
          if constexpr (SR.value) {
            for (uint64_t j = 0; j < 4; ++j) keys[j] = rounding_key(call.seed, step, uint64_t(k), j);
          }
          S* vmax = AMSGRAD.value ? static_cast<S*>(ptrs[4]) + begin : nullptr;
          adam_bf16_elements<AMSGRAD.value, DECOUPLED.value, SCALED.value, SR.value>(
              end - begin, static_cast<P*>(ptrs[0]) + begin, static_cast<const P*>(ptrs[1]) + begin,
              static_cast<S*>(ptrs[2]) + begin, static_cast<S*>(ptrs[3]) + begin, vmax, scale, s,
              uint64_t(begin), keys[0], keys[1], keys[2], keys[3]);
        }, heads);
      },
      hyper.amsgrad, adam_decoupled_form(hyper), scaled, call.stochastic_rounding);
  return false;
}

// The table's entry: the storage types as template parameters. Returns found_inf.
inline bool adam_bf16(const Bf16AdamCall& call, const AdamHyper& hyper) {
  if (call.param_bf16) {
    return call.state_bf16 ? adam_bf16_typed<uint16_t, uint16_t>(call, hyper)
                           : adam_bf16_typed<uint16_t, float>(call, hyper);
  }
  return adam_bf16_typed<float, uint16_t>(call, hyper);
}

}  // namespace fastopt::cpu::FASTOPT_ISA_NS
