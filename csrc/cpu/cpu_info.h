// What the CPU backend was built with: instruction set and threading.
#pragma once

#include <string>

namespace fastopt::cpu {

// The instruction set the kernel loops were compiled for (e.g. "sse2", "avx2", "neon").
std::string compiled_isa();
// Whether OpenMP threading is compiled in, and how many threads a large update uses.
bool has_openmp();
int max_threads();

}  // namespace fastopt::cpu
