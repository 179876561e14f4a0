// The optimizer calls of backend.h, written once over a Runner that either launches the kernels
// (gpu_runner.cuh, for optim_*.cu) or runs the same chunk bodies on the host, thread by thread
// (tests/gpu/cuda_host/simulate.cu), so that the dispatch (dtypes, flags, constants, the skip path)
// is the same code in both.
//
// Every call: check the list and the dtypes (before anything is queued), compute the constants on
// the host (the device recomputes them when lr / step are device values), then queue:
//   without skip_nonfinite:  the update launches; return false without waiting.
//   with skip_nonfinite:     the pre-pass (a flag raised by any non-finite unscaled gradient), the
//                            update launches (each block returns at once when the flag is set), then
//                            wait for the stream to read the flag: found_inf. Refused while the
//                            stream is being captured (the host cannot wait inside a capture).
//
// Device values (DeviceHyper: lr, step, grad_scale, found_inf) go into the kernel arguments as
// pointers; the kernels read them when they run (device_scalars.cuh), so none of them makes the host
// wait.
//
// A Runner provides:
//   bool capturing()                                   the stream is being captured
//   Runner::Flag(runner), .get() -> long long*, .read() -> bool (waits)
//   updates<Op, T, S>(list, op, found_inf, name)       the update launches
//   probe<T>(list, grad_operand, scale, found)         the pre-pass launches (scale: GradScaleSource)
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <string>

#include "cuda/backend.h"
#include "cuda/multi_tensor.cuh"
#include "cuda/optim_ops.cuh"

namespace fastopt::cuda {

namespace detail {

template <typename T>
struct Type {
  using type = T;
};

// f(Type<T>, Type<S>) for the supported (param, state) pairs; Error for the others.
template <typename F>
bool with_dtypes(const char* name, DType param, DType state, F&& f) {
  if (param == DType::Float32 && state == DType::Float32) return f(Type<float>{}, Type<float>{});
  if (param == DType::Float64 && state == DType::Float64) return f(Type<double>{}, Type<double>{});
  if (param == DType::Float16 && state == DType::Float32) return f(Type<__half>{}, Type<float>{});
  if (param == DType::BFloat16 && state == DType::Float32) return f(Type<__nv_bfloat16>{}, Type<float>{});
  throw Error(std::string(name) + ": unsupported dtypes (param " + dtype_name(param) + ", state " +
              dtype_name(state) + "); supported: float32/float32, float64/float64, float16/float32, "
              "bfloat16/float32");
}

template <int N>
void check_list(const char* name, const DeviceTensorList<N>& list, unsigned used) {
  if (list.ptrs.size() != list.sizes.size()) {
    throw Error(std::string(name) + ": the tensor list has " + std::to_string(list.ptrs.size()) +
                " operand sets for " + std::to_string(list.sizes.size()) + " sizes");
  }
  const char* problem = list_problem<N>(
      list.sizes.size(), list.sizes.data(), [&](size_t k, int j) { return list.ptrs[k][j]; }, used);
  if (problem != nullptr) throw Error(std::string(name) + ": " + problem);
}

template <int N>
bool has_elements(const DeviceTensorList<N>& list) {
  for (int64_t n : list.sizes) {
    if (n > 0) return true;
  }
  return false;
}

inline NumberRef device_number(const char* name, const char* what, const DeviceScalar& scalar, bool integer_ok) {
  const DType t = scalar.dtype;
  const bool float_ok = t == DType::Float32 || t == DType::Float64;
  if (!float_ok && !(integer_ok && (t == DType::Int32 || t == DType::Int64))) {
    throw Error(std::string(name) + ": a device " + what + " must be " +
                (integer_ok ? "int32, int64, float32 or float64" : "float32 or float64") + ", not " + dtype_name(t));
  }
  return NumberRef{scalar.ptr, t};
}

inline DeviceValues device_values(const char* name, const DeviceHyper& dh, bool uses_step) {
  DeviceValues v;
  if (dh.lr) v.lr = device_number(name, "lr", dh.lr, false);
  if (dh.step && uses_step) v.step = device_number(name, "step", dh.step, true);
  if (dh.found_inf) v.found_inf = device_number(name, "found_inf", dh.found_inf, true);
  return v;
}

inline GradScaleSource grad_scale_source(const char* name, const GradScaling& scaling, const DeviceHyper& dh) {
  GradScaleSource source;
  source.host = scaling.grad_scale;
  if (dh.grad_scale) source.device = device_number(name, "grad_scale", dh.grad_scale, false);
  return source;
}

// Fills the parts every op shares; the host computes the constants (the device recomputes them
// when it holds lr or step).
template <typename Op, typename Hyper>
void set_common(Op& op, const Hyper& hyper, const DeviceValues& device, const GradScaleSource& scale) {
  op.device = device;
  op.grad_scale = scale.host;
  op.device_grad_scale = scale.device;
  op.hyper = hyper;
  op.consts = Op::make_consts(hyper);
}

// The pre-pass (with skip_nonfinite) and the updates: the common path of the four optimizers.
template <typename Op, typename T, typename S, typename Runner, int N>
bool run_update(Runner& runner, const char* name, const DeviceTensorList<N>& list, const Op& op,
                const GradScaling& scaling) {
  if (!scaling.skip_nonfinite) {
    runner.template updates<Op, T, S>(list, op, nullptr, name);
    return false;
  }
  typename Runner::Flag found(runner);
  runner.template probe<T>(list, 1, GradScaleSource{op.grad_scale, op.device_grad_scale}, found.get());
  runner.template updates<Op, T, S>(list, op, found.get(), name);
  return found.read();
}

// The checks every optimizer call starts with; false when there is nothing to do (no elements).
template <typename Runner, int N>
bool prologue(Runner& runner, const char* name, const DeviceTensorList<N>& list, unsigned used,
              const GradScaling& scaling) {
  with_dtypes(name, list.param, list.state, [](auto, auto) { return true; });
  check_list(name, list, used);
  if (scaling.skip_nonfinite && runner.capturing()) {
    throw Error(std::string(name) + ": skip_nonfinite cannot be used while the stream is being captured into a "
                "CUDA graph (found_inf is read back on the host, which waits for the stream); check the "
                "gradients with a separate call outside the capture, or capture without skip_nonfinite");
  }
  return has_elements(list);
}

}  // namespace detail

template <typename Runner>
bool run_sgd(Runner& runner, const DeviceTensorList<3>& list, const SgdHyper& hyper, const DeviceHyper& device_hyper) {
  using namespace detail;
  const char* name = "sgd";
  const bool momentum = hyper.momentum != 0.0;
  if (!prologue(runner, name, list, momentum ? 0b111u : 0b011u, hyper.scaling)) return false;
  const DeviceValues device = device_values(name, device_hyper, true);
  const GradScaleSource scale = grad_scale_source(name, hyper.scaling, device_hyper);
  return with_dtypes(name, list.param, list.state, [&](auto t, auto s) {
    using T = typename decltype(t)::type;
    using S = typename decltype(s)::type;
    using M = MathOf<T>;
    auto run = [&](auto op) {
      set_common(op, hyper, device, scale);
      op.nesterov = momentum && hyper.nesterov;
      return run_update<decltype(op), T, S>(runner, name, list, op, hyper.scaling);
    };
    return momentum ? run(SgdOp<M, true>{}) : run(SgdOp<M, false>{});
  });
}

template <typename Runner>
bool run_adagrad(Runner& runner, const DeviceTensorList<3>& list, const AdagradHyper& hyper,
                 const DeviceHyper& device_hyper) {
  using namespace detail;
  const char* name = "adagrad";
  if (!prologue(runner, name, list, 0b111u, hyper.scaling)) return false;
  const DeviceValues device = device_values(name, device_hyper, true);
  const GradScaleSource scale = grad_scale_source(name, hyper.scaling, device_hyper);
  return with_dtypes(name, list.param, list.state, [&](auto t, auto s) {
    using T = typename decltype(t)::type;
    using S = typename decltype(s)::type;
    AdagradOp<MathOf<T>> op;
    set_common(op, hyper, device, scale);
    return run_update<decltype(op), T, S>(runner, name, list, op, hyper.scaling);
  });
}

template <typename Runner>
bool run_rmsprop(Runner& runner, const DeviceTensorList<5>& list, const RmspropHyper& hyper,
                 const DeviceHyper& device_hyper) {
  using namespace detail;
  const char* name = "rmsprop";
  const bool centered = hyper.centered;
  const bool momentum = hyper.momentum > 0.0;
  const unsigned used = 0b00111u | (momentum ? 0b01000u : 0u) | (centered ? 0b10000u : 0u);
  if (!prologue(runner, name, list, used, hyper.scaling)) return false;
  const DeviceValues device = device_values(name, device_hyper, false);  // RMSprop has no step
  const GradScaleSource scale = grad_scale_source(name, hyper.scaling, device_hyper);
  return with_dtypes(name, list.param, list.state, [&](auto t, auto s) {
    using T = typename decltype(t)::type;
    using S = typename decltype(s)::type;
    using M = MathOf<T>;
    auto run = [&](auto op) {
      set_common(op, hyper, device, scale);
      return run_update<decltype(op), T, S>(runner, name, list, op, hyper.scaling);
    };
    if (centered) return momentum ? run(RmspropOp<M, true, true>{}) : run(RmspropOp<M, true, false>{});
    return momentum ? run(RmspropOp<M, false, true>{}) : run(RmspropOp<M, false, false>{});
  });
}

template <typename Runner>
bool run_adam(Runner& runner, const DeviceTensorList<5>& list, const AdamHyper& hyper,
              const DeviceHyper& device_hyper) {
  using namespace detail;
  const char* name = hyper.decoupled ? "adamw" : "adam";
  if (!prologue(runner, name, list, hyper.amsgrad ? 0b11111u : 0b01111u, hyper.scaling)) return false;
  const DeviceValues device = device_values(name, device_hyper, true);
  const GradScaleSource scale = grad_scale_source(name, hyper.scaling, device_hyper);
  return with_dtypes(name, list.param, list.state, [&](auto t, auto s) {
    using T = typename decltype(t)::type;
    using S = typename decltype(s)::type;
    using M = MathOf<T>;
    auto run = [&](auto op) {
      set_common(op, hyper, device, scale);
      op.decoupled = adam_decoupled_form(hyper);
      return run_update<decltype(op), T, S>(runner, name, list, op, hyper.scaling);
    };
    return hyper.amsgrad ? run(AdamOp<M, true>{}) : run(AdamOp<M, false>{});
  });
}

// found_inf alone over {unused, grad}: only the gradients' dtype matters (list.state is ignored).
template <typename Runner>
bool run_nonfinite(Runner& runner, const DeviceTensorList<2>& list, double grad_scale) {
  using namespace detail;
  const char* name = "nonfinite";
  const DType state = is_half(list.param) ? DType::Float32 : list.param;
  with_dtypes(name, list.param, state, [](auto, auto) { return true; });
  check_list(name, list, 0b10u);
  if (runner.capturing()) {
    throw Error("nonfinite: cannot run while the stream is being captured into a CUDA graph (found_inf is read "
                "back on the host, which waits for the stream)");
  }
  if (!has_elements(list)) return false;
  return with_dtypes(name, list.param, state, [&](auto t, auto) {
    using T = typename decltype(t)::type;
    typename Runner::Flag found(runner);
    runner.template probe<T>(list, 1, GradScaleSource{grad_scale, {}}, found.get());
    return found.read();
  });
}

}  // namespace fastopt::cuda
