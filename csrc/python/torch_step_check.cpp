// The twins' repeated step, natively: what fastopt/torch/_step_plan.py proves at each step about the
// tensors of a planned kernel call, read through torch.Tensor's own C descriptors (torch_members.h) at tens of
// nanoseconds per read, where the same reads from Python (and Tensor.numpy() of each gradient) cost about
// 2 us per parameter.
//
//  _take_torch(tensors) -> _TakenArrays    CPU tensors through the full intake (from_torch), once: a plan's
//                                          parameters (detached: the same memory and version counter) and
//                                          state; kernel calls read them as taken (take_arrays)
//  _StepCheck(params, mask, kept, steps, grad_types)
//      .grads(params) -> _TakenArrays | None   the call's gradients; None when the group's parameters, which
//                                          of them have gradients, a gradient's facts (type, dtype, layout,
//                                          device, shape, contiguity, negative bit) or a kept
//                                          tensor's address or size differ from the plan: the full step runs
//      .count(max) -> int | None              the whole step count all `steps` hold (after grads())
//      .advance(count)                        writes the next count into every step tensor
//  _StateSnapshot(state) .unchanged(state)  the optimizer's state mapping: the same dicts, holding the same
//                                          values under the same keys, in the same order
//
// The reads are consistent: the caller declines while a torch function mode is active (it could answer a
// read with Python code), and a gradient's type must be exactly a plain one (whose reads run none). The
// kept tensors' memory is held by their _TakenArrays (from_torch holds each storage). The gradients are
// read, never written, and held as tensors for the call, as torch's own ops hold their operands: their
// storages are not read and held as from_torch does (about a tenth of the check's cost per parameter).
#include <pybind11/stl.h>

#include <memory>
#include <vector>

#include "python/array_intake.h"
#include "python/array_producers.h"
#include "python/torch_members.h"

namespace fastopt::bindings {

namespace {

PyTypeObject* taken_type = nullptr;  // _TakenArrays, set when the module registers it

std::vector<int64_t> dims_of(const py::object& shape) {
  std::vector<int64_t> dims;
  for (py::handle d : shape) dims.push_back(d.cast<int64_t>());
  return dims;
}

// (t: a torch tensor, read without the descriptors' instance checks: Member::unchecked)
uintptr_t address_of(const TorchTypes& torch, py::handle t) {
  return uintptr_t(torch.data_ptr.unchecked(t).cast<unsigned long long>());
}

int64_t numel_of(const TorchTypes& torch, py::handle t) { return torch.numel.unchecked(t).cast<int64_t>(); }

const TorchTypes& loaded_torch() {
  const TorchTypes* torch = torch_types();
  if (torch == nullptr) throw py::type_error("torch is not imported");
  return *torch;
}

class StepCheck {
 public:
  StepCheck(const py::list& params, const std::vector<bool>& mask, const py::list& kept, const TakenArrays& steps,
            const py::tuple& grad_types)
      : torch_(loaded_torch()), mask_(mask), steps_(steps) {
    if (size_t(params.size()) != mask.size()) throw py::value_error("params and mask differ in length");
    auto shapes = std::make_shared<std::vector<std::vector<int64_t>>>();
    // (every object read later without the descriptors' instance checks is a tensor: checked here)
    for (size_t i = 0; i < mask.size(); ++i) {
      if (!is_torch_tensor(params[i], "params")) throw py::type_error("params must be torch tensors");
      params_.push_back(py::reinterpret_borrow<py::object>(params[i]));
      if (!mask[i]) continue;
      const py::object shape = torch_.shape(params[i]);
      if (member_shapes_.empty()) {
        dtype_object_ = torch_.dtype(params[i]);
        if (dtype_object_.is(torch_.f32)) {
          dtype_ = DType::Float32;
        } else if (dtype_object_.is(torch_.f64)) {
          dtype_ = DType::Float64;
        } else if (dtype_object_.is(torch_.f16)) {
          dtype_ = DType::Float16;
        } else if (dtype_object_.is(torch_.bf16)) {
          dtype_ = DType::BFloat16;
        } else {
          throw py::type_error("a planned call's params are float32, float64, float16 or bfloat16");
        }
      }
      member_shapes_.push_back(shape);
      shapes->push_back(dims_of(shape));
    }
    shapes_ = shapes;
    for (py::handle t : kept) {
      if (!is_torch_tensor(t, "kept")) throw py::type_error("kept must hold torch tensors");
      kept_.push_back(py::reinterpret_borrow<py::object>(t));
      kept_addresses_.push_back(address_of(torch_, t));
      kept_sizes_.push_back(numel_of(torch_, t));
    }
    for (py::handle type : grad_types) {
      if (!PyType_Check(type.ptr()) || PyObject_IsSubclass(type.ptr(), torch_.tensor.ptr()) != 1) {
        PyErr_Clear();
        throw py::type_error("grad_types must be torch.Tensor classes");
      }
      grad_types_.push_back(py::reinterpret_borrow<py::object>(type));
    }
    for (const ArrayRef& s : steps_.arrays) {
      if (s.dtype != DType::Float32 && s.dtype != DType::Float64) {
        throw py::type_error("steps must be float32 or float64");
      }
    }
  }

  py::object grads(py::handle params) const {
    try {
      return checked_grads(params);
    } catch (py::error_already_set& error) {
      if (!error.matches(PyExc_Exception)) throw;
      return py::none();  // (a tensor torch cannot describe: the full step names it)
    }
  }

  py::object count(int64_t max_count) const {
    double first = 0;
    for (size_t i = 0; i < steps_.arrays.size(); ++i) {
      const ArrayRef& s = steps_.arrays[i];
      const double value = *s.dtype == DType::Float32 ? double(*static_cast<const float*>(s.data))
                                                      : *static_cast<const double*>(s.data);
      if (i == 0) first = value;
      if (value != first) return py::none();
    }
    if (!(first >= 0 && first < 0x1p63)) return py::none();  // (NaN too)
    const int64_t whole = int64_t(first);
    if (double(whole) != first || whole > max_count) return py::none();
    return py::int_(whole);
  }

  void advance(int64_t count) const {
    for (const ArrayRef& s : steps_.arrays) {
      if (*s.dtype == DType::Float32) {
        *static_cast<float*>(s.data) = float(count);
      } else {
        *static_cast<double*>(s.data) = double(count);
      }
    }
  }

 private:
  bool plain(py::handle t) const {
    for (const py::object& type : grad_types_) {
      if (reinterpret_cast<PyObject*>(Py_TYPE(t.ptr())) == type.ptr()) return true;
    }
    return false;
  }

  py::object checked_grads(py::handle params) const {
    if (!PyList_CheckExact(params.ptr()) || size_t(PyList_GET_SIZE(params.ptr())) != params_.size()) {
      return py::none();
    }
    for (size_t i = 0; i < params_.size(); ++i) {
      if (PyList_GET_ITEM(params.ptr(), py::ssize_t(i)) != params_[i].ptr()) return py::none();
    }
    const std::shared_ptr<const void> hold = shapes_;  // (what the gradients' shapes point into)
    TakenArrays out;
    out.arrays.reserve(member_shapes_.size());
    const int64_t item = dtype_size(dtype_);
    size_t member = 0;
    for (size_t i = 0; i < params_.size(); ++i) {
      py::object grad = torch_.grad.unchecked(params_[i]);
      if (grad.is_none() == mask_[i]) return py::none();
      if (!mask_[i]) continue;
      // A dense CPU tensor of the parameter's dtype and shape, its values as stored. (One that requires grad,
      // from backward(create_graph=True), is read as the full step reads it: under no_grad, as torch does.)
      if (!plain(grad) || torch_.dtype.unchecked(grad).ptr() != dtype_object_.ptr() ||
          torch_.layout.unchecked(grad).ptr() != torch_.strided.ptr() || !truth(torch_.is_cpu.unchecked(grad)) ||
          truth(torch_.is_neg.unchecked(grad)) || !truth(torch_.is_contiguous.unchecked(grad))) {
        return py::none();
      }
      const int equal =
          PyObject_RichCompareBool(torch_.shape.unchecked(grad).ptr(), member_shapes_[member].ptr(), Py_EQ);
      if (equal < 0) throw py::error_already_set();
      if (equal == 0) return py::none();
      const std::vector<int64_t>& dims = (*shapes_)[member];
      ArrayRef r;
      const uintptr_t data = address_of(torch_, grad);
      r.object = std::move(grad);
      r.data = reinterpret_cast<void*>(data);
      r.dtype = dtype_;
      r.ndim = int(dims.size());
      r.shape = dims.data();
      r.size = 1;
      for (int64_t d : dims) r.size *= d;
      r.aligned = data % uintptr_t(item) == 0;
      r.torch_tensor = true;
      r.keep = std::const_pointer_cast<void>(hold);
      out.arrays.push_back(std::move(r));
      ++member;
    }
    // The parameters and state tensors the call writes, where the plan found them and of the size it found
    // (a tensor narrowed over its own memory keeps its address); the step counts where they were (0-d
    // tensors of the optimizer's own: a count given another size gets other memory).
    for (size_t i = 0; i < kept_.size(); ++i) {
      if (address_of(torch_, kept_[i]) != kept_addresses_[i] || numel_of(torch_, kept_[i]) != kept_sizes_[i]) {
        return py::none();
      }
    }
    for (const ArrayRef& s : steps_.arrays) {
      if (address_of(torch_, s.object) != reinterpret_cast<uintptr_t>(s.data)) return py::none();
    }
    return py::cast(std::move(out));
  }

  const TorchTypes& torch_;
  std::vector<py::object> params_;
  std::vector<bool> mask_;
  std::vector<py::object> member_shapes_;  // torch.Size of each member, compared with its gradient's
  std::shared_ptr<const std::vector<std::vector<int64_t>>> shapes_;
  py::object dtype_object_;
  DType dtype_ = DType::Float32;
  std::vector<py::object> kept_;
  std::vector<uintptr_t> kept_addresses_;
  std::vector<int64_t> kept_sizes_;
  TakenArrays steps_;
  std::vector<py::object> grad_types_;  // (exact types: a subclass may override what the reads return)
};

// The optimizer's state mapping as a plan found it. The objects are held, so that an identity compared
// later is never that of a new object at a freed one's address.
class StateSnapshot {
 public:
  explicit StateSnapshot(py::handle state) {
    if (!PyDict_Check(state.ptr())) throw py::type_error("state must be a dict");
    PyObject *key, *value;
    py::ssize_t pos = 0;
    while (PyDict_Next(state.ptr(), &pos, &key, &value)) {
      if (!PyDict_Check(value)) throw py::type_error("each state must be a dict");
      entries_.emplace_back(py::reinterpret_borrow<py::object>(key), py::reinterpret_borrow<py::object>(value));
      PyObject *name, *item;
      py::ssize_t inner = 0;
      while (PyDict_Next(value, &inner, &name, &item)) {
        items_.emplace_back(py::reinterpret_borrow<py::object>(name), py::reinterpret_borrow<py::object>(item));
      }
      counts_.push_back(size_t(PyDict_GET_SIZE(value)));
    }
  }

  bool unchanged(py::handle state) const {
    if (!PyDict_Check(state.ptr()) || size_t(PyDict_GET_SIZE(state.ptr())) != entries_.size()) return false;
    PyObject *key, *value;
    py::ssize_t pos = 0;
    size_t k = 0, at = 0;
    while (PyDict_Next(state.ptr(), &pos, &key, &value)) {
      if (key != entries_[k].first.ptr() || value != entries_[k].second.ptr() ||
          size_t(PyDict_GET_SIZE(value)) != counts_[k]) {
        return false;
      }
      PyObject *name, *item;
      py::ssize_t inner = 0;
      while (PyDict_Next(value, &inner, &name, &item)) {
        if (name != items_[at].first.ptr() || item != items_[at].second.ptr()) return false;
        ++at;
      }
      ++k;
    }
    return true;
  }

 private:
  std::vector<std::pair<py::object, py::object>> entries_, items_;
  std::vector<size_t> counts_;
};

TakenArrays take_torch(const py::list& tensors) {
  TakenArrays out;
  CallDevice call;
  for (size_t i = 0; i < tensors.size(); ++i) {
    const std::string where = "tensors[" + std::to_string(i) + "]";
    if (!is_torch_tensor(tensors[i], where)) throw py::type_error(where + " must be a torch.Tensor");
    ArrayRef a = take_array(tensors[i], where, call);
    if (a.device.kind != DeviceKind::CPU) throw py::value_error(where + " must be on the CPU");
    out.arrays.push_back(std::move(a));
  }
  return out;
}

}  // namespace

const TakenArrays* taken_arrays(py::handle obj) {
  if (taken_type == nullptr || Py_TYPE(obj.ptr()) != taken_type) return nullptr;
  return &obj.cast<const TakenArrays&>();
}

void bind_step_check(py::module_& m) {
  auto taken = py::class_<TakenArrays>(m, "_TakenArrays", "Arrays taken once for many kernel calls (private)")
                   .def("__len__", [](const TakenArrays& t) { return t.arrays.size(); })
                   .def("spans", [](const TakenArrays& t) {
                     py::list spans;
                     for (const ArrayRef& a : t.arrays) {
                       if (a.size == 0) continue;
                       const uintptr_t start = reinterpret_cast<uintptr_t>(a.data);
                       spans.append(py::make_tuple(start, start + uintptr_t(a.nbytes())));
                     }
                     return spans;
                   });
  taken_type = reinterpret_cast<PyTypeObject*>(taken.ptr());
  m.def("_take_torch", &take_torch, py::arg("tensors"));
  py::class_<StepCheck>(m, "_StepCheck", "One planned kernel call's tensors, checked at each step (private)")
      .def(py::init<const py::list&, const std::vector<bool>&, const py::list&, const TakenArrays&, const py::tuple&>(),
           py::arg("params"), py::arg("mask"), py::arg("kept"), py::arg("steps"), py::arg("grad_types"))
      .def("grads", &StepCheck::grads, py::arg("params"))
      .def("count", &StepCheck::count, py::arg("max_count"))
      .def("advance", &StepCheck::advance, py::arg("count"));
  py::class_<StateSnapshot>(m, "_StateSnapshot", "An optimizer's state mapping as a plan found it (private)")
      .def(py::init<py::handle>(), py::arg("state"))
      .def("unchanged", &StateSnapshot::unchanged, py::arg("state"));
}

}  // namespace fastopt::bindings
