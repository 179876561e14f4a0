// The CUDA handlers on the host, for tests. XLA's CPU runtime has no GPU context, so the CUDA handlers
// cannot run there as they are; their code is also instantiated with HostRecorder in place of the
// CUDA backend, bound as CPU targets (without the stream and device context), and what they would
// launch is written down as text that fastopt._core._jax_ffi_host_test_records() returns. The tests
// (tests/fastopt_jax/test_jax_ffi.py) check it: operands and dtypes taken, half parameters with float32 state, lr and
// step left on the device, per-batch pointer offsets of the loss. The launches themselves are the CUDA
// backend's, tested on a GPU (tests marked cuda) and on the host by tests/cuda_host.
#pragma once

#include <cstdint>
#include <mutex>
#include <sstream>
#include <string>
#include <vector>

#include "cuda/backend.h"

namespace fastopt::jax_ffi {

class HostRecorder {
 public:
  template <int N, typename Hyper>
  static void update(const char* what, const cuda::DeviceTensorList<N>& list, const Hyper& hyper,
                     const cuda::DeviceHyper& on_device, const cuda::Queue& queue) {
    std::ostringstream out;
    out << what << " param=" << dtype_name(list.param) << " state=" << dtype_name(list.state) << " sizes=";
    for (size_t k = 0; k < list.sizes.size(); ++k) out << (k ? "," : "") << list.sizes[k];
    out << " slots=";
    for (size_t k = 0; k < list.ptrs.size(); ++k) {
      out << (k ? "," : "");
      for (void* p : list.ptrs[k]) out << (p ? '1' : '0');
    }
    out << " lr=" << hyper.lr << " device_lr=" << (on_device.lr ? dtype_name(on_device.lr.dtype) : "none")
        << " device_step=" << (on_device.step ? dtype_name(on_device.step.dtype) : "none") << " device=" << queue.device
        << " stream=" << queue.stream;
    add(out.str());
  }

  // A 0-d operand the CUDA code reads back (Adafactor's lr and step): host memory here.
  static double read_scalar(const cuda::DeviceScalar& s) {
    switch (s.dtype) {
      case DType::Float32: return double(*static_cast<const float*>(s.ptr));
      case DType::Float64: return *static_cast<const double*>(s.ptr);
      case DType::Int32: return double(*static_cast<const int32_t*>(s.ptr));
      default: return double(*static_cast<const int64_t*>(s.ptr));
    }
  }

  template <typename T>
  static void adafactor(const std::vector<cpu::AdafactorTensor<T>>& list, const AdafactorHyper& h,
                        const cuda::Queue& queue) {
    std::ostringstream out;
    out << "adafactor dtype=" << (sizeof(T) == 4 ? "float32" : "float64") << " shapes=";
    for (size_t k = 0; k < list.size(); ++k) {
      const auto& t = list[k];
      out << (k ? "," : "") << (t.factored ? std::to_string(t.batch) + "x" + std::to_string(t.rows) + "x" +
                                                 std::to_string(t.cols)
                                           : std::to_string(t.cols));
    }
    out << " lr=" << h.lr << " step=" << h.step << " device=" << queue.device;
    add(out.str());
  }

  // Labels are host memory here: checked as the device kernel would.
  static cuda::BadLabel find_bad_label(const void* labels, DType label_dtype, int64_t n, int64_t c, bool has_ignore,
                                       int64_t ignore_index, const cuda::Queue&) {
    std::ostringstream out;
    out << "find_bad_label labels=" << reinterpret_cast<uintptr_t>(labels) << " n=" << n << " c=" << c
        << " ignore=" << (has_ignore ? std::to_string(ignore_index) : "none");
    add(out.str());
    for (int64_t i = 0; i < n; ++i) {
      const int64_t v = label_dtype == DType::Int32 ? int64_t(static_cast<const int32_t*>(labels)[i])
                                                    : static_cast<const int64_t*>(labels)[i];
      if ((has_ignore && v == ignore_index) || (v >= 0 && v < c)) continue;
      return cuda::BadLabel{i, v};
    }
    return cuda::BadLabel{};
  }

  static void cross_entropy(const cuda::CrossEntropyCall& call, const cuda::Queue& queue) {
    std::ostringstream out;
    out << "cross_entropy dtype=" << dtype_name(call.dtype) << " labels_dtype=" << dtype_name(call.label_dtype)
        << " logits=" << address(call.logits) << " labels=" << address(call.labels)
        << " weight=" << address(call.weight) << " dlogits=" << address(call.dlogits)
        << " row_losses=" << address(call.row_losses) << " loss=" << address(call.loss) << " n=" << call.n
        << " c=" << call.c << " ignore_index=" << call.ignore_index << " label_smoothing=" << call.label_smoothing
        << " z_loss=" << call.z_loss << " reduction=" << int(call.reduction) << " device=" << queue.device;
    add(out.str());
  }

  static void softmax(const void* x, void* out_ptr, DType dtype, int64_t rows, int64_t c, bool log,
                      const cuda::Queue&) {
    std::ostringstream out;
    out << "softmax x=" << address(x) << " out=" << address(out_ptr) << " dtype=" << dtype_name(dtype)
        << " rows=" << rows << " c=" << c << " log=" << log;
    add(out.str());
  }

  static std::vector<std::string> take() {
    std::lock_guard<std::mutex> lock(mutex());
    std::vector<std::string> taken;
    taken.swap(records());
    return taken;
  }

 private:
  static uintptr_t address(const void* p) { return reinterpret_cast<uintptr_t>(p); }
  static std::mutex& mutex() {
    static std::mutex m;
    return m;
  }
  static std::vector<std::string>& records() {
    static std::vector<std::string> r;
    return r;
  }
  static void add(std::string line) {
    std::lock_guard<std::mutex> lock(mutex());
    records().push_back(std::move(line));
  }
};

}  // namespace fastopt::jax_ffi
