/* Element-wise loops around the GEMMs: the bias + activation pass after a forward product and
 * the activation backward (fused with the column sums that are a bias gradient) after a
 * backward one, and batch normalisation's passes (at the end); float and double.  Used by the kernels (kernels.pyx) and the fused training
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
/* n entries x of a forward pass whose first has the dropout counter `first` (r·H + j + 1   \
 * for row r, column j): f(x + b), then through dropout d (dropout.h; NULL: none) */          \
static inline void bias_act_run_##SUFFIX(T *x, const T *b, uint64_t first, ptrdiff_t n,       \
                                         int act, const fm_drop_##SUFFIX *d) {                \
    bias_act_##SUFFIX(x, b, 1, n, act);                                                       \
    if (d != NULL) dropout_row_##SUFFIX(x, n, first, d);                                      \
}                                                                                             \
/* row i (H,) of a forward pass: f(row + b), then through dropout d */                        \
static inline void bias_act_row_##SUFFIX(T *row, const T *b, ptrdiff_t i, ptrdiff_t H,        \
                                         int act, const fm_drop_##SUFFIX *d) {                \
    bias_act_run_##SUFFIX(row, b, (uint64_t)i * (uint64_t)H + 1, H, act, d);                  \
}                                                                                             \
/* n entries x of a backward pass (dropout counter `first`, as bias_act_run): through        \
 * dropout d (NULL: none; a is then the dropped-out output), then x *= f'(z) */               \
static inline void mask_run_##SUFFIX(T *restrict x, const T *restrict a, uint64_t first,      \
                                     ptrdiff_t n, int act, const fm_drop_##SUFFIX *d) {       \
    if (d != NULL) dropout_row_##SUFFIX(x, n, first, d);                                      \
    act_backward_row_##SUFFIX(x, a, n, act, d != NULL ? d->q : (T)1);                         \
}                                                                                             \
/* row i (H,) of a backward pass: through dropout d, then row *= f'(z) */                     \
static inline void mask_row_##SUFFIX(T *restrict row, const T *restrict a, ptrdiff_t i,       \
                                     ptrdiff_t H, int act, const fm_drop_##SUFFIX *d) {       \
    mask_run_##SUFFIX(row, a, (uint64_t)i * (uint64_t)H + 1, H, act, d);                      \
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

/* Batch normalisation's passes (contract.py; reference.batch_norm_forward / _backward, the
 * oracle), float and double, and the bf16 step's forms: used by the kernels (kernels.pyx)
 * and the fused step (train_step.pxi) alike.  A hidden layer's product Z = a·W (no bias) is
 * in its zhat buffer; then
 *   bn_stats        mean, var (H,) = the column means and biased variances of Z
 *   bn_act          Z = ẑ = (Z - mean)·inv in place, out = f(γ·ẑ + b) (+ dropout, bf16 copy)
 *   mask_colsum_bn  D through dropout's mask and f' (mask_row), dβ = Σ_rows D, dγ = Σ D·ẑ
 *   bn_backward     D = γ/√(var + eps)·(D - dβ/N - ẑ·dγ/N) in place (+ the bf16 copy)
 * with inv = 1/√(var + eps).
 *
 * Design: each pass works on tiles of FASTMLP_BN_TILE columns (one tile for layers up to
 * that width), rows outer and the tile's columns inner, so the loops vectorise; its per-column
 * double accumulators and coefficients (inv, dβ/N, ...) are arrays on the stack, so neither
 * the kernels nor the fused step need a scratch buffer.  Sums are accumulated in double; the
 * element-wise arithmetic is in T, in the reference's order (no FMA: -ffp-contract=off).
 * Statistics in one pass, from shifted sums: with k_j = Z[0, j], s1 = Σ (z - k), s2 = Σ
 * (z - k)² (double), mean = k + s1/N and var = (s2 - s1·(s1/N))/N.  The reference's two
 * passes (the mean, then Σ (z - mean)²) would read the product once more; the shift by a
 * sample of the column keeps the one-pass formula's cancellation to a factor
 * ((mean - k)² + var)/var (about 2 for a first row of typical size; mean² / var without
 * the shift), which double precision absorbs.
 * Shapes: row-major (N, H) matrices with rows H apart, (H,) vectors.  A (the activation's
 * output) may be NULL for the identity (nothing is read).
 */
#define FASTMLP_BN_TILE 512

#define FASTMLP_DEFINE_BN_LOOPS(T, SUFFIX, SQRT)                                              \
/* mean, var (H,) = column means and biased variances of Z (N >= 1, H) (shifted sums) */       \
FASTMLP_CLONES static void bn_stats_##SUFFIX(const T *restrict Z, ptrdiff_t N, ptrdiff_t H,   \
                                             T *restrict mean, T *restrict var) {             \
    double s1[FASTMLP_BN_TILE], s2[FASTMLP_BN_TILE];                                          \
    for (ptrdiff_t j0 = 0; j0 < H; j0 += FASTMLP_BN_TILE) {                                   \
        ptrdiff_t nb = H - j0 < FASTMLP_BN_TILE ? H - j0 : FASTMLP_BN_TILE;                   \
        const T *restrict k = Z + j0;                                                         \
        for (ptrdiff_t j = 0; j < nb; j++) s1[j] = s2[j] = 0;                                 \
        for (ptrdiff_t i = 1; i < N; i++) {                                                   \
            const T *restrict row = Z + i * H + j0;                                           \
            for (ptrdiff_t j = 0; j < nb; j++) {                                              \
                double t = (double)row[j] - (double)k[j];                                     \
                s1[j] += t;                                                                   \
                s2[j] += t * t;                                                               \
            }                                                                                 \
        }                                                                                     \
        for (ptrdiff_t j = 0; j < nb; j++) {                                                  \
            double m1 = s1[j] / (double)N, v = (s2[j] - s1[j] * m1) / (double)N;              \
            mean[j0 + j] = (T)((double)k[j] + m1);                                            \
            var[j0 + j] = (T)(v < 0 ? 0.0 : v);   /* rounding can dip below 0; NaN stays */   \
        }                                                                                     \
    }                                                                                         \
}                                                                                             \
/* inv (n,) = 1/√(var + eps), as the reference: in T */                                       \
static inline void bn_inv_##SUFFIX(T *restrict inv, const T *restrict var, ptrdiff_t n,       \
                                   T eps) {                                                   \
    for (ptrdiff_t j = 0; j < n; j++) inv[j] = (T)1 / SQRT(var[j] + eps);                     \
}                                                                                             \
/* n entries of a row (columns j0.., dropout counter `first`; vectors offset to j0): z = ẑ =   \
 * (z - mean)·inv in place, out = γ·ẑ, then bias_act_run (f(out + b), dropout d) */            \
static inline void bn_act_run_##SUFFIX(T *restrict z, T *restrict out, const T *restrict mean, \
                                       const T *restrict inv, const T *restrict gamma,        \
                                       const T *b, uint64_t first, ptrdiff_t n, int act,      \
                                       const fm_drop_##SUFFIX *d) {                           \
    for (ptrdiff_t j = 0; j < n; j++) {                                                       \
        T t = (z[j] - mean[j]) * inv[j];                                                      \
        z[j] = t;                                                                             \
        out[j] = t * gamma[j];                                                                \
    }                                                                                         \
    bias_act_run_##SUFFIX(out, b, first, n, act, d);                                          \
}                                                                                             \
/* Z (N, H) = ẑ in place, out (N, H) = f(γ·ẑ + b), then dropout d (NULL: none) */              \
FASTMLP_CLONES static void bn_act_##SUFFIX(T *Z, T *out, ptrdiff_t N, ptrdiff_t H,            \
                                           const T *mean, const T *var, T eps,                \
                                           const T *gamma, const T *b, int act,               \
                                           const fm_drop_##SUFFIX *d) {                       \
    T inv[FASTMLP_BN_TILE];                                                                   \
    for (ptrdiff_t j0 = 0; j0 < H; j0 += FASTMLP_BN_TILE) {                                   \
        ptrdiff_t nb = H - j0 < FASTMLP_BN_TILE ? H - j0 : FASTMLP_BN_TILE;                   \
        bn_inv_##SUFFIX(inv, var + j0, nb, eps);                                              \
        for (ptrdiff_t i = 0; i < N; i++)                                                     \
            bn_act_run_##SUFFIX(Z + i * H + j0, out + i * H + j0, mean + j0, inv,             \
                                gamma + j0, b + j0, (uint64_t)(i * H + j0) + 1, nb, act, d);  \
    }                                                                                         \
}                                                                                             \
/* dbeta = Σ_rows D, dgamma = Σ_rows D·ẑ (N, H; in double), after each row of D went through  \
 * dropout d and f' (mask_run; A the dropped-out output, NULL for the identity): the         \
 * activation backward pass of a batch-normalised layer (its bias is β: dbeta is db) */       \
FASTMLP_CLONES static void mask_colsum_bn_##SUFFIX(T *restrict D, const T *restrict A,        \
                                                   const T *restrict Zh, ptrdiff_t N,         \
                                                   ptrdiff_t H, int act, T *restrict dbeta,   \
                                                   T *restrict dgamma,                        \
                                                   const fm_drop_##SUFFIX *d) {               \
    double s1[FASTMLP_BN_TILE], s2[FASTMLP_BN_TILE];                                          \
    for (ptrdiff_t j0 = 0; j0 < H; j0 += FASTMLP_BN_TILE) {                                   \
        ptrdiff_t nb = H - j0 < FASTMLP_BN_TILE ? H - j0 : FASTMLP_BN_TILE;                   \
        for (ptrdiff_t j = 0; j < nb; j++) s1[j] = s2[j] = 0;                                 \
        for (ptrdiff_t i = 0; i < N; i++) {                                                   \
            T *restrict x = D + i * H + j0;                                                   \
            const T *restrict z = Zh + i * H + j0;                                            \
            mask_run_##SUFFIX(x, A != NULL ? A + i * H + j0 : NULL,                           \
                              (uint64_t)(i * H + j0) + 1, nb, act, d);                        \
            for (ptrdiff_t j = 0; j < nb; j++) {                                              \
                s1[j] += (double)x[j];                                                        \
                s2[j] += (double)x[j] * (double)z[j];                                         \
            }                                                                                 \
        }                                                                                     \
        for (ptrdiff_t j = 0; j < nb; j++) {                                                  \
            dbeta[j0 + j] = (T)s1[j];                                                         \
            dgamma[j0 + j] = (T)s2[j];                                                        \
        }                                                                                     \
    }                                                                                         \
}                                                                                             \
/* a (n,) = dβ/N, c = dγ/N, s = γ/√(var + eps): bn_backward's coefficients, in T */           \
static inline void bn_coef_##SUFFIX(T *restrict a, T *restrict c, T *restrict s,              \
                                    const T *restrict dbeta, const T *restrict dgamma,        \
                                    const T *restrict gamma, const T *restrict var,           \
                                    ptrdiff_t n, ptrdiff_t N, T eps) {                        \
    for (ptrdiff_t j = 0; j < n; j++) {                                                       \
        a[j] = dbeta[j] / (T)N;                                                               \
        c[j] = dgamma[j] / (T)N;                                                              \
        s[j] = gamma[j] / SQRT(var[j] + eps);                                                 \
    }                                                                                         \
}                                                                                             \
/* n entries x of a row, ẑ z: x = s·(x - a - z·c) (coefficients offset to the entries) */     \
static inline void bn_backward_run_##SUFFIX(T *restrict x, const T *restrict z,               \
                                            const T *restrict a, const T *restrict c,         \
                                            const T *restrict s, ptrdiff_t n) {               \
    for (ptrdiff_t j = 0; j < n; j++) x[j] = ((x[j] - a[j]) - z[j] * c[j]) * s[j];            \
}                                                                                             \
/* D (N, H) = γ/√(var + eps)·(D - dβ/N - ẑ·dγ/N) in place, Zh (N, H) = ẑ */                   \
FASTMLP_CLONES static void bn_backward_##SUFFIX(T *D, const T *Zh, ptrdiff_t N, ptrdiff_t H,  \
                                                const T *dbeta, const T *dgamma,              \
                                                const T *gamma, const T *var, T eps) {        \
    T a[FASTMLP_BN_TILE], c[FASTMLP_BN_TILE], s[FASTMLP_BN_TILE];                             \
    for (ptrdiff_t j0 = 0; j0 < H; j0 += FASTMLP_BN_TILE) {                                   \
        ptrdiff_t nb = H - j0 < FASTMLP_BN_TILE ? H - j0 : FASTMLP_BN_TILE;                   \
        bn_coef_##SUFFIX(a, c, s, dbeta + j0, dgamma + j0, gamma + j0, var + j0, nb, N, eps); \
        for (ptrdiff_t i = 0; i < N; i++)                                                     \
            bn_backward_run_##SUFFIX(D + i * H + j0, Zh + i * H + j0, a, c, s, nb);           \
    }                                                                                         \
}

FASTMLP_DEFINE_BN_LOOPS(float, f32, sqrtf)
FASTMLP_DEFINE_BN_LOOPS(double, f64, sqrt)

/* The bf16 step's forms of bn_act and bn_backward (float32 only): each run of a row then
 * also written as bfloat16 (bf16.h) to out16 / D16 (N, H) while it is in L1, the operands of
 * the next GEMMs (as bias_act_bf16 and mask_colsum_bf16 do for a layer without batch
 * normalisation; its mask_colsum_bn pass writes no bf16: the delta the GEMMs read is
 * bn_backward's). */
FASTMLP_CLONES static void bn_act_bf16(float *Z, float *out, ptrdiff_t N, ptrdiff_t H,
                                       const float *mean, const float *var, float eps,
                                       const float *gamma, const float *b, int act,
                                       uint16_t *out16, const fm_drop_f32 *d) {
    float inv[FASTMLP_BN_TILE];
    for (ptrdiff_t j0 = 0; j0 < H; j0 += FASTMLP_BN_TILE) {
        ptrdiff_t nb = H - j0 < FASTMLP_BN_TILE ? H - j0 : FASTMLP_BN_TILE;
        bn_inv_f32(inv, var + j0, nb, eps);
        for (ptrdiff_t i = 0; i < N; i++) {
            float *o = out + i * H + j0;
            bn_act_run_f32(Z + i * H + j0, o, mean + j0, inv, gamma + j0, b + j0,
                           (uint64_t)(i * H + j0) + 1, nb, act, d);
            to_bf16_f32(out16 + i * H + j0, o, nb);
        }
    }
}

FASTMLP_CLONES static void bn_backward_bf16(float *D, const float *Zh, ptrdiff_t N,
                                            ptrdiff_t H, const float *dbeta,
                                            const float *dgamma, const float *gamma,
                                            const float *var, float eps, uint16_t *D16) {
    float a[FASTMLP_BN_TILE], c[FASTMLP_BN_TILE], s[FASTMLP_BN_TILE];
    for (ptrdiff_t j0 = 0; j0 < H; j0 += FASTMLP_BN_TILE) {
        ptrdiff_t nb = H - j0 < FASTMLP_BN_TILE ? H - j0 : FASTMLP_BN_TILE;
        bn_coef_f32(a, c, s, dbeta + j0, dgamma + j0, gamma + j0, var + j0, nb, N, eps);
        for (ptrdiff_t i = 0; i < N; i++) {
            float *restrict x = D + i * H + j0;
            uint16_t *restrict x16 = D16 + i * H + j0;
            bn_backward_run_f32(x, Zh + i * H + j0, a, c, s, nb);
            for (ptrdiff_t j = 0; j < nb; j++) x16[j] = fastmlp_bf16(x[j]);
        }
    }
}

#endif
