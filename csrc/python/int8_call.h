// Optimizer calls with 8-bit blockwise state (fastopt.QuantizedState, issue 18) on the CPU: Adam/AdamW,
// and SGD (with momentum), Adagrad and RMSprop; and the blockwise quantiser's own entry points.
// optim_bindings.cpp's adam_, sgd_, adagrad_ and rmsprop_ hand a call here when a state argument in use
// holds QuantizedState objects (quantized_state()).
#pragma once

#include <pybind11/pybind11.h>

#include <functional>
#include <vector>

#include "cpu/int8_state_call.h"
#include "fastopt/adam.h"
#include "python/array_intake.h"

namespace fastopt::bindings {

// True when obj is a fastopt.QuantizedState, or a list/tuple whose first entry is one.
bool quantized_state(py::handle obj);

// Checks everything (forms, dtypes, shapes, block counts, layout, disjoint memory, the CPU, the float32
// range), then runs the update with the GIL released. Returns found_inf (true also when skip_now).
bool run_adam_int8(const AdamHyper& hyper, const ArrayArg& params, const ArrayArg& grads, py::handle exp_avgs,
                   py::handle exp_avg_sqs, py::handle max_exp_avg_sqs, bool skip_now, CallDevice& call);

// The map a state operand of an 8-bit SGD/Adagrad/RMSprop call takes: Signed for values of either sign
// (momentum buffers, grad_avgs); Either for sums of squares (never negative: the unsigned map spends
// all its codes on them, bitsandbytes' one-state optimizers use the signed one).
enum class StateMap { Signed, Either };

// One state operand of such a call: its argument (a QuantizedState or a list of them; None when not in
// use), its name and its map.
struct Int8Slot {
  py::handle obj;
  const char* name = nullptr;  // nullptr: the operand is not in use
  StateMap map = StateMap::Signed;
};

// SGD, Adagrad and RMSprop with 8-bit state: checks everything (as run_adam_int8; every operand in use
// a QuantizedState, one map per argument), then check_hyper (the hyperparameters' float32 range), then
// runs kernel with the GIL released. slots: the operands in kernel order (int8_state_call.h). Returns
// found_inf (true also when skip_now).
bool run_int8_state(const ArrayArg& params, const ArrayArg& grads, const std::vector<Int8Slot>& slots,
                    bool skip_now, CallDevice& call, const std::function<void()>& check_hyper,
                    const std::function<bool(const cpu::Int8StateCall&)>& kernel);

// stochastic_rounding=True over 8-bit state: a ValueError (the codes are the nearest ones; there is no
// bfloat16 value to round).
void refuse_rounding_of_codes(bool stochastic_rounding);

// _register_quantized, _quantize_blockwise, _dequantize_blockwise.
void bind_quantized(py::module_& m);

}  // namespace fastopt::bindings
