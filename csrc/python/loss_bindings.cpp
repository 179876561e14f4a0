// Python bindings of the losses. Every argument and every label is checked, and the outputs are
// allocated, before the GIL is released and anything is written.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "cpu/kernel_table.h"
#include "python/array_intake.h"
#include "python/hyper_checks.h"

namespace fastopt::bindings {

namespace {

namespace py = pybind11;
using cpu::Reduction;

Reduction parse_reduction(const std::string& reduction) {
  if (reduction == "mean") return Reduction::Mean;
  if (reduction == "sum") return Reduction::Sum;
  if (reduction == "none") return Reduction::None;
  throw py::value_error("reduction must be 'mean', 'sum' or 'none', got '" + reduction + "'");
}

// (N, C) float scores: logits or SVM scores.
py::array take_scores(py::handle obj, const char* name) {
  py::array a = require_array(obj, name);
  float_dtype_of(a, name);
  if (a.ndim() != 2) {
    throw py::value_error(std::string(name) + " must be 2-d (N, C), got shape " + shape_str(a));
  }
  if (a.shape(1) == 0) throw py::value_error(std::string(name) + " has C = 0 classes");
  check_layout(a, name, false);
  return a;
}

enum class LabelType { Int32, Int64 };

// (N,) integer labels, every value in [0, C) or equal to ignore_index (when one is given).
LabelType take_labels(const py::array& labels, py::ssize_t n, py::ssize_t c, const int64_t* ignore_index) {
  LabelType type;
  if (py::isinstance<py::array_t<int32_t>>(labels)) {
    type = LabelType::Int32;
  } else if (py::isinstance<py::array_t<int64_t>>(labels)) {
    type = LabelType::Int64;
  } else {
    throw py::type_error("labels must be an int32 or int64 array, got dtype " + dtype_str(labels));
  }
  if (labels.ndim() != 1 || labels.shape(0) != n) {
    throw py::value_error("labels has shape " + shape_str(labels) + " but there are " + std::to_string(n) +
                          " rows of scores");
  }
  check_layout(labels, "labels", false);
  auto check = [&](const auto* values) {
    for (py::ssize_t i = 0; i < n; ++i) {
      const int64_t v = int64_t(values[i]);
      if (ignore_index && v == *ignore_index) continue;
      if (v < 0 || v >= int64_t(c)) {
        std::string msg = "labels[" + std::to_string(i) + "] = " + std::to_string(v) +
                          " is out of range for " + std::to_string(c) + " classes";
        if (ignore_index) msg += " (and is not ignore_index=" + std::to_string(*ignore_index) + ")";
        throw py::index_error(msg);
      }
    }
  };
  if (type == LabelType::Int32) {
    check(static_cast<const int32_t*>(labels.data()));
  } else {
    check(static_cast<const int64_t*>(labels.data()));
  }
  return type;
}

// The gradient output: a new array, or the caller's `out`, which may be `scores` itself.
py::array take_out(py::handle out_obj, const py::array& scores, const char* scores_name,
                   const std::vector<std::pair<const char*, const py::array*>>& inputs) {
  if (out_obj.is_none()) return py::array(scores.dtype(), std::vector<py::ssize_t>{scores.shape(0), scores.shape(1)});
  py::array out = require_array(out_obj, "out");
  if (float_dtype_of(out, "out") != float_dtype_of(scores, scores_name)) {
    throw py::type_error("out has dtype " + dtype_str(out) + " but " + scores_name + " has " +
                         dtype_str(scores));
  }
  if (out.ndim() != 2 || out.shape(0) != scores.shape(0) || out.shape(1) != scores.shape(1)) {
    throw py::value_error("out has shape " + shape_str(out) + " but " + scores_name + " has shape " +
                          shape_str(scores));
  }
  check_layout(out, "out", true);
  const bool same_buffer = out.data() == scores.data();
  if (!same_buffer && shares_memory(out, scores)) {
    throw py::value_error(std::string("out partly overlaps ") + scores_name + "; pass " + scores_name +
                          " itself or a separate buffer");
  }
  for (const auto& [name, array] : inputs) {
    if (array && shares_memory(out, *array)) {
      throw py::value_error(std::string("out shares memory with ") + name);
    }
  }
  return out;
}

template <typename Fn>
void with_types(Dtype dtype, LabelType labels, Fn&& fn) {
  auto with_label = [&](auto zero) {
    if (labels == LabelType::Int32) {
      fn(zero, int32_t{});
    } else {
      fn(zero, int64_t{});
    }
  };
  if (dtype == Dtype::Float32) {
    with_label(float{});
  } else {
    with_label(double{});
  }
}

py::tuple softmax_cross_entropy(py::handle logits_obj, py::handle labels_obj, py::handle weight_obj,
                                int64_t ignore_index, double label_smoothing, const std::string& reduction_name,
                                double z_loss, py::handle out_obj) {
  const py::array logits = take_scores(logits_obj, "logits");
  const Dtype dtype = float_dtype_of(logits, "logits");
  const py::ssize_t n = logits.shape(0), c = logits.shape(1);
  const Reduction reduction = parse_reduction(reduction_name);
  require(rules::check_cross_entropy(label_smoothing, z_loss));
  const py::array labels = require_array(labels_obj, "labels");
  // (A default-constructed py::array is an empty array, not "no array": absent means nullopt.)
  std::optional<py::array> weight;
  if (!weight_obj.is_none()) {
    weight = require_array(weight_obj, "weight");
    if (float_dtype_of(*weight, "weight") != dtype) {
      throw py::type_error("weight has dtype " + dtype_str(*weight) + " but logits has " + dtype_str(logits));
    }
    if (weight->ndim() != 1 || weight->shape(0) != c) {
      throw py::value_error("weight has shape " + shape_str(*weight) + " but logits has " +
                            std::to_string(c) + " classes");
    }
    check_layout(*weight, "weight", false);
  }
  const LabelType label_type = take_labels(labels, n, c, &ignore_index);
  py::array out = take_out(out_obj, logits, "logits",
                           {{"labels", &labels}, {"weight", weight ? &*weight : nullptr}});
  std::optional<py::array> row_losses;
  if (reduction == Reduction::None) row_losses = py::array(logits.dtype(), std::vector<py::ssize_t>{n});

  double loss = 0.0;
  with_types(dtype, label_type, [&](auto t, auto l) {
    using T = decltype(t);
    using L = decltype(l);
    cpu::CrossEntropyArgs<T, L> args{
        static_cast<const T*>(logits.data()),
        static_cast<const L*>(labels.data()),
        weight ? static_cast<const T*>(weight->data()) : nullptr,
        static_cast<T*>(out.mutable_data()),
        row_losses ? static_cast<T*>(row_losses->mutable_data()) : nullptr,
        int64_t(n), int64_t(c), ignore_index, label_smoothing, z_loss, reduction};
    py::gil_scoped_release no_gil;
    loss = cpu::kernels().of<T>().cross_entropy(args);
  });
  if (row_losses) return py::make_tuple(*row_losses, out);
  return py::make_tuple(loss, out);
}

py::array softmax_impl(py::handle x_obj, bool log) {
  const char* name = "x";
  const py::array x = require_array(x_obj, name);
  const Dtype dtype = float_dtype_of(x, name);
  if (x.ndim() < 1) throw py::value_error("x must have at least one axis, got a 0-d array");
  check_layout(x, name, false);
  py::array out(x.dtype(), std::vector<py::ssize_t>(x.shape(), x.shape() + x.ndim()));
  const int64_t c = int64_t(x.shape(x.ndim() - 1));
  const int64_t rows = c == 0 ? 0 : int64_t(x.size()) / c;
  auto run = [&](auto t) {
    using T = decltype(t);
    const T* in = static_cast<const T*>(x.data());
    T* o = static_cast<T*>(out.mutable_data());
    py::gil_scoped_release no_gil;
    cpu::kernels().of<T>().softmax(in, o, rows, c, log);
  };
  if (dtype == Dtype::Float32) {
    run(float{});
  } else {
    run(double{});
  }
  return out;
}

py::tuple multiclass_svm_loss(py::handle scores_obj, py::handle labels_obj, double margin,
                              const std::string& reduction_name) {
  const py::array scores = take_scores(scores_obj, "scores");
  const Dtype dtype = float_dtype_of(scores, "scores");
  const py::ssize_t n = scores.shape(0), c = scores.shape(1);
  const Reduction reduction = parse_reduction(reduction_name);
  require_finite("margin", margin);
  const py::array labels = require_array(labels_obj, "labels");
  const LabelType label_type = take_labels(labels, n, c, nullptr);
  py::array dscores = take_out(py::none(), scores, "scores", {});
  std::optional<py::array> row_losses;
  if (reduction == Reduction::None) row_losses = py::array(scores.dtype(), std::vector<py::ssize_t>{n});

  double loss = 0.0;
  with_types(dtype, label_type, [&](auto t, auto l) {
    using T = decltype(t);
    using L = decltype(l);
    cpu::HingeArgs<T, L> args{static_cast<const T*>(scores.data()), static_cast<const L*>(labels.data()),
                              static_cast<T*>(dscores.mutable_data()),
                              row_losses ? static_cast<T*>(row_losses->mutable_data()) : nullptr,
                              int64_t(n), int64_t(c), margin, reduction};
    py::gil_scoped_release no_gil;
    loss = cpu::kernels().of<T>().svm(args);
  });
  if (row_losses) return py::make_tuple(*row_losses, dscores);
  return py::make_tuple(loss, dscores);
}

double penalty(py::handle w_obj, double l1, double l2, py::handle out_grad_obj) {
  const py::array w = require_array(w_obj, "w");
  const Dtype dtype = float_dtype_of(w, "w");
  check_layout(w, "w", false);
  require_nonnegative("l1", l1);
  require_nonnegative("l2", l2);
  std::optional<py::array> grad;
  if (!out_grad_obj.is_none()) {
    grad = require_array(out_grad_obj, "out_grad");
    if (float_dtype_of(*grad, "out_grad") != dtype) {
      throw py::type_error("out_grad has dtype " + dtype_str(*grad) + " but w has " + dtype_str(w));
    }
    const bool same_shape =
        grad->ndim() == w.ndim() && std::equal(w.shape(), w.shape() + w.ndim(), grad->shape());
    if (!same_shape) {
      throw py::value_error("out_grad has shape " + shape_str(*grad) + " but w has shape " + shape_str(w));
    }
    check_layout(*grad, "out_grad", true);
    if (shares_memory(*grad, w)) throw py::value_error("out_grad shares memory with w");
  }
  double value = 0.0;
  auto run = [&](auto t) {
    using T = decltype(t);
    const T* wp = static_cast<const T*>(w.data());
    T* gp = grad ? static_cast<T*>(grad->mutable_data()) : nullptr;
    py::gil_scoped_release no_gil;
    value = cpu::kernels().of<T>().penalty(wp, gp, int64_t(w.size()), l1, l2);
  };
  if (dtype == Dtype::Float32) {
    run(float{});
  } else {
    run(double{});
  }
  return value;
}

// Element-wise helpers for tests and benchmarks: the kernels' exp, and the a += b bandwidth probe.
py::array exp_impl(py::handle x_obj) {
  const py::array x = require_array(x_obj, "x");
  const Dtype dtype = float_dtype_of(x, "x");
  check_layout(x, "x", false);
  py::array out(x.dtype(), std::vector<py::ssize_t>(x.shape(), x.shape() + x.ndim()));
  auto run = [&](auto t) {
    using T = decltype(t);
    const T* in = static_cast<const T*>(x.data());
    T* o = static_cast<T*>(out.mutable_data());
    py::gil_scoped_release no_gil;
    cpu::kernels().of<T>().exp(in, o, int64_t(x.size()));
  };
  if (dtype == Dtype::Float32) {
    run(float{});
  } else {
    run(double{});
  }
  return out;
}

void probe_add(py::handle a_obj, py::handle b_obj) {
  const ArrayArg a = take_arrays(a_obj, "a", true);
  const ArrayArg b = take_arrays(b_obj, "b", false);
  if (a.arrays.size() != 1) throw py::value_error("a must be one array");
  const Dtype dtype = check_arrays(a, {&b});
  auto run = [&](auto t) {
    using T = decltype(t);
    T* pa = data_of<T>(&a, 0);
    const T* pb = data_of<T>(&b, 0);
    const int64_t n = int64_t(a.arrays[0].size());
    py::gil_scoped_release no_gil;
    cpu::kernels().of<T>().probe_add(pa, pb, n);
  };
  if (dtype == Dtype::Float32) {
    run(float{});
  } else {
    run(double{});
  }
}

}  // namespace

void bind_losses(py::module_& m) {
  m.def("_exp", &exp_impl, py::arg("x"),
        "exp(x) element-wise with the kernels' vectorised exp (for its accuracy test).");
  m.def("_probe_add", &probe_add, py::arg("a"), py::arg("b"),
        "a += b in place with the optimizers' chunking and threads: the benchmarks' bandwidth probe.");
  using py::arg;
  m.def("softmax_cross_entropy", &softmax_cross_entropy, arg("logits"), arg("labels"), py::kw_only(),
        arg("weight") = py::none(), arg("ignore_index") = -100, arg("label_smoothing") = 0.0,
        arg("reduction") = "mean", arg("z_loss") = 0.0, arg("out") = py::none(),
        "Fused, numerically stable softmax cross-entropy and its gradient: returns (loss, dlogits).\n\n"
        "The numbers of torch.nn.functional.cross_entropy: logits (N, C) float32/float64, labels (N,)\n"
        "int32/int64, optional class weight (C,), rows labelled ignore_index count nothing and get a\n"
        "zero gradient, label_smoothing in [0, 1], reduction 'mean' (divides by the summed weights of\n"
        "the counted rows), 'sum' or 'none' (an (N,) array). z_loss adds z_loss * logsumexp(row)^2 per\n"
        "counted row (divided by the same denominator under 'mean'). dlogits is the gradient of the\n"
        "returned loss (of the summed per-row losses for 'none'); out= receives it, and may be logits\n"
        "itself so that a training loop allocates nothing.");
  m.def("softmax", [](py::handle x) { return softmax_impl(x, false); }, arg("x"),
        "Numerically stable softmax over the last axis (a new array).");
  m.def("log_softmax", [](py::handle x) { return softmax_impl(x, true); }, arg("x"),
        "Numerically stable log-softmax over the last axis (a new array).");
  m.def("multiclass_svm_loss", &multiclass_svm_loss, arg("scores"), arg("labels"), py::kw_only(),
        arg("margin") = 1.0, arg("reduction") = "mean",
        "Multiclass SVM (hinge) loss: L_i = sum over j != y_i of max(0, s_j - s_{y_i} + margin).\n"
        "Returns (loss, dscores); 'mean' averages over the N examples, 'none' gives an (N,) array.");
  m.def("penalty", &penalty, arg("w"), py::kw_only(), arg("l1") = 0.0, arg("l2") = 0.0,
        arg("out_grad") = py::none(),
        "l1 * sum|w| + l2 * sum w^2 (elastic net when both are set). When out_grad is given,\n"
        "l1 * sign(w) + 2 * l2 * w is added into it.");
}

}  // namespace fastopt::bindings
