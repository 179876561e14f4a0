// Adam/AdamW calls with 8-bit blockwise state (fastopt.QuantizedState, issue 18) on the CPU, and the
// blockwise quantiser's own entry points. optim_bindings.cpp's adam_ hands a call here when its state
// arguments hold QuantizedState objects (quantized_state()).
#pragma once

#include <pybind11/pybind11.h>

#include "fastopt/adam.h"
#include "python/array_intake.h"

namespace fastopt::bindings {

// True when obj is a fastopt.QuantizedState, or a list/tuple whose first entry is one.
bool quantized_state(py::handle obj);

// Checks everything (forms, dtypes, shapes, block counts, layout, disjoint memory, the CPU, the float32
// range), then runs the update with the GIL released. Returns found_inf (true also when skip_now).
bool run_adam_int8(const AdamHyper& hyper, const ArrayArg& params, const ArrayArg& grads, py::handle exp_avgs,
                   py::handle exp_avg_sqs, py::handle max_exp_avg_sqs, bool skip_now, CallDevice& call);

// _register_quantized, _quantize_blockwise, _dequantize_blockwise.
void bind_quantized(py::module_& m);

}  // namespace fastopt::bindings
