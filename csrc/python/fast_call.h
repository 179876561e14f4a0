// A lean calling convention for the hot entry points (the optimizer updates), which users call once
// per training step from Python, often on small arrays.
//
// Why not pybind11's dispatcher: on every call it looks up each parameter name among the keyword
// names by interning a fresh string (PyUnicode_InternFromString in keyword_index), about 70 ns per
// parameter, so a 13-parameter Adam call spent ~0.9 us of its ~2.4 us on 1,000 elements naming its
// arguments. Here the names are interned once, when the module loads, and a keyword is matched by
// pointer (CPython interns the keyword names of a call site too), falling back to a string compare.
//
// A function is declared once as a Signature (names, which are positional-or-keyword, defaults),
// registered with def_fast (METH_FASTCALL | METH_KEYWORDS; the docstring carries the signature, so
// help() and inspect.signature() show it), and its body reads the bound arguments in declaration
// order with BoundArgs. Errors are the ones Python's own functions raise: TypeError naming the
// function and the argument.
#pragma once

#include <pybind11/pybind11.h>

#include <cstdint>
#include <string>
#include <vector>

namespace fastopt::bindings {

namespace py = pybind11;

class BoundArgs;

class Signature {
 public:
  struct Param {
    const char* name;
    py::object default_value;  // empty: the argument is required
  };

  // The first `positional` parameters may be passed by position or keyword, the rest by keyword only.
  Signature(const char* function, size_t positional, std::vector<Param> params);

  // Matches a vectorcall's arguments to the parameters; TypeError for a missing, unknown, repeated or
  // surplus argument.
  BoundArgs bind(PyObject* const* args, size_t nargsf, PyObject* kwnames) const;

  const char* function() const { return function_; }
  const char* name(size_t i) const { return params_[i].name; }
  size_t size() const { return params_.size(); }

  // "name(a, b, c=None, *, lr=0.001)\n--\n\n": the docstring prefix CPython turns into __text_signature__.
  std::string text_signature() const;

 private:
  size_t find(PyObject* keyword) const;  // index of the parameter called `keyword`, or size()

  const char* function_;
  size_t positional_;
  std::vector<Param> params_;
  std::vector<py::object> interned_names_;
};

// At most this many parameters per function (Adam has 13).
constexpr size_t kMaxParams = 24;

// The arguments of one call, borrowed from the caller, read in declaration order.
class BoundArgs {
 public:
  BoundArgs(const Signature& signature) : signature_(signature) {}

  py::handle next();          // the object itself (arrays, or None for an absent optional state)
  py::handle peek() const { return values_[cursor_]; }  // the next object, without moving on
  double next_real();         // real_arg of the next argument
  bool next_bool();           // bool_arg of the next argument
  int64_t next_int();         // int_arg of the next argument

 private:
  friend class Signature;
  const char* current_name() const { return signature_.name(cursor_); }

  const Signature& signature_;
  PyObject* values_[kMaxParams] = {};
  size_t cursor_ = 0;
};

// Python numbers as the native code takes them; each error names the argument `name` (TypeError for a
// wrong kind, ValueError out of range). An exception raised by the object's own __float__ / __index__
// is kept as __cause__; a BaseException that is not an Exception (KeyboardInterrupt, SystemExit) goes
// through untouched. Shared by BoundArgs and the bindings that use pybind11's dispatcher (whose own
// casters would swallow a KeyboardInterrupt and take a NumPy complex through its __float__).
double real_arg(PyObject* obj, const char* name);  // float, int, __float__ / __index__; never complex
bool bool_arg(PyObject* obj, const char* name);    // True / False or a NumPy bool
int64_t int_arg(PyObject* obj, const char* name);  // an int or anything with __index__; not a float

// A number argument of a binding that uses pybind11's dispatcher: the object as the caller passed it, for
// real_arg / int_arg to convert in the body (help() shows the type as float / int). pybind11's own casters
// would take a NumPy complex through its __float__ and swallow a KeyboardInterrupt raised by __float__.
struct RealObject {
  py::handle obj;
  double get(const char* name) const { return real_arg(obj.ptr(), name); }
};
struct IntObject {
  py::handle obj;
  int64_t get(const char* name) const { return int_arg(obj.ptr(), name); }
};

using FastFunction = PyObject* (*)(PyObject* self, PyObject* const* args, Py_ssize_t nargsf, PyObject* kwnames);

// Adds `function` to module m as signature.function(), with the signature and doc as its docstring.
void def_fast(py::module_& m, const Signature& signature, FastFunction function, const std::string& doc);

// Runs body() and turns a C++ exception into the matching Python exception (pybind11's exception
// types, error_already_set, bad_alloc, anything else as RuntimeError). Returns body's result, or
// nullptr with the Python error set.
template <typename Body>
PyObject* guarded(Body&& body) noexcept {
  try {
    return body();
  } catch (py::error_already_set& error) {
    error.restore();
  } catch (const py::builtin_exception& error) {
    error.set_error();
  } catch (const std::bad_alloc&) {
    PyErr_NoMemory();
  } catch (const std::exception& error) {
    PyErr_SetString(PyExc_RuntimeError, error.what());
  }
  return nullptr;
}

}  // namespace fastopt::bindings

namespace pybind11::detail {

template <>
struct type_caster<fastopt::bindings::RealObject> {
  PYBIND11_TYPE_CASTER(fastopt::bindings::RealObject, const_name("float"));
  bool load(handle src, bool) {
    value.obj = src;
    return true;
  }
  static handle cast(const fastopt::bindings::RealObject& v, return_value_policy, handle) { return v.obj.inc_ref(); }
};

template <>
struct type_caster<fastopt::bindings::IntObject> {
  PYBIND11_TYPE_CASTER(fastopt::bindings::IntObject, const_name("int"));
  bool load(handle src, bool) {
    value.obj = src;
    return true;
  }
  static handle cast(const fastopt::bindings::IntObject& v, return_value_policy, handle) { return v.obj.inc_ref(); }
};

}  // namespace pybind11::detail
