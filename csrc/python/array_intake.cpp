#include "python/array_intake.h"

#include <algorithm>
#include <cstdint>
#include <sstream>

#include "common/overlap.h"

#include "cuda/backend.h"
#include "python/array_producers.h"
#include "python/protocol_values.h"

namespace fastopt::bindings {

namespace {

std::string label(const ArrayArg& arg, size_t i) {
  return std::string(arg.name) + "[" + std::to_string(i) + "]";
}

}  // namespace

std::string device_str(const Device& device) {
  return device.kind == DeviceKind::CPU ? "cpu" : "cuda:" + std::to_string(device.id);
}

std::string shape_str(const ArrayRef& a) {
  std::ostringstream out;
  out << "(";
  for (int d = 0; d < a.ndim; ++d) out << (d > 0 ? ", " : "") << a.shape[d];
  if (a.ndim == 1) out << ",";
  out << ")";
  return out.str();
}

bool same_shape(const ArrayRef& a, const ArrayRef& b) {
  return a.ndim == b.ndim && std::equal(a.shape, a.shape + a.ndim, b.shape);
}

bool shares_memory(const ArrayRef& a, const ArrayRef& b) {
  if (a.nbytes() == 0 || b.nbytes() == 0 || a.device != b.device) return false;
  const auto a0 = reinterpret_cast<uintptr_t>(a.data), b0 = reinterpret_cast<uintptr_t>(b.data);
  return a0 < b0 + uintptr_t(b.nbytes()) && b0 < a0 + uintptr_t(a.nbytes());
}

// ---------------------------------------------------------------- NumPy (the fast path)

namespace {

static_assert(sizeof(py::ssize_t) == sizeof(int64_t), "NumPy extents are read as int64_t");

// NumPy's ALIGNED flag: the data pointer is a multiple of the item size. A C-contiguous array can
// still be misaligned (np.frombuffer at an odd offset, a field of a packed structured array), and
// reading a double through a misaligned pointer is undefined behaviour in C++.
constexpr int kAligned = py::detail::npy_api::NPY_ARRAY_ALIGNED_;

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
constexpr char kNativeOrder = '>';
#else
constexpr char kNativeOrder = '<';
#endif

// ml_dtypes.bfloat16 (a NumPy user dtype, type character 'E'): its scalar type is ml_dtypes' bfloat16.
// (Compared by name, so ml_dtypes is never imported here.)
bool is_ml_dtypes_bfloat16(PyObject* typeobj) {
  if (typeobj == nullptr || !PyType_Check(typeobj)) return false;
  const auto* type = reinterpret_cast<PyTypeObject*>(typeobj);
  const std::string name = type->tp_name;
  return name == "bfloat16" || name == "ml_dtypes.bfloat16";
}

// From the dtype's type character and byte order, read straight off the descriptor: isinstance with
// py::array_t<T> would build a descriptor for T and compare the two, on every array of every call.
std::optional<DType> numpy_dtype(const py::array& a) {
  const auto* descr = py::detail::array_descriptor_proxy(py::detail::array_proxy(a.ptr())->descr);
  const char order = descr->byteorder;  // '=' native, '|' not applicable, '<' / '>' explicit
  if (order != '=' && order != '|' && order != kNativeOrder) return std::nullopt;
  switch (descr->type) {
    case 'f': return DType::Float32;
    case 'd': return DType::Float64;
    case 'e': return DType::Float16;
    case 'i': return sizeof(int) == 4 ? std::optional<DType>(DType::Int32) : std::nullopt;
    case 'l': return sizeof(long) == 8 ? DType::Int64 : DType::Int32;
    case 'q': return sizeof(long long) == 8 ? std::optional<DType>(DType::Int64) : std::nullopt;
    case 'B': return DType::UInt8;
    case 'E': return is_ml_dtypes_bfloat16(descr->typeobj) ? std::optional<DType>(DType::BFloat16) : std::nullopt;
    default: return std::nullopt;
  }
}

ArrayRef from_numpy(py::handle obj) {
  const auto a = py::reinterpret_borrow<py::array>(obj);
  ArrayRef r;
  r.dtype = numpy_dtype(a);
  if (!r.dtype) r.dtype_text = py::str(a.dtype()).cast<std::string>();
  r.data = const_cast<void*>(a.data());
  r.ndim = int(a.ndim());
  r.shape = reinterpret_cast<const int64_t*>(a.shape());
  r.size = int64_t(a.size());
  const int flags = a.flags();
  r.contiguous = (flags & py::array::c_style) != 0;
  r.aligned = (flags & kAligned) != 0;
  r.writeable = a.writeable();
  r.object = a;
  return r;
}

bool is_exact_ndarray(py::handle obj) {
  return Py_TYPE(obj.ptr()) == reinterpret_cast<PyTypeObject*>(py::detail::npy_api::get().PyArray_Type_);
}

// numpy.ma.MaskedArray (or a subclass): its raw memory holds the masked entries too, which an update
// would change like any other. (numpy.ma not imported: no masked array exists.)
bool is_masked_array(py::handle obj) {
  PyObject* ma = PyDict_GetItemString(PyImport_GetModuleDict(), "numpy.ma");  // borrowed
  if (ma == nullptr) return false;
  const py::object type = py::reinterpret_steal<py::object>(PyObject_GetAttrString(ma, "MaskedArray"));
  if (!type || !PyType_Check(type.ptr())) {
    PyErr_Clear();
    return false;
  }
  return PyType_IsSubtype(Py_TYPE(obj.ptr()), reinterpret_cast<PyTypeObject*>(type.ptr())) != 0;
}

// A NumPy array (any ndarray subclass but a masked one), with its data pointer checked.
ArrayRef from_numpy_checked(py::handle obj, const std::string& where) {
  if (!is_exact_ndarray(obj) && is_masked_array(obj)) {
    throw py::type_error(where + " is a NumPy masked array; fastopt would update its masked entries too. Pass "
                         "its .data (every entry) or a filled copy");
  }
  ArrayRef r = from_numpy(obj);
  if (r.data == nullptr && r.size > 0) {
    throw py::value_error(where + " has a NULL data pointer for " + std::to_string(r.size) + " elements");
  }
  return r;
}

// ---------------------------------------------------------------- devices and streams

// __cuda_array_interface__ v3: "stream" names the stream the producer wrote the data on (1: the legacy
// default stream, 2: the per-thread default stream, else a handle; absent or None: nothing to wait
// for), and the consumer must order its work after it. When that is not the call's own stream, the
// call's stream is made to wait for it (an event; the host does not wait).
void wait_for_interface_stream(int64_t value, const Device& device, const CallDevice& call) {
  void* written_on = value == 1 ? nullptr : reinterpret_cast<void*>(intptr_t(value));
  if (written_on != call.stream) cuda::order_after(cuda::Queue{device.id, written_on}, call.stream);
}

Device device_from_pointer(const void* ptr, const std::string& where) {
  if (!cuda::compiled()) return Device{DeviceKind::CUDA, 0};  // refused by join_device, with the reason
  if (cuda::device_count() == 0) {
    throw py::value_error(where + " is a CUDA array (it has a __cuda_array_interface__), but fastopt finds no "
                          "CUDA device on this machine");
  }
  const int id = ptr == nullptr ? 0 : cuda::pointer_device(ptr);
  if (id < 0) {
    throw py::value_error(where + ": its __cuda_array_interface__ pointer is not CUDA device memory");
  }
  return Device{DeviceKind::CUDA, id};
}

// stream=: an int (a cudaStream_t handle; 0 the legacy default stream), or a stream object with
// .cuda_stream (PyTorch) or .ptr (CuPy).
void* parse_stream(py::handle stream) {
  const std::string name = "stream";
  py::object handle = py::reinterpret_borrow<py::object>(stream);
  if (!PyLong_Check(stream.ptr())) {
    handle = attr_or_null(stream, "cuda_stream", name);
    if (!handle) handle = attr_or_null(stream, "ptr", name);
    if (!handle) {
      throw py::type_error("stream must be an int (a cudaStream_t handle) or a stream object with .cuda_stream "
                           "or .ptr, got " + type_name(stream));
    }
    if (!PyLong_Check(handle.ptr())) throw py::type_error("stream's handle must be an int, got " + kind_of(handle));
  }
  int overflow = 0;
  const long long value = PyLong_AsLongLongAndOverflow(handle.ptr(), &overflow);
  if (value == -1 && PyErr_Occurred()) throw py::error_already_set();
  if (overflow != 0 || value < 0) {
    throw py::value_error("stream must be a cudaStream_t handle (an int from 0 to 2**63 - 1), got " +
                          (overflow != 0 ? std::string(overflow > 0 ? "an int of more than 64 bits" : "an int below -2**63")
                                         : std::to_string(value)));
  }
  return reinterpret_cast<void*>(intptr_t(value));
}

void resolve_stream(CallDevice& call, py::handle producer, const std::string& where) {
  if (call.stream_arg.is_none()) {
    // The producer's current stream, in its framework's terms (fastopt/_streams.py).
    const py::object current = py::module_::import("fastopt._streams").attr("current_stream");
    py::object handle;
    try {
      handle = current(producer, call.device->id);
    } catch (py::error_already_set& error) {
      protocol_failed(error, where, producer, "has no current CUDA stream fastopt could find");
    }
    call.stream = parse_stream(handle);
  } else {
    call.stream = parse_stream(call.stream_arg);
  }
  call.stream_resolved = true;
}

// A CUDA device this process can use: the build has CUDA and the machine has the device. (Without
// this, a call on a machine without a GPU would fail deep inside, in cudaGetDevice, without the name.)
void check_cuda_device(const Device& device, const std::string& where) {
  if (!cuda::compiled()) {
    throw py::value_error(where + " is on " + device_str(device) + ", but this fastopt was built without CUDA "
                          "(FASTOPT_CUDA=OFF, or no CUDA compiler was found at install time)");
  }
  const int count = cuda::device_count();
  if (device.id < 0 || device.id >= count) {
    throw py::value_error(where + " is on " + device_str(device) + ", but fastopt finds " +
                          (count == 0 ? std::string("no CUDA device on this machine")
                                      : std::to_string(count) + " CUDA device(s)") +
                          " (fastopt.cuda.device_count())");
  }
}

// Fixes the call's device with the first array, or checks a later one against it.
void join_device(CallDevice& call, const Device& device, const std::string& where, py::handle obj) {
  if (!call.device) {
    if (device.kind == DeviceKind::CUDA) check_cuda_device(device, where);
    call.device = device;
    call.fixed_by = where;
    // A CPU call does not use stream=, but a garbage one is refused all the same: the mistake would
    // otherwise surface only when the code first meets a GPU.
    if (device.kind == DeviceKind::CPU && !call.stream_arg.is_none()) parse_stream(call.stream_arg);
  } else if (*call.device != device) {
    throw py::value_error(where + " is on " + device_str(device) + " but " + call.fixed_by + " is on " +
                          device_str(*call.device) + "; all arrays of one call must be on one device");
  }
  if (device.kind == DeviceKind::CUDA && !call.stream_resolved) resolve_stream(call, obj, where);
}

// take_array; `alone`: the whole argument is this one object (so a list or tuple was possible too).
ArrayRef take_one(py::handle obj, const std::string& where, CallDevice& call, bool alone) {
  if (py::isinstance<py::array>(obj)) {
    join_device(call, Device{}, where, obj);
    return from_numpy_checked(obj, where);
  }
  if (is_torch_tensor(obj, where)) {
    const Device device = torch_device(obj, where);
    join_device(call, device, where, obj);
    return from_torch(obj, device, where);
  }
  const py::object dlpack = attr_or_null(obj, "__dlpack__", where);
  if (dlpack && attr_or_null(obj, "__dlpack_device__", where)) {
    const Device device = dlpack_device_of(obj, where);
    join_device(call, device, where, obj);
    return from_dlpack(obj, dlpack, device, call, where);
  }
  const py::object interface = attr_or_null(obj, "__cuda_array_interface__", where);
  if (interface) {
    CudaInterface cai = read_cuda_interface(obj, interface, where);
    const Device device = device_from_pointer(cai.array.data, where);
    join_device(call, device, where, obj);
    cai.array.device = device;
    if (cai.stream) wait_for_interface_stream(*cai.stream, device, call);
    return cai.array;
  }
  if (alone) {
    throw py::type_error(where + " must be an array or a list/tuple of arrays, got " + type_name(obj));
  }
  throw py::type_error(where + " must be an array (a numpy.ndarray, or an object with __dlpack__ or "
                       "__cuda_array_interface__), got " + type_name(obj));
}

}  // namespace

ArrayRef take_array(py::handle obj, const std::string& where, CallDevice& call) {
  return take_one(obj, where, call, false);
}

bool immutable_producer(py::handle obj, const std::string& where) {
  // JAX arrays are immutable. (The module's name is compared as a str, without printing it.)
  const py::object module = attr_or_null(py::type::handle_of(obj), "__module__", where);
  return module && PyUnicode_Check(module.ptr()) &&
         PyUnicode_Tailmatch(module.ptr(), py::str("jax").ptr(), 0, 3, -1) == 1;
}

ArrayArg take_arrays(py::handle obj, const char* name, bool written, CallDevice& call) {
  ArrayArg arg{name, written, {}};
  if (const TakenArrays* taken = taken_arrays(obj)) {
    arg.arrays = taken->arrays;
    if (!arg.arrays.empty()) join_device(call, arg.arrays[0].device, label(arg, 0), obj);
    return arg;
  }
  if (!PyList_Check(obj.ptr()) && !PyTuple_Check(obj.ptr())) {
    arg.arrays.push_back(take_one(obj, name, call, true));
    return arg;
  }
  // A snapshot that owns the items: their protocol methods are the caller's code, which may change the
  // list (even empty it, freeing the items) while it is read. A tuple cannot change. (Copied at the C
  // level: a list subclass's own __len__ / __iter__ are never called.)
  const py::object items = PyTuple_Check(obj.ptr()) ? py::reinterpret_borrow<py::object>(obj)
                                                    : py::reinterpret_steal<py::object>(PyList_AsTuple(obj.ptr()));
  if (!items) throw py::error_already_set();
  const size_t count = size_t(PyTuple_GET_SIZE(items.ptr()));
  arg.arrays.reserve(count);
  for (size_t i = 0; i < count; ++i) {
    py::handle item = PyTuple_GET_ITEM(items.ptr(), py::ssize_t(i));
    if (is_exact_ndarray(item) && call.device && call.device->kind == DeviceKind::CPU) {
      arg.arrays.push_back(from_numpy(item));  // the common case, without building a label
      if (arg.arrays.back().data == nullptr && arg.arrays.back().size > 0) from_numpy_checked(item, label(arg, i));
    } else {
      arg.arrays.push_back(take_one(item, label(arg, i), call, false));
    }
  }
  return arg;
}

// ---------------------------------------------------------------- checks

// A NumPy dtype string of a float in the other byte order ('>f4' on a little-endian machine): a dtype
// error then names the byte order, not the width, as what is wrong.
static bool is_byte_swapped_float(const std::string& dtype) {
  const char swapped = PY_BIG_ENDIAN ? '<' : '>';
  return dtype.size() == 3 && dtype[0] == swapped && dtype[1] == 'f' &&
         (dtype[2] == '2' || dtype[2] == '4' || dtype[2] == '8');
}

static std::string byte_order_advice() {
  return " (" + std::string(PY_BIG_ENDIAN ? "little" : "big") +
         "-endian): fastopt takes native byte order; convert the array once, before training, "
         "with a.astype(a.dtype.newbyteorder('=')), and keep the converted array (an update of a "
         "temporary copy would be lost)";
}

// float32 / float64, or an error naming the array.
DType float_dtype_of(const ArrayRef& a, const std::string& where) {
  if (a.dtype == DType::Float32 || a.dtype == DType::Float64) return *a.dtype;
  const std::string name = a.dtype_name();
  if (is_byte_swapped_float(name)) throw py::type_error(where + " has dtype " + name + byte_order_advice());
  throw py::type_error(where + " has dtype " + name +
                       "; fastopt takes float32 or float64 arrays in native byte order and never converts them");
}

void check_layout(const ArrayRef& a, const std::string& where, bool written) {
  if (!a.contiguous) {
    throw py::value_error(where + " is not C-contiguous; pass a contiguous array (an in-place update "
                                  "of a copy would be lost)");
  }
  if (!a.aligned) {
    throw py::value_error(where + " is not aligned to its item size (a view at an odd byte offset); pass an aligned "
                                  "array, such as a copy");
  }
  if (written && !a.writeable) {
    throw py::value_error(where + " is read-only; fastopt updates it in place");
  }
}

namespace {

bool layout_ok(const ArrayRef& a, bool written) { return a.contiguous && a.aligned && (!written || a.writeable); }

// The params' dtype on their device, or a TypeError naming the array. cpu_half: the call's CPU
// kernels take float16/bfloat16 params (sgd_, adagrad_, rmsprop_, adam_, adamw_).
DType check_param_dtype(const ArrayRef& p, const std::string& where, bool cpu_half) {
  if (p.dtype == DType::Float32 || p.dtype == DType::Float64) return *p.dtype;
  if (p.dtype && is_half(*p.dtype)) {
    if (p.device.kind == DeviceKind::CUDA || cpu_half) return *p.dtype;
    throw py::type_error(where + " has dtype " + p.dtype_name() +
                         "; float16 and bfloat16 are updated on CUDA devices only, except by sgd_, adagrad_, "
                         "rmsprop_, adam_ and adamw_, whose CPU kernels take them too, and by the other "
                         "element-wise optimizers (lion_, nadam_, radam_, adamax_, adadelta_, asgd_, rprop_), whose "
                         "CPU kernels take bfloat16 (the other CPU kernels take float32 or float64)");
  }
  const std::string name = p.dtype_name();
  if (is_byte_swapped_float(name)) throw py::type_error(where + " has dtype " + name + byte_order_advice());
  throw py::type_error(where + " has dtype " + name +
                       "; fastopt updates float32 or float64 arrays (and float16/bfloat16 ones on CUDA) "
                       "and never converts them");
}

struct Extent {
  uintptr_t begin, end;
  bool written;
  const ArrayArg* arg;
  size_t index;
};

// One call's extents, in a buffer each thread keeps from call to call: a list of thousands of tensors would
// otherwise allocate a fresh block of 100 kB or more at every call, which the allocator may hand back to the
// system for the next call to fault in again, page by page (in one profile of a call over 1,000 one-element
// arrays, on a busy machine, page faults took about a sixth of its time). A buffer grown
// past kKeptExtents is given back when the call is done. (A check within a check on the same thread, which
// nothing does today, would get a vector of its own.)
class ExtentBuffer {
 public:
  ExtentBuffer() : extents_(kept().in_use ? own_ : kept().extents) {
    owner_ = !kept().in_use;
    kept().in_use = true;
    extents_.clear();
  }
  ~ExtentBuffer() {
    if (!owner_) return;
    extents_.clear();
    if (extents_.capacity() > kKeptExtents) std::vector<Extent>().swap(extents_);
    kept().in_use = false;
  }
  ExtentBuffer(const ExtentBuffer&) = delete;
  ExtentBuffer& operator=(const ExtentBuffer&) = delete;
  std::vector<Extent>& operator*() { return extents_; }

 private:
  static constexpr size_t kKeptExtents = size_t(1) << 16;  // (2.5 MB)
  struct Kept {
    std::vector<Extent> extents;
    bool in_use = false;
  };
  static Kept& kept() {
    thread_local Kept buffer;
    return buffer;
  }
  std::vector<Extent> own_;
  std::vector<Extent>& extents_;
  bool owner_ = false;
};

// Only arrays the call reads (gradients) may share memory with one another (common/overlap.h).
void check_no_shared_memory(std::vector<Extent>& extents) {
  if (const auto pair = find_shared_write(extents)) {
    const Extent& prev = extents[pair->first];
    const Extent& cur = extents[pair->second];
    throw py::value_error(label(*cur.arg, cur.index) + " shares memory with " + label(*prev.arg, prev.index) +
                          "; an array the call writes must be a separate buffer (only arrays it reads, such "
                          "as gradients, may share memory)");
  }
}

}  // namespace

void check_disjoint(const ArrayArg& params, const std::vector<const ArrayArg*>& others) {
  ExtentBuffer buffer;
  std::vector<Extent>& extents = *buffer;
  auto record = [&](const ArrayArg& arg) {
    for (size_t i = 0; i < arg.arrays.size(); ++i) {
      const ArrayRef& a = arg.arrays[i];
      if (a.nbytes() == 0) continue;
      const auto begin = reinterpret_cast<uintptr_t>(a.data);
      extents.push_back({begin, begin + uintptr_t(a.nbytes()), arg.written, &arg, i});
    }
  };
  record(params);
  for (const ArrayArg* other : others) record(*other);
  check_no_shared_memory(extents);
}

CallTypes check_arrays(const ArrayArg& params, const std::vector<const ArrayArg*>& others, bool cpu_half) {
  const size_t n = params.arrays.size();
  ExtentBuffer buffer;
  std::vector<Extent>& extents = *buffer;
  extents.reserve(n * (1 + others.size()));
  auto record = [&](const ArrayRef& a, const ArrayArg& arg, size_t i) {
    if (a.nbytes() == 0) return;
    const auto begin = reinterpret_cast<uintptr_t>(a.data);
    extents.push_back({begin, begin + uintptr_t(a.nbytes()), arg.written, &arg, i});
  };

  CallTypes types{DType::Float32, DType::Float32, Device{}};
  for (size_t i = 0; i < n; ++i) {
    const ArrayRef& p = params.arrays[i];
    if (i == 0) {
      // (The label is built only to explain a refusal: this runs on every call.)
      const bool cpu_ok = p.dtype == DType::Float32 || p.dtype == DType::Float64;
      types.param = cpu_ok ? *p.dtype : check_param_dtype(p, label(params, i), cpu_half);
      types.state = is_half(types.param) ? DType::Float32 : types.param;
      types.device = p.device;
    } else if (p.dtype != types.param) {
      check_param_dtype(p, label(params, i), cpu_half);  // throws for a dtype never taken
      throw py::type_error(label(params, i) + " has dtype " + p.dtype_name() + " but params[0] has " +
                           params.arrays[0].dtype_name() + "; one call updates one dtype");
    }
    if (!layout_ok(p, params.written)) check_layout(p, label(params, i), params.written);
    record(p, params, i);
  }

  for (const ArrayArg* other : others) {
    if (other->arrays.size() != n) {
      throw py::value_error(std::string(other->name) + " holds " + std::to_string(other->arrays.size()) +
                            " arrays but params holds " + std::to_string(n));
    }
    // Gradients (read) have the params' dtype; optimizer state (written) the state dtype.
    const DType expected = other->written ? types.state : types.param;
    for (size_t i = 0; i < n; ++i) {
      const ArrayRef& a = other->arrays[i];
      const ArrayRef& p = params.arrays[i];
      if (a.dtype != expected) {
        std::string message = label(*other, i) + " has dtype " + a.dtype_name() + " but " + label(params, i) +
                              " has " + p.dtype_name();
        if (expected != types.param) message += std::string("; its optimizer state must be ") + dtype_name(expected);
        throw py::type_error(message);
      }
      if (!same_shape(a, p)) {
        throw py::value_error(label(*other, i) + " has shape " + shape_str(a) + " but " + label(params, i) +
                              " has shape " + shape_str(p));
      }
      if (!layout_ok(a, other->written)) check_layout(a, label(*other, i), other->written);
      record(a, *other, i);
    }
  }
  check_no_shared_memory(extents);
  return types;
}

}  // namespace fastopt::bindings
