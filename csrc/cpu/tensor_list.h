// The CPU backend's view of a list of tensors: N raw pointers per tensor (param, grad, states...)
// and the tensor's element count. The binding fills it after validating everything.
#pragma once

#include <array>
#include <cstdint>
#include <vector>

namespace fastopt::cpu {

template <typename T, int N>
struct TensorList {
  std::vector<std::array<T*, N>> ptrs;  // ptrs[k][j]: j-th operand of tensor k (nullptr if unused)
  std::vector<int64_t> sizes;           // elements of tensor k

  void add(const std::array<T*, N>& operands, int64_t size) {
    ptrs.push_back(operands);
    sizes.push_back(size);
  }
};

}  // namespace fastopt::cpu
