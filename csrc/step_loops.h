/* Element-wise loops around the GEMMs: the bias + activation pass after a forward product and
 * the activation backward (fused with the column sums that are a bias gradient) after a
 * backward one; float and double.  Used by the kernels (kernels.pyx) and the fused training
 * step (train_step.pxi) alike.
 *
 * Design: like updates.h, each loop is compiled for AVX-512, AVX2 and the baseline x86-64 ISA and
 * picked at run time (target_clones), and uses restrict pointers so that GCC vectorises the
 * float-to-double accumulation that Cython's generated code leaves scalar.  No FMA target.
 * The activation is a code (contract.ACTIVATIONS: 0 identity, 1 relu, 2 tanh, 3 logistic),
 * tested once per call, outside the loops.
 * Shapes: row-major (N, H) matrices, (H,) vectors; acc is (H,) double scratch.
 */
#ifndef FASTMLP_STEP_LOOPS_H
#define FASTMLP_STEP_LOOPS_H
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include "bf16.h"
#include "dropout.h"
#include "updates.h"   /* FASTMLP_CLONES */

enum { FASTMLP_IDENTITY = 0, FASTMLP_RELU = 1, FASTMLP_TANH = 2, FASTMLP_LOGISTIC = 3 };

/* float32 exp, tanh and logistic that GCC vectorises (libm's expf/tanhf are calls it cannot):
 * Cephes' expf (range reduction by ln 2 in two parts, a degree-5 polynomial, 2^n from the
 * exponent bits) with inputs below -87 taken as -87 (the result, 1.6e-38, is then as good as
 * 0 for the activations) and inf above the overflow point -- and Cephes' tanhf (an odd
 * polynomial below |x| = 0.625, 1 - 2 / (exp(2|x|) + 1) above).  About 2 ulp against libm.
 * NaN stays NaN (the clamps are comparisons, false for NaN); +-inf give the limits exactly.
 * The float64 loops keep libm's exp and tanh. */
static inline float fastmlp_expf(float x) {
    float big = x > 88.72283905f ? INFINITY : 0.0f;   /* exp overflows: inf, like libm */
    x = x < -87.0f ? -87.0f : x;
    x = x > 88.72283905f ? 88.72283905f : x;
    float fx = floorf(x * 1.44269504088896341f + 0.5f);
    float r = x - fx * 0.693359375f;
    r = r - fx * -2.12194440e-4f;
    float y = ((((1.9875691500e-4f * r + 1.3981999507e-3f) * r + 8.3334519073e-3f) * r
                + 4.1665795894e-2f) * r + 1.6666665459e-1f) * r + 5.0000001201e-1f;
    y = y * (r * r) + r + 1.0f;
    int32_t bits = ((int32_t)fx + 126) << 23;   /* 2^(fx - 1), fx in [-125, 128] */
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    y = y * scale * 2.0f;
    return big == 0.0f ? y : big;
}

static inline float fastmlp_logisticf(float x) { return 1.0f / (1.0f + fastmlp_expf(-x)); }

static inline float fastmlp_tanhf(float x) {
    float a = x < 0 ? -x : x;
    float s = x * x;
    float p = ((((-5.70498872745e-3f * s + 2.06390887954e-2f) * s - 5.37397155531e-2f) * s
                + 1.33314422036e-1f) * s - 3.33332819422e-1f) * s * x + x;
    float q = 1.0f - 2.0f / (fastmlp_expf(2.0f * a) + 1.0f);
    q = x < 0 ? -q : q;
    return a < 0.625f ? p : q;
}

static inline double fastmlp_logistic(double x) { return 1.0 / (1.0 + exp(-x)); }

#define FASTMLP_DEFINE_STEP_LOOPS(T, SUFFIX, LOGISTIC, TANH)                                  \
/* out (N, H) = f(out + b) per row (relu keeps a NaN, like np.maximum) */                       \
FASTMLP_CLONES static void bias_act_##SUFFIX(T *restrict out, const T *restrict b,            \
                                             ptrdiff_t N, ptrdiff_t H, int act) {             \
    for (ptrdiff_t i = 0; i < N; i++) {                                                       \
        T *restrict row = out + i * H;                                                        \
        if (act == FASTMLP_RELU) {                                                            \
            for (ptrdiff_t j = 0; j < H; j++) {                                               \
                T t = row[j] + b[j];                                                          \
                row[j] = t < 0 ? (T)0 : t;                                                    \
            }                                                                                 \
        } else if (act == FASTMLP_TANH) {                                                     \
            for (ptrdiff_t j = 0; j < H; j++) row[j] = TANH(row[j] + b[j]);                   \
        } else if (act == FASTMLP_LOGISTIC) {                                                 \
            for (ptrdiff_t j = 0; j < H; j++) row[j] = LOGISTIC(row[j] + b[j]);               \
        } else {                                                                              \
            for (ptrdiff_t j = 0; j < H; j++) row[j] += b[j];                                 \
        }                                                                                     \
    }                                                                                         \
}                                                                                             \
/* one row: d (H,) *= f'(z), from the activation's output f(z) = q·a (q = 1 - p after       \
 * dropout, whose kept outputs are f(z)/q; 1 otherwise; ReLU needs only a's sign) */          \
static inline void act_backward_row_##SUFFIX(T *restrict d, const T *restrict a,              \
                                             ptrdiff_t H, int act, T q) {                     \
    if (act == FASTMLP_RELU) {                                                                \
        for (ptrdiff_t j = 0; j < H; j++) {                                                   \
            T r = d[j];                        /* loaded unconditionally: a select */         \
            d[j] = a[j] <= 0 ? (T)0 : r;                                                      \
        }                                                                                     \
    } else if (act == FASTMLP_TANH) {                                                         \
        for (ptrdiff_t j = 0; j < H; j++) {                                                   \
            T t = a[j] * q;                                                                   \
            d[j] *= (T)1 - t * t;                                                             \
        }                                                                                     \
    } else if (act == FASTMLP_LOGISTIC) {                                                     \
        for (ptrdiff_t j = 0; j < H; j++) {                                                   \
            T t = a[j] * q;                                                                   \
            d[j] *= t * ((T)1 - t);                                                           \
        }                                                                                     \
    }                                                                                         \
}                                                                                             \
/* D (N, H) *= f'(z) in place, A (N, H) the activation's output */                             \
FASTMLP_CLONES static void act_backward_##SUFFIX(T *restrict D, const T *restrict A,          \
                                                 ptrdiff_t N, ptrdiff_t H, int act) {         \
    for (ptrdiff_t i = 0; i < N; i++)                                                         \
        act_backward_row_##SUFFIX(D + i * H, A + i * H, H, act, (T)1);                        \
}                                                                                             \
/* row i (H,) of a forward pass: f(row + b), then through dropout d (dropout.h; NULL: none) */ \
static inline void bias_act_row_##SUFFIX(T *row, const T *b, ptrdiff_t i, ptrdiff_t H,        \
                                         int act, const fm_drop_##SUFFIX *d) {                \
    bias_act_##SUFFIX(row, b, 1, H, act);                                                     \
    if (d != NULL) dropout_row_##SUFFIX(row, H, (uint64_t)i * (uint64_t)H + 1, d);            \
}                                                                                             \
/* row i (H,) of a backward pass: through dropout d (NULL: none; a is then the dropped-out   \
 * output), then row *= f'(z) */                                                              \
static inline void mask_row_##SUFFIX(T *restrict row, const T *restrict a, ptrdiff_t i,       \
                                     ptrdiff_t H, int act, const fm_drop_##SUFFIX *d) {       \
    if (d != NULL) dropout_row_##SUFFIX(row, H, (uint64_t)i * (uint64_t)H + 1, d);            \
    act_backward_row_##SUFFIX(row, a, H, act, d != NULL ? d->q : (T)1);                       \
}                                                                                             \
/* bias_act, each row then through dropout d while it is in L1 */                             \
static void bias_act_drop_##SUFFIX(T *out, const T *b, ptrdiff_t N, ptrdiff_t H, int act,     \
                                   const fm_drop_##SUFFIX *d) {                               \
    if (d == NULL) {                                                                          \
        bias_act_##SUFFIX(out, b, N, H, act);                                                 \
        return;                                                                               \
    }                                                                                         \
    for (ptrdiff_t i = 0; i < N; i++) bias_act_row_##SUFFIX(out + i * H, b, i, H, act, d);    \
}                                                                                             \
/* out (H,) = column sums of D (N, H) in double; first D *= f'(z) in place (A the            \
 * activation's output; nothing for the identity), after D goes through dropout d (NULL:     \
 * none; A is then the dropped-out output): the activation backward and the bias gradient    \
 * in one pass */                                                                             \
FASTMLP_CLONES static void mask_colsum_##SUFFIX(T *restrict D, const T *restrict A,           \
                                                ptrdiff_t N, ptrdiff_t H, int act,            \
                                                double *restrict acc, T *restrict out,        \
                                                const fm_drop_##SUFFIX *d) {                  \
    for (ptrdiff_t j = 0; j < H; j++) acc[j] = 0;                                             \
    for (ptrdiff_t i = 0; i < N; i++) {                                                       \
        T *restrict row = D + i * H;                                                          \
        /* two loops over the row (in L1): GCC vectorises the derivative and a       */      \
        /* float-to-double sum apart, not together in one loop                       */      \
        mask_row_##SUFFIX(row, A + i * H, i, H, act, d);                                     \
        for (ptrdiff_t j = 0; j < H; j++) acc[j] += (double)row[j];                           \
    }                                                                                         \
    for (ptrdiff_t j = 0; j < H; j++) out[j] = (T)acc[j];                                     \
}

FASTMLP_DEFINE_STEP_LOOPS(float, f32, fastmlp_logisticf, fastmlp_tanhf)
FASTMLP_DEFINE_STEP_LOOPS(double, f64, fastmlp_logistic, tanh)

/* The bf16 step's two passes (float32 only): bias_act_f32 and mask_colsum_f32, each row then
 * also written as bfloat16 (bf16.h) to out16 / D16 (N, H) while it is in L1 -- the operands
 * of the next GEMMs, with no pass of their own.  The column sums are of the float32 rows.
 * Their rows are bias_act_row / mask_row (dropout d, NULL: none), then the conversion. */
static void bias_act_bf16(float *out, const float *b, ptrdiff_t N, ptrdiff_t H, int act,
                          uint16_t *out16, const fm_drop_f32 *d) {
    for (ptrdiff_t i = 0; i < N; i++) {
        bias_act_row_f32(out + i * H, b, i, H, act, d);
        to_bf16_f32(out16 + i * H, out + i * H, H);
    }
}

FASTMLP_CLONES static void mask_colsum_bf16(float *restrict D, const float *restrict A,
                                            ptrdiff_t N, ptrdiff_t H, int act,
                                            double *restrict acc, float *restrict out,
                                            uint16_t *restrict D16, const fm_drop_f32 *d) {
    for (ptrdiff_t j = 0; j < H; j++) acc[j] = 0;
    for (ptrdiff_t i = 0; i < N; i++) {
        float *restrict row = D + i * H;
        uint16_t *restrict row16 = D16 + i * H;
        mask_row_f32(row, A + i * H, i, H, act, d);
        for (ptrdiff_t j = 0; j < H; j++) acc[j] += (double)row[j];
        for (ptrdiff_t j = 0; j < H; j++) row16[j] = fastmlp_bf16(row[j]);
    }
    for (ptrdiff_t j = 0; j < H; j++) out[j] = (float)acc[j];
}

#endif
