// Array intake for the bindings: turns "one array or a list/tuple of arrays" arguments into checked
// views of memory, and refuses (never converts or copies) anything an in-place update cannot use.
// Every check runs before any kernel writes, and every message names the argument and index.
//
// An array is a numpy.ndarray (the fast path), or any object with __dlpack__ / __dlpack_device__
// (PyTorch, CuPy, JAX, NumPy...) or __cuda_array_interface__ (CuPy, Numba...), on the CPU or a CUDA
// device, taken without a copy. All arrays of one call sit on one device; for a CUDA call the stream
// is resolved once (CallDevice) and every DLPack export is ordered on it, as the protocol defines.
// torch.Tensor objects are read through their own methods (same rules, a tenth of the cost).
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/dtype.h"

namespace fastopt::bindings {

namespace py = pybind11;

enum class DeviceKind : uint8_t { CPU, CUDA };

struct Device {
  DeviceKind kind = DeviceKind::CPU;
  int id = 0;
  bool operator==(const Device& other) const { return kind == other.kind && id == other.id; }
  bool operator!=(const Device& other) const { return !(*this == other); }
};

std::string device_str(const Device& device);  // "cpu", "cuda:0"

// One array after intake: a view of its memory, valid while this object lives (it holds the Python
// object, and for a DLPack export the capsule's tensor, released when the last copy goes).
struct ArrayRef {
  py::object object;                   // what the caller passed
  void* data = nullptr;
  std::optional<DType> dtype;          // nullopt: a dtype fastopt never takes (see dtype_text)
  std::string dtype_text;              // the dtype's name, for messages (filled when dtype is nullopt)
  int ndim = 0;
  const int64_t* shape = nullptr;      // ndim extents
  int64_t size = 0;                    // elements
  Device device;
  bool writeable = true;               // false: read-only NumPy, JAX, a read-only export
  bool contiguous = true;              // C-contiguous (extents of 1 ignored)
  bool aligned = true;                 // data is a multiple of the element size
  bool torch_tensor = false;           // a torch.Tensor read through its own methods (torch_versions.h)
  std::shared_ptr<void> keep;          // a DLPack export or the shape storage of an interface dict

  int64_t nbytes() const { return dtype ? size * dtype_size(*dtype) : 0; }
  std::string dtype_name() const { return dtype ? std::string(fastopt::dtype_name(*dtype)) : dtype_text; }
};

// The device of a call's arrays and, for CUDA, the stream its work is queued on. The first array
// taken fixes the device; the stream is the caller's stream= or, when that is None, the current
// stream of the first CUDA array's producer (its framework's current stream).
struct CallDevice {
  explicit CallDevice(py::handle stream_arg = py::none()) : stream_arg(stream_arg) {}

  py::handle stream_arg;
  std::optional<Device> device;
  std::string fixed_by;                // the label of the array that fixed the device
  bool stream_resolved = false;
  void* stream = nullptr;              // cudaStream_t; nullptr is the legacy default stream

  bool on_cuda() const { return device && device->kind == DeviceKind::CUDA; }
};

// One array argument of a call: its name ("params", "exp_avgs"...), whether the kernel writes it,
// and its arrays after intake.
struct ArrayArg {
  const char* name;
  bool written;
  std::vector<ArrayRef> arrays;
};

// Arrays taken once and handed to many calls: fastopt.torch's repeated step (torch_step_check.cpp) takes
// a plan's tensors once and proves at each step that they are unchanged, so a call reads the list as it
// is, without asking each tensor its facts again. A Python object (_core._TakenArrays); all on the CPU.
struct TakenArrays {
  std::vector<ArrayRef> arrays;
};
const TakenArrays* taken_arrays(py::handle obj);  // nullptr unless obj is a _core._TakenArrays

// Reads one array, or a list/tuple of them (or a _TakenArrays), into arg.arrays. TypeError for anything else; ValueError
// when an array is on another device than the call's.
ArrayArg take_arrays(py::handle obj, const char* name, bool written, CallDevice& call);
ArrayRef take_array(py::handle obj, const std::string& where, CallDevice& call);

// The dtypes and device of an optimizer call's arrays, after check_arrays.
struct CallTypes {
  DType param;   // params and grads
  DType state;   // the written arguments besides params (float32 for float16/bfloat16 params)
  Device device;
};

// Checks `params` and every other argument together:
//  - each array has a float dtype the device's kernels take (float32/float64; on CUDA, and on the CPU
//    when cpu_half (the classic four's kernels), also float16/bfloat16 params and grads), is
//    C-contiguous, aligned, and writeable when written;
//  - all arguments hold as many arrays as params, each with params[i]'s shape; grads (the arguments
//    not written) have the params' dtype, state arguments (written) the state dtype;
//  - all params share one dtype; no two arrays of the call share memory.
CallTypes check_arrays(const ArrayArg& params, const std::vector<const ArrayArg*>& others, bool cpu_half = false);

// ValueError when two arrays of the call share memory (part of check_arrays, for callers with their
// own dtype rules).
void check_disjoint(const ArrayArg& params, const std::vector<const ArrayArg*>& others);

// Single-array checks, shared with the loss bindings. `where` names the argument in messages.
DType float_dtype_of(const ArrayRef& a, const std::string& where);  // TypeError unless f32/f64
void check_layout(const ArrayRef& a, const std::string& where, bool written);
std::string shape_str(const ArrayRef& a);
bool same_shape(const ArrayRef& a, const ArrayRef& b);
bool shares_memory(const ArrayRef& a, const ArrayRef& b);  // byte ranges of two contiguous arrays

// The data pointer of arrays[i] as T*, or nullptr when the argument is absent.
template <typename T>
T* data_of(const ArrayArg* arg, size_t i) {
  if (arg == nullptr) return nullptr;
  return static_cast<T*>(arg->arrays[i].data);
}

}  // namespace fastopt::bindings
