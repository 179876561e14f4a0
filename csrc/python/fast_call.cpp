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
  PyObject* obj = values_[cursor_];
  double value;
  if (PyFloat_CheckExact(obj)) {
    value = PyFloat_AS_DOUBLE(obj);
  } else {
    value = PyFloat_AsDouble(obj);  // ints, float subclasses, __float__ / __index__ (NumPy scalars)
    if (value == -1.0 && PyErr_Occurred()) {
      // TypeError naming the argument, whatever __float__ raised (kept as __cause__); a
      // KeyboardInterrupt or SystemExit (not an Exception) goes through untouched.
      if (!PyErr_ExceptionMatches(PyExc_Exception)) throw py::error_already_set();
      py::raise_from(PyExc_TypeError, (std::string(current_name()) + " must be a real number, got " +
                                       type_name(obj)).c_str());
      throw py::error_already_set();
    }
  }
  ++cursor_;
  return value;
}

bool BoundArgs::next_bool() {
  PyObject* obj = values_[cursor_];
  if (obj != Py_True && obj != Py_False && !is_numpy_bool(obj)) {
    throw py::type_error(std::string(current_name()) + " must be a bool, got " + type_name(obj));
  }
  ++cursor_;
  return PyObject_IsTrue(obj) == 1;
}

int64_t BoundArgs::next_int() {
  PyObject* obj = values_[cursor_];
  if (PyFloat_Check(obj) || !PyIndex_Check(obj)) {
    throw py::type_error(std::string(current_name()) + " must be an int, got " + type_name(obj));
  }
  int overflow = 0;
  py::object index = py::reinterpret_steal<py::object>(PyNumber_Index(obj));
  if (!index) {  // __index__ raised: TypeError naming the argument, the original kept as __cause__
    if (!PyErr_ExceptionMatches(PyExc_Exception)) throw py::error_already_set();
    py::raise_from(PyExc_TypeError, (std::string(current_name()) + " must be an int, got " + type_name(obj)).c_str());
    throw py::error_already_set();
  }
  const long long value = PyLong_AsLongLongAndOverflow(index.ptr(), &overflow);
  if (overflow != 0) {
    throw py::value_error(std::string(current_name()) + " is out of the 64-bit integer range");
  }
  if (value == -1 && PyErr_Occurred()) throw py::error_already_set();
  ++cursor_;
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
