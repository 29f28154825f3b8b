"""The checked face of a compiled backend: validation at its Python boundary.

Design: a compiled backend provides a module of *raw* kernels that trust their input (the
names and argument order of contract.KERNELS; labels already int64, sample_weight already an
array of the logits' dtype or None).  `CheckedBackend` wraps such a module: each public method
validates dtype, contiguity, shapes, label range and scalar hyper-parameters with the
validators of validation.py, raising TypeError/ValueError naming the argument, then calls the
raw kernel.  The Model validates its workspaces once and calls `backend.raw` directly in its
hot loop.
"""
import numpy as np

from .contract import activation_code
from .validation import (check_float_array, check_labels, check_number, check_sample_weight,
                         check_shape)


class CheckedBackend:
    """Public, validating face of a backend whose raw kernels live in `raw`."""

    def __init__(self, name, raw):
        self.name = name
        self.raw = raw

    def __repr__(self):
        return f"<fastmlp backend {self.name!r}>"

    def linear_forward(self, X, W, b, out, activation="identity"):
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
        activation_code(activation)
        return self.raw.linear_forward(X, W, b, out, activation)

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

    def activation_backward(self, dH, H, activation="relu"):
        dt = check_float_array("dH", dH, 2, writeable=True)
        check_float_array("H", H, 2, dt)
        check_shape("H", H, dH.shape)
        activation_code(activation)
        return self.raw.activation_backward(dH, H, activation)

    def _check_loss(self, Z, dZ, sample_weight):
        """dtype and (n, c) of a loss kernel's logits, and its sample_weight checked."""
        dt = check_float_array("Z", Z, 2)
        check_float_array("dZ", dZ, 2, dt, writeable=True)
        check_shape("dZ", dZ, Z.shape)
        n, c = Z.shape
        if n == 0 or c == 0:
            raise ValueError(f"Z must have at least one row and one column, got {Z.shape}")
        if sample_weight is not None:
            sample_weight = check_sample_weight(sample_weight, n, dt)
        return dt, sample_weight

    def _check_values(self, name, Y, Z, dt):
        check_float_array(name, Y, 2, dt)
        check_shape(name, Y, Z.shape)

    def softmax_xent_grad(self, Z, y, dZ, sample_weight=None):
        dt, sample_weight = self._check_loss(Z, dZ, sample_weight)
        y = check_labels(y, *Z.shape)
        return self.raw.softmax_xent_grad(Z, y, dZ, sample_weight)

    def logistic_xent_grad(self, Z, Y, dZ, sample_weight=None):
        dt, sample_weight = self._check_loss(Z, dZ, sample_weight)
        self._check_values("Y", Y, Z, dt)
        return self.raw.logistic_xent_grad(Z, Y, dZ, sample_weight)

    def squared_error_grad(self, Z, Y, dZ, sample_weight=None):
        dt, sample_weight = self._check_loss(Z, dZ, sample_weight)
        self._check_values("Y", Y, Z, dt)
        return self.raw.squared_error_grad(Z, Y, dZ, sample_weight)

    def poisson_grad(self, Z, Y, dZ, sample_weight=None):
        dt, sample_weight = self._check_loss(Z, dZ, sample_weight)
        self._check_values("Y", Y, Z, dt)
        return self.raw.poisson_grad(Z, Y, dZ, sample_weight)

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
        lr = check_number("lr", lr, low=0.0)
        weight_decay = check_number("weight_decay", weight_decay, low=0.0)
        momentum = check_number("momentum", momentum, low=0.0, high=1.0)
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
        step = check_number("step", step, low=1, integer=True)
        lr = check_number("lr", lr, low=0.0)
        beta1 = check_number("beta1", beta1, low=0.0, high=1.0)
        beta2 = check_number("beta2", beta2, low=0.0, high=1.0)
        if beta1 >= 1.0 or beta2 >= 1.0:
            raise ValueError("beta1 and beta2 must be < 1")
        eps = check_number("eps", eps, low=0.0, low_inclusive=False)
        weight_decay = check_number("weight_decay", weight_decay, low=0.0)
        return self.raw.adam_update(W, dW, m, v, step, lr, beta1, beta2, eps, weight_decay)
