/* fastopt's C ABI: the fused optimizer updates and the softmax cross-entropy for any language with
 * a C FFI (C, C++, Rust, Go, Julia, Python's ctypes...). Plain C99: fixed-width integer types, float
 * and double, no structs, no exceptions: every function returns an fastopt_status code and, on an
 * error, leaves a message for fastopt_last_error().
 *
 * The numbers are torch.optim's and torch.nn.functional.cross_entropy's, computed by the same CPU
 * kernels (SIMD, OpenMP threads, runtime instruction-set dispatch) as the Python package.
 *
 * Conventions
 *  - Arrays are contiguous and updated in place. Each optimizer comes in float32 (_f32) and float64
 *    (_f64), for one tensor (n elements) and for a list of `count` tensors (`sizes[k]` elements each,
 *    operands given as arrays of pointers, one per tensor) updated in one call.
 *  - Booleans are int32_t: 0 is false, anything else true (the generic entries' flags excepted,
 *    which are doubles and must be exactly 0 or 1).
 *  - `step` is the 1-based number of this update (it drives bias corrections and lr decay).
 *  - Everything is checked before anything is written: NULL pointers (a pointer may be NULL only
 *    for a tensor of 0 elements or an optional state not in use), negative sizes, hyperparameters
 *    (the Python package's rules: lr >= 0 and finite, betas in [0, 1), step >= 1 ...), and
 *    overlapping arrays (no array a call writes may share memory with another operand; the
 *    gradients, only read, may share memory with one another, and the cross-entropy's dlogits may
 *    be the logits themselves). A refused call changes nothing.
 *  - Thread safety: calls on separate arrays may run concurrently; the last-error message is
 *    per thread.
 */
#ifndef FASTOPT_C_API_H
#define FASTOPT_C_API_H

#include <stdint.h>

#if defined(_WIN32)
#  if defined(FASTOPT_BUILDING_LIBRARY)
#    define FASTOPT_C_API __declspec(dllexport)
#  else
#    define FASTOPT_C_API __declspec(dllimport)
#  endif
#else
#  define FASTOPT_C_API __attribute__((visibility("default")))
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* Status codes returned by every function below (as int32_t). */
enum fastopt_status {
  FASTOPT_OK = 0,
  FASTOPT_ERROR_NULL_POINTER = 1,   /* a required pointer is NULL */
  FASTOPT_ERROR_SIZE = 2,           /* a negative size or count, an empty class axis, an index out
                                       of range, or a count that disagrees with the optimizer's */
  FASTOPT_ERROR_HYPERPARAMETER = 3, /* a scalar outside its range (NaN lr, beta1 = 1, float eps 1e-50) */
  FASTOPT_ERROR_OVERLAP = 4,        /* an array the call writes shares memory with another */
  FASTOPT_ERROR_LABEL = 5,          /* a label outside [0, c) that is not ignore_index */
  FASTOPT_ERROR_INTERNAL = 6,       /* anything else (out of memory): see fastopt_last_error() */
  FASTOPT_ERROR_UNKNOWN_OPTIMIZER = 7 /* a name that is not a registered optimizer (the message
                                         lists the known ones) */
};

/* The message of this thread's last failed call ("" after a successful one). The pointer stays
 * valid until this thread's next fastopt call. */
FASTOPT_C_API const char* fastopt_last_error(void);

/* A static name of a status code ("FASTOPT_OK", "FASTOPT_ERROR_NULL_POINTER" ...). */
FASTOPT_C_API const char* fastopt_status_name(int32_t status);

/* The library version ("0.1.0") and the instruction set in use ("avx512", "avx2", "baseline"). */
FASTOPT_C_API const char* fastopt_version(void);
FASTOPT_C_API const char* fastopt_cpu_isa(void);

/* SGD: torch.optim.SGD. momentum_buffer(s) required when momentum != 0 (NULL allowed otherwise);
   step 1 sets the buffer to the gradient, later steps accumulate (pass step = t). */
FASTOPT_C_API int32_t fastopt_sgd_f32(int64_t n, float* param, const float* grad,
    float* momentum_buffer, double lr, double momentum, double dampening, double weight_decay,
    int32_t nesterov, int32_t maximize, int64_t step);
FASTOPT_C_API int32_t fastopt_sgd_list_f32(int64_t count, const int64_t* sizes,
    float* const* params, const float* const* grads, float* const* momentum_buffers, double lr,
    double momentum, double dampening, double weight_decay, int32_t nesterov, int32_t maximize,
    int64_t step);
FASTOPT_C_API int32_t fastopt_sgd_f64(int64_t n, double* param, const double* grad,
    double* momentum_buffer, double lr, double momentum, double dampening, double weight_decay,
    int32_t nesterov, int32_t maximize, int64_t step);
FASTOPT_C_API int32_t fastopt_sgd_list_f64(int64_t count, const int64_t* sizes,
    double* const* params, const double* const* grads, double* const* momentum_buffers, double lr,
    double momentum, double dampening, double weight_decay, int32_t nesterov, int32_t maximize,
    int64_t step);

/* Adagrad: torch.optim.Adagrad. state_sum starts at initial_accumulator_value. */
FASTOPT_C_API int32_t fastopt_adagrad_f32(int64_t n, float* param, const float* grad,
    float* state_sum, double lr, double lr_decay, double weight_decay, double eps, int32_t maximize,
    int64_t step);
FASTOPT_C_API int32_t fastopt_adagrad_list_f32(int64_t count, const int64_t* sizes,
    float* const* params, const float* const* grads, float* const* state_sums, double lr,
    double lr_decay, double weight_decay, double eps, int32_t maximize, int64_t step);
FASTOPT_C_API int32_t fastopt_adagrad_f64(int64_t n, double* param, const double* grad,
    double* state_sum, double lr, double lr_decay, double weight_decay, double eps,
    int32_t maximize, int64_t step);
FASTOPT_C_API int32_t fastopt_adagrad_list_f64(int64_t count, const int64_t* sizes,
    double* const* params, const double* const* grads, double* const* state_sums, double lr,
    double lr_decay, double weight_decay, double eps, int32_t maximize, int64_t step);

/* RMSprop: torch.optim.RMSprop. momentum_buffer required when momentum > 0, grad_avg when centered
   (NULL allowed otherwise); all state starts at zero. */
FASTOPT_C_API int32_t fastopt_rmsprop_f32(int64_t n, float* param, const float* grad,
    float* square_avg, float* momentum_buffer, float* grad_avg, double lr, double alpha, double eps,
    double weight_decay, double momentum, int32_t centered, int32_t maximize);
FASTOPT_C_API int32_t fastopt_rmsprop_list_f32(int64_t count, const int64_t* sizes,
    float* const* params, const float* const* grads, float* const* square_avgs,
    float* const* momentum_buffers, float* const* grad_avgs, double lr, double alpha, double eps,
    double weight_decay, double momentum, int32_t centered, int32_t maximize);
FASTOPT_C_API int32_t fastopt_rmsprop_f64(int64_t n, double* param, const double* grad,
    double* square_avg, double* momentum_buffer, double* grad_avg, double lr, double alpha,
    double eps, double weight_decay, double momentum, int32_t centered, int32_t maximize);
FASTOPT_C_API int32_t fastopt_rmsprop_list_f64(int64_t count, const int64_t* sizes,
    double* const* params, const double* const* grads, double* const* square_avgs,
    double* const* momentum_buffers, double* const* grad_avgs, double lr, double alpha, double eps,
    double weight_decay, double momentum, int32_t centered, int32_t maximize);

/* Adam: torch.optim.Adam, weight_decay as L2 on the gradient. max_exp_avg_sq required when amsgrad
   (NULL allowed otherwise); state starts at zero; step is the 1-based number of this update. */
FASTOPT_C_API int32_t fastopt_adam_f32(int64_t n, float* param, const float* grad, float* exp_avg,
    float* exp_avg_sq, float* max_exp_avg_sq, double lr, double beta1, double beta2, double eps,
    double weight_decay, int32_t amsgrad, int32_t maximize, int64_t step);
FASTOPT_C_API int32_t fastopt_adam_list_f32(int64_t count, const int64_t* sizes,
    float* const* params, const float* const* grads, float* const* exp_avgs,
    float* const* exp_avg_sqs, float* const* max_exp_avg_sqs, double lr, double beta1, double beta2,
    double eps, double weight_decay, int32_t amsgrad, int32_t maximize, int64_t step);
FASTOPT_C_API int32_t fastopt_adam_f64(int64_t n, double* param, const double* grad,
    double* exp_avg, double* exp_avg_sq, double* max_exp_avg_sq, double lr, double beta1,
    double beta2, double eps, double weight_decay, int32_t amsgrad, int32_t maximize, int64_t step);
FASTOPT_C_API int32_t fastopt_adam_list_f64(int64_t count, const int64_t* sizes,
    double* const* params, const double* const* grads, double* const* exp_avgs,
    double* const* exp_avg_sqs, double* const* max_exp_avg_sqs, double lr, double beta1,
    double beta2, double eps, double weight_decay, int32_t amsgrad, int32_t maximize, int64_t step);

/* AdamW: torch.optim.AdamW, decoupled decay p *= 1 - lr * weight_decay; otherwise as Adam. */
FASTOPT_C_API int32_t fastopt_adamw_f32(int64_t n, float* param, const float* grad, float* exp_avg,
    float* exp_avg_sq, float* max_exp_avg_sq, double lr, double beta1, double beta2, double eps,
    double weight_decay, int32_t amsgrad, int32_t maximize, int64_t step);
FASTOPT_C_API int32_t fastopt_adamw_list_f32(int64_t count, const int64_t* sizes,
    float* const* params, const float* const* grads, float* const* exp_avgs,
    float* const* exp_avg_sqs, float* const* max_exp_avg_sqs, double lr, double beta1, double beta2,
    double eps, double weight_decay, int32_t amsgrad, int32_t maximize, int64_t step);
FASTOPT_C_API int32_t fastopt_adamw_f64(int64_t n, double* param, const double* grad,
    double* exp_avg, double* exp_avg_sq, double* max_exp_avg_sq, double lr, double beta1,
    double beta2, double eps, double weight_decay, int32_t amsgrad, int32_t maximize, int64_t step);
FASTOPT_C_API int32_t fastopt_adamw_list_f64(int64_t count, const int64_t* sizes,
    double* const* params, const double* const* grads, double* const* exp_avgs,
    double* const* exp_avg_sqs, double* const* max_exp_avg_sqs, double lr, double beta1,
    double beta2, double eps, double weight_decay, int32_t amsgrad, int32_t maximize, int64_t step);

/* Softmax cross-entropy, forward and backward in one pass: torch.nn.functional.cross_entropy.
 *   logits (n, c) row-major; labels (n) int64, each in [0, c) or equal to ignore_index;
 *   weight (c) per-class weights or NULL; reduction: FASTOPT_REDUCTION_MEAN (divides by the summed
 *   weights of the counted rows), _SUM or _NONE; z_loss adds z_loss * logsumexp(row)^2 per counted row.
 * Outputs: dlogits (n, c), the gradient of the reduced loss, may be logits itself (in place);
 *   mean / sum: *loss receives the loss (row_losses is ignored and may be NULL);
 *   none: row_losses (n) receives each row's loss (loss may be NULL; if not, it receives 0). */
enum fastopt_reduction { FASTOPT_REDUCTION_MEAN = 0, FASTOPT_REDUCTION_SUM = 1, FASTOPT_REDUCTION_NONE = 2 };

FASTOPT_C_API int32_t fastopt_softmax_cross_entropy_f32(const float* logits, const int64_t* labels,
    const float* weight, int64_t n, int64_t c, int64_t ignore_index, double label_smoothing,
    int32_t reduction, double z_loss, float* dlogits, float* row_losses, double* loss);
FASTOPT_C_API int32_t fastopt_softmax_cross_entropy_f64(const double* logits, const int64_t* labels,
    const double* weight, int64_t n, int64_t c, int64_t ignore_index, double label_smoothing,
    int32_t reduction, double z_loss, double* dlogits, double* row_losses, double* loss);

/* ---------------------------------------------------------------- optimizers described as rules
 *
 * The optimizers of fastopt's registry (Lion, Adamax, Adadelta, RAdam, NAdam, Rprop, ASGD, LAMB and
 * Muon's two elementwise passes: the Python functions fastopt.lion_, fastopt.adamax_ ...) through one
 * generic entry each for float32 and float64, and enough introspection for a binding in another
 * language to be generated from the library itself: the names, and for each its operands and
 * hyperparameters in argument order.
 * New optimizers appear here without a change to this header.
 *
 * Operands: operand 0 is the parameter, 1 the gradient (only read), then the optimizer's state, all
 * of one tensor's elements each, in the order fastopt_optimizer_operand() gives (the Python
 * function's positional arguments). Hyperparameters: doubles in the order fastopt_optimizer_hyper()
 * gives (the Python function's keywords); a flag is 0.0 or 1.0; an optional value (NAdam's
 * mu_product, ASGD's eta and mu) is NaN for "compute it from step" (Python's None). */

/* What a hyperparameter holds (fastopt_optimizer_hyper's kind). */
enum fastopt_hyper_kind {
  FASTOPT_HYPER_REAL = 0,     /* a number, checked against its rule (lr >= 0, beta in [0, 1) ...) */
  FASTOPT_HYPER_FLAG = 1,     /* a bool: 0.0 or 1.0 */
  FASTOPT_HYPER_OPTIONAL = 2  /* a number, or NaN: computed from step (its default) */
};

/* The number of registered optimizers, and the name of the i-th (0 <= i < count; "lion" ...):
   NULL, with a message for fastopt_last_error(), for an i out of range. Names are static. */
FASTOPT_C_API int32_t fastopt_optimizer_count(void);
FASTOPT_C_API const char* fastopt_optimizer_name(int32_t index);

/* One optimizer's shape: its operand count (param and grad included), its hyperparameter count,
   whether its update takes `step` (1) or ignores it (0), and a one-paragraph summary (static).
   Any output pointer may be NULL (not written). FASTOPT_ERROR_UNKNOWN_OPTIMIZER for an unknown
   name, FASTOPT_ERROR_NULL_POINTER for a NULL one. */
FASTOPT_C_API int32_t fastopt_optimizer_info(const char* optimizer, int32_t* n_operands,
    int32_t* n_hyper, int32_t* takes_step, const char** summary);

/* Operand j (0 <= j < n_operands) of an optimizer: its name ("params", "grads", "exp_avgs" ...)
   and *needed_when: NULL for an operand always required, else the condition under which an
   optional state is read ("amsgrad=True"); otherwise it may be NULL. Outputs may be NULL.
   FASTOPT_ERROR_SIZE for a j out of range. */
FASTOPT_C_API int32_t fastopt_optimizer_operand(const char* optimizer, int32_t j, const char** name,
    const char** needed_when);

/* Hyperparameter i (0 <= i < n_hyper) of an optimizer: its name ("lr" ...), its default (the
   Python function's; a flag's is 0.0 or 1.0, an optional one's NaN), its kind (enum
   fastopt_hyper_kind) and a one-line description. Outputs may be NULL. FASTOPT_ERROR_SIZE for an
   i out of range. */
FASTOPT_C_API int32_t fastopt_optimizer_hyper(const char* optimizer, int32_t i, const char** name,
    double* default_value, int32_t* kind, const char** doc);

/* One update of `count` tensors by the named optimizer, in place: the Python function
 * fastopt.<optimizer>_ on the same arrays, with the same checks and the same kernels (same bits).
 *   operands     count x n_operands pointers, tensor-major: operands[k * n_operands + j] is operand
 *                j of tensor k, of sizes[k] elements. A pointer may be NULL when sizes[k] == 0 or
 *                when operand j is an optional state the call does not read.
 *   n_operands   must equal the optimizer's (fastopt_optimizer_info): a guard against a stale
 *                binding reading past the array.
 *   hyper        n_hyper doubles in the optimizer's order; n_hyper must equal its count.
 *   step         the 1-based number of this update; ignored by optimizers that take no step.
 *   grad_scale   gradients are divided by it on the fly (finite, > 0; 1.0: not scaled).
 *   skip_nonfinite  when nonzero, a first pass reads every grad / grad_scale and, if any is NaN or
 *                +-Inf, nothing is written and *found_inf is set to 1.
 *   found_inf    may be NULL; on success receives 1 when the call was skipped, else 0. Not written
 *                when the call fails.
 * Checked before anything is written: the name, n_operands and n_hyper, NULL pointers, negative
 * sizes, each hyperparameter against its rule and the arithmetic's range (float32's for _f32), and
 * overlapping arrays. */
FASTOPT_C_API int32_t fastopt_update_f32(const char* optimizer, int64_t count, const int64_t* sizes,
    float* const* operands, int32_t n_operands, const double* hyper, int32_t n_hyper, int64_t step,
    double grad_scale, int32_t skip_nonfinite, int32_t* found_inf);
FASTOPT_C_API int32_t fastopt_update_f64(const char* optimizer, int64_t count, const int64_t* sizes,
    double* const* operands, int32_t n_operands, const double* hyper, int32_t n_hyper, int64_t step,
    double grad_scale, int32_t skip_nonfinite, int32_t* found_inf);

/* ---------------------------------------------------------------- Adafactor
 *
 * torch.optim.Adafactor's step (the Python function fastopt.adafactor_, the same checks and kernels:
 * the same bits). Not a registered optimizer: its state has other shapes than the parameter.
 *
 * Tensor k has ndims[k] dimensions (0 to 64), their sizes at shapes[o_k], ..., shapes[o_k + ndims[k] - 1],
 * where o_k is the sum of the ndims before it (the shapes one after the other). All arrays C-contiguous.
 *   ndims[k] >= 2: factored over its last two dimensions, R = shape[-2] rows and C = shape[-1] columns,
 *                  B = the product of the others: row_vars[k] holds B x R elements (torch's shape[:-1] +
 *                  (1,)), col_vars[k] B x C (shape[:-2] + (1, C)); variances[k] is not read (NULL).
 *   ndims[k] < 2:  variances[k] holds the tensor's elements; row_vars[k] and col_vars[k] are not read.
 * row_vars, col_vars (or variances) may themselves be NULL when no tensor is factored (or none is not).
 * A pointer may be NULL where its array has no element. State starts at zero.
 *   step          the 1-based number of this update (>= 1)
 *   lr            >= 0 (torch's default 1e-2); beta2_decay <= 0 (-0.8)
 *   eps1          >= 0, or NaN for the element type's machine epsilon (torch's None, its default)
 *   eps2          >= 0 (1e-3); d >= 1 (1.0); weight_decay >= 0 (0.0, decoupled); maximize 0 or 1
 * Checked before anything is written: count, NULL pointers, shapes (no negative size), the
 * hyperparameters, overlapping arrays (only the gradients, read, may share memory). */
FASTOPT_C_API int32_t fastopt_adafactor_f32(int64_t count, const int32_t* ndims, const int64_t* shapes,
    float* const* params, const float* const* grads, float* const* row_vars, float* const* col_vars,
    float* const* variances, int64_t step, double lr, double beta2_decay, double eps1, double eps2, double d,
    double weight_decay, int32_t maximize);
FASTOPT_C_API int32_t fastopt_adafactor_f64(int64_t count, const int32_t* ndims, const int64_t* shapes,
    double* const* params, const double* const* grads, double* const* row_vars, double* const* col_vars,
    double* const* variances, int64_t step, double lr, double beta2_decay, double eps1, double eps2, double d,
    double weight_decay, int32_t maximize);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* FASTOPT_C_API_H */
