// lr and step as a caller gives them: Python numbers, or 0-d CUDA arrays that the kernels read on the
// device when they run (torch's capturable=True idea: a captured CUDA graph replays with the values
// the arrays hold at replay time, so a schedule and the step count can change between replays).
#pragma once

#include <pybind11/pybind11.h>

#include <cstdint>
#include <optional>
#include <string>

#include "cuda/backend.h"
#include "python/array_intake.h"
#include "python/array_producers.h"
#include "python/fast_call.h"
#include "python/protocol_values.h"

namespace fastopt::bindings {

namespace py = pybind11;

// One scalar argument. `device` is set for a device array; then `value`/`step` are placeholders
// (lr 0, step 1) that pass the host rules, since a device value is never read back.
struct Scalar {
  double value = 0.0;
  int64_t step = 1;
  py::handle device;

  int64_t host_step() const { return step; }
};

// True for an array on a CUDA device (not for Python numbers, NumPy arrays or CPU tensors, which are
// read as host numbers through __float__ / __index__). What the object answers is checked as for any
// array argument (array_producers.h), errors naming `name`.
inline bool is_device_array(py::handle obj, const char* name) {
  if (PyFloat_Check(obj.ptr()) || PyLong_Check(obj.ptr()) || py::isinstance<py::array>(obj)) return false;
  if (attr_or_null(obj, "__cuda_array_interface__", name)) return true;
  if (!attr_or_null(obj, "__dlpack_device__", name)) return false;
  return dlpack_device_of(obj, name).kind == DeviceKind::CUDA;
}

inline Scalar next_lr(BoundArgs& a) {
  if (is_device_array(a.peek(), "lr")) return Scalar{0.0, 1, a.next()};
  return Scalar{a.next_real(), 1, {}};
}

inline Scalar next_step(BoundArgs& a) {
  if (is_device_array(a.peek(), "step")) return Scalar{0.0, 1, a.next()};
  return Scalar{0.0, a.next_int(), {}};
}

// The device side of lr and step for a CUDA call, taken after the call's arrays (so that a device
// array beside CPU arrays is refused as a device mismatch). Each is one element (0-d or size 1):
// lr float32/float64, step int32/int64/float32/float64.
class DeviceScalars {
 public:
  DeviceScalars(const Scalar& lr, const Scalar& step, CallDevice& call) {
    if (lr.device) hyper.lr = take(lr.device, "lr", false, call, lr_);
    if (step.device) hyper.step = take(step.device, "step", true, call, step_);
  }

  cuda::DeviceHyper hyper;

 private:
  static cuda::DeviceScalar take(py::handle obj, const char* name, bool integer_ok, CallDevice& call,
                                 std::optional<ArrayRef>& keep) {
    keep = take_array(obj, name, call);
    const ArrayRef& a = *keep;
    if (a.size != 1) {
      throw py::value_error(std::string(name) + " must be a number or a one-element device array, got shape " +
                            shape_str(a));
    }
    const bool float_ok = a.dtype == DType::Float32 || a.dtype == DType::Float64;
    const bool int_ok = integer_ok && (a.dtype == DType::Int32 || a.dtype == DType::Int64);
    if (!float_ok && !int_ok) {
      throw py::type_error(std::string(name) + " has dtype " + a.dtype_name() + "; a device " + name + " is " +
                           (integer_ok ? "int32, int64, float32 or float64" : "float32 or float64"));
    }
    check_layout(a, name, false);
    return cuda::DeviceScalar{a.data, *a.dtype};
  }

  std::optional<ArrayRef> lr_, step_;
};

}  // namespace fastopt::bindings
