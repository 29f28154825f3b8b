"""Numba backend: the raw kernels of docs/kernels.md, compiled with Numba.

Design
------
* The names and argument order of contract.KERNELS.  These kernels trust their input: the
  validation lives in `checked.CheckedBackend`, and the Model calls them directly once it has
  validated its workspaces.  Outputs are caller-allocated and written in place; no kernel
  allocates.
* Every kernel is `@njit` with the options in `config` (cache, nogil, an explicit
  fast-math flag set without nnan/ninf/reassoc, NumPy's division-by-zero semantics) and is
  dtype-generic: float32 and float64 each get their own compiled specialisation on first use.
  Python-float hyper-parameters are cast to the arrays' dtype inside the kernel
  (`W.dtype.type(lr)`), so float32 arrays are updated with float32 arithmetic.  Sums that
  feed the loss (log-sum-exp, the NLL, the sample weights) are accumulated in float64.
* Matrix products go to BLAS through `np.dot(a, b, out)` inside the compiled code (Numba
  passes the transposed views `X.T` / `W.T`, which are F-ordered, as BLAS transpose flags;
  no copy; zero-size operands give zeros).  The work around them is fused into one loop:
  bias + ReLU, the bias gradient, the ReLU mask, and the softmax / cross-entropy per row
  (max, exp and its sum written into dZ, then scale and subtract the one-hot).
* `linear_forward`, `linear_backward`, `relu_backward` and `softmax_xent_grad` are the
  compiled functions themselves (`dX=None` / `sample_weight=None` are resolved at compile
  time: one specialisation each).  `sgd_update` / `adam_update` are small Python wrappers
  that pick the serial kernel or, at or above the parallel threshold, a `prange` kernel
  (`config.parallel_min_size`: the thread policy lives in config.py).
* Batch normalisation (`batch_norm_forward` / `_backward` / `_running`) is written as the
  three passes the fused step makes (`_bn_stats`: the column sums; `_bn_act`: the
  normalisation with the bias + activation pass's work; `_bn_backward`: the delta w.r.t. the
  product), csrc's names.  The raw kernels run them on strips of `_COL_BLOCK` columns with
  their float64 sums and per-column coefficients on the stack (`_stack`, as kernels.pyx's
  stack arrays); the step runs them on whole rows with its own scratch buffers.
* `to_bf16` rounds float32 to bfloat16 bits (uint16) with integer operations on the uint32
  view of x, branch-free so LLVM vectorises it: csrc/bf16.h's rounding exactly
  (reference.to_bf16 is the oracle).  The bf16 TrainStep (train_step.py) reuses `_to_bf16`.
"""
import math
import sys

import numba
import numpy as np
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

from ..contract import ACTIVATIONS, GOLDEN, MIX1, MIX2, dropout_threshold
from . import config
from .config import JIT_OPTIONS

_jit = njit(**JIT_OPTIONS)
_jit_parallel = njit(parallel=True, **JIT_OPTIONS)
_jit_inline = njit(inline="always", **JIT_OPTIONS)  # inlined into its callers' IR


# --------------------------------------------------------------------------- linear layers

# activation codes: contract.ACTIVATIONS ("identity", "relu", "tanh", "logistic")
ACT_CODES = {name: code for code, name in enumerate(ACTIVATIONS)}
_RELU, _TANH, _LOGISTIC = ACT_CODES["relu"], ACT_CODES["tanh"], ACT_CODES["logistic"]


# float32 exp, tanh and logistic that LLVM vectorises, the same algorithm as step_loops.h
# (Cephes' expf, inputs below -87 taken as -87, inf past the overflow point, 2^n from the
# exponent bits; Cephes' tanhf): about 2 ulp; NaN stays NaN, +-inf give the limits exactly.
# float64 uses np.exp / np.tanh.

@_jit_inline
def _expf(x):
    # x float32
    hi = np.float32(88.72283905)
    big = x > hi   # exp overflows: inf, like libm
    x = np.float32(-87.0) if x < np.float32(-87.0) else x
    x = hi if x > hi else x
    fx = np.floor(x * np.float32(1.44269504088896341) + np.float32(0.5))
    r = x - fx * np.float32(0.693359375)
    r = r - fx * np.float32(-2.12194440e-4)
    y = ((((np.float32(1.9875691500e-4) * r + np.float32(1.3981999507e-3)) * r
           + np.float32(8.3334519073e-3)) * r + np.float32(4.1665795894e-2)) * r
         + np.float32(1.6666665459e-1)) * r + np.float32(5.0000001201e-1)
    y = y * (r * r) + r + np.float32(1.0)
    y = y * np.int32((np.int32(fx) + np.int32(126)) << 23).view(np.float32) * np.float32(2.0)
    return np.float32(np.inf) if big else y


@_jit_inline
def _tanhf(x):
    # x float32
    a = -x if x < np.float32(0) else x
    s = x * x
    p = ((((np.float32(-5.70498872745e-3) * s + np.float32(2.06390887954e-2)) * s
           - np.float32(5.37397155531e-2)) * s + np.float32(1.33314422036e-1)) * s
         - np.float32(3.33332819422e-1)) * s * x + x
    q = np.float32(1.0) - np.float32(2.0) / (_expf(np.float32(2.0) * a) + np.float32(1.0))
    q = -q if x < np.float32(0) else q
    return p if a < np.float32(0.625) else q


@_jit
def _bias_act(out, b, act):
    """out = f(out + b) per row, f the activation of code `act`: identity, relu (NaN passes
    through, as np.maximum), tanh, logistic 1 / (1 + exp(-v))."""
    # out (N,H) IN/OUT, b (H,) IN
    n, h = out.shape
    zero, one = out.dtype.type(0), out.dtype.type(1)
    if act == _RELU:
        for i in range(n):
            for j in range(h):
                v = out[i, j] + b[j]
                out[i, j] = zero if v < zero else v
    elif act == _TANH and out.itemsize == 4:   # float32
        for i in range(n):
            for j in range(h):
                out[i, j] = _tanhf(out[i, j] + b[j])
    elif act == _TANH:
        for i in range(n):
            for j in range(h):
                out[i, j] = np.tanh(out[i, j] + b[j])
    elif act == _LOGISTIC and out.itemsize == 4:
        for i in range(n):
            for j in range(h):
                out[i, j] = one / (one + _expf(-(out[i, j] + b[j])))
    elif act == _LOGISTIC:
        for i in range(n):
            for j in range(h):
                out[i, j] = one / (one + np.exp(-(out[i, j] + b[j])))
    else:
        for i in range(n):
            for j in range(h):
                out[i, j] += b[j]


@_jit
def _act_backward_row(d, a, act, q):
    """d *= f'(z), taken from the output f(z) = q·a (q = 1 - p after dropout, whose kept
    outputs are f(z) / q; 1 otherwise): relu 1[a > 0], tanh 1 - (qa)², logistic
    qa (1 - qa), identity 1."""
    # d (H,) IN/OUT, a (H,) IN, q of d's dtype
    zero, one = d.dtype.type(0), d.dtype.type(1)
    if act == _RELU:
        for j in range(d.shape[0]):
            d[j] = zero if a[j] <= zero else d[j]
    elif act == _TANH:
        for j in range(d.shape[0]):
            t = a[j] * q
            d[j] *= one - t * t
    elif act == _LOGISTIC:
        for j in range(d.shape[0]):
            t = a[j] * q
            d[j] *= t * (one - t)


@_jit
def _linear_forward(X, W, b, out, act):
    """out = f(X @ W + b), f the activation of code `act`."""
    # X (N,D) IN, W (D,H) IN, b (H,) IN, out (N,H) OUT
    np.dot(X, W, out)
    _bias_act(out, b, act)


@_jit
def _linear_backward(dY, X, W, dW, db, dX):
    """dW = X.T @ dY, db = column sums of dY, dX = dY @ W.T when dX is given."""
    # dY (N,H) IN, X (N,D) IN, W (D,H) IN, dW (D,H) OUT, db (H,) OUT, dX (N,D) OUT or None
    np.dot(X.T, dY, dW)
    _column_sums(dY, db)
    if dX is not None:
        np.dot(dY, W.T, dX)


@_jit
def _activation_backward(dH, H, act):
    """dH *= f'(z) in place, from the layer's output H = f(z)."""
    # dH (N,H) IN/OUT, H (N,H) IN
    one = dH.dtype.type(1)
    for i in range(dH.shape[0]):
        _act_backward_row(dH[i], H[i], act, one)


@_jit
def _csr_forward(data, indices, indptr, W, out):
    """out = X·W for the CSR X (rows indptr[i]..indptr[i+1] of data/indices); returns False
    (and stops) at a column index outside [0, D) or decreasing offsets -- which would read
    out of bounds -- True otherwise."""
    # data (nnz,), indices (nnz,) int64, indptr (N+1,) int64 IN, W (D,H) IN, out (N,H) OUT
    n, h = out.shape
    d = W.shape[0]
    zero = out.dtype.type(0)
    for i in range(n):
        row = out[i]
        for j in range(h):
            row[j] = zero
        lo, hi = indptr[i], indptr[i + 1]
        if hi < lo:
            return False
        for p in range(lo, hi):
            c = indices[p]
            if c < 0 or c >= d:
                return False
            v = data[p]
            w = W[c]
            for j in range(h):
                row[j] += v * w[j]
    return True


@_jit
def _csr_weight_grad(dY, data, indices, indptr, dW):
    """dW = Xᵀ·dY for the CSR X: each stored X[i, c] adds X[i, c]·dY[i] to row c of dW (the
    indices were checked by the forward pass on the same rows)."""
    # dY (N,H) IN, data/indices/indptr IN, dW (D,H) OUT
    n, h = dY.shape
    dW[:] = 0
    for i in range(n):
        g = dY[i]
        for p in range(indptr[i], indptr[i + 1]):
            v = data[p]
            w = dW[indices[p]]
            for j in range(h):
                w[j] += v * g[j]


@_jit
def _column_sums(dY, db):
    """db = column sums of dY."""
    # dY (N,H) IN, db (H,) OUT
    db[:] = 0
    for i in range(dY.shape[0]):
        for j in range(dY.shape[1]):
            db[j] += dY[i, j]


@_jit
def _csr_gather(data, indices, indptr, rows, out_data, out_indices, out_indptr):
    """Rows `rows` of a CSR X into the CSR buffer out_*; returns the entries written, or -1
    when the next row would not fit in out_data / out_indices (nothing is written past them)."""
    # data/indices/indptr IN, rows (m,) int64 IN, out_data/out_indices (cap,), out_indptr (m+1,)
    o = 0
    cap = min(out_data.shape[0], out_indices.shape[0])
    out_indptr[0] = 0
    for r in range(rows.shape[0]):
        i = rows[r]
        if o + indptr[i + 1] - indptr[i] > cap:
            return -1
        for p in range(indptr[i], indptr[i + 1]):
            out_data[o] = data[p]
            out_indices[o] = indices[p]
            o += 1
        out_indptr[r + 1] = o
    return o


@_jit
def _gather_rows(X, rows, out, mean, scale):
    """out[i] = X[rows[i]], or (X[rows[i]] - mean) / scale, for each of the m rows
    (csrc/gather.h)."""
    # X (N,D) IN, rows (m,) int64 IN (trusted), out (m,D) OUT, mean/scale (D,) IN or None
    d = X.shape[1]
    for i in range(rows.shape[0]):
        r = rows[i]
        if mean is None:
            for j in range(d):
                out[i, j] = X[r, j]
        else:
            for j in range(d):
                out[i, j] = (X[r, j] - mean[j]) / scale[j]


# The compiled kernels above return nothing: a jitted function that returns an array boxes it
# by calling back into Python, where a pending Ctrl-C surfaces as SystemError instead of
# KeyboardInterrupt.  These wrappers return the caller's buffer (and turn the activation's
# name into its code).

def linear_forward(X, W, b, out, activation="identity"):
    """out = f(X @ W + b), f the activation.  X (N,D), W (D,H), b (H,), out (N,H).  Returns out."""
    _linear_forward(X, W, b, out, ACT_CODES[activation])
    return out


def linear_backward(dY, X, W, dW, db, dX=None):
    """dW = X.T @ dY, db = column sums of dY, dX = dY @ W.T when dX is given.  Returns dW."""
    _linear_backward(dY, X, W, dW, db, dX)
    return dW


def activation_backward(dH, H, activation="relu"):
    """dH *= f'(z) in place, from the layer's output H = f(z).  dH, H (N,H).  Returns dH."""
    _activation_backward(dH, H, ACT_CODES[activation])
    return dH


def csr_linear_forward(data, indices, indptr, W, b, out, activation="identity"):
    """out = f(X @ W + b) for a CSR X (N, D): data (nnz,), indices (nnz,) int64, indptr (N+1,)
    int64; W (D,H), b (H,), out (N,H).  Returns out; ValueError for an index out of range."""
    if not _csr_forward(data, indices, indptr, W, out):
        raise ValueError("csr_linear_forward: a column index is outside [0, D) or indptr "
                         "decreases")
    _bias_act(out, b, ACT_CODES[activation])
    return out


def csr_linear_backward(dY, data, indices, indptr, dW, db):
    """dW = X.T @ dY, db = column sums of dY for a CSR X (N, D).  Returns dW."""
    _csr_weight_grad(dY, data, indices, indptr, dW)
    _column_sums(dY, db)
    return dW


def csr_gather_rows(data, indices, indptr, rows, out_data, out_indices, out_indptr):
    """Rows `rows` (m,) of a CSR X into the CSR buffer out_*; returns the entries written, or
    -1 (nothing written past the buffer) when they do not fit."""
    return int(_csr_gather(data, indices, indptr, rows, out_data, out_indices, out_indptr))


def gather_rows(X, rows, out, mean=None, scale=None):
    """out (m, D) = X[rows], or (X[rows] - mean) / scale with mean, scale (D,): rows `rows`
    (m,) int64 of X (N, D) in one pass; X uint16 (bf16 bits): a copy.  Returns out."""
    _gather_rows(X, rows, out, mean, scale)
    return out


# --------------------------------------------------------------------------- loss

@_jit_inline
def _total_weight(n, sample_weight):
    # the rows' total weight (float64): n, or the sum of sample_weight (N,)
    if sample_weight is None:
        return float(n)
    total = 0.0
    for i in range(n):
        total += sample_weight[i]
    return total


@_jit
def softmax_xent_grad(Z, y, dZ, sample_weight=None, label_smoothing=0.0):
    """Mean (or weighted-mean) cross-entropy of softmax(Z) against labels y, smoothed by
    label_smoothing ε (target (1 - ε)·onehot + ε/C; 0: the NLL), as a float; dZ = its
    gradient."""
    # Z (N,C) IN, y (N,) int64 IN, dZ (N,C) OUT, sample_weight (N,) IN or None
    n, c = Z.shape
    total = _total_weight(n, sample_weight)
    one = Z.dtype.type(1)
    eps = float(label_smoothing)
    off, on = Z.dtype.type(eps / c), Z.dtype.type(1.0 - eps)
    loss = 0.0
    for i in range(n):
        z = Z[i]
        g = dZ[i]
        m = z[0]
        for j in range(1, c):
            if z[j] > m:
                m = z[j]
        s = 0.0  # float64 sum of exp(z - max) >= 1
        for j in range(c):
            e = np.exp(z[j] - m)
            g[j] = e
            s += e
        k = y[i]
        w = 1.0 if sample_weight is None else float(sample_weight[i])
        inv_s = Z.dtype.type(1.0 / s)
        scale = Z.dtype.type(w / total)
        p_k = g[k] * inv_s
        if eps == 0.0:
            loss += w * (math.log(s) - (float(z[k]) - float(m)))
            for j in range(c):
                g[j] = g[j] * inv_s * scale
            g[k] = (p_k - one) * scale
        else:
            zsum = 0.0
            for j in range(c):
                zsum += float(z[j]) - float(m)
                g[j] = (g[j] * inv_s - off) * scale
            g[k] = (p_k - off - on) * scale
            loss += w * (math.log(s) - (1.0 - eps) * (float(z[k]) - float(m))
                         - eps / c * zsum)
    return loss / total


@_jit
def logistic_xent_grad(Z, Y, dZ, sample_weight=None):
    """Binary cross-entropy of logistic(Z) against Y, summed over outputs, (weighted-)mean
    over rows, as a float; dZ = w_i (logistic(Z) - Y) / Σw."""
    # Z (N,K) IN, Y (N,K) IN, dZ (N,K) OUT, sample_weight (N,) IN or None
    n, k = Z.shape
    total = _total_weight(n, sample_weight)
    one = Z.dtype.type(1)
    loss = 0.0
    for i in range(n):
        w = 1.0 if sample_weight is None else float(sample_weight[i])
        scale = Z.dtype.type(w / total)
        row = 0.0
        for j in range(k):
            z = Z[i, j]
            zd, yd = float(z), float(Y[i, j])
            row += max(zd, 0.0) - yd * zd + math.log1p(math.exp(-abs(zd)))  # softplus - y z
            dZ[i, j] = (one / (one + np.exp(-z)) - Y[i, j]) * scale
        loss += w * row
    return loss / total


@_jit
def squared_error_grad(Z, Y, dZ, sample_weight=None):
    """Half the squared error, summed over outputs, (weighted-)mean over rows, as a float;
    dZ = w_i (Z - Y) / Σw."""
    # Z (N,K) IN, Y (N,K) IN, dZ (N,K) OUT, sample_weight (N,) IN or None
    n, k = Z.shape
    total = _total_weight(n, sample_weight)
    loss = 0.0
    for i in range(n):
        w = 1.0 if sample_weight is None else float(sample_weight[i])
        scale = Z.dtype.type(w / total)
        row = 0.0
        for j in range(k):
            r = float(Z[i, j]) - float(Y[i, j])
            row += r * r
            dZ[i, j] = (Z[i, j] - Y[i, j]) * scale
        loss += w * 0.5 * row
    return loss / total


@_jit
def poisson_grad(Z, Y, dZ, sample_weight=None):
    """Half the Poisson deviance of exp(Z) against Y >= 0, summed over outputs, (weighted-)mean
    over rows, as a float; dZ = w_i (exp(Z) - Y) / Σw."""
    # Z (N,K) IN, Y (N,K) IN, dZ (N,K) OUT, sample_weight (N,) IN or None
    n, k = Z.shape
    total = _total_weight(n, sample_weight)
    loss = 0.0
    for i in range(n):
        w = 1.0 if sample_weight is None else float(sample_weight[i])
        scale = Z.dtype.type(w / total)
        row = 0.0
        for j in range(k):
            zd, yd = float(Z[i, j]), float(Y[i, j])
            row += math.exp(zd) - yd * zd - yd + (yd * math.log(yd) if yd > 0.0 else 0.0)
            dZ[i, j] = (np.exp(Z[i, j]) - Y[i, j]) * scale
        loss += w * row
    return loss / total


# --------------------------------------------------------------------------- optimizers
# Each update is written once, as a per-element step inlined into two loops: a serial driver
# that takes the parameter at any rank and flattens it, and a prange kernel (Numba's static
# schedule gives each thread one contiguous slice) that takes flat 1-D arrays from the Python
# wrapper.  The prange kernels keep to the plainest Numba: no reshape, tuple unpacking or
# Optional values inside them -- with Numba 0.68, `a, b, c, d = A.reshape(-1), ...` before a
# prange loop makes the parfor pass drop the loop (the arrays are left unchanged), and an
# Optional array inside a prange body took the wrong branch.

@_jit_inline
def _sgd_step(w, d, i, lr, wd2):
    # w, d (n,) flat; plain step on element i
    w[i] -= lr * (d[i] + wd2 * w[i])


@_jit_inline
def _sgd_momentum_step(w, d, v, i, lr, wd2, mu, nesterov):
    # w, d, v (n,) flat; heavy-ball or Nesterov step on element i
    g = d[i] + wd2 * w[i]
    vi = mu * v[i] + g
    v[i] = vi
    w[i] -= lr * (g + mu * vi) if nesterov else lr * vi


@_jit_inline
def _adam_step(w, d, m, v, i, lr, b1, b1c, b2, b2c, c1, c2, eps, wd2):
    # w, d, m, v (n,) flat; element i.  b1c = 1-beta1, b2c = 1-beta2, c = 1-beta**step
    g = d[i] + wd2 * w[i]
    mi = b1 * m[i] + b1c * g
    vi = b2 * v[i] + b2c * g * g
    m[i] = mi
    v[i] = vi
    w[i] -= lr * (mi / c1) / (np.sqrt(vi / c2) + eps)


@_jit
def _sgd_serial(W, dW, lr, weight_decay, velocity, momentum, nesterov):
    # W, dW, velocity (or None): same shape, any rank, C-contiguous
    t = W.dtype.type
    lr_ = t(lr)
    wd2 = t(2.0 * weight_decay)
    mu = t(momentum)
    w = W.reshape(-1)
    d = dW.reshape(-1)
    if velocity is None:  # decided at compile time: one specialisation per case
        for i in range(w.size):
            _sgd_step(w, d, i, lr_, wd2)
    else:
        v = velocity.reshape(-1)
        for i in range(w.size):
            _sgd_momentum_step(w, d, v, i, lr_, wd2, mu, nesterov)


@_jit_parallel
def _sgd_parallel(w, d, lr, weight_decay, v, momentum, nesterov):
    # w, d, v (or None): (n,) flat views
    t = w.dtype.type
    lr_ = t(lr)
    wd2 = t(2.0 * weight_decay)
    mu = t(momentum)
    if v is None:
        for i in prange(w.size):
            _sgd_step(w, d, i, lr_, wd2)
    else:
        for i in prange(w.size):
            _sgd_momentum_step(w, d, v, i, lr_, wd2, mu, nesterov)


@_jit
def _adam_serial(W, dW, m, v, step, lr, beta1, beta2, eps, weight_decay):
    # W, dW, m, v: same shape, any rank, C-contiguous
    t = W.dtype.type
    lr_ = t(lr)
    b1 = t(beta1)
    b1c = t(1.0 - beta1)
    b2 = t(beta2)
    b2c = t(1.0 - beta2)
    c1 = t(1.0 - math.pow(beta1, step))
    c2 = t(1.0 - math.pow(beta2, step))
    eps_ = t(eps)
    wd2 = t(2.0 * weight_decay)
    w = W.reshape(-1)
    d = dW.reshape(-1)
    mf = m.reshape(-1)
    vf = v.reshape(-1)
    for i in range(w.size):
        _adam_step(w, d, mf, vf, i, lr_, b1, b1c, b2, b2c, c1, c2, eps_, wd2)


@_jit_parallel
def _adam_parallel(w, d, m, v, step, lr, beta1, beta2, eps, weight_decay):
    # w, d, m, v: (n,) flat views
    t = w.dtype.type
    lr_ = t(lr)
    b1 = t(beta1)
    b1c = t(1.0 - beta1)
    b2 = t(beta2)
    b2c = t(1.0 - beta2)
    c1 = t(1.0 - math.pow(beta1, step))
    c2 = t(1.0 - math.pow(beta2, step))
    eps_ = t(eps)
    wd2 = t(2.0 * weight_decay)
    for i in prange(w.size):
        _adam_step(w, d, m, v, i, lr_, b1, b1c, b2, b2c, c1, c2, eps_, wd2)


def sgd_update(W, dW, lr, weight_decay=0.0, velocity=None, momentum=0.0, nesterov=False):
    """In-place SGD step (plain, heavy-ball or Nesterov, PyTorch's form).  Returns W.

    W, dW, velocity: same shape, any rank.  g = dW + 2 wd W; v = momentum v + g;
    W -= lr (g + momentum v) if nesterov else lr v; without velocity W -= lr g.
    """
    if W.size < config.parallel_min_size:
        _sgd_serial(W, dW, lr, weight_decay, velocity, momentum, nesterov)
        return W
    v = None if velocity is None else velocity.reshape(-1)
    _sgd_parallel(W.reshape(-1), dW.reshape(-1), lr, weight_decay, v, momentum, nesterov)
    return W


def adam_update(W, dW, m, v, step, lr, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0):
    """In-place bias-corrected Adam step number `step` (>= 1).  Returns W.

    W, dW, m, v: same shape, any rank.  g = dW + 2 wd W; m, v: moving averages of g, g*g;
    W -= lr (m / (1 - beta1**step)) / (sqrt(v / (1 - beta2**step)) + eps).
    """
    if W.size < config.parallel_min_size:
        _adam_serial(W, dW, m, v, step, lr, beta1, beta2, eps, weight_decay)
        return W
    _adam_parallel(W.reshape(-1), dW.reshape(-1), m.reshape(-1), v.reshape(-1), step, lr,
                   beta1, beta2, eps, weight_decay)
    return W


# --------------------------------------------------------------------------- bfloat16
# A bf16 value is the high half of a float32, kept as uint16 bits (csrc/bf16.h).  Rounding
# adds 0x7FFF plus the lowest kept bit and drops the low 16 bits (round to nearest even;
# finite values past the largest bf16 become inf); a NaN keeps its sign and top mantissa bits
# and is made quiet.  Only NaNs can wrap past 32 bits, and they take the other branch.  Numba
# widens integer arithmetic to 64 bits; each result is cast back to uint32 so LLVM keeps
# 32-bit lanes (twice the elements per vector of the widened form).

_U32 = np.uint32


@_jit_inline
def _bf16_bits(u):
    # u: the bits of a float32 (uint32); returns its bfloat16 bits (uint16)
    rounded = _U32(_U32(u + _U32(0x7FFF)) + (_U32(u >> _U32(16)) & _U32(1))) >> _U32(16)
    quiet = _U32(u >> _U32(16)) | _U32(0x40)
    return np.uint16(quiet if _U32(u & _U32(0x7FFFFFFF)) > _U32(0x7F800000) else rounded)


@_jit
def _to_bf16(x, out):
    """out = x rounded to bfloat16 bits, element by element (flat views of any rank)."""
    # x (...) float32 IN, C-contiguous; out (...) uint16 OUT, C-contiguous, x's size
    u = x.reshape(-1).view(np.uint32)
    o = out.reshape(-1)
    for i in range(o.shape[0]):
        o[i] = _bf16_bits(u[i])


def to_bf16(x, out):
    """out = x rounded to bfloat16, as its uint16 bits: round to nearest even (finite values
    past the largest bf16 become inf), a NaN stays a quiet NaN of the same sign.

    x float32 (any shape, C-contiguous), out uint16 of the same shape, written in place.
    Returns out."""
    _to_bf16(x, out)
    return out


# --------------------------------------------------------------------------- dropout

# inverted dropout's counter-based mask, csrc/dropout.h's formula (contract.py, "dropout
# masks"): uint64 arithmetic throughout (a uint64 mixed with an int64 would become a float64)
_U64 = np.uint64
_GOLDEN, _MIX1, _MIX2 = _U64(GOLDEN), _U64(MIX1), _U64(MIX2)


@_jit_inline
def _mix64(z):
    # z uint64: SplitMix64's finaliser
    z = (z ^ (z >> _U64(30))) * _MIX1
    z = (z ^ (z >> _U64(27))) * _MIX2
    return z ^ (z >> _U64(31))


@_jit
def _dropout_stream(seed, step, layer):
    """The key of one layer's mask at one optimizer step (seed, step, layer uint64)."""
    return _mix64(_mix64(seed) ^ ((step << _U64(16)) | layer))


@_jit
def _dropout_row(x, first, stream, thr, s):
    """x = x·s where the mask keeps an entry, 0 where it drops it: one row, whose first
    entry has counter `first` (r·H + 1)."""
    # x (H,) IN/OUT; first, stream, thr uint64; s of x's dtype
    zero = x.dtype.type(0)
    for j in range(x.shape[0]):
        z = _mix64(stream + (first + _U64(j)) * _GOLDEN)
        x[j] = x[j] * s if (z >> _U64(40)) >= thr else zero


@_jit
def _dropout(A, stream, thr, p):
    """A (N, H) through the mask of (stream, thr), kept entries scaled by 1 / (1 - p)."""
    s, h = A.dtype.type(1.0 / (1.0 - p)), A.shape[1]
    for i in range(A.shape[0]):
        _dropout_row(A[i], _U64(i) * _U64(h) + _U64(1), stream, thr, s)


def dropout(A, p, seed, step, layer):
    """Inverted dropout in place: A / (1 - p) where the counter-based mask of (seed, step,
    layer) keeps an entry, 0 where it drops it.  A (N, H) C-contiguous; p in [0, 1).
    Returns A."""
    if p > 0 and A.size:
        # the stream comes back boxed as a Python int: typed uint64 again, not int64
        _dropout(A, _U64(_dropout_stream(_U64(seed), _U64(step), _U64(layer))),
                 _U64(dropout_threshold(p)), float(p))
    return A


@_jit
def _bias_act_row(out, i, b, act, stream, thr, s, p):
    """Row i of a forward pass: _bias_act, then (p > 0) the dropout mask of (stream, thr),
    kept entries scaled by s (step_loops.h's bias_act_row; the fused step's bias +
    activation passes and `_bn_act`)."""
    # out (m, H) IN/OUT, b (H,) IN; stream, thr uint64, s of out's dtype, p float64
    _bias_act(out[i:i + 1], b, act)
    if p > 0.0:
        _dropout_row(out[i], _U64(i) * _U64(out.shape[1]) + _U64(1), stream, thr, s)


# --------------------------------------------------------------------------- batch normalisation
# Three passes, shared by the raw kernels (on strips of _COL_BLOCK columns, their scratch on
# the stack) and the fused step (on whole rows, its scratch in the plan): `_bn_stats` sums
# the product's columns (float64), `_bn_act` normalises it in place and writes the layer's
# output f(γ·ẑ + β) (with dropout and the bf16 copy in the step), `_bn_backward` turns the
# gradient w.r.t. γ·ẑ + β into the gradient w.r.t. the product.  dβ and dγ are the column
# sums of that gradient and of it times ẑ: the step sums them in its activation-backward pass
# (train_step `_mask_colsum`), the raw kernel in `_bn_sums`.

_COL_BLOCK = 64          # columns per strip of the raw kernels (csrc/kernels.pyx's COL_BLOCK)
_COL_BLOCK2 = 2 * _COL_BLOCK
_COL_BLOCK3 = 3 * _COL_BLOCK


@intrinsic
def _stack(typingctx, dtype, n):
    """A pointer to n (a compile-time constant) uninitialised elements of `dtype` (a NumPy
    scalar type or an array's .dtype) in the calling function's stack frame: a raw kernel's
    scratch, allocated nowhere else (numba.carray makes it an array)."""
    if isinstance(dtype, types.NumberClass):
        elt = dtype.instance_type
    elif isinstance(dtype, types.DType):
        elt = dtype.dtype
    else:
        return None
    if not isinstance(n, types.IntegerLiteral):
        return None
    size = n.literal_value

    def codegen(context, builder, sig, args):
        return cgutils.alloca_once(builder, context.get_data_type(elt), size=size)
    return types.CPointer(elt)(dtype, n), codegen


@_jit
def _bn_stats(Z, mean, var, inv, eps, acc):
    """mean, var = the column means and biased variances of Z, in float64 in one sweep over
    the rows, shifted by the first row so that a column's offset does not cancel:
    s1 = Σ(z - z₀), s2 = Σ(z - z₀)², mean = z₀ + s1/m, var = (s2 - s1²/m)/m (≥ 0); then
    inv = 1/√(var + eps) in Z's dtype, from var as stored."""
    # Z (m, H) IN, mean, var, inv (H,) OUT (Z's dtype), eps float64, acc (2H,) float64 scratch
    m, h = Z.shape
    t = Z.dtype.type
    s1, s2 = acc[:h], acc[h:2 * h]
    z0 = Z[0]
    for j in range(h):
        s1[j] = 0.0
        s2[j] = 0.0
    for i in range(1, m):
        z = Z[i]
        for j in range(h):
            d = float(z[j]) - float(z0[j])
            s1[j] += d
            s2[j] += d * d
    for j in range(h):
        mu = s1[j] / m
        v = (s2[j] - s1[j] * mu) / m
        if v < 0.0:   # rounding; a NaN stays NaN
            v = 0.0
        mean[j] = float(z0[j]) + mu
        var[j] = v
        inv[j] = t(1) / np.sqrt(var[j] + t(eps))


@_jit
def _bn_act(Z, gamma, b, out, mean, inv, act, stream, thr, p, out16):
    """Row by row: Z = ẑ = (Z - mean)·inv in place, out = γ·ẑ, then the bias + activation
    pass's row (`_bias_act_row`: out = f(out + b), dropout when p > 0) and, out16 given, the
    row's bfloat16 bits (the bf16 step's activations)."""
    # Z (m, H) IN/OUT, gamma, b, mean, inv (H,) IN, out (m, H) OUT, out16 (m, H) uint16 OUT
    # or None; stream, thr uint64, p float64 (the dropout of a whole-row pass)
    m, h = Z.shape
    s = out.dtype.type(1.0 / (1.0 - p))
    for i in range(m):
        z, o = Z[i], out[i]
        for j in range(h):
            v = (z[j] - mean[j]) * inv[j]
            z[j] = v
            o[j] = v * gamma[j]
        _bias_act_row(out, i, b, act, stream, thr, s, p)
        if out16 is not None:
            _to_bf16(o, out16[i])


@_jit
def _bn_backward(D, Zh, gamma, var, db, dg, eps, coef, D16):
    """D = γ/√(var + eps)·(D - dβ/m - ẑ·dγ/m) in place, row by row, db = dβ and dg = dγ the
    column sums of D and D·ẑ; D16 given: each row then also as bfloat16 bits (the bf16
    step's delta, the operand of the backward GEMMs)."""
    # D (m, H) IN/OUT, Zh (m, H) IN, gamma, var, db, dg (H,) IN, eps float64, coef (3H,)
    # scratch of D's dtype, D16 (m, H) uint16 OUT or None
    m, h = D.shape
    t = D.dtype.type
    n = t(m)
    a, c, s = coef[:h], coef[h:2 * h], coef[2 * h:3 * h]
    for j in range(h):
        a[j] = db[j] / n
        c[j] = dg[j] / n
        s[j] = gamma[j] / np.sqrt(var[j] + t(eps))
    for i in range(m):
        d, z = D[i], Zh[i]
        for j in range(h):
            d[j] = (d[j] - a[j] - z[j] * c[j]) * s[j]
        if D16 is not None:
            _to_bf16(d, D16[i])


@_jit
def _bn_sums(D, Zh, db, dg, acc):
    """db = column sums of D, dg = column sums of D·ẑ, accumulated in float64 (the raw
    kernel's dβ, dγ; the step's come from its activation-backward pass)."""
    # D, Zh (m, H) IN, db, dg (H,) OUT, acc (2H,) float64 scratch
    m, h = D.shape
    s1, s2 = acc[:h], acc[h:2 * h]
    for j in range(h):
        s1[j] = 0.0
        s2[j] = 0.0
    for i in range(m):
        d, z = D[i], Zh[i]
        for j in range(h):
            v = float(d[j])
            s1[j] += v
            s2[j] += v * float(z[j])
    for j in range(h):
        db[j] = s1[j]
        dg[j] = s2[j]


@_jit
def _batch_norm_forward(Z, gamma, beta, out, mean, var, eps, act):
    """batch_norm_forward on strips of _COL_BLOCK columns (scratch on the stack)."""
    # Z (N,H) IN/OUT, gamma, beta (H,) IN, out (N,H) OUT, mean, var (H,) OUT
    acc = numba.carray(_stack(np.float64, _COL_BLOCK2), _COL_BLOCK2)
    inv = numba.carray(_stack(Z.dtype, _COL_BLOCK), _COL_BLOCK)
    h = Z.shape[1]
    for j0 in range(0, h, _COL_BLOCK):
        j1 = min(j0 + _COL_BLOCK, h)
        nb = j1 - j0
        Zs = Z[:, j0:j1]
        _bn_stats(Zs, mean[j0:j1], var[j0:j1], inv[:nb], eps, acc[:2 * nb])
        _bn_act(Zs, gamma[j0:j1], beta[j0:j1], out[:, j0:j1], mean[j0:j1], inv[:nb], act,
                _U64(0), _U64(0), 0.0, None)


@_jit
def _batch_norm_backward(dY, Zhat, gamma, var, dgamma, dbeta, eps):
    """batch_norm_backward on strips of _COL_BLOCK columns (scratch on the stack)."""
    # dY (N,H) IN/OUT, Zhat (N,H) IN, gamma, var (H,) IN, dgamma, dbeta (H,) OUT
    acc = numba.carray(_stack(np.float64, _COL_BLOCK2), _COL_BLOCK2)
    coef = numba.carray(_stack(dY.dtype, _COL_BLOCK3), _COL_BLOCK3)
    h = dY.shape[1]
    for j0 in range(0, h, _COL_BLOCK):
        j1 = min(j0 + _COL_BLOCK, h)
        nb = j1 - j0
        D, Zs = dY[:, j0:j1], Zhat[:, j0:j1]
        _bn_sums(D, Zs, dbeta[j0:j1], dgamma[j0:j1], acc[:2 * nb])
        _bn_backward(D, Zs, gamma[j0:j1], var[j0:j1], dbeta[j0:j1], dgamma[j0:j1], eps,
                     coef[:3 * nb], None)


@_jit
def _batch_norm_running(mean, var, n, running_mean, running_var, momentum):
    """running = (1 - momentum)·running + momentum·batch (the variance unbiased, ·n/(n-1)),
    in the arrays' dtype; n = 1 changes nothing (also the fused step's)."""
    # mean, var (H,) IN, running_mean, running_var (H,) IN/OUT; n int, momentum float64
    if n <= 1:
        return
    t = mean.dtype.type
    mo = t(momentum)
    keep = t(1) - mo
    k = mo * t(n / (n - 1))
    for j in range(mean.shape[0]):
        running_mean[j] = running_mean[j] * keep + mo * mean[j]
        running_var[j] = running_var[j] * keep + k * var[j]


def batch_norm_forward(Z, gamma, beta, out, mean, var, eps=1e-05, activation="identity"):
    """Batch normalisation in training mode: mean, var = Z's column means and biased
    variances (float64 sums), Z = ẑ = (Z - mean)/√(var + eps) in place, out = f(γ·ẑ + β).
    Z, out (N,H); gamma, beta, mean, var (H,).  Returns out."""
    _batch_norm_forward(Z, gamma, beta, out, mean, var, float(eps), ACT_CODES[activation])
    return out


def batch_norm_backward(dY, Zhat, gamma, var, dgamma, dbeta, eps=1e-05):
    """dbeta = Σ_rows dY, dgamma = Σ_rows dY·ẑ (float64 sums); in place dY = γ/√(var + eps)·
    (dY - dβ/N - ẑ·dγ/N).  dY, Zhat (N,H); gamma, var, dgamma, dbeta (H,).  Returns dY."""
    _batch_norm_backward(dY, Zhat, gamma, var, dgamma, dbeta, float(eps))
    return dY


def batch_norm_running(mean, var, n, running_mean, running_var, momentum=0.1):
    """The running estimates after a batch of n rows (PyTorch's convention, the unbiased
    variance); n = 1 changes nothing.  All (H,).  Returns running_mean."""
    _batch_norm_running(mean, var, int(n), running_mean, running_var, float(momentum))
    return running_mean

config.stamp_caches(globals(), config, sys.modules[__name__])
