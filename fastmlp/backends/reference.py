"""NumPy reference backend: the plain, readable oracle for every kernel, and the one
composition of those kernels into a network's forward pass, backward pass and training step.

Design: one function per kernel of the contract (contract.py, docs/kernels.md), written with
ordinary NumPy expressions; they may allocate temporaries and accept any memory layout.  The
compiled backends are tested against these functions, so clarity beats speed here.

`forward`, `backward` and `update` compose the kernels of *any* backend (the module or object
`k` holding them) into a whole network: `MLP` uses them for its gradients, `TrainStep` is them
in sequence (the reference's own `TrainStep`, and the oracle of the compiled backends' fused
ones), and the gradient checks and benchmark breakdown reuse them.  There is no other copy.
"""
import math
import types

import numpy as np

from .csr import issparse
from .contract import (GOLDEN, KERNEL_NAMES, MIX1, MIX2, OPTIMIZERS, OUTPUT_LOSS,
                       BatchNorm, activation_code, check_bn_settings, check_dropout, check_label_smoothing,
                       check_precision, check_seed,
                       dropout_stream, dropout_threshold, output_code, same_arrays)

name = "numpy"


def activate(H, activation):
    """H = f(H) in place: identity, relu max(H, 0), tanh, logistic 1 / (1 + exp(-H)).
    H (N, H).  Returns H."""
    if activation == "relu":
        np.maximum(H, 0, out=H)
    elif activation == "tanh":
        np.tanh(H, out=H)
    elif activation == "logistic":
        with np.errstate(over="ignore"):   # exp(-H) = inf for H << 0: the logistic is 0
            np.negative(H, out=H)
            np.exp(H, out=H)
            H += 1
            np.reciprocal(H, out=H)
    return H


def linear_forward(X, W, b, out, activation="identity"):
    """out = f(X @ W + b), f the activation (identity, relu, tanh, logistic).

    X (N, D), W (D, H), b (H,), out (N, H) written in place and returned.
    """
    np.matmul(X, W, out=out)
    out += b
    return activate(out, activation)


def linear_backward(dY, X, W, dW, db, dX=None):
    """dW = X.T @ dY, db = dY.sum(0), dX = dY @ W.T when dX is given.

    dY (N, H), X (N, D), W (D, H), dW (D, H), db (H,), dX (N, D).  Returns dW.
    """
    np.matmul(X.T, dY, out=dW)
    np.sum(dY, axis=0, out=db)
    if dX is not None:
        np.matmul(dY, W.T, out=dX)
    return dW


def _csr(data, indices, indptr, n_cols):
    """scipy.sparse.csr_array of the CSR triple (offsets in indptr need not start at 0)."""
    import scipy.sparse
    lo, hi = indptr[0], indptr[-1]
    return scipy.sparse.csr_array((data[lo:hi], indices[lo:hi], indptr - lo),
                                  shape=(indptr.shape[0] - 1, n_cols))


def csr_linear_forward(data, indices, indptr, W, b, out, activation="identity"):
    """out = f(X @ W + b) for a sparse X (N, D) given as CSR: row i's entries are
    data[indptr[i]:indptr[i+1]] at columns indices[...] (int, in [0, D)).

    data (nnz,), indices (nnz,), indptr (N+1,), W (D, H), b (H,), out (N, H).  Returns out."""
    out[...] = _csr(data, indices, indptr, W.shape[0]) @ W
    out += b
    return activate(out, activation)


def csr_linear_backward(dY, data, indices, indptr, dW, db):
    """dW = X.T @ dY, db = dY.sum(0) for a sparse X (N, D) given as CSR (the input layer:
    no dX).  dY (N, H), dW (D, H), db (H,).  Returns dW."""
    dW[...] = _csr(data, indices, indptr, dW.shape[0]).T @ dY
    np.sum(dY, axis=0, out=db)
    return dW


def csr_gather_rows(data, indices, indptr, rows, out_data, out_indices, out_indptr):
    """Rows `rows` (m,) of the CSR X into the CSR buffer out_* (out_indptr (m+1,), from 0);
    returns the number of entries written, or -1 (writing no entry) when they would not fit
    in out_data / out_indices."""
    lengths = indptr[np.asarray(rows) + 1] - indptr[rows]
    if lengths.sum() > min(out_data.shape[0], out_indices.shape[0]):
        return -1
    out_indptr[0] = 0
    np.cumsum(lengths, out=out_indptr[1:])
    for r, i in enumerate(rows):
        lo, hi, o = indptr[i], indptr[i + 1], out_indptr[r]
        out_data[o:o + hi - lo] = data[lo:hi]
        out_indices[o:o + hi - lo] = indices[lo:hi]
    return int(out_indptr[-1])


def gather_rows(X, rows, out, mean=None, scale=None):
    """out = X[rows], the rows `rows` (m,) of a dense X (N, D) into out (m, D): a mini-batch;
    with mean and scale (D,) each row standardised, out = (X[rows] - mean) / scale (in X's
    dtype, as written), so a standardised mini-batch needs no standardised copy of X.  X
    may be uint16 (a bf16 step's training set as bfloat16 bits), without mean and scale.
    Returns out."""
    np.take(X, rows, axis=0, out=out)
    if mean is not None:
        np.subtract(out, mean, out=out)
        np.divide(out, scale, out=out)
    return out


def activation_backward(dH, H, activation="relu"):
    """dH *= f'(z) in place, the derivative taken from the layer's output H = f(z):
    relu 1[H > 0], tanh 1 - H², logistic H (1 - H), identity 1.  dH, H (N, H).  Returns dH."""
    if activation == "relu":
        dH[H <= 0] = 0
    elif activation == "tanh":
        dH *= 1 - H * H
    elif activation == "logistic":
        dH *= H * (1 - H)
    return dH


def softmax_xent_grad(Z, y, dZ, sample_weight=None, label_smoothing=0.0):
    """Mean cross-entropy of softmax(Z) against the labels y; dZ = its gradient w.r.t. Z.
    With label_smoothing ε the target of a row is (1 - ε)·onehot(y) + ε/C: the loss
    -(1 - ε) log p_y - (ε/C) Σ_c log p_c and dZ = softmax(Z) - target (ε = 0: the NLL).

    Z (N, C) logits, y (N,) integer labels in [0, C), dZ (N, C) written in place,
    sample_weight (N,) or None, label_smoothing in [0, 1].  Returns the loss as a Python
    float (accumulated in float64)."""
    n, c = Z.shape
    rows = np.arange(n)
    shifted = Z - Z.max(axis=1, keepdims=True)
    log_norm = np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    log_p = shifted - log_norm
    eps = float(label_smoothing)
    nll = -log_p[rows, y].astype(np.float64)
    if eps:
        nll = (1 - eps) * nll - (eps / c) * log_p.astype(np.float64).sum(axis=1)
    if sample_weight is None:
        w = np.ones(n, dtype=Z.dtype)
        total = float(n)
    else:
        w = np.asarray(sample_weight, dtype=Z.dtype)
        total = float(np.sum(w, dtype=np.float64))
    dZ[...] = np.exp(log_p)
    if eps:
        dZ -= Z.dtype.type(eps / c)
        dZ[rows, y] -= Z.dtype.type(1 - eps)
    else:
        dZ[rows, y] -= 1
    dZ *= (w / Z.dtype.type(total))[:, None]
    return float(np.dot(w.astype(np.float64), nll) / total)


def _weights(w, n, dtype):
    """(the weights as an array of `dtype`, their float64 sum) -- ones and n without weights."""
    if w is None:
        return np.ones(n, dtype), float(n)
    w = np.asarray(w, dtype=dtype)
    return w, float(np.sum(w, dtype=np.float64))


def logistic_xent_grad(Z, Y, dZ, sample_weight=None):
    """Binary cross-entropy of logistic(Z) against 0/1 targets Y, summed over the outputs and
    (weighted-)averaged over the rows (scikit-learn's binary_log_loss); dZ = its gradient
    w.r.t. Z: w_i (logistic(Z_i) - Y_i) / Σw.

    Z (N, K) logits, Y (N, K) of Z's dtype, dZ (N, K), sample_weight (N,) or None.  Per entry
    the loss is softplus(z) - y z = max(z, 0) - y z + log1p(exp(-|z|)): finite for any finite
    z.  Returns the loss as a Python float (accumulated in float64)."""
    w, total = _weights(sample_weight, Z.shape[0], Z.dtype)
    z = Z.astype(np.float64)
    per_row = (np.maximum(z, 0) - Y * z + np.log1p(np.exp(-np.abs(z)))).sum(axis=1)
    with np.errstate(over="ignore"):
        dZ[...] = 1 / (1 + np.exp(-Z))
    dZ -= Y
    dZ *= (w / Z.dtype.type(total))[:, None]
    return float(np.dot(w.astype(np.float64), per_row) / total)


def squared_error_grad(Z, Y, dZ, sample_weight=None):
    """Half the squared error of Z against Y, summed over the outputs and (weighted-)averaged
    over the rows; dZ = its gradient: w_i (Z_i - Y_i) / Σw.

    Z (N, K), Y (N, K) of Z's dtype, dZ (N, K), sample_weight (N,) or None.  Returns the loss as
    a Python float (accumulated in float64)."""
    w, total = _weights(sample_weight, Z.shape[0], Z.dtype)
    r = Z.astype(np.float64) - Y
    per_row = 0.5 * (r * r).sum(axis=1)
    np.subtract(Z, Y, out=dZ)
    dZ *= (w / Z.dtype.type(total))[:, None]
    return float(np.dot(w.astype(np.float64), per_row) / total)


def poisson_grad(Z, Y, dZ, sample_weight=None):
    """Half the Poisson deviance of exp(Z) (the log link) against counts Y >= 0, summed over
    the outputs and (weighted-)averaged over the rows (scikit-learn's poisson loss):
    exp(z) - y z + y log y - y per entry; dZ = w_i (exp(Z_i) - Y_i) / Σw.

    Z (N, K), Y (N, K) of Z's dtype, dZ (N, K), sample_weight (N,) or None.  Returns the loss as
    a Python float (accumulated in float64)."""
    w, total = _weights(sample_weight, Z.shape[0], Z.dtype)
    z, y = Z.astype(np.float64), Y.astype(np.float64)
    with np.errstate(over="ignore"):
        per_row = (np.exp(z) - y * z + _xlogx(y) - y).sum(axis=1)
        np.exp(Z, out=dZ)
    dZ -= Y
    dZ *= (w / Z.dtype.type(total))[:, None]
    return float(np.dot(w.astype(np.float64), per_row) / total)


def _xlogx(y):
    """y log y, 0 at y = 0."""
    out = np.zeros_like(y)
    pos = y > 0
    out[pos] = y[pos] * np.log(y[pos])
    return out


def _decayed_grad(W, dW, weight_decay):
    return dW + (2 * weight_decay) * W if weight_decay else dW


def sgd_update(W, dW, lr, weight_decay=0.0, velocity=None, momentum=0.0, nesterov=False):
    """In-place SGD step, plain, heavy-ball or Nesterov (PyTorch's form).

    g = dW + 2 wd W;  v = momentum v + g;  W -= lr (g + momentum v) if nesterov else lr v.
    Without velocity: W -= lr g.  W, dW, velocity same shape.  Returns W.
    """
    dt = W.dtype.type
    g = _decayed_grad(W, dW, dt(weight_decay))
    if velocity is None:
        W -= dt(lr) * g
        return W
    velocity *= dt(momentum)
    velocity += g
    step = g + dt(momentum) * velocity if nesterov else velocity
    W -= dt(lr) * step
    return W


def adam_update(W, dW, m, v, step, lr, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0):
    """In-place bias-corrected Adam step number `step` (>= 1).  W, dW, m, v same shape."""
    dt = W.dtype.type
    g = _decayed_grad(W, dW, dt(weight_decay))
    m *= dt(beta1)
    m += dt(1 - beta1) * g
    v *= dt(beta2)
    v += dt(1 - beta2) * g * g
    c1 = dt(1.0 - math.pow(beta1, step))
    c2 = dt(1.0 - math.pow(beta2, step))
    W -= dt(lr) * (m / c1) / (np.sqrt(v / c2) + dt(eps))
    return W


def to_bf16(x, out):
    """out = x rounded to bfloat16, as its uint16 bits: round to nearest even (finite values
    past the largest bf16 become inf), a NaN stays a quiet NaN of the same sign.

    x float32 (any shape), out uint16 of the same shape, written in place and returned."""
    u = np.asarray(x, np.float32).view(np.uint32)
    rounded = ((u.astype(np.uint64) + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)
    quiet = ((u >> 16) | 0x40).astype(np.uint16)
    out[...] = np.where((u & 0x7FFFFFFF) > 0x7F800000, quiet, rounded)
    return out


def dropout_keep(shape, p, seed, step, layer):
    """The mask (N, H) bool of the entries inverted dropout keeps in hidden layer `layer`'s
    (N, H) activations at optimizer step `step` (contract.py, "dropout masks": SplitMix64
    draws in uint64 arithmetic, which NumPy wraps modulo 2⁶⁴)."""
    n, h = shape
    u = np.uint64
    z = np.arange(1, n * h + 1, dtype=u).reshape(n, h) * u(GOLDEN) + \
        u(dropout_stream(seed, step, layer))
    z = (z ^ (z >> u(30))) * u(MIX1)
    z = (z ^ (z >> u(27))) * u(MIX2)
    z ^= z >> u(31)
    return (z >> u(40)) >= u(dropout_threshold(p))


def dropout(A, p, seed, step, layer):
    """Inverted dropout in place: A = A / (1 - p) where `dropout_keep` keeps an entry, 0
    where it drops it (p = 0: A unchanged).  The same call on a delta is dropout's backward:
    the gradient through the same mask and scale.

    A (N, H), written in place and returned; p in [0, 1); seed, step, layer ints >= 0."""
    if p > 0 and A.size:
        keep = dropout_keep(A.shape, p, seed, step, layer)
        A[...] = np.where(keep, A * A.dtype.type(1.0 / (1.0 - p)), 0)
    return A


def batch_norm_forward(Z, gamma, beta, out, mean, var, eps=1e-5, activation="identity"):
    """Batch normalisation of a hidden layer's product, in training mode, and its activation:
    mean, var = the column means and biased variances of Z (computed in float64),
    Z = ẑ = (Z - mean) / sqrt(var + eps) in place, out = f(gamma·ẑ + beta).

    Z (N, H) in: X·W, out: ẑ; gamma, beta (H,); out (N, H), mean, var (H,) written.
    Returns out."""
    z = Z.astype(np.float64)
    mu = z.mean(axis=0)
    sigma2 = ((z - mu) ** 2).mean(axis=0)
    mean[...], var[...] = mu, sigma2
    dt = Z.dtype.type
    Z -= mean
    Z *= dt(1) / np.sqrt(var + dt(eps))
    np.multiply(Z, gamma, out=out)
    out += beta
    return activate(out, activation)


def batch_norm_backward(dY, Zhat, gamma, var, dgamma, dbeta, eps=1e-5):
    """Batch normalisation's backward: dY (N, H), the gradient w.r.t. gamma·ẑ + beta (after
    the activation's derivative), becomes the gradient w.r.t. the product Z in place,
        dbeta = Σ_rows dY,  dgamma = Σ_rows dY·ẑ  (accumulated in float64),
        dZ = gamma / sqrt(var + eps) · (dY - dbeta / N - ẑ·dgamma / N).
    Zhat (N, H) the forward's ẑ; gamma, var, dgamma, dbeta (H,).  Returns dY."""
    n = dY.shape[0]
    dt = dY.dtype.type
    d = dY.astype(np.float64)
    dbeta[...] = d.sum(axis=0)
    dgamma[...] = (d * Zhat).sum(axis=0)
    dY -= dbeta / dt(n)
    dY -= Zhat * (dgamma / dt(n))
    dY *= gamma / np.sqrt(var + dt(eps))
    return dY


def batch_norm_running(mean, var, n, running_mean, running_var, momentum=0.1):
    """The running estimates after a training batch of n rows with column means `mean` and
    biased variances `var` (PyTorch's convention): running = (1 - momentum)·running +
    momentum·batch, with the unbiased variance var·n / (n - 1).  A batch of one row carries
    no variance and leaves both unchanged.  All (H,).  Returns running_mean."""
    if n > 1:
        dt = mean.dtype.type
        mo = dt(momentum)
        running_mean *= dt(1) - mo
        running_mean += mo * mean
        running_var *= dt(1) - mo
        running_var += (mo * dt(n / (n - 1))) * var
    return running_mean


def bn_fold(W, b, gamma, running_mean, running_var, eps=1e-5):
    """The inference-time layer of a batch-normalised one, folded: (W·s, b - s·running_mean)
    with s = gamma / sqrt(running_var + eps), new arrays of W's dtype: x·W' + b' =
    gamma·(x·W - running_mean) / sqrt(running_var + eps) + b."""
    s = (gamma.astype(np.float64) / np.sqrt(running_var.astype(np.float64) + eps))
    return ((W * s).astype(W.dtype), (b - s * running_mean).astype(b.dtype))


def from_bf16(h):
    """The float32 values of bfloat16 bits h (uint16, any shape): exact."""
    return (np.asarray(h, np.uint16).astype(np.uint32) << 16).view(np.float32)


def round_bf16(x):
    """x (float32) rounded to the nearest bfloat16, as float32: from_bf16(to_bf16(x))."""
    x = np.ascontiguousarray(x, np.float32)
    return from_bf16(to_bf16(x, np.empty(x.shape, np.uint16)))


def _bf16_kernels(k):
    """The kernels of `k` with the products of a bf16 step: each GEMM's two operands rounded
    to bfloat16 (round_bf16), the product and everything else in float32.  A product of two
    bf16 values is exact in float32, so the result is a float32 GEMM's (to its summation
    order), which is what oneDNN's gemm_bf16bf16f32 computes.  The bias gradient is the
    column sum of the unrounded delta, as in the compiled steps."""
    def linear_forward(X, W, b, out, activation="identity"):
        return k.linear_forward(round_bf16(X), round_bf16(W), b, out, activation)

    def linear_backward(dY, X, W, dW, db, dX=None):
        k.linear_backward(round_bf16(dY), round_bf16(X), round_bf16(W), dW, db, dX)
        np.sum(dY, axis=0, out=db)
        return dW
    return types.SimpleNamespace(**{**vars(k), "linear_forward": linear_forward,
                                    "linear_backward": linear_backward})


# --------------------------------------------------------------------------- composition

def forward(k, weights, biases, X, acts, activation="relu", dropout=None, bn=None):
    """The network's forward pass with the kernels of `k`: acts[i] = f(a·W_i + b_i), f the
    hidden `activation`, the last layer linear (the output's pre-activation, e.g. logits).
    X (m, D_0) dense, or a fastmlp.sparse.CSR; weights[i] (D_i, D_i+1), acts[i] (m, D_i+1).
    dropout: None, or (ps, seed, step): hidden layer i's output then goes through
    k.dropout(acts[i], ps[i], seed, step, i) (training).
    bn: None, or a contract.BatchNorm (its zhats of m rows): hidden layer i is then
    k.batch_norm_forward of a·W_i (into bn.zhats[i]) with gamma bn.gammas[i] and beta b_i,
    in training mode (the batch's statistics, into bn.means / bn.vars).  Returns acts[-1]."""
    a, last = X, len(weights) - 1
    for i, (W, b) in enumerate(zip(weights, biases)):
        f = activation if i < last else "identity"
        normed = bn is not None and i < last
        out, lin_b, lin_f = (bn.zhats[i], np.zeros_like(b), "identity") if normed else \
            (acts[i], b, f)
        if issparse(a):   # a sparse input (fastmlp.sparse.CSR): the first layer only
            k.csr_linear_forward(a.data, a.indices, a.indptr, W, lin_b, out, lin_f)
        else:
            k.linear_forward(a, W, lin_b, out, lin_f)
        if normed:
            k.batch_norm_forward(out, bn.gammas[i], b, acts[i], bn.means[i], bn.vars[i],
                                 bn.eps, f)
        if i < last and dropout is not None and dropout[0][i] > 0:
            k.dropout(acts[i], dropout[0][i], dropout[1], dropout[2], i)
        a = acts[i]
    return a


def loss_grad(k, output, Z, y, dZ, sample_weight=None, label_smoothing=0.0):
    """The loss of output layer `output` (contract.OUTPUT_LOSS) on pre-activations Z against
    targets y, with the kernels of `k`: fills dZ, returns the loss.  label_smoothing: the
    softmax output's (0 for the others)."""
    if label_smoothing:
        return k.softmax_xent_grad(Z, y, dZ, sample_weight, label_smoothing)
    return getattr(k, OUTPUT_LOSS[output])(Z, y, dZ, sample_weight)


def backward(k, weights, X, acts, dZ, dweights, dbiases, deltas, activation="relu",
             dropout=None, bn=None):
    """Back-propagate dZ (m, C), the loss gradient w.r.t. the output's pre-activation, with
    the kernels of `k`: fills dweights / dbiases; deltas[i] (m, D_i), i >= 1, receive the
    gradient w.r.t. layer i-1's pre-activation (through `activation`; deltas[0] is unused).
    dropout: as `forward`'s (the same masks): the gradient w.r.t. a dropped-out layer's
    output goes through k.dropout, then the activation's derivative is taken from the
    output before dropout, acts[i]·(1 - p) (exact for ReLU's sign, which is used as is).
    bn: as `forward`'s, after it: k.batch_norm_backward takes the gradient on to the layer's
    product (deltas[i] then holds dL/d(a·W)), writes bn.dgammas and, as the bias is BN's
    shift, dbiases (the product's own column sums are not a gradient of anything)."""
    delta, last = dZ, len(weights) - 1
    for i in range(last, -1, -1):
        inp = acts[i - 1] if i else X
        dX = deltas[i] if i else None
        db = np.empty_like(dbiases[i]) if bn is not None and i < last else dbiases[i]
        if issparse(inp):
            k.csr_linear_backward(delta, inp.data, inp.indices, inp.indptr, dweights[i], db)
        else:
            k.linear_backward(delta, inp, weights[i], dweights[i], db, dX)
        if i:
            p = dropout[0][i - 1] if dropout is not None else 0.0
            if p > 0:
                k.dropout(dX, p, dropout[1], dropout[2], i - 1)
                if activation in ("tanh", "logistic"):
                    inp = inp * inp.dtype.type(1.0 - p)
            delta = k.activation_backward(dX, inp, activation)
            if bn is not None:
                k.batch_norm_backward(dX, bn.zhats[i - 1], bn.gammas[i - 1], bn.vars[i - 1],
                                      bn.dgammas[i - 1], dbiases[i - 1], bn.eps)


def update(k, params, grads, state, n_weights, optimizer, lr, step, momentum=0.0,
           nesterov=False, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0):
    """One optimizer update of every parameter with the kernels of `k`: params = weights then
    biases (the first `n_weights` are decayed), grads alike, state per parameter (None, a
    velocity, or Adam's (m, v))."""
    for i, (p, g, s) in enumerate(zip(params, grads, state)):
        wd = weight_decay if i < n_weights else 0.0
        if optimizer == "adam":
            k.adam_update(p, g, s[0], s[1], step, lr, beta1, beta2, eps, wd)
        else:
            k.sgd_update(p, g, lr, wd, s, momentum, nesterov)


class TrainStep:
    """TrainStep(weights, biases, dweights, dbiases, acts, deltas, dZ, state, optimizer,
    momentum=0.0, nesterov=False, beta1=0.9, beta2=0.999, activation='relu', output='softmax',
    gemm='auto', precision=None, dropout=0.0, dropout_seed=0, label_smoothing=0.0,
    batch_norm=None, *, kernels=None): one whole training step (docs/kernels.md)
    as the kernel calls it stands for -- `forward`, the loss, `backward`, `update` -- with
    this module's kernels, or those of `kernels`.  `gemm` is the compiled steps' GEMM
    provider: the reference's products are NumPy's, and `set_threads` leaves every pool
    alone.  precision="bf16" (a float32 model) rounds every product's operands to bfloat16
    (`_bf16_kernels`): the emulation the compiled bf16 steps are held to; X may then be
    float32 or uint16 bfloat16 bits.  dropout: one probability, or one per hidden layer
    (contract.check_dropout); run's `step` and dropout_seed key the masks (`dropout`).
    batch_norm: None, or a contract.BatchNorm of the hidden layers (zhats of n_max rows):
    the forward and backward take it, the update trains its gammas with their state (not
    decayed), and a step with a finite loss then updates the running estimates
    (`batch_norm_running`)."""

    def __init__(self, weights, biases, dweights, dbiases, acts, deltas, dZ, state, optimizer,
                 momentum=0.0, nesterov=False, beta1=0.9, beta2=0.999, activation="relu",
                 output="softmax", gemm="auto", precision=None, dropout=0.0, dropout_seed=0,
                 label_smoothing=0.0, batch_norm=None, *, kernels=None):
        if optimizer not in OPTIMIZERS:
            raise ValueError(f"TrainStep: unknown optimizer {optimizer!r}")
        activation_code(activation), output_code(output)   # known names, or ValueError
        self.activation, self.output = activation, output
        self.bf16 = check_precision(precision, weights[0].dtype) == "bf16"
        self.k = _OWN if kernels is None else kernels
        if self.bf16:
            self.k = _bf16_kernels(self.k)
        self.weights, self.biases = list(weights), list(biases)
        self.dweights, self.dbiases = list(dweights), list(dbiases)
        self.acts, self.deltas, self.dZ, self.state = list(acts), list(deltas), dZ, list(state)
        self.hyper = dict(momentum=momentum, nesterov=nesterov, beta1=beta1, beta2=beta2)
        self.optimizer, self.n_max = optimizer, self.acts[0].shape[0]
        self.dropout = check_dropout(dropout, len(self.weights) - 1)
        self.dropout_seed = check_seed(dropout_seed)
        self._drops = any(p > 0 for p in self.dropout)
        self.label_smoothing = check_label_smoothing(label_smoothing, output)
        self.bn = batch_norm
        if batch_norm is not None:
            if not isinstance(batch_norm, BatchNorm):
                raise TypeError(f"TrainStep: batch_norm must be a contract.BatchNorm or None, "
                                f"got {type(batch_norm).__name__}")
            check_bn_settings(batch_norm.momentum, batch_norm.eps)
            nh = len(self.weights) - 1
            if any(len(getattr(batch_norm, f)) != nh for f in BatchNorm._fields[:8]):
                raise ValueError(f"TrainStep: batch_norm needs one entry per hidden layer "
                                 f"({nh}) in each list")

    def set_threads(self, n):
        """A no-op: the reference steers no thread pool."""

    def uses(self, weights, biases):
        """True if `weights + biases` are the very arrays this step was built on."""
        return same_arrays(self.weights + self.biases, weights, biases)

    def sync(self):
        """A no-op: the reference rounds the weights at every product (the compiled bf16
        steps re-read their bf16 copies of the weights here)."""

    def run(self, X, y, sample_weight, lr, step, weight_decay=0.0, eps=1e-8):
        """Train on X (m, D), targets y (m,) or (m, K), optional sample_weight (m,); returns
        the batch's loss before the update (non-finite: nothing was updated).  `step` >= 1
        counts updates."""
        k, m = self.k, X.shape[0]
        if self.bf16 and getattr(X, "dtype", None) == np.uint16:
            X = from_bf16(X)
        if not 1 <= m <= self.n_max:
            raise ValueError(f"TrainStep.run: batch of {m} rows, expected 1 to {self.n_max}")
        acts, dZ = [a[:m] for a in self.acts], self.dZ[:m]
        deltas = [None] + [d[:m] for d in self.deltas[1:]]
        drop = (self.dropout, self.dropout_seed, int(step)) if self._drops else None
        bn = self.bn
        if bn is not None:
            bn = bn._replace(zhats=[z[:m] for z in bn.zhats])
        Z = forward(k, self.weights, self.biases, X, acts, self.activation, drop, bn)
        loss = loss_grad(k, self.output, Z, y, dZ, sample_weight, self.label_smoothing)
        if not math.isfinite(loss):
            return loss
        backward(k, self.weights, X, acts, dZ, self.dweights, self.dbiases, deltas,
                 self.activation, drop, bn)
        params, grads, state = self.weights + self.biases, self.dweights + self.dbiases, \
            self.state
        if bn is not None:
            params, grads, state = params + list(bn.gammas), grads + list(bn.dgammas), \
                state + list(bn.state)
        update(k, params, grads, state, len(self.weights), self.optimizer, lr, step, eps=eps,
               weight_decay=weight_decay, **self.hyper)
        if bn is not None:
            for i in range(len(bn.gammas)):
                k.batch_norm_running(bn.means[i], bn.vars[i], m, bn.running_means[i],
                                     bn.running_vars[i], bn.momentum)
        return loss


# this module's kernels as an object, for TrainStep's default
_OWN = types.SimpleNamespace(**{n: globals()[n] for n in KERNEL_NAMES})
