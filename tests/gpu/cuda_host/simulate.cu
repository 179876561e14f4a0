// Host simulation of the CUDA optimizer kernels: no GPU needed. Compiled by nvcc (the kernel code
// is __host__ __device__), it runs the backend's own dispatch (optim_backend.cuh: checks, dtypes,
// constants, skip path, batch planning) with a runner that executes every block's chunk body
// thread by thread on the host, and compares the arrays with the CPU kernels (fastopt_cpu)
// bit for bit (float32 / float64), or with the shared per-element rule in float plus
// round-to-nearest (float16 / bfloat16 parameters). Every operand sits between guard elements
// (so a write out of bounds shows), at aligned and misaligned offsets (vector and scalar paths),
// with sizes that hit ILP tails, chunk boundaries and several launches.
//
// The optimizers described as rules (fastopt/registry.h, rule_backend.cuh) are driven from the registry:
// every rule, every variant its hyperparameter specs reach, each dtype, against the CPU kernel of the
// rule (cpu::kernels().of<T>().rules.of<Rule>(); half parameters: the float32 kernel on the upcast
// values, the parameter rounded to nearest). Registering a rule adds it here with no edit. A rule with
// per-tensor sums (LAMB) runs its passes (tensor_sum_kernels.cuh) block by block as their kernels do, piece
// by piece and lane by lane, so the comparison bit for bit also checks that its sums keep the CPU's order.
//
// What it cannot check: the device compiler's arithmetic (-fmad=false, IEEE division / sqrt), the
// launch configuration, real concurrency, the kernel-argument ABI. Those need a GPU.
//
// Build and run:  cmake --build BUILD --target fastopt_cuda_simulate && BUILD/fastopt_cuda_simulate [rules | adafactor]
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include "cpu/kernel_table.h"
#include "common/rule_checks.h"
#include "cuda/optim_backend.cuh"
#include "cuda/rule_backend.cuh"

using namespace fastopt;
using namespace fastopt::cuda;

namespace {

int failures = 0;
int checks = 0;

#define EXPECT(cond, ...)                                  \
  do {                                                     \
    ++checks;                                              \
    if (!(cond)) {                                         \
      ++failures;                                          \
      std::printf("FAIL %s:%d: ", __FILE__, __LINE__);     \
      std::printf(__VA_ARGS__);                            \
      std::printf("\n");                                   \
    }                                                      \
  } while (0)

// ---------------------------------------------------------------- the host runner

// Whether the runners of the cases below plan with the 32 KB kernel-argument space (where compiled).
bool g_large_args = false;
// Only the optimizers described as rules (the command-line argument `rules`).
bool g_rules_only = false;

struct HostRunner {
  bool capture = false;
  bool large = g_large_args;
  int update_launches = 0;
  int probe_launches = 0;
  int largest_batch = 0;  // capacity (K) of the largest batch type launched

  bool capturing() const { return capture; }

  struct Flag {
    long long slots[2] = {0, 0};
    explicit Flag(HostRunner&) {}
    long long* get() { return slots; }
    bool read() const { return slots[0] != 0; }
  };

  template <typename Op, typename T, typename S, int N>
  void updates(const DeviceTensorList<N>& list, const Op& op, const long long* found_inf, const char*) {
    plan_updates<Op, T, S>(list, op, found_inf, large, [&](const auto& a, int64_t blocks) {
      ++update_launches;
      largest_batch = std::max(largest_batch, std::decay_t<decltype(a.batch)>::kCapacity);
      for (int64_t b = 0; b < blocks; ++b) {
        typename Op::Consts c;
        GradUnscale<MathOf<T>> u;
        if (!prepare_block(a, c, u)) continue;  // update_kernel: thread 0, then the whole block returns
        for (int tid = 0; tid < kBlockThreads; ++tid) {
          update_chunk<Op, T, S>(a.batch, a.op, c, u, b, tid, kBlockThreads);
        }
      }
    });
  }

  template <typename T, int N>
  void probe(const DeviceTensorList<N>& list, int grad, const GradScaleSource& scale, long long* found) {
    plan_probe<T>(list, grad, scale, found, large, [&](const auto& a, int64_t blocks) {
      ++probe_launches;
      for (int64_t b = 0; b < blocks; ++b) {
        unsigned bad = 0;
        for (int tid = 0; tid < kBlockThreads; ++tid) {
          bad |= probe_chunk<T>(a.batch, a.scale.template resolve<MathOf<T>>(), b, tid, kBlockThreads);
        }
        if (bad) *a.found = 1;
      }
    });
  }

  // ---- the passes of a rule with per-tensor sums (tensor_sum_kernels.cuh), as their kernels run them:
  // thread 0 prepares the block; per piece, every thread one element, then one thread per lane.
  int sum_launches = 0;
  bool large_args() const { return large; }

  struct Scratch {
    std::vector<double> data;
    Scratch(HostRunner&, int64_t doubles) : data(size_t(doubles), std::numeric_limits<double>::quiet_NaN()) {}
    double* get() { return data.data(); }
  };

  template <SumPass PASS, typename Rule, int V, bool CLIP, typename T, typename S, typename Args>
  void sums(const Args& a, int64_t blocks) {
    using M = MathOf<T>;
    constexpr int NS = PASS == SumPass::ClipSquares ? 1 : (PASS == SumPass::Gather ? Rule::kTensorSums : 0);
    ++sum_launches;
    for (int64_t b = 0; b < blocks; ++b) {
      typename std::decay_t<decltype(a.update.op)>::Consts c;
      GradUnscale<M> u;
      if (!prepare_block(a.update, c, u)) continue;
      const ChunkSpan span = chunk_of(a.update.batch, b);
      const M clip = clip_ratio<M>(a.clip);
      if constexpr (PASS == SumPass::Finish) {
        const M factor = M(a.factors[tensor_first_chunk(a.update.batch, a.first, span.k)]);
        for (int tid = 0; tid < kBlockThreads; ++tid) {
          for (int at = tid; at < span.n; at += kBlockThreads) {
            finish_element<Rule, V, CLIP, T, S>(a.update.batch, span, at, c, u, clip, factor);
          }
        }
      } else {
        std::vector<double> terms(size_t(NS) * kSumPiece);
        double lane_sums[NS][kSumLanes] = {};
        for (int base = 0; base < span.n; base += kSumPiece) {
          const int count = std::min(kSumPiece, span.n - base);
          for (int tid = 0; tid < count; ++tid) {
            if constexpr (PASS == SumPass::ClipSquares) {
              terms[size_t(tid)] = grad_square<T, S>(a.update.batch, span, base + tid, u);
            } else {
              double t[NS];
              gather_element<Rule, V, CLIP, T, S>(a.update.batch, span, base + tid, c, u, clip, t);
              for (int s = 0; s < NS; ++s) terms[size_t(s) * kSumPiece + size_t(tid)] = t[s];
            }
          }
          for (int s = 0; s < NS; ++s) {
            for (int l = 0; l < kSumLanes; ++l) {
              add_piece_to_lane(&terms[size_t(s) * kSumPiece], count, l, lane_sums[s][l]);
            }
          }
        }
        for (int s = 0; s < NS; ++s) a.partial[(a.first + b) * NS + s] = lanes_total(lane_sums[s]);
      }
    }
  }

  template <typename Rule, typename Args>
  void factors(const Args& a) {
    ++sum_launches;
    if (!sums_run(a)) return;
    for (int k = 0; k < a.update.batch.count; ++k) tensor_factor<Rule>(a, k);
  }

  void clip(const double* squares, int64_t chunks, double max_norm, const long long* found_inf, double* clip) {
    ++sum_launches;
    if (found_inf != nullptr && *found_inf != 0) return;
    clip_total(squares, chunks, max_norm, clip);
  }
};

// ---------------------------------------------------------------- data

constexpr int kGuard = 8;  // guard elements before and after every operand

template <typename E>
float to_f(E x) {
  return Storage<E>::to_math(x);
}

template <typename E>
E from_d(double x) {
  return Storage<E>::from_math(MathOf<E>(x));
}

// One operand of one tensor: kGuard + offset elements, the tensor, kGuard elements; 64-byte aligned.
template <typename E>
struct Buffer {
  std::vector<unsigned char> bytes;
  size_t start = 0;  // byte offset of the tensor within the aligned storage
  size_t total = 0;  // elements stored
  unsigned char* aligned = nullptr;

  Buffer() = default;
  Buffer(int64_t n, int offset) {
    total = size_t(kGuard + offset + n + kGuard);
    bytes.assign(total * sizeof(E) + 64, 0);
    aligned = bytes.data() + (64 - reinterpret_cast<uintptr_t>(bytes.data()) % 64) % 64;
    start = size_t(kGuard + offset) * sizeof(E);
    E* all = reinterpret_cast<E*>(aligned);
    for (size_t i = 0; i < total; ++i) all[i] = from_d<E>(-12345.0);  // sentinel
  }
  // Copies keep the tensor's alignment: the copy's storage is aligned anew, then the bytes copied.
  Buffer(const Buffer& o) { copy_from(o); }
  Buffer& operator=(const Buffer& o) {
    copy_from(o);
    return *this;
  }
  void copy_from(const Buffer& o) {
    total = o.total;
    start = o.start;
    bytes.assign(total * sizeof(E) + 64, 0);
    aligned = bytes.data() + (64 - reinterpret_cast<uintptr_t>(bytes.data()) % 64) % 64;
    std::memcpy(aligned, o.aligned, total * sizeof(E));
  }
  E* data() { return reinterpret_cast<E*>(aligned + start); }
  bool same(const Buffer& o) const {
    return std::memcmp(aligned, o.aligned, total * sizeof(E)) == 0;
  }
};

// A list of tensors, each with N operands: 0, 1 of type T, the rest of type S.
template <typename T, typename S, int N>
struct Model {
  std::vector<int64_t> sizes;
  std::vector<Buffer<T>> params, grads;
  std::vector<std::array<Buffer<S>, N - 2>> states;
  unsigned present = 0;  // operands that exist (others are nullptr)

  std::array<void*, N> ptrs(size_t k) {
    std::array<void*, N> out{};
    out[0] = params[k].data();
    out[1] = grads[k].data();
    for (int j = 2; j < N; ++j) out[j] = ((present >> j) & 1u) ? states[k][j - 2].data() : nullptr;
    return out;
  }
  DeviceTensorList<N> device_list(DType param, DType state) {
    DeviceTensorList<N> list;
    list.param = param;
    list.state = state;
    for (size_t k = 0; k < sizes.size(); ++k) list.add(ptrs(k), sizes[k]);
    return list;
  }
  bool same(const Model& o) const {
    for (size_t k = 0; k < sizes.size(); ++k) {
      if (!params[k].same(o.params[k]) || !grads[k].same(o.grads[k])) return false;
      for (int j = 2; j < N; ++j) {
        if (!states[k][j - 2].same(o.states[k][j - 2])) return false;
      }
    }
    return true;
  }
  // index of the first differing tensor / operand, for messages
  std::string first_difference(const Model& o) const {
    for (size_t k = 0; k < sizes.size(); ++k) {
      if (!params[k].same(o.params[k])) return "tensor " + std::to_string(k) + " param";
      if (!grads[k].same(o.grads[k])) return "tensor " + std::to_string(k) + " grad";
      for (int j = 2; j < N; ++j) {
        if (!states[k][j - 2].same(o.states[k][j - 2])) {
          return "tensor " + std::to_string(k) + " state " + std::to_string(j);
        }
      }
    }
    return "none";
  }
};

// Offsets (in elements) per operand: all 0 (vector path), or some misaligned (scalar path).
template <typename T, typename S, int N>
Model<T, S, N> make_model(const std::vector<int64_t>& sizes, unsigned present, int misalign, uint32_t seed,
                          bool positive_states) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<double> u(-1.0, 1.0);
  Model<T, S, N> m;
  m.sizes = sizes;
  m.present = present;
  for (size_t k = 0; k < sizes.size(); ++k) {
    const int64_t n = sizes[k];
    // misalign: 0 none; 1 every tensor's grad one element off; 2 alternate tensors' state 2 off;
    // 3 everything one element off
    auto offset = [&](int j) {
      if (misalign == 1) return j == 1 ? 1 : 0;
      if (misalign == 2) return (k % 2 == 1 && j == 2) ? 1 : 0;
      if (misalign == 3) return 1;
      return 0;
    };
    m.params.emplace_back(n, offset(0));
    m.grads.emplace_back(n, offset(1));
    std::array<Buffer<S>, N - 2> st;
    for (int j = 2; j < N; ++j) st[j - 2] = Buffer<S>(n, offset(j));
    m.states.push_back(std::move(st));
    T* p = m.params.back().data();
    T* g = m.grads.back().data();
    for (int64_t i = 0; i < n; ++i) {
      p[i] = from_d<T>(u(rng));
      g[i] = from_d<T>(u(rng) * 0.1);
    }
    for (int j = 2; j < N; ++j) {
      S* s = m.states.back()[j - 2].data();
      for (int64_t i = 0; i < n; ++i) s[i] = from_d<S>(positive_states ? std::abs(u(rng)) * 0.01 : u(rng) * 0.01);
    }
  }
  return m;
}

template <typename T>
DType dtype_of() {
  if constexpr (std::is_same_v<T, float>) return DType::Float32;
  if constexpr (std::is_same_v<T, double>) return DType::Float64;
  if constexpr (std::is_same_v<T, __half>) return DType::Float16;
  return DType::BFloat16;
}

// ---------------------------------------------------------------- references

// float32 / float64: the CPU kernels on a copy.
template <typename T, int N>
cpu::TensorList<T, N> cpu_list(Model<T, T, N>& m) {
  cpu::TensorList<T, N> list;
  for (size_t k = 0; k < m.sizes.size(); ++k) {
    std::array<T*, N> ptrs{};
    const auto p = m.ptrs(k);
    for (int j = 0; j < N; ++j) ptrs[j] = static_cast<T*>(p[j]);
    list.add(ptrs, m.sizes[k]);
  }
  return list;
}

// Half types: the shared rule in float, element by element, the parameter rounded to nearest.
// body(p, g, states...) gets floats by reference.
template <typename T, int N, typename Body>
void half_reference(Model<T, float, N>& m, Body&& body) {
  for (size_t k = 0; k < m.sizes.size(); ++k) {
    T* p = m.params[k].data();
    const T* g = m.grads[k].data();
    float* st[3] = {nullptr, nullptr, nullptr};
    for (int j = 2; j < N; ++j) st[j - 2] = ((m.present >> j) & 1u) ? m.states[k][j - 2].data() : nullptr;
    for (int64_t i = 0; i < m.sizes[k]; ++i) {
      float pi = to_f(p[i]);
      float s[3] = {0, 0, 0};
      for (int j = 0; j < N - 2; ++j) s[j] = st[j] ? st[j][i] : 0.0f;
      body(pi, to_f(g[i]), s);
      p[i] = Storage<T>::from_math(pi);
      for (int j = 0; j < N - 2; ++j) {
        if (st[j]) st[j][i] = s[j];
      }
    }
  }
}

// ---------------------------------------------------------------- cases

const std::vector<int64_t> kSizesSmall = {1, 0, 2, 3, 4, 5, 7, 8, 9, 31, 1000, 1023, 1025, 2049, 0};
const std::vector<int64_t> kSizesChunks = {65536, 65537, 131071, 3 * 65536 + 5, 70000};

std::vector<int64_t> many_sizes(int count, uint32_t seed) {  // more tensors than one launch carries
  std::mt19937 rng(seed);
  std::vector<int64_t> out;
  for (int i = 0; i < count; ++i) out.push_back(int64_t(rng() % 700));
  return out;
}

struct DeviceScalars {  // lr, step, grad_scale and found_inf on the "device" (host memory here)
  float lr32 = 0;
  double lr64 = 0;
  int32_t step32 = 0;
  int64_t step64 = 0;
  float stepf = 0;
  double stepd = 0;
  float scale32 = 0;
  double scale64 = 0;
  float found32 = 0;
  int64_t found64 = 0;
};

// A device grad_scale (float32 or float64, as `which` is even or odd) and a device found_inf
// (float32 as torch's GradScaler keeps it, or int64) holding `found`.
void add_device_scaling(DeviceHyper& dh, DeviceScalars& d, double scale, bool found, int which) {
  d.scale32 = float(scale);
  d.scale64 = scale;
  d.found32 = found ? 1.0f : 0.0f;
  d.found64 = found ? 1 : 0;
  dh.grad_scale =
      which % 2 == 0 ? DeviceScalar{&d.scale32, DType::Float32} : DeviceScalar{&d.scale64, DType::Float64};
  dh.found_inf = which % 4 < 2 ? DeviceScalar{&d.found32, DType::Float32} : DeviceScalar{&d.found64, DType::Int64};
}

DeviceHyper make_device_hyper(DeviceScalars& d, double lr, int64_t step, int variant) {
  DeviceHyper dh;
  d.lr32 = float(lr);
  d.lr64 = lr;
  d.step32 = int32_t(step);
  d.step64 = step;
  d.stepf = float(step);
  d.stepd = double(step);
  switch (variant) {
    case 1: dh.lr = {&d.lr64, DType::Float64}; dh.step = {&d.step64, DType::Int64}; break;
    case 2: dh.lr = {&d.lr64, DType::Float64}; dh.step = {&d.step32, DType::Int32}; break;
    case 3: dh.step = {&d.stepf, DType::Float32}; break;
    case 4: dh.lr = {&d.lr64, DType::Float64}; dh.step = {&d.stepd, DType::Float64}; break;
    default: break;
  }
  return dh;
}

// Runs one update on a model with the host runner and on a reference copy; compares. expect_skip:
// the call returns found_inf and writes nothing (skip_nonfinite); device_skip: it returns false and
// writes nothing (a device found_inf flag that is set).
template <typename T, typename S, int N, typename Call, typename Reference>
void check_case(const char* what, Model<T, S, N> m, Call&& call, Reference&& reference, bool expect_skip,
                bool device_skip = false) {
  Model<T, S, N> expected = m;
  const Model<T, S, N> before = m;
  HostRunner runner;
  DeviceTensorList<N> list = m.device_list(dtype_of<T>(), dtype_of<S>());
  const bool found = call(runner, list);
  EXPECT(found == expect_skip, "%s: found_inf %d, expected %d", what, int(found), int(expect_skip));
  if (expect_skip || device_skip) {
    EXPECT(m.same(before), "%s: skipped call changed %s", what, m.first_difference(before).c_str());
    return;
  }
  reference(expected);
  EXPECT(m.same(expected), "%s: differs from the reference at %s", what, m.first_difference(expected).c_str());
}

template <typename T, typename S>
void poison(std::vector<Buffer<T>>& grads, const std::vector<int64_t>& sizes, double value) {
  // the last element of the last non-empty tensor (a tail / scalar-path element)
  for (size_t k = sizes.size(); k-- > 0;) {
    if (sizes[k] > 0) {
      grads[k].data()[sizes[k] - 1] = from_d<T>(value);
      return;
    }
  }
}

// ---------------------------------------------------------------- per optimizer

template <typename T, typename S>
void test_adam(const std::vector<int64_t>& sizes, int misalign, uint32_t seed) {
  for (int amsgrad = 0; amsgrad < 2; ++amsgrad) {
    for (int decoupled = 0; decoupled < 2; ++decoupled) {
      // 0 plain, 1 maximize+scaled, 2 device lr/step, 3 skip, 4 device grad_scale (found_inf 0),
      // 5 device found_inf set, 6 skip_nonfinite with a device grad_scale < 1 that overflows a gradient
      for (int variant = 0; variant < 7; ++variant) {
        AdamHyper h{};
        h.lr = 1e-2;
        h.beta1 = 0.9;
        h.beta2 = 0.999;
        h.eps = 1e-8;
        h.weight_decay = decoupled ? 1e-2 : 1e-3;
        h.amsgrad = amsgrad;
        h.decoupled = decoupled;
        h.maximize = variant == 1;
        h.step = 3;
        if (variant == 1 || variant == 4 || variant == 5) h.scaling.grad_scale = 1024.0;
        if (variant == 6) h.scaling.grad_scale = 0.25;
        const unsigned present = amsgrad ? 0b11111u : 0b01111u;
        Model<T, S, 5> m = make_model<T, S, 5>(sizes, present, misalign, seed, true);
        AdamHyper host = h;
        DeviceScalars dev;
        DeviceHyper dh;
        if (variant == 2) {  // the device values win over garbage host ones
          dh = make_device_hyper(dev, h.lr, h.step, 1 + int(seed % 4));
          if (dh.lr) host.lr = 999.0;
          if (dh.step) host.step = 77;
        }
        bool expect_skip = false, device_skip = false;
        if (variant == 3) {
          host.scaling.skip_nonfinite = true;
          expect_skip = seed % 2 == 0;
          if (expect_skip) poison<T, S>(m.grads, sizes, seed % 4 == 0 ? std::numeric_limits<double>::infinity()
                                                                          : std::numeric_limits<double>::quiet_NaN());
        }
        if (variant >= 4) {  // the device scale wins over a garbage host one (which would also pass the probe)
          add_device_scaling(dh, dev, h.scaling.grad_scale, variant == 5, int(seed) + amsgrad + 2 * decoupled);
          host.scaling.grad_scale = variant == 6 ? 1.0 : 999.0;
          device_skip = variant == 5;
        }
        if (variant == 6) {
          host.scaling.skip_nonfinite = true;
          // finite, but not once divided by 0.25 (float32 / float64); half gradients cannot overflow
          // float math that way, so they get a NaN
          const double big =
              sizeof(T) == 4 ? 3e38 : (sizeof(T) == 8 ? 1.7e308 : std::numeric_limits<double>::quiet_NaN());
          poison<T, S>(m.grads, sizes, big);
          bool any = false;
          for (int64_t n : sizes) any = any || n > 0;
          expect_skip = any;
        }
        std::string what = std::string("adam<") + dtype_name(dtype_of<T>()) + "> amsgrad=" + std::to_string(amsgrad) +
                           " decoupled=" + std::to_string(decoupled) + " variant=" + std::to_string(variant) +
                           " misalign=" + std::to_string(misalign);
        check_case(
            what.c_str(), m, [&](HostRunner& r, const DeviceTensorList<5>& l) { return run_adam(r, l, host, dh); },
            [&](Model<T, S, 5>& ref) {
              if constexpr (std::is_same_v<T, S>) {
                cpu::kernels().of<T>().adam(cpu_list(ref), h);
              } else {
                const AdamScalars<float> s = adam_scalars<float>(h);
                const float gs = float(h.scaling.grad_scale);
                const bool scaled = h.scaling.grad_scale != 1.0;
                half_reference<T, 5>(ref, [&](float& p, float g, float* st) {
                  const float gu = scaled ? unscale_grad<true>(g, gs) : g;
                  if (amsgrad && decoupled) adam_update<true, true>(p, gu, st[0], st[1], st[2], s);
                  if (amsgrad && !decoupled) adam_update<true, false>(p, gu, st[0], st[1], st[2], s);
                  if (!amsgrad && decoupled) adam_update<false, true>(p, gu, st[0], st[1], st[2], s);
                  if (!amsgrad && !decoupled) adam_update<false, false>(p, gu, st[0], st[1], st[2], s);
                });
              }
            },
            expect_skip, device_skip);
      }
    }
  }
}

template <typename T, typename S>
void test_sgd(const std::vector<int64_t>& sizes, int misalign, uint32_t seed) {
  const double momenta[] = {0.0, 0.9};
  for (double momentum : momenta) {
    for (int nesterov = 0; nesterov < 2; ++nesterov) {
      if (nesterov && momentum == 0.0) continue;
      for (int variant = 0; variant < 5; ++variant) {
        // 0 step 1, 1 step 4 + dampening + maximize + scaled, 2 device step 1 (host 4), 3 device step 4
        // (host 1), 4 skip
        SgdHyper h{};
        h.lr = 0.05;
        h.momentum = momentum;
        h.dampening = (variant == 1 && !nesterov) ? 0.25 : 0.0;
        h.weight_decay = 1e-3;
        h.nesterov = nesterov;
        h.maximize = variant == 1;
        h.step = (variant == 0 || variant == 2) ? 1 : 4;
        if (variant == 1) h.scaling.grad_scale = 0.5;
        const unsigned present = momentum != 0.0 ? 0b111u : 0b011u;
        Model<T, S, 3> m = make_model<T, S, 3>(sizes, present, misalign, seed, false);
        // on the first momentum step the buffer must not be read: make it NaN
        if (momentum != 0.0 && h.step == 1) {
          for (size_t k = 0; k < sizes.size(); ++k) {
            for (int64_t i = 0; i < sizes[k]; ++i) {
              m.states[k][0].data()[i] = from_d<S>(std::numeric_limits<double>::quiet_NaN());
            }
          }
        }
        SgdHyper host = h;
        DeviceScalars dev;
        DeviceHyper dh;
        if (variant == 2 || variant == 3) {
          dh = make_device_hyper(dev, h.lr, h.step, 1 + int(seed % 4));  // always a step, maybe an lr
          if (dh.lr) host.lr = 999.0;
          host.step = h.step == 1 ? 4 : 1;  // the device step decides the first-step branch
        }
        bool expect_skip = false;
        if (variant == 4) {
          host.scaling.skip_nonfinite = true;
          expect_skip = seed % 2 == 1;
          if (expect_skip) poison<T, S>(m.grads, sizes, -std::numeric_limits<double>::infinity());
        }
        std::string what = std::string("sgd<") + dtype_name(dtype_of<T>()) + "> momentum=" + std::to_string(momentum) +
                           " nesterov=" + std::to_string(nesterov) + " variant=" + std::to_string(variant) +
                           " misalign=" + std::to_string(misalign);
        check_case(
            what.c_str(), m, [&](HostRunner& r, const DeviceTensorList<3>& l) { return run_sgd(r, l, host, dh); },
            [&](Model<T, S, 3>& ref) {
              if constexpr (std::is_same_v<T, S>) {
                cpu::kernels().of<T>().sgd(cpu_list(ref), h);
              } else {
                const SgdScalars<float> s = sgd_scalars<float>(h);
                const float gs = float(h.scaling.grad_scale);
                const bool scaled = h.scaling.grad_scale != 1.0;
                const bool mom = momentum != 0.0, first = mom && h.step == 1, nest = mom && nesterov;
                half_reference<T, 3>(ref, [&](float& p, float g, float* st) {
                  const float gu = scaled ? unscale_grad<true>(g, gs) : g;
                  if (!mom) sgd_update<false, false, false>(p, gu, st[0], s);
                  if (mom && first && nest) sgd_update<true, true, true>(p, gu, st[0], s);
                  if (mom && first && !nest) sgd_update<true, false, true>(p, gu, st[0], s);
                  if (mom && !first && nest) sgd_update<true, true, false>(p, gu, st[0], s);
                  if (mom && !first && !nest) sgd_update<true, false, false>(p, gu, st[0], s);
                });
              }
            },
            expect_skip);
      }
    }
  }
}

template <typename T, typename S>
void test_adagrad(const std::vector<int64_t>& sizes, int misalign, uint32_t seed) {
  for (int variant = 0; variant < 4; ++variant) {
    AdagradHyper h{};
    h.lr = 0.01;
    h.lr_decay = 0.01;
    h.weight_decay = 1e-3;
    h.eps = 1e-10;
    h.maximize = variant == 1;
    h.step = 5;
    if (variant == 1) h.scaling.grad_scale = 65536.0;
    Model<T, S, 3> m = make_model<T, S, 3>(sizes, 0b111u, misalign, seed, true);
    AdagradHyper host = h;
    DeviceScalars dev;
    DeviceHyper dh;
    if (variant == 2) {
      dh = make_device_hyper(dev, h.lr, h.step, 1 + int(seed % 4));
      if (dh.lr) host.lr = 999.0;
      if (dh.step) host.step = 1;
    }
    bool expect_skip = false;
    if (variant == 3) {
      host.scaling.skip_nonfinite = true;
      expect_skip = seed % 2 == 0;
      if (expect_skip) poison<T, S>(m.grads, sizes, std::numeric_limits<double>::quiet_NaN());
    }
    std::string what = std::string("adagrad<") + dtype_name(dtype_of<T>()) + "> variant=" + std::to_string(variant) +
                       " misalign=" + std::to_string(misalign);
    check_case(
        what.c_str(), m, [&](HostRunner& r, const DeviceTensorList<3>& l) { return run_adagrad(r, l, host, dh); },
        [&](Model<T, S, 3>& ref) {
          if constexpr (std::is_same_v<T, S>) {
            cpu::kernels().of<T>().adagrad(cpu_list(ref), h);
          } else {
            const AdagradScalars<float> s = adagrad_scalars<float>(h);
            const float gs = float(h.scaling.grad_scale);
            const bool scaled = h.scaling.grad_scale != 1.0;
            half_reference<T, 3>(ref, [&](float& p, float g, float* st) {
              adagrad_update(p, scaled ? unscale_grad<true>(g, gs) : g, st[0], s);
            });
          }
        },
        expect_skip);
  }
}

template <typename T, typename S>
void test_rmsprop(const std::vector<int64_t>& sizes, int misalign, uint32_t seed) {
  for (int centered = 0; centered < 2; ++centered) {
    for (int with_momentum = 0; with_momentum < 2; ++with_momentum) {
      for (int variant = 0; variant < 4; ++variant) {
        RmspropHyper h{};
        h.lr = 0.01;
        h.alpha = 0.99;
        h.eps = 1e-8;
        h.weight_decay = 1e-3;
        h.momentum = with_momentum ? 0.5 : 0.0;
        h.centered = centered;
        h.maximize = variant == 1;
        if (variant == 1) h.scaling.grad_scale = 3.0;
        const unsigned present = 0b00111u | (with_momentum ? 0b01000u : 0u) | (centered ? 0b10000u : 0u);
        // square_avg >= grad_avg^2 keeps the centered sqrt real: square_avg positive, grad_avg small
        Model<T, S, 5> m = make_model<T, S, 5>(sizes, present, misalign, seed, true);
        RmspropHyper host = h;
        DeviceScalars dev;
        DeviceHyper dh;
        if (variant == 2) {
          dh = make_device_hyper(dev, h.lr, 1, 1);  // lr and step (ignored) on the device
          host.lr = 999.0;
        }
        bool expect_skip = false;
        if (variant == 3) {
          host.scaling.skip_nonfinite = true;
          expect_skip = seed % 2 == 1;
          if (expect_skip) poison<T, S>(m.grads, sizes, std::numeric_limits<double>::quiet_NaN());
        }
        std::string what = std::string("rmsprop<") + dtype_name(dtype_of<T>()) + "> centered=" +
                           std::to_string(centered) + " momentum=" + std::to_string(with_momentum) +
                           " variant=" + std::to_string(variant) + " misalign=" + std::to_string(misalign);
        check_case(
            what.c_str(), m, [&](HostRunner& r, const DeviceTensorList<5>& l) { return run_rmsprop(r, l, host, dh); },
            [&](Model<T, S, 5>& ref) {
              if constexpr (std::is_same_v<T, S>) {
                cpu::kernels().of<T>().rmsprop(cpu_list(ref), h);
              } else {
                const RmspropScalars<float> s = rmsprop_scalars<float>(h);
                const float gs = float(h.scaling.grad_scale);
                const bool scaled = h.scaling.grad_scale != 1.0;
                half_reference<T, 5>(ref, [&](float& p, float g, float* st) {
                  const float gu = scaled ? unscale_grad<true>(g, gs) : g;
                  if (centered && with_momentum) rmsprop_update<true, true>(p, gu, st[0], st[1], st[2], s);
                  if (centered && !with_momentum) rmsprop_update<true, false>(p, gu, st[0], st[1], st[2], s);
                  if (!centered && with_momentum) rmsprop_update<false, true>(p, gu, st[0], st[1], st[2], s);
                  if (!centered && !with_momentum) rmsprop_update<false, false>(p, gu, st[0], st[1], st[2], s);
                });
              }
            },
            expect_skip);
      }
    }
  }
}

template <typename T>
void test_nonfinite(const std::vector<int64_t>& sizes, int misalign, uint32_t seed) {
  // float overflow after unscaling: a finite gradient divided by a scale < 1 (float types only)
  const double values[] = {0.0, std::numeric_limits<double>::quiet_NaN(), -std::numeric_limits<double>::infinity(),
                           sizeof(T) == 4 ? 3e38 : (sizeof(T) == 8 ? 1.7e308 : 0.0)};
  for (int v = 0; v < 4; ++v) {
    Model<T, T, 3> m = make_model<T, T, 3>(sizes, 0b011u, misalign, seed, false);
    const bool poisoned = v > 0 && values[v] != 0.0;
    if (poisoned) poison<T, T>(m.grads, sizes, values[v]);
    const double scale = v == 3 ? 0.25 : 1.0;
    DeviceTensorList<2> list;
    list.param = dtype_of<T>();
    list.state = DType::Int32;  // ignored
    for (size_t k = 0; k < sizes.size(); ++k) list.add({nullptr, m.grads[k].data()}, sizes[k]);
    HostRunner runner;
    const bool found = run_nonfinite(runner, list, scale);
    bool has = false;
    for (int64_t n : sizes) has = has || n > 0;
    EXPECT(found == (poisoned && has), "nonfinite<%s> value %d misalign %d: %d", dtype_name(dtype_of<T>()), v,
           misalign, int(found));
  }
}

// ---------------------------------------------------------------- rules (fastopt/registry.h)
// Every registered rule, every variant, driven from the registry and the rule's own description:
// a newly registered optimizer is simulated with no edit here.

// The values a hyperparameter takes in the cases: flags both ways, a zero default also nonzero (weight
// decay: the variants that decay), optional values absent (NaN: computed from the step) and given.
std::vector<double> spec_choices(const HyperSpec& spec) {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  switch (spec.rule) {
    case HyperRule::Flag: return {0.0, 1.0};
    case HyperRule::OptionalUnit:
    case HyperRule::OptionalNonNegative: return {nan, 0.5};
    case HyperRule::Finite:
    case HyperRule::NonNegative:
      if (spec.default_value == 0.0) return {0.0, 0.01};
      return {spec.default_value};
    default: return {spec.default_value};
  }
}

template <typename Rule>
struct RuleCase {
  std::array<double, Rule::kHypers> values;
  int64_t step;
  int variant;
  bool first;  // the first case found for its variant (the one that also runs the device and skip modes)
};

// Every valid combination of the choices (and steps 1, 3 and 10 when the rule uses the step, which
// RAdam's rectification depends on); per variant the first and the last combination found (mostly
// defaults, mostly changed). A variant no combination reaches is a failure: the cases miss it.
template <typename Rule>
std::vector<RuleCase<Rule>> rule_cases() {
  std::vector<std::vector<double>> choices;
  for (const HyperSpec& spec : Rule::kHyperSpecs) choices.push_back(spec_choices(spec));
  const std::vector<int64_t> steps = Rule::kUsesStep ? std::vector<int64_t>{1, 3, 10} : std::vector<int64_t>{1};
  std::vector<std::vector<RuleCase<Rule>>> found(Rule::kVariants);
  std::array<size_t, Rule::kHypers> at{};
  for (;;) {
    for (int64_t step : steps) {
      RuleCase<Rule> c{};
      for (int i = 0; i < Rule::kHypers; ++i) c.values[size_t(i)] = choices[size_t(i)][at[size_t(i)]];
      c.step = step;
      const typename Rule::Hyper h = Rule::from_values(c.values.data(), step, GradScaling{});
      if (rules::check_rule<Rule>(c.values.data(), h)) continue;  // an invalid combination
      c.variant = Rule::variant(h);
      auto& mine = found[size_t(c.variant)];
      c.first = mine.empty();
      if (mine.size() < 2) {
        mine.push_back(c);
      } else {
        mine[1] = c;
      }
    }
    int i = 0;  // the next combination (odometer)
    while (i < Rule::kHypers && ++at[size_t(i)] == choices[size_t(i)].size()) at[size_t(i++)] = 0;
    if (i == Rule::kHypers) break;
  }
  std::vector<RuleCase<Rule>> out;
  for (int v = 0; v < Rule::kVariants; ++v) {
    EXPECT(!found[size_t(v)].empty(), "%s: no case reaches variant %d", Rule::kName, v);
    for (const auto& c : found[size_t(v)]) out.push_back(c);
  }
  return out;
}

// The CPU kernel of the rule on a copy. Half parameters: the float32 kernel on the parameters and
// gradients converted to float (the state is float32 already, updated in place), the parameters
// rounded back to nearest, which is what the CUDA op does per element (math in float).
template <typename Rule, typename T, typename S, int N>
void rule_reference(Model<T, S, N>& m, const typename Rule::Hyper& h) {
  if constexpr (std::is_same_v<T, S>) {
    cpu::kernels().of<T>().rules.template of<Rule>()(cpu_list(m), h);
  } else {
    std::vector<std::vector<float>> p(m.sizes.size()), g(m.sizes.size());
    cpu::TensorList<float, N> list;
    for (size_t k = 0; k < m.sizes.size(); ++k) {
      for (int64_t i = 0; i < m.sizes[k]; ++i) {
        p[k].push_back(to_f(m.params[k].data()[i]));
        g[k].push_back(to_f(m.grads[k].data()[i]));
      }
      std::array<float*, N> ptrs{};
      ptrs[0] = p[k].data();
      ptrs[1] = g[k].data();
      const auto device = m.ptrs(k);
      for (int j = 2; j < N; ++j) ptrs[j] = static_cast<float*>(device[j]);
      list.add(ptrs, m.sizes[k]);
    }
    cpu::kernels().of<float>().rules.template of<Rule>()(list, h);
    for (size_t k = 0; k < m.sizes.size(); ++k) {
      for (int64_t i = 0; i < m.sizes[k]; ++i) m.params[k].data()[i] = Storage<T>::from_math(p[k][size_t(i)]);
    }
  }
}

// One rule over one size list: every case, and for each variant's first case the modes of test_adam:
// 0 plain, 1 scaled (grad_scale 1024), 2 device lr / step (where the rule takes them), 3 skip_nonfinite,
// 4 device grad_scale (found_inf 0), 5 device found_inf set, 6 skip_nonfinite with a device
// grad_scale < 1 that overflows a gradient. brief: each variant's first case in modes 0 and 1 only (the
// multi-chunk sizes, where the element count would otherwise dominate the run time).
template <typename Rule, typename T, typename S>
void test_rule(const std::vector<RuleCase<Rule>>& cases, const std::vector<int64_t>& sizes, int misalign,
               uint32_t seed, bool brief) {
  constexpr int N = Rule::kOperands;
  constexpr bool kHasLr = std::string_view(Rule::kHyperSpecs[0].name) == "lr";
  for (const RuleCase<Rule>& rc : cases) {
    if (brief && !rc.first) continue;
    for (int mode = 0; mode < (rc.first && !brief ? 7 : 2); ++mode) {
      GradScaling scaling;
      if (mode == 1 || mode == 4 || mode == 5) scaling.grad_scale = 1024.0;
      if (mode == 6) scaling.grad_scale = 0.25;
      const typename Rule::Hyper h = Rule::from_values(rc.values.data(), rc.step, scaling);
      unsigned present = 0;
      with_variant<Rule::kVariants>(rc.variant, [&](auto V) { present = Rule::used(V.value); });
      Model<T, S, N> m = make_model<T, S, N>(sizes, present, misalign, seed, true);
      typename Rule::Hyper host = h;
      DeviceScalars dev;
      DeviceHyper dh;
      if (mode == 2) {  // the device values win over garbage host ones
        const bool device_step = Rule::kUsesStep && Rule::kDeviceStep;
        if (!kHasLr && !device_step) continue;
        dh = make_device_hyper(dev, h.lr, h.step, 1 + int(seed % 4));
        if (!kHasLr) dh.lr = {};
        if (!device_step) dh.step = {};
        if (!dh.lr && !dh.step) dh.lr = {&dev.lr64, DType::Float64};  // (make_device_hyper's step-only case)
        if (dh.lr) host.lr = 999.0;
        if (dh.step) host.step = 77;
      }
      bool expect_skip = false, device_skip = false;
      if (mode == 3) {
        host.scaling.skip_nonfinite = true;
        expect_skip = seed % 2 == 0;
        if (expect_skip) poison<T, S>(m.grads, sizes, seed % 4 == 0 ? std::numeric_limits<double>::infinity()
                                                                      : std::numeric_limits<double>::quiet_NaN());
      }
      if (mode >= 4) {  // the device scale wins over a garbage host one (which would also pass the probe)
        add_device_scaling(dh, dev, h.scaling.grad_scale, mode == 5, int(seed) + rc.variant);
        host.scaling.grad_scale = mode == 6 ? 1.0 : 999.0;
        device_skip = mode == 5;
      }
      if (mode == 6) {
        host.scaling.skip_nonfinite = true;
        const double big =
            sizeof(T) == 4 ? 3e38 : (sizeof(T) == 8 ? 1.7e308 : std::numeric_limits<double>::quiet_NaN());
        poison<T, S>(m.grads, sizes, big);
        bool any = false;
        for (int64_t n : sizes) any = any || n > 0;
        expect_skip = any;
      }
      std::string what = std::string(Rule::kName) + "<" + dtype_name(dtype_of<T>()) + "> variant=" +
                         std::to_string(rc.variant) + " step=" + std::to_string(rc.step) + " mode=" +
                         std::to_string(mode) + " misalign=" + std::to_string(misalign);
      check_case(
          what.c_str(), m,
          [&](HostRunner& r, const DeviceTensorList<N>& l) { return run_rule<Rule>(r, l, host, dh); },
          [&](Model<T, S, N>& ref) { rule_reference<Rule>(ref, h); }, expect_skip, device_skip);
    }
  }
}

template <typename T, typename S>
void test_rules(const std::vector<int64_t>& sizes, int misalign, uint32_t seed, bool brief = false) {
  for_each_rule(Registry{}, [&](auto* rule) {
    using Rule = std::remove_pointer_t<decltype(rule)>;
    static const std::vector<RuleCase<Rule>> cases = rule_cases<Rule>();
    test_rule<Rule, T, S>(cases, sizes, misalign, seed, brief);
  });
}

// Lists longer than one 4 KB launch, planned in the 32 KB argument space, bit for bit as before.
template <typename T, typename S>
void test_large_lists(uint32_t seed) {
  if (!kLargeArgsCompiled) return;
  g_large_args = true;
  const std::vector<int64_t> sizes = many_sizes(150, seed);
  for (int misalign : {0, 3}) {
    if (!g_rules_only) {
      test_adam<T, S>(sizes, misalign, seed + misalign);
      test_sgd<T, S>(sizes, misalign, seed + misalign);
      test_adagrad<T, S>(sizes, misalign, seed + misalign);
      test_rmsprop<T, S>(sizes, misalign, seed + misalign);
      test_nonfinite<T>(sizes, misalign, seed + misalign);
    }
    test_rules<T, S>(sizes, misalign, seed + misalign);
  }
  g_large_args = false;
}

template <typename T, typename S>
void test_all(uint32_t seed) {
  const std::vector<std::vector<int64_t>> lists = {kSizesSmall, kSizesChunks, many_sizes(150, seed)};
  for (size_t li = 0; li < lists.size(); ++li) {
    for (int misalign = 0; misalign < 4; ++misalign) {
      const uint32_t s = seed + uint32_t(li * 16 + misalign);
      if (!g_rules_only) {
        test_adam<T, S>(lists[li], misalign, s);
        test_sgd<T, S>(lists[li], misalign, s);
        test_adagrad<T, S>(lists[li], misalign, s);
        test_rmsprop<T, S>(lists[li], misalign, s);
        test_nonfinite<T>(lists[li], misalign, s);
      }
      test_rules<T, S>(lists[li], misalign, s, lists[li] == kSizesChunks);
    }
  }
}

// ---------------------------------------------------------------- planning, errors

void test_planning() {
  // 150 tensors of 5 operands: 67 per launch -> 3 launches; empty tensors take no slot and no block.
  std::vector<int64_t> sizes(150, 10);
  sizes[3] = 0;
  std::vector<std::array<void*, 5>> ptrs(150);
  alignas(16) static float dummy[64];
  for (auto& p : ptrs) p = {dummy, dummy + 4, dummy + 8, dummy + 12, nullptr};
  const int align[5] = {16, 16, 16, 16, 16};
  std::vector<int> counts;
  std::vector<int64_t> blocks;
  const int launches = plan_batches<5, tensors_per_batch<5>()>(
      sizes.size(), sizes.data(), [&](size_t k, int j) { return ptrs[k][j]; }, 0b01111u, align,
      [&](const auto& b, int64_t n) {
        counts.push_back(b.count);
        blocks.push_back(n);
      });
  EXPECT(tensors_per_batch<5>() == 67 && tensors_per_batch<3>() == 96 && tensors_per_batch<1>() == 169,
         "batch capacities %d %d %d", tensors_per_batch<5>(), tensors_per_batch<3>(), tensors_per_batch<1>());
  EXPECT(launches == 3 && counts[0] == 67 && counts[1] == 67 && counts[2] == 15, "launches %d", launches);
  EXPECT(blocks[0] == 67 && blocks[2] == 15, "blocks %lld %lld", (long long)blocks[0], (long long)blocks[2]);

  // int64 sizes: a tensor of 2^31 + 7 elements and one of 2^33 + 1 (planning only, no memory).
  const int64_t big[] = {(int64_t(1) << 31) + 7, 5, (int64_t(1) << 33) + 1};
  void* fake[3][1] = {{reinterpret_cast<void*>(uintptr_t(1) << 20)},
                      {reinterpret_cast<void*>((uintptr_t(1) << 20) + 2)},
                      {reinterpret_cast<void*>(uintptr_t(1) << 21)}};
  const int align1[1] = {16};
  plan_batches<1, tensors_per_batch<1>()>(
      3, big, [&](size_t k, int j) { return fake[k][j]; }, 1u, align1, [&](const auto& b, int64_t n) {
        const int64_t c0 = chunk_count(big[0]), c2 = chunk_count(big[2]);
        EXPECT(n == c0 + 1 + c2, "grid %lld", (long long)n);
        EXPECT(b.vectorised[0] == 1 && b.vectorised[1] == 0, "vector flags");
        const ChunkSpan last0 = chunk_of(b, c0 - 1);
        EXPECT(last0.k == 0 && last0.begin == (c0 - 1) * kChunkElements && last0.n == 7, "last chunk of tensor 0");
        const ChunkSpan mid = chunk_of(b, c0);
        EXPECT(mid.k == 1 && mid.begin == 0 && mid.n == 5, "tensor 1");
        const ChunkSpan last2 = chunk_of(b, n - 1);
        EXPECT(last2.k == 2 && last2.begin == (int64_t(1) << 33) && last2.n == 1, "last chunk of tensor 2: %lld %d",
               (long long)last2.begin, last2.n);
        const ChunkSpan first2 = chunk_of(b, c0 + 1);
        EXPECT(first2.k == 2 && first2.begin == 0 && first2.n == kChunkElements, "first chunk of tensor 2");
      });
}

// The 32 KB argument space: GPT-2 small's 148 Adam tensors (5 operands) in one launch; a list that fits
// one 4 KB launch keeps it; a longer one than a large batch takes two. The update itself is checked
// bit for bit with large batches by test_large_lists.
void test_large_planning() {
  if (!kLargeArgsCompiled) {
    std::printf("large kernel arguments not compiled in (nvcc < 12.1 or a target below sm_70): skipped\n");
    return;
  }
  constexpr int k5 = tensors_per_batch<5, kLargeBatchBytes>();
  constexpr int k3 = tensors_per_batch<3, kLargeBatchBytes>();
  constexpr int k1 = tensors_per_batch<1, kLargeBatchBytes>();
  EXPECT(k5 == 608 && k3 == 871 && k1 == 1535, "large batch capacities %d %d %d", k5, k3, k1);
  alignas(16) static float p[16], g[16], m[16], v[16];
  AdamHyper h{};
  h.lr = 1e-3;
  h.beta1 = 0.9;
  h.beta2 = 0.999;
  h.eps = 1e-8;
  h.step = 1;
  for (const int count : {148, 67, 700}) {
    for (const bool large : {false, true}) {
      DeviceTensorList<5> list;
      // (every tensor aliases the same 16 elements: only the planning is checked here)
      for (int k = 0; k < count; ++k) list.add({p, g, m, v, nullptr}, 16);
      HostRunner runner;
      runner.large = large;
      run_adam(runner, list, h, DeviceHyper{});
      const int want = !large ? (count + 66) / 67 : (count <= 67 ? 1 : (count + 607) / 608);
      const int want_k = large && count > 67 ? 608 : 67;
      EXPECT(runner.update_launches == want && runner.largest_batch == want_k,
             "%d tensors, large %d: %d launches of up to %d tensors, expected %d of %d", count, int(large),
             runner.update_launches, runner.largest_batch, want, want_k);
    }
  }
}

void test_errors() {
  float p[4] = {1, 2, 3, 4}, g[4] = {0, 0, 0, 0};
  AdamHyper h{};
  h.lr = 1e-3;
  h.beta1 = 0.9;
  h.beta2 = 0.999;
  h.eps = 1e-8;
  h.step = 1;
  DeviceTensorList<5> list;
  list.add({p, g, nullptr, nullptr, nullptr}, 4);  // exp_avg missing
  HostRunner runner;
  bool threw = false;
  try {
    run_adam(runner, list, h, DeviceHyper{});
  } catch (const Error& e) {
    threw = std::string(e.what()).find("null") != std::string::npos;
  }
  EXPECT(threw && runner.update_launches == 0, "null state refused before any launch");

  float m[4] = {}, v[4] = {};
  DeviceTensorList<5> ok;
  ok.add({p, g, m, v, nullptr}, 4);
  ok.add({p, g, m, v, nullptr}, -1);
  threw = false;
  try {
    run_adam(runner, ok, h, DeviceHyper{});
  } catch (const Error&) {
    threw = true;
  }
  EXPECT(threw && runner.update_launches == 0, "negative size refused before any launch");

  DeviceTensorList<5> good;
  good.add({p, g, m, v, nullptr}, 4);
  good.param = DType::Float16;
  good.state = DType::Float16;
  threw = false;
  try {
    run_adam(runner, good, h, DeviceHyper{});
  } catch (const Error& e) {
    threw = std::string(e.what()).find("unsupported dtypes") != std::string::npos;
  }
  EXPECT(threw, "float16 state refused");

  good.param = good.state = DType::Float32;
  HostRunner capturing;
  capturing.capture = true;
  h.scaling.skip_nonfinite = true;
  threw = false;
  try {
    run_adam(capturing, good, h, DeviceHyper{});
  } catch (const Error& e) {
    threw = std::string(e.what()).find("captured") != std::string::npos;
  }
  EXPECT(threw && capturing.update_launches == 0 && capturing.probe_launches == 0, "skip_nonfinite refused in capture");
  h.scaling.skip_nonfinite = false;
  EXPECT(!run_adam(capturing, good, h, DeviceHyper{}) && capturing.update_launches == 1, "capture without skip runs");

  int32_t step = 1;
  DeviceHyper bad;
  bad.lr = {&step, DType::Int32};
  threw = false;
  try {
    run_adam(runner, good, h, bad);
  } catch (const Error& e) {
    threw = std::string(e.what()).find("lr") != std::string::npos;
  }
  EXPECT(threw, "int32 device lr refused");

  DeviceTensorList<5> empty;
  empty.add({nullptr, nullptr, nullptr, nullptr, nullptr}, 0);
  HostRunner counting;
  h.scaling.skip_nonfinite = true;
  EXPECT(!run_adam(counting, empty, h, DeviceHyper{}) && counting.update_launches == 0 && counting.probe_launches == 0,
         "an empty list launches nothing");
}

}  // namespace

// `fastopt_cuda_simulate rules`: the rules alone (a quicker run while working on rule_backend.cuh).
int simulate_adafactor(int* checks);  // simulate_adafactor.cu

int main(int argc, char** argv) {
  const std::string only = argc > 1 ? argv[1] : "";
  if (only == "adafactor") {  // (Adafactor's passes alone)
    const int failed = simulate_adafactor(&checks);
    std::printf("%d passed, %d failed\n", checks - failed, failed);
    return failed == 0 ? 0 : 1;
  }
  g_rules_only = only == "rules";
  std::printf("simulating %d threads per block, %lld elements per chunk, CPU reference isa %s%s\n", kBlockThreads,
              (long long)kChunkElements, cpu::kernels().isa, g_rules_only ? " (rules only)" : "");
  if (!g_rules_only) {
    test_planning();
    test_large_planning();
    test_errors();
  }
  test_all<float, float>(11);
  test_all<double, double>(23);
  test_all<__half, float>(37);
  test_all<__nv_bfloat16, float>(41);
  test_large_lists<float, float>(53);
  test_large_lists<double, double>(59);
  test_large_lists<__half, float>(61);
  if (!g_rules_only) failures += simulate_adafactor(&checks);
  std::printf("%d passed, %d failed\n", checks - failures, failures);
  return failures == 0 ? 0 : 1;
}
