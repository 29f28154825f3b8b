/* fastmlp's own threads for the fused step's large GEMMs: fastmlp.backends._pool.
 *
 * Design
 * ------
 * OpenBLAS's workers spin ~100 ms after every call and a threaded GEMM waits for all of
 * them, so trainings sharing cores collapse (docs/benchmarks.md).  Here a GEMM of the fused
 * step is cut into a fixed number of blocks of rows or columns of C, or of its shared
 * dimension k (`fm_job.chunks`, and the side, both chosen from the job alone: fm_block), each
 * one a call of the provider's GEMM on one OpenBLAS thread.  The caller and the pool's
 * worker threads take blocks from a shared counter until none is left (the caller from the
 * front, the workers from the back: each thread keeps its block of a weight in its own cache
 * from step to step); the caller never waits for a worker that has not started (it takes the
 * blocks itself), only for blocks already being computed.  Two consequences:
 *   - the result does not depend on how many threads took part, nor on the machine's load:
 *     the blocks and each block's arithmetic are the same (training is bit-reproducible);
 *   - under contention the caller simply does more of the work (`use_workers` = 0 lets it do
 *     all of it), so nothing spins waiting for a descheduled thread.
 * A bf16 step's GEMMs come as jobs too (opsize 2: bfloat16 A and B, a float32 C), each block
 * one call of oneDNN's bf16 GEMM, which may thread it further on TBB's pool.
 * A job may carry an optimiser update (`fm_job.post`, updates.h) of the weight whose gradient
 * C is: each block is updated by the thread that computed it, right after its GEMM, so the
 * memory-bound pass over the weight runs on every thread and on data still in cache.
 * Workers wait for a job by spinning for FM_SPIN_NS, then sleep on a condition variable: a
 * pool left alone costs no CPU.  Jobs are tagged with a generation in the high half of the
 * block counter, so a worker that wakes late can never take a block of a finished job.
 * The interface is one C function taking one struct pointer (`fm_gemm`), found by address
 * (`gemm_address()`), so the Cython and the Numba steps call it alike.
 */
#define _GNU_SOURCE   /* sched_getaffinity, CPU_COUNT */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <pthread.h>
#include <sched.h>
#include <stddef.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#define FM_MAX_WORKERS 7
#define FM_SPIN_NS 200000   /* 200 us of spinning between a step's GEMMs, then sleep */

#include "gather.h"
#include "pool.h"
#include "post.h"

/* The block counter: generation (24 bits) | blocks of the job (8 bits) | blocks taken from
 * the front (16 bits) | blocks taken from the back (16 bits).  The caller takes blocks from
 * the front (block 0 first) and the workers from the back (the last block first), so with
 * the caller and one worker each thread computes, and updates, the same block of a weight's
 * gradient step after step: the block's weights and optimiser state stay in that core's
 * cache instead of moving between cores whenever the race for a shared counter went the
 * other way.  Either side goes on taking blocks until front + back reaches the job's size.
 * A worker learns the job's size from the counter itself and touches the job only after
 * winning a block of it, which proves the job is still running (its caller waits for every
 * block it handed out). */
#define FM_GEN(c) ((c) >> 40)
#define FM_CHUNKS(c) ((uint32_t)(((c) >> 32) & 0xFF))
#define FM_FRONT(c) (((uint32_t)(c) >> 16) & 0xFFFF)
#define FM_BACK(c) ((uint32_t)(c) & 0xFFFF)
#define FM_MAX_CHUNKS 255

static struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    _Atomic uint64_t next;
    _Atomic int done;         /* blocks finished in the current job */
    _Atomic int sleeping;     /* workers asleep on cv */
    fm_job *_Atomic job;
    void *_Atomic scratch;    /* the job's K-split partials (fm_block), or NULL */
    const struct fm_gather_job *_Atomic gather;   /* a gather job (fm_gather), or NULL */
    int n_workers;
    /* counters for tests and the benchmark (stats()): GEMMs given to fm_gemm, those shared
     * with the workers, blocks the workers computed */
    _Atomic uint64_t jobs, shared, worker_blocks;
} P = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER};

static pthread_once_t P_once = PTHREAD_ONCE_INIT;
static pthread_mutex_t fm_job_lock = PTHREAD_MUTEX_INITIALIZER;


/* The update `post` on the block C[m0 : m0+m, n0 : n0+n] (column-major, leading dimension
 * ldc): one run of elements per column, or one run in all when the block spans whole columns
 * of a C with ldc = m. */
static void fm_post_block(const fm_job *j, int m0, int m, int n0, int n) {
    ptrdiff_t ld = j->ldc, run = m, runs = n;
    if (m0 == 0 && m == ld) {
        run = (ptrdiff_t)m * n;
        runs = 1;
    }
    for (ptrdiff_t c = 0; c < runs; c++) {
        ptrdiff_t off = (n0 + c) * ld + m0;
        if (j->itemsize == 4)
            fm_post_f32(j->post, off, run, (const float *)j->C);
        else
            fm_post_f64(j->post, off, run, (const double *)j->C);
    }
}

/* Whether `j`'s blocks are cut along k (see fm_block): a GEMM whose shared dimension is its
 * longest, with no update (the forward product X·W of a layer, k = fan-in), float32 or
 * float64, or bf16 operands with float32 partials.  Decided from the job alone, so every
 * caller and thread cuts it alike. */
static int fm_ksplit(const fm_job *j, int chunks) {
    return chunks > 1 && j->post == NULL && j->k >= j->m && j->k >= j->n
           && j->k / chunks >= 64;
}

/* Where block c of `chunks` starts along a side of `len` elements (fm_cut(len, c + 1, chunks)
 * is where it ends): the one rule for every cut, so a gather's column ranges are exactly a
 * K-split product's k-ranges. */
static inline int64_t fm_cut(int64_t len, int c, int chunks) {
    return len * c / chunks;
}

/* A job's block count as the pool runs it: 1 .. FM_MAX_CHUNKS. */
static inline int fm_clamp_chunks(int chunks) {
    return chunks < 1 ? 1 : (chunks > FM_MAX_CHUNKS ? FM_MAX_CHUNKS : chunks);
}

static const float fm_zero_f = 0.0f;
static const double fm_zero_d = 0.0;

static void fm_block(const fm_job *j, int c, int chunks, void *scratch) {
    /* Cut the longer of C's two sides: every block repacks the whole of the other operand,
     * so the split runs along the side whose operand is the larger (m: op(A) is m x k; n:
     * op(B) is k x n).  The choice depends on the shape alone.
     * A K-split job (fm_ksplit; `scratch` holds chunks - 1 column-major m x n partials) is
     * cut along k instead: block c is the product over k-range c, block 0 into C (with the
     * job's beta), block c > 0 into partial c - 1, which fm_gemm adds to C in block order.
     * The k-ranges are the ranges of columns of C a gradient job of the same weight is cut
     * into (the forward product's k is the fan-in, the gradient's n), so the thread that
     * updates rows of W computes the forward product over the same rows and they stay in
     * its core's cache. */
    char ta = j->ta, tb = j->tb;
    int m = j->m, n = j->n, k = j->k, lda = j->lda, ldb = j->ldb, ldc = j->ldc;
    size_t isz = (size_t)j->itemsize, osz = (size_t)j->opsize;
    const char *A = j->A, *B = j->B;
    char *C = j->C;
    int m0 = 0, n0 = 0;
    if (scratch != NULL) {
        int k0 = (int)fm_cut(k, c, chunks);
        k = (int)fm_cut(k, c + 1, chunks) - k0;
        /* column k0 of op(A): a column of A ('N') or a row of it ('T'); row k0 of op(B): a
         * row of B ('N') or a column of it ('T') */
        A += (size_t)k0 * (ta == 'N' ? (size_t)lda : 1) * osz;
        B += (size_t)k0 * (tb == 'N' ? 1 : (size_t)ldb) * osz;
        const void *beta = j->beta;
        if (c > 0) {
            C = (char *)scratch + (size_t)(c - 1) * (size_t)m * (size_t)n * isz;
            ldc = m;
            beta = isz == 4 ? (const void *)&fm_zero_f : (const void *)&fm_zero_d;
        }
        if (k > 0)
            j->gemm(&ta, &tb, &m, &n, &k, (void *)j->alpha, A, &lda, B, &ldb, (void *)beta, C,
                    &ldc);
        return;
    }
    if (m >= n) {
        m0 = (int)fm_cut(m, c, chunks);
        m = (int)fm_cut(m, c + 1, chunks) - m0;
        /* row m0 of op(A): a row of A ('N', stride 1) or a column of it ('T', stride lda) */
        A += (size_t)m0 * (ta == 'N' ? 1 : (size_t)lda) * osz;
        C += (size_t)m0 * isz;
    } else {
        n0 = (int)fm_cut(n, c, chunks);
        n = (int)fm_cut(n, c + 1, chunks) - n0;
        /* column n0 of op(B): a column of B ('N', stride ldb) or a row of it ('T') */
        B += (size_t)n0 * (tb == 'N' ? (size_t)ldb : 1) * osz;
        C += (size_t)n0 * (size_t)ldc * isz;
    }
    if (m <= 0 || n <= 0)
        return;
    j->gemm(&ta, &tb, &m, &n, &k, (void *)j->alpha, A, &lda, B, &ldb, (void *)j->beta, C, &ldc);
    if (j->post != NULL)
        fm_post_block(j, m0, m, n0, n);
}

/* C += the chunks - 1 partials of a K-split job, in block order (the same sums whoever
 * computed the blocks). */
static void fm_ksum(const fm_job *j, int chunks, const void *scratch) {
    size_t mn = (size_t)j->m * (size_t)j->n;
    for (int c = 1; c < chunks; c++) {
        for (int col = 0; col < j->n; col++) {
            size_t off = (size_t)(c - 1) * mn + (size_t)col * (size_t)j->m;
            if (j->itemsize == 4) {
                float *restrict C = (float *)j->C + (size_t)col * (size_t)j->ldc;
                const float *restrict S = (const float *)scratch + off;
                for (int r = 0; r < j->m; r++)
                    C[r] += S[r];
            } else {
                double *restrict C = (double *)j->C + (size_t)col * (size_t)j->ldc;
                const double *restrict S = (const double *)scratch + off;
                for (int r = 0; r < j->m; r++)
                    C[r] += S[r];
            }
        }
    }
}

/* The calling thread's buffer for K-split partials, grown to `bytes` (NULL if that fails:
 * the job is then cut as any other).  Freed when the thread ends. */
static pthread_key_t fm_scratch_key;
static pthread_once_t fm_scratch_once = PTHREAD_ONCE_INIT;
typedef struct { void *p; size_t size; } fm_scratch_buf;

static void fm_scratch_free(void *b) {
    free(((fm_scratch_buf *)b)->p);
    free(b);
}

static void fm_scratch_init(void) {
    pthread_key_create(&fm_scratch_key, fm_scratch_free);
}

static void *fm_scratch(size_t bytes) {
    pthread_once(&fm_scratch_once, fm_scratch_init);
    fm_scratch_buf *b = pthread_getspecific(fm_scratch_key);
    if (b == NULL) {
        b = calloc(1, sizeof *b);
        if (b == NULL || pthread_setspecific(fm_scratch_key, b) != 0) {
            free(b);
            return NULL;
        }
    }
    if (b->size < bytes) {
        void *p = malloc(bytes);
        if (p == NULL)
            return NULL;
        free(b->p);
        b->p = p;
        b->size = bytes;
    }
    return b->p;
}

/* A mini-batch gather (gather.h) as a job of the pool: block c gathers the columns of X that
 * a K-split forward product reads in its block c (the same k-ranges, fm_block), so each
 * thread writes the part of the batch its own GEMM blocks read, forward and gradient alike,
 * and that part never crosses to another core. */
typedef struct fm_gather_job {
    const void *X;            /* (N, D) */
    const int64_t *rows;      /* (m,) in [0, N) */
    const void *mean, *scale; /* (D,) each, or both NULL: a plain copy */
    void *out;                /* (m, D) */
    ptrdiff_t D, m;
    int itemsize;             /* 4 or 8, or 2: a bf16 step's bits (a copy: mean, scale NULL) */
} fm_gather_job;

static void fm_gather_block(const fm_gather_job *g, int c, int chunks) {
    ptrdiff_t j0 = (ptrdiff_t)fm_cut(g->D, c, chunks);
    ptrdiff_t len = (ptrdiff_t)fm_cut(g->D, c + 1, chunks) - j0;
    if (len <= 0)
        return;
    if (g->itemsize == 2)
        gather_cols_u16(g->X, g->D, g->rows, g->m, j0, len, NULL, NULL, g->out);
    else if (g->itemsize == 4)
        gather_cols_f32(g->X, g->D, g->rows, g->m, j0, len, g->mean, g->scale, g->out);
    else
        gather_cols_f64(g->X, g->D, g->rows, g->m, j0, len, g->mean, g->scale, g->out);
}

/* Take blocks of the job whose counter read `cur` until none is left (or a newer job is
 * published, which means this one is over): the caller from the front, a worker from the
 * back. */
static void fm_take(uint64_t cur, int worker) {
    const uint64_t gen = FM_GEN(cur);
    for (;;) {
        uint32_t front = FM_FRONT(cur), back = FM_BACK(cur), chunks = FM_CHUNKS(cur);
        if (FM_GEN(cur) != gen || front + back >= chunks)
            return;
        fm_job *j = atomic_load(&P.job);
        void *scratch = atomic_load(&P.scratch);
        const fm_gather_job *g = atomic_load(&P.gather);
        if (atomic_compare_exchange_weak(&P.next, &cur, cur + (worker ? 1u : 1u << 16))) {
            int c = worker ? (int)(chunks - 1 - back) : (int)front;
            if (g != NULL)
                fm_gather_block(g, c, (int)chunks);
            else
                fm_block(j, c, (int)chunks, scratch);
            if (worker)
                atomic_fetch_add_explicit(&P.worker_blocks, 1, memory_order_relaxed);
            atomic_fetch_add(&P.done, 1);
            cur = atomic_load(&P.next);
        }
    }
}

static int64_t fm_now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

static void *fm_worker(void *arg) {
    (void)arg;
    uint64_t seen = FM_GEN(atomic_load(&P.next));
    for (;;) {
        uint64_t cur = atomic_load(&P.next);
        int64_t t0 = fm_now_ns();
        while (FM_GEN(cur) == seen) {   /* spin a while: a step's next GEMM comes soon */
            if (fm_now_ns() - t0 >= FM_SPIN_NS) {
                pthread_mutex_lock(&P.mu);
                atomic_fetch_add(&P.sleeping, 1);
                while (FM_GEN(atomic_load(&P.next)) == seen)
                    pthread_cond_wait(&P.cv, &P.mu);
                atomic_fetch_sub(&P.sleeping, 1);
                pthread_mutex_unlock(&P.mu);
                t0 = fm_now_ns();
            }
            cur = atomic_load(&P.next);
        }
        seen = FM_GEN(cur);
        fm_take(cur, 1);
    }
    return NULL;
}

static void fm_start(void) {
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0)
        cpus = CPU_COUNT(&set);
    int n = (int)(cpus > 1 ? cpus - 1 : 0);
    n = n > FM_MAX_WORKERS ? FM_MAX_WORKERS : n;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    for (int i = 0; i < n; i++) {
        pthread_t t;
        if (pthread_create(&t, &attr, fm_worker, NULL) != 0)
            break;
        P.n_workers++;
    }
    pthread_attr_destroy(&attr);
}

/* Publish a job (a GEMM `j` with its K-split partials `scratch`, or a gather `g`) of
 * `chunks` blocks to the workers, take blocks of it, and wait until every block is done.  The
 * caller holds fm_job_lock. */
static void fm_share(fm_job *j, const fm_gather_job *g, void *scratch, int chunks) {
    atomic_store(&P.done, 0);
    atomic_store(&P.job, j);
    atomic_store(&P.scratch, scratch);
    atomic_store(&P.gather, g);
    uint64_t cur = ((FM_GEN(atomic_load(&P.next)) + 1) << 40) | ((uint64_t)chunks << 32);
    atomic_store(&P.next, cur);   /* publishes the job */
    if (atomic_load(&P.sleeping) > 0) {
        pthread_mutex_lock(&P.mu);
        pthread_cond_broadcast(&P.cv);
        pthread_mutex_unlock(&P.mu);
    }
    fm_take(cur, 0);
    for (int spins = 0; atomic_load(&P.done) < chunks; spins++) {
        if (spins > 2000)
            sched_yield();   /* a worker holds a block: let it run if it shares our core */
    }
}

/* Whether the caller may share a job of `chunks` blocks with the workers: the pool started,
 * with workers, and no other thread's job running (then fm_job_lock is held on return). */
static int fm_may_share(int chunks, int use_workers) {
    if (chunks == 1 || !use_workers)
        return 0;
    pthread_once(&P_once, fm_start);
    return P.n_workers > 0 && pthread_mutex_trylock(&fm_job_lock) == 0;
}

/* The GEMM of `j`, cut into j->chunks column blocks (at most FM_MAX_CHUNKS), computed by the
 * caller and, when j->use_workers, the pool's workers.  One job at a time: a caller that
 * finds the pool busy (another thread's step) computes its blocks alone. */
void fm_gemm(fm_job *j) {
    int chunks = fm_clamp_chunks(j->chunks);
    atomic_fetch_add_explicit(&P.jobs, 1, memory_order_relaxed);
    int alone = !fm_may_share(chunks, j->use_workers);
    void *scratch = NULL;
    if (fm_ksplit(j, chunks))
        scratch = fm_scratch((size_t)(chunks - 1) * (size_t)j->m * (size_t)j->n
                             * (size_t)j->itemsize);
    if (alone) {
        for (int c = 0; c < chunks; c++)
            fm_block(j, c, chunks, scratch);
        if (scratch != NULL)
            fm_ksum(j, chunks, scratch);
        return;
    }
    atomic_fetch_add_explicit(&P.shared, 1, memory_order_relaxed);
    fm_share(j, NULL, scratch, chunks);
    pthread_mutex_unlock(&fm_job_lock);
    if (scratch != NULL)
        fm_ksum(j, chunks, scratch);
}

/* ------------------------------------------------------------------------ oneDNN's GEMMs
 * fastmlp.backends.onednn opens libdnnl at run time (no build-time link) and hands its two
 * row-major GEMMs here (set_dnnl); these adapters give them fm_gemm_fn's Fortran signature,
 * so the fused steps call oneDNN's fp32 GEMM and its bf16 one (A and B uint16_t bfloat16, C
 * float32) exactly as they call a BLAS provider's sgemm.  oneDNN may thread each call (TBB). */
typedef int (*fm_dnnl_fn)(char, char, int64_t, int64_t, int64_t, float, const void *, int64_t,
                          const void *, int64_t, float, float *, int64_t);
static fm_dnnl_fn fm_dnnl_sgemm_f, fm_dnnl_bf16_f;

static void fm_dnnl_call(fm_dnnl_fn f, const char *ta, const char *tb, const int *m,
                         const int *n, const int *k, const void *alpha, const void *A,
                         const int *lda, const void *B, const int *ldb, const void *beta,
                         void *C, const int *ldc) {
    /* column-major C (m, n) = op(A) op(B) is row-major Cᵀ (n, m) = op(B)ᵀ op(A)ᵀ */
    f(*tb, *ta, *n, *m, *k, *(const float *)alpha, B, *ldb, A, *lda, *(const float *)beta,
      (float *)C, *ldc);
}

static void fm_sgemm_dnnl(char *ta, char *tb, int *m, int *n, int *k, void *alpha,
                          const void *A, int *lda, const void *B, int *ldb, void *beta,
                          void *C, int *ldc) {
    fm_dnnl_call(fm_dnnl_sgemm_f, ta, tb, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc);
}

static void fm_gemm_bf16(char *ta, char *tb, int *m, int *n, int *k, void *alpha,
                         const void *A, int *lda, const void *B, int *ldb, void *beta,
                         void *C, int *ldc) {
    fm_dnnl_call(fm_dnnl_bf16_f, ta, tb, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc);
}

/* oneDNN's sgemm for the large GEMMs, the BLAS base's for the small ones (set_mixed): below
 * `fm_mixed_min_flops` (2·m·n·k) a call goes to the base, where oneDNN's per-call cost
 * showed (docs/benchmarks.md).  The choice depends on the shape alone, so a step's
 * arithmetic is still the same in every run. */
static fm_gemm_fn fm_mixed_base;
static double fm_mixed_min_flops;

static void fm_sgemm_mixed(char *ta, char *tb, int *m, int *n, int *k, void *alpha,
                           const void *A, int *lda, const void *B, int *ldb, void *beta,
                           void *C, int *ldc) {
    if (2.0 * *m * *n * *k < fm_mixed_min_flops)
        fm_mixed_base(ta, tb, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc);
    else
        fm_dnnl_call(fm_dnnl_sgemm_f, ta, tb, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc);
}

/* ------------------------------------------------------------------------ the module */

static PyObject *gemm_address(PyObject *self, PyObject *noargs) {
    (void)self; (void)noargs;
    return PyLong_FromVoidPtr((void *)fm_gemm);
}

static PyObject *workers(PyObject *self, PyObject *noargs) {
    (void)self; (void)noargs;
    pthread_once(&P_once, fm_start);
    return PyLong_FromLong(P.n_workers);
}

static PyObject *set_dnnl(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *s, *b;
    if (!PyArg_ParseTuple(args, "OO", &s, &b))
        return NULL;
    void *ps = PyLong_AsVoidPtr(s), *pb = PyLong_AsVoidPtr(b);
    if (PyErr_Occurred())
        return NULL;
    if (ps == NULL || pb == NULL) {
        PyErr_SetString(PyExc_ValueError, "set_dnnl: null function address");
        return NULL;
    }
    fm_dnnl_sgemm_f = (fm_dnnl_fn)ps;
    fm_dnnl_bf16_f = (fm_dnnl_fn)pb;
    return Py_BuildValue("(NN)", PyLong_FromVoidPtr((void *)fm_sgemm_dnnl),
                         PyLong_FromVoidPtr((void *)fm_gemm_bf16));
}

static PyObject *set_mixed(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *b;
    double min_flops;
    if (!PyArg_ParseTuple(args, "Od", &b, &min_flops))
        return NULL;
    void *pb = PyLong_AsVoidPtr(b);
    if (PyErr_Occurred())
        return NULL;
    if (pb == NULL || fm_dnnl_sgemm_f == NULL) {
        PyErr_SetString(PyExc_ValueError,
                        "set_mixed: null base sgemm address, or set_dnnl not called yet");
        return NULL;
    }
    fm_mixed_base = (fm_gemm_fn)pb;
    fm_mixed_min_flops = min_flops;
    return PyLong_FromVoidPtr((void *)fm_sgemm_mixed);
}

static PyObject *ksplit(PyObject *self, PyObject *args) {
    (void)self;
    fm_job j = {0};
    int chunks;
    if (!PyArg_ParseTuple(args, "iiii", &j.m, &j.n, &j.k, &chunks))
        return NULL;
    return PyBool_FromLong(fm_ksplit(&j, chunks));
}

/* gather(X, rows, out, mean, scale, chunks, use_workers): see methods[]. */
static int fm_buffer(PyObject *o, Py_buffer *v, int writable, int ndim, const char *name) {
    int flags = PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | (writable ? PyBUF_WRITABLE : 0);
    if (PyObject_GetBuffer(o, v, flags) != 0)
        return -1;
    if (v->ndim != ndim) {
        PyErr_Format(PyExc_ValueError, "gather: %s must be %d-D, got %d-D", name, ndim,
                     v->ndim);
        PyBuffer_Release(v);
        return -1;
    }
    return 0;
}

static PyObject *gather(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *xo, *ro, *oo, *mo, *so;
    int chunks, use_workers;
    if (!PyArg_ParseTuple(args, "OOOOOii", &xo, &ro, &oo, &mo, &so, &chunks, &use_workers))
        return NULL;
    Py_buffer X = {0}, R = {0}, O = {0}, M = {0}, S = {0};
    PyObject *res = NULL;
    int std = mo != Py_None;
    if ((mo == Py_None) != (so == Py_None)) {
        PyErr_SetString(PyExc_ValueError, "gather: give both mean and scale, or neither");
        return NULL;
    }
    if (fm_buffer(xo, &X, 0, 2, "X") || fm_buffer(ro, &R, 0, 1, "rows")
        || fm_buffer(oo, &O, 1, 2, "out") || (std && (fm_buffer(mo, &M, 0, 1, "mean")
                                                       || fm_buffer(so, &S, 0, 1, "scale"))))
        goto done;
    ptrdiff_t N = X.shape[0], D = X.shape[1], m = R.shape[0];
    int isz = (int)X.itemsize;
    char f = X.format[0];
    if (!((f == 'f' && isz == 4) || (f == 'd' && isz == 8) || (f == 'H' && isz == 2 && !std))
        || O.format[0] != f || O.itemsize != isz || R.itemsize != 8
        || (R.format[0] != 'l' && R.format[0] != 'q')
        || (std && (M.format[0] != f || S.format[0] != f || M.itemsize != isz
                    || S.itemsize != isz))) {
        PyErr_SetString(PyExc_TypeError, "gather: X, out (and mean, scale) must be float32 or "
                                         "float64 alike, or X and out uint16 bf16 bits (no "
                                         "mean, scale), rows int64");
        goto done;
    }
    if (O.shape[0] != m || O.shape[1] != D || (std && (M.shape[0] != D || S.shape[0] != D))) {
        PyErr_Format(PyExc_ValueError, "gather: out must be (%zd, %zd) and mean, scale (%zd,)",
                     m, D, D);
        goto done;
    }
    const int64_t *rows = R.buf;
    for (ptrdiff_t i = 0; i < m; i++)
        if (rows[i] < 0 || rows[i] >= N) {
            PyErr_Format(PyExc_IndexError, "gather: row %lld out of range [0, %zd)",
                         (long long)rows[i], N);
            goto done;
        }
    fm_gather_job g = {X.buf, rows, std ? M.buf : NULL, std ? S.buf : NULL, O.buf, D, m, isz};
    chunks = fm_clamp_chunks(chunks);
    if (m > 0 && D > 0) {
        Py_BEGIN_ALLOW_THREADS
        if (fm_may_share(chunks, use_workers)) {
            fm_share(NULL, &g, NULL, chunks);
            pthread_mutex_unlock(&fm_job_lock);
        } else {
            for (int c = 0; c < chunks; c++)
                fm_gather_block(&g, c, chunks);
        }
        Py_END_ALLOW_THREADS
    }
    res = Py_NewRef(oo);
done:
    if (X.obj) PyBuffer_Release(&X);
    if (R.obj) PyBuffer_Release(&R);
    if (O.obj) PyBuffer_Release(&O);
    if (M.obj) PyBuffer_Release(&M);
    if (S.obj) PyBuffer_Release(&S);
    return res;
}

static PyObject *stats(PyObject *self, PyObject *noargs) {
    (void)self; (void)noargs;
    return Py_BuildValue("{s:K,s:K,s:K}", "jobs", (unsigned long long)atomic_load(&P.jobs),
                         "shared", (unsigned long long)atomic_load(&P.shared),
                         "worker_blocks", (unsigned long long)atomic_load(&P.worker_blocks));
}

static PyObject *job_layout(PyObject *self, PyObject *noargs) {
    (void)self; (void)noargs;
    return Py_BuildValue(
        "{s:n,s:n,s:n,s:n,s:n,s:n,s:n,s:n,s:n,s:n,s:n,s:n,s:n,s:n,s:n,s:n,s:n,s:n,s:n,s:n}",
        "size", (Py_ssize_t)sizeof(fm_job), "gemm", (Py_ssize_t)offsetof(fm_job, gemm),
        "ta", (Py_ssize_t)offsetof(fm_job, ta), "tb", (Py_ssize_t)offsetof(fm_job, tb),
        "m", (Py_ssize_t)offsetof(fm_job, m), "n", (Py_ssize_t)offsetof(fm_job, n),
        "k", (Py_ssize_t)offsetof(fm_job, k), "lda", (Py_ssize_t)offsetof(fm_job, lda),
        "ldb", (Py_ssize_t)offsetof(fm_job, ldb), "ldc", (Py_ssize_t)offsetof(fm_job, ldc),
        "itemsize", (Py_ssize_t)offsetof(fm_job, itemsize),
        "chunks", (Py_ssize_t)offsetof(fm_job, chunks),
        "use_workers", (Py_ssize_t)offsetof(fm_job, use_workers),
        "opsize", (Py_ssize_t)offsetof(fm_job, opsize),
        "alpha", (Py_ssize_t)offsetof(fm_job, alpha), "A", (Py_ssize_t)offsetof(fm_job, A),
        "B", (Py_ssize_t)offsetof(fm_job, B), "beta", (Py_ssize_t)offsetof(fm_job, beta),
        "C", (Py_ssize_t)offsetof(fm_job, C), "post", (Py_ssize_t)offsetof(fm_job, post));
}

static PyObject *post_layout(PyObject *self, PyObject *noargs) {
    (void)self; (void)noargs;
    return Py_BuildValue(
        "{s:n,s:n,s:n,s:n,s:n,s:n,s:n}", "size", (Py_ssize_t)sizeof(fm_post),
        "kind", (Py_ssize_t)offsetof(fm_post, kind), "P", (Py_ssize_t)offsetof(fm_post, P),
        "s1", (Py_ssize_t)offsetof(fm_post, s1), "s2", (Py_ssize_t)offsetof(fm_post, s2),
        "lr", (Py_ssize_t)offsetof(fm_post, lr), "P16", (Py_ssize_t)offsetof(fm_post, P16));
}

static PyMethodDef methods[] = {
    {"gemm_address", gemm_address, METH_NOARGS,
     "Address of fm_gemm(fm_job*): a GEMM cut into column blocks on the pool's threads."},
    {"set_dnnl", set_dnnl, METH_VARARGS,
     "set_dnnl(sgemm, gemm_bf16bf16f32): oneDNN's row-major GEMMs (addresses); returns the "
     "addresses of their Fortran-signature adapters (fp32, bf16)."},
    {"set_mixed", set_mixed, METH_VARARGS,
     "set_mixed(base_sgemm, min_flops): the address of an sgemm that calls oneDNN's when "
     "2*m*n*k >= min_flops and the base's (a Fortran sgemm address) below."},
    {"workers", workers, METH_NOARGS, "The pool's worker threads (started on first use)."},
    {"ksplit", ksplit, METH_VARARGS,
     "ksplit(m, n, k, chunks): whether a full-precision GEMM (m, n, k) with no update is cut "
     "along k into `chunks` blocks (pool.c fm_ksplit)."},
    {"gather", gather, METH_VARARGS,
     "gather(X, rows, out, mean, scale, chunks, use_workers): out (m, D) = X[rows], or "
     "(X[rows] - mean) / scale (mean, scale (D,) or both None), as the kernels' gather_rows "
     "computes it (gather.h), cut into `chunks` blocks of columns, the k-ranges of a K-split "
     "forward product, on the pool's threads when use_workers (X, out, mean, scale float32 or "
     "float64 alike, or X and out uint16 bf16 bits with no mean, scale; C-contiguous; rows "
     "int64, checked in range); returns out."},
    {"stats", stats, METH_NOARGS,
     "Counters since import: GEMMs given to the pool ('jobs'), those shared with its workers "
     "('shared'), blocks its workers computed ('worker_blocks': of GEMMs and gathers)."},
    {"job_layout", job_layout, METH_NOARGS, "Byte offsets of fm_job's fields, and its size."},
    {"post_layout", post_layout, METH_NOARGS,
     "Byte offsets of fm_post's fields (lr then wd2, mu, b1, b2, c1, c2, eps as doubles, "
     "then P16), "
     "and its size."},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_pool",
                                    "fastmlp's own threads for the fused step's GEMMs.", -1,
                                    methods};

PyMODINIT_FUNC PyInit__pool(void) { return PyModule_Create(&module); }
