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
#   `_gemm` (alpha/beta) is the one BLAS call, shared with the fused step (train_step.pxi).
# * Loops over many independent elements use `prange` (static schedule) at or above a size
#   threshold, serially below it (`use_threads_if`).  The default thresholds are high: after
#   a parallel region libgomp's idle workers spin for a while and take cores from the
#   OpenBLAS threads of the next GEMM, which cost more than threads saved at MLP sizes.
#   `parallel_thresholds()` reads and sets them (tests set 0 to cover the threaded path).
# * The serial optimiser updates are C loops in updates.h, compiled for AVX2 and for the
#   baseline ISA with run-time selection (the build has no -march=native).
# * Built without -ffast-math: the softmax relies on IEEE inf/NaN rules and on the max shift.
"""Cython kernels of fastmlp (raw, unchecked); use fastmlp.get_backend('cython')."""

name = "cython"

from cython.parallel cimport prange
from libc.math cimport exp, expf, log, pow, sqrt, sqrtf, NAN
from libc.stdint cimport int64_t
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


cdef void _gemm(char ta, char tb, int m, int n, int k, floating alpha,
                const floating* A, int lda, const floating* B, int ldb, floating beta,
                floating* C, int ldc) noexcept nogil:
    """Column-major C (m, n) = alpha·op(A) (m, k) · op(B) (k, n) + beta·C: BLAS gemm.

    Callers pass leading dimensions of at least 1.  An empty product (k == 0) is written
    here (beta·C) rather than trusting every BLAS to do it.  The one GEMM of the Cython
    backend: the kernels and the fused TrainStep both call it.
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
                          bint relu) noexcept:
    # X (N, D), W (D, H), b (H,) -> out (N, H) = X·W + b, then max(., 0) if relu
    cdef int N = X.shape[0], D = X.shape[1], H = W.shape[1]   # BLAS takes 32-bit ints
    cdef Py_ssize_t i, j
    cdef floating t, one = 1, zero = 0
    with nogil:
        # outᵀ (H, N) = Wᵀ (H, D) · Xᵀ (D, N), all column-major views of the row-major arrays
        _gemm(c'N', c'N', H, N, D, one, &W[0, 0], max(1, H), &X[0, 0], max(1, D), zero,
              &out[0, 0], max(1, H))
        if relu:   # one pass: bias and ReLU together
            for i in range(N):
                for j in range(H):
                    t = out[i, j] + b[j]
                    out[i, j] = 0 if t < 0 else t   # keeps NaN, like np.maximum
        else:
            for i in range(N):
                for j in range(H):
                    out[i, j] += b[j]


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
        _gemm(c'N', c'T', H, D, N, one, &dY[0, 0], max(1, H), &X[0, 0], max(1, D), zero,
              &dW[0, 0], max(1, H))
        _column_sums(dY, db)
        if want_dx:
            # dXᵀ (D, N) = W (D, H) · dYᵀ (H, N)
            _gemm(c'T', c'N', D, N, H, one, &W[0, 0], max(1, H), &dY[0, 0], max(1, H), zero,
                  &dX[0, 0], max(1, D))


cdef void _relu_backward(floating[:, ::1] dH,      # IN/OUT (N, H)
                         const floating[:, ::1] H,  # IN     (N, H), the ReLU output
                         ) noexcept:
    # dH, H (N, H): dH[H <= 0] = 0 in place
    cdef Py_ssize_t i, j
    with nogil:
        for i in range(dH.shape[0]):
            for j in range(dH.shape[1]):
                dH[i, j] = 0 if H[i, j] <= 0 else dH[i, j]   # a select, so it vectorises


# ---------------------------------------------------------------------------------------
# Softmax cross-entropy
# ---------------------------------------------------------------------------------------

cdef inline double _xent_row(const floating* z, floating* dz, Py_ssize_t C, Py_ssize_t k,
                             floating scale) noexcept nogil:
    """One row of C logits: dz = scale·(softmax(z) − onehot(k)); returns −log softmax(z)[k]."""
    cdef Py_ssize_t j
    cdef floating zmax = z[0], e, inv
    cdef double s = 0   # sum of exp in double: ≥ 1 since the max term is exp(0)
    for j in range(1, C):
        if z[j] > zmax:
            zmax = z[j]
    for j in range(C):
        e = _exp(z[j] - zmax)   # in [0, 1]: no overflow whatever the logits
        dz[j] = e
        s += e
    inv = <floating>(1.0 / s)
    e = dz[k]
    for j in range(C):
        dz[j] = dz[j] * inv * scale
    dz[k] = (e * inv - 1) * scale
    return log(s) - (<double>z[k] - <double>zmax)


cdef double _softmax_xent_grad(const floating[:, ::1] Z,  # IN  (N, C) logits
                               const int64_t[::1] y,      # IN  (N,) labels in [0, C)
                               floating[:, ::1] dZ,       # OUT (N, C)
                               const floating[::1] sw,    # IN  (N,) sample weights, or None
                               ) noexcept:
    # Z (N, C), y (N,), sw (N,) -> dZ (N, C); returns the (weighted) mean NLL in double
    cdef Py_ssize_t N = Z.shape[0], C = Z.shape[1], i
    cdef bint weighted = sw is not None
    cdef double total = N, w, loss = 0
    if N == 0 or C == 0:
        return NAN   # mean over no rows, as the reference's 0/0 (_checked.py rejects it)
    with nogil:
        if weighted:
            total = 0
            for i in range(N):
                total += sw[i]
        for i in prange(N, schedule='static', use_threads_if=N * C >= _par_xent):
            w = sw[i] if weighted else 1.0
            loss += w * _xent_row(&Z[i, 0], &dZ[i, 0], C, y[i], <floating>(w / total))
    return loss / total


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

def linear_forward(X, W, b, out, relu=False):
    """out = X @ W + b, then ReLU if `relu`.  X (N, D), W (D, H), b (H,), out (N, H).  Returns out."""
    if X.dtype == _F64:
        _linear_forward[double](X, W, b, out, relu)
    else:
        _linear_forward[float](X, W, b, out, relu)
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


def relu_backward(dH, H):
    """dH[H <= 0] = 0 in place, H being the ReLU output.  dH, H (N, H).  Returns dH."""
    if dH.dtype == _F64:
        _relu_backward[double](dH, H)
    else:
        _relu_backward[float](dH, H)
    return dH


def softmax_xent_grad(Z, y, dZ, sample_weight=None):
    """Mean (or weighted-mean) NLL of softmax(Z) at int64 labels y; dZ its gradient w.r.t. Z.

    Z (N, C), y (N,) int64, dZ (N, C) written in place, sample_weight (N,) of Z's dtype or
    None.  Returns the loss as a Python float.
    """
    if Z.dtype == _F64:
        return _softmax_xent_grad[double](Z, y, dZ, sample_weight)
    return _softmax_xent_grad[float](Z, y, dZ, sample_weight)


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


# ---------------------------------------------------------------------------------------
# The whole training step in one call (TrainStep)
# ---------------------------------------------------------------------------------------

include "train_step.pxi"
