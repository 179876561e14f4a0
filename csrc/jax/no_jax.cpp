// fastopt._core without fastopt.jax's XLA FFI handlers (FASTOPT_JAX=OFF, or AUTO where the building
// Python had no jaxlib): nothing is bound, and fastopt.jax says how to build them.
#include <pybind11/pybind11.h>

namespace fastopt::bindings {

void bind_jax(pybind11::module_&) {}

}  // namespace fastopt::bindings
