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
    if (direct_ && method) {
      const PyMethodDef* def = reinterpret_cast<PyMethodDescrObject*>(descr)->d_method;
      const int flags = def->ml_flags & ~METH_COEXIST;
      if (flags == METH_NOARGS) call_ = Call::NoArgs;
      if (flags == (METH_VARARGS | METH_KEYWORDS)) call_ = Call::VarArgs;
    } else if (direct_ && reinterpret_cast<PyGetSetDescrObject*>(descr)->d_getset->get != nullptr) {
      call_ = Call::Getter;
    }
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

  // As operator(), for an object known to be an instance of the class the member was read from (a tensor
  // the caller has checked): torch's C function called as its descriptor would call it, without the
  // descriptor's dispatch and instance check, about a fifth of a read's cost (fastopt.torch's repeated step
  // reads about ten facts per parameter at every step).
  py::object unchecked(py::handle obj) const {
    PyObject* value;
    switch (call_) {
      case Call::NoArgs:
        value = method_def()->ml_meth(obj.ptr(), nullptr);
        break;
      case Call::VarArgs:
        value = reinterpret_cast<PyCFunctionWithKeywords>(reinterpret_cast<void (*)(void)>(method_def()->ml_meth))(
            obj.ptr(), empty_args().ptr(), nullptr);
        break;
      case Call::Getter: {
        const PyGetSetDef* def = reinterpret_cast<PyGetSetDescrObject*>(descr_.ptr())->d_getset;
        value = def->get(obj.ptr(), def->closure);
        break;
      }
      default:
        return (*this)(obj);
    }
    if (value == nullptr) throw py::error_already_set();
    return py::reinterpret_steal<py::object>(value);
  }

 private:
  enum class Call { Descriptor, NoArgs, VarArgs, Getter };

  const PyMethodDef* method_def() const { return reinterpret_cast<PyMethodDescrObject*>(descr_.ptr())->d_method; }
  static const py::tuple& empty_args() {
    static const py::tuple* args = new py::tuple(0);  // (lives as long as the process: never released at exit)
    return *args;
  }

  py::object name_, descr_;
  bool method_, direct_ = false;
  Call call_ = Call::Descriptor;
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
