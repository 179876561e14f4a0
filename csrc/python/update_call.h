// The common path of every optimizer entry point (optim_bindings.cpp, rule_bindings.cpp): the
// optional state arguments, the scaling arguments, and run_update, which checks every array, then the
// hyperparameters against the arithmetic's range, and runs the list on its device with the GIL released.
#pragma once

#include <pybind11/pybind11.h>

#include <array>
#include <optional>
#include <string>

#include "common/rule_checks.h"
#include "cpu/kernel_table.h"
#include "cuda/backend.h"
#include "python/array_intake.h"
#include "python/device_scalar.h"
#include "python/fast_call.h"
#include "python/hyper_checks.h"
#include "python/torch_versions.h"

namespace fastopt::bindings {

namespace py = pybind11;

// An optional state argument: required when `needed`, ignored (and not validated) otherwise.
inline std::optional<ArrayArg> take_state(py::handle obj, const char* name, bool needed, const char* why,
                                   CallDevice& call) {
  if (!needed) return std::nullopt;
  if (obj.is_none()) {
    throw py::value_error(std::string(name) + " is required when " + why);
  }
  return take_arrays(obj, name, true, call);
}

inline const ArrayArg* ptr(const std::optional<ArrayArg>& arg) { return arg ? &*arg : nullptr; }

// The active instruction set's kernels for the list's element type.
template <typename T, int N>
const cpu::TypedKernels<T>& kernels_for(const cpu::TensorList<T, N>&) {
  return cpu::kernels().of<T>();
}

// A CPU list of float16 or bfloat16 params and grads with float32 state (the classic four only).
template <int N>
struct HalfTensorList : cpu::TensorList<void, N> {
  DType param = DType::Float16;
};

template <int N>
const cpu::HalfKernels& kernels_for(const HalfTensorList<N>& list) {
  return cpu::kernels().half(list.param);
}

// grad_scale and skip_nonfinite, read and checked like the other hyperparameters.
inline GradScaling take_scaling(double grad_scale, bool skip_nonfinite) {
  require_positive("grad_scale", grad_scale);
  return GradScaling{grad_scale, skip_nonfinite};
}

// Fills a pointer list (CPU or CUDA: anything with add(operands, size)) with the call's arrays as X*:
// params[i] first, then each other argument's i-th array (nullptr for an absent argument).
template <typename X, typename List, size_t M>
void fill_list(List& list, const ArrayArg& params, const std::array<const ArrayArg*, M>& others) {
  const size_t count = params.arrays.size();
  list.ptrs.reserve(count);
  list.sizes.reserve(count);
  for (size_t i = 0; i < count; ++i) {
    std::array<X*, M + 1> operands;
    operands[0] = data_of<X>(&params, i);
    for (size_t j = 0; j < M; ++j) operands[j + 1] = data_of<X>(others[j], i);
    list.add(operands, params.arrays[i].size);
  }
}

// Checks all arrays, then the hyperparameters against the range of the arithmetic the params' dtype
// selects (range_check(const rules::MathRange&) -> rules::Check; range_of(hyper) for the classic
// four), bumps the versions of the torch tensors written, builds the pointer list for the call's
// device and dtype, and runs it with the GIL released: on the CPU, cpu_launch(const
// cpu::TensorList<T, N>&), and with kCpuHalf (the classic four, whose CPU kernels take them) also
// cpu_launch(const HalfTensorList<N>&) for float16/bfloat16 params; on a CUDA device,
// cuda_launch(const cuda::DeviceTensorList<N>&, const cuda::Queue&). Returns found_inf.
// A found_inf read on the host that is set (skip_now) skips the call after the checks: returns true.
template <size_t N, bool kCpuHalf = false, typename RangeCheck, typename CpuLaunch, typename CudaLaunch>
bool run_update(const ArrayArg& params, const std::array<const ArrayArg*, N - 1>& others, RangeCheck&& range_check,
                bool skip_now, const CallDevice& call, CpuLaunch&& cpu_launch, CudaLaunch&& cuda_launch) {
  std::vector<const ArrayArg*> present;
  for (const ArrayArg* a : others) {
    if (a != nullptr) present.push_back(a);
  }
  const CallTypes types = check_arrays(params, present, kCpuHalf);
  // (a call without arrays has no arithmetic and writes nothing: only the dtype-free rules apply, so it
  // is checked against the widest range, float64's; half params compute in float32)
  require(range_check(rules::math_range(params.arrays.empty() || types.param == DType::Float64)));
  if (skip_now) return true;  // (nothing written: no version bumped)
  mark_written(params, present);
  bool found_inf = false;
  if (types.device.kind == DeviceKind::CUDA) {
    cuda::DeviceTensorList<int(N)> list;
    list.param = types.param;
    list.state = types.state;
    fill_list<void>(list, params, others);
    const cuda::Queue queue{types.device.id, call.stream};
    py::gil_scoped_release no_gil;
    return cuda_launch(list, queue);
  }
  auto run = [&](auto zero) {
    using T = decltype(zero);
    cpu::TensorList<T, N> list;
    fill_list<T>(list, params, others);
    py::gil_scoped_release no_gil;
    found_inf = cpu_launch(list);
  };
  if constexpr (kCpuHalf) {
    if (is_half(types.param)) {
      HalfTensorList<int(N)> list;
      list.param = types.param;
      fill_list<void>(list, params, others);
      py::gil_scoped_release no_gil;
      return cpu_launch(list);
    }
  }
  if (types.param == DType::Float32) {
    run(float{});
  } else {
    run(double{});
  }
  return found_inf;
}

// The range check of the classic optimizers' hyperparameters (hyper_rules.h's check_range overloads).
template <typename Hyper>
auto range_of(const Hyper& hyper) {
  return [&hyper](const rules::MathRange& r) { return rules::check_range(hyper, r); };
}

inline PyObject* boolean(bool value) { return py::bool_(value).release().ptr(); }

// The last arguments of every update: grad_scale=1.0, skip_nonfinite=False, found_inf=None, stream=None
// (device_scalar.h reads the first three).
inline Scaling next_checked_scaling(BoundArgs& a) {
  Scaling s = next_scaling(a);
  if (!s.grad_scale.device) take_scaling(s.host.grad_scale, s.host.skip_nonfinite);
  return s;
}

// The part of every optimizer function's docstring about its array arguments.
inline constexpr const char* kListNote =
    "Every array argument takes one array or a list/tuple of them (one per parameter); the whole list is\n"
    "updated in one native call with the GIL released. An array is a numpy.ndarray or any object with\n"
    "__dlpack__ (PyTorch, CuPy, JAX) or __cuda_array_interface__, on the CPU or a CUDA device, taken\n"
    "without a copy; all arrays of a call sit on one device. Arrays are updated in place and must be\n"
    "C-contiguous, writeable (grads may be read-only), of one dtype (float32 or float64; on CUDA also\n"
    "float16/bfloat16 params and grads, whose optimizer state is float32, and so on the CPU for sgd_,\n"
    "adagrad_, rmsprop_, adam_ and adamw_: the math in float32, the params rounded to nearest even), of\n"
    "matching shapes, and must\n"
    "not share memory. Nothing is converted: bad input raises TypeError/ValueError naming the argument,\n"
    "before any array is written. eps, where there is one, must be > 0.\n\n"
    "On CUDA, lr (and step, where there is one) and grad_scale may be 0-d device arrays, read on the\n"
    "device when the kernel runs, so that a captured CUDA graph replays with new values and nothing waits\n"
    "for the device (a device grad_scale is used as it is, as torch's fused optimizers use GradScaler's).\n"
    "found_inf (torch's GradScaler hands it to fused optimizers): None, a number, or a one-element array;\n"
    "when it is not zero the call writes nothing. A device array is read by the kernels (the call returns\n"
    "False: the host never learns it); anything else is read on the host (the call returns True when it\n"
    "is set). stream: the CUDA stream the work\n"
    "is queued on (an int handle, or an object with .cuda_stream or .ptr); None takes the current stream\n"
    "of the arrays' framework. Nothing waits for the device, except skip_nonfinite=True, which reads\n"
    "found_inf back (the stream is synchronised, the device is not). stream is ignored for CPU arrays.\n\n"
    "grad_scale (finite, > 0): the gradients are divided by it on the fly (loss scaling; 1 divides\n"
    "nothing). skip_nonfinite=True: if any gradient / grad_scale holds a NaN or Inf, nothing at all is\n"
    "written. Returns found_inf: True when the call was skipped for that reason, else False (always\n"
    "False without skip_nonfinite).\n";

}  // namespace fastopt::bindings
