// Optimizer calls with bfloat16 storage on the CPU (issue 18): bfloat16 params+grads, bfloat16 state
// (Adam's exp_avgs, exp_avg_sqs, max_exp_avg_sqs; SGD's momentum_buffers; Adagrad's state_sums;
// RMSprop's square_avgs, momentum_buffers, grad_avgs), or both, and stochastic rounding of what is
// written in bfloat16. optim_bindings.cpp's sgd_, adagrad_, rmsprop_ and adam_ hand a call here when
// bfloat16_call() says so.
#pragma once

#include <pybind11/pybind11.h>

#include <cstdint>
#include <functional>
#include <vector>

#include "cpu/bf16_call.h"
#include "python/array_intake.h"

namespace fastopt::bindings {

// True when the call goes the bfloat16 way: a state array is bfloat16, or stochastic rounding is asked
// for. (bfloat16 or float16 params with float32 state and round-to-nearest take the common path:
// update_call.h's run_update, on the CPU's half kernels or on CUDA.)
bool bfloat16_call(const std::vector<const ArrayArg*>& state, bool stochastic_rounding);

// True when a params array is bfloat16 on the CPU. The rules (rule_bindings.cpp) send such a call the
// bfloat16 way too: their CPU loops over bfloat16 storage are the only ones that take bfloat16 params
// (the classic four have half kernels of their own; CUDA launches take half params themselves).
bool bfloat16_params_on_cpu(const ArrayArg& params);

// Checks everything (dtypes and forms, shapes, layout, disjoint memory, the CPU; then check_hyper, the
// hyperparameters' float32 range), then runs kernel (a cpu::kernels() entry over the call) with the GIL
// released. `state` holds the state operands in kernel order (optim_loops.h), nullptr for
// one not in use (SGD without momentum, RMSprop without momentum or centering). step: the caller's count of this update, the stochastic rounding's
// step. Returns found_inf (true also when skip_now).
bool run_bf16(const ArrayArg& params, const ArrayArg& grads, const std::vector<const ArrayArg*>& state,
              bool stochastic_rounding, uint64_t seed, uint64_t step, bool skip_now,
              const std::function<void()>& check_hyper, const std::function<bool(const cpu::Bf16Call&)>& kernel);

// seed=: an int, 0 <= seed < 2**64 (TypeError / ValueError naming seed).
uint64_t seed_arg(py::handle obj);

}  // namespace fastopt::bindings
