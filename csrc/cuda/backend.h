// The CUDA backend as the rest of fastopt sees it: plain C++ declarations, no CUDA headers, so the
// bindings (compiled by the host compiler) call it directly. Implemented by the .cu files of this
// folder when CUDA is compiled in, and by no_cuda.cpp otherwise (where device_count() is 0 and every
// launch throws). Every pointer here is device memory (or managed memory) of Queue::device, already
// checked by the caller: dtypes, shapes, alignment to the element size, no overlaps, labels.
//
// Errors: a failed CUDA call or launch throws fastopt::cuda::Error (a std::runtime_error) naming the
// operation and CUDA's message. Nothing here synchronises the device; the few calls that must read a
// result back on the host (found_inf, find_bad_label) wait for their own stream only, and say so.
#pragma once

#include <array>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "common/dtype.h"
#include "common/reduction.h"
#include "cpu/adafactor_tensor.h"
#include "fastopt/adafactor.h"
#include "fastopt/fastopt.h"
#include "fastopt/registry.h"

namespace fastopt::cuda {

struct Error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// The device and the stream (a cudaStream_t, here as void*; 0 is the legacy default stream) a call runs on.
struct Queue {
  int device = 0;
  void* stream = nullptr;
};

// ---------------------------------------------------------------- runtime

bool compiled();                          // false in a build without CUDA
int device_count();                       // 0 without a usable driver or device; never throws
std::vector<std::string> architectures(); // the compiled targets: "sm_75", ..., "compute_90" (PTX)
int runtime_version();                    // e.g. 13000; 0 without CUDA
int driver_version();                     // 0 without a driver
std::string device_name(int device);
// Whether this build's kernels can run on `device`: machine code for its architecture or PTX the driver
// can compile for it (a GPU older than every compiled target, or a driver older than the PTX, cannot).
// Never throws.
bool runs_kernels(int device);
// The device ordinal owning a pointer (device or managed memory), or -1 for host memory or a pointer
// CUDA does not know.
int pointer_device(const void* ptr);
bool is_capturing(const Queue& queue);    // the stream is being captured into a CUDA graph

// The bytes of kernel arguments the optimizer launches may use on `device`: 32764 where this build has
// kernels for CUDA 12.1's larger argument space and the driver supports it (one launch then carries
// several hundred tensors), else 4096; 0 without CUDA. Never throws.
int kernel_arg_bytes(int device);

// Stream-ordered device memory, for outputs fastopt allocates itself (cudaMallocAsync / cudaFreeAsync).
void* allocate(size_t bytes, const Queue& queue);
void release(void* ptr, const Queue& queue);
// Makes `consumer_stream` (of the same device) wait for the work queued so far on queue.stream: an event
// recorded there and waited for on the consumer's side; nothing waits on the host. Used when memory
// fastopt wrote is handed to a consumer on another stream (DeviceBuffer.__dlpack__).
void order_after(const Queue& queue, void* consumer_stream);

// ---------------------------------------------------------------- optimizer updates

// A 0-d device array read on the device when the kernel runs: lr (float32/float64), step
// (int32/int64/float32/float64), grad_scale (float32/float64) or found_inf (any of the four), so that
// nothing waits for the device and a captured CUDA graph replays with new values.
struct DeviceScalar {
  const void* ptr = nullptr;
  DType dtype = DType::Float32;
  explicit operator bool() const { return ptr != nullptr; }
};

// Values given on the device. lr, step and grad_scale each replace the host value when set (a device
// grad_scale always divides, whatever its value; it is not checked, as torch's fused optimizers do not
// check GradScaler's). found_inf: when it holds a nonzero value at run time, the update writes nothing
// (torch's GradScaler hands its found_inf to fused optimizers this way); the call still returns false.
// A 0-d device scalar's value, copied to the host: waits for the queue's stream.
double read_scalar(const DeviceScalar& scalar, const Queue& queue);

struct DeviceHyper {
  DeviceScalar lr;
  DeviceScalar step;
  DeviceScalar grad_scale;
  DeviceScalar found_inf;
};

// The arrays of one update call: N operands per tensor, nullptr where unused. Operands 0 and 1 (param,
// grad) have dtype `param`; the others (optimizer state) have dtype `state`. Supported pairs:
// float32/float32, float64/float64, float16/float32, bfloat16/float32 (the math runs in float32 for
// half types, in the state's type otherwise). Tensors may be empty; pointers are aligned to their
// element size (wider vector loads are used where every operand of a chunk allows them).
template <int N>
struct DeviceTensorList {
  DType param = DType::Float32;
  DType state = DType::Float32;
  std::vector<std::array<void*, N>> ptrs;
  std::vector<int64_t> sizes;

  void add(const std::array<void*, N>& operands, int64_t size) {
    ptrs.push_back(operands);
    sizes.push_back(size);
  }
};

// Operand order as on the CPU: sgd/adagrad {param, grad, state}; rmsprop {param, grad, square_avg,
// momentum_buffer, grad_avg}; adam {param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq}.
// Each returns found_inf: with hyper.scaling.skip_nonfinite, a first pass over the gradients sets a
// device flag, the update kernels do nothing when it is set, and the call then waits for its stream
// to return the flag. Without skip_nonfinite it returns false at once and only queues work.
bool sgd(const DeviceTensorList<3>& list, const SgdHyper& hyper, const DeviceHyper& device_hyper,
         const Queue& queue);
bool adagrad(const DeviceTensorList<3>& list, const AdagradHyper& hyper, const DeviceHyper& device_hyper,
             const Queue& queue);
bool rmsprop(const DeviceTensorList<5>& list, const RmspropHyper& hyper, const DeviceHyper& device_hyper,
             const Queue& queue);  // (RMSprop has no step; device_hyper.step is ignored)
bool adam(const DeviceTensorList<5>& list, const AdamHyper& hyper, const DeviceHyper& device_hyper,
          const Queue& queue);
// found_inf alone over {unused, grad} (any grad / grad_scale NaN or Inf); waits for the stream.
bool nonfinite(const DeviceTensorList<2>& list, double grad_scale, const Queue& queue);

// An optimizer described as a rule (fastopt/registry.h); each registered rule is instantiated in a .cu
// file CMake generates from csrc/cuda/rule.cu.in (or, without CUDA, in no_cuda.cpp).
template <typename Rule>
bool rule_update(const DeviceTensorList<Rule::kOperands>& list, const typename Rule::Hyper& hyper,
                 const DeviceHyper& device_hyper, const Queue& queue);

// Adafactor (fastopt/adafactor.h) over tensors of one dtype: the CPU kernel's tensors (cpu/adafactor_tensor.h)
// with device pointers. Its sums keep the CPU's order (fastopt/adafactor_tiles.h): the CPU's bits.
// Queues its passes and returns; scratch is stream-ordered.
void adafactor(const std::vector<cpu::AdafactorTensor<float>>& tensors, const AdafactorHyper& hyper,
               const Queue& queue);
void adafactor(const std::vector<cpu::AdafactorTensor<double>>& tensors, const AdafactorHyper& hyper,
               const Queue& queue);

// ---------------------------------------------------------------- losses (float32 / float64)
// Reductions are deterministic: per-row results in a buffer, then a fixed-order tree in one block;
// no floating-point atomics. Results that the CPU returns as a Python float go to a 0-d device
// array `loss` of the scores' dtype, so nothing waits for the device.

struct CrossEntropyCall {
  const void* logits;  // (n, c)
  DType dtype;         // of logits, weight, dlogits, row_losses, loss
  const void* labels;  // (n,), each in [0, c) or == ignore_index (checked before, see find_bad_label)
  DType label_dtype;   // Int32 or Int64
  const void* weight;  // (c,) or nullptr
  void* dlogits;       // (n, c); may be logits itself
  void* row_losses;    // (n,) for Reduction::None, else nullptr
  void* loss;          // 0-d, written unless reduction is None
  int64_t n, c;
  int64_t ignore_index;
  double label_smoothing, z_loss;
  Reduction reduction;
};
void cross_entropy(const CrossEntropyCall& call, const Queue& queue);

struct HingeCall {
  const void* scores;  // (n, c)
  DType dtype;
  const void* labels;  // (n,), each in [0, c)
  DType label_dtype;
  void* dscores;       // (n, c)
  void* row_losses;    // (n,) for Reduction::None, else nullptr
  void* loss;          // 0-d, written unless reduction is None
  int64_t n, c;
  double margin;
  Reduction reduction;
};
void multiclass_svm(const HingeCall& call, const Queue& queue);

// out = softmax(x) or log_softmax(x) over rows of length c (out never aliases x).
void softmax(const void* x, void* out, DType dtype, int64_t rows, int64_t c, bool log, const Queue& queue);

// value (0-d, dtype) = l1 * sum|w| + l2 * sum w^2; adds the gradient into grad unless it is nullptr.
void penalty(const void* w, void* grad, DType dtype, int64_t n, double l1, double l2, void* value,
             const Queue& queue);

// The first label outside [0, c) that is not ignore_index (when has_ignore): a kernel finds it and the
// call waits for the stream to read it back, so that bad labels raise before anything is written.
struct BadLabel {
  int64_t index = -1;  // -1: every label is fine
  int64_t value = 0;
};
BadLabel find_bad_label(const void* labels, DType label_dtype, int64_t n, int64_t c, bool has_ignore,
                        int64_t ignore_index, const Queue& queue);

}  // namespace fastopt::cuda
