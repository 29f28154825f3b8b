/* The gather of a dense mini-batch, float and double: the rows `rows` of X, each as it is or
 * standardised by the model's input statistics, written into the batch buffer in one pass
 * (kernels.pyx `gather_rows`; the Trainer's epoch loop).
 *
 * Design: a training set is not copied standardised for a fit (a 60000x784 float32 copy is
 * 188 MB, and its first touch cost this VM 0.2-0.6 s); each batch is standardised as it is
 * gathered, which costs no more than the gather itself.  The next row is prefetched while this one is
 * written: the rows are random, so the hardware prefetcher does not see them coming (256
 * random rows of 784 floats: np.take 140 us, this loop 52-68 us standardising).  The
 * arithmetic is the reference's, (x - mean) / scale in T, no FMA and a true division, so the
 * result equals NumPy's bit for bit.  The rows are trusted (the checked face checks them).
 * Shapes: X (N, D), rows (m,) in [0, N), mean and scale (D,) or both NULL (a plain copy),
 * out (m, D); all C-contiguous.  The uint16_t instance gathers a bf16 step's training set
 * (its bfloat16 bits): always a plain copy, mean and scale NULL.
 */
#ifndef FASTMLP_GATHER_H
#define FASTMLP_GATHER_H
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include "updates.h"   /* FASTMLP_CLONES */

/* gather_cols: columns j0 .. j0+len-1 of the same rows, into the same columns of out (the
 * pool's gather, pool.c: each thread gathers the columns its GEMM blocks read); gather_rows
 * is the whole width.  Element for element the arithmetic is the same. */
#define FASTMLP_DEFINE_GATHER(T, SUFFIX)                                                       \
FASTMLP_CLONES static void gather_cols_##SUFFIX(const T *restrict X, ptrdiff_t D,               \
                                                const int64_t *restrict rows, ptrdiff_t m,     \
                                                ptrdiff_t j0, ptrdiff_t len,                   \
                                                const T *restrict mean,                        \
                                                const T *restrict scale, T *restrict out) {    \
    for (ptrdiff_t i = 0; i < m; i++) {                                                        \
        const T *restrict x = X + rows[i] * D + j0;                                            \
        T *restrict o = out + i * D + j0;                                                      \
        if (i + 1 < m) {                                                                       \
            const char *next = (const char *)(X + rows[i + 1] * D + j0);                       \
            for (ptrdiff_t b = 0; b < len * (ptrdiff_t)sizeof(T); b += 64)                     \
                __builtin_prefetch(next + b, 0, 0);                                            \
        }                                                                                      \
        if (mean == NULL)                                                                      \
            memcpy(o, x, sizeof(T) * (size_t)len);                                             \
        else                                                                                   \
            for (ptrdiff_t j = 0; j < len; j++) o[j] = (x[j] - mean[j0 + j]) / scale[j0 + j];  \
    }                                                                                          \
}                                                                                              \
static inline void gather_rows_##SUFFIX(const T *X, ptrdiff_t D, const int64_t *rows,          \
                                        ptrdiff_t m, const T *mean, const T *scale, T *out) { \
    gather_cols_##SUFFIX(X, D, rows, m, 0, D, mean, scale, out);                               \
}

FASTMLP_DEFINE_GATHER(float, f32)
FASTMLP_DEFINE_GATHER(double, f64)
FASTMLP_DEFINE_GATHER(uint16_t, u16)

#endif
