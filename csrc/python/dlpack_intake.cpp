// DLPack producers (dlpack.h): the device a producer names, its export, and the checks of what the
// export says before anything uses it.
#include <algorithm>
#include <climits>
#include <cstdint>
#include <memory>

#include "python/array_producers.h"
#include "python/dlpack.h"
#include "python/memory_claims.h"
#include "python/protocol_values.h"

namespace fastopt::bindings {

namespace {

constexpr const char* kExport = "its DLPack export";
constexpr uint32_t kMajorVersion = 1;  // the DLManagedTensorVersioned layout dlpack.h declares

// A consumed export: the deleter runs when the last ArrayRef copy holding it goes (with the GIL held:
// the bindings drop their arrays after re-acquiring it).
struct DlpackHold {
  dlpack::ManagedTensor* legacy = nullptr;
  dlpack::ManagedTensorVersioned* versioned = nullptr;
  ~DlpackHold() {
    if (versioned && versioned->deleter) versioned->deleter(versioned);
    if (legacy && legacy->deleter) legacy->deleter(legacy);
  }
};

std::optional<DType> dlpack_dtype(const dlpack::DataType& t) {
  if (t.lanes != 1) return std::nullopt;
  if (t.code == dlpack::kFloat && t.bits == 16) return DType::Float16;
  if (t.code == dlpack::kFloat && t.bits == 32) return DType::Float32;
  if (t.code == dlpack::kFloat && t.bits == 64) return DType::Float64;
  if (t.code == dlpack::kBfloat && t.bits == 16) return DType::BFloat16;
  if (t.code == dlpack::kInt && t.bits == 32) return DType::Int32;
  if (t.code == dlpack::kInt && t.bits == 64) return DType::Int64;
  if (t.code == dlpack::kUInt && t.bits == 8) return DType::UInt8;
  return std::nullopt;
}

std::string dlpack_dtype_text(const dlpack::DataType& t) {
  static const char* const codes[] = {"int", "uint", "float", "opaque", "bfloat", "complex", "bool"};
  std::string name = t.code < 7 ? codes[t.code] : "code" + std::to_string(t.code);
  name += std::to_string(t.bits);
  if (t.lanes != 1) name += "x" + std::to_string(t.lanes);
  return name;
}

// C-contiguous: every extent > 1 has the stride of the extents after it (extents of 1 may carry any
// stride, as PyTorch gives them). An empty array is contiguous whatever its strides, as NumPy and the
// __cuda_array_interface__ path count it. (The extents were checked: their product fits int64.)
bool dlpack_contiguous(const dlpack::Tensor& t, int ndim) {
  if (t.strides == nullptr) return true;
  for (int d = 0; d < ndim; ++d) {
    if (t.shape[d] == 0) return true;
  }
  int64_t expected = 1;
  for (int d = ndim - 1; d >= 0; --d) {
    if (t.shape[d] != 1 && t.strides[d] != expected) return false;
    expected *= t.shape[d];
  }
  return true;
}

// The `stream` argument of __dlpack__ for a CUDA consumer: the stream's handle, except that the
// legacy default stream is 1 (0 is reserved by the protocol).
py::int_ dlpack_stream(void* stream) {
  return py::int_(stream == nullptr ? intptr_t(1) : reinterpret_cast<intptr_t>(stream));
}

// The device a DLPack (device_type, device_id) pair names, or nullopt for one fastopt cannot use.
std::optional<Device> device_of_pair(int64_t type, int64_t id) {
  if (type == dlpack::kCPU || type == dlpack::kCUDAHost) return Device{DeviceKind::CPU, 0};
  if (type == dlpack::kCUDA || type == dlpack::kCUDAManaged) return Device{DeviceKind::CUDA, int(id)};
  return std::nullopt;
}

py::object call_dlpack(py::handle obj, const py::object& method, const Device& device, const CallDevice& call,
                       const std::string& where) {
  py::dict kwargs;
  if (device.kind == DeviceKind::CUDA) kwargs["stream"] = dlpack_stream(call.stream);
  try {
    try {
      // DLPack 1.0: a versioned capsule (read-only flag), and copy=False: never a copy. A copy of
      // kwargs (py::dict's copy constructor shares the dict, so the retry below would pass these too).
      py::dict modern(kwargs.attr("copy")());
      modern["max_version"] = py::make_tuple(1, 0);
      modern["copy"] = py::bool_(false);
      return method(**modern);
    } catch (py::error_already_set& error) {
      if (!error.matches(PyExc_TypeError)) throw;  // an older producer: no max_version / copy
      return method(**kwargs);
    }
  } catch (py::error_already_set& error) {
    protocol_failed(error, where, obj, "could not be shared through __dlpack__");
  }
}

}  // namespace

Device dlpack_device_of(py::handle obj, const std::string& where) {
  const py::object method = attr_or_null(obj, "__dlpack_device__", where);
  if (!method) throw py::type_error(where + " (" + type_name(obj) + ") has no __dlpack_device__");
  const py::object answer = call_protocol(method, obj, where, "could not tell its device through __dlpack_device__");
  const std::string what = "__dlpack_device__()";
  if (!PyTuple_Check(answer.ptr()) || PyTuple_GET_SIZE(answer.ptr()) != 2) {
    throw py::type_error(where + " (" + type_name(obj) + "): " + what + " must return (device_type, device_id), got " +
                         kind_of(answer));
  }
  const int64_t type = int_in_range(PyTuple_GET_ITEM(answer.ptr(), 0), INT32_MIN, INT32_MAX, where,
                                    "__dlpack_device__()'s device_type");
  const int64_t id = int_in_range(PyTuple_GET_ITEM(answer.ptr(), 1), INT32_MIN, INT32_MAX, where,
                                  "__dlpack_device__()'s device_id");
  const std::optional<Device> device = device_of_pair(type, id);
  if (!device) {
    throw py::type_error(where + " (" + type_name(obj) + ") lives on DLPack device type " + std::to_string(type) +
                         "; fastopt takes CPU and CUDA arrays");
  }
  if (device->kind == DeviceKind::CUDA && id < 0) {
    throw py::value_error(where + " (" + type_name(obj) + ") names CUDA device " + std::to_string(id) +
                          " in " + what);
  }
  return *device;
}

ArrayRef from_dlpack(py::handle obj, const py::object& method, const Device& device, const CallDevice& call,
                     const std::string& where) {
  const py::object capsule = call_dlpack(obj, method, device, call, where);
  PyObject* cap = capsule.ptr();
  auto hold = std::make_shared<DlpackHold>();
  const dlpack::Tensor* t = nullptr;
  bool read_only = false, copied = false;
  if (PyCapsule_IsValid(cap, "dltensor_versioned")) {
    auto* managed = static_cast<dlpack::ManagedTensorVersioned*>(PyCapsule_GetPointer(cap, "dltensor_versioned"));
    if (managed->version.major != kMajorVersion) {
      // Not consumed (the capsule keeps its name, so its own destructor frees the export): a major version
      // fastopt does not know may lay the tensor out differently.
      throw py::type_error(where + " (" + type_name(obj) + ") exported DLPack " +
                           std::to_string(managed->version.major) + "." + std::to_string(managed->version.minor) +
                           "; fastopt reads DLPack 1.x (it asked for max_version=(1, 0))");
    }
    hold->versioned = managed;
    PyCapsule_SetName(cap, "used_dltensor_versioned");
    t = &managed->dl_tensor;
    read_only = (managed->flags & dlpack::kFlagReadOnly) != 0;
    copied = (managed->flags & dlpack::kFlagIsCopied) != 0;
  } else if (PyCapsule_IsValid(cap, "dltensor")) {
    hold->legacy = static_cast<dlpack::ManagedTensor*>(PyCapsule_GetPointer(cap, "dltensor"));
    PyCapsule_SetName(cap, "used_dltensor");
    t = &hold->legacy->dl_tensor;
  } else {
    throw py::type_error(where + ".__dlpack__() did not return a DLPack capsule (got " + kind_of(capsule) + ")");
  }
  ArrayRef r;
  r.object = py::reinterpret_borrow<py::object>(obj);
  r.keep = std::move(hold);  // from here on, a refusal releases the export (its deleter runs)

  // The export must describe the memory of the device __dlpack_device__ named (the call was set up for it).
  const std::optional<Device> exported = device_of_pair(t->device.device_type, t->device.device_id);
  if (!exported || *exported != device) {
    throw py::value_error(where + " (" + type_name(obj) + "): " + kExport + " is on DLPack device (" +
                          std::to_string(t->device.device_type) + ", " + std::to_string(t->device.device_id) +
                          ") but its __dlpack_device__() says " + device_str(device));
  }
  r.dtype = dlpack_dtype(t->dtype);
  if (!r.dtype) r.dtype_text = dlpack_dtype_text(t->dtype);
  const int64_t item = r.dtype ? dtype_size(*r.dtype) : std::max<int64_t>(1, (int64_t(t->dtype.bits) * t->dtype.lanes + 7) / 8);
  r.ndim = check_ndim(t->ndim, t->shape != nullptr, where, kExport);
  r.shape = t->shape;
  r.size = count_elements(t->shape, r.ndim, where, kExport);
  uintptr_t data = 0;
  if (__builtin_add_overflow(reinterpret_cast<uintptr_t>(t->data), uintptr_t(t->byte_offset), &data)) {
    throw py::value_error(where + ": the byte_offset of " + kExport + " runs past the end of the address space");
  }
  check_data_range(data, r.size, item, where, kExport);
  r.data = reinterpret_cast<void*>(data);
  r.device = device;
  r.contiguous = dlpack_contiguous(*t, r.ndim);
  r.aligned = data % uintptr_t(item) == 0;
  // A copy cannot take an in-place update: refuse it as written memory (checked by check_layout).
  r.writeable = !read_only && !copied && !immutable_producer(obj, where);
  return r;
}

}  // namespace fastopt::bindings
