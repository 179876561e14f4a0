// Array intake for the bindings: turns "one array or a list/tuple of arrays" arguments into
// checked NumPy arrays, and refuses (never converts) anything an in-place update cannot use.
// Every check runs before any kernel writes, and every message names the argument and index.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <string>
#include <vector>

namespace fastopt::bindings {

namespace py = pybind11;

enum class Dtype { Float32, Float64 };

// One array argument of a call: its name ("params", "exp_avgs"...), whether the kernel writes it,
// and its arrays after intake.
struct ArrayArg {
  const char* name;
  bool written;
  std::vector<py::array> arrays;
};

// Reads `obj` (an ndarray or a list/tuple of ndarrays) into arg.arrays. TypeError for anything else.
ArrayArg take_arrays(py::handle obj, const char* name, bool written);

// Checks `params` and every other argument together, and returns the common dtype:
//  - each array is a numpy.ndarray of float32 or float64 (native byte order), C-contiguous,
//    and writeable when the kernel writes it;
//  - all arguments hold as many arrays as params, each with params[i]'s shape and dtype;
//  - all params share one dtype;
//  - no two arrays of the call share memory.
Dtype check_arrays(const ArrayArg& params, const std::vector<const ArrayArg*>& others);

// Single-array checks, shared with the loss bindings. `where` names the argument in messages.
py::array require_array(py::handle obj, const std::string& where);
Dtype float_dtype_of(const py::array& a, const std::string& where);  // TypeError unless f32/f64
void check_layout(const py::array& a, const std::string& where, bool written);
std::string shape_str(const py::array& a);
std::string dtype_str(const py::array& a);
bool shares_memory(const py::array& a, const py::array& b);  // byte ranges of two C-contiguous arrays

// The data pointer of arrays[i] as T*, or nullptr when the argument is absent.
template <typename T>
T* data_of(const ArrayArg* arg, size_t i) {
  if (arg == nullptr) return nullptr;
  return static_cast<T*>(const_cast<void*>(arg->arrays[i].data()));
}

}  // namespace fastopt::bindings
