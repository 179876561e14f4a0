// Python bindings of the losses. Every argument and every label is checked, and the outputs are
// allocated, before the GIL is released and anything is written.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "cpu/kernel_table.h"
#include "cuda/backend.h"
#include "python/array_intake.h"
#include "python/fast_call.h"
#include "python/hyper_checks.h"
#include "python/torch_versions.h"

namespace fastopt::bindings {

namespace {

namespace py = pybind11;

Reduction parse_reduction(const std::string& reduction) {
  if (reduction == "mean") return Reduction::Mean;
  if (reduction == "sum") return Reduction::Sum;
  if (reduction == "none") return Reduction::None;
  throw py::value_error("reduction must be 'mean', 'sum' or 'none', got '" + reduction + "'");
}

cuda::Queue queue_of(const CallDevice& call) { return cuda::Queue{call.device->id, call.stream}; }

// (N, C) float scores: logits or SVM scores.
ArrayRef take_scores(py::handle obj, const char* name, CallDevice& call) {
  ArrayRef a = take_array(obj, name, call);
  float_dtype_of(a, name);
  if (a.ndim != 2) {
    throw py::value_error(std::string(name) + " must be 2-d (N, C), got shape " + shape_str(a));
  }
  if (a.shape[1] == 0) throw py::value_error(std::string(name) + " has C = 0 classes");
  check_layout(a, name, false);
  return a;
}

// (N,) integer labels: their dtype, shape and layout (their values are checked last, by check_label_values).
DType check_label_array(const ArrayRef& labels, int64_t n) {
  if (labels.dtype != DType::Int32 && labels.dtype != DType::Int64) {
    throw py::type_error("labels must be an int32 or int64 array, got dtype " + labels.dtype_name());
  }
  if (labels.ndim != 1 || labels.shape[0] != n) {
    throw py::value_error("labels has shape " + shape_str(labels) + " but there are " + std::to_string(n) +
                          " rows of scores");
  }
  check_layout(labels, "labels", false);
  return *labels.dtype;
}

// When the labels' values are checked on the host side of the call (check_labels=):
//   None (default): always on the CPU; on a CUDA device unless its stream is being captured into a CUDA
//                   graph (the check reads its answer back, which a capture cannot do): inside a capture
//                   the kernels' own guard is the check (a bad label's row gets a zero gradient and a NaN
//                   loss, so the result shows it).
//   True:           always; inside a capture that is refused with a RuntimeError (nothing queued).
//   False:          never: nothing waits for the device; the kernels' guard as inside a capture.
enum class LabelCheck { Auto, Always, Never };

LabelCheck parse_label_check(py::handle value) {
  if (value.is_none()) return LabelCheck::Auto;
  return bool_arg(value.ptr(), "check_labels (None, True or False)") ? LabelCheck::Always : LabelCheck::Never;
}

// Every label in [0, C) or equal to ignore_index (when one is given). Run after every argument was taken,
// so that no code of the caller's (a protocol method of a later argument) runs between this check and the
// kernels; a label another thread changes meanwhile is guarded against in the kernels themselves (never
// used as an index; its row's loss is NaN). On a CUDA device a kernel looks for a bad label and the call
// waits for its stream to hear the answer, so that a bad label raises here, before anything is written.
void check_label_values(const ArrayRef& labels, DType type, int64_t n, int64_t c, const int64_t* ignore_index,
                        const CallDevice& call, LabelCheck when) {
  if (when == LabelCheck::Never) return;
  if (when == LabelCheck::Auto && call.on_cuda() && cuda::is_capturing(queue_of(call))) return;
  auto complain = [&](int64_t i, int64_t v) {
    std::string msg = "labels[" + std::to_string(i) + "] = " + std::to_string(v) + " is out of range for " +
                      std::to_string(c) + " classes";
    if (ignore_index) msg += " (and is not ignore_index=" + std::to_string(*ignore_index) + ")";
    throw py::index_error(msg);
  };
  if (call.on_cuda()) {
    cuda::BadLabel bad;
    {
      py::gil_scoped_release no_gil;
      bad = cuda::find_bad_label(labels.data, type, n, c, ignore_index != nullptr,
                                 ignore_index ? *ignore_index : 0, queue_of(call));
    }
    if (bad.index >= 0) complain(bad.index, bad.value);
    return;
  }
  auto check = [&](const auto* values) {
    for (int64_t i = 0; i < n; ++i) {
      const int64_t v = int64_t(values[i]);
      if (ignore_index && v == *ignore_index) continue;
      if (v < 0 || v >= c) complain(i, v);
    }
  };
  if (type == DType::Int32) {
    check(static_cast<const int32_t*>(labels.data));
  } else {
    check(static_cast<const int64_t*>(labels.data));
  }
}

// A new C-contiguous array on the call's device, of the framework of `like` (fastopt/_device.py):
// NumPy for NumPy input, a torch.Tensor for a tensor, on the CPU or a CUDA device.
ArrayRef new_array(const ArrayRef& like, const std::vector<int64_t>& shape, DType dtype, CallDevice& call,
                   const char* name) {
  py::object made;
  if (!call.on_cuda() && py::isinstance<py::array>(like.object)) {
    made = py::array(dtype == DType::Float32 ? py::dtype::of<float>() : py::dtype::of<double>(),
                     std::vector<py::ssize_t>(shape.begin(), shape.end()));
  } else {
    py::tuple dims(shape.size());
    for (size_t d = 0; d < shape.size(); ++d) dims[d] = py::int_(shape[d]);
    const py::object empty = py::module_::import("fastopt._device").attr("empty");
    made = empty(like.object, dims, dtype_name(dtype), call.on_cuda() ? call.device->id : -1,
                 py::int_(reinterpret_cast<intptr_t>(call.stream)));
  }
  return take_array(made, name, call);
}

// The gradient output: a new array, or the caller's `out`, which may be `scores` itself.
ArrayRef take_out(py::handle out_obj, const ArrayRef& scores, const char* scores_name,
                  const std::vector<std::pair<const char*, const ArrayRef*>>& inputs, CallDevice& call) {
  if (out_obj.is_none()) return new_array(scores, {scores.shape[0], scores.shape[1]}, *scores.dtype, call, "out");
  ArrayRef out = take_array(out_obj, "out", call);
  if (float_dtype_of(out, "out") != *scores.dtype) {
    throw py::type_error("out has dtype " + out.dtype_name() + " but " + scores_name + " has " +
                         scores.dtype_name());
  }
  if (!same_shape(out, scores)) {
    throw py::value_error("out has shape " + shape_str(out) + " but " + scores_name + " has shape " +
                          shape_str(scores));
  }
  check_layout(out, "out", true);
  const bool same_buffer = out.data == scores.data;
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
void with_types(DType dtype, DType labels, Fn&& fn) {
  auto with_label = [&](auto zero) {
    if (labels == DType::Int32) {
      fn(zero, int32_t{});
    } else {
      fn(zero, int64_t{});
    }
  };
  if (dtype == DType::Float32) {
    with_label(float{});
  } else {
    with_label(double{});
  }
}

template <typename Fn>
void with_float(DType dtype, Fn&& fn) {
  if (dtype == DType::Float32) {
    fn(float{});
  } else {
    fn(double{});
  }
}

// The reduced loss: a Python float from the CPU; on CUDA a 0-d device array (nothing waits).
struct LossValue {
  double host = 0.0;
  std::optional<ArrayRef> device;

  py::object result() const { return device ? device->object : py::object(py::float_(host)); }
};

// Outputs the losses share: per-row losses for reduction "none", else the reduced value.
struct LossOutputs {
  std::optional<ArrayRef> row_losses;
  LossValue value;

  LossOutputs(const ArrayRef& scores, Reduction reduction, CallDevice& call) {
    if (reduction == Reduction::None) {
      row_losses = new_array(scores, {scores.shape[0]}, *scores.dtype, call, "row_losses");
    } else if (call.on_cuda()) {
      value.device = new_array(scores, {}, *scores.dtype, call, "loss");
    }
  }

  void* row_ptr() const { return row_losses ? row_losses->data : nullptr; }
  void* value_ptr() const { return value.device ? value.device->data : nullptr; }

  py::tuple result(const ArrayRef& grad) const {
    if (row_losses) return py::make_tuple(row_losses->object, grad.object);
    return py::make_tuple(value.result(), grad.object);
  }
};

py::tuple softmax_cross_entropy(py::handle logits_obj, py::handle labels_obj, py::handle weight_obj,
                                IntObject ignore_index_obj, RealObject label_smoothing_obj,
                                const std::string& reduction_name, RealObject z_loss_obj, py::handle out_obj,
                                py::handle check_labels, py::handle stream) {
  const LabelCheck label_check = parse_label_check(check_labels);
  const int64_t ignore_index = ignore_index_obj.get("ignore_index");
  const double label_smoothing = label_smoothing_obj.get("label_smoothing");
  const double z_loss = z_loss_obj.get("z_loss");
  CallDevice call(stream);
  const ArrayRef logits = take_scores(logits_obj, "logits", call);
  const DType dtype = *logits.dtype;
  const int64_t n = logits.shape[0], c = logits.shape[1];
  const Reduction reduction = parse_reduction(reduction_name);
  require(rules::check_cross_entropy(label_smoothing, z_loss));
  require(rules::check_cross_entropy_range(z_loss, rules::math_range(dtype == DType::Float64)));
  const ArrayRef labels = take_array(labels_obj, "labels", call);
  const DType label_type = check_label_array(labels, n);
  std::optional<ArrayRef> weight;
  if (!weight_obj.is_none()) {
    weight = take_array(weight_obj, "weight", call);
    if (float_dtype_of(*weight, "weight") != dtype) {
      throw py::type_error("weight has dtype " + weight->dtype_name() + " but logits has " + logits.dtype_name());
    }
    if (weight->ndim != 1 || weight->shape[0] != c) {
      throw py::value_error("weight has shape " + shape_str(*weight) + " but logits has " + std::to_string(c) +
                            " classes");
    }
    check_layout(*weight, "weight", false);
  }
  const ArrayRef out = take_out(out_obj, logits, "logits", {{"labels", &labels}, {"weight", weight ? &*weight : nullptr}},
                                call);
  LossOutputs outputs(logits, reduction, call);
  check_label_values(labels, label_type, n, c, &ignore_index, call, label_check);  // last: see there
  mark_written(out);

  if (call.on_cuda()) {
    const cuda::CrossEntropyCall args{logits.data, dtype, labels.data, label_type, weight ? weight->data : nullptr,
                                      out.data, outputs.row_ptr(), outputs.value_ptr(), n, c, ignore_index,
                                      label_smoothing, z_loss, reduction};
    py::gil_scoped_release no_gil;
    cuda::cross_entropy(args, queue_of(call));
  } else {
    with_types(dtype, label_type, [&](auto t, auto l) {
      using T = decltype(t);
      using L = decltype(l);
      cpu::CrossEntropyArgs<T, L> args{static_cast<const T*>(logits.data), static_cast<const L*>(labels.data),
                                       weight ? static_cast<const T*>(weight->data) : nullptr,
                                       static_cast<T*>(out.data), static_cast<T*>(outputs.row_ptr()), n, c,
                                       ignore_index, label_smoothing, z_loss, reduction};
      py::gil_scoped_release no_gil;
      outputs.value.host = cpu::kernels().of<T>().cross_entropy(args);
    });
  }
  return outputs.result(out);
}

// softmax / log_softmax into a new array, or into the caller's `out` (x itself, or a buffer it does not
// overlap): returns the array written.
py::object softmax_impl(py::handle x_obj, bool log, py::handle out_obj, py::handle stream) {
  const char* name = "x";
  CallDevice call(stream);
  const ArrayRef x = take_array(x_obj, name, call);
  const DType dtype = float_dtype_of(x, name);
  if (x.ndim < 1) throw py::value_error("x must have at least one axis, got a 0-d array");
  check_layout(x, name, false);
  const ArrayRef out = out_obj.is_none()
                           ? new_array(x, std::vector<int64_t>(x.shape, x.shape + x.ndim), dtype, call, "out")
                           : take_out(out_obj, x, name, {}, call);
  mark_written(out);
  const int64_t c = x.shape[x.ndim - 1];
  const int64_t rows = c == 0 ? 0 : x.size / c;
  if (call.on_cuda()) {
    {
      py::gil_scoped_release no_gil;
      cuda::softmax(x.data, out.data, dtype, rows, c, log, queue_of(call));
    }
    return out.object;  // (a new reference: only with the GIL held)
  }
  with_float(dtype, [&](auto t) {
    using T = decltype(t);
    py::gil_scoped_release no_gil;
    cpu::kernels().of<T>().softmax(static_cast<const T*>(x.data), static_cast<T*>(out.data), rows, c, log);
  });
  return out.object;
}

py::tuple multiclass_svm_loss(py::handle scores_obj, py::handle labels_obj, RealObject margin_obj,
                              const std::string& reduction_name, py::handle check_labels, py::handle stream) {
  const LabelCheck label_check = parse_label_check(check_labels);
  const double margin = margin_obj.get("margin");
  CallDevice call(stream);
  const ArrayRef scores = take_scores(scores_obj, "scores", call);
  const DType dtype = *scores.dtype;
  const int64_t n = scores.shape[0], c = scores.shape[1];
  const Reduction reduction = parse_reduction(reduction_name);
  require_finite("margin", margin);
  require(rules::fits("margin", margin, rules::math_range(dtype == DType::Float64)));
  const ArrayRef labels = take_array(labels_obj, "labels", call);
  const DType label_type = check_label_array(labels, n);
  const ArrayRef dscores = take_out(py::none(), scores, "scores", {}, call);
  LossOutputs outputs(scores, reduction, call);
  check_label_values(labels, label_type, n, c, nullptr, call, label_check);  // last: see there

  if (call.on_cuda()) {
    const cuda::HingeCall args{scores.data, dtype, labels.data, label_type, dscores.data, outputs.row_ptr(),
                               outputs.value_ptr(), n, c, margin, reduction};
    py::gil_scoped_release no_gil;
    cuda::multiclass_svm(args, queue_of(call));
  } else {
    with_types(dtype, label_type, [&](auto t, auto l) {
      using T = decltype(t);
      using L = decltype(l);
      cpu::HingeArgs<T, L> args{static_cast<const T*>(scores.data), static_cast<const L*>(labels.data),
                                static_cast<T*>(dscores.data), static_cast<T*>(outputs.row_ptr()), n, c, margin,
                                reduction};
      py::gil_scoped_release no_gil;
      outputs.value.host = cpu::kernels().of<T>().svm(args);
    });
  }
  return outputs.result(dscores);
}

py::object penalty(py::handle w_obj, RealObject l1_obj, RealObject l2_obj, py::handle out_grad_obj,
                   py::handle stream) {
  const double l1 = l1_obj.get("l1"), l2 = l2_obj.get("l2");
  CallDevice call(stream);
  const ArrayRef w = take_array(w_obj, "w", call);
  const DType dtype = float_dtype_of(w, "w");
  check_layout(w, "w", false);
  require_nonnegative("l1", l1);
  require_nonnegative("l2", l2);
  require(rules::first({rules::fits("l1", l1, rules::math_range(dtype == DType::Float64)),
                        rules::fits("l2", l2, rules::math_range(dtype == DType::Float64))}));
  std::optional<ArrayRef> grad;
  if (!out_grad_obj.is_none()) {
    grad = take_array(out_grad_obj, "out_grad", call);
    if (float_dtype_of(*grad, "out_grad") != dtype) {
      throw py::type_error("out_grad has dtype " + grad->dtype_name() + " but w has " + w.dtype_name());
    }
    if (!same_shape(*grad, w)) {
      throw py::value_error("out_grad has shape " + shape_str(*grad) + " but w has shape " + shape_str(w));
    }
    check_layout(*grad, "out_grad", true);
    if (shares_memory(*grad, w)) throw py::value_error("out_grad shares memory with w");
  }
  void* grad_ptr = grad ? grad->data : nullptr;
  if (grad) mark_written(*grad);
  if (call.on_cuda()) {
    const ArrayRef value = new_array(w, {}, dtype, call, "value");
    {
      py::gil_scoped_release no_gil;
      cuda::penalty(w.data, grad_ptr, dtype, w.size, l1, l2, value.data, queue_of(call));
    }
    return value.object;  // (a new reference: only with the GIL held)
  }
  double value = 0.0;
  with_float(dtype, [&](auto t) {
    using T = decltype(t);
    py::gil_scoped_release no_gil;
    value = cpu::kernels().of<T>().penalty(static_cast<const T*>(w.data), static_cast<T*>(grad_ptr), w.size, l1, l2);
  });
  return py::float_(value);
}

// Element-wise helpers for tests and benchmarks (CPU): the kernels' exp, and the a += b bandwidth probe.
py::array exp_impl(py::handle x_obj) {
  CallDevice call;
  const ArrayRef x = take_array(x_obj, "x", call);
  if (call.on_cuda()) throw py::value_error("x must be a CPU array");
  const DType dtype = float_dtype_of(x, "x");
  check_layout(x, "x", false);
  const ArrayRef out = new_array(x, std::vector<int64_t>(x.shape, x.shape + x.ndim), dtype, call, "out");
  with_float(dtype, [&](auto t) {
    using T = decltype(t);
    py::gil_scoped_release no_gil;
    cpu::kernels().of<T>().exp(static_cast<const T*>(x.data), static_cast<T*>(out.data), x.size);
  });
  return py::reinterpret_borrow<py::array>(out.object);
}

void probe_add(py::handle a_obj, py::handle b_obj) {
  CallDevice call;
  const ArrayArg a = take_arrays(a_obj, "a", true, call);
  const ArrayArg b = take_arrays(b_obj, "b", false, call);
  if (call.on_cuda()) throw py::value_error("a must be a CPU array");
  if (a.arrays.size() != 1) throw py::value_error("a must be one array");
  const CallTypes types = check_arrays(a, {&b});
  with_float(types.param, [&](auto t) {
    using T = decltype(t);
    T* pa = data_of<T>(&a, 0);
    const T* pb = data_of<T>(&b, 0);
    const int64_t n = a.arrays[0].size;
    py::gil_scoped_release no_gil;
    cpu::kernels().of<T>().probe_add(pa, pb, n);
  });
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
        arg("reduction") = "mean", arg("z_loss") = 0.0, arg("out") = py::none(), arg("check_labels") = py::none(),
        arg("stream") = py::none(),
        "Fused, numerically stable softmax cross-entropy and its gradient: returns (loss, dlogits).\n\n"
        "The numbers of torch.nn.functional.cross_entropy: logits (N, C) float32/float64, labels (N,)\n"
        "int32/int64, optional class weight (C,), rows labelled ignore_index count nothing and get a\n"
        "zero gradient, label_smoothing in [0, 1], reduction 'mean' (divides by the summed weights of\n"
        "the counted rows), 'sum' or 'none' (an (N,) array). z_loss adds z_loss * logsumexp(row)^2 per\n"
        "counted row (divided by the same denominator under 'mean'). dlogits is the gradient of the\n"
        "returned loss (of the summed per-row losses for 'none'); out= receives it, and may be logits\n"
        "itself so that a training loop allocates nothing.\n\n"
        "Inputs may be CUDA arrays (PyTorch, CuPy, anything with __dlpack__ or __cuda_array_interface__):\n"
        "then the loss is a 0-d array on the device (nothing waits for the GPU to finish), new outputs are\n"
        "arrays of the logits' framework, and the work is queued on `stream` (None: the framework's current\n"
        "stream). The labels are checked first (a bad one raises IndexError, nothing written); on a CUDA\n"
        "device that check waits for the stream, so by default (check_labels=None) it is left to the\n"
        "kernels inside a CUDA-graph capture: a bad label's row then gets a zero gradient and a NaN loss.\n"
        "check_labels=False never checks first (nothing waits); True always does (refused in a capture).");
  m.def("softmax",
        [](py::handle x, py::handle out, py::handle stream) { return softmax_impl(x, false, out, stream); },
        arg("x"), py::kw_only(), arg("out") = py::none(), arg("stream") = py::none(),
        "Numerically stable softmax over the last axis. Returns a new array (of x's framework on CUDA),\n"
        "or writes into out= and returns it: out has x's shape and dtype, and is x itself (in place) or\n"
        "an array that does not overlap it.");
  m.def("log_softmax",
        [](py::handle x, py::handle out, py::handle stream) { return softmax_impl(x, true, out, stream); },
        arg("x"), py::kw_only(), arg("out") = py::none(), arg("stream") = py::none(),
        "Numerically stable log-softmax over the last axis; out= as for softmax.");
  m.def("multiclass_svm_loss", &multiclass_svm_loss, arg("scores"), arg("labels"), py::kw_only(),
        arg("margin") = 1.0, arg("reduction") = "mean", arg("check_labels") = py::none(), arg("stream") = py::none(),
        "Multiclass SVM (hinge) loss: L_i = sum over j != y_i of max(0, s_j - s_{y_i} + margin).\n"
        "Returns (loss, dscores); 'mean' averages over the N examples, 'none' gives an (N,) array.\n"
        "check_labels: as for softmax_cross_entropy.");
  m.def("penalty", &penalty, arg("w"), py::kw_only(), arg("l1") = 0.0, arg("l2") = 0.0,
        arg("out_grad") = py::none(), arg("stream") = py::none(),
        "l1 * sum|w| + l2 * sum w^2 (elastic net when both are set). When out_grad is given,\n"
        "l1 * sign(w) + 2 * l2 * w is added into it. For a CUDA w the value is a 0-d device array.");
}

}  // namespace fastopt::bindings
