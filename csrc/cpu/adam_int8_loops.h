// Adam/AdamW over 8-bit blockwise state (the block helpers: quant8_blocks.h). One pass
// per block of kQuantBlock elements, in a stack buffer: read back the block's state (map[code] * absmax),
// the float32 rule adam_update (fastopt/adam.h: the float32 kernel's code, so the values between read and
// write are its values bit for bit), the block's new absmax, the nearest codes. Blocks are independent,
// so threads take whole blocks and every thread count and instruction set writes the same bits.
//
// Included only by kernels_for_isa.cpp, inside the instruction set's namespace, after optim_loops.h.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "cpu/adam_int8_call.h"
#include "cpu/optim_loops.h"
#include "cpu/quant8_blocks.h"
#include "fastopt/quant8.h"

namespace fastopt::cpu::FASTOPT_ISA_NS {

template <bool AMSGRAD, bool DECOUPLED, bool SCALED>
inline void adam_int8_block(const Int8AdamTensor& t, int64_t block, const Int8AdamCall& call, float gs,
                            const AdamScalars<float>& s) {
  const int64_t begin = block * kQuantBlock, n = std::min(kQuantBlock, t.size - begin);
  float m[kQuantBlock], v[kQuantBlock], vmax[kQuantBlock];
  dequantise_block(t.exp_avg.codes + begin, n, call.signed_map, t.exp_avg.absmax[block], m);
  dequantise_block(t.exp_avg_sq.codes + begin, n, call.unsigned_map, t.exp_avg_sq.absmax[block], v);
  if constexpr (AMSGRAD) {
    dequantise_block(t.max_exp_avg_sq.codes + begin, n, call.unsigned_map, t.max_exp_avg_sq.absmax[block], vmax);
  }
  float* __restrict p = t.param + begin;
  const float* __restrict g = t.grad + begin;
  for (int64_t j = 0; j < n; ++j) {
    float pj = p[j], mj = m[j], vj = v[j], vmaxj = AMSGRAD ? vmax[j] : 0.0f;
    adam_update<AMSGRAD, DECOUPLED>(pj, unscale_grad<SCALED>(g[j], gs), mj, vj, vmaxj, s);
    p[j] = pj;
    m[j] = mj;
    v[j] = vj;
    if constexpr (AMSGRAD) vmax[j] = vmaxj;
  }
  t.exp_avg.absmax[block] = quantise_block(m, n, call.signed_map, t.exp_avg.codes + begin);
  t.exp_avg_sq.absmax[block] = quantise_block(v, n, call.unsigned_map, t.exp_avg_sq.codes + begin);
  if constexpr (AMSGRAD) {
    t.max_exp_avg_sq.absmax[block] = quantise_block(vmax, n, call.unsigned_map, t.max_exp_avg_sq.codes + begin);
  }
}

// The table's entry. Returns found_inf (skip_nonfinite found a NaN/Inf gradient: nothing written).
inline bool adam_int8(const Int8AdamCall& call, const AdamHyper& hyper) {
  const float scale = float(hyper.scaling.grad_scale);
  const bool scaled = hyper.scaling.grad_scale != 1.0;
  const bool threads = int8_call_threads(call.tensors);
  if (hyper.scaling.skip_nonfinite && any_nonfinite_grad_int8(call.tensors, scale, scaled)) return true;
  const AdamScalars<float> s = adam_scalars<float>(hyper);
  with_flags(
      [&](auto AMSGRAD, auto DECOUPLED, auto SCALED) {
        for_each_quant_block(call.tensors, threads, [&](size_t k, int64_t b) {
          adam_int8_block<AMSGRAD.value, DECOUPLED.value, SCALED.value>(call.tensors[k], b, call, scale, s);
        });
      },
      hyper.amsgrad, adam_decoupled_form(hyper), scaled);
  return false;
}

}  // namespace fastopt::cpu::FASTOPT_ISA_NS
