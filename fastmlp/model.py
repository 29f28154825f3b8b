"""MLP: parameters, preallocated workspaces, forward/backward driven by a backend's kernels.

Design: `MLP` owns the parameters (weights[i] of shape (fan_in, fan_out), biases[i] of shape
(fan_out,)) and gradient buffers of the same shapes.  A `Workspace` holds everything one
training step writes for a batch of at most `n` rows (the gathered batch, activations,
back-propagated deltas); smaller batches use cached row-slices of it, which stay C-contiguous.
`MLP._loss_grad` runs forward + backward on a filled workspace with the backend's raw
(unchecked) kernels, composed by the reference's `forward` / `backward` (the one composition
of the package), and allocates nothing; everything public validates its input first.
"""
import os
import tempfile

import numpy as np

from .backends import get_backend, reference
from .backends import validation as V

FORMAT_VERSION = 1
_INFER_CHUNK = 4096


def softmax_rows(Z):
    """Row-wise softmax of logits Z (N, C), in place; returns Z."""
    Z -= Z.max(axis=1, keepdims=True)
    np.exp(Z, out=Z)
    Z /= Z.sum(axis=1, keepdims=True)
    return Z


class ModelFileError(ValueError):
    """A model file is missing pieces, corrupt, truncated or does not match."""


class Workspace:
    """Buffers for one training step on up to `n` rows of a network with `sizes`.

    X (n, sizes[0]); y (n,) int64; acts[i] (n, sizes[i+1]) (the last is the logits);
    deltas[i] (n, sizes[i]) for i >= 1 (gradient w.r.t. layer i's input); dZ (n, sizes[-1]);
    pred (n,) intp and hit (n,) bool for the running accuracy.
    """

    def __init__(self, sizes, n, dtype):
        self.n = n
        self.X = np.empty((n, sizes[0]), dtype)
        self.y = np.empty(n, np.int64)
        self.acts = [np.empty((n, s), dtype) for s in sizes[1:]]
        self.deltas = [None] + [np.empty((n, s), dtype) for s in sizes[1:-1]]
        self.dZ = np.empty((n, sizes[-1]), dtype)
        self.pred = np.empty(n, np.intp)
        self.hit = np.empty(n, np.bool_)
        self._views = {n: self}

    def rows(self, m):
        """The workspace for the first m rows (cached, so steady state allocates nothing)."""
        view = self._views.get(m)
        if view is None:
            if not 0 < m <= self.n:
                raise ValueError(f"batch of {m} rows does not fit a workspace of {self.n}")
            view = object.__new__(Workspace)
            view.n = m
            view.X, view.y, view.dZ = self.X[:m], self.y[:m], self.dZ[:m]
            view.pred, view.hit = self.pred[:m], self.hit[:m]
            view.acts = [a[:m] for a in self.acts]
            view.deltas = [None] + [d[:m] for d in self.deltas[1:]]
            view._views = {m: view}
            self._views[m] = view
        return view


class MLP:
    """A ReLU multilayer perceptron with a softmax cross-entropy output.

    Parameters
    ----------
    layer_sizes : sequence of int, length >= 2
        (n_features, hidden_1, ..., n_classes).
    dtype : float32 (default) or float64
    seed : int or None
        Seeds the initialisation: He normal (std sqrt(2 / fan_in)) for layers followed by a
        ReLU, LeCun normal (std sqrt(1 / fan_in)) for the output layer; biases are zero.
    backend : "auto", "numpy", "numba", "cython", or a backend from `get_backend`
    """

    def __init__(self, layer_sizes=(784, 256, 10), dtype=np.float32, seed=0, backend="auto"):
        sizes = tuple(layer_sizes) if np.iterable(layer_sizes) else None
        if not sizes or len(sizes) < 2:
            raise ValueError(f"layer_sizes needs at least 2 entries (inputs, outputs), "
                             f"got {layer_sizes!r}")
        for s in sizes:
            V.check_number("layer_sizes entry", s, low=1, integer=True)
        self.layer_sizes = tuple(int(s) for s in sizes)
        self.dtype = V.check_dtype(dtype)
        self.backend = get_backend(backend)
        rng = np.random.default_rng(seed)
        self.weights, self.biases = [], []
        for i, (fan_in, fan_out) in enumerate(zip(self.layer_sizes[:-1], self.layer_sizes[1:])):
            gain = 2.0 if i < self.n_layers - 1 else 1.0
            W = rng.standard_normal((fan_in, fan_out)) * np.sqrt(gain / fan_in)
            self.weights.append(np.ascontiguousarray(W, dtype=self.dtype))
            self.biases.append(np.zeros(fan_out, self.dtype))
        self.dweights = [np.zeros_like(W) for W in self.weights]
        self.dbiases = [np.zeros_like(b) for b in self.biases]

    # ---- shapes ----------------------------------------------------------------------------
    @property
    def n_layers(self):
        """Number of weight layers (len(layer_sizes) - 1)."""
        return len(self.layer_sizes) - 1

    @property
    def n_features(self):
        return self.layer_sizes[0]

    @property
    def n_classes(self):
        return self.layer_sizes[-1]

    def __repr__(self):
        return (f"MLP(layer_sizes={self.layer_sizes}, dtype={self.dtype.name}, "
                f"backend={self.backend.name!r})")

    def workspace(self, n):
        """A new training workspace for batches of up to n rows."""
        return Workspace(self.layer_sizes, n, self.dtype)

    # ---- the hot path (no validation, no allocation) ---------------------------------------
    def _loss_grad(self, ws, X, y, sample_weight=None):
        """Forward and backward on batch X (m, D), y (m,) int64 with workspace rows ws.

        Fills self.dweights / self.dbiases with the gradient of the mean NLL (no penalty)
        and returns that loss."""
        raw = self.backend.raw
        logits = reference.forward(raw, self.weights, self.biases, X, ws.acts)
        loss = raw.softmax_xent_grad(logits, y, ws.dZ, sample_weight)
        reference.backward(raw, self.weights, X, ws.acts, ws.dZ, self.dweights, self.dbiases,
                           ws.deltas)
        return loss

    def _n_correct(self, ws, y):
        """Correct predictions among the logits currently in ws (no allocation)."""
        np.argmax(ws.acts[-1], axis=1, out=ws.pred)
        np.equal(ws.pred, y, out=ws.hit)
        return int(np.count_nonzero(ws.hit))

    # ---- public API -----------------------------------------------------------------------
    def forward(self, X):
        """Logits of X.  X (N, n_features) -> (N, n_classes), in the model's dtype."""
        return self._forward(V.check_X(X, self.n_features, self.dtype))

    def _forward(self, X):
        """forward() on X already validated by check_X (C-contiguous, model dtype, finite)."""
        n = X.shape[0]
        out = np.empty((n, self.n_classes), self.dtype)
        raw, last = self.backend.raw, self.n_layers - 1
        chunk = min(n, _INFER_CHUNK)
        bufs = [np.empty((chunk, s), self.dtype) for s in self.layer_sizes[1:-1]]
        for s in range(0, n, chunk):
            e = min(n, s + chunk)
            a = X[s:e]
            for i in range(self.n_layers):
                dst = out[s:e] if i == last else bufs[i][: e - s]
                raw.linear_forward(a, self.weights[i], self.biases[i], dst, i < last)
                a = dst
        return out

    def predict_proba(self, X):
        """Class probabilities (N, n_classes)."""
        return softmax_rows(self.forward(X))

    def predict(self, X):
        """Predicted class indices (N,) int64."""
        return np.argmax(self.forward(X), axis=1).astype(np.int64)

    def score(self, X, y):
        """Mean accuracy on (X, y)."""
        X = V.check_X(X, self.n_features, self.dtype)
        y = V.check_labels(y, X.shape[0], self.n_classes, convert=True)
        return float(np.mean(np.argmax(self._forward(X), axis=1) == y))

    def penalty(self, weight_decay):
        """weight_decay * sum over layers of ||W||^2 (biases are not decayed)."""
        if not weight_decay:
            return 0.0
        return weight_decay * sum(float(np.dot(W.reshape(-1), W.reshape(-1)))
                                  for W in self.weights)

    def loss_and_grads(self, X, y, weight_decay=0.0, sample_weight=None):
        """Mean NLL + weight_decay * sum ||W||^2 on (X, y), and its gradients.

        Returns (loss, dweights, dbiases): new arrays shaped like weights / biases."""
        X = V.check_X(X, self.n_features, self.dtype)
        y = V.check_labels(y, X.shape[0], self.n_classes, convert=True)
        wd = V.check_number("weight_decay", weight_decay, low=0.0)
        sw = None if sample_weight is None else \
            V.check_sample_weight(sample_weight, X.shape[0], self.dtype)
        ws = self.workspace(X.shape[0])
        loss = self._loss_grad(ws, X, y, sw) + self.penalty(wd)
        dW = [g + (2 * wd) * W if wd else g.copy() for g, W in zip(self.dweights, self.weights)]
        return loss, dW, [g.copy() for g in self.dbiases]

    # ---- persistence ----------------------------------------------------------------------
    def save(self, path):
        """Write the model to `path` (.npz, no pickled objects) atomically: a temporary file in
        the same folder, flushed and fsync'ed, then renamed over the target."""
        path = os.fspath(path)
        arrays = {"format_version": np.array(FORMAT_VERSION),
                  "layer_sizes": np.array(self.layer_sizes, np.int64),
                  "dtype": np.array(self.dtype.name)}
        for i, (W, b) in enumerate(zip(self.weights, self.biases)):
            arrays[f"W{i}"], arrays[f"b{i}"] = W, b
        folder = os.path.dirname(os.path.abspath(path))
        fd, tmp = tempfile.mkstemp(prefix=".fastmlp-", suffix=".npz.tmp", dir=folder)
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez(f, **arrays)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
        return path

    @classmethod
    def load(cls, path, backend="auto"):
        """Read a model written by `save`; ModelFileError if it is corrupt or inconsistent."""
        path = os.fspath(path)
        try:
            with np.load(path, allow_pickle=False) as f:
                arrays = {k: f[k] for k in f.files}
        except (FileNotFoundError, IsADirectoryError, PermissionError):
            raise
        except MemoryError:
            raise ModelFileError(f"{path}: an array in the file is too large to load") from None
        except Exception as exc:  # zipfile/zlib/npy errors of every kind: a damaged file
            raise ModelFileError(f"{path}: not a readable fastmlp model file "
                                 f"({type(exc).__name__}: {exc})") from None
        return cls._from_arrays(arrays, path, backend)

    @classmethod
    def _from_arrays(cls, arrays, path, backend):
        def fail(msg):
            raise ModelFileError(f"{path}: {msg}")
        for key in ("format_version", "layer_sizes", "dtype"):
            if key not in arrays:
                fail(f"missing '{key}'")
        version = arrays["format_version"]
        if version.shape != () or version.dtype.kind not in "iu" or int(version) != FORMAT_VERSION:
            fail(f"format version {version!r}, expected {FORMAT_VERSION}")
        sizes = arrays["layer_sizes"]
        if sizes.ndim != 1 or sizes.size < 2 or sizes.dtype.kind not in "iu" or np.any(sizes < 1):
            fail(f"bad layer_sizes {sizes!r}")
        dtype_name = str(arrays["dtype"])
        if dtype_name not in ("float32", "float64"):
            fail(f"bad dtype {dtype_name!r}")
        n_layers = sizes.size - 1
        expected = {"format_version", "layer_sizes", "dtype"} | \
            {f"{p}{i}" for i in range(n_layers) for p in "Wb"}
        if set(arrays) != expected:
            fail(f"arrays {sorted(set(arrays) ^ expected)} do not match layer_sizes "
                 f"{sizes.tolist()}")
        sizes = [int(s) for s in sizes]
        for i in range(n_layers):  # check every array before allocating a model
            for name, shape in ((f"W{i}", (sizes[i], sizes[i + 1])), (f"b{i}", (sizes[i + 1],))):
                a = arrays[name]
                if a.shape != shape or a.dtype != np.dtype(dtype_name):
                    fail(f"{name} has shape {a.shape} dtype {a.dtype}, expected "
                         f"{shape} {dtype_name}")
                if not V.all_finite(a):
                    fail(f"{name} contains NaN or infinity")
        model = cls(sizes, dtype=dtype_name, seed=0, backend=backend)
        for i in range(n_layers):
            model.weights[i][...] = arrays[f"W{i}"]
            model.biases[i][...] = arrays[f"b{i}"]
        return model
