// Reading what the caller's objects say through the array protocols (__dlpack__, __dlpack_device__,
// __cuda_array_interface__, a tensor's methods, a stream's handle) without trusting it.
//
// Two rules, for every protocol call and every value read:
//  - the object's own code runs inside these calls: an Exception it raises becomes a TypeError that names
//    the argument (the original kept as __cause__); a BaseException that is not an Exception
//    (KeyboardInterrupt, SystemExit, GeneratorExit...) goes through untouched;
//  - a value is checked for its Python type and range before it is used (no pybind11 cast, whose failure
//    would be a RuntimeError without the argument's name), and read with C-level calls only, so that no
//    more of the caller's code runs while it is read.
#pragma once

#include <pybind11/pybind11.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace fastopt::bindings {

namespace py = pybind11;

std::string type_name(py::handle obj);

// Raises the pending error (caught as `error`) per the first rule: a TypeError
// "<where> (<type of obj>) <what>: <error type>: <message>", or the BaseException itself.
[[noreturn]] void protocol_failed(py::error_already_set& error, const std::string& where, py::handle obj,
                                  const std::string& what);

// obj.<name>, or an empty object when obj has no such attribute (an AttributeError, as hasattr() says;
// other errors per the first rule, where CPython's C-level PyObject_HasAttr would swallow them all).
py::object attr_or_null(py::handle obj, const char* name, const std::string& where);

// callable(), errors per the first rule ("<what>" names the protocol, as in protocol_failed).
py::object call_protocol(const py::object& callable, py::handle obj, const std::string& where,
                         const std::string& what);

// isinstance(obj, type) (which may run obj.__class__ or a metaclass's __instancecheck__).
bool is_instance(py::handle obj, py::handle type, const std::string& where);

// A value's kind for a message, without running its code: "tuple of 3 items", "list", "str".
std::string kind_of(py::handle value);

// A Python int (not a bool; an int subclass such as IntEnum is fine) in [low, high]: TypeError naming
// `where` and `what` for anything else, ValueError out of the range. Runs no Python code.
int64_t int_in_range(py::handle value, int64_t low, int64_t high, const std::string& where, const char* what);
// The same for an address: a Python int in [0, 2**64).
uintptr_t address_value(py::handle value, const std::string& where, const char* what);

// A tuple or list of at most max_count ints (each in int64's range), copied: TypeError / ValueError naming
// where and what.
std::vector<int64_t> int_sequence(py::handle value, size_t max_count, const std::string& where,
                                  const char* what);

}  // namespace fastopt::bindings
