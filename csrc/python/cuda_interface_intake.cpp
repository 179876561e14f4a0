// __cuda_array_interface__ (version 3): a dict with "shape" (tuple of ints), "typestr" (str), "data"
// ((pointer, read_only)), optional "strides" (None or a tuple of byte strides), "mask" (None: fastopt
// refuses masked arrays), "stream" (None or the producer's stream, see wait_for_interface_stream).
// Everything is checked for its type and range here, before the device is even asked about the pointer.
#include <algorithm>
#include <climits>
#include <memory>
#include <vector>

#include "python/array_producers.h"
#include "python/memory_claims.h"
#include "python/protocol_values.h"

namespace fastopt::bindings {

namespace {

constexpr const char* kInterface = "its __cuda_array_interface__";

std::optional<DType> typestr_dtype(const std::string& typestr) {
  if (typestr.size() < 3 || typestr[0] == '>') return std::nullopt;
  const std::string kind = typestr.substr(1);
  if (kind == "f2") return DType::Float16;
  if (kind == "f4") return DType::Float32;
  if (kind == "f8") return DType::Float64;
  if (kind == "i4") return DType::Int32;
  if (kind == "i8") return DType::Int64;
  if (kind == "u1") return DType::UInt8;
  return std::nullopt;
}

// The bytes of one element of a typestr such as "<f4" ("|b1", "<c16"...), or 0 when it names none.
int64_t typestr_bytes(const std::string& typestr) {
  if (typestr.size() < 3 || typestr.size() > 8) return 0;
  int64_t bytes = 0;
  for (size_t i = 2; i < typestr.size(); ++i) {
    if (typestr[i] < '0' || typestr[i] > '9') return 0;
    bytes = bytes * 10 + (typestr[i] - '0');
  }
  return bytes;
}

// dict[key] (a new reference), or an empty object when the key is absent. The dict's own lookup (a dict
// subclass's __getitem__ is not called; hashing a str key runs no Python code).
py::object item_of(py::handle dict, const char* key) {
  PyObject* value = PyDict_GetItemString(dict.ptr(), key);  // borrowed
  return py::reinterpret_borrow<py::object>(value);
}

}  // namespace

CudaInterface read_cuda_interface(py::handle obj, py::handle value, const std::string& where) {
  const std::string prefix = where + " (" + type_name(obj) + "): " + kInterface;
  if (!PyDict_Check(value.ptr())) throw py::type_error(prefix + " must be a dict, got " + kind_of(value));
  // A copy of the dict: nothing below runs Python code, but no value is read from a dict that could change.
  const py::object cai = py::reinterpret_steal<py::object>(PyDict_Copy(value.ptr()));
  if (!cai) throw py::error_already_set();
  auto require = [&](const char* key) {
    py::object item = item_of(cai, key);
    if (!item) throw py::value_error(prefix + " has no '" + key + "'");
    return item;
  };
  const py::object mask = item_of(cai, "mask");
  if (mask && !mask.is_none()) {
    throw py::type_error(where + " has a mask in its __cuda_array_interface__; masked arrays are not supported");
  }
  CudaInterface out;
  ArrayRef& r = out.array;
  r.object = py::reinterpret_borrow<py::object>(obj);

  const py::object typestr = require("typestr");
  if (!PyUnicode_Check(typestr.ptr())) throw py::type_error(prefix + "'s typestr must be a str, got " + kind_of(typestr));
  Py_ssize_t length = 0;
  const char* text = PyUnicode_AsUTF8AndSize(typestr.ptr(), &length);
  if (text == nullptr) throw py::error_already_set();
  const std::string type_text(text, size_t(length));
  r.dtype = typestr_dtype(type_text);
  if (!r.dtype) r.dtype_text = type_text;
  const int64_t item = r.dtype ? dtype_size(*r.dtype) : std::max<int64_t>(1, typestr_bytes(type_text));

  const py::object data = require("data");
  if (!PyTuple_Check(data.ptr()) || PyTuple_GET_SIZE(data.ptr()) != 2) {
    throw py::type_error(prefix + "'s data must be (pointer, read_only), got " + kind_of(data));
  }
  const uintptr_t pointer = address_value(PyTuple_GET_ITEM(data.ptr(), 0), where, "its __cuda_array_interface__'s data pointer");
  PyObject* read_only = PyTuple_GET_ITEM(data.ptr(), 1);
  if (!PyBool_Check(read_only)) {
    throw py::type_error(prefix + "'s read-only flag (data[1]) must be a bool, got " + kind_of(read_only));
  }

  auto shape = std::make_shared<std::vector<int64_t>>(
      int_sequence(require("shape"), size_t(kMaxDims), where, "its __cuda_array_interface__'s shape"));
  r.ndim = int(shape->size());
  r.shape = shape->data();
  r.size = count_elements(r.shape, r.ndim, where, kInterface);
  check_data_range(pointer, r.size, item, where, kInterface);
  r.keep = shape;
  r.data = reinterpret_cast<void*>(pointer);
  r.writeable = read_only == Py_False && !immutable_producer(obj, where);
  r.aligned = pointer % uintptr_t(item) == 0;

  r.contiguous = true;
  const py::object strides_obj = item_of(cai, "strides");
  if (strides_obj && !strides_obj.is_none()) {
    const std::vector<int64_t> strides =
        int_sequence(strides_obj, size_t(kMaxDims), where, "its __cuda_array_interface__'s strides");
    if (strides.size() != shape->size()) {
      throw py::value_error(prefix + " has " + std::to_string(strides.size()) + " strides for " +
                            std::to_string(shape->size()) + " axes");
    }
    if (r.size > 0) {
      int64_t expected = item;  // (no overflow: the byte size was checked)
      for (int d = r.ndim - 1; d >= 0; --d) {
        if ((*shape)[size_t(d)] != 1 && strides[size_t(d)] != expected) r.contiguous = false;
        expected *= (*shape)[size_t(d)];
      }
    }
  }

  const py::object stream = item_of(cai, "stream");
  if (stream && !stream.is_none()) {
    out.stream = int_in_range(stream, 1, INT64_MAX, where, "its __cuda_array_interface__'s stream (None, 1, 2 or a handle)");
  }
  return out;
}

}  // namespace fastopt::bindings
