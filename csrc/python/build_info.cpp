// build_info() and the runtime settings of the CPU backend (instruction set, threads).
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <stdexcept>

#include "cpu/cpu_info.h"
#include "cpu/kernel_table.h"
#include "cuda/backend.h"

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
  info["cpu_isa"] = cpu::kernels().isa;
  info["cpu_isas_compiled"] = cpu::compiled_isas();
  info["cpu_isas_supported"] = cpu::supported_isas();
  info["openmp"] = cpu::has_openmp();
  info["num_threads"] = cpu::max_threads();
  py::dict cuda;
  cuda["compiled"] = cuda::compiled();
  cuda["architectures"] = cuda::architectures();
  cuda["option"] = FASTOPT_CUDA_OPTION;
  cuda["runtime_version"] = cuda::runtime_version();
  cuda["driver_version"] = cuda::driver_version();
  cuda["device_count"] = cuda::device_count();
  info["cuda"] = cuda;
  return info;
}

std::string set_cpu_isa(const std::string& name) {
  try {
    return cpu::use_isa(name);
  } catch (const std::invalid_argument&) {
    std::string known;
    for (const std::string& isa : cpu::compiled_isas()) known += (known.empty() ? "" : ", ") + isa;
    throw py::value_error("name must be one of the instruction sets compiled in (" + known + "), got '" +
                          name + "'");
  }
}

// cpu::kMaxThreads is an upper bound, so that a typo cannot ask OpenMP for a million threads:
// libgomp crashes the whole process when it fails to create them.
void set_num_threads(int threads) {
  if (threads < 1 || threads > cpu::kMaxThreads) {
    throw py::value_error("threads must be in [1, " + std::to_string(cpu::kMaxThreads) + "], got " +
                          std::to_string(threads));
  }
  cpu::set_num_threads(threads);
}

}  // namespace

void bind_build_info(py::module_& m) {
  m.def("build_info", &build_info,
        "What this build contains: version, compiler, cpu_isa (the instruction set the CPU kernels\n"
        "use now), cpu_isas_compiled and cpu_isas_supported (best first), openmp, num_threads, and\n"
        "cuda = {compiled, architectures, option, runtime_version, driver_version, device_count}.");
  m.def("set_cpu_isa", &set_cpu_isa, py::arg("name"),
        "Uses the best instruction set this CPU supports at or below `name` ('avx512', 'avx2',\n"
        "'baseline'); returns the one chosen. The environment variable FASTOPT_CPU_ISA does the same\n"
        "at import. Results are bit-identical across instruction sets.");
  m.def("set_num_threads", &set_num_threads, py::arg("threads"),
        "Threads used by large updates and losses (small ones stay on the calling thread), for the\n"
        "whole process: calls from every Python thread use it. 1 <= threads <= 1024; results are\n"
        "bit-identical for any count. The environment variable FASTOPT_NUM_THREADS does the same at\n"
        "import; without it the count starts at OpenMP's default (OMP_NUM_THREADS, else the CPUs this\n"
        "process may use), capped at 1024.");
  m.def("get_num_threads", &cpu::max_threads,
        "The thread count large updates and losses use now: set_num_threads' value, or 1 in a forked\n"
        "child process (OpenMP's threads do not survive fork, so a child runs every kernel on its calling\n"
        "thread; use multiprocessing's 'spawn' or 'forkserver' for threaded workers), and 1 without OpenMP.");
  m.attr("_MAX_NUM_THREADS") = cpu::kMaxThreads;
  // Test hooks: the loss loops' per-row cache share (cpu_info.h), to run their split path on small rows.
  m.def("_loss_row_cache_bytes", &cpu::loss_row_cache_bytes,
        "Bytes of a row the loss loops keep in cache between its passes (longer rows take the split path).");
  m.def(
      "_set_loss_row_cache_bytes",
      [](int64_t bytes) {
        if (bytes < 0) throw py::value_error("bytes must be >= 0 (0: the detected size), got " + std::to_string(bytes));
        cpu::set_loss_row_cache_bytes(bytes);
      },
      py::arg("bytes"), "Overrides _loss_row_cache_bytes (0 restores the size detected from the L2 cache).");
  m.def("_l2_cache_bytes", &cpu::l2_cache_bytes, "The L2 cache per core the CPU reports, in bytes (0: unknown).");
}

}  // namespace fastopt::bindings
