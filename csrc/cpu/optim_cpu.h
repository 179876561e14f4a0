// CPU entry points of the optimizer updates: loops over the per-element math in
// csrc/include/fastopt/. Operand order in each TensorList is given next to each function.
// Unused operands (e.g. momentum buffers when momentum == 0) are nullptr.
#pragma once

#include "cpu/tensor_list.h"
#include "fastopt/fastopt.h"

namespace fastopt::cpu {

// {param, grad, momentum_buffer}
template <typename T>
void sgd(const TensorList<T, 3>& tensors, const SgdHyper& hyper);

// {param, grad, state_sum}
template <typename T>
void adagrad(const TensorList<T, 3>& tensors, const AdagradHyper& hyper);

// {param, grad, square_avg, momentum_buffer, grad_avg}
template <typename T>
void rmsprop(const TensorList<T, 5>& tensors, const RmspropHyper& hyper);

// {param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq}; hyper.decoupled selects AdamW.
template <typename T>
void adam(const TensorList<T, 5>& tensors, const AdamHyper& hyper);

}  // namespace fastopt::cpu
