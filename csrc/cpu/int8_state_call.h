// The arguments of an SGD, Adagrad or RMSprop update with 8-bit blockwise state on the CPU
// (int8_state_loops.h, fastopt/quant8.h; Adam's own: adam_int8_call.h): float32 params and grads, and
// each state operand as uint8 codes plus one float32 absmax per block of kQuantBlock elements, read back
// and written with its operand's map.
#pragma once

#include <cstdint>
#include <vector>

#include "cpu/adam_int8_call.h"
#include "fastopt/quant8.h"

namespace fastopt::cpu {

// State operands in the order of optim_loops.h: SGD 0 momentum buffer; Adagrad 0 sum; RMSprop
// 0 square_avg, 1 momentum buffer, 2 grad_avg. An operand not in use has null pointers.
constexpr int kInt8StateSlots = 3;

struct Int8StateTensor {
  float* param = nullptr;
  const float* grad = nullptr;
  Int8State state[kInt8StateSlots];
  int64_t size = 0;
};

struct Int8StateCall {
  // each operand's map: the signed one for values of either sign (momentum buffers, grad_avgs), the
  // signed or unsigned one for sums of squares (the caller's choice, checked by the binding)
  Quant8Map maps[kInt8StateSlots];
  std::vector<Int8StateTensor> tensors;
};

}  // namespace fastopt::cpu
