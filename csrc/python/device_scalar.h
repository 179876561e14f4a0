// lr, step, grad_scale and found_inf as a caller gives them: Python numbers, or 0-d CUDA arrays that
// the kernels read on the device when they run (torch's capturable=True idea: a captured CUDA graph
// replays with the values the arrays hold at replay time, so a schedule and the step count can change
// between replays; and GradScaler's scale and found_inf reach the kernels without a host read).
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

// The last arguments of every update: grad_scale (a number, or a device array: its placeholder is 1,
// which divides nothing and passes the host checks), skip_nonfinite and found_inf (None, a number or
// array read on the host, or a device array read by the kernels).
struct Scaling {
  GradScaling host;
  Scalar grad_scale;
  py::handle found_inf;
};

inline Scaling next_scaling(BoundArgs& a) {
  Scaling s;
  s.grad_scale = is_device_array(a.peek(), "grad_scale") ? Scalar{1.0, 1, a.next()} : Scalar{a.next_real(), 1, {}};
  s.host = GradScaling{s.grad_scale.value, a.next_bool()};
  s.found_inf = a.next();
  return s;
}

// The device side of lr, step, grad_scale and found_inf for a call, taken after the call's arrays (so
// that a device array beside CPU arrays is refused as a device mismatch). Each is one element (0-d or
// size 1): lr and grad_scale float32/float64, step and found_inf int32/int64/float32/float64. A
// found_inf that is not a device array is read here, on the host: skip_now.
class DeviceScalars {
 public:
  DeviceScalars(const Scalar& lr, const Scalar& step, CallDevice& call) {
    if (lr.device) hyper.lr = take(lr.device, "lr", false, call, lr_);
    if (step.device) hyper.step = take(step.device, "step", true, call, step_);
  }
  DeviceScalars(const Scalar& lr, const Scalar& step, const Scaling& scaling, CallDevice& call)
      : DeviceScalars(lr, step, call) {
    if (scaling.grad_scale.device) {
      hyper.grad_scale = take(scaling.grad_scale.device, "grad_scale", false, call, scale_);
    }
    const py::handle found = scaling.found_inf;
    if (found.is_none()) return;
    if (is_device_array(found, "found_inf")) {
      hyper.found_inf = take(found, "found_inf", true, call, found_);
      return;
    }
    if (PyBool_Check(found.ptr())) {
      skip_now = found.ptr() == Py_True;
      return;
    }
    const double value = PyFloat_AsDouble(found.ptr());  // numbers, NumPy scalars and 0-d arrays, CPU tensors
    if (value == -1.0 && PyErr_Occurred()) {
      PyErr_Clear();
      throw py::type_error("found_inf must be None, a number or a one-element array, got " +
                           std::string(Py_TYPE(found.ptr())->tp_name));
    }
    skip_now = value != 0.0;
  }

  cuda::DeviceHyper hyper;
  bool skip_now = false;  // a host found_inf that is set: the call writes nothing

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
    record_on_call_stream(obj, call);
    return cuda::DeviceScalar{a.data, *a.dtype};
  }

  // A device scalar is often a temporary (`step + 1`, `lr * factor`) that its framework frees as soon
  // as the call returns. On the call's own stream that is safe (the allocator reuses the memory in
  // stream order); on a stream given explicitly, torch's allocator must be told the stream reads it
  // (record_stream, through fastopt._streams.record_on), or the memory could be reused first.
  static void record_on_call_stream(py::handle obj, const CallDevice& call) {
    if (call.stream_arg.is_none() || !call.on_cuda()) return;
    py::module_::import("fastopt._streams").attr("record_on")(
        obj, py::int_(reinterpret_cast<intptr_t>(call.stream)), call.device->id);
  }

  std::optional<ArrayRef> lr_, step_, scale_, found_;
};

}  // namespace fastopt::bindings
