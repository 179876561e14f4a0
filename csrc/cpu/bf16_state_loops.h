// SGD, Adagrad and RMSprop over bfloat16 storage (issue 18): bfloat16 state (SGD's momentum buffer,
// Adagrad's sum, RMSprop's square_avg, momentum buffer and grad_avg) with float32 or bfloat16 params,
// or bfloat16 params with float32 state rounded stochastically. As Adam's adam_bf16_loops.h: each element
// widened to float32, updated by the float32 rule (fastopt/sgd.h, adagrad.h, rmsprop.h: the float32
// kernel's code, so the values between load and store are its bits), each bfloat16 operand rounded back
// (bf16_elements.h). Rounding operands: 0 the params, then the state in the order of optim_loops.h
// (SGD 1 momentum buffer; Adagrad 1 sum; RMSprop 1 square_avg, 2 momentum buffer, 3 grad_avg).
//
// Included only by kernels_for_isa.cpp, inside the instruction set's namespace, after optim_loops.h.
#pragma once

#include <cstdint>

#include "cpu/bf16_elements.h"

namespace fastopt::cpu::FASTOPT_ISA_NS {

// The element loops: chunk elements [0, n), the chunk's first element being element `first` of its tensor.
template <bool MOMENTUM, bool NESTEROV, bool FIRST, bool L2, bool SCALED, bool SR, typename P, typename S>
inline void sgd_bf16_elements(int64_t n, P* __restrict p, const P* __restrict g, S* __restrict b, float gs,
                              const SgdScalars<float> s, uint64_t first, const uint64_t k0, const uint64_t k1) {
  for (int64_t i = 0; i < n; ++i) {
    float pi = load_f32(p[i]), bi = 0;
    if constexpr (MOMENTUM && !FIRST) bi = load_f32(b[i]);
    sgd_update<MOMENTUM, NESTEROV, FIRST, L2 ? kL2Decay : kNoDecay>(pi, unscale_grad<SCALED>(load_f32(g[i]), gs), bi, s);
    const uint64_t e = first + uint64_t(i);
    p[i] = store_as<SR, P>(pi, k0, e);
    if constexpr (MOMENTUM) b[i] = store_as<SR, S>(bi, k1, e);
  }
}

template <bool L2, bool SCALED, bool SR, typename P, typename S>
inline void adagrad_bf16_elements(int64_t n, P* __restrict p, const P* __restrict g, S* __restrict sum, float gs,
                                  const AdagradScalars<float> s, uint64_t first, const uint64_t k0,
                                  const uint64_t k1) {
  for (int64_t i = 0; i < n; ++i) {
    float pi = load_f32(p[i]), si = load_f32(sum[i]);
    adagrad_update<L2 ? kL2Decay : kNoDecay>(pi, unscale_grad<SCALED>(load_f32(g[i]), gs), si, s);
    const uint64_t e = first + uint64_t(i);
    p[i] = store_as<SR, P>(pi, k0, e);
    sum[i] = store_as<SR, S>(si, k1, e);
  }
}

template <bool CENTERED, bool MOMENTUM, bool L2, bool SCALED, bool SR, typename P, typename S>
inline void rmsprop_bf16_elements(int64_t n, P* __restrict p, const P* __restrict g, S* __restrict sq,
                                  S* __restrict b, S* __restrict ga, float gs, const RmspropScalars<float> s,
                                  uint64_t first, const uint64_t k0, const uint64_t k1, const uint64_t k2,
                                  const uint64_t k3) {
  for (int64_t i = 0; i < n; ++i) {
    float pi = load_f32(p[i]), sqi = load_f32(sq[i]), bi = 0, gai = 0;
    if constexpr (MOMENTUM) bi = load_f32(b[i]);
    if constexpr (CENTERED) gai = load_f32(ga[i]);
    rmsprop_update<CENTERED, MOMENTUM, L2 ? kL2Decay : kNoDecay>(pi, unscale_grad<SCALED>(load_f32(g[i]), gs), sqi,
                                                                 bi, gai, s);
    const uint64_t e = first + uint64_t(i);
    p[i] = store_as<SR, P>(pi, k0, e);
    sq[i] = store_as<SR, S>(sqi, k1, e);
    if constexpr (MOMENTUM) b[i] = store_as<SR, S>(bi, k2, e);
    if constexpr (CENTERED) ga[i] = store_as<SR, S>(gai, k3, e);
  }
}

// The updates over one call, its storage types P (params, grads) and S (state) fixed. Return found_inf.
template <typename P, typename S>
bool sgd_bf16_typed(const Bf16Call& call, const SgdHyper& hyper) {
  const float scale = float(hyper.scaling.grad_scale);
  const bool scaled = hyper.scaling.grad_scale != 1.0;
  if (hyper.scaling.skip_nonfinite && any_nonfinite_grad_bf16<P>(call, scale, scaled)) return true;
  const SgdScalars<float> s = sgd_scalars<float>(hyper);
  const bool momentum = hyper.momentum != 0.0;
  const std::vector<int64_t> heads = bf16_chunk_heads<P>(call);
  with_flags(
      [&](auto MOMENTUM, auto NESTEROV, auto FIRST, auto L2, auto SCALED, auto SR) {
        for_each_chunk(call.tensors.sizes, [&](int32_t k, int64_t begin, int64_t end) {
          uint64_t keys[4];
          rounding_keys<SR.value>(call, k, keys);
          sgd_bf16_elements<MOMENTUM.value, NESTEROV.value, FIRST.value, L2.value, SCALED.value, SR.value>(
              end - begin, bf16_operand<P>(call, k, 0, begin), bf16_operand<const P>(call, k, 1, begin),
              bf16_operand<S>(call, k, 2, begin), scale, s, uint64_t(begin), keys[0], keys[1]);
        }, heads);
      },
      momentum, momentum && hyper.nesterov, momentum && hyper.step == 1, hyper.weight_decay != 0.0, scaled,
      call.stochastic_rounding);
  return false;
}

template <typename P, typename S>
bool adagrad_bf16_typed(const Bf16Call& call, const AdagradHyper& hyper) {
  const float scale = float(hyper.scaling.grad_scale);
  const bool scaled = hyper.scaling.grad_scale != 1.0;
  if (hyper.scaling.skip_nonfinite && any_nonfinite_grad_bf16<P>(call, scale, scaled)) return true;
  const AdagradScalars<float> s = adagrad_scalars<float>(hyper);
  const std::vector<int64_t> heads = bf16_chunk_heads<P>(call);
  with_flags(
      [&](auto L2, auto SCALED, auto SR) {
        for_each_chunk(call.tensors.sizes, [&](int32_t k, int64_t begin, int64_t end) {
          uint64_t keys[4];
          rounding_keys<SR.value>(call, k, keys);
          adagrad_bf16_elements<L2.value, SCALED.value, SR.value>(
              end - begin, bf16_operand<P>(call, k, 0, begin), bf16_operand<const P>(call, k, 1, begin),
              bf16_operand<S>(call, k, 2, begin), scale, s, uint64_t(begin), keys[0], keys[1]);
        }, heads);
      },
      hyper.weight_decay != 0.0, scaled, call.stochastic_rounding);
  return false;
}

template <typename P, typename S>
bool rmsprop_bf16_typed(const Bf16Call& call, const RmspropHyper& hyper) {
  const float scale = float(hyper.scaling.grad_scale);
  const bool scaled = hyper.scaling.grad_scale != 1.0;
  if (hyper.scaling.skip_nonfinite && any_nonfinite_grad_bf16<P>(call, scale, scaled)) return true;
  const RmspropScalars<float> s = rmsprop_scalars<float>(hyper);
  const std::vector<int64_t> heads = bf16_chunk_heads<P>(call);
  with_flags(
      [&](auto CENTERED, auto MOMENTUM, auto L2, auto SCALED, auto SR) {
        for_each_chunk(call.tensors.sizes, [&](int32_t k, int64_t begin, int64_t end) {
          uint64_t keys[4];
          rounding_keys<SR.value>(call, k, keys);
          rmsprop_bf16_elements<CENTERED.value, MOMENTUM.value, L2.value, SCALED.value, SR.value>(
              end - begin, bf16_operand<P>(call, k, 0, begin), bf16_operand<const P>(call, k, 1, begin),
              bf16_operand<S>(call, k, 2, begin), bf16_operand<S>(call, k, 3, begin),
              bf16_operand<S>(call, k, 4, begin), scale, s, uint64_t(begin), keys[0], keys[1], keys[2], keys[3]);
        }, heads);
      },
      hyper.centered, hyper.momentum > 0.0, hyper.weight_decay != 0.0, scaled, call.stochastic_rounding);
  return false;
}

// The table's entries. Return found_inf.
inline bool sgd_bf16(const Bf16Call& call, const SgdHyper& hyper) {
  return with_bf16_storage(call, [&](auto p, auto s) { return sgd_bf16_typed<decltype(p), decltype(s)>(call, hyper); });
}
inline bool adagrad_bf16(const Bf16Call& call, const AdagradHyper& hyper) {
  return with_bf16_storage(call, [&](auto p, auto s) {
    return adagrad_bf16_typed<decltype(p), decltype(s)>(call, hyper);
  });
}
inline bool rmsprop_bf16(const Bf16Call& call, const RmspropHyper& hyper) {
  return with_bf16_storage(call, [&](auto p, auto s) {
    return rmsprop_bf16_typed<decltype(p), decltype(s)>(call, hyper);
  });
}

}  // namespace fastopt::cpu::FASTOPT_ISA_NS
