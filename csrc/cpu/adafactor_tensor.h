// One parameter tensor of an Adafactor call (fastopt/adafactor.h), as the binding hands it to the CPU loops
// after validating everything: a factored tensor (ndim >= 2) is batch matrices of rows x cols with
// row_var (batch x rows) and col_var (batch x cols); an unfactored one (ndim < 2) has a full variance.
#pragma once

#include <cstdint>

namespace fastopt::cpu {

template <typename T>
struct AdafactorTensor {
  T* param;
  const T* grad;
  T* row_var;   // factored only (else nullptr)
  T* col_var;   // factored only
  T* variance;  // unfactored only
  int64_t batch, rows, cols;  // unfactored: batch = rows = 1, cols = the element count
  bool factored;

  int64_t size() const { return batch * rows * cols; }
};

}  // namespace fastopt::cpu
