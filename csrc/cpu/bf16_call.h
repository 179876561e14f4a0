// The arguments of an optimizer update with bfloat16 storage on the CPU (bf16_elements.h and the loops
// that use it: Adam/AdamW's adam_bf16_loops.h, SGD/Adagrad/RMSprop's bf16_state_loops.h): the params
// (and grads) are float32 or bfloat16, the state float32 or bfloat16 (every state operand one form), and
// bfloat16 values are written to nearest-even or stochastically. bfloat16 arrays are uint16_t bit
// patterns (fastopt/bf16.h).
#pragma once

#include <cstdint>

#include "cpu/tensor_list.h"

namespace fastopt::cpu {

struct Bf16Call {
  bool param_bf16 = false;              // params and grads: bfloat16 (else float32)
  bool state_bf16 = false;              // every state operand: bfloat16 (else float32)
  bool stochastic_rounding = false;     // bfloat16 writes: stochastic (else round-to-nearest-even)
  uint64_t seed = 0;                    // stochastic rounding's seed (fastopt/bf16.h)
  uint64_t step = 0;                    // stochastic rounding's step, the caller's count of this update
  // {param, grad, state operands in the optimizer's order (optim_loops.h), unused ones nullptr}
  TensorList<void, 5> tensors;
};

}  // namespace fastopt::cpu
