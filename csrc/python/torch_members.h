// torch.Tensor's own attributes and methods, read from C++ (torch_intake.cpp, torch_step_check.cpp).
// fastopt never imports torch: these exist once the caller has.
#pragma once

#include <pybind11/pybind11.h>

namespace fastopt::bindings {

namespace py = pybind11;

// One attribute or method of torch.Tensor (or torch.UntypedStorage) as the class defines it. When that is
// a C descriptor (torch._C.TensorBase's, as in every torch 2.x), it is applied to the object directly:
// no lookup of the name in the instance's __dict__ and the class's MRO on every read (most of a read's
// cost), and no Python override of a subclass in between (the C function still honours
// __torch_function__). Otherwise (a torch that defines the name in Python) it is looked up as usual.
class Member {
 public:
  Member(py::handle cls, const char* name, bool method)
      : name_(py::reinterpret_steal<py::object>(PyUnicode_InternFromString(name))), method_(method) {
    PyObject* descr = PyObject_GetAttr(cls.ptr(), name_.ptr());
    if (descr == nullptr) throw py::error_already_set();
    descr_ = py::reinterpret_steal<py::object>(descr);
    direct_ = method ? Py_IS_TYPE(descr, &PyMethodDescr_Type) : Py_IS_TYPE(descr, &PyGetSetDescr_Type);
  }

  // The attribute's value, or the method called without arguments.
  py::object operator()(py::handle obj) const {
    PyObject* value;
    if (direct_ && method_) {
      PyObject* args[1] = {obj.ptr()};
      value = PyObject_Vectorcall(descr_.ptr(), args, 1, nullptr);
    } else if (direct_) {
      value = Py_TYPE(descr_.ptr())->tp_descr_get(descr_.ptr(), obj.ptr(), reinterpret_cast<PyObject*>(Py_TYPE(obj.ptr())));
    } else {
      value = method_ ? PyObject_CallMethodNoArgs(obj.ptr(), name_.ptr()) : PyObject_GetAttr(obj.ptr(), name_.ptr());
    }
    if (value == nullptr) throw py::error_already_set();
    return py::reinterpret_steal<py::object>(value);
  }

 private:
  py::object name_, descr_;
  bool method_, direct_ = false;
};

// torch's types and the members read from a tensor and its storage.
struct TorchTypes {
  py::object tensor, strided;
  py::object f16, bf16, f32, f64, i32, i64, u8;
  Member layout, requires_grad, dtype, shape, data_ptr, is_contiguous, is_cuda, is_cpu, get_device, is_neg,
      untyped_storage, is_nested, grad, numel;
  Member storage_data_ptr, storage_nbytes;
};

// torch's types, or nullptr until torch is imported (by someone else: fastopt never imports it).
const TorchTypes* torch_types();

inline bool truth(const py::object& value) { return value.ptr() == Py_True; }

}  // namespace fastopt::bindings
