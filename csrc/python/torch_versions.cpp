#include "python/torch_versions.h"

#include <optional>

namespace fastopt::bindings {

namespace {

// torch._C._increment_version, which torch.autograd.graph.increment_version calls: a list of tensors
// in one call (about 0.3 us for five). Looked up once, when the first torch tensor is written (torch is
// imported by then); kept for the life of the process, like the torch module.
PyObject* increment_version() {
  static PyObject* fn = nullptr;
  if (fn == nullptr) {
    const py::module_ torch = py::module_::import("torch");
    py::object found = torch.attr("_C").attr("_increment_version");
    fn = found.release().ptr();
  }
  return fn;
}

void bump(const py::list& tensors) {
  PyObject* fn = increment_version();
  PyObject* result = PyObject_CallOneArg(fn, tensors.ptr());
  if (result != nullptr) {
    Py_DECREF(result);
    return;
  }
  // torch < 2.2 takes one tensor per call (never pass it a tensor when it takes a list: it would
  // iterate over the tensor's rows).
  if (!PyErr_ExceptionMatches(PyExc_TypeError)) throw py::error_already_set();
  PyErr_Clear();
  for (const py::handle t : tensors) {
    PyObject* one = PyObject_CallOneArg(fn, t.ptr());
    if (one == nullptr) throw py::error_already_set();
    Py_DECREF(one);
  }
}

}  // namespace

void mark_written(const ArrayArg& params, const std::vector<const ArrayArg*>& others) {
  std::optional<py::list> tensors;  // made only when a torch tensor is written
  auto collect = [&](const ArrayArg& arg) {
    if (!arg.written) return;
    for (const ArrayRef& a : arg.arrays) {
      if (!a.torch_tensor) continue;
      if (!tensors) tensors.emplace(0);
      tensors->append(a.object);
    }
  };
  collect(params);
  for (const ArrayArg* arg : others) {
    if (arg != nullptr) collect(*arg);
  }
  if (tensors) bump(*tensors);
}

void mark_written(const ArrayRef& written) {
  if (!written.torch_tensor) return;
  py::list tensors(0);
  tensors.append(written.object);
  bump(tensors);
}

}  // namespace fastopt::bindings
