/* The job of fastmlp's own GEMM threads (pool.c, fastmlp.backends._pool): one column-major
 * C (m, n) = alpha op(A) (m, k) op(B) (k, n) + beta C, cut into `chunks` blocks of C's longer
 * side, computed by the caller and (when use_workers) the pool's workers.  The fused steps
 * fill one and call fm_gemm(&job) through the address _pool.gemm_address() gives. */
#ifndef FASTMLP_POOL_H
#define FASTMLP_POOL_H

typedef void (*fm_gemm_fn)(char *, char *, int *, int *, int *, void *, const void *, int *,
                           const void *, int *, void *, void *, int *);

typedef struct {
    fm_gemm_fn gemm;          /* the provider's Fortran sgemm or dgemm */
    char ta, tb;              /* 'N' or 'T' */
    int m, n, k, lda, ldb, ldc;
    int itemsize;             /* 4 or 8 */
    int chunks;               /* blocks, >= 1: the result depends on this, not on threads */
    int use_workers;          /* 0: the caller computes every block */
    const void *alpha, *A, *B, *beta;
    void *C;
} fm_job;

typedef void (*fm_gemm_entry)(fm_job *);

#endif
