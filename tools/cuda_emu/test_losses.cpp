// Runs the emulated CUDA loss kernels (see run.sh) against the CPU loops of csrc/cpu/loss_loops.h:
// every row shape (8 lanes, a warp, blocks of 128/256/512), both dtypes and label types, weights,
// smoothing, z_loss, ignored rows (some, all), -inf masks, in place, the three reductions, n = 0.
// Gradients and losses agree within rounding (float 2e-5 relative, double 1e-12), ignored rows are
// exactly +0, the hinge gradient and the penalty gradient bit for bit.
#include "cuda/loss_cross_entropy.cu"
#include "cuda/loss_hinge.cu"
#include "cuda/loss_labels.cu"
#include "cuda/loss_penalty.cu"
#include "cuda/loss_softmax.cu"

#define FASTOPT_ISA_NS ref
#include "cpu/loss_loops.h"

#include <cstdio>
#include <random>
#include <string>

using namespace fastopt;
namespace ref = fastopt::cpu::ref;

static int failures = 0, checks = 0;

// runtime.cu's is_capturing, which this build leaves out: a switch for the capture test.
static bool emu_capturing = false;
namespace fastopt::cuda {
bool is_capturing(const Queue&) { return emu_capturing; }
}  // namespace fastopt::cuda
static std::mt19937_64 rng(12345);

template <typename T>
bool close(T a, T b, double rtol, double atol) {
  if (std::isnan(a) || std::isnan(b)) return std::isnan(a) && std::isnan(b);
  if (std::isinf(a) || std::isinf(b)) return a == b;
  return std::fabs(double(a) - double(b)) <= rtol * std::fabs(double(b)) + atol;
}

template <typename T>
void compare(const char* what, const std::string& ctx, const T* got, const T* want, int64_t count, bool exact = false) {
  ++checks;
  const double rtol = sizeof(T) == 4 ? 2e-5 : 1e-12;
  double amax = 0;
  for (int64_t k = 0; k < count; ++k) if (std::isfinite(double(want[k]))) amax = std::max(amax, std::fabs(double(want[k])));
  const double atol = (sizeof(T) == 4 ? 1e-6 : 1e-14) * amax;
  for (int64_t k = 0; k < count; ++k) {
    const bool ok = exact ? (std::memcmp(&got[k], &want[k], sizeof(T)) == 0 || (std::isnan(got[k]) && std::isnan(want[k])))
                          : close(got[k], want[k], rtol, atol);
    if (!ok) {
      ++failures;
      std::printf("FAIL %s %s [%lld]: got %.17g want %.17g\n", what, ctx.c_str(), (long long)k, double(got[k]),
                  double(want[k]));
      return;
    }
  }
}

template <typename T, typename L>
void test_ce(int64_t n, int64_t c, bool weighted, double ls, double zl, Reduction red, bool inplace, int ignore_mode,
             bool mask) {
  char buf[256];
  std::snprintf(buf, sizeof buf, "ce<%s,%s> n=%lld c=%lld w=%d ls=%g z=%g red=%d inplace=%d ignore=%d mask=%d",
                sizeof(T) == 4 ? "f32" : "f64", sizeof(L) == 4 ? "i32" : "i64", (long long)n, (long long)c, weighted,
                ls, zl, int(red), inplace, ignore_mode, mask);
  const std::string ctx = buf;
  std::normal_distribution<double> normal(0.0, 3.0);
  std::uniform_real_distribution<double> uni(0.5, 2.0);
  std::vector<T> logits(static_cast<size_t>(n * c)), weight(static_cast<size_t>(c));
  std::vector<L> labels(static_cast<size_t>(n));
  for (auto& v : logits) v = T(normal(rng));
  for (auto& v : weight) v = T(uni(rng));
  const int64_t ignore_index = -100;
  for (int64_t i = 0; i < n; ++i) {
    labels[size_t(i)] = L(int64_t(rng() % uint64_t(c)));
    if (ignore_mode == 1 && rng() % 3 == 0) labels[size_t(i)] = L(ignore_index);
    if (ignore_mode == 2) labels[size_t(i)] = L(ignore_index);
    if (mask) {
      for (int64_t j = 0; j < c; ++j) {
        if (j != int64_t(labels[size_t(i)]) && rng() % 4 == 0) logits[size_t(i * c + j)] = T(-INFINITY);
      }
    }
  }
  // CPU
  std::vector<T> cpu_in = logits, cpu_grad(static_cast<size_t>(n * c), T(7)), cpu_rows(static_cast<size_t>(n), T(7));
  cpu::CrossEntropyArgs<T, L> a{cpu_in.data(), labels.data(), weighted ? weight.data() : nullptr,
                                inplace ? cpu_in.data() : cpu_grad.data(),
                                red == Reduction::None ? cpu_rows.data() : nullptr,
                                n, c, ignore_index, ls, zl, red};
  const double cpu_loss = ref::softmax_cross_entropy(a);
  const T* cpu_g = inplace ? cpu_in.data() : cpu_grad.data();
  // "GPU"
  std::vector<T> gpu_in = logits, gpu_grad(static_cast<size_t>(n * c), T(7)), gpu_rows(static_cast<size_t>(n), T(7));
  T gpu_loss = T(7);
  cuda::CrossEntropyCall call{gpu_in.data(), sizeof(T) == 4 ? DType::Float32 : DType::Float64, labels.data(),
                              sizeof(L) == 4 ? DType::Int32 : DType::Int64, weighted ? weight.data() : nullptr,
                              inplace ? gpu_in.data() : gpu_grad.data(),
                              red == Reduction::None ? gpu_rows.data() : nullptr, &gpu_loss, n, c, ignore_index, ls,
                              zl, red};
  cuda::cross_entropy(call, cuda::Queue{});
  const T* gpu_g = inplace ? gpu_in.data() : gpu_grad.data();
  compare("dlogits", ctx, gpu_g, cpu_g, n * c);
  if (red == Reduction::None) {
    compare("row_losses", ctx, gpu_rows.data(), cpu_rows.data(), n);
    ++checks;
    if (gpu_loss != T(7)) { ++failures; std::printf("FAIL loss written for None %s\n", ctx.c_str()); }
  } else {
    const T want = T(cpu_loss);
    compare("loss", ctx, &gpu_loss, &want, 1);
  }
  // ignored rows: exactly +0 gradient and row loss
  for (int64_t i = 0; i < n; ++i) {
    if (int64_t(labels[size_t(i)]) != ignore_index) continue;
    for (int64_t j = 0; j < c; ++j) {
      const T g = gpu_g[i * c + j];
      if (!(g == T(0) && !std::signbit(g))) { ++failures; std::printf("FAIL ignored grad %s\n", ctx.c_str()); return; }
    }
    if (red == Reduction::None && !(gpu_rows[size_t(i)] == T(0))) { ++failures; std::printf("FAIL ignored row loss %s\n", ctx.c_str()); }
  }
}

template <typename T>
void test_softmax(int64_t rows, int64_t c, bool log, bool mask) {
  const std::string ctx = std::string(sizeof(T) == 4 ? "f32" : "f64") + " softmax rows=" + std::to_string(rows) +
                          " c=" + std::to_string(c) + " log=" + std::to_string(log) + " mask=" + std::to_string(mask);
  std::normal_distribution<double> normal(0.0, 5.0);
  std::vector<T> x(static_cast<size_t>(rows * c)), want(static_cast<size_t>(rows * c)), got(static_cast<size_t>(rows * c), T(7));
  for (auto& v : x) v = T(normal(rng));
  if (mask) for (auto& v : x) if (rng() % 3 == 0) v = T(-INFINITY);
  if (mask && rows > 1) for (int64_t j = 0; j < c; ++j) x[size_t(c + j)] = T(-INFINITY);  // a fully masked row
  ref::softmax(x.data(), want.data(), rows, c, log);
  cuda::softmax(x.data(), got.data(), sizeof(T) == 4 ? DType::Float32 : DType::Float64, rows, c, log, cuda::Queue{});
  compare("softmax", ctx, got.data(), want.data(), rows * c);
}

template <typename T, typename L>
void test_svm(int64_t n, int64_t c, Reduction red, bool inplace, double margin) {
  const std::string ctx = std::string(sizeof(T) == 4 ? "f32" : "f64") + (sizeof(L) == 4 ? " i32" : " i64") +
                          " svm n=" + std::to_string(n) + " c=" + std::to_string(c) + " red=" + std::to_string(int(red)) +
                          " inplace=" + std::to_string(inplace);
  std::normal_distribution<double> normal(0.0, 1.0);
  std::vector<T> s(static_cast<size_t>(n * c));
  for (auto& v : s) v = T(normal(rng));
  std::vector<L> labels(static_cast<size_t>(n));
  for (auto& y : labels) y = L(int64_t(rng() % uint64_t(c)));
  std::vector<T> cs = s, cd(static_cast<size_t>(n * c), T(7)), crow(static_cast<size_t>(n), T(7));
  cpu::HingeArgs<T, L> a{cs.data(), labels.data(), inplace ? cs.data() : cd.data(),
                         red == Reduction::None ? crow.data() : nullptr, n, c, margin, red};
  const double cpu_loss = ref::multiclass_svm_loss(a);
  std::vector<T> gs = s, gd(static_cast<size_t>(n * c), T(7)), grow(static_cast<size_t>(n), T(7));
  T gpu_loss = T(7);
  cuda::HingeCall call{gs.data(), sizeof(T) == 4 ? DType::Float32 : DType::Float64, labels.data(),
                       sizeof(L) == 4 ? DType::Int32 : DType::Int64, inplace ? gs.data() : gd.data(),
                       red == Reduction::None ? grow.data() : nullptr, &gpu_loss, n, c, margin, red};
  cuda::multiclass_svm(call, cuda::Queue{});
  compare("dscores", ctx, inplace ? gs.data() : gd.data(), inplace ? cs.data() : cd.data(), n * c, true);
  if (red == Reduction::None) {
    compare("svm rows", ctx, grow.data(), crow.data(), n);
  } else {
    const T want = T(cpu_loss);
    compare("svm loss", ctx, &gpu_loss, &want, 1);
  }
}

template <typename T>
void test_penalty(int64_t n, double l1, double l2, bool with_grad) {
  const std::string ctx = std::string(sizeof(T) == 4 ? "f32" : "f64") + " penalty n=" + std::to_string(n);
  std::normal_distribution<double> normal(0.0, 1.0);
  std::vector<T> w(static_cast<size_t>(n)), g0(static_cast<size_t>(n));
  for (auto& v : w) v = T(normal(rng));
  for (auto& v : g0) v = T(normal(rng));
  if (n > 3) w[1] = T(0);
  std::vector<T> cg = g0, gg = g0;
  const double cpu_value = ref::penalty(w.data(), with_grad ? cg.data() : nullptr, n, l1, l2);
  T value = T(7);
  cuda::penalty(w.data(), with_grad ? gg.data() : nullptr, sizeof(T) == 4 ? DType::Float32 : DType::Float64, n, l1, l2,
                &value, cuda::Queue{});
  compare("penalty grad", ctx, gg.data(), cg.data(), n, true);
  const T want = T(cpu_value);
  compare("penalty value", ctx, &value, &want, 1);
}

template <typename L>
void test_bad_label(int64_t n, int64_t c, bool has_ignore, int bad_count) {
  std::vector<L> labels(static_cast<size_t>(n));
  for (auto& y : labels) y = L(int64_t(rng() % uint64_t(c)));
  if (has_ignore) for (int64_t i = 0; i < n; i += 5) labels[size_t(i)] = L(-100);
  for (int b = 0; b < bad_count && n > 0; ++b) labels[size_t(rng() % uint64_t(n))] = L(b % 2 ? c + b : -1 - b);
  int64_t want = -1, value = 0;
  for (int64_t i = 0; i < n; ++i) {
    const int64_t v = int64_t(labels[size_t(i)]);
    if (has_ignore && v == -100) continue;
    if (v < 0 || v >= c) { want = i; value = v; break; }
  }
  const cuda::BadLabel got = cuda::find_bad_label(labels.data(), sizeof(L) == 4 ? DType::Int32 : DType::Int64, n, c,
                                                  has_ignore, -100, cuda::Queue{});
  ++checks;
  if (got.index != want || (want >= 0 && got.value != value)) {
    ++failures;
    std::printf("FAIL bad label n=%lld: got (%lld, %lld) want (%lld, %lld)\n", (long long)n, (long long)got.index,
                (long long)got.value, (long long)want, (long long)value);
  }
}

// Inside a CUDA-graph capture the label check (which reads its answer back on the host) must refuse
// before it queues anything: a device-to-host copy or a stream wait would invalidate the capture.
void test_bad_label_refused_in_capture() {
  std::vector<int32_t> labels(100, 3);
  const long launches = emu_launches;
  emu_capturing = true;
  bool threw = false;
  try {
    cuda::find_bad_label(labels.data(), DType::Int32, 100, 10, true, -100, cuda::Queue{});
  } catch (const cuda::Error&) {
    threw = true;
  }
  emu_capturing = false;
  ++checks;
  if (!threw || emu_launches != launches) {
    ++failures;
    std::printf("FAIL bad label check in a capture: threw=%d, %ld launches\n", int(threw), emu_launches - launches);
  }
}

template <typename T, typename L>
void ce_suite(const std::vector<int64_t>& cs, const std::vector<int64_t>& ns) {
  for (int64_t c : cs) {
    for (int64_t n : ns) {
      for (int red = 0; red < 3; ++red) {
        for (int variant = 0; variant < 6; ++variant) {
          const bool weighted = variant & 1;
          const double ls = variant >= 2 ? 0.1 : 0.0;
          const double zl = variant >= 4 ? 1e-3 : 0.0;
          test_ce<T, L>(n, c, weighted, ls, zl, Reduction(red), variant == 3 || variant == 4, variant % 3,
                        variant == 5 && c > 1);
        }
      }
    }
  }
}

int main(int argc, char** argv) {
  const bool quick = argc > 1 && std::string(argv[1]) != "full";
  if (argc > 1 && std::string(argv[1]) == "tsan") {
    // a few cases per kernel shape, in place, smoothing, ignored rows (for -fsanitize=thread)
    for (int64_t c : {5, 40, 2000}) {
      test_ce<float, int32_t>(9, c, true, 0.1, 1e-3, Reduction::Mean, true, 1, false);
      test_ce<double, int64_t>(9, c, false, 0.0, 0.0, Reduction::None, true, 1, true);
      test_softmax<float>(9, c, true, true);
      test_svm<float, int32_t>(9, c, Reduction::Mean, true, 1.0);
    }
    test_penalty<double>(40000, 0.1, 0.2, true);
    test_bad_label<int32_t>(3000, 10, true, 3);
    std::printf("%d checks, %d failures, %ld launches\n", checks, failures, long(emu_launches));
    return failures ? 1 : 0;
  }
  // cross-entropy over the three row shapes (8 lanes, a warp, a block of 128/256/512)
  ce_suite<float, int32_t>({1, 5, 32, 33, 100, 1024, 1025}, {0, 1, 7, 41});
  ce_suite<double, int64_t>({3, 32, 200, 1500}, {1, 9});
  ce_suite<float, int64_t>({4100}, {3});
  ce_suite<double, int32_t>({10}, {70});
  if (!quick) ce_suite<float, int32_t>({17000}, {2});
  // all rows ignored: mean is NaN; one row on the CPU and GPU must agree too
  test_ce<float, int32_t>(5, 10, false, 0.0, 0.0, Reduction::Mean, false, 2, false);
  test_ce<double, int64_t>(5, 2000, true, 0.2, 0.01, Reduction::Mean, true, 2, false);
  test_ce<float, int32_t>(0, 10, false, 0.0, 0.0, Reduction::Mean, false, 0, false);
  test_ce<float, int32_t>(0, 10, false, 0.0, 0.0, Reduction::Sum, false, 0, false);
  for (int64_t c : {1, 7, 32, 33, 1000, 1025, 5000}) {
    for (int64_t rows : {1, 3, 40}) {
      test_softmax<float>(rows, c, false, false);
      test_softmax<double>(rows, c, true, true);
      test_softmax<float>(rows, c, true, true);
    }
  }
  for (int64_t c : {1, 2, 10, 33, 1030, 5000}) {
    for (int64_t n : {0, 1, 5, 37}) {
      for (int red = 0; red < 3; ++red) {
        test_svm<float, int32_t>(n, c, Reduction(red), red == 1, 1.0);
        test_svm<double, int64_t>(n, c, Reduction(red), red != 1, 0.5);
      }
    }
  }
  for (int64_t n : {0, 1, 5, 1000, 40000}) {
    test_penalty<float>(n, 0.1, 0.01, true);
    test_penalty<double>(n, 0.0, 0.3, n % 2 == 0);
  }
  for (int64_t n : {0, 1, 10, 3000}) {
    for (int bad : {0, 1, 3}) {
      test_bad_label<int32_t>(n, 10, bad != 1, bad);
      test_bad_label<int64_t>(n, 1000, bad == 1, bad);
    }
  }
  test_bad_label_refused_in_capture();
  std::printf("%d checks, %d failures, %ld launches\n", checks, failures, long(emu_launches));
  return failures ? 1 : 0;
}
