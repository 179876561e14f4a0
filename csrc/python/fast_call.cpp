#include "python/fast_call.h"

#include <cstring>
#include <stdexcept>

namespace fastopt::bindings {

namespace {

std::string type_name(PyObject* obj) { return Py_TYPE(obj)->tp_name; }

bool is_numpy_bool(PyObject* obj) {
  const char* name = Py_TYPE(obj)->tp_name;
  return std::strcmp(name, "numpy.bool") == 0 || std::strcmp(name, "numpy.bool_") == 0;
}

}  // namespace

Signature::Signature(const char* function, size_t positional, std::vector<Param> params)
    : function_(function), positional_(positional), params_(std::move(params)) {
  if (params_.size() > kMaxParams || positional_ > params_.size()) {
    throw std::logic_error(std::string("bad signature for ") + function);
  }
  for (const Param& p : params_) {
    interned_names_.push_back(py::reinterpret_steal<py::object>(PyUnicode_InternFromString(p.name)));
  }
}

size_t Signature::find(PyObject* keyword) const {
  for (size_t i = 0; i < interned_names_.size(); ++i) {
    if (interned_names_[i].ptr() == keyword) return i;
  }
  // Not interned (a name built at run time, as in f(**{"l" + "r": 0.1})): compare the text.
  for (size_t i = 0; i < interned_names_.size(); ++i) {
    const int cmp = PyUnicode_Compare(interned_names_[i].ptr(), keyword);
    if (cmp == 0) return i;
    if (cmp == -1 && PyErr_Occurred()) throw py::error_already_set();
  }
  return params_.size();
}

BoundArgs Signature::bind(PyObject* const* args, size_t nargsf, PyObject* kwnames) const {
  BoundArgs bound(*this);
  const size_t nargs = size_t(PyVectorcall_NARGS(nargsf));
  auto fn = [this] { return std::string(function_) + "()"; };  // built only for a message
  if (nargs > positional_) {
    throw py::type_error(fn() + " takes at most " + std::to_string(positional_) +
                         " positional arguments (" + std::to_string(nargs) + " given)");
  }
  for (size_t i = 0; i < nargs; ++i) bound.values_[i] = args[i];
  const size_t nkw = kwnames == nullptr ? 0 : size_t(PyTuple_GET_SIZE(kwnames));
  for (size_t k = 0; k < nkw; ++k) {
    PyObject* keyword = PyTuple_GET_ITEM(kwnames, k);
    const size_t i = find(keyword);
    if (i == params_.size()) {
      throw py::type_error(fn() + " got an unexpected keyword argument '" +
                           py::str(keyword).cast<std::string>() + "'");
    }
    if (bound.values_[i] != nullptr) {
      throw py::type_error(fn() + " got multiple values for argument '" + params_[i].name + "'");
    }
    bound.values_[i] = args[nargs + k];
  }
  for (size_t i = 0; i < params_.size(); ++i) {
    if (bound.values_[i] != nullptr) continue;
    if (!params_[i].default_value) {
      throw py::type_error(fn() + " missing required argument '" + params_[i].name + "'");
    }
    bound.values_[i] = params_[i].default_value.ptr();
  }
  return bound;
}

std::string Signature::text_signature() const {
  std::string text = std::string(function_) + "(";
  for (size_t i = 0; i < params_.size(); ++i) {
    if (i > 0) text += ", ";
    if (i == positional_) text += "*, ";
    text += params_[i].name;
    if (params_[i].default_value) text += "=" + py::repr(params_[i].default_value).cast<std::string>();
  }
  return text + ")\n--\n\n";
}

py::handle BoundArgs::next() { return values_[cursor_++]; }

double BoundArgs::next_real() {
  const double value = real_arg(values_[cursor_], current_name());
  ++cursor_;
  return value;
}

bool BoundArgs::next_bool() {
  const bool value = bool_arg(values_[cursor_], current_name());
  ++cursor_;
  return value;
}

int64_t BoundArgs::next_int() {
  const int64_t value = int_arg(values_[cursor_], current_name());
  ++cursor_;
  return value;
}

namespace {

// The pending error as a TypeError naming `name` (the original kept as __cause__), unless it is a
// BaseException that is not an Exception, which goes through untouched.
[[noreturn]] void rethrow_as_type_error(const std::string& message) {
  if (!PyErr_ExceptionMatches(PyExc_Exception)) throw py::error_already_set();
  py::raise_from(PyExc_TypeError, message.c_str());
  throw py::error_already_set();
}

// A complex number, which __float__ would silently make real: Python's complex (and NumPy's complex128,
// its subclass), and NumPy's other complex scalars (complex64, clongdouble), whose __float__ drops the
// imaginary part with only a ComplexWarning. They all register as numbers.Complex but not numbers.Real.
bool is_complex_number(PyObject* obj) {
  if (PyComplex_Check(obj)) return true;
  static PyObject* complex_abc = nullptr;
  static PyObject* real_abc = nullptr;  // (both live as long as the process, like the numbers module)
  if (complex_abc == nullptr) {
    py::module_ numbers = py::module_::import("numbers");
    complex_abc = py::object(numbers.attr("Complex")).release().ptr();
    real_abc = py::object(numbers.attr("Real")).release().ptr();
  }
  const int complex = PyObject_IsInstance(obj, complex_abc);
  if (complex < 0) throw py::error_already_set();
  if (complex == 0) return false;
  const int real = PyObject_IsInstance(obj, real_abc);
  if (real < 0) throw py::error_already_set();
  return real == 0;
}

}  // namespace

double real_arg(PyObject* obj, const char* name) {
  if (PyFloat_CheckExact(obj)) return PyFloat_AS_DOUBLE(obj);
  if (!PyFloat_Check(obj) && !PyLong_Check(obj) && is_complex_number(obj)) {
    throw py::type_error(std::string(name) + " must be a real number, got " + type_name(obj) +
                         " (a complex number; its imaginary part would be dropped)");
  }
  const double value = PyFloat_AsDouble(obj);  // ints, float subclasses, __float__ / __index__ (NumPy scalars)
  if (value == -1.0 && PyErr_Occurred()) {
    rethrow_as_type_error(std::string(name) + " must be a real number, got " + type_name(obj));
  }
  return value;
}

bool bool_arg(PyObject* obj, const char* name) {
  if (obj != Py_True && obj != Py_False && !is_numpy_bool(obj)) {
    throw py::type_error(std::string(name) + " must be a bool, got " + type_name(obj));
  }
  const int truth = PyObject_IsTrue(obj);
  if (truth < 0) rethrow_as_type_error(std::string(name) + " must be a bool, got " + type_name(obj));
  return truth == 1;
}

int64_t int_arg(PyObject* obj, const char* name) {
  if (PyFloat_Check(obj) || !PyIndex_Check(obj)) {
    throw py::type_error(std::string(name) + " must be an int, got " + type_name(obj));
  }
  py::object index = py::reinterpret_steal<py::object>(PyNumber_Index(obj));
  if (!index) rethrow_as_type_error(std::string(name) + " must be an int, got " + type_name(obj));
  int overflow = 0;
  const long long value = PyLong_AsLongLongAndOverflow(index.ptr(), &overflow);
  if (overflow != 0) {
    throw py::value_error(std::string(name) + " is out of the 64-bit integer range");
  }
  if (value == -1 && PyErr_Occurred()) throw py::error_already_set();
  return int64_t(value);
}

void def_fast(py::module_& m, const Signature& signature, FastFunction function, const std::string& doc) {
  // CPython keeps pointers to the method table and the docstring for the module's lifetime: both
  // are allocated once and never freed (as a static PyMethodDef would be).
  auto* text = new std::string(signature.text_signature() + doc);
  auto* def = new PyMethodDef{signature.function(), reinterpret_cast<PyCFunction>(reinterpret_cast<void*>(function)),
                              METH_FASTCALL | METH_KEYWORDS, text->c_str()};
  py::object module_name = m.attr("__name__");
  py::object fn = py::reinterpret_steal<py::object>(PyCFunction_NewEx(def, nullptr, module_name.ptr()));
  if (!fn) throw py::error_already_set();
  m.add_object(signature.function(), fn);
}

}  // namespace fastopt::bindings
