// Kernels on XLA's threads. fastopt.jax's CPU handlers run on threads of XLA's runtime, which
// parallelises a program across its own thread pool. So a handler's kernel call runs on the calling
// thread alone (cpu::CallingThreadOnly), whatever fastopt.set_num_threads says for calls from Python;
// large element-wise work is shared out over XLA's pool instead, one kernel call per piece
// (xla_threads.h).
//
// Why not an OpenMP team: after a parallel region libgomp's workers spin (milliseconds) waiting for
// the next one. Beside a Python loop that costs little, but XLA goes on at once with the program's
// next operations on its own threads, and a spinning worker takes a core from them; where the machine
// is busy, the kernel's own barrier waits for a descheduled worker too. Measured on our 2-core machine
// under load: a jitted 256 x 1000 cross-entropy took 16-20 ms with a team of 2 and 0.2 ms on one
// thread.
#pragma once

#include "cpu/cpu_info.h"

namespace fastopt::jax_ffi {

using KernelOnCallingThread = cpu::CallingThreadOnly;

}  // namespace fastopt::jax_ffi
