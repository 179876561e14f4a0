// Portability macros shared by the C++ and (later) CUDA builds of the per-element math.
#pragma once

// FASTOPT_HD marks a function that runs on the host and, under nvcc, on the device too.
#if defined(__CUDACC__)
#define FASTOPT_HD __host__ __device__ __forceinline__
#else
#define FASTOPT_HD inline
#endif
