// The operands of one optimizer-update FFI call, read and checked. fastopt/jax/_ffi.py lays them out:
//
//   args: [lr]  step  param[0..k)  grad[0..k)  state_a[0..k)  state_b[0..k) ...
//   rets:             param[0..k)               state_a[0..k)  state_b[0..k) ...
//
// k = the attribute `tensors` (one call updates a whole list, as the Python functions do). lr, a 0-d
// float32/float64 buffer, is there only when the attribute lr_operand is true (a traced learning rate,
// such as a schedule's value); otherwise the attribute lr holds it, in double. step is the 1-based
// number of this update (0-d int32/int64). The states are the kernel's operands in its order
// (csrc/cpu/kernel_table.h), the ones this configuration does not use left out: `slots` says which
// kernel operand slots are present. Every result aliases its input (input_output_aliases), so the
// kernel updates the result buffers in place: under jit with donated inputs, the caller's memory.
//
// fastopt.jax has checked all of this at trace time, with the user's names; the checks here keep a
// mismatched or hand-made call from reaching a kernel with wrong pointers.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "cpu/tensor_list.h"
#include "cuda/backend.h"
#include "jax/ffi_support.h"

namespace fastopt::jax_ffi {

template <int N>
struct UpdateOperands {
  DType param = DType::Float32;  // of params and grads
  DType state = DType::Float32;  // of the optimizer state
  std::vector<std::array<void*, N>> ptrs;  // per tensor, in kernel operand order; nullptr where unused
  std::vector<int64_t> sizes;
  std::optional<ffi::AnyBuffer> lr;  // present when lr_operand
  std::optional<ffi::AnyBuffer> step;
};

inline std::optional<ffi::AnyBuffer> arg_at(const ffi::RemainingArgs& args, size_t i) {
  auto got = args.get<ffi::AnyBuffer>(i);
  if (!got.has_value()) return std::nullopt;
  return *got;
}

inline std::optional<ffi::AnyBuffer> ret_at(const ffi::RemainingRets& rets, size_t i) {
  auto got = rets.get<ffi::AnyBuffer>(i);
  if (!got.has_value()) return std::nullopt;
  return **got;
}

// Reads the call into `out`. `names` are the operands' names for messages (params, grads, exp_avgs...);
// half_ok: float16/bfloat16 params and grads with float32 state (the CUDA kernels take them).
template <int N>
ffi::Error read_update(const ffi::RemainingArgs& args, const ffi::RemainingRets& rets, int64_t tensors,
                       bool lr_operand, const std::array<bool, N>& slots,
                       const std::array<const char*, N>& names, bool half_ok, UpdateOperands<N>& out) {
  int present = 0;
  for (bool s : slots) present += s ? 1 : 0;
  const size_t head = lr_operand ? 2 : 1;
  if (tensors < 0 || args.size() != head + size_t(tensors) * size_t(present) ||
      rets.size() != size_t(tensors) * size_t(present - 1)) {
    return ffi::Error::Internal(
        "fastopt: an update call with " + std::to_string(args.size()) + " operands and " +
        std::to_string(rets.size()) + " results does not match its attributes (tensors=" + std::to_string(tensors) +
        "); fastopt.jax and fastopt._core come from different builds?");
  }
  if (lr_operand) {
    out.lr = arg_at(args, 0);
    if (!out.lr || (out.lr->element_type() != ffi::DataType::F32 && out.lr->element_type() != ffi::DataType::F64) ||
        out.lr->element_count() != 1) {
      return invalid("lr must be a float32 or float64 scalar");
    }
  }
  out.step = arg_at(args, head - 1);
  if (!out.step || (out.step->element_type() != ffi::DataType::S32 && out.step->element_type() != ffi::DataType::S64) ||
      out.step->element_count() != 1) {
    return invalid("step must be an int32 or int64 scalar");
  }
  out.ptrs.assign(size_t(tensors), {});
  out.sizes.assign(size_t(tensors), 0);
  for (int64_t k = 0; k < tensors; ++k) {
    const std::string index = "[" + std::to_string(k) + "]";
    int block = 0;      // block of the args holding this slot
    int ret_block = 0;  // block of the results holding it (grads have none)
    for (int j = 0; j < N; ++j) {
      if (!slots[size_t(j)]) continue;
      const std::string name = names[size_t(j)] + index;
      const std::optional<ffi::AnyBuffer> in = arg_at(args, head + size_t(block) * size_t(tensors) + size_t(k));
      if (!in) return invalid(name + " is not a buffer");
      const std::optional<DType> dtype = dtype_of(in->element_type());
      const int64_t size = int64_t(in->element_count());
      if (j == 0) {
        const bool ok = dtype && (*dtype == DType::Float32 || *dtype == DType::Float64 || (half_ok && is_half(*dtype)));
        if (!ok) {
          return invalid(name + " has dtype " + type_name(in->element_type()) +
                         (half_ok ? "; params must be float32, float64, float16 or bfloat16"
                                  : "; params must be float32 or float64 here (float16/bfloat16 on CUDA only)"));
        }
        if (k == 0) {
          out.param = *dtype;
          out.state = is_half(*dtype) ? DType::Float32 : *dtype;
        } else if (*dtype != out.param) {
          return invalid(name + " has dtype " + dtype_name(*dtype) + " but " + names[0] + "[0] has " +
                         dtype_name(out.param) + "; one call takes one dtype");
        }
        out.sizes[size_t(k)] = size;
      } else {
        const DType want = j == 1 ? out.param : out.state;
        if (!dtype || *dtype != want) {
          return invalid(name + " has dtype " + type_name(in->element_type()) + " but must be " + dtype_name(want));
        }
        if (size != out.sizes[size_t(k)]) {
          return invalid(name + " has " + std::to_string(size) + " elements but " + names[0] + index + " has " +
                         std::to_string(out.sizes[size_t(k)]));
        }
      }
      void* data = in->untyped_data();
      if (j != 1) {
        const std::optional<ffi::AnyBuffer> res = ret_at(rets, size_t(ret_block) * size_t(tensors) + size_t(k));
        if (!res || res->element_type() != in->element_type() || int64_t(res->element_count()) != size) {
          return invalid("the result for " + name + " does not match it");
        }
        // XLA's operand aliasing makes the result the operand's buffer (copying the operand first where
        // it is still needed), so the kernel can update in place. A build that broke that promise must
        // fail loudly rather than return the untouched result buffer.
        if (size > 0 && res->untyped_data() != data) {
          return ffi::Error::Internal("the result for " + name + " is not aliased to it (input_output_aliases)");
        }
        data = res->untyped_data();
        ++ret_block;
      }
      out.ptrs[size_t(k)][size_t(j)] = data;
      ++block;
    }
  }
  return ffi::Error::Success();
}

// The CPU kernels' list of the call's operands, typed (T: float or double, as ops.param says).
template <typename T, int N>
cpu::TensorList<T, N> host_list(const UpdateOperands<N>& ops) {
  cpu::TensorList<T, N> list;
  list.ptrs.reserve(ops.ptrs.size());
  list.sizes = ops.sizes;
  for (const auto& operands : ops.ptrs) {
    std::array<T*, N> typed;
    for (int j = 0; j < N; ++j) typed[size_t(j)] = static_cast<T*>(operands[size_t(j)]);
    list.ptrs.push_back(typed);
  }
  return list;
}

// The CUDA backend's list of the call's operands (device pointers, as read).
template <int N>
cuda::DeviceTensorList<N> device_list(const UpdateOperands<N>& ops) {
  cuda::DeviceTensorList<N> list;
  list.param = ops.param;
  list.state = ops.state;
  list.ptrs = ops.ptrs;
  list.sizes = ops.sizes;
  return list;
}

// lr (when an operand) and step left on the device, for the kernels to read there: nothing waits for the GPU.
template <int N>
cuda::DeviceHyper device_values(const UpdateOperands<N>& ops) {
  cuda::DeviceHyper on_device;
  if (ops.lr) on_device.lr = cuda::DeviceScalar{ops.lr->untyped_data(), *dtype_of(ops.lr->element_type())};
  on_device.step = cuda::DeviceScalar{ops.step->untyped_data(), *dtype_of(ops.step->element_type())};
  return on_device;
}

}  // namespace fastopt::jax_ffi
