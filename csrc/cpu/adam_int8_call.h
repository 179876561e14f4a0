// The arguments of an Adam/AdamW update with 8-bit blockwise state on the CPU (adam_int8_loops.h,
// fastopt/quant8.h): float32 params and grads; each state operand (exp_avg signed, exp_avg_sq and
// max_exp_avg_sq unsigned) as uint8 codes plus one float32 absmax per block of kQuantBlock elements.
#pragma once

#include <cstdint>
#include <vector>

#include "fastopt/quant8.h"

namespace fastopt::cpu {

struct Int8State {
  uint8_t* codes = nullptr;
  float* absmax = nullptr;
};

struct Int8AdamTensor {
  float* param = nullptr;
  const float* grad = nullptr;
  Int8State exp_avg, exp_avg_sq, max_exp_avg_sq;  // max_exp_avg_sq: amsgrad only
  int64_t size = 0;
};

struct Int8AdamCall {
  Quant8Map signed_map;    // first moments
  Quant8Map unsigned_map;  // second moments
  std::vector<Int8AdamTensor> tensors;
};

// One array quantised (or read back) blockwise with `map`.
struct Quant8Call {
  Quant8Map map;
  float* values = nullptr;  // read by quantise, written by dequantise
  uint8_t* codes = nullptr;
  float* absmax = nullptr;
  int64_t size = 0;
};

}  // namespace fastopt::cpu
