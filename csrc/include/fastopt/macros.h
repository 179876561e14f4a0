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
#if defined(__CUDACC__)
#define FASTOPT_HD __host__ __device__ __forceinline__
#else
#define FASTOPT_HD static inline
#endif
#define FASTOPT_HOST static inline
