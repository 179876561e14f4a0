// fastopt._core's side of fastopt.jax: the XLA FFI handlers as PyCapsules, which fastopt/jax/_ffi.py
// registers with jax.ffi.register_ffi_target. Nothing here imports or links jax: the handlers speak
// XLA's FFI C API through its header-only wrappers, so `import fastopt` never needs jax.
//
// The handlers live in _core rather than in a module of their own so that they call the very kernel
// table (instruction set, thread count, set_cpu_isa / set_num_threads) that fastopt's other
// functions use, and the wheel carries one copy of the kernels.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "cuda/backend.h"
#include "jax/handlers.h"
#include "jax/host_test.h"
#include "xla/ffi/api/c_api.h"

namespace fastopt::bindings {

namespace py = pybind11;

void bind_jax(py::module_& m) {
  m.def(
      "_jax_ffi_targets",
      [] {
        py::dict targets;
        for (const auto& list : {jax_ffi::update_targets(), jax_ffi::rule_targets(), jax_ffi::adafactor_targets(),
                                  jax_ffi::loss_targets()}) {
          for (const jax_ffi::Target& t : list) {
            py::dict platforms;
            platforms["cpu"] = py::capsule(reinterpret_cast<void*>(t.cpu));
            // CUDA handlers are registered only where the CUDA backend is compiled in.
            if (cuda::compiled() && t.cuda != nullptr) platforms["cuda"] = py::capsule(reinterpret_cast<void*>(t.cuda));
            targets[t.name] = platforms;
          }
        }
        return targets;
      },
      "The XLA FFI handlers of fastopt.jax: {target name: {platform: PyCapsule}} (used by fastopt.jax).");
  m.def(
      "_jax_ffi_host_test_targets",
      [] {
        py::dict targets;
        for (const auto& list : {jax_ffi::update_host_test_targets(), jax_ffi::rule_host_test_targets(),
                                  jax_ffi::loss_host_test_targets(), jax_ffi::adafactor_host_test_targets()}) {
          for (const jax_ffi::Target& t : list) targets[t.name] = py::capsule(reinterpret_cast<void*>(t.cpu));
        }
        return targets;
      },
      "For tests: the CUDA handlers' code as CPU handlers that record what they would launch\n"
      "(csrc/jax/host_test.h): {target name: PyCapsule}.");
  m.def("_jax_ffi_host_test_records", &jax_ffi::HostRecorder::take,
        "For tests: the launches recorded by _jax_ffi_host_test_targets' handlers since the last call.");
  py::dict info;
  info["jaxlib_headers"] = FASTOPT_JAXLIB_VERSION;
  info["ffi_api"] = py::make_tuple(XLA_FFI_API_MAJOR, XLA_FFI_API_MINOR);
  m.attr("_jax_ffi_build") = info;
}

}  // namespace fastopt::bindings
