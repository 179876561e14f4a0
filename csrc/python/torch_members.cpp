#include "python/torch_members.h"

namespace fastopt::bindings {

const TorchTypes* torch_types() {
  static TorchTypes* types = nullptr;  // lives as long as the process, like the torch module
  if (types != nullptr) return types;
  PyObject* torch = PyDict_GetItemString(PyImport_GetModuleDict(), "torch");  // borrowed
  if (torch == nullptr) return nullptr;
  const py::module_ t = py::reinterpret_borrow<py::module_>(torch);
  // (torch half imported: not yet)
  if (!py::hasattr(t, "Tensor") || !py::hasattr(t, "bfloat16") || !py::hasattr(t, "UntypedStorage")) return nullptr;
  const py::object tensor = t.attr("Tensor"), storage = t.attr("UntypedStorage");
  types = new TorchTypes{tensor, t.attr("strided"), t.attr("float16"), t.attr("bfloat16"), t.attr("float32"),
                         t.attr("float64"), t.attr("int32"), t.attr("int64"), t.attr("uint8"),
                         Member(tensor, "layout", false), Member(tensor, "requires_grad", false),
                         Member(tensor, "dtype", false), Member(tensor, "shape", false),
                         Member(tensor, "data_ptr", true), Member(tensor, "is_contiguous", true),
                         Member(tensor, "is_cuda", false), Member(tensor, "is_cpu", false),
                         Member(tensor, "get_device", true), Member(tensor, "is_neg", true),
                         Member(tensor, "untyped_storage", true), Member(tensor, "is_nested", false),
                         Member(tensor, "grad", false), Member(tensor, "numel", true),
                         Member(storage, "data_ptr", true), Member(storage, "nbytes", true)};
  return types;
}


}  // namespace fastopt::bindings
