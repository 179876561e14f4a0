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

#include "cpu/bf16_elements.h"

namespace fastopt::cpu::FASTOPT_ISA_NS {

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

template <typename P, typename S>
bool adam_bf16_typed(const Bf16Call& call, const AdamHyper& hyper) {
  const float scale = float(hyper.scaling.grad_scale);
  const bool scaled = hyper.scaling.grad_scale != 1.0;
  if (hyper.scaling.skip_nonfinite && any_nonfinite_grad_bf16<P>(call, scale, scaled)) return true;
  const AdamScalars<float> s = adam_scalars<float>(hyper);
  const std::vector<int64_t> heads = bf16_chunk_heads<P>(call);
  with_flags(
      [&](auto AMSGRAD, auto DECOUPLED, auto SCALED, auto SR) {
        for_each_chunk(call.tensors.sizes, [&](int32_t k, int64_t begin, int64_t end) {
          const auto& ptrs = call.tensors.ptrs[size_t(k)];
          uint64_t keys[4];
          rounding_keys<SR.value>(call, k, keys);
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
inline bool adam_bf16(const Bf16Call& call, const AdamHyper& hyper) {
  return with_bf16_storage(call, [&](auto p, auto s) {
    return adam_bf16_typed<decltype(p), decltype(s)>(call, hyper);
  });
}

}  // namespace fastopt::cpu::FASTOPT_ISA_NS
