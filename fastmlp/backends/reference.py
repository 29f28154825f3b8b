"""NumPy reference backend: the plain, readable oracle for every kernel.

Design: one function per kernel of the contract in docs/kernels.md, written with ordinary
NumPy expressions.  It may allocate temporaries; it accepts any memory layout.  The compiled
backends are tested against these functions, so clarity beats speed here.
"""
import math
import sys

import numpy as np

from ._step import ComposedTrainStep

name = "numpy"


def linear_forward(X, W, b, out, relu=False):
    """out = X @ W + b, then ReLU if asked.

    X (N, D), W (D, H), b (H,), out (N, H) written in place and returned.
    """
    np.matmul(X, W, out=out)
    out += b
    if relu:
        np.maximum(out, 0, out=out)
    return out


def linear_backward(dY, X, W, dW, db, dX=None):
    """dW = X.T @ dY, db = dY.sum(0), dX = dY @ W.T when dX is given.

    dY (N, H), X (N, D), W (D, H), dW (D, H), db (H,), dX (N, D).  Returns dW.
    """
    np.matmul(X.T, dY, out=dW)
    np.sum(dY, axis=0, out=db)
    if dX is not None:
        np.matmul(dY, W.T, out=dX)
    return dW


def relu_backward(dH, H):
    """dH[H <= 0] = 0 in place, H being the ReLU output.  dH, H (N, H).  Returns dH."""
    dH[H <= 0] = 0
    return dH


def softmax_xent_grad(Z, y, dZ, sample_weight=None):
    """Mean negative log-likelihood of softmax(Z) at labels y; dZ = its gradient w.r.t. Z.

    Z (N, C) logits, y (N,) integer labels in [0, C), dZ (N, C) written in place,
    sample_weight (N,) or None.  Returns the loss as a Python float (accumulated in float64).
    """
    n = Z.shape[0]
    rows = np.arange(n)
    shifted = Z - Z.max(axis=1, keepdims=True)
    log_norm = np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    log_p = shifted - log_norm
    nll = -log_p[rows, y].astype(np.float64)
    if sample_weight is None:
        w = np.ones(n, dtype=Z.dtype)
        total = float(n)
    else:
        w = np.asarray(sample_weight, dtype=Z.dtype)
        total = float(np.sum(w, dtype=np.float64))
    dZ[...] = np.exp(log_p)
    dZ[rows, y] -= 1
    dZ *= (w / Z.dtype.type(total))[:, None]
    return float(np.dot(w.astype(np.float64), nll) / total)


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


class TrainStep(ComposedTrainStep):
    """One whole training step composed from the kernels above (docs/kernels.md): the oracle
    of the compiled backends' fused TrainStep."""

    def __init__(self, *args, **kwargs):
        super().__init__(sys.modules[__name__], *args, **kwargs)
