"""Inference without allocation: MLP.forward / predict_proba / predict on validated input.

Design: the rows go through the network in chunks of at most `chunk_rows` rows (as many as
fit CHUNK_BYTES of activations, at least MIN_CHUNK: one big GEMM per layer is faster than
several small ones, and the buffers stay bounded).  Each thread keeps,
per model, one set of buffers sized for the largest chunk it has run (hidden activations
(m, H_i), logits (m, C), one (m, 1) row scratch) and cached row-views of them for each chunk
size it has met (`Buffers.rows`), so a repeated call with the same number of rows allocates
nothing but the array it returns.  The cache is a `threading.local` on the model: threads
predicting with one shared model never share a buffer, and no lock is taken.  It pickles and
copies as an empty cache.  The forward pass is the reference's composition of the backend's
raw kernels (`reference.forward`), as in training; the output's finishing step (softmax,
logistic, argmax, threshold, exp) runs on each chunk in place.  A model that standardises its
inputs (MLP(standardize=True)) has one more buffer, xs (m, n_features): each chunk is
standardised into it (two ufuncs, which take only NumPy's fixed iteration buffer for the
broadcast statistics) and the network reads it instead of the caller's rows.  A batch_norm
model runs its hidden layers with the running estimates folded into W and b
(`MLP.inference_params`, made once per call).
"""
import threading

import numpy as np

from .backends import reference
from .backends.csr import CSR

CHUNK_BYTES = 16 << 20   # activations of one chunk, per thread and model
MIN_CHUNK = 256
_MAX_VIEWS = 16   # row counts whose views a thread keeps per model (the rest are rebuilt)


class Buffers:
    """acts: one (m, s) array per hidden layer and a free slot for the output layer's
    pre-activation; Z (m, C) logits (or the row statistics broadcast for the softmax);
    scratch (m, 1); mask (m, C) bool; xs (m, n_features) the standardised input rows (None
    unless `standardize`).  All but the mask in the model's dtype."""

    __slots__ = ("m", "acts", "Z", "scratch", "mask", "xs", "views")

    def __init__(self, sizes, m, dtype, standardize=False):
        self.m = m
        self.xs = np.empty((m, sizes[0]), dtype) if standardize else None
        self.acts = [np.empty((m, s), dtype) for s in sizes[1:-1]] + [None]
        self.Z = np.empty((m, sizes[-1]), dtype)
        self.scratch = np.empty((m, 1), dtype)
        self.mask = np.empty((m, sizes[-1]), np.bool_)
        self.views = {m: self}

    def rows(self, m):
        """The buffers' first m rows (m <= self.m), cached."""
        view = self.views.get(m)
        if view is None:
            if len(self.views) >= _MAX_VIEWS:
                self.views = {self.m: self}
            view = object.__new__(Buffers)
            view.m, view.views = m, None
            view.acts = [a[:m] for a in self.acts[:-1]] + [None]
            view.Z, view.scratch, view.mask = self.Z[:m], self.scratch[:m], self.mask[:m]
            view.xs = None if self.xs is None else self.xs[:m]
            self.views[m] = view
        return view


class InferenceCache:
    """Per-thread Buffers of one model (see the module's docstring)."""

    def __init__(self):
        self._local = threading.local()

    def __reduce__(self):   # pickle / copy as a fresh, empty cache
        return (InferenceCache, ())

    def buffers(self, model, m, standardize=False):
        """This thread's buffers for chunks of m rows of `model` (with xs if `standardize`)."""
        own = getattr(self._local, "buffers", None)
        if own is None or own.m < m or (standardize and own.xs is None):
            own = self._local.buffers = Buffers(model.layer_sizes, max(m, 1), model.dtype,
                                                standardize)
        return own.rows(m)


def _cache(model):
    """The model's InferenceCache, made on first use (dict.setdefault: one per model even
    when threads race to make it)."""
    cache = model.__dict__.get("_inference")
    return cache if cache is not None else \
        model.__dict__.setdefault("_inference", InferenceCache())


def chunk_rows(model):
    """Rows per chunk: CHUNK_BYTES of hidden activations, logits and scratch (and the
    standardised inputs of a standardize model), >= MIN_CHUNK."""
    inputs = model.n_features if model.standardize else 0
    row = (sum(model.layer_sizes[1:]) + 1 + inputs) * model.dtype.itemsize
    return max(MIN_CHUNK, CHUNK_BYTES // row)


def _softmax(Z, scratch, wide):
    """Row-wise softmax of Z (m, C) in place, with scratch (m, 1) and wide (m, C).  The row
    statistics are copied out to `wide` first: a ufunc broadcasting an (m, 1) operand takes
    a buffer of its own; the ufuncs' reduce, not np.max / np.sum, whose wrappers cost more
    than the work on a few rows."""
    np.maximum.reduce(Z, axis=1, keepdims=True, out=scratch)
    np.copyto(wide, scratch)
    np.subtract(Z, wide, out=Z)
    np.exp(Z, out=Z)
    np.add.reduce(Z, axis=1, keepdims=True, out=scratch)
    np.copyto(wide, scratch)
    np.divide(Z, wide, out=Z)


def _finish(model, what, Z, buf, out):
    """Turn the chunk's logits Z into `what` ('logits', 'proba', 'predict') in `out`."""
    if what == "logits":
        return
    output = model.output
    if what == "proba":
        if output == "softmax":
            _softmax(Z, buf.scratch, buf.Z)   # Z is the caller's array here, buf.Z is free
        else:
            reference.activate(Z, "logistic")
    elif output == "softmax":
        np.argmax(Z, axis=1, out=out)
    elif output == "logistic":
        np.greater(Z, 0, out=buf.mask)
        np.copyto(out, buf.mask)         # (a casting ufunc would take a buffer)
    elif output == "exp":
        with np.errstate(over="ignore"):
            np.exp(Z, out=Z)


def run(model, X, what="logits", standardize=False):
    """What `model` gives for X (N, n_features), validated by check_X (C-contiguous in the
    model's dtype, or a CSR): 'logits' (N, C), 'proba' (N, C) or 'predict' ((N,) int64 for
    softmax, (N, C) int64 for logistic, (N, C) values otherwise).  standardize: feed the
    network (X - input_mean) / input_scale (dense X; ValueError without the statistics).
    Returns a new array; allocates nothing else once this thread has run the same number of
    rows."""
    if standardize:
        model._refuse_sparse(X)
        mean, scale = model._input_stats()
    n, C = X.shape[0], model.n_outputs
    labels = what == "predict" and model.output in ("softmax", "logistic")
    if labels:
        out = np.empty(n if model.output == "softmax" else (n, C), np.int64)
    else:
        out = np.empty((n, C), model.dtype)
    chunk = min(n, chunk_rows(model))
    cache = _cache(model)
    raw = model.backend.raw
    weights, biases = model.inference_params()   # a batch_norm model's folded layers
    for s in range(0, n, chunk):
        e = min(n, s + chunk)
        buf = cache.buffers(model, e - s, standardize)
        rows = X.rows(s, e) if isinstance(X, CSR) else (X if e - s == n else X[s:e])
        if standardize:
            np.subtract(rows, mean, out=buf.xs)
            rows = np.divide(buf.xs, scale, out=buf.xs)
        dst = out if e - s == n else out[s:e]
        Z = buf.Z if labels else dst
        buf.acts[-1] = Z
        try:
            reference.forward(raw, weights, biases, rows, buf.acts, model.activation)
        finally:
            buf.acts[-1] = None   # never keep the caller's array alive
        _finish(model, what, Z, buf, dst)
    return out
