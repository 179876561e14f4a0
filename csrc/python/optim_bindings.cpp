// Python bindings of the fused optimizer updates. Each function: check the scalars, take and check
// every array, collect raw pointers, then release the GIL once and run the whole list natively.
// They are called once per training step, often on small arrays, so they use the lean calling
// convention of fast_call.h rather than pybind11's dispatcher (see there for why).
#include <pybind11/pybind11.h>

#include <array>
#include <optional>
#include <string>

#include "cpu/kernel_table.h"
#include "cuda/backend.h"
#include "python/bf16_call.h"
#include "python/int8_call.h"
#include "python/array_intake.h"
#include "python/device_scalar.h"
#include "python/fast_call.h"
#include "python/hyper_checks.h"
#include "python/torch_versions.h"
#include "python/update_call.h"

namespace fastopt::bindings {

namespace {

namespace py = pybind11;

// lr and step as the caller gave them: host numbers, or 0-d CUDA arrays read on the device
// (device_scalar.h). The host rules check placeholders for device values (lr 0, step 1): a value that
// lives on the device is not read back.
bool sgd_(py::handle params, py::handle grads, py::handle momentum_buffers, const Scalar& lr, double momentum,
          double dampening, double weight_decay, bool nesterov, bool maximize, const Scalar& step,
          bool stochastic_rounding, uint64_t seed, const Scaling& scaling, CallDevice& call) {
  const SgdHyper hyper{lr.value, momentum, dampening, weight_decay, nesterov, maximize, step.host_step(),
                       scaling.host};
  require(rules::check(hyper));
  const ArrayArg p = take_arrays(params, "params", true, call);
  const ArrayArg g = take_arrays(grads, "grads", false, call);
  if (momentum != 0.0 && quantized_state(momentum_buffers)) {  // int8_call.h: 8-bit state, CPU
    refuse_rounding_of_codes(stochastic_rounding);
    const DeviceScalars device{lr, step, scaling, call};
    return run_int8_state(
        p, g, {{momentum_buffers, "momentum_buffers", StateMap::Signed}}, device.skip_now, call,
        [&] { require(rules::check_range(hyper, rules::math_range(false))); },
        [&](const cpu::Int8StateCall& c) { return cpu::kernels().sgd_int8(c, hyper); });
  }
  const auto b = take_state(momentum_buffers, "momentum_buffers", momentum != 0.0, "momentum != 0", call);
  const DeviceScalars device{lr, step, scaling, call};
  const std::vector<const ArrayArg*> state{ptr(b)};
  if (bfloat16_call(state, stochastic_rounding)) {  // bf16_call.h: bfloat16 storage, CPU
    return run_bf16(
        p, g, state, stochastic_rounding, seed, uint64_t(hyper.step), device.skip_now,
        [&] { require(rules::check_range(hyper, rules::math_range(false))); },
        [&](const cpu::Bf16Call& c) { return cpu::kernels().sgd_bf16(c, hyper); });
  }
  return run_update<3, true>(
      p, {&g, ptr(b)}, range_of(hyper), device.skip_now, call,
      [&](const auto& list) { return kernels_for(list).sgd(list, hyper); },
      [&](const auto& list, const cuda::Queue& queue) { return cuda::sgd(list, hyper, device.hyper, queue); });
}

bool adagrad_(py::handle params, py::handle grads, py::handle state_sums, const Scalar& lr, double lr_decay,
              double weight_decay, double eps, bool maximize, const Scalar& step, bool stochastic_rounding,
              uint64_t seed, const Scaling& scaling, CallDevice& call) {
  const AdagradHyper hyper{lr.value, lr_decay, weight_decay, eps, maximize, step.host_step(), scaling.host};
  require(rules::check(hyper));
  const ArrayArg p = take_arrays(params, "params", true, call);
  const ArrayArg g = take_arrays(grads, "grads", false, call);
  if (quantized_state(state_sums)) {  // int8_call.h: 8-bit state, CPU
    refuse_rounding_of_codes(stochastic_rounding);
    const DeviceScalars device{lr, step, scaling, call};
    return run_int8_state(
        p, g, {{state_sums, "state_sums", StateMap::Either}}, device.skip_now, call,
        [&] { require(rules::check_range(hyper, rules::math_range(false))); },
        [&](const cpu::Int8StateCall& c) { return cpu::kernels().adagrad_int8(c, hyper); });
  }
  const ArrayArg s = take_arrays(state_sums, "state_sums", true, call);
  const DeviceScalars device{lr, step, scaling, call};
  if (bfloat16_call({&s}, stochastic_rounding)) {  // bf16_call.h: bfloat16 storage, CPU
    return run_bf16(
        p, g, {&s}, stochastic_rounding, seed, uint64_t(hyper.step), device.skip_now,
        [&] { require(rules::check_range(hyper, rules::math_range(false))); },
        [&](const cpu::Bf16Call& c) { return cpu::kernels().adagrad_bf16(c, hyper); });
  }
  return run_update<3, true>(
      p, {&g, &s}, range_of(hyper), device.skip_now, call,
      [&](const auto& list) { return kernels_for(list).adagrad(list, hyper); },
      [&](const auto& list, const cuda::Queue& queue) { return cuda::adagrad(list, hyper, device.hyper, queue); });
}

bool rmsprop_(py::handle params, py::handle grads, py::handle square_avgs, py::handle momentum_buffers,
              py::handle grad_avgs, const Scalar& lr, double alpha, double eps, double weight_decay,
              double momentum, bool centered, bool maximize, std::optional<int64_t> step, bool stochastic_rounding,
              uint64_t seed, const Scaling& scaling, CallDevice& call) {
  const RmspropHyper hyper{lr.value, alpha, eps, weight_decay, momentum, centered, maximize, scaling.host};
  require(rules::check(hyper));
  const ArrayArg p = take_arrays(params, "params", true, call);
  const ArrayArg g = take_arrays(grads, "grads", false, call);
  const bool with_momentum = momentum > 0.0;
  if (quantized_state(square_avgs) || (with_momentum && quantized_state(momentum_buffers)) ||
      (centered && quantized_state(grad_avgs))) {  // int8_call.h: 8-bit state, CPU
    refuse_rounding_of_codes(stochastic_rounding);
    const DeviceScalars device{lr, Scalar{}, scaling, call};
    return run_int8_state(
        p, g,
        {{square_avgs, "square_avgs", StateMap::Either},
         {momentum_buffers, with_momentum ? "momentum_buffers" : nullptr, StateMap::Signed},
         {grad_avgs, centered ? "grad_avgs" : nullptr, StateMap::Signed}},
        device.skip_now, call, [&] { require(rules::check_range(hyper, rules::math_range(false))); },
        [&](const cpu::Int8StateCall& c) { return cpu::kernels().rmsprop_int8(c, hyper); });
  }
  const ArrayArg sq = take_arrays(square_avgs, "square_avgs", true, call);
  const auto b = take_state(momentum_buffers, "momentum_buffers", momentum > 0.0, "momentum > 0", call);
  const auto ga = take_state(grad_avgs, "grad_avgs", centered, "centered=True", call);
  const DeviceScalars device{lr, Scalar{}, scaling, call};
  const std::vector<const ArrayArg*> state{&sq, ptr(b), ptr(ga)};
  if (bfloat16_call(state, stochastic_rounding)) {  // bf16_call.h: bfloat16 storage, CPU
    if (stochastic_rounding && !step) {
      throw py::type_error("rmsprop_(stochastic_rounding=True) needs step: pass step=t, the 1-based number of this "
                           "update, so that each update draws new rounding bits");
    }
    return run_bf16(
        p, g, state, stochastic_rounding, seed, uint64_t(step.value_or(1)), device.skip_now,
        [&] { require(rules::check_range(hyper, rules::math_range(false))); },
        [&](const cpu::Bf16Call& c) { return cpu::kernels().rmsprop_bf16(c, hyper); });
  }
  return run_update<5, true>(
      p, {&g, &sq, ptr(b), ptr(ga)}, range_of(hyper), device.skip_now, call,
      [&](const auto& list) { return kernels_for(list).rmsprop(list, hyper); },
      [&](const auto& list, const cuda::Queue& queue) { return cuda::rmsprop(list, hyper, device.hyper, queue); });
}

bool adam_(bool decoupled, py::handle params, py::handle grads, py::handle exp_avgs, py::handle exp_avg_sqs,
           py::handle max_exp_avg_sqs, const Scalar& lr, double beta1, double beta2, double eps,
           double weight_decay, bool amsgrad, bool maximize, const Scalar& step, bool stochastic_rounding,
           uint64_t seed, const Scaling& scaling, CallDevice& call) {
  const AdamHyper hyper{lr.value, beta1, beta2, eps, weight_decay, amsgrad, decoupled, maximize, step.host_step(),
                        scaling.host};
  require(rules::check(hyper));
  const ArrayArg p = take_arrays(params, "params", true, call);
  const ArrayArg g = take_arrays(grads, "grads", false, call);
  if (quantized_state(exp_avgs) || quantized_state(exp_avg_sqs)) {  // int8_call.h: 8-bit state, CPU
    refuse_rounding_of_codes(stochastic_rounding);
    const DeviceScalars device{lr, step, scaling, call};
    return run_adam_int8(hyper, p, g, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, device.skip_now, call);
  }
  const ArrayArg m = take_arrays(exp_avgs, "exp_avgs", true, call);
  const ArrayArg v = take_arrays(exp_avg_sqs, "exp_avg_sqs", true, call);
  const auto vmax = take_state(max_exp_avg_sqs, "max_exp_avg_sqs", amsgrad, "amsgrad=True", call);
  std::vector<const ArrayArg*> state{&m, &v};
  if (vmax) state.push_back(&*vmax);
  if (bfloat16_call(state, stochastic_rounding)) {  // bf16_call.h: bfloat16 storage, CPU
    const DeviceScalars device{lr, step, scaling, call};
    return run_bf16(
        p, g, state, stochastic_rounding, seed, uint64_t(hyper.step), device.skip_now,
        [&] { require(rules::check_range(hyper, rules::math_range(false))); },
        [&](const cpu::Bf16Call& c) { return cpu::kernels().adam_bf16(c, hyper); });
  }
  const DeviceScalars device{lr, step, scaling, call};
  return run_update<5, true>(
      p, {&g, &m, &v, ptr(vmax)}, range_of(hyper), device.skip_now, call,
      [&](const auto& list) { return kernels_for(list).adam(list, hyper); },
      [&](const auto& list, const cuda::Queue& queue) { return cuda::adam(list, hyper, device.hyper, queue); });
}

// ---------------------------------------------------------------- the Python entry points
// Each reads its arguments in the order its Signature (in bind_optimizers) declares them.

const Signature* sgd_signature = nullptr;
const Signature* adagrad_signature = nullptr;
const Signature* rmsprop_signature = nullptr;
const Signature* adam_signature = nullptr;
const Signature* adamw_signature = nullptr;

// SGD's step matters only with momentum, where step 1 starts the buffer from the gradient; there a
// default (step 1 on every call) would restart the buffer each time and give wrong numbers without a
// word, so it must be given. Without momentum it may be left out.
Scalar next_sgd_step(BoundArgs& a, double momentum) {
  if (!a.peek().is_none()) return next_step(a);
  a.next();
  if (momentum != 0.0) {
    throw py::type_error(
        "sgd_() needs step when momentum != 0: pass step=t, the 1-based number of this update (step=1 "
        "starts momentum_buffers from the gradient, as torch.optim.SGD's first step does; later steps "
        "accumulate into them)");
  }
  return Scalar{0.0, 1, {}};
}

PyObject* sgd_call(PyObject*, PyObject* const* args, Py_ssize_t nargsf, PyObject* kwnames) {
  return guarded([&] {
    BoundArgs a = sgd_signature->bind(args, size_t(nargsf), kwnames);
    const py::handle params = a.next(), grads = a.next(), buffers = a.next();
    const Scalar lr = next_lr(a);
    const double momentum = a.next_real(), dampening = a.next_real();
    const double weight_decay = a.next_real();
    const bool nesterov = a.next_bool(), maximize = a.next_bool();
    const bool step_given = !a.peek().is_none();
    const Scalar step = next_sgd_step(a, momentum);
    const bool stochastic_rounding = a.next_bool();
    const uint64_t seed = seed_arg(a.next());
    if (stochastic_rounding && !step_given) {
      throw py::type_error("sgd_(stochastic_rounding=True) needs step: pass step=t, the 1-based number of this "
                           "update, so that each update draws new rounding bits");
    }
    const Scaling scaling = next_checked_scaling(a);
    CallDevice call(a.next());
    return boolean(sgd_(params, grads, buffers, lr, momentum, dampening, weight_decay, nesterov, maximize, step,
                        stochastic_rounding, seed, scaling, call));
  });
}

PyObject* adagrad_call(PyObject*, PyObject* const* args, Py_ssize_t nargsf, PyObject* kwnames) {
  return guarded([&] {
    BoundArgs a = adagrad_signature->bind(args, size_t(nargsf), kwnames);
    const py::handle params = a.next(), grads = a.next(), sums = a.next();
    const Scalar lr = next_lr(a);
    const double lr_decay = a.next_real(), weight_decay = a.next_real();
    const double eps = a.next_real();
    const bool maximize = a.next_bool();
    const Scalar step = next_step(a);
    const bool stochastic_rounding = a.next_bool();
    const uint64_t seed = seed_arg(a.next());
    const Scaling scaling = next_checked_scaling(a);
    CallDevice call(a.next());
    return boolean(adagrad_(params, grads, sums, lr, lr_decay, weight_decay, eps, maximize, step,
                            stochastic_rounding, seed, scaling, call));
  });
}

PyObject* rmsprop_call(PyObject*, PyObject* const* args, Py_ssize_t nargsf, PyObject* kwnames) {
  return guarded([&] {
    BoundArgs a = rmsprop_signature->bind(args, size_t(nargsf), kwnames);
    const py::handle params = a.next(), grads = a.next(), square_avgs = a.next();
    const py::handle buffers = a.next(), grad_avgs = a.next();
    const Scalar lr = next_lr(a);
    const double alpha = a.next_real(), eps = a.next_real();
    const double weight_decay = a.next_real(), momentum = a.next_real();
    const bool centered = a.next_bool(), maximize = a.next_bool();
    std::optional<int64_t> step;  // (RMSprop's update has no step; stochastic rounding's bits need one)
    if (a.peek().is_none()) {
      a.next();
    } else {
      step = a.next_int();
      if (*step < 1) throw py::value_error("step must be >= 1 (the 1-based number of this update), got " +
                                           std::to_string(*step));
    }
    const bool stochastic_rounding = a.next_bool();
    const uint64_t seed = seed_arg(a.next());
    const Scaling scaling = next_checked_scaling(a);
    CallDevice call(a.next());
    return boolean(rmsprop_(params, grads, square_avgs, buffers, grad_avgs, lr, alpha, eps, weight_decay,
                            momentum, centered, maximize, step, stochastic_rounding, seed, scaling, call));
  });
}

template <bool Decoupled>
PyObject* adam_call(PyObject*, PyObject* const* args, Py_ssize_t nargsf, PyObject* kwnames) {
  return guarded([&] {
    const Signature* signature = Decoupled ? adamw_signature : adam_signature;
    BoundArgs a = signature->bind(args, size_t(nargsf), kwnames);
    const py::handle params = a.next(), grads = a.next(), exp_avgs = a.next(), exp_avg_sqs = a.next();
    const py::handle max_exp_avg_sqs = a.next();
    const Scalar lr = next_lr(a);
    const double beta1 = a.next_real(), beta2 = a.next_real(), eps = a.next_real();
    const double weight_decay = a.next_real();
    const bool amsgrad = a.next_bool(), maximize = a.next_bool();
    const Scalar step = next_step(a);
    const bool stochastic_rounding = a.next_bool();
    const uint64_t seed = seed_arg(a.next());
    const Scaling scaling = next_checked_scaling(a);
    CallDevice call(a.next());
    return boolean(adam_(Decoupled, params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, lr, beta1, beta2, eps,
                         weight_decay, amsgrad, maximize, step, stochastic_rounding, seed, scaling, call));
  });
}

// found_inf of a whole optimizer step, before any of its kernel calls (fastopt.optim): any
// grad / grad_scale NaN or Inf among arrays of any float dtype (on the CPU: float32, float64, and the
// float16/bfloat16 grads of half params, unscaled in float32 as their updates are) or of one device.
bool found_nonfinite(py::handle grads, RealObject grad_scale_obj, py::handle stream) {
  const double grad_scale = grad_scale_obj.get("grad_scale");
  require_positive("grad_scale", grad_scale);
  CallDevice call(stream);
  const ArrayArg g = take_arrays(grads, "grads", false, call);
  cpu::TensorList<float, 2> f32;
  cpu::TensorList<double, 2> f64;
  cpu::TensorList<void, 2> f16, bf16;
  cuda::DeviceTensorList<2> on_device;
  for (size_t i = 0; i < g.arrays.size(); ++i) {
    const ArrayRef& a = g.arrays[i];
    const std::string where = "grads[" + std::to_string(i) + "]";
    check_layout(a, where, false);
    if (call.on_cuda()) {
      if (!a.dtype || !is_float(*a.dtype)) float_dtype_of(a, where);  // throws
      if (i == 0) on_device.param = *a.dtype;
      if (*a.dtype != on_device.param) {
        throw py::type_error(where + " has dtype " + a.dtype_name() + " but grads[0] has " +
                             g.arrays[0].dtype_name() + "; on a CUDA device one call checks one dtype");
      }
      require(rules::positive_fits("grad_scale", grad_scale, rules::math_range(*a.dtype == DType::Float64)));
      on_device.add({nullptr, a.data}, a.size);
      continue;
    }
    const DType dtype = a.dtype && is_half(*a.dtype) ? *a.dtype : float_dtype_of(a, where);
    require(rules::positive_fits("grad_scale", grad_scale, rules::math_range(dtype == DType::Float64)));
    if (is_half(dtype)) {
      (dtype == DType::Float16 ? f16 : bf16).add({nullptr, a.data}, a.size);
    } else if (dtype == DType::Float32) {
      f32.add({nullptr, data_of<float>(&g, i)}, a.size);
    } else {
      f64.add({nullptr, data_of<double>(&g, i)}, a.size);
    }
  }
  if (call.on_cuda()) {
    const cuda::Queue queue{call.device->id, call.stream};
    py::gil_scoped_release no_gil;
    return cuda::nonfinite(on_device, grad_scale, queue);
  }
  py::gil_scoped_release no_gil;
  const cpu::KernelTable& table = cpu::kernels();
  const bool in32 = !f32.sizes.empty() && table.f32.nonfinite(f32, grad_scale);
  const bool in64 = !f64.sizes.empty() && table.f64.nonfinite(f64, grad_scale);
  const bool in16 = !f16.sizes.empty() && table.f16.nonfinite(f16, grad_scale);
  const bool in_bf16 = !bf16.sizes.empty() && table.bf16.nonfinite(bf16, grad_scale);
  return in32 || in64 || in16 || in_bf16;
}

}  // namespace

void bind_optimizers(py::module_& m) {
  m.def("_found_nonfinite", &found_nonfinite, py::arg("grads"), py::kw_only(), py::arg("grad_scale") = 1.0,
        py::arg("stream") = py::none(),
        "True when any grads[i] / grad_scale holds a NaN or Inf (the skip_nonfinite pre-pass alone;\n"
        "CPU grads may mix float32, float64, float16 and bfloat16). Used by fastopt.optim for steps of\n"
        "several kernel calls.");
  // Signatures live as long as the module (never freed; their names are interned Python strings).
  const py::object none_ = py::none();
  auto real = [](double x) { return py::float_(x); };
  const py::object no = py::bool_(false);
  using P = Signature::Param;

  const std::string kBf16StateNote =
      "On the CPU the state may also be bfloat16 (NumPy ml_dtypes.bfloat16 or torch.bfloat16 arrays; all\n"
      "state arrays of a call one dtype) with float32 or bfloat16 params: each element is widened to\n"
      "float32, updated as in the float32 kernel and rounded back to nearest-even. stochastic_rounding=True\n"
      "rounds every bfloat16 value written (state, and bfloat16 params) stochastically instead, with random\n"
      "bits from a counter-based hash of (seed, step, tensor index, element index, operand): the same bits\n"
      "for every thread count and instruction set (fastopt/bf16.h; 0 <= seed < 2**64). It needs step, and\n"
      "is a ValueError when nothing written is bfloat16.\n\n";
  auto int8_note = [](const char* which) {
    return std::string(
               "On the CPU the state may also be 8-bit: fastopt.QuantizedState entries (bitsandbytes' blockwise\n"
               "layout: uint8 codes and one float32 absmax per block of 256 elements) with float32 params, every\n"
               "state argument in use 8-bit. Each block is read back, updated as in the float32 kernel and\n"
               "quantised to the nearest codes. ") +
           which + "\n\n";
  };
  sgd_signature = new Signature("sgd_", 3,
      {P{"params", {}}, P{"grads", {}}, P{"momentum_buffers", none_}, P{"lr", {}}, P{"momentum", real(0.0)},
       P{"dampening", real(0.0)}, P{"weight_decay", real(0.0)}, P{"nesterov", no}, P{"maximize", no},
       P{"step", none_}, P{"stochastic_rounding", no}, P{"seed", py::int_(0)}, P{"grad_scale", real(1.0)},
       P{"skip_nonfinite", no}, P{"found_inf", none_}, P{"stream", none_}});
  def_fast(m, *sgd_signature, sgd_call,
           std::string("Fused SGD step (torch.optim.SGD semantics), in place.\n\n"
                       "momentum_buffers is required when momentum != 0; on step 1 it is overwritten\n"
                       "with the gradient (torch's first-step buffer), later steps accumulate into it.\n"
                       "step (the 1-based number of this update) is required when momentum != 0 and\n"
                       "unused without momentum (except by stochastic_rounding).\n\n") +
               kBf16StateNote + int8_note("momentum_buffers take the signed map (signed=True).") + kListNote);

  adagrad_signature = new Signature("adagrad_", 3,
      {P{"params", {}}, P{"grads", {}}, P{"state_sums", {}}, P{"lr", real(1e-2)}, P{"lr_decay", real(0.0)},
       P{"weight_decay", real(0.0)}, P{"eps", real(1e-10)}, P{"maximize", no}, P{"step", {}},
       P{"stochastic_rounding", no}, P{"seed", py::int_(0)}, P{"grad_scale", real(1.0)},
       P{"skip_nonfinite", no}, P{"found_inf", none_}, P{"stream", none_}});
  def_fast(m, *adagrad_signature, adagrad_call,
           std::string("Fused Adagrad step (torch.optim.Adagrad semantics), in place.\n\n"
                       "state_sums start at initial_accumulator_value; step is the 1-based number of\n"
                       "this update (it sets the decayed lr = lr / (1 + (step - 1) * lr_decay)).\n\n") +
               kBf16StateNote +
               int8_note("state_sums take either map, one per call: unsigned (fastopt.optim's choice: all\n"
                         "256 codes for values >= 0) or signed (bitsandbytes' Adagrad8bit).") +
               kListNote);

  rmsprop_signature = new Signature("rmsprop_", 5,
      {P{"params", {}}, P{"grads", {}}, P{"square_avgs", {}}, P{"momentum_buffers", none_},
       P{"grad_avgs", none_}, P{"lr", real(1e-2)}, P{"alpha", real(0.99)}, P{"eps", real(1e-8)},
       P{"weight_decay", real(0.0)}, P{"momentum", real(0.0)}, P{"centered", no}, P{"maximize", no},
       P{"step", none_}, P{"stochastic_rounding", no}, P{"seed", py::int_(0)}, P{"grad_scale", real(1.0)},
       P{"skip_nonfinite", no}, P{"found_inf", none_}, P{"stream", none_}});
  def_fast(m, *rmsprop_signature, rmsprop_call,
           std::string("Fused RMSprop step (torch.optim.RMSprop semantics), in place.\n\n"
                       "momentum_buffers is required when momentum > 0, grad_avgs when centered=True;\n"
                       "all state starts at zero. step (the 1-based number of this update) is used only\n"
                       "by stochastic_rounding, which requires it.\n\n") +
               kBf16StateNote +
               int8_note("square_avgs take either map, one per call (unsigned: fastopt.optim's choice;\n"
                         "signed: bitsandbytes' RMSprop8bit); momentum_buffers and grad_avgs the signed one.") +
               kListNote);

  auto adam_params = [&](double weight_decay) {
    return std::vector<P>{P{"params", {}}, P{"grads", {}}, P{"exp_avgs", {}}, P{"exp_avg_sqs", {}},
                          P{"max_exp_avg_sqs", none_}, P{"lr", real(1e-3)}, P{"beta1", real(0.9)},
                          P{"beta2", real(0.999)}, P{"eps", real(1e-8)}, P{"weight_decay", real(weight_decay)},
                          P{"amsgrad", no}, P{"maximize", no}, P{"step", {}}, P{"stochastic_rounding", no},
                          P{"seed", py::int_(0)}, P{"grad_scale", real(1.0)},
                          P{"skip_nonfinite", no}, P{"found_inf", none_}, P{"stream", none_}};
  };
  const std::string adam_doc_tail =
      "exp_avgs, exp_avg_sqs (and max_exp_avg_sqs, required when amsgrad=True) start at zero;\n"
      "step is the 1-based number of this update, used for the bias corrections.\n\n"
      "On the CPU the state may also be bfloat16 (NumPy ml_dtypes.bfloat16 or torch.bfloat16 arrays; all\n"
      "state arrays of a call one dtype) with float32 or bfloat16 params, and params+grads may be bfloat16\n"
      "with float32 or bfloat16 state: each element is widened to float32, updated as in the float32 kernel\n"
      "and rounded back to nearest-even. stochastic_rounding=True rounds every bfloat16 value written\n"
      "stochastically instead, with random bits from a counter-based hash of (seed, step, tensor index,\n"
      "element index, operand): the same bits for every thread count and instruction set\n"
      "(fastopt/bf16.h; 0 <= seed < 2**64). It is a ValueError when nothing written is bfloat16.\n\n";
  adam_signature = new Signature("adam_", 5, adam_params(0.0));
  def_fast(m, *adam_signature, adam_call<false>,
           "Fused Adam step (torch.optim.Adam semantics: weight_decay is L2, added to the\n"
           "gradient), in place.\n\n" + adam_doc_tail + kListNote);
  adamw_signature = new Signature("adamw_", 5, adam_params(1e-2));
  def_fast(m, *adamw_signature, adam_call<true>,
           "Fused AdamW step (torch.optim.AdamW semantics: decoupled decay\n"
           "p *= 1 - lr * weight_decay), in place.\n\n" + adam_doc_tail + kListNote);
}

}  // namespace fastopt::bindings
