#include "python/array_intake.h"

#include <algorithm>
#include <cstdint>
#include <sstream>

#include "cuda/backend.h"
#include "python/dlpack.h"

namespace fastopt::bindings {

namespace {

std::string label(const ArrayArg& arg, size_t i) {
  return std::string(arg.name) + "[" + std::to_string(i) + "]";
}

std::string type_name(py::handle obj) { return Py_TYPE(obj.ptr())->tp_name; }

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

// ---------------------------------------------------------------- DLPack

// A consumed export: the deleter runs when the last ArrayRef copy holding it goes (with the GIL
// held: the bindings drop their arrays after re-acquiring it).
struct DlpackHold {
  dlpack::ManagedTensor* legacy = nullptr;
  dlpack::ManagedTensorVersioned* versioned = nullptr;
  ~DlpackHold() {
    if (versioned && versioned->deleter) versioned->deleter(versioned);
    if (legacy && legacy->deleter) legacy->deleter(legacy);
  }
};

std::optional<DType> dlpack_dtype(const dlpack::DataType& t) {
  if (t.lanes != 1) return std::nullopt;
  if (t.code == dlpack::kFloat && t.bits == 16) return DType::Float16;
  if (t.code == dlpack::kFloat && t.bits == 32) return DType::Float32;
  if (t.code == dlpack::kFloat && t.bits == 64) return DType::Float64;
  if (t.code == dlpack::kBfloat && t.bits == 16) return DType::BFloat16;
  if (t.code == dlpack::kInt && t.bits == 32) return DType::Int32;
  if (t.code == dlpack::kInt && t.bits == 64) return DType::Int64;
  return std::nullopt;
}

std::string dlpack_dtype_text(const dlpack::DataType& t) {
  static const char* const codes[] = {"int", "uint", "float", "opaque", "bfloat", "complex", "bool"};
  std::string name = t.code < 7 ? codes[t.code] : "code" + std::to_string(t.code);
  name += std::to_string(t.bits);
  if (t.lanes != 1) name += "x" + std::to_string(t.lanes);
  return name;
}

// C-contiguous: every extent > 1 has the stride of the extents after it (extents of 1 may carry any
// stride, as PyTorch gives them). An empty array is contiguous whatever its strides, as NumPy and the
// __cuda_array_interface__ path below count it.
bool dlpack_contiguous(const dlpack::Tensor& t) {
  if (t.strides == nullptr) return true;
  for (int d = 0; d < t.ndim; ++d) {
    if (t.shape[d] == 0) return true;
  }
  int64_t expected = 1;
  for (int d = t.ndim - 1; d >= 0; --d) {
    if (t.shape[d] != 1 && t.strides[d] != expected) return false;
    expected *= t.shape[d];
  }
  return true;
}

// The `stream` argument of __dlpack__ for a CUDA consumer: the stream's handle, except that the
// legacy default stream is 1 (0 is reserved by the protocol).
py::int_ dlpack_stream(void* stream) {
  return py::int_(stream == nullptr ? intptr_t(1) : reinterpret_cast<intptr_t>(stream));
}

// Producers that cannot write into their arrays: JAX arrays are immutable.
bool immutable_producer(py::handle obj) {
  const std::string module = py::str(py::type::handle_of(obj).attr("__module__"));
  return module.rfind("jax", 0) == 0;
}

py::object call_dlpack(py::handle obj, const Device& device, const CallDevice& call, const std::string& where) {
  const py::object method = obj.attr("__dlpack__");
  py::dict kwargs;
  if (device.kind == DeviceKind::CUDA) kwargs["stream"] = dlpack_stream(call.stream);
  try {
    try {
      // DLPack 1.0: a versioned capsule (read-only flag), and copy=False: never a copy. A copy of
      // kwargs (py::dict's copy constructor shares the dict, so the retry below would pass these too).
      py::dict modern(kwargs.attr("copy")());
      modern["max_version"] = py::make_tuple(1, 0);
      modern["copy"] = py::bool_(false);
      return method(**modern);
    } catch (py::error_already_set& error) {
      if (!error.matches(PyExc_TypeError)) throw;  // an older producer: no max_version / copy
      return method(**kwargs);
    }
  } catch (py::error_already_set& error) {
    const std::string reason = std::string(py::str(error.type().attr("__name__"))) + ": " + std::string(py::str(error.value()));
    throw py::type_error(where + " (" + type_name(obj) + ") could not be shared through __dlpack__: " + reason);
  }
}

ArrayRef from_dlpack(py::handle obj, const Device& device, const CallDevice& call, const std::string& where) {
  const py::object capsule = call_dlpack(obj, device, call, where);
  PyObject* cap = capsule.ptr();
  auto hold = std::make_shared<DlpackHold>();
  const dlpack::Tensor* t = nullptr;
  bool read_only = false, copied = false;
  if (PyCapsule_IsValid(cap, "dltensor_versioned")) {
    hold->versioned = static_cast<dlpack::ManagedTensorVersioned*>(PyCapsule_GetPointer(cap, "dltensor_versioned"));
    PyCapsule_SetName(cap, "used_dltensor_versioned");
    t = &hold->versioned->dl_tensor;
    read_only = (hold->versioned->flags & dlpack::kFlagReadOnly) != 0;
    copied = (hold->versioned->flags & dlpack::kFlagIsCopied) != 0;
  } else if (PyCapsule_IsValid(cap, "dltensor")) {
    hold->legacy = static_cast<dlpack::ManagedTensor*>(PyCapsule_GetPointer(cap, "dltensor"));
    PyCapsule_SetName(cap, "used_dltensor");
    t = &hold->legacy->dl_tensor;
  } else {
    throw py::type_error(where + ".__dlpack__() did not return a DLPack capsule");
  }
  ArrayRef r;
  r.object = py::reinterpret_borrow<py::object>(obj);
  r.dtype = dlpack_dtype(t->dtype);
  if (!r.dtype) r.dtype_text = dlpack_dtype_text(t->dtype);
  r.data = static_cast<char*>(t->data) + t->byte_offset;
  r.ndim = t->ndim;
  r.shape = t->shape;
  r.size = 1;
  for (int d = 0; d < t->ndim; ++d) r.size *= t->shape[d];
  r.device = device;
  r.contiguous = dlpack_contiguous(*t);
  const int item = r.dtype ? dtype_size(*r.dtype) : 1;
  r.aligned = reinterpret_cast<uintptr_t>(r.data) % uintptr_t(item) == 0;
  // A copy cannot take an in-place update: refuse it as written memory (checked by check_layout).
  r.writeable = !read_only && !copied && !immutable_producer(obj);
  r.keep = std::move(hold);
  return r;
}

// ---------------------------------------------------------------- PyTorch tensors
//
// A torch.Tensor could go through __dlpack__ like any producer, but its export costs ~7 us in Python
// (torch/_tensor.py), which a step over 150 parameters x 5 arrays pays 750 times. Reading the same facts
// through the tensor's C-implemented methods costs well under 1 us, with the same rules: dense
// (strided) tensors, a CPU or CUDA device, and no tensor that requires grad (an in-place write behind
// autograd's back; detach() it, or use fastopt.torch's optimizers). The bindings bump the version of every
// torch tensor they write (torch_tensor below; python/torch_versions.h).

// torch's types, and the names read from a tensor as interned strings: an attribute looked up by a C
// string would build and hash a new Python string every time.
struct TorchTypes {
  py::object tensor, strided;
  py::object f16, bf16, f32, f64, i32, i64;
  py::object layout, requires_grad, dtype, shape, data_ptr, is_contiguous, is_cuda, is_cpu, get_device;
};

py::object interned(const char* name) { return py::reinterpret_steal<py::object>(PyUnicode_InternFromString(name)); }

// torch's types, once torch is imported by someone (fastopt never imports it here).
const TorchTypes* torch_types() {
  static TorchTypes* types = nullptr;  // lives as long as the process, like the torch module
  if (types != nullptr) return types;
  PyObject* torch = PyDict_GetItemString(PyImport_GetModuleDict(), "torch");  // borrowed
  if (torch == nullptr) return nullptr;
  const py::module_ t = py::reinterpret_borrow<py::module_>(torch);
  if (!py::hasattr(t, "Tensor") || !py::hasattr(t, "bfloat16")) return nullptr;  // torch half imported
  types = new TorchTypes{t.attr("Tensor"), t.attr("strided"), t.attr("float16"), t.attr("bfloat16"),
                         t.attr("float32"), t.attr("float64"), t.attr("int32"), t.attr("int64"),
                         interned("layout"), interned("requires_grad"), interned("dtype"), interned("shape"),
                         interned("data_ptr"), interned("is_contiguous"), interned("is_cuda"), interned("is_cpu"),
                         interned("get_device")};
  return types;
}

py::object get(py::handle obj, const py::object& name) {
  PyObject* value = PyObject_GetAttr(obj.ptr(), name.ptr());
  if (value == nullptr) throw py::error_already_set();
  return py::reinterpret_steal<py::object>(value);
}

py::object call(py::handle obj, const py::object& name) {
  PyObject* value = PyObject_CallMethodNoArgs(obj.ptr(), name.ptr());
  if (value == nullptr) throw py::error_already_set();
  return py::reinterpret_steal<py::object>(value);
}

bool truth(const py::object& value) { return value.ptr() == Py_True; }

bool is_torch_tensor(py::handle obj) {
  const TorchTypes* torch = torch_types();
  return torch != nullptr && PyObject_IsInstance(obj.ptr(), torch->tensor.ptr()) == 1;
}

std::optional<DType> torch_dtype(const TorchTypes& torch, py::handle dtype) {
  if (dtype.is(torch.f32)) return DType::Float32;
  if (dtype.is(torch.f64)) return DType::Float64;
  if (dtype.is(torch.f16)) return DType::Float16;
  if (dtype.is(torch.bf16)) return DType::BFloat16;
  if (dtype.is(torch.i64)) return DType::Int64;
  if (dtype.is(torch.i32)) return DType::Int32;
  return std::nullopt;
}

// (is_cuda / is_cpu / get_device() rather than .device.type: a tenth of the cost.)
Device torch_device(py::handle obj, const std::string& where) {
  const TorchTypes& torch = *torch_types();
  if (truth(get(obj, torch.is_cuda))) return Device{DeviceKind::CUDA, call(obj, torch.get_device).cast<int>()};
  if (truth(get(obj, torch.is_cpu))) return Device{DeviceKind::CPU, 0};
  const std::string type = py::str(obj.attr("device").attr("type"));
  throw py::type_error(where + " is a tensor on '" + type + "'; fastopt takes CPU and CUDA tensors");
}

// What to do about a tensor that requires grad, by the argument's role: a loss's inputs (scores and
// their gradient's destination) are used with autograd by detaching them and handing the returned
// gradient back; an optimizer's operands are what fastopt.torch's optimizers take.
static std::string requires_grad_advice(const std::string& where) {
  static const char* const loss_inputs[] = {"logits", "scores", "x", "out", "w"};
  for (const char* name : loss_inputs) {
    if (where == name) {
      return "; fastopt's losses are not recorded by autograd: call them on " + where +
             ".detach() (the same memory) and hand the gradient they return to autograd, e.g. "
             "logits.backward(dlogits) (or wrap the pair in a torch.autograd.Function)";
    }
  }
  return "; pass it detached (p.detach(): the same memory), or use fastopt.torch's optimizers, which "
         "update torch parameters in place";
}

ArrayRef from_torch(py::handle obj, const Device& device, const std::string& where) {
  const TorchTypes& torch = *torch_types();
  const py::object layout = get(obj, torch.layout);
  if (layout.ptr() != torch.strided.ptr()) {
    throw py::type_error(where + " is a " + std::string(py::str(layout)) + " tensor; fastopt's kernels take dense tensors");
  }
  if (truth(get(obj, torch.requires_grad))) {
    throw py::type_error(where + " requires grad" + requires_grad_advice(where));
  }
  ArrayRef r;
  r.object = py::reinterpret_borrow<py::object>(obj);
  const py::object dtype = get(obj, torch.dtype);
  r.dtype = torch_dtype(torch, dtype);
  if (!r.dtype) r.dtype_text = py::str(dtype);
  const py::object shape_obj = get(obj, torch.shape);  // a torch.Size: a tuple
  if (!PyTuple_Check(shape_obj.ptr())) throw py::type_error(where + ".shape is not a tuple");
  auto shape = std::make_shared<std::vector<int64_t>>(size_t(PyTuple_GET_SIZE(shape_obj.ptr())));
  r.size = 1;
  for (size_t d = 0; d < shape->size(); ++d) {
    (*shape)[d] = PyLong_AsLongLong(PyTuple_GET_ITEM(shape_obj.ptr(), py::ssize_t(d)));
    r.size *= (*shape)[d];
  }
  r.ndim = int(shape->size());
  r.shape = shape->data();
  r.keep = std::move(shape);
  r.data = reinterpret_cast<void*>(PyLong_AsUnsignedLongLong(call(obj, torch.data_ptr).ptr()));
  if (PyErr_Occurred()) throw py::error_already_set();
  r.device = device;
  r.contiguous = truth(call(obj, torch.is_contiguous));
  const int item = r.dtype ? dtype_size(*r.dtype) : 1;
  r.aligned = reinterpret_cast<uintptr_t>(r.data) % uintptr_t(item) == 0;
  r.writeable = true;
  r.torch_tensor = true;
  return r;
}

// ---------------------------------------------------------------- __cuda_array_interface__

std::optional<DType> typestr_dtype(const std::string& typestr) {
  if (typestr.size() < 3 || typestr[0] == '>') return std::nullopt;
  const std::string kind = typestr.substr(1);
  if (kind == "f2") return DType::Float16;
  if (kind == "f4") return DType::Float32;
  if (kind == "f8") return DType::Float64;
  if (kind == "i4") return DType::Int32;
  if (kind == "i8") return DType::Int64;
  return std::nullopt;
}

ArrayRef from_cuda_interface(py::handle obj, const py::dict& cai, const std::string& where) {
  if (cai.contains("mask") && !cai["mask"].is_none()) {
    throw py::type_error(where + " has a mask in its __cuda_array_interface__; masked arrays are not supported");
  }
  ArrayRef r;
  r.object = py::reinterpret_borrow<py::object>(obj);
  const std::string typestr = py::str(cai["typestr"]);
  r.dtype = typestr_dtype(typestr);
  if (!r.dtype) r.dtype_text = typestr;
  const py::tuple data = cai["data"];
  r.data = reinterpret_cast<void*>(data[0].cast<uintptr_t>());
  r.writeable = !data[1].cast<bool>() && !immutable_producer(obj);
  auto shape = std::make_shared<std::vector<int64_t>>();
  for (py::handle extent : py::tuple(cai["shape"])) shape->push_back(extent.cast<int64_t>());
  r.ndim = int(shape->size());
  r.shape = shape->data();
  r.size = 1;
  for (int64_t extent : *shape) r.size *= extent;
  r.keep = shape;
  const int item = r.dtype ? dtype_size(*r.dtype) : 1;
  r.contiguous = true;
  if (cai.contains("strides") && !cai["strides"].is_none() && r.size > 0) {
    const py::tuple strides = cai["strides"];
    int64_t expected = item;
    for (int d = r.ndim - 1; d >= 0; --d) {
      if ((*shape)[size_t(d)] != 1 && strides[size_t(d)].cast<int64_t>() != expected) r.contiguous = false;
      expected *= (*shape)[size_t(d)];
    }
  }
  r.aligned = reinterpret_cast<uintptr_t>(r.data) % uintptr_t(item) == 0;
  return r;
}

// ---------------------------------------------------------------- devices and streams

// __cuda_array_interface__ v3: "stream" names the stream the producer wrote the data on (1: the legacy
// default stream, 2: the per-thread default stream, else a handle; absent or None: nothing to wait
// for), and the consumer must order its work after it. When that is not the call's own stream, the
// call's stream is made to wait for it (an event; the host does not wait).
void wait_for_interface_stream(const py::dict& cai, const Device& device, const CallDevice& call,
                               const std::string& where) {
  if (!cai.contains("stream") || cai["stream"].is_none()) return;
  const long long value = py::cast<long long>(cai["stream"]);
  if (value <= 0) {
    throw py::value_error(where + ": its __cuda_array_interface__ stream must be None, 1, 2 or a stream handle, got " +
                          std::to_string(value));
  }
  void* written_on = value == 1 ? nullptr : reinterpret_cast<void*>(intptr_t(value));
  if (written_on != call.stream) cuda::order_after(cuda::Queue{device.id, written_on}, call.stream);
}

Device device_from_dlpack(py::handle obj, const std::string& where) {
  const py::tuple dev = obj.attr("__dlpack_device__")();
  const int32_t type = dev[0].cast<int32_t>();
  const int id = dev[1].cast<int>();
  if (type == dlpack::kCPU || type == dlpack::kCUDAHost) return Device{DeviceKind::CPU, 0};
  if (type == dlpack::kCUDA || type == dlpack::kCUDAManaged) return Device{DeviceKind::CUDA, id};
  throw py::type_error(where + " (" + type_name(obj) + ") lives on DLPack device type " + std::to_string(type) +
                       "; fastopt takes CPU and CUDA arrays");
}

Device device_from_pointer(const void* ptr, const std::string& where) {
  if (!cuda::compiled()) return Device{DeviceKind::CUDA, 0};  // refused just below, with the reason
  const int id = ptr == nullptr ? 0 : cuda::pointer_device(ptr);
  if (id < 0) {
    throw py::value_error(where + ": its __cuda_array_interface__ pointer is not CUDA device memory");
  }
  return Device{DeviceKind::CUDA, id};
}

// stream=: an int (a cudaStream_t handle; 0 the legacy default stream), or a stream object with
// .cuda_stream (PyTorch) or .ptr (CuPy).
void* parse_stream(py::handle stream) {
  py::handle handle = stream;
  py::object attribute;
  if (!PyLong_Check(stream.ptr())) {
    if (py::hasattr(stream, "cuda_stream")) {
      attribute = stream.attr("cuda_stream");
    } else if (py::hasattr(stream, "ptr")) {
      attribute = stream.attr("ptr");
    } else {
      throw py::type_error("stream must be an int (a cudaStream_t handle) or a stream object with .cuda_stream "
                           "or .ptr, got " + type_name(stream));
    }
    handle = attribute;
  }
  if (!PyLong_Check(handle.ptr())) throw py::type_error("stream's handle must be an int, got " + type_name(handle));
  const long long value = PyLong_AsLongLong(handle.ptr());
  if (value == -1 && PyErr_Occurred()) throw py::error_already_set();
  if (value < 0) throw py::value_error("stream must be a cudaStream_t handle (>= 0), got " + std::to_string(value));
  return reinterpret_cast<void*>(intptr_t(value));
}

void resolve_stream(CallDevice& call, py::handle producer) {
  if (call.stream_arg.is_none()) {
    // The producer's current stream, in its framework's terms (fastopt/_streams.py).
    const py::object current = py::module_::import("fastopt._streams").attr("current_stream");
    call.stream = parse_stream(current(producer, call.device->id));
  } else {
    call.stream = parse_stream(call.stream_arg);
  }
  call.stream_resolved = true;
}

// Fixes the call's device with the first array, or checks a later one against it.
void join_device(CallDevice& call, const Device& device, const std::string& where, py::handle obj) {
  if (!call.device) {
    if (device.kind == DeviceKind::CUDA && !cuda::compiled()) {
      throw py::value_error(where + " is on " + device_str(device) + ", but this fastopt was built without CUDA "
                            "(FASTOPT_CUDA=OFF, or no CUDA compiler was found at install time)");
    }
    call.device = device;
    call.fixed_by = where;
    // A CPU call does not use stream=, but a garbage one is refused all the same: the mistake would
    // otherwise surface only when the code first meets a GPU.
    if (device.kind == DeviceKind::CPU && !call.stream_arg.is_none()) parse_stream(call.stream_arg);
  } else if (*call.device != device) {
    throw py::value_error(where + " is on " + device_str(device) + " but " + call.fixed_by + " is on " +
                          device_str(*call.device) + "; all arrays of one call must be on one device");
  }
  if (device.kind == DeviceKind::CUDA && !call.stream_resolved) resolve_stream(call, obj);
}

}  // namespace

ArrayRef take_array(py::handle obj, const std::string& where, CallDevice& call) {
  if (py::isinstance<py::array>(obj)) {
    join_device(call, Device{}, where, obj);
    return from_numpy(obj);
  }
  if (is_torch_tensor(obj)) {
    const Device device = torch_device(obj, where);
    join_device(call, device, where, obj);
    return from_torch(obj, device, where);
  }
  if (py::hasattr(obj, "__dlpack__") && py::hasattr(obj, "__dlpack_device__")) {
    const Device device = device_from_dlpack(obj, where);
    join_device(call, device, where, obj);
    return from_dlpack(obj, device, call, where);
  }
  if (py::hasattr(obj, "__cuda_array_interface__")) {
    const py::dict cai = obj.attr("__cuda_array_interface__");
    const py::tuple data = cai["data"];
    const Device device = device_from_pointer(reinterpret_cast<void*>(data[0].cast<uintptr_t>()), where);
    join_device(call, device, where, obj);
    ArrayRef r = from_cuda_interface(obj, cai, where);
    wait_for_interface_stream(cai, device, call, where);
    return r;
  }
  throw py::type_error(where + " must be an array (a numpy.ndarray, or an object with __dlpack__ or "
                       "__cuda_array_interface__), got " + type_name(obj));
}

ArrayArg take_arrays(py::handle obj, const char* name, bool written, CallDevice& call) {
  ArrayArg arg{name, written, {}};
  if (py::isinstance<py::list>(obj) || py::isinstance<py::tuple>(obj)) {
    // The list's or tuple's own length, never len(obj): a subclass may override __len__, and the
    // items are read with PySequence_Fast_GET_ITEM, which trusts the index.
    const size_t count = size_t(PyList_Check(obj.ptr()) ? PyList_GET_SIZE(obj.ptr()) : PyTuple_GET_SIZE(obj.ptr()));
    arg.arrays.reserve(count);
    for (size_t i = 0; i < count; ++i) {
      py::handle item = PySequence_Fast_GET_ITEM(obj.ptr(), py::ssize_t(i));  // a list or tuple
      if (py::isinstance<py::array>(item) && call.device && call.device->kind == DeviceKind::CPU) {
        arg.arrays.push_back(from_numpy(item));  // the common case, without building a label
      } else {
        arg.arrays.push_back(take_array(item, label(arg, i), call));
      }
    }
  } else if (py::isinstance<py::array>(obj) || py::hasattr(obj, "__dlpack__") ||
             py::hasattr(obj, "__cuda_array_interface__")) {
    arg.arrays.push_back(take_array(obj, name, call));
  } else {
    throw py::type_error(std::string(name) + " must be an array or a list/tuple of arrays, got " + type_name(obj));
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

// The params' dtype on their device, or a TypeError naming the array.
DType check_param_dtype(const ArrayRef& p, const std::string& where) {
  if (p.dtype == DType::Float32 || p.dtype == DType::Float64) return *p.dtype;
  if (p.dtype && is_half(*p.dtype)) {
    if (p.device.kind == DeviceKind::CUDA) return *p.dtype;
    throw py::type_error(where + " has dtype " + p.dtype_name() +
                         "; float16 and bfloat16 are updated on CUDA devices only (the CPU kernels take "
                         "float32 or float64)");
  }
  const std::string name = p.dtype_name();
  if (is_byte_swapped_float(name)) throw py::type_error(where + " has dtype " + name + byte_order_advice());
  throw py::type_error(where + " has dtype " + name +
                       "; fastopt updates float32 or float64 arrays (and float16/bfloat16 ones on CUDA) "
                       "and never converts them");
}

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

CallTypes check_arrays(const ArrayArg& params, const std::vector<const ArrayArg*>& others) {
  const size_t n = params.arrays.size();
  std::vector<Extent> extents;
  extents.reserve(n * (1 + others.size()));
  auto record = [&](const ArrayRef& a, const ArrayArg& arg, size_t i) {
    if (a.nbytes() == 0) return;
    const auto begin = reinterpret_cast<uintptr_t>(a.data);
    extents.push_back({begin, begin + uintptr_t(a.nbytes()), &arg, i});
  };

  CallTypes types{DType::Float32, DType::Float32, Device{}};
  for (size_t i = 0; i < n; ++i) {
    const ArrayRef& p = params.arrays[i];
    if (i == 0) {
      // (The label is built only to explain a refusal: this runs on every call.)
      const bool cpu_ok = p.dtype == DType::Float32 || p.dtype == DType::Float64;
      types.param = cpu_ok ? *p.dtype : check_param_dtype(p, label(params, i));
      types.state = is_half(types.param) ? DType::Float32 : types.param;
      types.device = p.device;
    } else if (p.dtype != types.param) {
      check_param_dtype(p, label(params, i));  // throws for a dtype never taken
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
