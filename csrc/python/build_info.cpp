// build_info(): what this build of the extension contains.
#include <pybind11/pybind11.h>

#include "cpu/cpu_info.h"

namespace fastopt::bindings {

namespace py = pybind11;

namespace {

std::string compiler() {
#if defined(__clang__)
  return "clang " __clang_version__;
#elif defined(__GNUC__)
  return "gcc " __VERSION__;
#elif defined(_MSC_VER)
  return "msvc " + std::to_string(_MSC_VER);
#else
  return "unknown";
#endif
}

py::dict build_info() {
  py::dict info;
  info["version"] = FASTOPT_VERSION;
  info["compiler"] = compiler();
  info["cpu_isa"] = cpu::compiled_isa();
  info["openmp"] = cpu::has_openmp();
  info["num_threads"] = cpu::max_threads();
  py::dict cuda;
  cuda["compiled"] = false;  // the CUDA backend arrives with a later issue
  cuda["architectures"] = py::list();
  cuda["option"] = FASTOPT_CUDA_OPTION;
  info["cuda"] = cuda;
  return info;
}

}  // namespace

void bind_build_info(py::module_& m) {
  m.def("build_info", &build_info,
        "What this build contains: version, compiler, cpu_isa (the instruction set the CPU kernels\n"
        "were compiled for), openmp, num_threads, and cuda = {compiled, architectures, option}.");
}

}  // namespace fastopt::bindings
