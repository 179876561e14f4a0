// Threading of the CPU backend.
#pragma once

namespace fastopt::cpu {

// Whether OpenMP threading is compiled in, and how many threads a large update uses.
bool has_openmp();
int max_threads();
// Sets the thread count for later calls (no effect without OpenMP).
void set_num_threads(int threads);

}  // namespace fastopt::cpu
