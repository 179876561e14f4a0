// Portability macros shared by the C++ and CUDA builds of the math.
#pragma once

// FASTOPT_HD marks a function that runs on the host and, under nvcc, on the device too.
// FASTOPT_HOST marks host-only helpers. The optimizers' per-call constants (*_scalars) are FASTOPT_HD:
// a capturable CUDA call reads lr and step on the device and computes them there.
//
// On the host both give internal linkage (static): the CPU kernels are compiled once per instruction
// set (baseline, AVX2, AVX-512) from the same headers, and an inline function with external linkage
// would be merged across those translation units by the linker, so AVX-512 code could end up behind
// the baseline entry point. Static functions are private to each translation unit.
//
// FASTOPT_HD is also always inlined on the host, as on the device: the per-element updates (adam_update
// & co.) are called inside the loops that must vectorise, and where GCC judged a caller too large (the
// one-thread path of adam_stored, with its eight flag variants) it kept adam_update out of line and the
// loop scalar, a call per element: about 5 ns per element instead of under 1 (tests/kernels/test_loop_vectorised.py
// now fails when any of them is compiled out of line).
// (FASTOPT_ALWAYS_INLINE is defined empty by that test's own negative check only.)
#ifndef FASTOPT_ALWAYS_INLINE
#define FASTOPT_ALWAYS_INLINE __attribute__((always_inline))
#endif
#if defined(__CUDACC__)
#define FASTOPT_HD __host__ __device__ __forceinline__
#else
#define FASTOPT_HD static inline FASTOPT_ALWAYS_INLINE
#endif
#define FASTOPT_HOST static inline
