// The producer side of DLPack, for memory fastopt owns (fastopt._device.DeviceBuffer): a capsule that a
// consumer (JAX, PyTorch, CuPy; NumPy for host memory) turns into its own array without a copy.
//
// The capsule holds a strong reference to the Python object owning the memory, so the memory lives as
// long as the consumer's array. Ownership follows the DLPack rules: a consumer renames the capsule
// "used_dltensor[_versioned]" and calls the deleter when its array dies; a capsule never consumed is
// released by its own destructor. The deleter may run on any thread, with or without the GIL.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <string>
#include <type_traits>
#include <vector>

#include "python/dlpack.h"

namespace fastopt::bindings {

namespace py = pybind11;

namespace {

constexpr const char* kLegacyName = "dltensor";
constexpr const char* kVersionedName = "dltensor_versioned";

struct ExportContext {
  PyObject* owner;  // a strong reference, dropped by the deleter
  std::vector<int64_t> shape;
  std::vector<int64_t> strides;  // row-major, in elements (explicit: pre-1.0 consumers may need them)
};

dlpack::DataType data_type(const std::string& dtype) {
  if (dtype == "float16") return {dlpack::kFloat, 16, 1};
  if (dtype == "bfloat16") return {dlpack::kBfloat, 16, 1};
  if (dtype == "float32") return {dlpack::kFloat, 32, 1};
  if (dtype == "float64") return {dlpack::kFloat, 64, 1};
  if (dtype == "int32") return {dlpack::kInt, 32, 1};
  if (dtype == "int64") return {dlpack::kInt, 64, 1};
  throw py::value_error("dtype must be float16, bfloat16, float32, float64, int32 or int64, got '" + dtype + "'");
}

template <class Managed>
void delete_managed(Managed* self) {
  auto* context = static_cast<ExportContext*>(self->manager_ctx);
  const PyGILState_STATE gil = PyGILState_Ensure();
  Py_DECREF(context->owner);
  PyGILState_Release(gil);
  delete context;
  delete self;
}

// A capsule's destructor: it still owns the tensor unless a consumer renamed it.
template <class Managed>
void destroy_capsule(PyObject* capsule) {
  const char* name = std::is_same_v<Managed, dlpack::ManagedTensorVersioned> ? kVersionedName : kLegacyName;
  if (!PyCapsule_IsValid(capsule, name)) return;  // consumed: the consumer calls the deleter
  auto* managed = static_cast<Managed*>(PyCapsule_GetPointer(capsule, name));
  managed->deleter(managed);
}

template <class Managed>
py::object make_capsule(Managed* managed, const char* name) {
  PyObject* capsule = PyCapsule_New(managed, name, &destroy_capsule<Managed>);
  if (capsule == nullptr) {
    managed->deleter(managed);
    throw py::error_already_set();
  }
  return py::reinterpret_steal<py::object>(capsule);
}

py::object export_capsule(py::object owner, uintptr_t data, const std::vector<int64_t>& shape,
                          const std::string& dtype, int device_type, int device_id, bool versioned,
                          bool read_only) {
  const dlpack::DataType type = data_type(dtype);
  // (the legacy struct has no flags: a read-only export there would be writable)
  if (read_only && !versioned) throw py::value_error("a read-only export needs a versioned capsule (DLPack >= 1.0)");
  for (size_t i = 0; i < shape.size(); ++i) {
    if (shape[i] < 0) throw py::value_error("shape[" + std::to_string(i) + "] must be >= 0");
  }
  auto* context = new ExportContext{owner.release().ptr(), shape, std::vector<int64_t>(shape.size())};
  int64_t stride = 1;
  for (size_t i = shape.size(); i-- > 0;) {
    context->strides[i] = stride;
    stride *= shape[i] > 0 ? shape[i] : 1;
  }
  const dlpack::Tensor tensor{reinterpret_cast<void*>(data), dlpack::Device{device_type, device_id},
                              static_cast<int32_t>(shape.size()), type, context->shape.data(),
                              context->strides.data(), 0};
  if (versioned) {
    auto* managed = new dlpack::ManagedTensorVersioned{dlpack::Version{1, 0}, context,
                                                       &delete_managed<dlpack::ManagedTensorVersioned>,
                                                       read_only ? dlpack::kFlagReadOnly : 0, tensor};
    return make_capsule(managed, kVersionedName);
  }
  auto* managed = new dlpack::ManagedTensor{tensor, context, &delete_managed<dlpack::ManagedTensor>};
  return make_capsule(managed, kLegacyName);
}

}  // namespace

void bind_dlpack_export(py::module_& m) {
  m.def("_dlpack_export", &export_capsule, py::arg("owner"), py::arg("data"), py::arg("shape"), py::arg("dtype"),
        py::arg("device_type"), py::arg("device_id"), py::arg("versioned"), py::arg("read_only") = false,
        "A DLPack capsule of the C-contiguous memory at `data` that `owner` keeps alive ('dltensor_versioned' "
        "with DLPack 1.0 when `versioned`, else 'dltensor').");
}

}  // namespace fastopt::bindings
