// The arguments of an Adam/AdamW update with bfloat16 storage on the CPU (adam_bf16_loops.h): the
// params (and grads) are float32 or bfloat16, the state (exp_avgs, exp_avg_sqs, max_exp_avg_sqs)
// float32 or bfloat16, not both float32 (that is the plain float32 update). bfloat16 arrays are
// uint16_t bit patterns (fastopt/bf16.h).
#pragma once

#include <cstdint>

#include "cpu/tensor_list.h"

namespace fastopt::cpu {

struct Bf16AdamCall {
  bool param_bf16 = false;              // params and grads: bfloat16 (else float32)
  bool state_bf16 = false;              // every state operand: bfloat16 (else float32)
  bool stochastic_rounding = false;     // bfloat16 writes: stochastic (else round-to-nearest-even)
  uint64_t seed = 0;                    // stochastic rounding's seed (fastopt/bf16.h)
  TensorList<void, 5> tensors;          // {param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq}
};

}  // namespace fastopt::cpu
