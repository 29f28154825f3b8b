# Design
# ------
# The raw (unchecked) kernels of the 'cython' backend, built as fastmlp.backends._cython;
# fastmlp/backends/contract.py is the contract (docs/kernels.md explains it) and
# fastmlp/backends/reference.py the oracle.  fastmlp/backends/checked.py validates dtype,
# contiguity, shapes and labels before calling in, so nothing here checks its input.
#
# * Each kernel is a pair: a public `def` with the contract's name and argument order, which
#   only picks the float32 or float64 specialisation and returns the caller's own output
#   array, and a private `cdef _kernel` written once over the fused type `floating`.
# * Inputs are `const floating[...]` memoryviews, so read-only arrays work; outputs are
#   written in place.  Nothing is allocated per call (the update kernels' `.reshape(-1)` makes
#   flat views, not copies).
# * All array work runs inside `with nogil:` so two Python threads can train at once.
# * Matrix products go to BLAS (scipy.linalg.cython_blas sgemm/dgemm).  A row-major (r, c)
#   array is a column-major (c, r) one, so C = A·B is computed as Cᵀ = Bᵀ·Aᵀ.  Everything
#   around the GEMM (bias, ReLU, column sums, softmax, optimiser updates) is one fused loop.
#   `_blas_gemm` (alpha/beta) is the kernels' BLAS call; the fused step (train_step.pxi) calls
#   the GEMM provider it was built with (fastmlp.backends.blas).
# * Batch normalisation (training mode) is three passes shared with the fused step:
#   `_bn_stats` (the column statistics), `_bn_act` (ẑ, then f(γ·ẑ + β)) and `_bn_backward`
#   (the sums dβ, dγ with the activation's derivative, then the gradient w.r.t. the product),
#   step_loops.h's loops, whose per-column double accumulators are on the stack.
# * Loops over many independent elements use `prange` (static schedule) at or above a size
#   threshold, serially below it (`use_threads_if`).  The default thresholds are high: after
#   a parallel region libgomp's idle workers spin for a while and take cores from the
#   OpenBLAS threads of the next GEMM, which cost more than threads saved at MLP sizes.
#   `parallel_thresholds()` reads and sets them (tests set 0 to cover the threaded path).
# * The serial optimiser updates are C loops in updates.h, compiled for AVX-512, AVX2 and the
#   baseline ISA with run-time selection (the build has no -march=native).
# * Built without -ffast-math: the softmax relies on IEEE inf/NaN rules and on the max shift.
"""Cython kernels of fastmlp (raw, unchecked); use fastmlp.get_backend('cython')."""

name = "cython"

from cython.parallel cimport prange
from libc.math cimport exp, expf, fabs, log, log1p, pow, sqrt, sqrtf, NAN
from libc.stdint cimport int64_t, uint16_t, uint64_t
from scipy.linalg.cython_blas cimport dgemm, sgemm

import numpy as np

cdef extern from "updates.h" nogil:
    # serial, vectorised loops (AVX2 clone where the CPU has it); see updates.h
    void sgd_plain_f32(float* W, const float* dW, Py_ssize_t n, float lr, float wd2)
    void sgd_plain_f64(double* W, const double* dW, Py_ssize_t n, double lr, double wd2)
    void sgd_momentum_f32(float* W, const float* dW, float* v, Py_ssize_t n, float lr,
                          float wd2, float mu, int nesterov)
    void sgd_momentum_f64(double* W, const double* dW, double* v, Py_ssize_t n, double lr,
                          double wd2, double mu, int nesterov)
    void adam_f32(float* W, const float* dW, float* m, float* v, Py_ssize_t n, float lr,
                  float b1, float b2, float ob1, float ob2, float c1, float c2, float eps,
                  float wd2)
    void adam_f64(double* W, const double* dW, double* m, double* v, Py_ssize_t n, double lr,
                  double b1, double b2, double ob1, double ob2, double c1, double c2,
                  double eps, double wd2)

ctypedef fused floating:
    float
    double

cdef enum:
    COL_BLOCK = 64     # columns summed per sweep over the rows in db (a stack buffer)

# Sizes at and above which loops run on OpenMP threads; see parallel_thresholds().
cdef Py_ssize_t _par_elems = 1 << 22   # optimiser updates: elements
cdef Py_ssize_t _par_xent = 1 << 19    # softmax: N*C

_F64 = np.dtype(np.float64)
_U16 = np.dtype(np.uint16)
# activation codes (contract.ACTIVATIONS, step_loops.h)
_ACT = {"identity": 0, "relu": 1, "tanh": 2, "logistic": 3}


# ---------------------------------------------------------------------------------------
# Small helpers
# ---------------------------------------------------------------------------------------

cdef inline floating _exp(floating x) noexcept nogil:
    if floating is float:
        return expf(x)
    else:
        return exp(x)


cdef inline floating _sqrt(floating x) noexcept nogil:
    if floating is float:
        return sqrtf(x)
    else:
        return sqrt(x)


cdef void _blas_gemm(char ta, char tb, int m, int n, int k, floating alpha,
                const floating* A, int lda, const floating* B, int ldb, floating beta,
                floating* C, int ldc) noexcept nogil:
    """Column-major C (m, n) = alpha·op(A) (m, k) · op(B) (k, n) + beta·C: BLAS gemm.

    Callers pass leading dimensions of at least 1.  An empty product (k == 0) is written
    here (beta·C) rather than trusting every BLAS to do it.  The GEMM of the separate
    kernels (SciPy's BLAS); the fused TrainStep calls its provider's (train_step.pxi).
    """
    cdef Py_ssize_t i, j
    if m == 0 or n == 0:
        return
    if k == 0:
        for j in range(n):
            for i in range(m):
                C[j * ldc + i] = beta * C[j * ldc + i] if beta != 0 else 0
        return
    if floating is float:
        sgemm(&ta, &tb, &m, &n, &k, &alpha, <float*>A, &lda, <float*>B, &ldb, &beta, C, &ldc)
    else:
        dgemm(&ta, &tb, &m, &n, &k, &alpha, <double*>A, &lda, <double*>B, &ldb, &beta, C, &ldc)


cdef extern from "bf16.h" nogil:
    # float32 -> bfloat16 bits, round to nearest even (AVX-512/AVX2 clones); see bf16.h
    void to_bf16_f32(uint16_t* out, const float* x, Py_ssize_t n)


cdef extern from "dropout.h" nogil:
    # inverted dropout's counter-based mask (contract.py, "dropout masks"); see dropout.h
    ctypedef struct fm_drop_f32:
        uint64_t stream, thr
        float s, q
    ctypedef struct fm_drop_f64:
        uint64_t stream, thr
        double s, q
    uint64_t fm_dropout_stream(uint64_t seed, uint64_t step, uint64_t layer)
    void dropout_f32(float* A, Py_ssize_t N, Py_ssize_t H, const fm_drop_f32* d)
    void dropout_f64(double* A, Py_ssize_t N, Py_ssize_t H, const fm_drop_f64* d)


cdef struct _Drop:
    # one layer's dropout at one step: the mask's stream and threshold, and p (> 0)
    uint64_t stream, thr
    double p


cdef inline fm_drop_f32 _drop_f32(const _Drop* d) noexcept nogil:
    cdef fm_drop_f32 r
    r.stream, r.thr, r.s, r.q = d.stream, d.thr, <float>(1.0 / (1.0 - d.p)), <float>(1.0 - d.p)
    return r


cdef inline fm_drop_f64 _drop_f64(const _Drop* d) noexcept nogil:
    cdef fm_drop_f64 r
    r.stream, r.thr, r.s, r.q = d.stream, d.thr, 1.0 / (1.0 - d.p), 1.0 - d.p
    return r


cdef extern from "step_loops.h" nogil:
    # the passes around the GEMMs (AVX2 clone where the CPU has it); see step_loops.h
    void bias_act_f32(float* out, const float* b, Py_ssize_t N, Py_ssize_t H, int act)
    void bias_act_f64(double* out, const double* b, Py_ssize_t N, Py_ssize_t H, int act)
    void act_backward_f32(float* D, const float* A, Py_ssize_t N, Py_ssize_t H, int act)
    void act_backward_f64(double* D, const double* A, Py_ssize_t N, Py_ssize_t H, int act)
    void mask_colsum_f32(float* D, const float* A, Py_ssize_t N, Py_ssize_t H, int act,
                         double* acc, float* out, const fm_drop_f32* d)
    void mask_colsum_f64(double* D, const double* A, Py_ssize_t N, Py_ssize_t H, int act,
                         double* acc, double* out, const fm_drop_f64* d)
    void bias_act_drop_f32(float* out, const float* b, Py_ssize_t N, Py_ssize_t H, int act,
                           const fm_drop_f32* d)
    void bias_act_drop_f64(double* out, const double* b, Py_ssize_t N, Py_ssize_t H, int act,
                           const fm_drop_f64* d)
    void bias_act_bf16(float* out, const float* b, Py_ssize_t N, Py_ssize_t H, int act,
                       uint16_t* out16, const fm_drop_f32* d)
    void mask_colsum_bf16(float* D, const float* A, Py_ssize_t N, Py_ssize_t H, int act,
                          double* acc, float* out, uint16_t* D16, const fm_drop_f32* d)
    # batch normalisation's passes (see step_loops.h)
    void bn_stats_f32(const float* Z, Py_ssize_t N, Py_ssize_t H, float* mean, float* var)
    void bn_stats_f64(const double* Z, Py_ssize_t N, Py_ssize_t H, double* mean, double* var)
    void bn_act_f32(float* Z, float* out, Py_ssize_t N, Py_ssize_t H, const float* mean,
                    const float* var, float eps, const float* gamma, const float* b, int act,
                    const fm_drop_f32* d)
    void bn_act_f64(double* Z, double* out, Py_ssize_t N, Py_ssize_t H, const double* mean,
                    const double* var, double eps, const double* gamma, const double* b,
                    int act, const fm_drop_f64* d)
    void bn_act_bf16(float* Z, float* out, Py_ssize_t N, Py_ssize_t H, const float* mean,
                     const float* var, float eps, const float* gamma, const float* b, int act,
                     uint16_t* out16, const fm_drop_f32* d)
    void mask_colsum_bn_f32(float* D, const float* A, const float* Zh, Py_ssize_t N,
                            Py_ssize_t H, int act, float* dbeta, float* dgamma,
                            const fm_drop_f32* d)
    void mask_colsum_bn_f64(double* D, const double* A, const double* Zh, Py_ssize_t N,
                            Py_ssize_t H, int act, double* dbeta, double* dgamma,
                            const fm_drop_f64* d)
    void bn_backward_f32(float* D, const float* Zh, Py_ssize_t N, Py_ssize_t H,
                         const float* dbeta, const float* dgamma, const float* gamma,
                         const float* var, float eps)
    void bn_backward_f64(double* D, const double* Zh, Py_ssize_t N, Py_ssize_t H,
                         const double* dbeta, const double* dgamma, const double* gamma,
                         const double* var, double eps)
    void bn_backward_bf16(float* D, const float* Zh, Py_ssize_t N, Py_ssize_t H,
                          const float* dbeta, const float* dgamma, const float* gamma,
                          const float* var, float eps, uint16_t* D16)
    enum:
        ACT_IDENTITY "FASTMLP_IDENTITY"


cdef inline void _bias_act(floating* out, const floating* b, Py_ssize_t N, Py_ssize_t H,
                           int act) noexcept nogil:
    """out (N, H) = f(out + b) per row, f the activation of code act."""
    if floating is float:
        bias_act_f32(out, b, N, H, act)
    else:
        bias_act_f64(out, b, N, H, act)


cdef inline void _bias_act_drop(floating* out, const floating* b, Py_ssize_t N,
                                Py_ssize_t H, int act, const _Drop* d) noexcept nogil:
    """_bias_act, then (d not NULL) each row through d's dropout while it is in L1."""
    cdef fm_drop_f32 d32
    cdef fm_drop_f64 d64
    if d == NULL:
        _bias_act(out, b, N, H, act)
    elif floating is float:
        d32 = _drop_f32(d)
        bias_act_drop_f32(out, b, N, H, act, &d32)
    else:
        d64 = _drop_f64(d)
        bias_act_drop_f64(out, b, N, H, act, &d64)


cdef inline void _mask_colsum(floating* D, const floating* A, Py_ssize_t N, Py_ssize_t H,
                              int act, double* acc, floating* out,
                              const _Drop* d) noexcept nogil:
    """out (H,) = column sums of D (N, H) (in double); first D through d's dropout (d not
    NULL; A is then the dropped-out output), then D *= f'(z) from A = f(z)."""
    cdef fm_drop_f32 d32
    cdef fm_drop_f64 d64
    if floating is float:
        if d != NULL:
            d32 = _drop_f32(d)
        mask_colsum_f32(D, A, N, H, act, acc, out, &d32 if d != NULL else NULL)
    else:
        if d != NULL:
            d64 = _drop_f64(d)
        mask_colsum_f64(D, A, N, H, act, acc, out, &d64 if d != NULL else NULL)


# Batch normalisation's three passes, shared by the kernels below and the fused step; the
# statistics, sums and coefficients are step_loops.h's (per-column, on the stack).

cdef inline void _bn_stats(const floating* Z, Py_ssize_t N, Py_ssize_t H, floating* mean,
                           floating* var) noexcept nogil:
    """mean, var (H,) = the column means and biased variances of Z (N >= 1, H) (in double)."""
    if floating is float:
        bn_stats_f32(Z, N, H, mean, var)
    else:
        bn_stats_f64(Z, N, H, mean, var)


cdef inline void _bn_act(floating* Z, floating* out, Py_ssize_t N, Py_ssize_t H,
                         const floating* mean, const floating* var, double eps,
                         const floating* gamma, const floating* b, int act, const _Drop* d,
                         uint16_t* out16) noexcept nogil:
    """Z (N, H) = ẑ = (Z - mean)/√(var + eps) in place, out (N, H) = f(γ·ẑ + b), each row then
    through d's dropout (d not NULL) and, out16 not NULL (float only), written as bfloat16."""
    cdef fm_drop_f32 d32
    cdef fm_drop_f64 d64
    if floating is float:
        if d != NULL:
            d32 = _drop_f32(d)
        if out16 != NULL:
            bn_act_bf16(Z, out, N, H, mean, var, <float>eps, gamma, b, act, out16,
                        &d32 if d != NULL else NULL)
        else:
            bn_act_f32(Z, out, N, H, mean, var, <float>eps, gamma, b, act,
                       &d32 if d != NULL else NULL)
    else:
        if d != NULL:
            d64 = _drop_f64(d)
        bn_act_f64(Z, out, N, H, mean, var, eps, gamma, b, act, &d64 if d != NULL else NULL)


cdef inline void _bn_backward(floating* D, const floating* A, const floating* Zh, Py_ssize_t N,
                              Py_ssize_t H, int act, const _Drop* d, const floating* gamma,
                              const floating* var, double eps, floating* dbeta,
                              floating* dgamma, uint16_t* D16) noexcept nogil:
    """The backward of a batch-normalised layer's output, D (N, H) the gradient w.r.t. it:
    D through d's dropout (d not NULL; A the dropped-out output, NULL for the identity) and
    f'(z), while dbeta = Σ_rows D and dgamma = Σ_rows D·ẑ (Zh (N, H) = ẑ; in double); then
    D = γ/√(var + eps)·(D - dbeta/N - ẑ·dgamma/N), the gradient w.r.t. the product, in place
    (D16 not NULL, float only: also written as bfloat16).  Two passes over D."""
    cdef fm_drop_f32 d32
    cdef fm_drop_f64 d64
    if floating is float:
        if d != NULL:
            d32 = _drop_f32(d)
        mask_colsum_bn_f32(D, A, Zh, N, H, act, dbeta, dgamma, &d32 if d != NULL else NULL)
        if D16 != NULL:
            bn_backward_bf16(D, Zh, N, H, dbeta, dgamma, gamma, var, <float>eps, D16)
        else:
            bn_backward_f32(D, Zh, N, H, dbeta, dgamma, gamma, var, <float>eps)
    else:
        if d != NULL:
            d64 = _drop_f64(d)
        mask_colsum_bn_f64(D, A, Zh, N, H, act, dbeta, dgamma, &d64 if d != NULL else NULL)
        bn_backward_f64(D, Zh, N, H, dbeta, dgamma, gamma, var, eps)


cdef inline void _bn_running(floating* rmean, floating* rvar, const floating* mean,
                             const floating* var, Py_ssize_t H, Py_ssize_t n,
                             double momentum) noexcept nogil:
    """rmean, rvar (H,) moved toward a batch of n rows' mean and var (H,) with PyTorch's
    momentum, the variance unbiased (var·n/(n - 1)); n = 1 changes nothing.  In the arrays'
    dtype, in the reference's order."""
    cdef Py_ssize_t j
    cdef floating mo = <floating>momentum, keep, up
    if n < 2:
        return
    keep, up = 1 - mo, mo * <floating>(<double>n / <double>(n - 1))
    for j in range(H):
        rmean[j] = rmean[j] * keep + mo * mean[j]
        rvar[j] = rvar[j] * keep + up * var[j]


cdef extern from "sparse_loops.h" nogil:
    # the sparse first layer and the mini-batch gather; see sparse_loops.h
    int csr_forward_f32(const float* data, const int64_t* indices, const int64_t* indptr,
                        Py_ssize_t N, const float* W, Py_ssize_t D, Py_ssize_t H, float* out)
    int csr_forward_f64(const double* data, const int64_t* indices, const int64_t* indptr,
                        Py_ssize_t N, const double* W, Py_ssize_t D, Py_ssize_t H, double* out)
    void csr_weight_grad_f32(const float* dY, const float* data, const int64_t* indices,
                             const int64_t* indptr, Py_ssize_t N, Py_ssize_t D, Py_ssize_t H,
                             float* dW)
    void csr_weight_grad_f64(const double* dY, const double* data, const int64_t* indices,
                             const int64_t* indptr, Py_ssize_t N, Py_ssize_t D, Py_ssize_t H,
                             double* dW)
    int64_t csr_gather_f32(const float* data, const int64_t* indices, const int64_t* indptr,
                           const int64_t* rows, Py_ssize_t m, float* out_data,
                           int64_t* out_indices, int64_t* out_indptr, int64_t cap)
    int64_t csr_gather_f64(const double* data, const int64_t* indices, const int64_t* indptr,
                           const int64_t* rows, Py_ssize_t m, double* out_data,
                           int64_t* out_indices, int64_t* out_indptr, int64_t cap)


cdef extern from "gather.h" nogil:
    # a dense mini-batch gathered (and standardised) in one pass; see gather.h
    void gather_rows_f32(const float* X, Py_ssize_t D, const int64_t* rows, Py_ssize_t m,
                         const float* mean, const float* scale, float* out)
    void gather_rows_f64(const double* X, Py_ssize_t D, const int64_t* rows, Py_ssize_t m,
                         const double* mean, const double* scale, double* out)
    void gather_rows_u16(const uint16_t* X, Py_ssize_t D, const int64_t* rows, Py_ssize_t m,
                         const uint16_t* mean, const uint16_t* scale, uint16_t* out)


cdef inline int _csr_forward(const floating* data, const int64_t* indices,
                             const int64_t* indptr, Py_ssize_t N, const floating* W,
                             Py_ssize_t D, Py_ssize_t H, floating* out) noexcept nogil:
    """out (N, H) = X·W for the CSR X (N, D); -1 at a bad index or offset."""
    if floating is float:
        return csr_forward_f32(data, indices, indptr, N, W, D, H, out)
    else:
        return csr_forward_f64(data, indices, indptr, N, W, D, H, out)


cdef inline void _csr_weight_grad(const floating* dY, const floating* data,
                                  const int64_t* indices, const int64_t* indptr, Py_ssize_t N,
                                  Py_ssize_t D, Py_ssize_t H, floating* dW) noexcept nogil:
    """dW (D, H) = Xᵀ·dY for the CSR X (N, D)."""
    if floating is float:
        csr_weight_grad_f32(dY, data, indices, indptr, N, D, H, dW)
    else:
        csr_weight_grad_f64(dY, data, indices, indptr, N, D, H, dW)


cdef void _column_sums(const floating[:, ::1] A,  # IN  (N, H)
                       floating[::1] out,         # OUT (H,)
                       ) noexcept nogil:
    """out[j] = sum_i A[i, j], accumulated in double, COL_BLOCK columns per pass over the rows."""
    cdef double acc[COL_BLOCK]
    cdef Py_ssize_t i, j, nb, j0 = 0
    cdef Py_ssize_t N = A.shape[0], H = A.shape[1]
    while j0 < H:
        nb = min(<Py_ssize_t>COL_BLOCK, H - j0)
        for j in range(nb):
            acc[j] = 0
        for i in range(N):
            for j in range(nb):
                acc[j] += A[i, j0 + j]
        for j in range(nb):
            out[j0 + j] = <floating>acc[j]
        j0 += nb


# ---------------------------------------------------------------------------------------
# Linear layer and ReLU
# ---------------------------------------------------------------------------------------

cdef void _linear_forward(const floating[:, ::1] X,  # IN  (N, D)
                          const floating[:, ::1] W,  # IN  (D, H)
                          const floating[::1] b,     # IN  (H,)
                          floating[:, ::1] out,      # OUT (N, H)
                          int act) noexcept:
    # X (N, D), W (D, H), b (H,) -> out (N, H) = f(X·W + b), f the activation of code act
    cdef int N = X.shape[0], D = X.shape[1], H = W.shape[1]   # BLAS takes 32-bit ints
    cdef floating one = 1, zero = 0
    with nogil:
        # outᵀ (H, N) = Wᵀ (H, D) · Xᵀ (D, N), all column-major views of the row-major arrays
        _blas_gemm(c'N', c'N', H, N, D, one, &W[0, 0], max(1, H), &X[0, 0], max(1, D), zero,
              &out[0, 0], max(1, H))
        if N and H:
            _bias_act(&out[0, 0], &b[0], N, H, act)   # one pass: bias and activation


cdef void _linear_backward(const floating[:, ::1] dY,  # IN  (N, H)
                           const floating[:, ::1] X,   # IN  (N, D)
                           const floating[:, ::1] W,   # IN  (D, H)
                           floating[:, ::1] dW,        # OUT (D, H)
                           floating[::1] db,           # OUT (H,)
                           floating[:, ::1] dX,        # OUT (N, D), or None to skip
                           ) noexcept:
    # dY (N, H), X (N, D), W (D, H) -> dW = Xᵀ·dY (D, H), db = Σ_rows dY (H,), dX = dY·Wᵀ (N, D)
    cdef int N = dY.shape[0], H = dY.shape[1], D = X.shape[1]
    cdef bint want_dx = dX is not None
    cdef floating one = 1, zero = 0
    with nogil:
        # dWᵀ (H, D) = dYᵀ (H, N) · X (N, D)
        _blas_gemm(c'N', c'T', H, D, N, one, &dY[0, 0], max(1, H), &X[0, 0], max(1, D), zero,
              &dW[0, 0], max(1, H))
        _column_sums(dY, db)
        if want_dx:
            # dXᵀ (D, N) = W (D, H) · dYᵀ (H, N)
            _blas_gemm(c'T', c'N', D, N, H, one, &W[0, 0], max(1, H), &dY[0, 0], max(1, H), zero,
                  &dX[0, 0], max(1, D))


cdef int _csr_linear_forward(const floating[::1] data,    # IN  (nnz,)
                             const int64_t[::1] indices,   # IN  (nnz,)
                             const int64_t[::1] indptr,    # IN  (N+1,)
                             const floating[:, ::1] W,     # IN  (D, H)
                             const floating[::1] b,        # IN  (H,)
                             floating[:, ::1] out,         # OUT (N, H)
                             int act) noexcept:
    # X (N, D) as CSR, W (D, H), b (H,) -> out (N, H) = f(X·W + b); -1 at a bad index
    cdef Py_ssize_t N = out.shape[0], D = W.shape[0], H = W.shape[1]
    cdef int status = 0
    if N == 0 or H == 0:
        return 0
    with nogil:
        status = _csr_forward(&data[0] if data.shape[0] else NULL,
                              &indices[0] if indices.shape[0] else NULL, &indptr[0], N,
                              &W[0, 0] if D else NULL, D, H, &out[0, 0])
        if status == 0:
            _bias_act(&out[0, 0], &b[0], N, H, act)
    return status


cdef void _csr_linear_backward(const floating[:, ::1] dY,    # IN  (N, H)
                               const floating[::1] data,     # IN  (nnz,)
                               const int64_t[::1] indices,   # IN  (nnz,)
                               const int64_t[::1] indptr,    # IN  (N+1,)
                               floating[:, ::1] dW,          # OUT (D, H)
                               floating[::1] db,             # OUT (H,)
                               ) noexcept:
    # dY (N, H), X (N, D) as CSR -> dW = Xᵀ·dY (D, H), db = Σ_rows dY (H,)
    cdef Py_ssize_t N = dY.shape[0], D = dW.shape[0], H = dW.shape[1]
    if D == 0 or H == 0:
        return
    with nogil:
        _csr_weight_grad(&dY[0, 0] if N else NULL, &data[0] if data.shape[0] else NULL,
                         &indices[0] if indices.shape[0] else NULL, &indptr[0], N, D, H,
                         &dW[0, 0])
        _column_sums(dY, db)


cdef void _activation_backward(floating[:, ::1] dH,      # IN/OUT (N, H)
                               const floating[:, ::1] H,  # IN     (N, H), the activation's output
                               int act) noexcept:
    # dH, H (N, H): dH *= f'(z) in place, from H = f(z) (step_loops.h)
    cdef Py_ssize_t N = dH.shape[0], M = dH.shape[1]
    if N == 0 or M == 0:
        return
    with nogil:
        if floating is float:
            act_backward_f32(&dH[0, 0], &H[0, 0], N, M, act)
        else:
            act_backward_f64(&dH[0, 0], &H[0, 0], N, M, act)


# ---------------------------------------------------------------------------------------
# Batch normalisation (training mode): the passes of step_loops.h
# ---------------------------------------------------------------------------------------

cdef void _batch_norm_forward(floating[:, ::1] Z,         # IN/OUT (N, H): X·W, then ẑ
                              const floating[::1] gamma,  # IN     (H,)
                              const floating[::1] beta,   # IN     (H,)
                              floating[:, ::1] out,       # OUT    (N, H)
                              floating[::1] mean,         # OUT    (H,)
                              floating[::1] var,          # OUT    (H,)
                              double eps, int act) noexcept:
    # Z (N, H) -> mean, var (H,) its column statistics, Z = ẑ, out = f(γ·ẑ + β) (N, H)
    cdef Py_ssize_t N = Z.shape[0], H = Z.shape[1]
    if N == 0 or H == 0:
        return
    with nogil:
        _bn_stats(&Z[0, 0], N, H, &mean[0], &var[0])
        _bn_act(&Z[0, 0], &out[0, 0], N, H, &mean[0], &var[0], eps, &gamma[0], &beta[0], act,
                NULL, NULL)


cdef void _batch_norm_backward(floating[:, ::1] dY,         # IN/OUT (N, H)
                               const floating[:, ::1] Zhat,  # IN     (N, H)
                               const floating[::1] gamma,    # IN     (H,)
                               const floating[::1] var,      # IN     (H,)
                               floating[::1] dgamma,         # OUT    (H,)
                               floating[::1] dbeta,          # OUT    (H,)
                               double eps) noexcept:
    # dY (N, H) w.r.t. γ·ẑ + β -> dβ, dγ (H,), dY = the gradient w.r.t. the product Z
    cdef Py_ssize_t N = dY.shape[0], H = dY.shape[1]
    if N == 0 or H == 0:
        return
    with nogil:
        _bn_backward(&dY[0, 0], <const floating*>NULL, &Zhat[0, 0], N, H, ACT_IDENTITY, NULL,
                     &gamma[0], &var[0], eps, &dbeta[0], &dgamma[0], NULL)


cdef void _batch_norm_running(const floating[::1] mean,  # IN     (H,)
                              const floating[::1] var,   # IN     (H,)
                              Py_ssize_t n,              # IN     the batch's rows
                              floating[::1] rmean,       # IN/OUT (H,)
                              floating[::1] rvar,        # IN/OUT (H,)
                              double momentum) noexcept:
    # mean, var (H,) of a batch of n rows -> rmean, rvar (H,) moved toward them
    cdef Py_ssize_t H = mean.shape[0]
    if H:
        _bn_running(&rmean[0], &rvar[0], &mean[0], &var[0], H, n, momentum)


# ---------------------------------------------------------------------------------------
# Output losses: one pass per row, the loss accumulated in double
# ---------------------------------------------------------------------------------------

cdef enum:   # output codes, contract.OUTPUTS
    OUT_SOFTMAX = 0
    OUT_LOGISTIC = 1
    OUT_IDENTITY = 2
    OUT_EXP = 3


cdef inline double _xent_row(const floating* z, floating* dz, Py_ssize_t C, Py_ssize_t k,
                             floating scale, double smooth) noexcept nogil:
    """One row of C logits: dz = scale·(softmax(z) − t), t = (1 − ε)·onehot(k) + ε/C with
    ε = smooth; returns −(1 − ε) log softmax(z)[k] − (ε/C) Σ_j log softmax(z)_j."""
    cdef Py_ssize_t j
    cdef floating zmax = z[0], e, inv, off, on
    cdef double s = 0   # sum of exp in double: ≥ 1 since the max term is exp(0)
    cdef double zsum = 0
    for j in range(1, C):
        if z[j] > zmax:
            zmax = z[j]
    for j in range(C):
        e = _exp(z[j] - zmax)   # in [0, 1]: no overflow whatever the logits
        dz[j] = e
        s += e
    inv = <floating>(1.0 / s)
    e = dz[k]
    if smooth == 0:
        for j in range(C):
            dz[j] = dz[j] * inv * scale
        dz[k] = (e * inv - 1) * scale
        return log(s) - (<double>z[k] - <double>zmax)
    off, on = <floating>(smooth / C), <floating>(1 - smooth)
    for j in range(C):
        zsum += <double>z[j] - <double>zmax
        dz[j] = (dz[j] * inv - off) * scale
    dz[k] = (e * inv - off - on) * scale
    return log(s) - (1 - smooth) * (<double>z[k] - <double>zmax) - smooth / C * zsum


cdef inline double _logistic_row(const floating* z, const floating* y, floating* dz,
                                 Py_ssize_t K, floating scale) noexcept nogil:
    """K logits against 0/1 targets: dz = scale·(logistic(z) − y); returns Σ softplus(z) − y z
    (max(z, 0) − y z + log1p(exp(−|z|)), finite for any finite z)."""
    cdef Py_ssize_t j
    cdef double s = 0, zd
    for j in range(K):
        zd = z[j]
        s += (zd if zd > 0 else 0.0) - <double>y[j] * zd + log1p(exp(-fabs(zd)))
        dz[j] = (1 / (1 + _exp(-z[j])) - y[j]) * scale
    return s


cdef inline double _squared_row(const floating* z, const floating* y, floating* dz,
                                Py_ssize_t K, floating scale) noexcept nogil:
    """K outputs against targets: dz = scale·(z − y); returns ½ Σ (z − y)²."""
    cdef Py_ssize_t j
    cdef double s = 0, r
    for j in range(K):
        r = <double>z[j] - <double>y[j]
        s += r * r
        dz[j] = (z[j] - y[j]) * scale
    return 0.5 * s


cdef inline double _poisson_row(const floating* z, const floating* y, floating* dz,
                                Py_ssize_t K, floating scale) noexcept nogil:
    """K log-means against counts y >= 0: dz = scale·(exp(z) − y); returns
    Σ exp(z) − y z + y log y − y (half the Poisson deviance)."""
    cdef Py_ssize_t j
    cdef double s = 0, zd, yd
    for j in range(K):
        zd, yd = z[j], y[j]
        s += exp(zd) - yd * zd - yd + (yd * log(yd) if yd > 0 else 0.0)
        dz[j] = (_exp(z[j]) - y[j]) * scale
    return s


cdef inline double _loss_row(int out, const floating* Z, const int64_t* labels,
                             const floating* Y, floating* dZ, Py_ssize_t i, Py_ssize_t C,
                             floating scale, double smooth) noexcept nogil:
    """Row i of output `out`'s loss: labels (softmax, label smoothing `smooth`) or values Y
    (the others)."""
    if out == OUT_SOFTMAX:
        return _xent_row(Z + i * C, dZ + i * C, C, labels[i], scale, smooth)
    if out == OUT_LOGISTIC:
        return _logistic_row(Z + i * C, Y + i * C, dZ + i * C, C, scale)
    if out == OUT_IDENTITY:
        return _squared_row(Z + i * C, Y + i * C, dZ + i * C, C, scale)
    return _poisson_row(Z + i * C, Y + i * C, dZ + i * C, C, scale)


cdef double _output_loss(int out, const floating* Z, const int64_t* labels,
                         const floating* Y, floating* dZ, const floating* sw, Py_ssize_t N,
                         Py_ssize_t C, bint may_thread, double smooth) noexcept nogil:
    """The (weighted) mean over N rows of output `out`'s loss on Z (N, C), its gradient in
    dZ (N, C): labels (N,) for softmax, values Y (N, C) otherwise, sw (N,) or NULL.  Rows run
    on OpenMP threads when `may_thread` and N·C reaches the threshold."""
    cdef Py_ssize_t i
    cdef double total = N, w, loss = 0
    if sw != NULL:
        total = 0
        for i in range(N):
            total += sw[i]
    if may_thread and N * C >= _par_xent:
        for i in prange(N, schedule='static'):
            w = sw[i] if sw != NULL else 1.0
            loss += w * _loss_row(out, Z, labels, Y, dZ, i, C, <floating>(w / total), smooth)
    else:
        for i in range(N):
            w = sw[i] if sw != NULL else 1.0
            loss += w * _loss_row(out, Z, labels, Y, dZ, i, C, <floating>(w / total), smooth)
    return loss / total


cdef double _loss_grad(int out,
                       const floating[:, ::1] Z,   # IN  (N, C)
                       const int64_t[::1] y,       # IN  (N,) labels in [0, C) (softmax), or None
                       const floating[:, ::1] Y,   # IN  (N, C) targets (the others), or None
                       floating[:, ::1] dZ,        # OUT (N, C)
                       const floating[::1] sw,     # IN  (N,) sample weights, or None
                       double smooth=0,            # IN  label smoothing (softmax)
                       ) noexcept:
    # Z (N, C), y (N,) or Y (N, C), sw (N,) -> dZ (N, C); returns the (weighted) mean loss
    cdef Py_ssize_t N = Z.shape[0], C = Z.shape[1]
    cdef const int64_t* labels = &y[0] if y is not None and N else NULL
    cdef const floating* values = &Y[0, 0] if Y is not None and N else NULL
    cdef const floating* w = &sw[0] if sw is not None and N else NULL
    cdef double loss
    if N == 0 or C == 0:
        return NAN   # mean over no rows, as the reference's 0/0 (checked.py rejects it)
    with nogil:
        loss = _output_loss(out, &Z[0, 0], labels, values, &dZ[0, 0], w, N, C, True, smooth)
    return loss


# ---------------------------------------------------------------------------------------
# Optimiser updates (flat views of same-shape arrays)
# ---------------------------------------------------------------------------------------

cdef void _sgd_update(floating[::1] W,          # IN/OUT (n,)
                      const floating[::1] dW,   # IN     (n,)
                      double lr, double weight_decay,
                      floating[::1] vel,        # IN/OUT (n,), or None for plain SGD
                      double momentum, bint nesterov) noexcept:
    # W, dW, vel (n,): g = dW + 2·wd·W; W -= lr·g, or v = μv + g; W -= lr·v (lr·(g + μv) Nesterov)
    cdef Py_ssize_t n = W.shape[0], i
    cdef floating lr_ = lr, mu = momentum, g
    cdef floating wd2 = 2 * <floating>weight_decay
    cdef bint plain = vel is None
    if n == 0:
        return
    if n < _par_elems:
        with nogil:
            if floating is float:
                if plain:
                    sgd_plain_f32(&W[0], &dW[0], n, lr_, wd2)
                else:
                    sgd_momentum_f32(&W[0], &dW[0], &vel[0], n, lr_, wd2, mu, nesterov)
            else:
                if plain:
                    sgd_plain_f64(&W[0], &dW[0], n, lr_, wd2)
                else:
                    sgd_momentum_f64(&W[0], &dW[0], &vel[0], n, lr_, wd2, mu, nesterov)
        return
    with nogil:
        if plain:
            for i in prange(n, schedule='static', use_threads_if=n >= _par_elems):
                W[i] -= lr_ * (dW[i] + wd2 * W[i])
        elif nesterov:
            for i in prange(n, schedule='static', use_threads_if=n >= _par_elems):
                g = dW[i] + wd2 * W[i]
                vel[i] = mu * vel[i] + g
                W[i] -= lr_ * (g + mu * vel[i])
        else:
            for i in prange(n, schedule='static', use_threads_if=n >= _par_elems):
                g = dW[i] + wd2 * W[i]
                vel[i] = mu * vel[i] + g
                W[i] -= lr_ * vel[i]


cdef void _adam_update(floating[::1] W,         # IN/OUT (n,)
                       const floating[::1] dW,  # IN     (n,)
                       floating[::1] m,         # IN/OUT (n,) first moment
                       floating[::1] v,         # IN/OUT (n,) second moment
                       double step, double lr, double beta1, double beta2, double eps,
                       double weight_decay) noexcept:
    # W, dW, m, v (n,): bias-corrected Adam step number `step`, as reference.adam_update
    cdef Py_ssize_t n = W.shape[0], i
    cdef floating lr_ = lr, b1 = beta1, b2 = beta2, eps_ = eps, g
    cdef floating ob1 = <floating>(1 - beta1), ob2 = <floating>(1 - beta2)
    cdef floating c1 = <floating>(1.0 - pow(beta1, step))   # bias corrections in double,
    cdef floating c2 = <floating>(1.0 - pow(beta2, step))   # then cast once
    cdef floating wd2 = 2 * <floating>weight_decay
    if n == 0:
        return
    if n < _par_elems:
        with nogil:
            if floating is float:
                adam_f32(&W[0], &dW[0], &m[0], &v[0], n, lr_, b1, b2, ob1, ob2, c1, c2, eps_,
                         wd2)
            else:
                adam_f64(&W[0], &dW[0], &m[0], &v[0], n, lr_, b1, b2, ob1, ob2, c1, c2, eps_,
                         wd2)
        return
    with nogil:
        for i in prange(n, schedule='static'):
            g = dW[i] + wd2 * W[i]
            m[i] = b1 * m[i] + ob1 * g
            v[i] = b2 * v[i] + ob2 * g * g
            W[i] -= lr_ * (m[i] / c1) / (_sqrt(v[i] / c2) + eps_)


cdef object _flat(a):
    """A 1-D view of an array the kernel writes; reshape would silently copy a non-contiguous one."""
    if not a.flags.c_contiguous:
        raise ValueError("optimiser state arrays must be C-contiguous")
    return a.reshape(-1)


def parallel_thresholds(updates=None, softmax=None):
    """Sizes at and above which kernels use OpenMP threads; returns the (updates, softmax) pair
    in force before the call, and sets either one that is given.

    `updates` counts the elements of an optimiser update, `softmax` counts N*C.  0 always uses
    threads, a huge value never does.  Process-wide; not part of the kernel contract.
    """
    global _par_elems, _par_xent
    old = (_par_elems, _par_xent)
    if updates is not None:
        _par_elems = max(0, int(updates))
    if softmax is not None:
        _par_xent = max(0, int(softmax))
    return old


# ---------------------------------------------------------------------------------------
# Public raw kernels: same names and argument order as docs/kernels.md
# ---------------------------------------------------------------------------------------

def linear_forward(X, W, b, out, activation="identity"):
    """out = f(X @ W + b), f the activation.  X (N, D), W (D, H), b (H,), out (N, H).  Returns out."""
    if X.dtype == _F64:
        _linear_forward[double](X, W, b, out, _ACT[activation])
    else:
        _linear_forward[float](X, W, b, out, _ACT[activation])
    return out


def linear_backward(dY, X, W, dW, db, dX=None):
    """dW = X.T @ dY, db = dY.sum(0), dX = dY @ W.T if dX is given.

    dY (N, H), X (N, D), W (D, H), dW (D, H), db (H,), dX (N, D) or None.  Returns dW.
    """
    if dY.dtype == _F64:
        _linear_backward[double](dY, X, W, dW, db, dX)
    else:
        _linear_backward[float](dY, X, W, dW, db, dX)
    return dW


def csr_linear_forward(data, indices, indptr, W, b, out, activation="identity"):
    """out = f(X @ W + b) for a CSR X (N, D): data (nnz,), indices (nnz,) int64, indptr (N+1,)
    int64; W (D, H), b (H,), out (N, H).  Returns out; ValueError for an index out of range."""
    if W.dtype == _F64:
        status = _csr_linear_forward[double](data, indices, indptr, W, b, out, _ACT[activation])
    else:
        status = _csr_linear_forward[float](data, indices, indptr, W, b, out, _ACT[activation])
    if status:
        raise ValueError("csr_linear_forward: a column index is outside [0, D) or indptr "
                         "decreases")
    return out


def csr_linear_backward(dY, data, indices, indptr, dW, db):
    """dW = X.T @ dY, db = dY.sum(0) for a CSR X (N, D).  Returns dW."""
    if dW.dtype == _F64:
        _csr_linear_backward[double](dY, data, indices, indptr, dW, db)
    else:
        _csr_linear_backward[float](dY, data, indices, indptr, dW, db)
    return dW


def csr_gather_rows(data, indices, indptr, rows, out_data, out_indices, out_indptr):
    """Rows `rows` (m,) int64 of a CSR X into the CSR buffer out_*; returns the entries
    written, or -1 (nothing written past the buffer) when they do not fit."""
    cdef const int64_t[::1] ind = indices, ptr = indptr, r = rows
    cdef int64_t[::1] oind = out_indices, optr = out_indptr
    cdef const float[::1] df
    cdef const double[::1] dd
    cdef float[::1] of
    cdef double[::1] od
    cdef Py_ssize_t m = r.shape[0]
    cdef const int64_t* ind_p = &ind[0] if ind.shape[0] else NULL
    cdef int64_t* oind_p = &oind[0] if oind.shape[0] else NULL
    cdef int64_t n, cap = min(out_data.shape[0], oind.shape[0])
    if m == 0:
        optr[0] = 0
        return 0
    if out_data.dtype == _F64:
        dd, od = data, out_data
        with nogil:
            n = csr_gather_f64(&dd[0] if dd.shape[0] else NULL, ind_p, &ptr[0], &r[0], m,
                               &od[0], oind_p, &optr[0], cap)
    else:
        df, of = data, out_data
        with nogil:
            n = csr_gather_f32(&df[0] if df.shape[0] else NULL, ind_p, &ptr[0], &r[0], m,
                               &of[0], oind_p, &optr[0], cap)
    return n


ctypedef fused _gathered:   # gather_rows' element types: floats, and bf16 bits
    float
    double
    uint16_t


cdef void _gather_rows(const _gathered[:, ::1] X, const int64_t[::1] rows,
                       _gathered[:, ::1] out, const _gathered[::1] mean,
                       const _gathered[::1] scale):
    """gather_rows for one dtype; mean and scale both None (always for bits) or both (D,)."""
    cdef Py_ssize_t m = rows.shape[0], d = out.shape[1]
    cdef const _gathered* mp = NULL
    cdef const _gathered* sp = NULL
    if m == 0 or d == 0:
        return
    if mean is not None:
        mp, sp = &mean[0], &scale[0]
    with nogil:
        if _gathered is float:
            gather_rows_f32(&X[0, 0], d, &rows[0], m, mp, sp, &out[0, 0])
        elif _gathered is double:
            gather_rows_f64(&X[0, 0], d, &rows[0], m, mp, sp, &out[0, 0])
        else:
            gather_rows_u16(&X[0, 0], d, &rows[0], m, mp, sp, &out[0, 0])


def gather_rows(X, rows, out, mean=None, scale=None):
    """out (m, D) = X[rows], or (X[rows] - mean) / scale with mean, scale (D,): rows `rows`
    (m,) int64 of X (N, D) in one pass (gather.h); X uint16 (bf16 bits): a copy.  Returns
    out."""
    if out.dtype == _U16:
        _gather_rows[uint16_t](X, rows, out, mean, scale)
    elif out.dtype == _F64:
        _gather_rows[double](X, rows, out, mean, scale)
    else:
        _gather_rows[float](X, rows, out, mean, scale)
    return out


def activation_backward(dH, H, activation="relu"):
    """dH *= f'(z) in place, from the layer's output H = f(z).  dH, H (N, H).  Returns dH."""
    if dH.dtype == _F64:
        _activation_backward[double](dH, H, _ACT[activation])
    else:
        _activation_backward[float](dH, H, _ACT[activation])
    return dH


def softmax_xent_grad(Z, y, dZ, sample_weight=None, label_smoothing=0.0):
    """Mean (or weighted-mean) cross-entropy of softmax(Z) against int64 labels y, smoothed
    by label_smoothing ε (target (1 − ε)·onehot + ε/C); dZ its gradient w.r.t. Z.

    Z (N, C), y (N,) int64, dZ (N, C) written in place, sample_weight (N,) of Z's dtype or
    None.  Returns the loss as a Python float.
    """
    if Z.dtype == _F64:
        return _loss_grad[double](OUT_SOFTMAX, Z, y, None, dZ, sample_weight, label_smoothing)
    return _loss_grad[float](OUT_SOFTMAX, Z, y, None, dZ, sample_weight, label_smoothing)


def logistic_xent_grad(Z, Y, dZ, sample_weight=None):
    """Binary cross-entropy of logistic(Z) against 0/1 targets Y, summed over outputs, (weighted)
    mean over rows; dZ its gradient.  Z, Y, dZ (N, K), sample_weight (N,) or None."""
    if Z.dtype == _F64:
        return _loss_grad[double](OUT_LOGISTIC, Z, None, Y, dZ, sample_weight)
    return _loss_grad[float](OUT_LOGISTIC, Z, None, Y, dZ, sample_weight)


def squared_error_grad(Z, Y, dZ, sample_weight=None):
    """Half the squared error, summed over outputs, (weighted) mean over rows; dZ its gradient.
    Z, Y, dZ (N, K), sample_weight (N,) or None."""
    if Z.dtype == _F64:
        return _loss_grad[double](OUT_IDENTITY, Z, None, Y, dZ, sample_weight)
    return _loss_grad[float](OUT_IDENTITY, Z, None, Y, dZ, sample_weight)


def poisson_grad(Z, Y, dZ, sample_weight=None):
    """Half the Poisson deviance of exp(Z) against Y >= 0, summed over outputs, (weighted) mean
    over rows; dZ its gradient.  Z, Y, dZ (N, K), sample_weight (N,) or None."""
    if Z.dtype == _F64:
        return _loss_grad[double](OUT_EXP, Z, None, Y, dZ, sample_weight)
    return _loss_grad[float](OUT_EXP, Z, None, Y, dZ, sample_weight)


def sgd_update(W, dW, lr, weight_decay=0.0, velocity=None, momentum=0.0, nesterov=False):
    """In-place SGD step (plain, momentum or Nesterov).  W, dW, velocity same shape.  Returns W."""
    vel = None if velocity is None else _flat(velocity)
    if W.dtype == _F64:
        _sgd_update[double](_flat(W), dW.reshape(-1), lr, weight_decay, vel, momentum, nesterov)
    else:
        _sgd_update[float](_flat(W), dW.reshape(-1), lr, weight_decay, vel, momentum, nesterov)
    return W


def adam_update(W, dW, m, v, step, lr, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0):
    """In-place bias-corrected Adam step number `step` (>= 1).  W, dW, m, v same shape.  Returns W."""
    if W.dtype == _F64:
        _adam_update[double](_flat(W), dW.reshape(-1), _flat(m), _flat(v),
                             step, lr, beta1, beta2, eps, weight_decay)
    else:
        _adam_update[float](_flat(W), dW.reshape(-1), _flat(m), _flat(v),
                            step, lr, beta1, beta2, eps, weight_decay)
    return W


def to_bf16(x, out):
    """out = x rounded to bfloat16 (uint16 bits; round to nearest even, NaN stays NaN).
    x float32, out uint16, one shape.  Returns out."""
    cdef const float[::1] xv = x.reshape(-1)
    cdef uint16_t[::1] ov = _flat(out)
    cdef Py_ssize_t n = xv.shape[0]
    if n:
        with nogil:
            to_bf16_f32(&ov[0], &xv[0], n)
    return out


def dropout(A, p, seed, step, layer):
    """Inverted dropout in place: A / (1 - p) where the counter-based mask of (seed, step,
    layer) keeps an entry, 0 where it drops it (dropout.h).  A (N, H) C-contiguous; p in
    [0, 1).  Returns A."""
    cdef float[:, ::1] Af
    cdef double[:, ::1] Ad
    cdef _Drop d
    cdef fm_drop_f32 d32
    cdef fm_drop_f64 d64
    cdef Py_ssize_t N = A.shape[0], H = A.shape[1]
    if not p > 0 or N == 0 or H == 0:
        return A
    d.stream = fm_dropout_stream(seed, step, layer)
    d.thr, d.p = _contract.dropout_threshold(p), p
    if A.dtype == _F64:
        Ad, d64 = A, _drop_f64(&d)
        with nogil:
            dropout_f64(&Ad[0, 0], N, H, &d64)
    else:
        Af, d32 = A, _drop_f32(&d)
        with nogil:
            dropout_f32(&Af[0, 0], N, H, &d32)
    return A


def batch_norm_forward(Z, gamma, beta, out, mean, var, eps=1e-05, activation="identity"):
    """Batch normalisation in training mode: mean, var = Z's column means and biased
    variances (in double), Z = ẑ = (Z - mean)/√(var + eps) in place, out = f(γ·ẑ + β).
    Z, out (N, H), N >= 1; gamma, beta, mean, var (H,).  Returns out."""
    if Z.dtype == _F64:
        _batch_norm_forward[double](Z, gamma, beta, out, mean, var, eps, _ACT[activation])
    else:
        _batch_norm_forward[float](Z, gamma, beta, out, mean, var, eps, _ACT[activation])
    return out


def batch_norm_backward(dY, Zhat, gamma, var, dgamma, dbeta, eps=1e-05):
    """dβ = Σ_rows dY, dγ = Σ_rows dY·ẑ (in double); dY = γ/√(var + eps)·(dY - dβ/N -
    ẑ·dγ/N) in place.  dY, Zhat (N, H); gamma, var, dgamma, dbeta (H,).  Returns dY."""
    if dY.dtype == _F64:
        _batch_norm_backward[double](dY, Zhat, gamma, var, dgamma, dbeta, eps)
    else:
        _batch_norm_backward[float](dY, Zhat, gamma, var, dgamma, dbeta, eps)
    return dY


def batch_norm_running(mean, var, n, running_mean, running_var, momentum=0.1):
    """running = (1 - momentum)·running + momentum·batch, the variance unbiased (var·n/(n-1));
    n = 1 changes nothing.  All (H,).  Returns running_mean."""
    if mean.dtype == _F64:
        _batch_norm_running[double](mean, var, n, running_mean, running_var, momentum)
    else:
        _batch_norm_running[float](mean, var, n, running_mean, running_var, momentum)
    return running_mean


# ---------------------------------------------------------------------------------------
# The whole training step in one call (TrainStep)
# ---------------------------------------------------------------------------------------

include "train_step.pxi"
