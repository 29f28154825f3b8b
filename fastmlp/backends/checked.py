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

from .contract import (MAX_DROPOUT_LAYERS, activation_code, check_bn_settings,
                       check_label_smoothing, check_seed)
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

    def _check_csr(self, data, indices, indptr, n_cols, dtype=None, name="X"):
        """A CSR matrix's arrays: data (nnz,) float, indices (nnz,) and indptr (N+1,) int64,
        offsets non-decreasing within [0, nnz], the indices they cover in [0, n_cols).
        Returns (dtype, N)."""
        dt = check_float_array("data", data, 1, dtype)
        for nm, a in (("indices", indices), ("indptr", indptr)):
            if not isinstance(a, np.ndarray) or a.dtype != np.int64:
                raise TypeError(f"{nm} must be an int64 numpy.ndarray, got "
                                f"{getattr(a, 'dtype', type(a).__name__)}")
            if a.ndim != 1 or not a.flags.c_contiguous:
                raise ValueError(f"{nm} must be 1-D and C-contiguous, got shape {a.shape}")
        if indices.shape != data.shape:
            raise ValueError(f"indices must have data's shape {data.shape}, got {indices.shape}")
        if indptr.size < 1:
            raise ValueError("indptr must have n_rows + 1 >= 1 entries")
        if np.any(np.diff(indptr) < 0) or indptr[0] < 0 or indptr[-1] > data.size:
            raise ValueError(f"indptr must be non-decreasing offsets within [0, {data.size}]")
        used = indices[indptr[0]:indptr[-1]]
        if used.size and (used.min() < 0 or used.max() >= n_cols):
            raise ValueError(f"{name} has column indices outside [0, {n_cols})")
        return dt, indptr.size - 1

    def csr_linear_forward(self, data, indices, indptr, W, b, out, activation="identity"):
        dt = check_float_array("W", W, 2)
        self._check_csr(data, indices, indptr, W.shape[0], dt)
        check_float_array("b", b, 1, dt)
        check_float_array("out", out, 2, dt, writeable=True)
        h = W.shape[1]
        check_shape("b", b, (h,))
        check_shape("out", out, (indptr.size - 1, h))
        activation_code(activation)
        return self.raw.csr_linear_forward(data, indices, indptr, W, b, out, activation)

    def csr_linear_backward(self, dY, data, indices, indptr, dW, db):
        dt = check_float_array("dY", dY, 2)
        check_float_array("dW", dW, 2, dt, writeable=True)
        check_float_array("db", db, 1, dt, writeable=True)
        _, n = self._check_csr(data, indices, indptr, dW.shape[0], dt)
        check_shape("dY", dY, (n, dW.shape[1]))
        check_shape("db", db, (dW.shape[1],))
        return self.raw.csr_linear_backward(dY, data, indices, indptr, dW, db)

    def csr_gather_rows(self, data, indices, indptr, rows, out_data, out_indices, out_indptr):
        dt, n = self._check_csr(data, indices, indptr, np.iinfo(np.int64).max)
        rows = check_labels(rows, rows.shape[0] if isinstance(rows, np.ndarray) else -1, n,
                            name="rows")
        check_float_array("out_data", out_data, 1, dt, writeable=True)
        for nm, a in (("out_indices", out_indices), ("out_indptr", out_indptr)):
            if not isinstance(a, np.ndarray) or a.dtype != np.int64 or a.ndim != 1 \
                    or not a.flags.c_contiguous or not a.flags.writeable:
                raise TypeError(f"{nm} must be a writeable 1-D C-contiguous int64 array")
        check_shape("out_indptr", out_indptr, (rows.size + 1,))
        need = int(np.sum(indptr[rows + 1] - indptr[rows]))
        if out_data.size < need or out_indices.size < need:
            raise ValueError(f"out_data and out_indices need room for {need} entries, have "
                             f"{min(out_data.size, out_indices.size)}")
        return self.raw.csr_gather_rows(data, indices, indptr, rows, out_data, out_indices,
                                        out_indptr)

    def gather_rows(self, X, rows, out, mean=None, scale=None):
        if isinstance(X, np.ndarray) and X.dtype == np.uint16:   # bf16 bits: a plain copy
            if mean is not None or scale is not None:
                raise ValueError("X holds bf16 bits (uint16): gather_rows copies them, with "
                                 "no mean or scale")
            for name, a, w in (("X", X, False), ("out", out, True)):
                if not isinstance(a, np.ndarray) or a.dtype != np.uint16 or a.ndim != 2 \
                        or not a.flags.c_contiguous or (w and not a.flags.writeable):
                    raise TypeError(f"{name} must be a{' writeable' if w else ''} 2-D "
                                    "C-contiguous uint16 array (X holds bf16 bits)")
            dt = None
        else:
            dt = check_float_array("X", X, 2)
        n, d = X.shape
        rows = check_labels(rows, rows.shape[0] if isinstance(rows, np.ndarray) else -1, n,
                            name="rows")
        if dt is not None:
            check_float_array("out", out, 2, dt, writeable=True)
        check_shape("out", out, (rows.size, d))
        if (mean is None) != (scale is None):
            raise ValueError("give both mean and scale, or neither")
        stats = () if mean is None else (("mean", mean), ("scale", scale))
        for name, a in stats:
            check_float_array(name, a, 1, dt)
            check_shape(name, a, (d,))
        for name, a in (("X", X), ("rows", rows)) + stats:
            if np.shares_memory(out, a):
                raise ValueError(f"out must not overlap {name}")
        return self.raw.gather_rows(X, rows, out, mean, scale)

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

    def softmax_xent_grad(self, Z, y, dZ, sample_weight=None, label_smoothing=0.0):
        dt, sample_weight = self._check_loss(Z, dZ, sample_weight)
        y = check_labels(y, *Z.shape)
        label_smoothing = check_label_smoothing(label_smoothing)
        return self.raw.softmax_xent_grad(Z, y, dZ, sample_weight, label_smoothing)

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

    def to_bf16(self, x, out):
        if not isinstance(x, np.ndarray) or x.dtype != np.float32:
            raise TypeError(f"x must be a float32 numpy.ndarray, got "
                            f"{getattr(x, 'dtype', type(x).__name__)}")
        if not x.flags.c_contiguous:
            raise ValueError("x must be C-contiguous (use np.ascontiguousarray)")
        if not isinstance(out, np.ndarray) or out.dtype != np.uint16:
            raise TypeError(f"out must be a uint16 numpy.ndarray (bfloat16 bits), got "
                            f"{getattr(out, 'dtype', type(out).__name__)}")
        check_shape("out", out, x.shape)
        if not out.flags.c_contiguous or not out.flags.writeable:
            raise ValueError("out must be C-contiguous and writeable")
        return self.raw.to_bf16(x, out)

    def dropout(self, A, p, seed, step, layer):
        check_float_array("A", A, 2, writeable=True)
        p = check_number("p", p, low=0.0, high=1.0)
        if p >= 1.0:
            raise ValueError(f"p must be < 1 (the kept entries are scaled by 1 / (1 - p)), "
                             f"got {p}")
        seed = check_seed(seed, "seed")
        step = check_number("step", step, low=0, integer=True)
        layer = check_number("layer", layer, low=0, integer=True)
        if step >= 1 << 48 or layer >= MAX_DROPOUT_LAYERS:
            raise ValueError(f"step must be < 2**48 and layer < {MAX_DROPOUT_LAYERS}, got "
                             f"{step}, {layer}")
        return self.raw.dropout(A, p, seed, step, layer)

    def _check_bn_vectors(self, dt, h, **vectors):
        for name, (a, out) in vectors.items():
            check_float_array(name, a, 1, dt, writeable=out)
            check_shape(name, a, (h,))

    def batch_norm_forward(self, Z, gamma, beta, out, mean, var, eps=1e-5,
                           activation="identity"):
        dt = check_float_array("Z", Z, 2, writeable=True)
        check_float_array("out", out, 2, dt, writeable=True)
        check_shape("out", out, Z.shape)
        self._check_bn_vectors(dt, Z.shape[1], gamma=(gamma, False), beta=(beta, False),
                               mean=(mean, True), var=(var, True))
        if Z.shape[0] < 1:
            raise ValueError("Z needs at least one row (the batch's statistics)")
        if np.shares_memory(Z, out):
            raise ValueError("out must not overlap Z (Z becomes the normalised product)")
        check_bn_settings(0.0, eps)
        activation_code(activation)
        return self.raw.batch_norm_forward(Z, gamma, beta, out, mean, var, float(eps),
                                           activation)

    def batch_norm_backward(self, dY, Zhat, gamma, var, dgamma, dbeta, eps=1e-5):
        dt = check_float_array("dY", dY, 2, writeable=True)
        check_float_array("Zhat", Zhat, 2, dt)
        check_shape("Zhat", Zhat, dY.shape)
        self._check_bn_vectors(dt, dY.shape[1], gamma=(gamma, False), var=(var, False),
                               dgamma=(dgamma, True), dbeta=(dbeta, True))
        if dY.shape[0] < 1:
            raise ValueError("dY needs at least one row")
        if np.shares_memory(dY, Zhat):
            raise ValueError("dY must not overlap Zhat (dY becomes the gradient w.r.t. Z)")
        check_bn_settings(0.0, eps)
        return self.raw.batch_norm_backward(dY, Zhat, gamma, var, dgamma, dbeta, float(eps))

    def batch_norm_running(self, mean, var, n, running_mean, running_var, momentum=0.1):
        dt = check_float_array("mean", mean, 1)
        self._check_bn_vectors(dt, mean.shape[0], var=(var, False),
                               running_mean=(running_mean, True),
                               running_var=(running_var, True))
        n = check_number("n", n, low=1, integer=True)
        momentum, _ = check_bn_settings(momentum, 1.0)
        return self.raw.batch_norm_running(mean, var, n, running_mean, running_var, momentum)
