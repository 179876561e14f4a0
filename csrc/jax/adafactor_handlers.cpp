// The XLA FFI handler of Adafactor (fastopt/adafactor.h; fastopt.jax.adafactor): "fastopt_adafactor", on
// the CPU through the kernel table entry fastopt.adafactor_ runs, on CUDA through the CUDA backend's passes
// (the CPU's bits).
// Not a rule of the registry: its state is not shaped like the parameter, so its operands are laid out here.
//
//   args: [lr]  step  param[0..k)  grad[0..k)  state of tensor 0, of tensor 1, ...
//   rets:             param[0..k)               the same states
//
// A tensor of ndim >= 2 is factored over its last two axes and brings row_var (its shape with the last
// axis 1) and col_var (with the second last axis 1); any other brings variance (its own shape). Every
// result aliases its operand (input_output_aliases): the kernel updates them in place. Attributes: lr
// (read when lr_operand is false), lr_operand, tensors, beta2_decay, eps1 (NaN: the dtype's machine
// epsilon), eps2, d, weight_decay, maximize.
//
// Every tensor's numbers depend on that tensor alone (its sums run in a fixed order, csrc/cpu/adafactor_loops.h),
// so a large list is shared out over XLA's thread pool by whole tensors (xla_threads.h's run_pieces, one
// kernel call per piece on one thread: kernel_threads.h): the same bits as fastopt.adafactor_ on any thread
// count. A single tensor runs on the calling thread.
#include <cmath>
#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "common/adafactor_checks.h"
#include "cpu/kernel_table.h"
#include "cuda/backend.h"
#include "jax/ffi_support.h"
#include "jax/handlers.h"
#include "jax/host_test.h"
#include "jax/kernel_threads.h"
#include "jax/xla_threads.h"

namespace fastopt::jax_ffi {

namespace {

using Dims = ffi::AnyBuffer::Dimensions;

std::string shape_text(const std::vector<int64_t>& shape) {
  std::string s = "(";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + (shape.size() == 1 ? ",)" : ")");
}

std::vector<int64_t> dims_of(const ffi::AnyBuffer& b) {
  const Dims d = b.dimensions();
  return std::vector<int64_t>(d.begin(), d.end());
}

// One state buffer of tensor k: its operand and its result, the same buffer (aliased), of the
// parameter's dtype and the shape its kind needs.
ffi::Error read_state(const ffi::RemainingArgs& args, const ffi::RemainingRets& rets, size_t arg, size_t ret,
                      const std::string& name, ffi::DataType dtype, const std::vector<int64_t>& shape,
                      void*& data) {
  const auto in = args.get<ffi::AnyBuffer>(arg);
  auto out = rets.get<ffi::AnyBuffer>(ret);
  if (!in.has_value() || !out.has_value()) return invalid(name + " is not a buffer");
  if (in->element_type() != dtype) {
    return invalid(name + " has dtype " + type_name(in->element_type()) + " but must be " + type_name(dtype));
  }
  if (dims_of(*in) != shape) {
    return invalid(name + " has shape " + shape_text(dims_of(*in)) + " but must be " + shape_text(shape));
  }
  ffi::AnyBuffer result = **out;
  if (result.element_type() != dtype || dims_of(result) != shape) {
    return invalid("the result for " + name + " does not match it");
  }
  // (as update_operands.h: an unaliased result would come back untouched)
  if (in->element_count() > 0 && result.untyped_data() != in->untyped_data()) {
    return ffi::Error::Internal("the result for " + name + " is not aliased to it (input_output_aliases)");
  }
  data = result.untyped_data();
  return ffi::Error::Success();
}

struct Pointers {
  void *param, *row_var = nullptr, *col_var = nullptr, *variance = nullptr;
  const void* grad;
};

// One call's operands, read and checked: its hyperparameters, dtype and tensors.
struct AdafactorCall {
  AdafactorHyper h;
  ffi::DataType dtype = ffi::DataType::F32;
  std::vector<std::vector<int64_t>> shapes;
  std::vector<Pointers> ptrs;

  template <typename T>
  std::vector<cpu::AdafactorTensor<T>> tensors() const {
    std::vector<cpu::AdafactorTensor<T>> list;
    list.reserve(shapes.size());
    for (size_t i = 0; i < shapes.size(); ++i) {
      const std::vector<int64_t>& shape = shapes[i];
      int64_t size = 1;
      for (int64_t n : shape) size *= n;
      cpu::AdafactorTensor<T> t{static_cast<T*>(ptrs[i].param), static_cast<const T*>(ptrs[i].grad),
                                static_cast<T*>(ptrs[i].row_var), static_cast<T*>(ptrs[i].col_var),
                                static_cast<T*>(ptrs[i].variance), 1, 1, size, shape.size() >= 2};
      if (t.factored) {
        t.rows = shape[shape.size() - 2];
        t.cols = shape.back();
        for (size_t a = 0; a + 2 < shape.size(); ++a) t.batch *= shape[a];
      }
      list.push_back(t);
    }
    return list;
  }
};

// Reads and checks a call. lr (when an operand) and step are read on the host by read_real(buffer) and
// read_integer(buffer): the constants of a step (w = step^beta2_decay...) are computed on the host on both
// platforms, so that a GPU step gives the CPU's bits.
template <typename ReadReal, typename ReadInteger>
ffi::Error read_call(const ffi::RemainingArgs& args, const ffi::RemainingRets& rets, double lr, bool lr_operand,
                     int64_t tensors, double beta2_decay, double eps1, double eps2, double d, double weight_decay,
                     bool maximize, ReadReal&& read_real, ReadInteger&& read_integer, AdafactorCall& call) {
  const size_t head = lr_operand ? 2 : 1;
  const size_t k = tensors < 0 ? 0 : size_t(tensors);
  if (tensors < 0 || args.size() < head + 2 * k) {
    return ffi::Error::Internal("fastopt_adafactor: a call with " + std::to_string(args.size()) +
                                " operands does not match tensors=" + std::to_string(tensors) +
                                "; fastopt.jax and fastopt._core come from different builds?");
  }
  AdafactorHyper& h = call.h;
  h = AdafactorHyper{lr, beta2_decay, eps1, eps2, d, weight_decay, maximize, 1};
  if (lr_operand) {
    const auto b = args.get<ffi::AnyBuffer>(0);
    if (!b.has_value() || (b->element_type() != ffi::DataType::F32 && b->element_type() != ffi::DataType::F64) ||
        b->element_count() != 1) {
      return invalid("lr must be a float32 or float64 scalar");
    }
    h.lr = read_real(*b);
  }
  const auto step = args.get<ffi::AnyBuffer>(head - 1);
  if (!step.has_value() ||
      (step->element_type() != ffi::DataType::S32 && step->element_type() != ffi::DataType::S64) ||
      step->element_count() != 1) {
    return invalid("step must be an int32 or int64 scalar");
  }
  h.step = read_integer(*step);
  if (const rules::Check bad = rules::check(h)) return invalid(rules::describe(*bad, show));

  // The parameters fix the dtype and each tensor's kind, hence how many state operands follow.
  ffi::DataType& dtype = call.dtype;
  std::vector<std::vector<int64_t>>& shapes = call.shapes;
  shapes.assign(k, {});
  size_t states = 0;
  for (size_t i = 0; i < k; ++i) {
    const auto p = args.get<ffi::AnyBuffer>(head + i);
    const auto g = args.get<ffi::AnyBuffer>(head + k + i);
    const std::string index = "[" + std::to_string(i) + "]";
    if (!p.has_value() || !g.has_value()) return invalid("params" + index + " or grads" + index + " is not a buffer");
    if (i == 0) dtype = p->element_type();
    if (p->element_type() != dtype || (dtype != ffi::DataType::F32 && dtype != ffi::DataType::F64)) {
      return invalid("params" + index + " has dtype " + type_name(p->element_type()) +
                     "; params must be float32 or float64, one dtype per call");
    }
    shapes[i] = dims_of(*p);
    if (g->element_type() != dtype || dims_of(*g) != shapes[i]) {
      return invalid("grads" + index + " does not match params" + index + " (dtype and shape)");
    }
    states += shapes[i].size() >= 2 ? 2 : 1;
  }
  if (args.size() != head + 2 * k + states || rets.size() != k + states) {
    return ffi::Error::Internal("fastopt_adafactor: " + std::to_string(args.size()) + " operands and " +
                                std::to_string(rets.size()) + " results do not match the parameters' states");
  }

  std::vector<Pointers>& ptrs = call.ptrs;
  ptrs.assign(k, Pointers{});
  size_t arg = head + 2 * k, ret = k;
  for (size_t i = 0; i < k; ++i) {
    const std::string index = "[" + std::to_string(i) + "]";
    const auto p_in = args.get<ffi::AnyBuffer>(head + i);
    ffi::AnyBuffer p_out = **rets.get<ffi::AnyBuffer>(i);
    if (p_out.element_type() != dtype || dims_of(p_out) != shapes[i]) {
      return invalid("the result for params" + index + " does not match it");
    }
    if (p_in->element_count() > 0 && p_out.untyped_data() != p_in->untyped_data()) {
      return ffi::Error::Internal("the result for params" + index + " is not aliased to it (input_output_aliases)");
    }
    ptrs[i].param = p_out.untyped_data();
    ptrs[i].grad = args.get<ffi::AnyBuffer>(head + k + i)->untyped_data();
    const std::vector<int64_t>& shape = shapes[i];
    if (shape.size() >= 2) {
      std::vector<int64_t> rows = shape, cols = shape;
      rows.back() = 1;
      cols[shape.size() - 2] = 1;
      if (ffi::Error e = read_state(args, rets, arg++, ret++, "row_var" + index, dtype, rows, ptrs[i].row_var);
          !e.success()) {
        return e;
      }
      if (ffi::Error e = read_state(args, rets, arg++, ret++, "col_var" + index, dtype, cols, ptrs[i].col_var);
          !e.success()) {
        return e;
      }
    } else if (ffi::Error e = read_state(args, rets, arg++, ret++, "variance" + index, dtype, shape,
                                         ptrs[i].variance);
               !e.success()) {
      return e;
    }
  }
  return ffi::Error::Success();
}

ffi::Error adafactor_cpu(ffi::ThreadPool pool, ffi::RemainingArgs args, ffi::RemainingRets rets, double lr, bool lr_operand,
                         int64_t tensors, double beta2_decay, double eps1, double eps2, double d,
                         double weight_decay, bool maximize) {
  return guarded("fastopt_adafactor", [&]() -> ffi::Error {
    AdafactorCall call;
    if (ffi::Error e = read_call(args, rets, lr, lr_operand, tensors, beta2_decay, eps1, eps2, d, weight_decay,
                                 maximize, host_real, host_integer, call);
        !e.success()) {
      return e;
    }
    const AdafactorHyper& h = call.h;
    auto run = [&](auto zero) {
      using T = decltype(zero);
      const std::vector<cpu::AdafactorTensor<T>> list = call.tensors<T>();
      const auto kernel = cpu::kernels().of<T>().adafactor;
      int64_t total = 0;
      for (const auto& t : list) total += t.size();
      const int pieces = int(std::min<int64_t>(piece_count(total, pool.num_threads()), int64_t(list.size())));
      if (pieces <= 1) {
        const KernelOnCallingThread one_thread;
        kernel(list, h);
      } else {
        std::vector<int64_t> sizes;
        for (const auto& t : list) sizes.push_back(t.size());
        std::vector<std::vector<cpu::AdafactorTensor<T>>> groups;
        for (const std::vector<size_t>& group : whole_tensors(sizes, pieces)) {
          groups.emplace_back();
          for (size_t i : group) groups.back().push_back(list[i]);
        }
        run_pieces(pool, std::move(groups), [kernel, &h](const std::vector<cpu::AdafactorTensor<T>>& piece) {
          kernel(piece, h);
        });
      }
    };
    if (call.shapes.empty()) return ffi::Error::Success();
    if (call.dtype == ffi::DataType::F32) {
      run(float{});
    } else {
      run(double{});
    }
    return ffi::Error::Success();
  });
}

// CUDA: the CUDA backend's Adafactor (csrc/cuda/adafactor_passes.cuh, the one fastopt.adafactor_ runs on CUDA
// arrays), queued on XLA's stream. lr (when an operand) and step are copied to the host first, which waits
// for XLA's stream once per call: the step's constants are made on the host, as on the CPU, so that the bits
// are the CPU handler's (a power computed on the device could differ in its last bit).
template <typename Launcher>
ffi::Error adafactor_on_gpu(void* stream, int32_t device, ffi::RemainingArgs args, ffi::RemainingRets rets, double lr,
                            bool lr_operand, int64_t tensors, double beta2_decay, double eps1, double eps2, double d,
                            double weight_decay, bool maximize) {
  return guarded("fastopt_adafactor", [&]() -> ffi::Error {
    const cuda::Queue queue{device, stream};
    auto scalar = [&](const ffi::AnyBuffer& b) {
      return Launcher::read(cuda::DeviceScalar{b.untyped_data(), *dtype_of(b.element_type())}, queue);
    };
    AdafactorCall call;
    if (ffi::Error e = read_call(args, rets, lr, lr_operand, tensors, beta2_decay, eps1, eps2, d, weight_decay,
                                 maximize, scalar, [&](const ffi::AnyBuffer& b) { return int64_t(scalar(b)); }, call);
        !e.success()) {
      return e;
    }
    if (call.shapes.empty()) return ffi::Error::Success();
    if (call.dtype == ffi::DataType::F32) {
      Launcher::adafactor(call.tensors<float>(), call.h, queue);
    } else {
      Launcher::adafactor(call.tensors<double>(), call.h, queue);
    }
    return ffi::Error::Success();
  });
}

struct CudaLaunches {
  static double read(const cuda::DeviceScalar& s, const cuda::Queue& q) { return cuda::read_scalar(s, q); }
  template <typename T>
  static void adafactor(const std::vector<cpu::AdafactorTensor<T>>& list, const AdafactorHyper& h,
                        const cuda::Queue& q) {
    cuda::adafactor(list, h, q);
  }
};

// The host tests' stand-in (host_test.h): the scalars are host memory there, and the launch is recorded.
struct Records {
  static double read(const cuda::DeviceScalar& s, const cuda::Queue&) { return HostRecorder::read_scalar(s); }
  template <typename T>
  static void adafactor(const std::vector<cpu::AdafactorTensor<T>>& list, const AdafactorHyper& h,
                        const cuda::Queue& q) {
    HostRecorder::adafactor(list, h, q);
  }
};

ffi::Error adafactor_cuda(void* stream, int32_t device, ffi::RemainingArgs args, ffi::RemainingRets rets, double lr,
                          bool lr_operand, int64_t tensors, double beta2_decay, double eps1, double eps2, double d,
                          double weight_decay, bool maximize) {
  return adafactor_on_gpu<CudaLaunches>(stream, device, args, rets, lr, lr_operand, tensors, beta2_decay, eps1, eps2,
                                        d, weight_decay, maximize);
}

// The CUDA handler's code without a CUDA context, recording its launch (tests only).
ffi::Error adafactor_host(ffi::RemainingArgs args, ffi::RemainingRets rets, double lr, bool lr_operand,
                          int64_t tensors, double beta2_decay, double eps1, double eps2, double d,
                          double weight_decay, bool maximize) {
  return adafactor_on_gpu<Records>(nullptr, 0, args, rets, lr, lr_operand, tensors, beta2_decay, eps1, eps2, d,
                                   weight_decay, maximize);
}

// The binding shared by both platforms: XLA checks every attribute of the call against it.
template <typename Binding>
auto adafactor_attrs(Binding binding) {
  return std::move(binding)
      .RemainingArgs()
      .RemainingRets()
      .template Attr<double>("lr")
      .template Attr<bool>("lr_operand")
      .template Attr<int64_t>("tensors")
      .template Attr<double>("beta2_decay")
      .template Attr<double>("eps1")
      .template Attr<double>("eps2")
      .template Attr<double>("d")
      .template Attr<double>("weight_decay")
      .template Attr<bool>("maximize");
}

XLA_FFI_DEFINE_HANDLER(kAdafactorCpu, adafactor_cpu, adafactor_attrs(ffi::Ffi::Bind().Ctx<ffi::ThreadPool>()));
XLA_FFI_DEFINE_HANDLER(kAdafactorCuda, adafactor_cuda,
                       adafactor_attrs(ffi::Ffi::Bind().Ctx<ffi::PlatformStream<void*>>().Ctx<ffi::DeviceOrdinal>()));
XLA_FFI_DEFINE_HANDLER(kAdafactorHost, adafactor_host, adafactor_attrs(ffi::Ffi::Bind()));

}  // namespace

std::vector<Target> adafactor_targets() { return {{"fastopt_adafactor", kAdafactorCpu, kAdafactorCuda}}; }

std::vector<Target> adafactor_host_test_targets() { return {{"fastopt_adafactor", kAdafactorHost, nullptr}}; }

}  // namespace fastopt::jax_ffi
