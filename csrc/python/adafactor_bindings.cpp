// fastopt.adafactor_ (fastopt/adafactor.h, loops in csrc/cpu/adafactor_loops.h):
//
//   adafactor_(params, grads, row_vars=None, col_vars=None, variances=None, *, step, lr=0.01,
//              beta2_decay=-0.8, eps1=None, eps2=0.001, d=1.0, weight_decay=0.0, maximize=False)
//
// The state arguments are lists with one entry per parameter, torch.optim.Adafactor's state in its shapes:
// a parameter with ndim >= 2 has row_vars[i] (shape[:-1] + (1,)) and col_vars[i] (shape[:-2] + (1, C)) and
// variances[i] None; any other has variances[i] (its own shape) and None in the two others. An argument
// that is None holds None for every parameter. Not a rule of registry.h: the state has other shapes than
// the parameter, so it has its own checks, every one before anything is written.
#include <pybind11/pybind11.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "common/adafactor_checks.h"
#include "common/overlap.h"
#include "cpu/kernel_table.h"
#include "cuda/backend.h"
#include "python/array_intake.h"
#include "python/fast_call.h"
#include "python/hyper_checks.h"
#include "python/torch_versions.h"

namespace fastopt::bindings {

namespace {

const Signature* adafactor_signature = nullptr;

std::string label(const char* name, size_t i) { return std::string(name) + "[" + std::to_string(i) + "]"; }

std::string shape_text(const std::vector<int64_t>& shape) {
  std::string s = "(";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + (shape.size() == 1 ? ",)" : ")");
}

bool has_shape(const ArrayRef& a, const std::vector<int64_t>& shape) {
  if (size_t(a.ndim) != shape.size()) return false;
  for (size_t i = 0; i < shape.size(); ++i) {
    if (a.shape[i] != shape[i]) return false;
  }
  return true;
}

// A state argument: None (None for every parameter), or a list/tuple of arrays and None, one per param.
std::vector<std::optional<ArrayRef>> take_optional_arrays(py::handle obj, const char* name, size_t count,
                                                          CallDevice& call) {
  std::vector<std::optional<ArrayRef>> out(count);
  if (obj.is_none()) return out;
  if (!PyList_Check(obj.ptr()) && !PyTuple_Check(obj.ptr())) {
    ArrayRef single = take_array(obj, name, call);  // (TypeError for what is not an array)
    if (count != 1) {
      throw py::value_error(std::string(name) + " is one array but params holds " + std::to_string(count) +
                            "; pass a list with one entry (an array or None) per parameter");
    }
    out[0] = std::move(single);
    return out;
  }
  // (a snapshot that owns the items, as take_arrays: the items' protocol methods may change the list)
  const py::object items = PyTuple_Check(obj.ptr()) ? py::reinterpret_borrow<py::object>(obj)
                                                    : py::reinterpret_steal<py::object>(PyList_AsTuple(obj.ptr()));
  if (!items) throw py::error_already_set();
  const size_t n = size_t(PyTuple_GET_SIZE(items.ptr()));
  if (n != count) {
    throw py::value_error(std::string(name) + " holds " + std::to_string(n) + " entries but params holds " +
                          std::to_string(count));
  }
  for (size_t i = 0; i < n; ++i) {
    py::handle item = PyTuple_GET_ITEM(items.ptr(), py::ssize_t(i));
    if (!item.is_none()) out[i] = take_array(item, label(name, i), call);
  }
  return out;
}

struct Extent {
  uintptr_t begin, end;
  bool written;
  std::string where;
};

// The expected shape of a state array of param p, or a ValueError naming what is wrong.
void check_state(const std::optional<ArrayRef>& state, const char* name, size_t i, const ArrayRef& p,
                 const std::vector<int64_t>* shape, const char* why, std::vector<Extent>& extents) {
  const std::string where = label(name, i);
  if (shape == nullptr) {
    if (state) throw py::value_error(where + " must be None: params[" + std::to_string(i) + "] " + why);
    return;
  }
  if (!state) throw py::value_error(where + " is required: params[" + std::to_string(i) + "] " + why);
  if (state->dtype != p.dtype) {
    float_dtype_of(*state, where);
    throw py::type_error(where + " has dtype " + state->dtype_name() + " but params[" + std::to_string(i) +
                         "] has " + p.dtype_name());
  }
  if (!has_shape(*state, *shape)) {
    throw py::value_error(where + " has shape " + shape_str(*state) + " but params[" + std::to_string(i) +
                          "] of shape " + shape_str(p) + " needs " + shape_text(*shape));
  }
  check_layout(*state, where, true);
  if (state->nbytes() > 0) {
    const auto b = reinterpret_cast<uintptr_t>(state->data);
    extents.push_back({b, b + uintptr_t(state->nbytes()), true, where});
  }
}

// Only the gradients (read) may share memory with one another (common/overlap.h).
void check_no_overlap(std::vector<Extent>& extents) {
  if (const auto pair = find_shared_write(extents)) {
    throw py::value_error(extents[pair->second].where + " shares memory with " + extents[pair->first].where +
                          "; an array the call writes must be a separate buffer (only the gradients, which it "
                          "reads, may share memory)");
  }
}

AdafactorHyper read_hyper(BoundArgs& a) {
  AdafactorHyper h{};
  h.step = a.next_int();
  h.lr = a.next_real();
  h.beta2_decay = a.next_real();
  if (a.peek().is_none()) {
    a.next();
    h.eps1 = std::nan("");
  } else {
    h.eps1 = a.next_real();
    if (std::isnan(h.eps1)) require_finite("eps1", h.eps1);  // (NaN stands for None inside)
  }
  h.eps2 = a.next_real();
  h.d = a.next_real();
  h.weight_decay = a.next_real();
  h.maximize = a.next_bool();
  require(rules::check(h));  // (common/adafactor_checks.h)
  return h;
}

// On the CPU, or queued on the call's CUDA stream (csrc/cuda/adafactor_passes.cuh: the CPU's bits).
template <typename T>
void run(const std::vector<cpu::AdafactorTensor<T>>& list, const AdafactorHyper& h, const CallDevice& call) {
  if (call.on_cuda()) {
    const cuda::Queue queue{call.device->id, call.stream};
    py::gil_scoped_release no_gil;
    cuda::adafactor(list, h, queue);
    return;
  }
  py::gil_scoped_release no_gil;
  cpu::kernels().of<T>().adafactor(list, h);
}

PyObject* adafactor_call(PyObject*, PyObject* const* args, Py_ssize_t nargsf, PyObject* kwnames) {
  return guarded([&]() -> PyObject* {
    BoundArgs a = adafactor_signature->bind(args, size_t(nargsf), kwnames);
    const py::handle params_obj = a.next(), grads_obj = a.next(), rows_obj = a.next(), cols_obj = a.next(),
                     vars_obj = a.next();
    const AdafactorHyper hyper = read_hyper(a);

    CallDevice call(a.next());  // (stream)
    const ArrayArg params = take_arrays(params_obj, "params", true, call);
    const ArrayArg grads = take_arrays(grads_obj, "grads", false, call);
    const size_t n = params.arrays.size();
    const auto rows = take_optional_arrays(rows_obj, "row_vars", n, call);
    const auto cols = take_optional_arrays(cols_obj, "col_vars", n, call);
    const auto vars = take_optional_arrays(vars_obj, "variances", n, call);
    if (grads.arrays.size() != n) {
      throw py::value_error("grads holds " + std::to_string(grads.arrays.size()) + " arrays but params holds " +
                            std::to_string(n));
    }

    std::vector<Extent> extents;
    for (size_t i = 0; i < n; ++i) {
      const ArrayRef& p = params.arrays[i];
      const ArrayRef& g = grads.arrays[i];
      const DType dtype = float_dtype_of(p, label("params", i));
      if (i > 0 && p.dtype != params.arrays[0].dtype) {
        throw py::type_error(label("params", i) + " has dtype " + p.dtype_name() + " but params[0] has " +
                             params.arrays[0].dtype_name() + "; one call updates one dtype");
      }
      (void)dtype;
      check_layout(p, label("params", i), true);
      if (g.dtype != p.dtype) {
        throw py::type_error(label("grads", i) + " has dtype " + g.dtype_name() + " but " + label("params", i) +
                             " has " + p.dtype_name());
      }
      if (!same_shape(g, p)) {
        throw py::value_error(label("grads", i) + " has shape " + shape_str(g) + " but " + label("params", i) +
                              " has shape " + shape_str(p));
      }
      check_layout(g, label("grads", i), false);
      for (const ArrayRef* x : {&p, &g}) {
        if (x->nbytes() > 0) {
          const auto b = reinterpret_cast<uintptr_t>(x->data);
          extents.push_back({b, b + uintptr_t(x->nbytes()), x == &p, label(x == &p ? "params" : "grads", i)});
        }
      }
      const std::vector<int64_t> shape(p.shape, p.shape + p.ndim);
      if (p.ndim >= 2) {
        std::vector<int64_t> row_shape = shape, col_shape = shape;
        row_shape.back() = 1;
        col_shape[shape.size() - 2] = 1;
        const char* why = "has ndim >= 2 (factored: row_vars and col_vars)";
        check_state(rows[i], "row_vars", i, p, &row_shape, why, extents);
        check_state(cols[i], "col_vars", i, p, &col_shape, why, extents);
        check_state(vars[i], "variances", i, p, nullptr, why, extents);
      } else {
        const char* why = "has ndim < 2 (not factored: variances)";
        check_state(rows[i], "row_vars", i, p, nullptr, why, extents);
        check_state(cols[i], "col_vars", i, p, nullptr, why, extents);
        check_state(vars[i], "variances", i, p, &shape, why, extents);
      }
    }
    check_no_overlap(extents);

    // Everything is checked: from here on the call writes.
    for (size_t i = 0; i < n; ++i) {
      mark_written(params.arrays[i]);
      for (const auto* state : {&rows[i], &cols[i], &vars[i]}) {
        if (*state) mark_written(**state);
      }
    }
    auto build = [&](auto zero) {
      using T = decltype(zero);
      std::vector<cpu::AdafactorTensor<T>> list;
      list.reserve(n);
      for (size_t i = 0; i < n; ++i) {
        const ArrayRef& p = params.arrays[i];
        cpu::AdafactorTensor<T> t{static_cast<T*>(p.data), static_cast<const T*>(grads.arrays[i].data), nullptr,
                                  nullptr, nullptr, 1, 1, p.size, p.ndim >= 2};
        if (t.factored) {
          t.rows = p.shape[p.ndim - 2];
          t.cols = p.shape[p.ndim - 1];
          t.batch = 1;
          for (int d = 0; d + 2 < p.ndim; ++d) t.batch *= p.shape[d];
          t.row_var = static_cast<T*>(rows[i]->data);
          t.col_var = static_cast<T*>(cols[i]->data);
        } else {
          t.variance = static_cast<T*>(vars[i]->data);
        }
        list.push_back(t);
      }
      run(list, hyper, call);
    };
    if (n > 0 && params.arrays[0].dtype == DType::Float32) {
      build(float{});
    } else if (n > 0) {
      build(double{});
    }
    Py_RETURN_NONE;
  });
}

}  // namespace

void bind_adafactor(py::module_& m) {
  using P = Signature::Param;
  adafactor_signature = new Signature(
      "adafactor_", 5,
      {P{"params", {}}, P{"grads", {}}, P{"row_vars", py::none()}, P{"col_vars", py::none()},
       P{"variances", py::none()}, P{"step", {}}, P{"lr", py::float_(1e-2)}, P{"beta2_decay", py::float_(-0.8)},
       P{"eps1", py::none()}, P{"eps2", py::float_(1e-3)}, P{"d", py::float_(1.0)},
       P{"weight_decay", py::float_(0.0)}, P{"maximize", py::bool_(false)}, P{"stream", py::none()}});
  def_fast(m, *adafactor_signature, &adafactor_call,
           "Fused Adafactor step (Shazeer & Stern 2018) with torch.optim.Adafactor's semantics, in place.\n"
           "w = step**beta2_decay; alpha = max(eps2, RMS(p)) * min(lr, 1/sqrt(step)); p *= 1 - lr * weight_decay;\n"
           "ndim >= 2 (factored over the last two dims): row_var = lerp(row_var, mean(g*g, -1), w),\n"
           "col_var = lerp(col_var, mean(g*g, -2), w), V = row_var @ col_var / max(mean(row_var, -2), eps1);\n"
           "else variance = lerp(variance, g*g, w), V = variance. U = g / sqrt(max(V, eps1**2));\n"
           "p -= alpha / max(1, RMS(U) / d) * U.\n\n"
           "params, grads: an array or a list of them (float32 or float64, C-contiguous, one dtype and one device\n"
           "per call: NumPy arrays, CPU tensors, or CUDA arrays of any DLPack / __cuda_array_interface__ framework). row_vars, col_vars, variances: None, or a list with one\n"
           "entry per parameter, in torch's state shapes: for ndim >= 2, row_vars[i] of shape[:-1] + (1,) and\n"
           "col_vars[i] of shape[:-2] + (1, shape[-1]) (variances[i] None); otherwise variances[i] of the\n"
           "parameter's shape (row_vars[i], col_vars[i] None). State starts at zero.\n"
           "  step: the 1-based number of this update (>= 1)\n"
           "  lr (0.01): >= 0; beta2_decay (-0.8): <= 0; eps1 (None: the dtype's machine epsilon): >= 0;\n"
           "  eps2 (0.001): >= 0; d (1.0): clipping threshold, >= 1; weight_decay (0.0): decoupled, >= 0;\n"
           "  maximize (False): ascend the gradient.\n"
           "  stream (None): for CUDA arrays, the stream the step is queued on (an int handle, or an object with\n"
           "  .cuda_stream or .ptr); None takes the current stream of the arrays' framework.\n"
           "The sums are accumulated in double in a fixed order: the same bits for any thread count,\n"
           "instruction set, and on a GPU as on the CPU. Bad input raises TypeError/ValueError naming the\n"
           "argument and index before anything is written.");
}

}  // namespace fastopt::bindings
