/* The sparse first layer: X·W and Xᵀ·dY for a CSR X, and the gather of a mini-batch's rows;
 * float and double.  Used by the kernels (kernels.pyx) and the fused training step
 * (train_step.pxi) alike.
 *
 * Design: a CSR row i is data[indptr[i]..indptr[i+1]) at columns indices[...] (int64; the
 * offsets are absolute, so a row range of a bigger matrix needs no copy).  The forward pass
 * adds data[p]·W[c, :] into out[i, :] for each stored entry: the inner loop runs along a row
 * of W (row-major, contiguous) and vectorises; like step_loops.h each loop is compiled for
 * AVX-512, AVX2 and the baseline (target_clones), with restrict pointers and no FMA target.  The
 * forward pass checks every column index and offset it reads (-1 on the first bad one,
 * before it is used), so a corrupt matrix cannot make it read or write out of bounds.
 * Shapes: X (N, D) as CSR, W and dW (D, H), out and dY (N, H).
 */
#ifndef FASTMLP_SPARSE_LOOPS_H
#define FASTMLP_SPARSE_LOOPS_H
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include "updates.h"   /* FASTMLP_CLONES */

#define FASTMLP_DEFINE_SPARSE_LOOPS(T, SUFFIX)                                                 \
/* out (N, H) = X·W; 0 on success, -1 at an index outside [0, D) or a decreasing offset */       \
FASTMLP_CLONES static int csr_forward_##SUFFIX(const T *restrict data,                         \
                                               const int64_t *restrict indices,                \
                                               const int64_t *restrict indptr, ptrdiff_t N,    \
                                               const T *restrict W, ptrdiff_t D, ptrdiff_t H,  \
                                               T *restrict out) {                              \
    for (ptrdiff_t i = 0; i < N; i++) {                                                        \
        T *restrict row = out + i * H;                                                         \
        for (ptrdiff_t j = 0; j < H; j++) row[j] = 0;                                          \
        int64_t lo = indptr[i], hi = indptr[i + 1];                                            \
        if (hi < lo) return -1;                                                                \
        for (int64_t p = lo; p < hi; p++) {                                                    \
            int64_t c = indices[p];                                                            \
            if (c < 0 || c >= D) return -1;                                                    \
            const T v = data[p];                                                               \
            const T *restrict w = W + c * H;                                                   \
            for (ptrdiff_t j = 0; j < H; j++) row[j] += v * w[j];                              \
        }                                                                                      \
    }                                                                                          \
    return 0;                                                                                  \
}                                                                                              \
/* dW (D, H) = Xᵀ·dY: each stored X[i, c] adds X[i, c]·dY[i, :] to row c of dW (indices as   \
 * checked by the forward pass over the same rows) */                                          \
FASTMLP_CLONES static void csr_weight_grad_##SUFFIX(const T *restrict dY,                      \
                                                    const T *restrict data,                    \
                                                    const int64_t *restrict indices,           \
                                                    const int64_t *restrict indptr,            \
                                                    ptrdiff_t N, ptrdiff_t D, ptrdiff_t H,     \
                                                    T *restrict dW) {                          \
    memset(dW, 0, sizeof(T) * (size_t)D * (size_t)H);                                          \
    for (ptrdiff_t i = 0; i < N; i++) {                                                        \
        const T *restrict g = dY + i * H;                                                      \
        for (int64_t p = indptr[i]; p < indptr[i + 1]; p++) {                                  \
            const T v = data[p];                                                               \
            T *restrict w = dW + indices[p] * H;                                               \
            for (ptrdiff_t j = 0; j < H; j++) w[j] += v * g[j];                                \
        }                                                                                      \
    }                                                                                          \
}                                                                                              \
/* rows (m,) of X into the CSR buffer out_* of room for cap entries; returns the entries     \
 * written, or -1 when the next row would not fit (nothing is written past the buffer) */     \
static int64_t csr_gather_##SUFFIX(const T *restrict data, const int64_t *restrict indices,    \
                                   const int64_t *restrict indptr, const int64_t *restrict rows,\
                                   ptrdiff_t m, T *restrict out_data,                          \
                                   int64_t *restrict out_indices,                              \
                                   int64_t *restrict out_indptr, int64_t cap) {                \
    int64_t o = 0;                                                                             \
    out_indptr[0] = 0;                                                                         \
    for (ptrdiff_t r = 0; r < m; r++) {                                                        \
        int64_t lo = indptr[rows[r]], n = indptr[rows[r] + 1] - lo;                            \
        if (o + n > cap) return -1;                                                            \
        memcpy(out_data + o, data + lo, sizeof(T) * (size_t)n);                                \
        memcpy(out_indices + o, indices + lo, sizeof(int64_t) * (size_t)n);                    \
        o += n;                                                                                \
        out_indptr[r + 1] = o;                                                                 \
    }                                                                                          \
    return o;                                                                                  \
}

FASTMLP_DEFINE_SPARSE_LOOPS(float, f32)
FASTMLP_DEFINE_SPARSE_LOOPS(double, f64)

#endif
