// The fastopt._core extension module: registers the bindings defined in this folder.
#include <pybind11/pybind11.h>

namespace fastopt::bindings {
void bind_optimizers(pybind11::module_& m);
void bind_rules(pybind11::module_& m);      // the optimizers described as rules (fastopt/registry.h)
void bind_quantized(pybind11::module_& m);  // 8-bit blockwise state (python/int8_call.h)
void bind_adafactor(pybind11::module_& m);  // adafactor_ (fastopt/adafactor.h)
void bind_step_check(pybind11::module_& m);  // fastopt.torch's repeated step (torch_step_check.cpp)
void bind_build_info(pybind11::module_& m);
void bind_losses(pybind11::module_& m);
void bind_cuda(pybind11::module_& m);
void bind_dlpack_export(pybind11::module_& m);
void bind_jax(pybind11::module_& m);  // csrc/jax (fastopt.jax), or its stub without jax
}  // namespace fastopt::bindings

PYBIND11_MODULE(_core, m) {
  m.doc() = "fastopt native kernels (use the fastopt package, not this module directly)";
  fastopt::bindings::bind_optimizers(m);
  fastopt::bindings::bind_rules(m);
  fastopt::bindings::bind_adafactor(m);
  fastopt::bindings::bind_quantized(m);
  fastopt::bindings::bind_build_info(m);
  fastopt::bindings::bind_losses(m);
  fastopt::bindings::bind_cuda(m);
  fastopt::bindings::bind_dlpack_export(m);
  fastopt::bindings::bind_jax(m);
  fastopt::bindings::bind_step_check(m);
}
