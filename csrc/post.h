/* The optimiser update a GEMM carries (pool.h's fm_post), on a run of n elements at offset
 * `off` of the parameter P, with the gradient G laid out as P: the loops of updates.h.  Used
 * by fastmlp's GEMM threads (pool.c: each thread updates the block it has just computed) and
 * by the fused steps after a GEMM they make alone (train_step.pxi).
 *
 * bf16 step (q->P16 not NULL, float32 only): P's bfloat16 copy is written as P is, tile by
 * tile (FM_POST_TILE elements: the tile just updated is still in L1), so the next step's GEMMs
 * read bf16 weights without a conversion pass of their own.
 */
#ifndef FASTMLP_POST_H
#define FASTMLP_POST_H
#include <stddef.h>
#include <stdint.h>
#include "bf16.h"
#include "pool.h"
#include "updates.h"

#define FM_POST_TILE 2048

#define FM_DEFINE_POST(T, SUFFIX)                                                              \
static void fm_post_run_##SUFFIX(const fm_post *q, ptrdiff_t off, ptrdiff_t n, const T *G) {  \
    T *P = (T *)q->P + off, *s1 = (T *)q->s1 + off, *s2 = (T *)q->s2 + off;                  \
    T lr = (T)q->lr, wd2 = (T)q->wd2, b1 = (T)q->b1, b2 = (T)q->b2;                         \
    G += off;                                                                                 \
    if (q->kind == FM_POST_SGD)                                                               \
        sgd_plain_##SUFFIX(P, G, n, lr, wd2);                                                 \
    else if (q->kind == FM_POST_ADAM)                                                         \
        adam_##SUFFIX(P, G, s1, s2, n, lr, b1, b2, (T)1 - b1, (T)1 - b2, (T)q->c1,            \
                      (T)q->c2, (T)q->eps, wd2);                                              \
    else                                                                                      \
        sgd_momentum_##SUFFIX(P, G, s1, n, lr, wd2, (T)q->mu, q->kind == FM_POST_NESTEROV);  \
}
FM_DEFINE_POST(float, f32)
FM_DEFINE_POST(double, f64)

static inline void fm_post_f32(const fm_post *q, ptrdiff_t off, ptrdiff_t n, const float *G) {
    if (q->P16 == NULL) {
        fm_post_run_f32(q, off, n, G);
        return;
    }
    for (ptrdiff_t t = 0; t < n; t += FM_POST_TILE) {
        ptrdiff_t len = n - t < FM_POST_TILE ? n - t : FM_POST_TILE;
        fm_post_run_f32(q, off + t, len, G);
        to_bf16_f32((uint16_t *)q->P16 + off + t, (const float *)q->P + off + t, len);
    }
}

static inline void fm_post_f64(const fm_post *q, ptrdiff_t off, ptrdiff_t n, const double *G) {
    fm_post_run_f64(q, off, n, G);
}

#endif
