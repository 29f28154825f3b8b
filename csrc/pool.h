/* The job of fastmlp's own GEMM threads (pool.c, fastmlp.backends._pool): one column-major
 * C (m, n) = alpha op(A) (m, k) op(B) (k, n) + beta C, cut into `chunks` blocks of C's longer
 * side, computed by the caller and (when use_workers) the pool's workers, each block followed
 * by the optional update `post`.  The fused steps fill one and call fm_gemm(&job) through
 * the address _pool.gemm_address() gives. */
#ifndef FASTMLP_POOL_H
#define FASTMLP_POOL_H

typedef void (*fm_gemm_fn)(char *, char *, int *, int *, int *, void *, const void *, int *,
                           const void *, int *, void *, void *, int *);

/* An optimiser update of the parameter whose gradient the GEMM writes, run on each block
 * of C right after the block's GEMM, by the thread that computed it and while the block is
 * still in its cache (updates.h; g = C + wd2 * P).  P, s1 (velocity, or Adam's m) and s2
 * (Adam's v) are laid out as C; the scalars are rounded to the GEMM's type as the steps
 * round them (ob1 = 1 - b1 and ob2 = 1 - b2 in that type). */
/* P16 (bf16 step; NULL otherwise): a bfloat16 copy of P (uint16_t, laid out as C), written
 * as P is (post.h).
 * the kinds: fastmlp.backends.contract's OPT_* codes (train_step.pxi checks) */
enum { FM_POST_SGD = 0, FM_POST_MOMENTUM = 1, FM_POST_NESTEROV = 2, FM_POST_ADAM = 3 };

typedef struct {
    int kind;                 /* FM_POST_* */
    void *P, *s1, *s2;
    double lr, wd2, mu, b1, b2, c1, c2, eps;
    void *P16;
} fm_post;

typedef struct {
    fm_gemm_fn gemm;          /* the provider's Fortran sgemm or dgemm, or oneDNN's bf16 GEMM
                               * (pool.c fm_gemm_bf16; opsize 2) */
    char ta, tb;              /* 'N' or 'T' */
    int m, n, k, lda, ldb, ldc;
    int itemsize;             /* C's elements: 4 or 8 */
    int chunks;               /* blocks, >= 1: the result depends on this, not on threads */
    int use_workers;          /* 0: the caller computes every block */
    int opsize;               /* A's and B's elements: itemsize, or 2 (bfloat16 operands) */
    const void *alpha, *A, *B, *beta;
    void *C;
    const fm_post *post;      /* NULL: no update */
} fm_job;

typedef void (*fm_gemm_entry)(fm_job *);

#endif
