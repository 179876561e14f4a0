// Reports the compile-time target of the CPU loops. This file is compiled with the same flags as
// optim_cpu.cpp, so the predefined macros describe the kernels' instruction set.
#include "cpu/cpu_info.h"

#ifdef _OPENMP
#include <omp.h>
#endif

namespace fastopt::cpu {

std::string compiled_isa() {
#if defined(__AVX512F__)
  return "avx512f";
#elif defined(__AVX2__) && defined(__FMA__)
  return "avx2+fma";
#elif defined(__AVX__)
  return "avx";
#elif defined(__SSE2__) || defined(_M_X64)
  return "sse2";
#elif defined(__ARM_FEATURE_SVE)
  return "sve";
#elif defined(__ARM_NEON)
  return "neon";
#else
  return "scalar";
#endif
}

bool has_openmp() {
#ifdef _OPENMP
  return true;
#else
  return false;
#endif
}

int max_threads() {
#ifdef _OPENMP
  return omp_get_max_threads();
#else
  return 1;
#endif
}

}  // namespace fastopt::cpu
