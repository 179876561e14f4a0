// SGD, Adagrad and RMSprop over 8-bit blockwise state (issue 18; Adam's: adam_int8_loops.h). One pass
// per block of kQuantBlock elements, in stack buffers: read back each state operand the update reads
// (map[code] * absmax), run the float32 kernel's own element loop over the block (optim_loops.h's
// sgd_elements, adagrad_elements, rmsprop_elements: so the values between read and write are the float32
// kernel's bit for bit), then quantise each operand written (quant8_blocks.h). Blocks are independent:
// every thread count and instruction set writes the same bits.
//
// Included only by kernels_for_isa.cpp, inside the instruction set's namespace, after optim_loops.h.
#pragma once

#include <algorithm>
#include <cstdint>

#include "cpu/int8_state_call.h"
#include "cpu/optim_loops.h"
#include "cpu/quant8_blocks.h"

namespace fastopt::cpu::FASTOPT_ISA_NS {

// Block `block` of tensor t: operands whose bit is set in `read` read back, then
// loop(n, param, grad, state0, state1, state2) over the block, then the operands in `written`
// quantised. (SGD's first momentum step writes its buffer without reading it.)
template <typename Loop>
inline void int8_state_block(const Int8StateTensor& t, int64_t block, const Int8StateCall& call, unsigned read,
                             unsigned written, Loop&& loop) {
  const int64_t begin = block * kQuantBlock, n = std::min(kQuantBlock, t.size - begin);
  float state[kInt8StateSlots][kQuantBlock];
  for (int j = 0; j < kInt8StateSlots; ++j) {
    if (read & (1u << j)) {
      dequantise_block(t.state[j].codes + begin, n, call.maps[j], t.state[j].absmax[block], state[j]);
    }
  }
  loop(n, t.param + begin, t.grad + begin, state[0], state[1], state[2]);
  for (int j = 0; j < kInt8StateSlots; ++j) {
    if (written & (1u << j)) {
      t.state[j].absmax[block] = quantise_block(state[j], n, call.maps[j], t.state[j].codes + begin);
    }
  }
}

// The update over every block of the call (after the found_inf pre-pass). Returns found_inf.
template <typename Hyper, typename Run>
inline bool int8_state_update(const Int8StateCall& call, const Hyper& hyper, Run&& run) {
  const float scale = float(hyper.scaling.grad_scale);
  const bool scaled = hyper.scaling.grad_scale != 1.0;
  const bool threads = int8_call_threads(call.tensors);
  if (hyper.scaling.skip_nonfinite && any_nonfinite_grad_int8(call.tensors, scale, scaled)) return true;
  run(scale, scaled, threads);
  return false;
}

// The table's entries. Return found_inf. (SGD without momentum keeps no state: the binding never sends it here.)
inline bool sgd_int8(const Int8StateCall& call, const SgdHyper& hyper) {
  return int8_state_update(call, hyper, [&](float scale, bool scaled, bool threads) {
    const SgdScalars<float> s = sgd_scalars<float>(hyper);
    const bool first = hyper.step == 1;
    with_flags(
        [&](auto NESTEROV, auto FIRST, auto L2, auto SCALED) {
          for_each_quant_block(call.tensors, threads, [&](size_t k, int64_t b) {
            int8_state_block(call.tensors[k], b, call, FIRST.value ? 0u : 1u, 1u,
                             [&](int64_t n, float* p, const float* g, float* buf, float*, float*) {
                               sgd_elements<true, NESTEROV.value, FIRST.value, L2.value, SCALED.value>(
                                   n, p, g, buf, scale, s);
                             });
          });
        },
        hyper.nesterov, first, hyper.weight_decay != 0.0, scaled);
  });
}

inline bool adagrad_int8(const Int8StateCall& call, const AdagradHyper& hyper) {
  return int8_state_update(call, hyper, [&](float scale, bool scaled, bool threads) {
    const AdagradScalars<float> s = adagrad_scalars<float>(hyper);
    with_flags(
        [&](auto L2, auto SCALED) {
          for_each_quant_block(call.tensors, threads, [&](size_t k, int64_t b) {
            int8_state_block(call.tensors[k], b, call, 1u, 1u,
                             [&](int64_t n, float* p, const float* g, float* sum, float*, float*) {
                               adagrad_elements<L2.value, SCALED.value>(n, p, g, sum, scale, s);
                             });
          });
        },
        hyper.weight_decay != 0.0, scaled);
  });
}

inline bool rmsprop_int8(const Int8StateCall& call, const RmspropHyper& hyper) {
  return int8_state_update(call, hyper, [&](float scale, bool scaled, bool threads) {
    const RmspropScalars<float> s = rmsprop_scalars<float>(hyper);
    const unsigned used = 1u | (hyper.momentum > 0.0 ? 2u : 0u) | (hyper.centered ? 4u : 0u);
    with_flags(
        [&](auto CENTERED, auto MOMENTUM, auto L2, auto SCALED) {
          for_each_quant_block(call.tensors, threads, [&](size_t k, int64_t b) {
            int8_state_block(call.tensors[k], b, call, used, used,
                             [&](int64_t n, float* p, const float* g, float* sq, float* buf, float* ga) {
                               rmsprop_elements<CENTERED.value, MOMENTUM.value, L2.value, SCALED.value>(
                                   n, p, g, sq, buf, ga, scale, s);
                             });
          });
        },
        hyper.centered, hyper.momentum > 0.0, hyper.weight_decay != 0.0, scaled);
  });
}

}  // namespace fastopt::cpu::FASTOPT_ISA_NS
