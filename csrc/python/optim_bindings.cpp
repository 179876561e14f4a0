// Python bindings of the fused optimizer updates. Each function: check the scalars, take and check
// every array, collect raw pointers, then release the GIL once and run the whole list natively.
// They are called once per training step, often on small arrays, so they use the lean calling
// convention of fast_call.h rather than pybind11's dispatcher (see there for why).
#include <pybind11/pybind11.h>

#include <array>
#include <optional>
#include <string>

#include "cpu/kernel_table.h"
#include "python/array_intake.h"
#include "python/fast_call.h"
#include "python/hyper_checks.h"

namespace fastopt::bindings {

namespace {

namespace py = pybind11;

// An optional state argument: required when `needed`, ignored (and not validated) otherwise.
std::optional<ArrayArg> take_state(py::handle obj, const char* name, bool needed, const char* why) {
  if (!needed) return std::nullopt;
  if (obj.is_none()) {
    throw py::value_error(std::string(name) + " is required when " + why);
  }
  return take_arrays(obj, name, true);
}

const ArrayArg* ptr(const std::optional<ArrayArg>& arg) { return arg ? &*arg : nullptr; }

// The active instruction set's kernels for the list's element type.
template <typename T, int N>
const cpu::TypedKernels<T>& kernels_for(const cpu::TensorList<T, N>&) {
  return cpu::kernels().of<T>();
}

// grad_scale and skip_nonfinite, read and checked like the other hyperparameters.
GradScaling take_scaling(double grad_scale, bool skip_nonfinite) {
  require_positive("grad_scale", grad_scale);
  return GradScaling{grad_scale, skip_nonfinite};
}

// Checks all arrays, builds the pointer list for the common dtype and calls
// launch(const cpu::TensorList<T, N>&) with the GIL released; returns its found_inf.
template <size_t N, typename Launch>
bool run_update(const ArrayArg& params, const std::array<const ArrayArg*, N - 1>& others,
                const GradScaling& scaling, Launch&& launch) {
  std::vector<const ArrayArg*> present;
  for (const ArrayArg* a : others) {
    if (a != nullptr) present.push_back(a);
  }
  const Dtype dtype = check_arrays(params, present);
  require_grad_scale_fits(scaling.grad_scale, dtype == Dtype::Float32);
  bool found_inf = false;
  auto run = [&](auto zero) {
    using T = decltype(zero);
    cpu::TensorList<T, N> list;
    const size_t count = params.arrays.size();
    list.ptrs.reserve(count);
    list.sizes.reserve(count);
    for (size_t i = 0; i < count; ++i) {
      std::array<T*, N> operands;
      operands[0] = data_of<T>(&params, i);
      for (size_t j = 0; j + 1 < N; ++j) operands[j + 1] = data_of<T>(others[j], i);
      list.add(operands, int64_t(params.arrays[i].size()));
    }
    py::gil_scoped_release no_gil;
    found_inf = launch(list);
  };
  if (dtype == Dtype::Float32) {
    run(float{});
  } else {
    run(double{});
  }
  return found_inf;
}

bool sgd_(py::handle params, py::handle grads, py::handle momentum_buffers, double lr, double momentum,
          double dampening, double weight_decay, bool nesterov, bool maximize, int64_t step,
          const GradScaling& scaling) {
  const SgdHyper hyper{lr, momentum, dampening, weight_decay, nesterov, maximize, step, scaling};
  require(rules::check(hyper));
  const ArrayArg p = take_arrays(params, "params", true);
  const ArrayArg g = take_arrays(grads, "grads", false);
  const auto b = take_state(momentum_buffers, "momentum_buffers", momentum != 0.0, "momentum != 0");
  return run_update<3>(p, {&g, ptr(b)}, scaling, [&](const auto& list) { return kernels_for(list).sgd(list, hyper); });
}

bool adagrad_(py::handle params, py::handle grads, py::handle state_sums, double lr, double lr_decay,
              double weight_decay, double eps, bool maximize, int64_t step, const GradScaling& scaling) {
  const AdagradHyper hyper{lr, lr_decay, weight_decay, eps, maximize, step, scaling};
  require(rules::check(hyper));
  const ArrayArg p = take_arrays(params, "params", true);
  const ArrayArg g = take_arrays(grads, "grads", false);
  const ArrayArg s = take_arrays(state_sums, "state_sums", true);
  return run_update<3>(p, {&g, &s}, scaling, [&](const auto& list) { return kernels_for(list).adagrad(list, hyper); });
}

bool rmsprop_(py::handle params, py::handle grads, py::handle square_avgs, py::handle momentum_buffers,
              py::handle grad_avgs, double lr, double alpha, double eps, double weight_decay,
              double momentum, bool centered, bool maximize, const GradScaling& scaling) {
  const RmspropHyper hyper{lr, alpha, eps, weight_decay, momentum, centered, maximize, scaling};
  require(rules::check(hyper));
  const ArrayArg p = take_arrays(params, "params", true);
  const ArrayArg g = take_arrays(grads, "grads", false);
  const ArrayArg sq = take_arrays(square_avgs, "square_avgs", true);
  const auto b = take_state(momentum_buffers, "momentum_buffers", momentum > 0.0, "momentum > 0");
  const auto ga = take_state(grad_avgs, "grad_avgs", centered, "centered=True");
  return run_update<5>(p, {&g, &sq, ptr(b), ptr(ga)}, scaling,
                       [&](const auto& list) { return kernels_for(list).rmsprop(list, hyper); });
}

bool adam_(bool decoupled, py::handle params, py::handle grads, py::handle exp_avgs, py::handle exp_avg_sqs,
           py::handle max_exp_avg_sqs, double lr, double beta1, double beta2, double eps, double weight_decay,
           bool amsgrad, bool maximize, int64_t step, const GradScaling& scaling) {
  const AdamHyper hyper{lr, beta1, beta2, eps, weight_decay, amsgrad, decoupled, maximize, step, scaling};
  require(rules::check(hyper));
  const ArrayArg p = take_arrays(params, "params", true);
  const ArrayArg g = take_arrays(grads, "grads", false);
  const ArrayArg m = take_arrays(exp_avgs, "exp_avgs", true);
  const ArrayArg v = take_arrays(exp_avg_sqs, "exp_avg_sqs", true);
  const auto vmax = take_state(max_exp_avg_sqs, "max_exp_avg_sqs", amsgrad, "amsgrad=True");
  return run_update<5>(p, {&g, &m, &v, ptr(vmax)}, scaling,
                       [&](const auto& list) { return kernels_for(list).adam(list, hyper); });
}

// ---------------------------------------------------------------- the Python entry points
// Each reads its arguments in the order its Signature (in bind_optimizers) declares them.

const Signature* sgd_signature = nullptr;
const Signature* adagrad_signature = nullptr;
const Signature* rmsprop_signature = nullptr;
const Signature* adam_signature = nullptr;
const Signature* adamw_signature = nullptr;

PyObject* boolean(bool value) { return py::bool_(value).release().ptr(); }

// The last two arguments of every update: grad_scale=1.0, skip_nonfinite=False.
GradScaling next_scaling(BoundArgs& a) {
  const double grad_scale = a.next_real();
  const bool skip_nonfinite = a.next_bool();
  return take_scaling(grad_scale, skip_nonfinite);
}

PyObject* sgd_call(PyObject*, PyObject* const* args, Py_ssize_t nargsf, PyObject* kwnames) {
  return guarded([&] {
    BoundArgs a = sgd_signature->bind(args, size_t(nargsf), kwnames);
    const py::handle params = a.next(), grads = a.next(), buffers = a.next();
    const double lr = a.next_real(), momentum = a.next_real(), dampening = a.next_real();
    const double weight_decay = a.next_real();
    const bool nesterov = a.next_bool(), maximize = a.next_bool();
    const int64_t step = a.next_int();
    const GradScaling scaling = next_scaling(a);
    return boolean(sgd_(params, grads, buffers, lr, momentum, dampening, weight_decay, nesterov, maximize, step,
                        scaling));
  });
}

PyObject* adagrad_call(PyObject*, PyObject* const* args, Py_ssize_t nargsf, PyObject* kwnames) {
  return guarded([&] {
    BoundArgs a = adagrad_signature->bind(args, size_t(nargsf), kwnames);
    const py::handle params = a.next(), grads = a.next(), sums = a.next();
    const double lr = a.next_real(), lr_decay = a.next_real(), weight_decay = a.next_real();
    const double eps = a.next_real();
    const bool maximize = a.next_bool();
    const int64_t step = a.next_int();
    const GradScaling scaling = next_scaling(a);
    return boolean(adagrad_(params, grads, sums, lr, lr_decay, weight_decay, eps, maximize, step, scaling));
  });
}

PyObject* rmsprop_call(PyObject*, PyObject* const* args, Py_ssize_t nargsf, PyObject* kwnames) {
  return guarded([&] {
    BoundArgs a = rmsprop_signature->bind(args, size_t(nargsf), kwnames);
    const py::handle params = a.next(), grads = a.next(), square_avgs = a.next();
    const py::handle buffers = a.next(), grad_avgs = a.next();
    const double lr = a.next_real(), alpha = a.next_real(), eps = a.next_real();
    const double weight_decay = a.next_real(), momentum = a.next_real();
    const bool centered = a.next_bool(), maximize = a.next_bool();
    const GradScaling scaling = next_scaling(a);
    return boolean(rmsprop_(params, grads, square_avgs, buffers, grad_avgs, lr, alpha, eps, weight_decay,
                            momentum, centered, maximize, scaling));
  });
}

template <bool Decoupled>
PyObject* adam_call(PyObject*, PyObject* const* args, Py_ssize_t nargsf, PyObject* kwnames) {
  return guarded([&] {
    const Signature* signature = Decoupled ? adamw_signature : adam_signature;
    BoundArgs a = signature->bind(args, size_t(nargsf), kwnames);
    const py::handle params = a.next(), grads = a.next(), exp_avgs = a.next(), exp_avg_sqs = a.next();
    const py::handle max_exp_avg_sqs = a.next();
    const double lr = a.next_real(), beta1 = a.next_real(), beta2 = a.next_real(), eps = a.next_real();
    const double weight_decay = a.next_real();
    const bool amsgrad = a.next_bool(), maximize = a.next_bool();
    const int64_t step = a.next_int();
    const GradScaling scaling = next_scaling(a);
    return boolean(adam_(Decoupled, params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, lr, beta1, beta2, eps,
                         weight_decay, amsgrad, maximize, step, scaling));
  });
}

// found_inf of a whole optimizer step, before any of its kernel calls (fastopt.optim): any
// grad / grad_scale NaN or Inf among arrays of either float dtype.
bool found_nonfinite(py::handle grads, double grad_scale) {
  require_positive("grad_scale", grad_scale);
  const ArrayArg g = take_arrays(grads, "grads", false);
  cpu::TensorList<float, 2> f32;
  cpu::TensorList<double, 2> f64;
  for (size_t i = 0; i < g.arrays.size(); ++i) {
    const py::array& a = g.arrays[i];
    const std::string where = "grads[" + std::to_string(i) + "]";
    const Dtype dtype = float_dtype_of(a, where);
    check_layout(a, where, false);
    require_grad_scale_fits(grad_scale, dtype == Dtype::Float32);
    if (dtype == Dtype::Float32) {
      f32.add({nullptr, data_of<float>(&g, i)}, int64_t(a.size()));
    } else {
      f64.add({nullptr, data_of<double>(&g, i)}, int64_t(a.size()));
    }
  }
  py::gil_scoped_release no_gil;
  const cpu::KernelTable& table = cpu::kernels();
  const bool in32 = !f32.sizes.empty() && table.f32.nonfinite(f32, grad_scale);
  const bool in64 = !f64.sizes.empty() && table.f64.nonfinite(f64, grad_scale);
  return in32 || in64;
}

constexpr const char* kListNote =
    "Every array argument takes one numpy array or a list/tuple of them (one per parameter); the whole\n"
    "list is updated in one native call with the GIL released. Arrays are updated in place and must be\n"
    "C-contiguous, writeable (grads may be read-only), of one dtype (float32 or float64), of matching\n"
    "shapes, and must not share memory. Nothing is converted: bad input raises TypeError/ValueError\n"
    "naming the argument, before any array is written. eps, where there is one, must be > 0.\n\n"
    "grad_scale (finite, > 0): the gradients are divided by it on the fly (loss scaling; 1 divides\n"
    "nothing). skip_nonfinite=True: if any gradient / grad_scale holds a NaN or Inf, nothing at all is\n"
    "written. Returns found_inf: True when the call was skipped for that reason, else False (always\n"
    "False without skip_nonfinite).\n";

}  // namespace

void bind_optimizers(py::module_& m) {
  m.def("_found_nonfinite", &found_nonfinite, py::arg("grads"), py::kw_only(), py::arg("grad_scale") = 1.0,
        "True when any grads[i] / grad_scale holds a NaN or Inf (the skip_nonfinite pre-pass alone;\n"
        "grads may mix float32 and float64). Used by fastopt.optim for steps of several kernel calls.");
  // Signatures live as long as the module (never freed; their names are interned Python strings).
  const py::object none_ = py::none();
  auto real = [](double x) { return py::float_(x); };
  const py::object no = py::bool_(false);
  using P = Signature::Param;

  sgd_signature = new Signature("sgd_", 3,
      {P{"params", {}}, P{"grads", {}}, P{"momentum_buffers", none_}, P{"lr", {}}, P{"momentum", real(0.0)},
       P{"dampening", real(0.0)}, P{"weight_decay", real(0.0)}, P{"nesterov", no}, P{"maximize", no},
       P{"step", py::int_(1)}, P{"grad_scale", real(1.0)}, P{"skip_nonfinite", no}});
  def_fast(m, *sgd_signature, sgd_call,
           std::string("Fused SGD step (torch.optim.SGD semantics), in place.\n\n"
                       "momentum_buffers is required when momentum != 0; on step 1 it is overwritten\n"
                       "with the gradient (torch's first-step buffer), later steps accumulate into it.\n"
                       "With momentum, pass step=t in a loop: at the default step=1 every call restarts\n"
                       "the buffer.\n\n") +
               kListNote);

  adagrad_signature = new Signature("adagrad_", 3,
      {P{"params", {}}, P{"grads", {}}, P{"state_sums", {}}, P{"lr", real(1e-2)}, P{"lr_decay", real(0.0)},
       P{"weight_decay", real(0.0)}, P{"eps", real(1e-10)}, P{"maximize", no}, P{"step", {}},
       P{"grad_scale", real(1.0)}, P{"skip_nonfinite", no}});
  def_fast(m, *adagrad_signature, adagrad_call,
           std::string("Fused Adagrad step (torch.optim.Adagrad semantics), in place.\n\n"
                       "state_sums start at initial_accumulator_value; step is the 1-based number of\n"
                       "this update (it sets the decayed lr = lr / (1 + (step - 1) * lr_decay)).\n\n") +
               kListNote);

  rmsprop_signature = new Signature("rmsprop_", 5,
      {P{"params", {}}, P{"grads", {}}, P{"square_avgs", {}}, P{"momentum_buffers", none_},
       P{"grad_avgs", none_}, P{"lr", real(1e-2)}, P{"alpha", real(0.99)}, P{"eps", real(1e-8)},
       P{"weight_decay", real(0.0)}, P{"momentum", real(0.0)}, P{"centered", no}, P{"maximize", no},
       P{"grad_scale", real(1.0)}, P{"skip_nonfinite", no}});
  def_fast(m, *rmsprop_signature, rmsprop_call,
           std::string("Fused RMSprop step (torch.optim.RMSprop semantics), in place.\n\n"
                       "momentum_buffers is required when momentum > 0, grad_avgs when centered=True;\n"
                       "all state starts at zero.\n\n") +
               kListNote);

  auto adam_params = [&](double weight_decay) {
    return std::vector<P>{P{"params", {}}, P{"grads", {}}, P{"exp_avgs", {}}, P{"exp_avg_sqs", {}},
                          P{"max_exp_avg_sqs", none_}, P{"lr", real(1e-3)}, P{"beta1", real(0.9)},
                          P{"beta2", real(0.999)}, P{"eps", real(1e-8)}, P{"weight_decay", real(weight_decay)},
                          P{"amsgrad", no}, P{"maximize", no}, P{"step", {}}, P{"grad_scale", real(1.0)},
                          P{"skip_nonfinite", no}};
  };
  const std::string adam_doc_tail =
      "exp_avgs, exp_avg_sqs (and max_exp_avg_sqs, required when amsgrad=True) start at zero;\n"
      "step is the 1-based number of this update, used for the bias corrections.\n\n";
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
