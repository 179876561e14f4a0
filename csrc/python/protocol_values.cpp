#include "python/protocol_values.h"

#include <climits>

namespace fastopt::bindings {

std::string type_name(py::handle obj) { return Py_TYPE(obj.ptr())->tp_name; }

namespace {

// "ZeroDivisionError: boom" for the pending error, which stays pending. Printing the message runs the
// exception's __str__ (the caller's code): a BaseException from it goes through, anything else is
// replaced by a placeholder.
std::string describe(py::error_already_set& error) {
  std::string text = reinterpret_cast<PyTypeObject*>(error.type().ptr())->tp_name;
  PyObject* message = PyObject_Str(error.value().ptr());
  if (message == nullptr) {
    if (!PyErr_ExceptionMatches(PyExc_Exception)) throw py::error_already_set();
    PyErr_Clear();
    return text + ": <message not printable>";
  }
  const char* utf8 = PyUnicode_AsUTF8(message);
  if (utf8 == nullptr) PyErr_Clear();  // (a str with lone surrogates)
  text += std::string(": ") + (utf8 ? utf8 : "<message not printable>");
  Py_DECREF(message);
  return text;
}

}  // namespace

void protocol_failed(py::error_already_set& error, const std::string& where, py::handle obj,
                     const std::string& what) {
  if (!error.matches(PyExc_Exception)) throw error;
  const std::string message = where + " (" + type_name(obj) + ") " + what + ": " + describe(error);
  error.restore();  // the cause of the TypeError
  py::raise_from(PyExc_TypeError, message.c_str());
  throw py::error_already_set();
}

py::object attr_or_null(py::handle obj, const char* name, const std::string& where) {
  PyObject* value = PyObject_GetAttrString(obj.ptr(), name);
  if (value != nullptr) return py::reinterpret_steal<py::object>(value);
  if (PyErr_ExceptionMatches(PyExc_AttributeError)) {
    PyErr_Clear();
    return py::object();
  }
  py::error_already_set error;
  protocol_failed(error, where, obj, std::string("could not be asked for ") + name);
}

py::object call_protocol(const py::object& callable, py::handle obj, const std::string& where,
                         const std::string& what) {
  PyObject* result = PyObject_CallNoArgs(callable.ptr());
  if (result != nullptr) return py::reinterpret_steal<py::object>(result);
  py::error_already_set error;
  protocol_failed(error, where, obj, what);
}

bool is_instance(py::handle obj, py::handle type, const std::string& where) {
  const int result = PyObject_IsInstance(obj.ptr(), type.ptr());
  if (result >= 0) return result == 1;
  py::error_already_set error;
  protocol_failed(error, where, obj, "could not be asked for its type");
}

std::string kind_of(py::handle value) {
  if (PyTuple_Check(value.ptr())) return "a tuple of length " + std::to_string(PyTuple_GET_SIZE(value.ptr()));
  if (value.is_none()) return "None";
  return type_name(value);
}

int64_t int_in_range(py::handle value, int64_t low, int64_t high, const std::string& where, const char* what) {
  if (!PyLong_Check(value.ptr()) || PyBool_Check(value.ptr())) {
    throw py::type_error(where + ": " + what + " must be an int, got " + kind_of(value));
  }
  int overflow = 0;
  const long long v = PyLong_AsLongLongAndOverflow(value.ptr(), &overflow);
  if (v == -1 && PyErr_Occurred()) throw py::error_already_set();  // (cannot happen for an int)
  if (overflow != 0 || v < low || v > high) {
    const std::string shown = overflow != 0 ? (overflow > 0 ? "an int of more than 64 bits" : "an int below -2**63")
                                            : std::to_string(v);
    throw py::value_error(where + ": " + what + " must be from " + std::to_string(low) + " to " +
                          std::to_string(high) + ", got " + shown);
  }
  return int64_t(v);
}

uintptr_t address_value(py::handle value, const std::string& where, const char* what) {
  if (!PyLong_Check(value.ptr()) || PyBool_Check(value.ptr())) {
    throw py::type_error(where + ": " + what + " must be an int (an address), got " + kind_of(value));
  }
  static_assert(sizeof(unsigned long long) >= sizeof(uintptr_t), "addresses fit unsigned long long");
  const unsigned long long v = PyLong_AsUnsignedLongLong(value.ptr());
  if (v == (unsigned long long)-1 && PyErr_Occurred()) {
    if (!PyErr_ExceptionMatches(PyExc_OverflowError)) throw py::error_already_set();
    PyErr_Clear();
    throw py::value_error(where + ": " + what + " must be an address (an int from 0 to 2**64 - 1)");
  }
  if (v > (unsigned long long)UINTPTR_MAX) {
    throw py::value_error(where + ": " + what + " is beyond this machine's address space");
  }
  return uintptr_t(v);
}

std::vector<int64_t> int_sequence(py::handle value, size_t max_count, const std::string& where,
                                  const char* what) {
  if (!PyTuple_Check(value.ptr()) && !PyList_Check(value.ptr())) {
    throw py::type_error(where + ": " + what + " must be a tuple of ints, got " + kind_of(value));
  }
  // A list is copied at the C level first (a list subclass's own __iter__ is not called).
  const py::object items = PyTuple_Check(value.ptr()) ? py::reinterpret_borrow<py::object>(value)
                                                      : py::reinterpret_steal<py::object>(PyList_AsTuple(value.ptr()));
  if (!items) throw py::error_already_set();
  const size_t count = size_t(PyTuple_GET_SIZE(items.ptr()));
  if (count > max_count) {
    throw py::value_error(where + ": " + what + " has " + std::to_string(count) + " entries, more than " +
                          std::to_string(max_count));
  }
  std::vector<int64_t> out;
  out.reserve(count);
  for (size_t i = 0; i < count; ++i) {
    PyObject* item = PyTuple_GET_ITEM(items.ptr(), Py_ssize_t(i));
    int overflow = 0;
    if (PyLong_Check(item) && !PyBool_Check(item)) {
      const long long v = PyLong_AsLongLongAndOverflow(item, &overflow);
      if (overflow == 0) {
        out.push_back(int64_t(v));
        continue;
      }
    }
    int_in_range(item, INT64_MIN, INT64_MAX, where, (what + ("[" + std::to_string(i) + "]")).c_str());  // throws
  }
  return out;
}

}  // namespace fastopt::bindings
