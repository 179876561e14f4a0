// backend.h for a build without CUDA (FASTOPT_CUDA=OFF, or AUTO without a CUDA compiler): there are
// no devices, and reaching a launch at all is refused with the reason. The bindings check the
// device of every array first, so users see "built without CUDA" before any of these throws.
#include "cuda/backend.h"

#include <tuple>

namespace fastopt::cuda {

namespace {

[[noreturn]] void unavailable() {
  throw Error("this fastopt was built without CUDA (FASTOPT_CUDA=OFF, or no CUDA compiler was found); "
              "reinstall with FASTOPT_CUDA=ON where nvcc is installed");
}

}  // namespace

bool compiled() { return false; }
int device_count() { return 0; }
std::vector<std::string> architectures() { return {}; }
int runtime_version() { return 0; }
int driver_version() { return 0; }
std::string device_name(int) { unavailable(); }
bool runs_kernels(int) { return false; }
int pointer_device(const void*) { return -1; }
bool is_capturing(const Queue&) { return false; }
int kernel_arg_bytes(int) { return 0; }
void* allocate(size_t, const Queue&) { unavailable(); }
void release(void*, const Queue&) { unavailable(); }
void order_after(const Queue&, void*) { unavailable(); }

bool sgd(const DeviceTensorList<3>&, const SgdHyper&, const DeviceHyper&, const Queue&) { unavailable(); }
bool adagrad(const DeviceTensorList<3>&, const AdagradHyper&, const DeviceHyper&, const Queue&) { unavailable(); }
bool rmsprop(const DeviceTensorList<5>&, const RmspropHyper&, const DeviceHyper&, const Queue&) { unavailable(); }
bool adam(const DeviceTensorList<5>&, const AdamHyper&, const DeviceHyper&, const Queue&) { unavailable(); }
bool nonfinite(const DeviceTensorList<2>&, double, const Queue&) { unavailable(); }
double read_scalar(const DeviceScalar&, const Queue&) { unavailable(); }
void adafactor(const std::vector<cpu::AdafactorTensor<float>>&, const AdafactorHyper&, const Queue&) { unavailable(); }
void adafactor(const std::vector<cpu::AdafactorTensor<double>>&, const AdafactorHyper&, const Queue&) { unavailable(); }
void cross_entropy(const CrossEntropyCall&, const Queue&) { unavailable(); }
void multiclass_svm(const HingeCall&, const Queue&) { unavailable(); }
void softmax(const void*, void*, DType, int64_t, int64_t, bool, const Queue&) { unavailable(); }
void penalty(const void*, void*, DType, int64_t, double, double, void*, const Queue&) { unavailable(); }
BadLabel find_bad_label(const void*, DType, int64_t, int64_t, bool, int64_t, const Queue&) { unavailable(); }

template <typename Rule>
bool rule_update(const DeviceTensorList<Rule::kOperands>&, const typename Rule::Hyper&, const DeviceHyper&,
                 const Queue&) {
  unavailable();
}

// Every registered rule's stub, instantiated: taking their addresses in an explicitly instantiated
// function emits them (no list of rules to keep in step here).
template <typename... Rules>
auto rule_stubs(RuleList<Rules...>) {
  return std::make_tuple(&rule_update<Rules>...);
}
template auto rule_stubs(Registry);

}  // namespace fastopt::cuda
