// Trains a linear softmax classifier on generated data with fastopt's AdamW and fused
// softmax cross-entropy, through the C ABI (fastopt/c_api.h). Prints the loss as it falls and the
// final accuracy; exits non-zero if the classifier did not learn.
//
// Data: K Gaussian blobs in D dimensions, one per class, centres drawn at random.
// Model: scores = X W + b, W (D, K), b (K). Full-batch gradient: dW = X^T dscores, db = sum of rows.
#include <fastopt/c_api.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <random>
#include <vector>

namespace {

// Any fastopt error ends the program with its message.
void check(int32_t status, const char* what) {
  if (status != FASTOPT_OK) {
    std::fprintf(stderr, "%s failed: %s: %s\n", what, fastopt_status_name(status), fastopt_last_error());
    std::exit(2);
  }
}

constexpr int64_t N = 2000, D = 16, K = 5;

}  // namespace

int main() {
  std::printf("fastopt %s, CPU kernels: %s\n", fastopt_version(), fastopt_cpu_isa());

  // ---- generated data: x = centre[y] + noise
  std::mt19937_64 rng(42);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> centres(K * D);
  for (float& c : centres) c = 0.6f * normal(rng);  // overlapping blobs: not trivially separable
  std::vector<float> X(N * D);
  std::vector<int64_t> y(N);
  for (int64_t i = 0; i < N; ++i) {
    y[i] = i % K;
    for (int64_t d = 0; d < D; ++d) X[i * D + d] = centres[y[i] * D + d] + normal(rng);
  }

  // ---- parameters and AdamW state (the caller owns all of it; state starts at zero)
  std::vector<float> W(D * K), b(K, 0.0f);
  for (float& w : W) w = 0.01f * normal(rng);
  std::vector<float> dW(D * K), db(K), m_W(D * K), v_W(D * K), m_b(K), v_b(K);
  float* params[] = {W.data(), b.data()};
  const float* grads[] = {dW.data(), db.data()};
  float* exp_avgs[] = {m_W.data(), m_b.data()};
  float* exp_avg_sqs[] = {v_W.data(), v_b.data()};
  const int64_t sizes[] = {D * K, K};

  std::vector<float> scores(N * K);
  double first_loss = 0.0, loss = 0.0;
  const int steps = 300;
  for (int step = 1; step <= steps; ++step) {
    // forward: scores = X W + b
    for (int64_t i = 0; i < N; ++i) {
      for (int64_t k = 0; k < K; ++k) {
        float s = b[k];
        for (int64_t d = 0; d < D; ++d) s += X[i * D + d] * W[d * K + k];
        scores[i * K + k] = s;
      }
    }
    // fused loss and gradient; the gradient overwrites the scores (dlogits == logits is allowed)
    check(fastopt_softmax_cross_entropy_f32(scores.data(), y.data(), nullptr, N, K, -100, 0.0,
                                            FASTOPT_REDUCTION_MEAN, 0.0, scores.data(), nullptr, &loss),
          "softmax_cross_entropy");
    if (step == 1) first_loss = loss;
    // backward: dW = X^T dscores, db = column sums
    std::fill(dW.begin(), dW.end(), 0.0f);
    std::fill(db.begin(), db.end(), 0.0f);
    for (int64_t i = 0; i < N; ++i) {
      for (int64_t k = 0; k < K; ++k) {
        const float g = scores[i * K + k];
        db[k] += g;
        for (int64_t d = 0; d < D; ++d) dW[d * K + k] += X[i * D + d] * g;
      }
    }
    // one AdamW call updates both tensors
    check(fastopt_adamw_list_f32(2, sizes, params, grads, exp_avgs, exp_avg_sqs, nullptr, /*lr=*/0.02,
                                 0.9, 0.999, 1e-8, /*weight_decay=*/1e-2, /*amsgrad=*/0, /*maximize=*/0, step),
          "adamw");
    if (step == 1 || step % 50 == 0) std::printf("step %3d  loss %.4f\n", step, loss);
  }

  // accuracy of the trained classifier on the training data
  int64_t correct = 0;
  for (int64_t i = 0; i < N; ++i) {
    int64_t best = 0;
    float best_score = 0.0f;
    for (int64_t k = 0; k < K; ++k) {
      float s = b[k];
      for (int64_t d = 0; d < D; ++d) s += X[i * D + d] * W[d * K + k];
      if (k == 0 || s > best_score) best = k, best_score = s;
    }
    correct += best == y[i];
  }
  const double accuracy = double(correct) / double(N);
  std::printf("final loss %.4f (from %.4f), accuracy %.3f\n", loss, first_loss, accuracy);

  // an error path: a NaN learning rate is refused with a code and a message, nothing is written
  const double nan = std::numeric_limits<double>::quiet_NaN();
  const int32_t status =
      fastopt_adamw_f32(K, b.data(), db.data(), m_b.data(), v_b.data(), nullptr, nan, 0.9, 0.999, 1e-8, 0.0, 0, 0, 1);
  std::printf("error handling, as expected: lr = NaN is refused with %s (\"%s\"), nothing written\n",
              fastopt_status_name(status), fastopt_last_error());

  const bool learned = loss < 0.5 * first_loss && accuracy > 0.8 && status == FASTOPT_ERROR_HYPERPARAMETER;
  if (!learned) std::fprintf(stderr, "the classifier did not learn\n");
  return learned ? 0 : 1;
}
