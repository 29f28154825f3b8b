/* Element-wise loops around the GEMMs: the bias + activation pass after a forward product and
 * the activation backward (fused with the column sums that are a bias gradient) after a
 * backward one; float and double.  Used by the kernels (kernels.pyx) and the fused training
 * step (train_step.pxi) alike.
 *
 * Design: like updates.h, each loop is compiled for AVX2 and for the baseline x86-64 ISA and
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
#include "updates.h"   /* FASTMLP_CLONES */

enum { FASTMLP_IDENTITY = 0, FASTMLP_RELU = 1, FASTMLP_TANH = 2, FASTMLP_LOGISTIC = 3 };

#define FASTMLP_DEFINE_STEP_LOOPS(T, SUFFIX, EXP, TANH)                                       \
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
            for (ptrdiff_t j = 0; j < H; j++) row[j] = (T)1 / ((T)1 + EXP(-(row[j] + b[j])));  \
        } else {                                                                              \
            for (ptrdiff_t j = 0; j < H; j++) row[j] += b[j];                                 \
        }                                                                                     \
    }                                                                                         \
}                                                                                             \
/* one row: d (H,) *= f'(z), from the activation's output a = f(z) */                           \
static inline void act_backward_row_##SUFFIX(T *restrict d, const T *restrict a,              \
                                             ptrdiff_t H, int act) {                          \
    if (act == FASTMLP_RELU) {                                                                \
        for (ptrdiff_t j = 0; j < H; j++) {                                                   \
            T r = d[j];                        /* loaded unconditionally: a select */         \
            d[j] = a[j] <= 0 ? (T)0 : r;                                                      \
        }                                                                                     \
    } else if (act == FASTMLP_TANH) {                                                         \
        for (ptrdiff_t j = 0; j < H; j++) d[j] *= (T)1 - a[j] * a[j];                         \
    } else if (act == FASTMLP_LOGISTIC) {                                                     \
        for (ptrdiff_t j = 0; j < H; j++) d[j] *= a[j] * ((T)1 - a[j]);                       \
    }                                                                                         \
}                                                                                             \
/* D (N, H) *= f'(z) in place, A (N, H) the activation's output */                             \
FASTMLP_CLONES static void act_backward_##SUFFIX(T *restrict D, const T *restrict A,          \
                                                 ptrdiff_t N, ptrdiff_t H, int act) {         \
    for (ptrdiff_t i = 0; i < N; i++) act_backward_row_##SUFFIX(D + i * H, A + i * H, H, act); \
}                                                                                             \
/* out (H,) = column sums of D (N, H) in double; first D *= f'(z) in place (A the            \
 * activation's output; nothing for the identity): the activation backward and the bias      \
 * gradient in one pass */                                                                    \
FASTMLP_CLONES static void mask_colsum_##SUFFIX(T *restrict D, const T *restrict A,           \
                                                ptrdiff_t N, ptrdiff_t H, int act,            \
                                                double *restrict acc, T *restrict out) {      \
    for (ptrdiff_t j = 0; j < H; j++) acc[j] = 0;                                             \
    for (ptrdiff_t i = 0; i < N; i++) {                                                       \
        T *restrict row = D + i * H;                                                          \
        /* two loops over the row (in L1): GCC vectorises the derivative and a       */      \
        /* float-to-double sum apart, not together in one loop                       */      \
        act_backward_row_##SUFFIX(row, A + i * H, H, act);                                    \
        for (ptrdiff_t j = 0; j < H; j++) acc[j] += (double)row[j];                           \
    }                                                                                         \
    for (ptrdiff_t j = 0; j < H; j++) out[j] = (T)acc[j];                                     \
}

FASTMLP_DEFINE_STEP_LOOPS(float, f32, expf, tanhf)
FASTMLP_DEFINE_STEP_LOOPS(double, f64, exp, tanh)

#endif
