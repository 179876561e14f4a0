// The labels' check on the GPU (find_bad_label): the first label outside [0, c) and not ignore_index,
// found with integer atomics and read back on the host (the only loss call that waits for the stream).
#include "cuda/loss_common.cuh"

namespace fastopt::cuda {

namespace {

constexpr int kLabelThreads = 256;
constexpr int64_t kMaxLabelBlocks = 4096;

// ---------------------------------------------------------------- label check

// slots[0] = max over bad labels of n - i (so the first bad index wins; 0: none). Integer atomics:
// the result does not depend on the order.
template <typename L>
__global__ void find_bad_label_kernel(const L* labels, int64_t n, int64_t c, bool has_ignore, int64_t ignore_index,
                                      unsigned long long* slots) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t v = int64_t(labels[i]);
    if (has_ignore && v == ignore_index) continue;
    if (v < 0 || v >= c) atomicMax(slots, static_cast<unsigned long long>(n - i));
  }
}

// slots[1] = the first bad label's value.
template <typename L>
__global__ void read_bad_label(const L* labels, int64_t n, long long* slots) {
  const long long k = slots[0];
  if (k > 0) slots[1] = static_cast<long long>(labels[n - k]);
}


}  // namespace

// ---------------------------------------------------------------- backend.h

BadLabel find_bad_label(const void* labels, DType label_dtype, int64_t n, int64_t c, bool has_ignore,
                        int64_t ignore_index, const Queue& queue) {
  BadLabel bad;
  if (n == 0) return bad;
  DeviceScope scope(queue.device);
  // The answer is copied to the host and the stream waited for, which a stream being captured into a
  // CUDA graph does not allow: the copy would fail and invalidate the caller's capture. Refuse first,
  // before anything is queued, so that the capture stays usable.
  if (is_capturing(queue)) {
    throw Error("fastopt: the labels of a loss are checked on the device and the result read back on the host, "
                "which waits for the stream; that cannot happen while the stream is being captured into a CUDA "
                "graph. Call the loss outside the capture, or with check_labels=None or False (the kernels then guard "
                "every label: a bad label's row gets a zero gradient and a NaN loss)");
  }
  const cudaStream_t stream = stream_of(queue);
  DeviceFlag flag(queue);
  with_label(label_dtype, "find_bad_label", [&](auto l) {
    using L = decltype(l);
    const L* p = static_cast<const L*>(labels);
    const int64_t wanted = ceil_div(n, kLabelThreads);
    const unsigned blocks = unsigned(wanted < kMaxLabelBlocks ? wanted : kMaxLabelBlocks);
    find_bad_label_kernel<L><<<blocks, kLabelThreads, 0, stream>>>(
        p, n, c, has_ignore, ignore_index, reinterpret_cast<unsigned long long*>(flag.get()));
    check_launch("find_bad_label");
    read_bad_label<L><<<1, 1, 0, stream>>>(p, n, flag.get());
    check_launch("read_bad_label");
  });
  long long slots[2] = {0, 0};
  flag.read_and_wait(slots);
  if (slots[0] > 0) {
    bad.index = n - slots[0];
    bad.value = slots[1];
  }
  return bad;
}

}  // namespace fastopt::cuda
