#include "python/bf16_call.h"

#include <string>

#include "common/rule_checks.h"
#include "cpu/kernel_table.h"
#include "python/fast_call.h"
#include "python/hyper_checks.h"
#include "python/protocol_values.h"
#include "python/torch_versions.h"

namespace fastopt::bindings {

namespace {

std::string label(const ArrayArg& arg, size_t i) { return std::string(arg.name) + "[" + std::to_string(i) + "]"; }

bool is_bf16(const ArrayRef& a) { return a.dtype == DType::BFloat16; }
bool is_f32_or_bf16(const ArrayRef& a) { return a.dtype == DType::Float32 || is_bf16(a); }

[[noreturn]] void cpu_only(const ArrayRef& a, const std::string& where) {
  throw py::value_error(where + " is on " + device_str(a.device) + ": bfloat16 optimizer state, bfloat16 "
                        "parameters on the CPU path and stochastic_rounding are implemented on the CPU only for "
                        "now (CUDA takes bfloat16 params with float32 state, without stochastic_rounding)");
}

// The dtype every array of `arg` has (the first one's), or a TypeError naming the first that differs.
bool one_form(const ArrayArg& arg) {
  const bool bf16 = !arg.arrays.empty() && is_bf16(arg.arrays[0]);
  for (size_t i = 0; i < arg.arrays.size(); ++i) {
    const ArrayRef& a = arg.arrays[i];
    if (!is_f32_or_bf16(a)) {
      throw py::type_error(label(arg, i) + " has dtype " + a.dtype_name() + "; with bfloat16 storage on the CPU, " +
                           arg.name + " must be float32 or bfloat16 (ml_dtypes.bfloat16 or torch.bfloat16)");
    }
    if (is_bf16(a) != bf16) {
      throw py::type_error(label(arg, i) + " has dtype " + a.dtype_name() + " but " + label(arg, 0) + " has " +
                           arg.arrays[0].dtype_name() + "; every array of one argument has one form per call");
    }
  }
  return bf16;
}

}  // namespace

namespace {

bool any_bf16(const std::vector<const ArrayArg*>& args) {
  for (const ArrayArg* arg : args) {
    if (arg == nullptr) continue;  // (an operand not in use)
    for (const ArrayRef& a : arg->arrays) {
      if (is_bf16(a)) return true;
    }
  }
  return false;
}

}  // namespace

bool bfloat16_call(const std::vector<const ArrayArg*>& state, bool stochastic_rounding) {
  return stochastic_rounding || any_bf16(state);
}

bool bfloat16_params_on_cpu(const ArrayArg& params) {
  for (const ArrayRef& a : params.arrays) {
    if (is_bf16(a) && a.device.kind == DeviceKind::CPU) return true;
  }
  return false;
}

uint64_t seed_arg(py::handle obj) {
  if (PyFloat_Check(obj.ptr()) || PyBool_Check(obj.ptr()) || !PyIndex_Check(obj.ptr())) {
    throw py::type_error("seed must be an int, got " + type_name(obj));
  }
  py::object index = py::reinterpret_steal<py::object>(PyNumber_Index(obj.ptr()));
  if (!index) throw py::error_already_set();
  const unsigned long long value = PyLong_AsUnsignedLongLong(index.ptr());
  if (value == static_cast<unsigned long long>(-1) && PyErr_Occurred()) {
    PyErr_Clear();
    throw py::value_error("seed must be an int with 0 <= seed < 2**64, got " + py::repr(index).cast<std::string>());
  }
  return uint64_t(value);
}

bool run_bf16(const ArrayArg& params, const ArrayArg& grads, const std::vector<const ArrayArg*>& slots,
              bool stochastic_rounding, uint64_t seed, uint64_t step, bool skip_now,
              const std::function<void()>& check_hyper, const std::function<bool(const cpu::Bf16Call&)>& kernel) {
  const size_t n = params.arrays.size();
  // the state operands in use (slots keeps each one's operand position for the kernel)
  std::vector<const ArrayArg*> state;
  for (const ArrayArg* arg : slots) {
    if (arg != nullptr) state.push_back(arg);
  }
  std::vector<const ArrayArg*> others{&grads};
  others.insert(others.end(), state.begin(), state.end());
  // The device first: nothing of this runs on CUDA yet.
  for (const ArrayArg* arg : std::vector<const ArrayArg*>{&params, &grads}) {
    for (size_t i = 0; i < arg->arrays.size(); ++i) {
      if (arg->arrays[i].device.kind != DeviceKind::CPU) cpu_only(arg->arrays[i], label(*arg, i));
    }
  }
  for (const ArrayArg* arg : state) {
    for (size_t i = 0; i < arg->arrays.size(); ++i) {
      if (arg->arrays[i].device.kind != DeviceKind::CPU) cpu_only(arg->arrays[i], label(*arg, i));
    }
  }
  // stochastic_rounding with nothing bfloat16 at all (float64 params included): named as what is wrong.
  if (stochastic_rounding && n > 0 && !any_bf16({&params}) && !any_bf16(state)) {
    throw py::value_error("stochastic_rounding=True, but nothing this call writes is bfloat16 (params are " +
                          params.arrays[0].dtype_name() + "): it rounds bfloat16 values only");
  }
  // Forms: params (and grads) float32 or bfloat16; the state operands one form, shared by all of them.
  for (size_t i = 0; i < n; ++i) {
    const ArrayRef& p = params.arrays[i];
    if (p.dtype == DType::Float64 && !state.empty() && !state[0]->arrays.empty() && is_bf16(state[0]->arrays[0])) {
      throw py::type_error(label(params, i) + " has dtype float64; bfloat16 optimizer state goes with float32 or "
                           "bfloat16 params");
    }
  }
  const bool param_bf16 = one_form(params);
  for (const ArrayArg* other : others) {
    if (other->arrays.size() != n) {
      throw py::value_error(std::string(other->name) + " holds " + std::to_string(other->arrays.size()) +
                            " arrays but params holds " + std::to_string(n));
    }
  }
  if (one_form(grads) != param_bf16 && n > 0) {
    throw py::type_error(label(grads, 0) + " has dtype " + grads.arrays[0].dtype_name() + " but " + label(params, 0) +
                         " has " + params.arrays[0].dtype_name() + "; grads have the params' dtype");
  }
  bool state_bf16 = false;
  for (size_t j = 0; j < state.size(); ++j) {
    const bool bf16 = one_form(*state[j]);
    if (j == 0) {
      state_bf16 = bf16;
    } else if (bf16 != state_bf16 && n > 0) {
      throw py::type_error(label(*state[j], 0) + " has dtype " + state[j]->arrays[0].dtype_name() + " but " +
                           label(*state[0], 0) + " has " + state[0]->arrays[0].dtype_name() +
                           "; the optimizer state of one call has one dtype");
    }
  }
  for (const ArrayArg* other : others) {
    for (size_t i = 0; i < n; ++i) {
      const ArrayRef& a = other->arrays[i];
      if (!same_shape(a, params.arrays[i])) {
        throw py::value_error(label(*other, i) + " has shape " + shape_str(a) + " but " + label(params, i) +
                              " has shape " + shape_str(params.arrays[i]));
      }
      check_layout(a, label(*other, i), other->written);
    }
  }
  for (size_t i = 0; i < n; ++i) check_layout(params.arrays[i], label(params, i), true);
  check_disjoint(params, others);
  if (stochastic_rounding && n > 0 && !param_bf16 && !state_bf16) {
    throw py::value_error("stochastic_rounding=True, but nothing this call writes is bfloat16 (params and state are " +
                          params.arrays[0].dtype_name() + "): it rounds bfloat16 values only");
  }
  check_hyper();
  if (skip_now || n == 0) return skip_now;
  mark_written(params, state);

  cpu::Bf16Call call;
  call.param_bf16 = param_bf16;
  call.state_bf16 = state_bf16;
  call.stochastic_rounding = stochastic_rounding;
  call.seed = seed;
  call.step = step;
  call.tensors.ptrs.reserve(n);
  call.tensors.sizes.reserve(n);
  for (size_t i = 0; i < n; ++i) {
    std::array<void*, 5> operands{params.arrays[i].data, grads.arrays[i].data, nullptr, nullptr, nullptr};
    for (size_t j = 0; j < slots.size(); ++j) operands[j + 2] = slots[j] ? slots[j]->arrays[i].data : nullptr;
    call.tensors.add(operands, params.arrays[i].size);
  }
  py::gil_scoped_release no_gil;
  return kernel(call);
}

}  // namespace fastopt::bindings
