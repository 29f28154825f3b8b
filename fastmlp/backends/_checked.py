"""Validation at the Python boundary of the compiled backends.

Design: a compiled backend provides a module of *raw* kernels that trust their input (same
names and argument order as docs/kernels.md; labels already int64, sample_weight already an
array of the logits' dtype or None).  `CheckedBackend` wraps such a module: each public method
validates dtype, contiguity, shapes, label range and scalar hyper-parameters, raising
TypeError/ValueError naming the argument, then calls the raw kernel.  The Model validates its
workspaces once and calls `backend.raw` directly in its hot loop.
"""
import math
import numbers

import numpy as np

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def check_float_array(name, a, ndim, dtype=None, writeable=False):
    """Require a C-contiguous float32/float64 ndarray of rank `ndim` (and `dtype` if given)."""
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{name} must be a numpy.ndarray, got {type(a).__name__}")
    if a.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name} must have dtype float32 or float64, got {a.dtype}")
    if dtype is not None and a.dtype != dtype:
        raise TypeError(f"{name} has dtype {a.dtype} but the other arrays are {dtype}; "
                        "use one dtype per call")
    if a.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {a.shape}")
    if not a.flags.c_contiguous:
        raise ValueError(f"{name} must be C-contiguous (use np.ascontiguousarray)")
    if writeable and not a.flags.writeable:
        raise ValueError(f"{name} is an output and must be writeable")
    return a.dtype


def check_shape(name, a, shape):
    if a.shape != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {a.shape}")


def check_labels(y, n, n_classes):
    """Integer labels of shape (n,) in [0, n_classes); returned as C-contiguous int64."""
    if not isinstance(y, np.ndarray):
        raise TypeError(f"y must be a numpy.ndarray of integers, got {type(y).__name__}")
    if y.dtype.kind not in "iu":
        raise TypeError(f"y must have an integer dtype, got {y.dtype}")
    if y.shape != (n,):
        raise ValueError(f"y must have shape ({n},), got {y.shape}")
    if n and (int(y.min()) < 0 or int(y.max()) >= n_classes):
        raise ValueError(f"y has labels outside [0, {n_classes}): "
                         f"min {int(y.min())}, max {int(y.max())}")
    return np.ascontiguousarray(y, dtype=np.int64)


def check_scalar(name, x, low=None, high=None, low_inclusive=True):
    """A finite real number, optionally bounded below/above; returned as float."""
    if isinstance(x, (bool, np.bool_)) or not isinstance(x, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(x).__name__}")
    x = float(x)
    if not math.isfinite(x):
        raise ValueError(f"{name} must be finite, got {x}")
    if low is not None and (x < low or (x == low and not low_inclusive)):
        op = ">=" if low_inclusive else ">"
        raise ValueError(f"{name} must be {op} {low}, got {x}")
    if high is not None and x > high:
        raise ValueError(f"{name} must be <= {high}, got {x}")
    return x


class CheckedBackend:
    """Public, validating face of a backend whose raw kernels live in `raw`."""

    def __init__(self, name, raw):
        self.name = name
        self.raw = raw

    def __repr__(self):
        return f"<fastmlp backend {self.name!r}>"

    def linear_forward(self, X, W, b, out, relu=False):
        dt = check_float_array("X", X, 2)
        check_float_array("W", W, 2, dt)
        check_float_array("b", b, 1, dt)
        check_float_array("out", out, 2, dt, writeable=True)
        n, d = X.shape
        if W.shape[0] != d:
            raise ValueError(f"W must have shape ({d}, H) to match X {X.shape}, got {W.shape}")
        h = W.shape[1]
        check_shape("b", b, (h,))
        check_shape("out", out, (n, h))
        return self.raw.linear_forward(X, W, b, out, bool(relu))

    def linear_backward(self, dY, X, W, dW, db, dX=None):
        dt = check_float_array("dY", dY, 2)
        check_float_array("X", X, 2, dt)
        check_float_array("W", W, 2, dt)
        check_float_array("dW", dW, 2, dt, writeable=True)
        check_float_array("db", db, 1, dt, writeable=True)
        n, h = dY.shape
        if X.shape[0] != n:
            raise ValueError(f"X must have {n} rows to match dY {dY.shape}, got {X.shape}")
        d = X.shape[1]
        check_shape("W", W, (d, h))
        check_shape("dW", dW, (d, h))
        check_shape("db", db, (h,))
        if dX is not None:
            check_float_array("dX", dX, 2, dt, writeable=True)
            check_shape("dX", dX, (n, d))
        return self.raw.linear_backward(dY, X, W, dW, db, dX)

    def relu_backward(self, dH, H):
        dt = check_float_array("dH", dH, 2, writeable=True)
        check_float_array("H", H, 2, dt)
        check_shape("H", H, dH.shape)
        return self.raw.relu_backward(dH, H)

    def softmax_xent_grad(self, Z, y, dZ, sample_weight=None):
        dt = check_float_array("Z", Z, 2)
        check_float_array("dZ", dZ, 2, dt, writeable=True)
        check_shape("dZ", dZ, Z.shape)
        n, c = Z.shape
        if n == 0 or c == 0:
            raise ValueError(f"Z must have at least one row and one column, got {Z.shape}")
        y = check_labels(y, n, c)
        if sample_weight is not None:
            sw = np.asarray(sample_weight)
            if sw.dtype.kind not in "fiu":
                raise TypeError(f"sample_weight must be numeric, got {sw.dtype}")
            if sw.shape != (n,):
                raise ValueError(f"sample_weight must have shape ({n},), got {sw.shape}")
            sample_weight = np.ascontiguousarray(sw, dtype=dt)
            if not np.all(np.isfinite(sample_weight)) or np.any(sample_weight < 0):
                raise ValueError("sample_weight must be finite and non-negative")
            if not np.sum(sample_weight, dtype=np.float64) > 0:
                raise ValueError("sample_weight must have a positive sum")
        return self.raw.softmax_xent_grad(Z, y, dZ, sample_weight)

    def _check_param_and_grad(self, W, dW):
        if not isinstance(W, np.ndarray):
            raise TypeError(f"W must be a numpy.ndarray, got {type(W).__name__}")
        dt = check_float_array("W", W, W.ndim, writeable=True)
        check_float_array("dW", dW, W.ndim, dt)
        check_shape("dW", dW, W.shape)
        return dt

    def _check_state(self, name, s, W, dt):
        check_float_array(name, s, W.ndim, dt, writeable=True)
        check_shape(name, s, W.shape)

    def sgd_update(self, W, dW, lr, weight_decay=0.0, velocity=None, momentum=0.0,
                   nesterov=False):
        dt = self._check_param_and_grad(W, dW)
        lr = check_scalar("lr", lr, low=0.0)
        weight_decay = check_scalar("weight_decay", weight_decay, low=0.0)
        momentum = check_scalar("momentum", momentum, low=0.0, high=1.0)
        if velocity is not None:
            self._check_state("velocity", velocity, W, dt)
        elif momentum > 0:
            raise ValueError("velocity is required when momentum > 0")
        elif nesterov:
            raise ValueError("nesterov needs momentum > 0 and a velocity buffer")
        return self.raw.sgd_update(W, dW, lr, weight_decay, velocity, momentum, bool(nesterov))

    def adam_update(self, W, dW, m, v, step, lr, beta1=0.9, beta2=0.999, eps=1e-8,
                    weight_decay=0.0):
        dt = self._check_param_and_grad(W, dW)
        self._check_state("m", m, W, dt)
        self._check_state("v", v, W, dt)
        if isinstance(step, (bool, np.bool_)) or not isinstance(step, numbers.Integral):
            raise TypeError(f"step must be an integer, got {type(step).__name__}")
        if step < 1:
            raise ValueError(f"step must be >= 1, got {step}")
        lr = check_scalar("lr", lr, low=0.0)
        beta1 = check_scalar("beta1", beta1, low=0.0, high=1.0)
        beta2 = check_scalar("beta2", beta2, low=0.0, high=1.0)
        if beta1 >= 1.0 or beta2 >= 1.0:
            raise ValueError("beta1 and beta2 must be < 1")
        eps = check_scalar("eps", eps, low=0.0, low_inclusive=False)
        weight_decay = check_scalar("weight_decay", weight_decay, low=0.0)
        return self.raw.adam_update(W, dW, m, v, int(step), lr, beta1, beta2, eps, weight_decay)
