// Adam/AdamW calls with bfloat16 storage on the CPU (issue 18): bfloat16 params+grads, bfloat16
// state (exp_avgs, exp_avg_sqs, max_exp_avg_sqs), or both, and stochastic rounding of what is
// written in bfloat16. optim_bindings.cpp's adam_ hands a call here when bfloat16_call() says so.
#pragma once

#include <pybind11/pybind11.h>

#include <cstdint>

#include "fastopt/adam.h"
#include "python/array_intake.h"

namespace fastopt::bindings {

// True when the call goes the bfloat16 way: a state array is bfloat16, or stochastic rounding is asked
// for. (bfloat16 or float16 params with float32 state and round-to-nearest take the common path:
// update_call.h's run_update, on the CPU's half kernels or on CUDA.)
bool bfloat16_call(const std::vector<const ArrayArg*>& state, bool stochastic_rounding);

// Checks everything (dtypes and forms, shapes, layout, disjoint memory, the CPU, the float32 range),
// then runs the update with the GIL released. Returns found_inf (true also when skip_now).
bool run_adam_bf16(const AdamHyper& hyper, const ArrayArg& params, const ArrayArg& grads,
                   const std::vector<const ArrayArg*>& state, bool stochastic_rounding, uint64_t seed,
                   bool skip_now);

// seed=: an int, 0 <= seed < 2**64 (TypeError / ValueError naming seed).
uint64_t seed_arg(py::handle obj);

}  // namespace fastopt::bindings
