/* A plain C99 program against fastopt/c_api.h: calls every function once (both types, single and
 * list forms), checks a hand-computed SGD step, and checks an error path (NaN lr: code, message,
 * nothing written); then the generic entry of the optimizers described as rules, driven by the
 * introspection (Lion's hyperparameters from their defaults, a hand-computed step, an unknown
 * name); Adafactor over a vector and a matrix (the direction of the step, two refusals). Prints "all C ABI checks passed" and exits 0 when everything holds. */
#include <fastopt/c_api.h>

#include <math.h>
#include <stdio.h>
#include <string.h>

static int failures = 0;

static void expect(int ok, const char* what) {
  if (!ok) {
    printf("FAILED: %s (last error: %s)\n", what, fastopt_last_error());
    ++failures;
  }
}

#define OK(call) expect((call) == FASTOPT_OK, #call)

enum { N = 5 };

/* One type's worth of calls; T is float or double, S the suffix. */
#define EXERCISE(T, S)                                                                                   \
  static void exercise_##S(void) {                                                                       \
    T p[N], g[N], a[N], b[N], c[N], p2[N], g2[N], a2[N], b2[N], c2[N];                                   \
    T* ps[2] = {p, p2};                                                                                  \
    const T* gs[2] = {g, g2};                                                                            \
    T* as[2] = {a, a2};                                                                                  \
    T* bs[2] = {b, b2};                                                                                  \
    T* cs[2] = {c, c2};                                                                                  \
    const int64_t sizes[2] = {N, N};                                                                     \
    int i;                                                                                               \
    for (i = 0; i < N; ++i) {                                                                            \
      p[i] = p2[i] = (T)(0.5 * i - 1.0);                                                                 \
      g[i] = g2[i] = (T)(0.25 * i + 0.1);                                                                \
      a[i] = a2[i] = b[i] = b2[i] = c[i] = c2[i] = 0;                                                    \
    }                                                                                                    \
    /* plain SGD: p -= lr * g, exactly representable values */                                          \
    OK(fastopt_sgd_##S(N, p, g, NULL, 0.5, 0.0, 0.0, 0.0, 0, 0, 1));                                     \
    for (i = 0; i < N; ++i) expect(p[i] == (T)(0.5 * i - 1.0) - (T)0.5 * g[i], "sgd value " #S);        \
    OK(fastopt_sgd_list_##S(2, sizes, ps, gs, as, 0.1, 0.9, 0.0, 0.0, 1, 0, 1));                        \
    OK(fastopt_adagrad_##S(N, p, g, a, 0.1, 0.0, 0.0, 1e-10, 0, 1));                                     \
    OK(fastopt_adagrad_list_##S(2, sizes, ps, gs, as, 0.1, 0.0, 0.0, 1e-10, 0, 2));                      \
    OK(fastopt_rmsprop_##S(N, p, g, a, b, c, 0.01, 0.99, 1e-8, 0.0, 0.9, 1, 0));                          \
    OK(fastopt_rmsprop_list_##S(2, sizes, ps, gs, as, bs, cs, 0.01, 0.99, 1e-8, 0.0, 0.0, 0, 0));        \
    memset(a, 0, sizeof a); memset(b, 0, sizeof b); memset(c, 0, sizeof c);                              \
    OK(fastopt_adam_##S(N, p, g, a, b, c, 1e-3, 0.9, 0.999, 1e-8, 0.0, 1, 0, 1));                         \
    OK(fastopt_adam_list_##S(2, sizes, ps, gs, as, bs, cs, 1e-3, 0.9, 0.999, 1e-8, 0.0, 1, 0, 2));       \
    OK(fastopt_adamw_##S(N, p, g, a, b, NULL, 1e-3, 0.9, 0.999, 1e-8, 1e-2, 0, 0, 3));                    \
    OK(fastopt_adamw_list_##S(2, sizes, ps, gs, as, bs, NULL, 1e-3, 0.9, 0.999, 1e-8, 1e-2, 0, 0, 4));   \
    for (i = 0; i < N; ++i) expect(isfinite((double)p[i]) && isfinite((double)p2[i]), "finite " #S);    \
    {                                                                                                    \
      /* error path: NaN lr is refused, with a message, and nothing is written */                       \
      T before[N];                                                                                       \
      int32_t status;                                                                                    \
      memcpy(before, p, sizeof p);                                                                       \
      status = fastopt_adamw_##S(N, p, g, a, b, NULL, NAN, 0.9, 0.999, 1e-8, 1e-2, 0, 0, 5);             \
      expect(status == FASTOPT_ERROR_HYPERPARAMETER, "NaN lr code " #S);                                \
      expect(strstr(fastopt_last_error(), "lr must be a finite number") != NULL, "NaN lr message " #S); \
      expect(memcmp(before, p, sizeof p) == 0, "NaN lr wrote nothing " #S);                             \
      expect(fastopt_sgd_##S(N, NULL, g, NULL, 0.1, 0.0, 0.0, 0.0, 0, 0, 1) == FASTOPT_ERROR_NULL_POINTER, \
             "NULL param " #S);                                                                          \
    }                                                                                                    \
    {                                                                                                    \
      /* cross-entropy of two rows of three classes, uniform logits: loss = log 3 */                    \
      T logits[6] = {0, 0, 0, 1, 1, 1}, dlogits[6], rows[2];                                             \
      const int64_t labels[2] = {0, 2};                                                                  \
      double loss = 0.0;                                                                                 \
      OK(fastopt_softmax_cross_entropy_##S(logits, labels, NULL, 2, 3, -100, 0.0, FASTOPT_REDUCTION_MEAN, \
                                           0.0, dlogits, NULL, &loss));                                  \
      expect(fabs(loss - log(3.0)) < 1e-6, "cross-entropy value " #S);                                   \
      OK(fastopt_softmax_cross_entropy_##S(logits, labels, NULL, 2, 3, -100, 0.1, FASTOPT_REDUCTION_NONE, \
                                           0.0, logits, rows, NULL));                                    \
    }                                                                                                    \
    {                                                                                                    \
      /* Lion through fastopt_update: two tensors, operands tensor-major {param, grad, exp_avg};      \
         lr = 0.5, the other hyperparameters at their defaults (weight_decay 0): g > 0 and m = 0      \
         make sign(c) = 1, so p -= 0.5 exactly */                                                      \
      T* table[2][3];                                                                                    \
      double hyper[16];                                                                                  \
      int32_t n_operands = 0, n_hyper = 0, takes_step = -1, found_inf = -1, h;                          \
      const char* name = NULL;                                                                           \
      for (i = 0; i < N; ++i) {                                                                          \
        p[i] = p2[i] = (T)(0.5 * i - 1.0);                                                               \
        a[i] = a2[i] = 0;                                                                                \
      }                                                                                                  \
      table[0][0] = p; table[0][1] = g; table[0][2] = a;                                                 \
      table[1][0] = p2; table[1][1] = g2; table[1][2] = a2;                                              \
      OK(fastopt_optimizer_info("lion", &n_operands, &n_hyper, &takes_step, NULL));                    \
      expect(n_operands == 3 && n_hyper >= 1 && n_hyper <= 16 && takes_step == 0, "lion info " #S);     \
      for (h = 0; h < n_hyper && h < 16; ++h) OK(fastopt_optimizer_hyper("lion", h, NULL, &hyper[h], NULL, NULL)); \
      OK(fastopt_optimizer_hyper("lion", 0, &name, NULL, NULL, NULL));                                 \
      expect(name != NULL && strcmp(name, "lr") == 0, "lion hyper 0 is lr " #S);                        \
      hyper[0] = 0.5;                                                                                    \
      OK(fastopt_update_##S("lion", 2, sizes, &table[0][0], n_operands, hyper, n_hyper, 1, 1.0, 1,     \
                            &found_inf));                                                                \
      expect(found_inf == 0, "lion found_inf " #S);                                                      \
      for (i = 0; i < N; ++i) {                                                                          \
        expect(p[i] == (T)(0.5 * i - 1.0) - (T)0.5, "lion value " #S);                                   \
        expect(p2[i] == p[i] && a2[i] == a[i] && a[i] > 0, "lion list " #S);                            \
      }                                                                                                  \
      memcpy(c, p, sizeof p);                                                                            \
      expect(fastopt_update_##S("adamw", 2, sizes, &table[0][0], n_operands, hyper, n_hyper, 1, 1.0, 0, \
                                &found_inf) == FASTOPT_ERROR_UNKNOWN_OPTIMIZER, "unknown optimizer " #S); \
      expect(strstr(fastopt_last_error(), "lion") != NULL, "unknown optimizer lists the names " #S);    \
      expect(memcmp(c, p, sizeof p) == 0, "unknown optimizer wrote nothing " #S);                       \
    }                                                                                                    \
    {                                                                                                    \
      /* Adafactor: p a vector of N (variances a), p2 a 1 x N matrix (row_vars b[0], col_vars c); every \
         gradient > 0, so every parameter goes down; then beta2_decay > 0 refused, nothing written */  \
      const int32_t ndims[2] = {1, 2};                                                                   \
      const int64_t shapes[3] = {N, 1, N};                                                               \
      T* bare[2] = {NULL, NULL};                                                                         \
      T *rows_of[2], *cols_of[2], *vars_of[2];                                                           \
      T before[N], before2[N];                                                                           \
      rows_of[0] = NULL; rows_of[1] = b; cols_of[0] = NULL; cols_of[1] = c; vars_of[0] = a; vars_of[1] = NULL; \
      memset(a, 0, sizeof a); memset(b, 0, sizeof b); memset(c, 0, sizeof c);                              \
      memcpy(before, p, sizeof p); memcpy(before2, p2, sizeof p2);                                       \
      OK(fastopt_adafactor_##S(2, ndims, shapes, ps, gs, rows_of, cols_of, vars_of, 1, 1e-2, -0.8, NAN,    \
                               1e-3, 1.0, 0.0, 0));                                                      \
      for (i = 0; i < N; ++i) expect(p[i] < before[i] && p2[i] < before2[i], "adafactor moves p " #S);  \
      expect(b[0] > 0 && c[0] > 0 && a[0] > 0, "adafactor state " #S);                                   \
      memcpy(before, p, sizeof p);                                                                       \
      expect(fastopt_adafactor_##S(2, ndims, shapes, ps, gs, rows_of, cols_of, vars_of, 2, 1e-2, 0.5, NAN, \
                                   1e-3, 1.0, 0.0, 0) == FASTOPT_ERROR_HYPERPARAMETER, "adafactor beta2_decay " #S); \
      expect(strstr(fastopt_last_error(), "beta2_decay") != NULL, "adafactor message " #S);             \
      expect(fastopt_adafactor_##S(2, ndims, shapes, ps, gs, bare, cols_of, vars_of, 2, 1e-2, -0.8, NAN,    \
                                   1e-3, 1.0, 0.0, 0) == FASTOPT_ERROR_NULL_POINTER, "adafactor NULL row_vars " #S); \
      expect(memcmp(before, p, sizeof p) == 0, "adafactor refused wrote nothing " #S);                  \
    }                                                                                                    \
  }

EXERCISE(float, f32)
EXERCISE(double, f64)

int main(void) {
  printf("fastopt %s on %s\n", fastopt_version(), fastopt_cpu_isa());
  exercise_f32();
  exercise_f64();
  expect(strcmp(fastopt_status_name(FASTOPT_ERROR_LABEL), "FASTOPT_ERROR_LABEL") == 0, "status name");
  {
    int32_t k, count = fastopt_optimizer_count();
    expect(count >= 1, "registered optimizers");
    for (k = 0; k < count; ++k) OK(fastopt_optimizer_info(fastopt_optimizer_name(k), NULL, NULL, NULL, NULL));
    expect(fastopt_optimizer_name(count) == NULL, "name out of range");
  }
  if (failures) {
    printf("%d C ABI checks failed\n", failures);
    return 1;
  }
  printf("all C ABI checks passed\n");
  return 0;
}
