// XLA FFI handlers of the optimizer updates (fastopt.jax): one call updates a whole list of tensors
// in place, on the CPU through the kernel table (the kernels fastopt.sgd_ & co. run) and on CUDA
// through the CUDA backend, on XLA's stream. Operand layout: update_operands.h. Attributes: the
// hyperparameters in double (torch.optim's names, as the kernels take them), lr unless it comes as
// an operand, and tensors (the list length).
#include <cstdint>

#include "common/hyper_rules.h"
#include "cpu/kernel_table.h"
#include "cuda/backend.h"
#include "jax/handlers.h"
#include "jax/host_test.h"
#include "jax/kernel_threads.h"
#include "jax/update_operands.h"
#include "jax/xla_threads.h"

namespace fastopt::jax_ffi {

namespace {

ffi::Error broken(const rules::Check& check) { return invalid(rules::describe(*check, show)); }

void set_step(SgdHyper& h, int64_t step) { h.step = step; }
void set_step(AdagradHyper& h, int64_t step) { h.step = step; }
void set_step(AdamHyper& h, int64_t step) { h.step = step; }
void set_step(RmspropHyper&, int64_t) {}  // (RMSprop has no step)

// Everything an update handler knows before it reads its buffers.
template <int N, typename Hyper>
struct UpdateSpec {
  const char* what;                    // "fastopt_adam" (for messages)
  std::array<bool, N> slots;           // kernel operands present
  std::array<const char*, N> names;    // their names (params, grads, ...)
  Hyper hyper;                         // lr from the attribute, step to be filled in
  double lr;
  bool lr_operand;
  int64_t tensors;
};

// The CPU: lr and step are host buffers, read here; the hyperparameters are checked with them; the
// list runs as one kernel call, or as one call per piece on XLA's thread pool when it is large enough
// to share out (xla_threads.h): the same bits either way.
template <int N, typename Hyper, typename Kernel>
ffi::Error run_on_cpu(ffi::ThreadPool pool, ffi::RemainingArgs args, ffi::RemainingRets rets,
                      UpdateSpec<N, Hyper> spec, Kernel&& kernel) {
  return guarded(spec.what, [&]() -> ffi::Error {
    UpdateOperands<N> ops;
    if (ffi::Error e = read_update<N>(args, rets, spec.tensors, spec.lr_operand, spec.slots, spec.names, false, ops);
        !e.success()) {
      return e;
    }
    spec.hyper.lr = ops.lr ? host_real(*ops.lr) : spec.lr;
    set_step(spec.hyper, host_integer(*ops.step));
    if (const rules::Check bad = rules::check(spec.hyper)) return broken(bad);
    int64_t total = 0;
    for (int64_t n : ops.sizes) total += n;
    const int pieces = piece_count(total, pool.num_threads());
    auto run = [&](auto zero) {
      using T = decltype(zero);
      const cpu::TypedKernels<T>& table = cpu::kernels().of<T>();
      const cpu::TensorList<T, N> list = host_list<T>(ops);
      if (pieces == 1) {
        const KernelOnCallingThread one_thread;
        kernel(table, list, spec.hyper);
      } else {
        run_pieces(pool, split_list(list, pieces),
                   [&table, &kernel, &spec](const cpu::TensorList<T, N>& piece) { kernel(table, piece, spec.hyper); });
      }
    };
    if (ops.param == DType::Float32) {
      run(float{});
    } else {
      run(double{});
    }
    return ffi::Error::Success();
  });
}

// CUDA: the same list for the CUDA backend, queued on XLA's stream. lr (when an operand) and step stay
// on the device and are read by the kernels there (the backend's capturable path), so nothing waits
// for the GPU; the host rules see placeholders for them (lr 0, step 1), as in fastopt's capturable calls.
template <typename Launcher, int N, typename Hyper>
ffi::Error run_on_cuda(void* stream, int32_t device, ffi::RemainingArgs args, ffi::RemainingRets rets,
                       UpdateSpec<N, Hyper> spec) {
  return guarded(spec.what, [&]() -> ffi::Error {
    UpdateOperands<N> ops;
    if (ffi::Error e = read_update<N>(args, rets, spec.tensors, spec.lr_operand, spec.slots, spec.names, true, ops);
        !e.success()) {
      return e;
    }
    spec.hyper.lr = spec.lr_operand ? 0.0 : spec.lr;
    set_step(spec.hyper, 1);
    if (const rules::Check bad = rules::check(spec.hyper)) return broken(bad);
    Launcher::update(spec.what, device_list(ops), spec.hyper, device_values(ops), cuda::Queue{device, stream});
    return ffi::Error::Success();
  });
}

// ---------------------------------------------------------------- per optimizer: attributes -> spec

using Args = ffi::RemainingArgs;
using Rets = ffi::RemainingRets;

UpdateSpec<3, SgdHyper> sgd_spec(double lr, bool lr_operand, int64_t tensors, double momentum, double dampening,
                                 double weight_decay, bool nesterov, bool maximize) {
  return {"fastopt_sgd", {true, true, momentum != 0.0}, {"params", "grads", "momentum_buffers"},
          SgdHyper{lr, momentum, dampening, weight_decay, nesterov, maximize, 1, {}}, lr, lr_operand, tensors};
}

UpdateSpec<3, AdagradHyper> adagrad_spec(double lr, bool lr_operand, int64_t tensors, double lr_decay,
                                         double weight_decay, double eps, bool maximize) {
  return {"fastopt_adagrad", {true, true, true}, {"params", "grads", "state_sums"},
          AdagradHyper{lr, lr_decay, weight_decay, eps, maximize, 1, {}}, lr, lr_operand, tensors};
}

UpdateSpec<5, RmspropHyper> rmsprop_spec(double lr, bool lr_operand, int64_t tensors, double alpha, double eps,
                                         double weight_decay, double momentum, bool centered, bool maximize) {
  return {"fastopt_rmsprop", {true, true, true, momentum > 0.0, centered},
          {"params", "grads", "square_avgs", "momentum_buffers", "grad_avgs"},
          RmspropHyper{lr, alpha, eps, weight_decay, momentum, centered, maximize, {}}, lr, lr_operand, tensors};
}

UpdateSpec<5, AdamHyper> adam_spec(double lr, bool lr_operand, int64_t tensors, double beta1, double beta2,
                                   double eps, double weight_decay, bool amsgrad, bool decoupled, bool maximize) {
  return {decoupled ? "fastopt_adamw" : "fastopt_adam", {true, true, true, true, amsgrad},
          {"params", "grads", "exp_avgs", "exp_avg_sqs", "max_exp_avg_sqs"},
          AdamHyper{lr, beta1, beta2, eps, weight_decay, amsgrad, decoupled, maximize, 1, {}}, lr, lr_operand,
          tensors};
}

// ---------------------------------------------------------------- CPU handlers

ffi::Error sgd_cpu(ffi::ThreadPool pool, Args args, Rets rets, double lr, bool lr_operand, int64_t tensors, double momentum,
                   double dampening, double weight_decay, bool nesterov, bool maximize) {
  return run_on_cpu(pool, args, rets, sgd_spec(lr, lr_operand, tensors, momentum, dampening, weight_decay, nesterov, maximize),
                    [](const auto& k, const auto& list, const SgdHyper& h) { k.sgd(list, h); });
}

ffi::Error adagrad_cpu(ffi::ThreadPool pool, Args args, Rets rets, double lr, bool lr_operand, int64_t tensors, double lr_decay,
                       double weight_decay, double eps, bool maximize) {
  return run_on_cpu(pool, args, rets, adagrad_spec(lr, lr_operand, tensors, lr_decay, weight_decay, eps, maximize),
                    [](const auto& k, const auto& list, const AdagradHyper& h) { k.adagrad(list, h); });
}

ffi::Error rmsprop_cpu(ffi::ThreadPool pool, Args args, Rets rets, double lr, bool lr_operand, int64_t tensors, double alpha, double eps,
                       double weight_decay, double momentum, bool centered, bool maximize) {
  return run_on_cpu(pool, args, rets,
                    rmsprop_spec(lr, lr_operand, tensors, alpha, eps, weight_decay, momentum, centered, maximize),
                    [](const auto& k, const auto& list, const RmspropHyper& h) { k.rmsprop(list, h); });
}

ffi::Error adam_cpu(ffi::ThreadPool pool, Args args, Rets rets, double lr, bool lr_operand, int64_t tensors, double beta1, double beta2,
                    double eps, double weight_decay, bool amsgrad, bool decoupled, bool maximize) {
  return run_on_cpu(pool, args, rets,
                    adam_spec(lr, lr_operand, tensors, beta1, beta2, eps, weight_decay, amsgrad, decoupled, maximize),
                    [](const auto& k, const auto& list, const AdamHyper& h) { k.adam(list, h); });
}

// ---------------------------------------------------------------- CUDA handlers

// The CUDA backend's launches (host_test.h has the stand-in that records them instead).
struct CudaLaunches {
  static void update(const char*, const cuda::DeviceTensorList<3>& l, const SgdHyper& h, const cuda::DeviceHyper& d,
                     const cuda::Queue& q) {
    cuda::sgd(l, h, d, q);
  }
  static void update(const char*, const cuda::DeviceTensorList<3>& l, const AdagradHyper& h,
                     const cuda::DeviceHyper& d, const cuda::Queue& q) {
    cuda::adagrad(l, h, d, q);
  }
  static void update(const char*, const cuda::DeviceTensorList<5>& l, const RmspropHyper& h,
                     const cuda::DeviceHyper& d, const cuda::Queue& q) {
    cuda::rmsprop(l, h, d, q);
  }
  static void update(const char*, const cuda::DeviceTensorList<5>& l, const AdamHyper& h, const cuda::DeviceHyper& d,
                     const cuda::Queue& q) {
    cuda::adam(l, h, d, q);
  }
};

template <typename L>
ffi::Error sgd_cuda(void* stream, int32_t device, Args args, Rets rets, double lr, bool lr_operand, int64_t tensors,
                    double momentum, double dampening, double weight_decay, bool nesterov, bool maximize) {
  return run_on_cuda<L>(stream, device, args, rets,
                        sgd_spec(lr, lr_operand, tensors, momentum, dampening, weight_decay, nesterov, maximize));
}

template <typename L>
ffi::Error adagrad_cuda(void* stream, int32_t device, Args args, Rets rets, double lr, bool lr_operand,
                        int64_t tensors, double lr_decay, double weight_decay, double eps, bool maximize) {
  return run_on_cuda<L>(stream, device, args, rets,
                        adagrad_spec(lr, lr_operand, tensors, lr_decay, weight_decay, eps, maximize));
}

template <typename L>
ffi::Error rmsprop_cuda(void* stream, int32_t device, Args args, Rets rets, double lr, bool lr_operand,
                        int64_t tensors, double alpha, double eps, double weight_decay, double momentum,
                        bool centered, bool maximize) {
  return run_on_cuda<L>(stream, device, args, rets,
                        rmsprop_spec(lr, lr_operand, tensors, alpha, eps, weight_decay, momentum, centered, maximize));
}

template <typename L>
ffi::Error adam_cuda(void* stream, int32_t device, Args args, Rets rets, double lr, bool lr_operand, int64_t tensors,
                     double beta1, double beta2, double eps, double weight_decay, bool amsgrad, bool decoupled,
                     bool maximize) {
  return run_on_cuda<L>(stream, device, args, rets,
                        adam_spec(lr, lr_operand, tensors, beta1, beta2, eps, weight_decay, amsgrad, decoupled,
                                  maximize));
}

// ---------------------------------------------------------------- bindings (attributes by name)

// The operands and the attributes every update shares; `B` is Bind() with or without the CUDA context.
template <typename B>
auto common(B binding) {
  return std::move(binding).RemainingArgs().RemainingRets().template Attr<double>("lr").template Attr<bool>(
      "lr_operand").template Attr<int64_t>("tensors");
}

auto on_cpu() { return common(ffi::Ffi::Bind().Ctx<ffi::ThreadPool>()); }
auto on_host() { return common(ffi::Ffi::Bind()); }  // (the host tests' stand-ins: no context)
auto on_cuda() {
  return common(ffi::Ffi::Bind().Ctx<ffi::PlatformStream<void*>>().Ctx<ffi::DeviceOrdinal>());
}

template <typename B>
auto sgd_attrs(B b) {
  return std::move(b).template Attr<double>("momentum").template Attr<double>("dampening").template Attr<double>(
      "weight_decay").template Attr<bool>("nesterov").template Attr<bool>("maximize");
}
template <typename B>
auto adagrad_attrs(B b) {
  return std::move(b).template Attr<double>("lr_decay").template Attr<double>("weight_decay").template Attr<double>(
      "eps").template Attr<bool>("maximize");
}
template <typename B>
auto rmsprop_attrs(B b) {
  return std::move(b).template Attr<double>("alpha").template Attr<double>("eps").template Attr<double>(
      "weight_decay").template Attr<double>("momentum").template Attr<bool>("centered").template Attr<bool>("maximize");
}
template <typename B>
auto adam_attrs(B b) {
  return std::move(b).template Attr<double>("beta1").template Attr<double>("beta2").template Attr<double>(
      "eps").template Attr<double>("weight_decay").template Attr<bool>("amsgrad").template Attr<bool>(
      "decoupled").template Attr<bool>("maximize");
}

XLA_FFI_DEFINE_HANDLER(kSgdCpu, sgd_cpu, sgd_attrs(on_cpu()));
XLA_FFI_DEFINE_HANDLER(kAdagradCpu, adagrad_cpu, adagrad_attrs(on_cpu()));
XLA_FFI_DEFINE_HANDLER(kRmspropCpu, rmsprop_cpu, rmsprop_attrs(on_cpu()));
XLA_FFI_DEFINE_HANDLER(kAdamCpu, adam_cpu, adam_attrs(on_cpu()));
XLA_FFI_DEFINE_HANDLER(kSgdCuda, sgd_cuda<CudaLaunches>, sgd_attrs(on_cuda()));
XLA_FFI_DEFINE_HANDLER(kAdagradCuda, adagrad_cuda<CudaLaunches>, adagrad_attrs(on_cuda()));
XLA_FFI_DEFINE_HANDLER(kRmspropCuda, rmsprop_cuda<CudaLaunches>, rmsprop_attrs(on_cuda()));
XLA_FFI_DEFINE_HANDLER(kAdamCuda, adam_cuda<CudaLaunches>, adam_attrs(on_cuda()));

// The CUDA handlers' code on the host, for tests (host_test.h): bound without XLA's GPU context (the
// CPU runtime has none), with a null stream and device 0, recording what they would launch.
ffi::Error sgd_host(Args a, Rets r, double lr, bool lo, int64_t k, double mu, double d, double wd, bool n, bool mx) {
  return sgd_cuda<HostRecorder>(nullptr, 0, a, r, lr, lo, k, mu, d, wd, n, mx);
}
ffi::Error adagrad_host(Args a, Rets r, double lr, bool lo, int64_t k, double decay, double wd, double eps, bool mx) {
  return adagrad_cuda<HostRecorder>(nullptr, 0, a, r, lr, lo, k, decay, wd, eps, mx);
}
ffi::Error rmsprop_host(Args a, Rets r, double lr, bool lo, int64_t k, double alpha, double eps, double wd, double mu,
                        bool centered, bool mx) {
  return rmsprop_cuda<HostRecorder>(nullptr, 0, a, r, lr, lo, k, alpha, eps, wd, mu, centered, mx);
}
ffi::Error adam_host(Args a, Rets r, double lr, bool lo, int64_t k, double b1, double b2, double eps, double wd,
                     bool ams, bool dec, bool mx) {
  return adam_cuda<HostRecorder>(nullptr, 0, a, r, lr, lo, k, b1, b2, eps, wd, ams, dec, mx);
}

XLA_FFI_DEFINE_HANDLER(kSgdHost, sgd_host, sgd_attrs(on_host()));
XLA_FFI_DEFINE_HANDLER(kAdagradHost, adagrad_host, adagrad_attrs(on_host()));
XLA_FFI_DEFINE_HANDLER(kRmspropHost, rmsprop_host, rmsprop_attrs(on_host()));
XLA_FFI_DEFINE_HANDLER(kAdamHost, adam_host, adam_attrs(on_host()));

}  // namespace

std::vector<Target> update_targets() {
  return {{"fastopt_sgd", kSgdCpu, kSgdCuda},
          {"fastopt_adagrad", kAdagradCpu, kAdagradCuda},
          {"fastopt_rmsprop", kRmspropCpu, kRmspropCuda},
          {"fastopt_adam", kAdamCpu, kAdamCuda}};
}

std::vector<Target> update_host_test_targets() {
  return {{"fastopt_sgd", kSgdHost, nullptr},
          {"fastopt_adagrad", kAdagradHost, nullptr},
          {"fastopt_rmsprop", kRmspropHost, nullptr},
          {"fastopt_adam", kAdamHost, nullptr}};
}

}  // namespace fastopt::jax_ffi
