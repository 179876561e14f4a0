// PyTorch tensors, read through their own methods.
//
// A torch.Tensor could go through __dlpack__ like any producer, but its export costs ~7 us in Python
// (torch/_tensor.py), which a step over 150 parameters x 5 arrays pays 750 times. Reading the same facts
// through the tensor's C-implemented methods costs well under 1 us, with the same rules: dense (strided)
// tensors, a CPU or CUDA device, no tensor that requires grad (an in-place write behind autograd's back;
// detach() it, or use fastopt.torch's optimizers; the bindings bump the version of every torch tensor they
// write, python/torch_versions.h), and none whose
// memory does not hold its values as they are (the negative bit of x.conj().imag; complex tensors, the
// only ones with a conjugate bit, are refused by their dtype).
//
// The memory: a reference to the tensor does not keep its memory alive, since set_() (by the caller's code
// during the call, or by another thread while the kernels run without the GIL) gives the tensor another
// storage and may free the old one. So the storage is read and held (untyped_storage(): a reference to
// torch's StorageImpl) and the tensor's data must lie inside it: whatever set_() does meanwhile, the
// kernels write memory that stays allocated until the call returns.
#include <cstdint>
#include <memory>
#include <vector>

#include "python/array_producers.h"
#include "python/memory_claims.h"
#include "python/protocol_values.h"
#include "python/torch_members.h"

namespace fastopt::bindings {

namespace {

std::optional<DType> torch_dtype(const TorchTypes& torch, py::handle dtype) {
  if (dtype.is(torch.f32)) return DType::Float32;
  if (dtype.is(torch.f64)) return DType::Float64;
  if (dtype.is(torch.f16)) return DType::Float16;
  if (dtype.is(torch.bf16)) return DType::BFloat16;
  if (dtype.is(torch.i64)) return DType::Int64;
  if (dtype.is(torch.i32)) return DType::Int32;
  if (dtype.is(torch.u8)) return DType::UInt8;
  return std::nullopt;
}

// What an ArrayRef of a tensor points into: the extents, and the storage the tensor had when it was read.
struct TorchHold {
  std::vector<int64_t> shape;
  py::object storage;  // released with the GIL held, as every ArrayRef is
};

// A tensor whose facts torch cannot give (one of its methods raised): a nested tensor, a tensor inside a
// torch.func transform (vmap's BatchedTensor, grad's wrapper), another tensor without ordinary storage.
[[noreturn]] void unreadable(py::error_already_set& error, py::handle obj, const std::string& where) {
  if (!error.matches(PyExc_Exception)) throw error;
  // (Asked only now: a nested tensor's sizes raise "Internal error: NestedTensorImpl doesn't support sizes".)
  bool is_nested = false;
  try {
    is_nested = truth(torch_types()->is_nested(obj));
  } catch (py::error_already_set& again) {
    if (!again.matches(PyExc_Exception)) throw;
  }
  if (is_nested) {
    error.restore();
    py::raise_from(PyExc_TypeError, (where + " is a nested tensor; fastopt's kernels take dense tensors, each one "
                                             "block of memory").c_str());
    throw py::error_already_set();
  }
  protocol_failed(error, where, obj, "is a tensor without ordinary storage (as inside torch.func.vmap or "
                                     "torch.func.grad), whose memory fastopt's kernels cannot use");
}

}  // namespace

bool is_torch_tensor(py::handle obj, const std::string& where) {
  const TorchTypes* torch = torch_types();
  return torch != nullptr && is_instance(obj, torch->tensor, where);
}

// (is_cuda / is_cpu / get_device() rather than .device.type: a tenth of the cost.)
Device torch_device(py::handle obj, const std::string& where) {
  const TorchTypes& torch = *torch_types();
  try {
    if (truth(torch.is_cuda(obj))) {
      return Device{DeviceKind::CUDA, int(int_in_range(torch.get_device(obj), 0, INT32_MAX, where, "get_device()"))};
    }
    if (truth(torch.is_cpu(obj))) return Device{DeviceKind::CPU, 0};
    const std::string type = py::str(obj.attr("device").attr("type"));
    throw py::type_error(where + " is a tensor on '" + type + "'; fastopt takes CPU and CUDA tensors");
  } catch (py::error_already_set& error) {
    unreadable(error, obj, where);
  }
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
  ArrayRef r;
  r.object = py::reinterpret_borrow<py::object>(obj);
  auto hold = std::make_shared<TorchHold>();
  uintptr_t data = 0, storage_begin = 0;
  int64_t storage_bytes = 0;
  try {
    const py::object layout = torch.layout(obj);
    if (layout.ptr() != torch.strided.ptr()) {
      throw py::type_error(where + " is a " + std::string(py::str(layout)) +
                           " tensor; fastopt's kernels take dense tensors");
    }
    if (truth(torch.requires_grad(obj))) {
      throw py::type_error(where + " requires grad" + requires_grad_advice(where));
    }
    if (truth(torch.is_neg(obj))) {
      throw py::type_error(where + " has its negative bit set (a lazily negated view, such as x.conj().imag): "
                           "its memory holds the values negated. Pass t.resolve_neg(), a copy (which an in-place "
                           "update would not reach)");
    }
    const py::object dtype = torch.dtype(obj);
    r.dtype = torch_dtype(torch, dtype);
    if (!r.dtype) r.dtype_text = py::str(dtype);
    hold->shape = int_sequence(torch.shape(obj), size_t(kMaxDims), where, "its shape");
    r.contiguous = truth(torch.is_contiguous(obj));
    const py::object storage = torch.untyped_storage(obj);
    storage_begin = address_value(torch.storage_data_ptr(storage), where, "its storage's data_ptr()");
    storage_bytes = int_in_range(torch.storage_nbytes(storage), 0, INT64_MAX, where, "its storage's nbytes()");
    data = address_value(torch.data_ptr(obj), where, "its data_ptr()");
    hold->storage = storage;
  } catch (py::error_already_set& error) {
    unreadable(error, obj, where);
  }
  r.ndim = int(hold->shape.size());
  r.shape = hold->shape.data();
  r.size = count_elements(r.shape, r.ndim, where, "the tensor");
  const int64_t item = r.dtype ? dtype_size(*r.dtype) : 1;
  check_data_range(data, r.size, item, where, "the tensor (a FakeTensor or a meta tensor has no memory)");
  // Contiguous memory of a tensor lies in its storage. (A non-contiguous tensor is refused by every caller
  // before it is used; its extents may reach past the storage, as an expand()ed one's do.)
  if (r.size > 0 && r.contiguous) {
    const uint64_t bytes = uint64_t(r.size) * uint64_t(item);  // (fits: checked by check_data_range)
    const bool inside = data >= storage_begin && data - storage_begin <= uint64_t(storage_bytes) &&
                        bytes <= uint64_t(storage_bytes) - (data - storage_begin);
    if (!inside) {
      throw py::value_error(where + "'s memory is not inside its storage (was the tensor given another storage "
                            "with set_() while fastopt read it?)");
    }
  }
  r.data = reinterpret_cast<void*>(data);
  r.device = device;
  r.aligned = data % uintptr_t(item) == 0;
  r.writeable = true;
  r.torch_tensor = true;  // its version is bumped when written (python/torch_versions.h)
  r.keep = std::move(hold);
  return r;
}

}  // namespace fastopt::bindings
