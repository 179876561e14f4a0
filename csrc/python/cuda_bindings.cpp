// The CUDA runtime as fastopt.cuda shows it (devices, names), and the stream-ordered allocation and
// stream ordering behind fastopt._device.DeviceBuffer. All of it works in a build without CUDA: no devices.
#include <pybind11/pybind11.h>

#include <cstdint>
#include <string>

#include "cuda/backend.h"

namespace fastopt::bindings {

namespace py = pybind11;

namespace {

void check_device(int device) {
  const int count = cuda::device_count();
  if (device < 0 || device >= count) {
    throw py::value_error("device must be in [0, " + std::to_string(count) + "), got " + std::to_string(device) +
                          (count == 0 ? " (no CUDA device is available)" : ""));
  }
}

cuda::Queue queue(int device, uintptr_t stream) { return cuda::Queue{device, reinterpret_cast<void*>(stream)}; }

}  // namespace

void bind_cuda(py::module_& m) {
  m.def("_cuda_device_count", &cuda::device_count, "CUDA devices usable by this build (0 without CUDA).");
  m.def(
      "_cuda_device_name",
      [](int device) {
        check_device(device);
        return cuda::device_name(device);
      },
      py::arg("device"));
  m.def("_cuda_runs_kernels", &cuda::runs_kernels, py::arg("device"),
        "Whether this build's kernels have an image (machine code or PTX) for CUDA device `device`.");
  m.def("_cuda_kernel_arg_bytes", &cuda::kernel_arg_bytes, py::arg("device"),
        "Kernel-argument bytes of the optimizer launches on `device`: 32764 (CUDA 12.1's), 4096, or 0.");
  m.def(
      "_cuda_allocate",
      [](int64_t nbytes, int device, uintptr_t stream) {
        check_device(device);
        if (nbytes < 0) throw py::value_error("nbytes must be >= 0");
        return reinterpret_cast<uintptr_t>(cuda::allocate(size_t(nbytes), queue(device, stream)));
      },
      py::arg("nbytes"), py::arg("device"), py::arg("stream"),
      "Stream-ordered device memory (cudaMallocAsync); returns the pointer as an int.");
  m.def(
      "_cuda_release",
      [](uintptr_t ptr, int device, uintptr_t stream) {
        cuda::release(reinterpret_cast<void*>(ptr), queue(device, stream));
      },
      py::arg("ptr"), py::arg("device"), py::arg("stream"), "Frees _cuda_allocate's memory on its stream.");
  m.def(
      "_cuda_order_after",
      [](int device, uintptr_t producer, uintptr_t consumer) {
        check_device(device);
        cuda::order_after(queue(device, producer), reinterpret_cast<void*>(consumer));
      },
      py::arg("device"), py::arg("producer"), py::arg("consumer"),
      "Makes stream `consumer` wait for the work queued so far on stream `producer` (no host wait).");
}

}  // namespace fastopt::bindings
