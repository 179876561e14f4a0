#include "python/array_intake.h"

#include <algorithm>
#include <cstdint>
#include <optional>
#include <sstream>

namespace fastopt::bindings {

namespace {

std::string label(const ArrayArg& arg, size_t i) {
  return std::string(arg.name) + "[" + std::to_string(i) + "]";
}

}  // namespace

std::string shape_str(const py::array& a) {
  std::ostringstream out;
  out << "(";
  for (py::ssize_t d = 0; d < a.ndim(); ++d) out << (d > 0 ? ", " : "") << a.shape(d);
  if (a.ndim() == 1) out << ",";
  out << ")";
  return out.str();
}

std::string dtype_str(const py::array& a) { return py::str(a.dtype()).cast<std::string>(); }

namespace {

// The checks themselves, without messages: the hot path (an optimizer call per training step) builds
// no strings; the throwing forms below run them again only to explain a failure.
std::optional<Dtype> float_dtype(const py::array& a) {
  if (py::isinstance<py::array_t<float>>(a)) return Dtype::Float32;
  if (py::isinstance<py::array_t<double>>(a)) return Dtype::Float64;
  return std::nullopt;
}

// NumPy's ALIGNED flag: the data pointer is a multiple of the item size. A C-contiguous array can
// still be misaligned (np.frombuffer at an odd offset, a field of a packed structured array), and
// reading a double through a misaligned pointer is undefined behaviour in C++.
constexpr int kAligned = py::detail::npy_api::NPY_ARRAY_ALIGNED_;

bool layout_ok(const py::array& a, bool written) {
  return (a.flags() & py::array::c_style) && (a.flags() & kAligned) && (!written || a.writeable());
}

}  // namespace

// float32 / float64 in native byte order, or an error naming the array.
Dtype float_dtype_of(const py::array& a, const std::string& where) {
  if (const auto dtype = float_dtype(a)) return *dtype;
  throw py::type_error(where + " has dtype " + dtype_str(a) +
                       "; fastopt updates float32 or float64 arrays in native byte order "
                       "and never converts them");
}

void check_layout(const py::array& a, const std::string& where, bool written) {
  if (!(a.flags() & py::array::c_style)) {
    throw py::value_error(where + " is not C-contiguous; pass a contiguous array (an in-place update "
                                  "of a copy would be lost)");
  }
  if (!(a.flags() & kAligned)) {
    throw py::value_error(where + " is not aligned to its item size (a view at an odd byte offset); pass an aligned "
                                  "array, such as a copy");
  }
  if (written && !a.writeable()) {
    throw py::value_error(where + " is read-only; fastopt updates it in place");
  }
}

py::array require_array(py::handle obj, const std::string& where) {
  if (!py::isinstance<py::array>(obj)) {
    throw py::type_error(where + " must be a numpy.ndarray, got " +
                         std::string(py::str(py::type::handle_of(obj).attr("__name__"))));
  }
  return py::reinterpret_borrow<py::array>(obj);
}

bool shares_memory(const py::array& a, const py::array& b) {
  if (a.nbytes() == 0 || b.nbytes() == 0) return false;
  const auto a0 = reinterpret_cast<uintptr_t>(a.data()), b0 = reinterpret_cast<uintptr_t>(b.data());
  return a0 < b0 + uintptr_t(b.nbytes()) && b0 < a0 + uintptr_t(a.nbytes());
}

namespace {

struct Extent {
  uintptr_t begin, end;
  const ArrayArg* arg;
  size_t index;
};

// Sorting the byte ranges makes the overlap test O(n log n) for long parameter lists.
void check_no_shared_memory(std::vector<Extent>& extents) {
  std::sort(extents.begin(), extents.end(),
            [](const Extent& a, const Extent& b) { return a.begin < b.begin; });
  for (size_t i = 1; i < extents.size(); ++i) {
    const Extent& prev = extents[i - 1];
    const Extent& cur = extents[i];
    if (cur.begin < prev.end) {
      throw py::value_error(label(*cur.arg, cur.index) + " shares memory with " +
                            label(*prev.arg, prev.index) +
                            "; every array of a call must be a separate buffer");
    }
  }
}

}  // namespace

ArrayArg take_arrays(py::handle obj, const char* name, bool written) {
  ArrayArg arg{name, written, {}};
  if (py::isinstance<py::list>(obj) || py::isinstance<py::tuple>(obj)) {
    // The list's or tuple's own length, never len(obj): a subclass may override __len__, and the
    // items are read with PySequence_Fast_GET_ITEM, which trusts the index.
    const size_t count = size_t(PyList_Check(obj.ptr()) ? PyList_GET_SIZE(obj.ptr()) : PyTuple_GET_SIZE(obj.ptr()));
    arg.arrays.reserve(count);
    for (size_t i = 0; i < count; ++i) {
      py::handle item = PySequence_Fast_GET_ITEM(obj.ptr(), py::ssize_t(i));  // a list or tuple
      if (!py::isinstance<py::array>(item)) require_array(item, label(arg, i));  // throws
      arg.arrays.push_back(py::reinterpret_borrow<py::array>(item));
    }
  } else if (py::isinstance<py::array>(obj)) {
    arg.arrays.push_back(py::reinterpret_borrow<py::array>(obj));
  } else {
    throw py::type_error(std::string(name) + " must be a numpy.ndarray or a list/tuple of them, got " +
                         std::string(py::str(py::type::handle_of(obj).attr("__name__"))));
  }
  return arg;
}

Dtype check_arrays(const ArrayArg& params, const std::vector<const ArrayArg*>& others) {
  const size_t n = params.arrays.size();
  std::vector<Extent> extents;
  extents.reserve(n * (1 + others.size()));
  auto record = [&](const py::array& a, const ArrayArg& arg, size_t i) {
    if (a.nbytes() == 0) return;
    const auto begin = reinterpret_cast<uintptr_t>(a.data());
    extents.push_back({begin, begin + uintptr_t(a.nbytes()), &arg, i});
  };

  Dtype common = Dtype::Float32;
  for (size_t i = 0; i < n; ++i) {
    const py::array& p = params.arrays[i];
    const std::optional<Dtype> dt = float_dtype(p);
    if (!dt) float_dtype_of(p, label(params, i));  // throws, naming params[i]
    if (i == 0) {
      common = *dt;
    } else if (*dt != common) {
      throw py::type_error(label(params, i) + " has dtype " + dtype_str(p) + " but params[0] has " +
                           dtype_str(params.arrays[0]) + "; one call updates one dtype");
    }
    if (!layout_ok(p, params.written)) check_layout(p, label(params, i), params.written);
    record(p, params, i);
  }

  for (const ArrayArg* other : others) {
    if (other->arrays.size() != n) {
      throw py::value_error(std::string(other->name) + " holds " + std::to_string(other->arrays.size()) +
                            " arrays but params holds " + std::to_string(n));
    }
    for (size_t i = 0; i < n; ++i) {
      const py::array& a = other->arrays[i];
      const py::array& p = params.arrays[i];
      const std::optional<Dtype> dt = float_dtype(a);
      if (!dt) float_dtype_of(a, label(*other, i));  // throws, naming the argument and index
      if (*dt != common) {
        throw py::type_error(label(*other, i) + " has dtype " + dtype_str(a) + " but " + label(params, i) +
                             " has " + dtype_str(p));
      }
      const bool same_shape =
          a.ndim() == p.ndim() && std::equal(a.shape(), a.shape() + a.ndim(), p.shape());
      if (!same_shape) {
        throw py::value_error(label(*other, i) + " has shape " + shape_str(a) + " but " + label(params, i) +
                              " has shape " + shape_str(p));
      }
      if (!layout_ok(a, other->written)) check_layout(a, label(*other, i), other->written);
      record(a, *other, i);
    }
  }
  check_no_shared_memory(extents);
  return common;
}

}  // namespace fastopt::bindings
