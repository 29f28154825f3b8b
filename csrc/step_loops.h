/* Element-wise loops of the fused training step (train_step.pxi), float and double.
 *
 * Design: like updates.h, each loop is compiled for AVX2 and for the baseline x86-64 ISA and
 * picked at run time (target_clones), and uses restrict pointers so that GCC vectorises the
 * float-to-double accumulation that Cython's generated code leaves scalar.  No FMA target.
 * Shapes: row-major (N, H) matrices, (H,) vectors; acc is (H,) double scratch.
 */
#ifndef FASTMLP_STEP_LOOPS_H
#define FASTMLP_STEP_LOOPS_H
#include <stddef.h>
#include "updates.h"   /* FASTMLP_CLONES */

#define FASTMLP_DEFINE_STEP_LOOPS(T, SUFFIX)                                                  \
/* out (N, H) += b per row, then max(., 0) when relu (a NaN stays NaN, like np.maximum) */    \
FASTMLP_CLONES static void bias_act_##SUFFIX(T *restrict out, const T *restrict b,            \
                                             ptrdiff_t N, ptrdiff_t H, int relu) {            \
    for (ptrdiff_t i = 0; i < N; i++) {                                                       \
        T *restrict row = out + i * H;                                                        \
        if (relu) {                                                                           \
            for (ptrdiff_t j = 0; j < H; j++) {                                               \
                T t = row[j] + b[j];                                                          \
                row[j] = t < 0 ? (T)0 : t;                                                    \
            }                                                                                 \
        } else {                                                                              \
            for (ptrdiff_t j = 0; j < H; j++) row[j] += b[j];                                 \
        }                                                                                     \
    }                                                                                         \
}                                                                                             \
/* out (H,) = column sums of D (N, H) in double; when A (N, H), the ReLU output, is not NULL, \
 * first D[A <= 0] = 0 in place: the ReLU backward and the bias gradient in one pass */       \
FASTMLP_CLONES static void mask_colsum_##SUFFIX(T *restrict D, const T *restrict A,           \
                                                ptrdiff_t N, ptrdiff_t H,                     \
                                                double *restrict acc, T *restrict out) {      \
    for (ptrdiff_t j = 0; j < H; j++) acc[j] = 0;                                             \
    for (ptrdiff_t i = 0; i < N; i++) {                                                       \
        T *restrict row = D + i * H;                                                          \
        if (A) { /* two loops over the row (in L1): GCC vectorises a select and a      */ \
                 /* float-to-double sum apart, not together in one loop              */ \
            const T *restrict arow = A + i * H;                                               \
            for (ptrdiff_t j = 0; j < H; j++) {                                               \
                T r = row[j];                  /* loaded unconditionally: a select */         \
                row[j] = arow[j] <= 0 ? (T)0 : r;                                             \
            }                                                                                 \
        }                                                                                     \
        for (ptrdiff_t j = 0; j < H; j++) acc[j] += (double)row[j];                           \
    }                                                                                         \
    for (ptrdiff_t j = 0; j < H; j++) out[j] = (T)acc[j];                                     \
}

FASTMLP_DEFINE_STEP_LOOPS(float, f32)
FASTMLP_DEFINE_STEP_LOOPS(double, f64)

#endif
