// How a loss over N rows is reduced, shared by the CPU and CUDA loss kernels.
#pragma once

namespace fastopt {

enum class Reduction { Mean, Sum, None };

}  // namespace fastopt
