"""MLP: parameters, preallocated workspaces, forward/backward driven by a backend's kernels.

Design: `MLP` owns the parameters (weights[i] of shape (fan_in, fan_out), biases[i] of shape
(fan_out,)) and gradient buffers of the same shapes, and names its hidden activation and its
output layer (contract.ACTIVATIONS, contract.OUTPUTS), which fix the loss it is trained on.
A `Workspace` holds everything one training step writes for a batch of at most `n` rows (the
gathered batch and targets, activations, back-propagated deltas); smaller batches use cached
row-slices of it, which stay C-contiguous.  `MLP._loss_grad` runs forward + backward on a
filled workspace with the backend's raw (unchecked) kernels, composed by the reference's
`forward` / `loss_grad` / `backward` (the one composition of the package), and allocates
nothing; everything public validates its input first.  Prediction (forward, predict_proba,
predict) runs through per-thread cached buffers: inference.py.  Saving and loading:
persistence.py.

Input standardisation (standardize=True): the model owns input_mean and input_scale
(n_features,), statistics of its training set (`input_stats`), and every public entry point
that takes X feeds the network (X - input_mean) / input_scale, computed in the model's dtype
(subtract, then divide: the same bits as that NumPy expression).  The private paths
(`_loss_grad`, `_forward(..., standardized=True)`) take inputs already standardised.
"""
import numpy as np

from . import inference, persistence
from .backends import get_backend, reference
from .backends import validation as V
from .backends.contract import (OUTPUT_TARGETS, BatchNorm, activation_code, check_dropout,
                                output_code)
from .backends.csr import CSR, issparse
from .persistence import ModelFileError  # noqa: F401  (part of this module's API)


def input_stats(X):
    """(mean, scale), float64 arrays (D,), of the columns of dense X (N, D): the mean and the
    population standard deviation, both computed in float64 (the variance in blocks of rows,
    so no float64 copy of X is made); scale is 1 for a constant feature (scikit-learn's
    StandardScaler rule: a variance within the rounding error of its computation, i.e.
    var <= N eps var + (N eps mean)^2, counts as 0)."""
    n, d = X.shape
    mean = X.mean(axis=0, dtype=np.float64)
    rows = max(1, (4 << 20) // (8 * d))    # blocks of about 4 MB of float64
    block = np.empty((min(rows, n), d))
    ss = np.zeros(d)
    for s in range(0, n, rows):
        dev = block[:min(rows, n - s)]
        np.subtract(X[s:s + rows], mean, out=dev)
        np.multiply(dev, dev, out=dev)
        ss += dev.sum(axis=0)
    var = ss / n
    eps = np.finfo(np.float64).eps
    constant = var <= n * eps * var + (n * mean * eps) ** 2
    return mean, np.where(constant, 1.0, np.sqrt(var))


def softmax_rows(Z):
    """Row-wise softmax of logits Z (N, C), in place; returns Z."""
    Z -= Z.max(axis=1, keepdims=True)
    np.exp(Z, out=Z)
    Z /= Z.sum(axis=1, keepdims=True)
    return Z


class Workspace:
    """Buffers for one training step on up to `n` rows of a network with `sizes`.

    X (n, sizes[0]), or for sparse input (`x_capacity` an int) a CSR buffer of n rows with
    room for x_capacity stored entries; y (n,) int64 labels (softmax output) or (n, sizes[-1])
    values;
    acts[i] (n, sizes[i+1]) (the last is the output's pre-activation); deltas[i] (n, sizes[i])
    for i >= 1 (gradient w.r.t. layer i's input); dZ (n, sizes[-1]); pred (n,) intp, hit (n,)
    bool and out (n, sizes[-1]) bool for the running accuracy.  With `batch_norm`: zhats[i]
    (n, sizes[i+1]), means[i] and vars[i] (sizes[i+1],) per hidden layer (contract.BatchNorm's
    workspace; empty lists without it).
    """

    def __init__(self, sizes, n, dtype, output="softmax", x_capacity=None, batch_norm=False):
        self.n, self.x_capacity = n, x_capacity
        self.X = np.empty((n, sizes[0]), dtype) if x_capacity is None else \
            CSR.empty(n, sizes[0], x_capacity, dtype)
        self.y = np.empty(n, np.int64) if OUTPUT_TARGETS[output] == "labels" else \
            np.empty((n, sizes[-1]), dtype)
        self.acts = [np.empty((n, s), dtype) for s in sizes[1:]]
        self.deltas = [None] + [np.empty((n, s), dtype) for s in sizes[1:-1]]
        self.dZ = np.empty((n, sizes[-1]), dtype)
        self.pred = np.empty(n, np.intp)
        self.hit = np.empty(n, np.bool_)
        self.out = np.empty((n, sizes[-1]), np.bool_)
        hidden = sizes[1:-1] if batch_norm else ()
        self.zhats = [np.empty((n, s), dtype) for s in hidden]
        self.means = [np.empty(s, dtype) for s in hidden]
        self.vars = [np.empty(s, dtype) for s in hidden]
        self._views = {n: self}

    def rows(self, m):
        """The workspace for the first m rows (cached, so steady state allocates nothing)."""
        view = self._views.get(m)
        if view is None:
            if not 0 < m <= self.n:
                raise ValueError(f"batch of {m} rows does not fit a workspace of {self.n}")
            view = object.__new__(Workspace)
            view.n, view.x_capacity = m, self.x_capacity
            view.X = self.X[:m] if self.x_capacity is None else \
                CSR(self.X.data, self.X.indices, self.X.indptr[:m + 1], (m, self.X.shape[1]))
            view.y, view.dZ = self.y[:m], self.dZ[:m]
            view.pred, view.hit, view.out = self.pred[:m], self.hit[:m], self.out[:m]
            view.acts = [a[:m] for a in self.acts]
            view.deltas = [None] + [d[:m] for d in self.deltas[1:]]
            view.zhats = [z[:m] for z in self.zhats]
            view.means, view.vars = self.means, self.vars
            view._views = {m: view}
            self._views[m] = view
        return view


class MLP:
    """A multilayer perceptron: hidden layers with one activation, and an output layer.

    Parameters
    ----------
    layer_sizes : sequence of int, length >= 2
        (n_features, hidden_1, ..., n_outputs).
    dtype : float32 (default) or float64
    seed : int or None
        Seeds the initialisation: He normal (std sqrt(2 / fan_in)) for layers followed by a
        ReLU, LeCun normal (std sqrt(1 / fan_in)) for the others; biases are zero.
    backend : "auto", "numpy", "numba", "cython", or a backend from `get_backend`
    activation : "relu" (default), "tanh", "logistic" or "identity", of the hidden layers
    output : the output layer and the loss it is trained on
        "softmax" (default): classes, trained on int labels (N,) with cross-entropy;
        "logistic": independent 0/1 outputs (binary, multilabel), trained on (N, K) targets
        with binary cross-entropy; "identity": regression on (N, K) values, half squared
        error; "exp": counts (a log link), half Poisson deviance on (N, K) values >= 0.
    dropout : float in [0, 1) or one per hidden layer, default 0
        Inverted dropout on the hidden layers' outputs while training (the Trainer's fused
        step; the mask is drawn from the Trainer's seed, docs/kernels.md); off in forward,
        predict and loss_and_grads.  Kept as the tuple `dropout`, one p per hidden layer.
    standardize : bool (default False)
        Standardise the inputs: the network sees (X - input_mean) / input_scale, per feature,
        in the model's dtype, everywhere X comes in (forward, predict_proba, predict, score,
        loss_and_grads, and the Trainer's fit, fit_epoch, step and evaluate).  input_mean and
        input_scale (n_features,), in the model's dtype, are None until `Trainer.fit` sets
        them from its training set (the mean and population std, computed in float64; scale
        1 for a constant feature), or `fit_input_stats` / `set_input_stats` does; a later fit
        keeps them.  Dense X only (centering would fill a sparse X): sparse X is a TypeError.
        Saved, loaded and exported to ONNX with the model.
    batch_norm : bool (default False)
        Batch normalisation on every hidden layer (docs/kernels.md): the layer's product
        x·W is normalised with the batch's mean and variance while training, scaled by a
        learned `gammas[i]` and shifted by its bias (the bias is BN's β), then activated
        (dropout follows).  Each training step also moves `running_means` / `running_vars`
        (PyTorch's momentum 0.1, the unbiased variance; eps 1e-5); forward, predict and
        score use them, folded into the layer (`inference_params`).  loss_and_grads uses
        the batch's statistics, as training does.  Saved and loaded with the model.

    Attributes
    ----------
    input_mean, input_scale : arrays of shape (n_features,) in the model's dtype, or None
        The input statistics of a standardize model (None otherwise, and until they are set).
    gammas, running_means, running_vars : lists of arrays (H_i,), one per hidden layer
        A batch_norm model's scales (initially 1) and running estimates (initially 0 and 1);
        empty lists without batch_norm.  dgammas: the gammas' last gradient.
    """

    def __init__(self, layer_sizes=(784, 256, 10), dtype=np.float32, seed=0, backend="auto",
                 activation="relu", output="softmax", dropout=0.0, standardize=False,
                 batch_norm=False):
        sizes = tuple(layer_sizes) if np.iterable(layer_sizes) else None
        if not sizes or len(sizes) < 2:
            raise ValueError(f"layer_sizes needs at least 2 entries (inputs, outputs), "
                             f"got {layer_sizes!r}")
        for s in sizes:
            V.check_number("layer_sizes entry", s, low=1, integer=True)
        self.layer_sizes = tuple(int(s) for s in sizes)
        self.dtype = V.check_dtype(dtype)
        activation_code(activation), output_code(output)   # known names, or ValueError
        self.activation, self.output = activation, output
        self.dropout = check_dropout(dropout, len(self.layer_sizes) - 2)
        if not isinstance(standardize, (bool, np.bool_)):
            raise TypeError(f"standardize must be True or False, got {standardize!r}")
        self.standardize = bool(standardize)
        self.input_mean = self.input_scale = None
        self.backend = get_backend(backend)
        rng = np.random.default_rng(seed)
        self.weights, self.biases = [], []
        for i, (fan_in, fan_out) in enumerate(zip(self.layer_sizes[:-1], self.layer_sizes[1:])):
            gain = 2.0 if i < self.n_layers - 1 and activation == "relu" else 1.0
            W = rng.standard_normal((fan_in, fan_out)) * np.sqrt(gain / fan_in)
            self.weights.append(np.ascontiguousarray(W, dtype=self.dtype))
            self.biases.append(np.zeros(fan_out, self.dtype))
        self.dweights = [np.zeros_like(W) for W in self.weights]
        self.dbiases = [np.zeros_like(b) for b in self.biases]
        if not isinstance(batch_norm, (bool, np.bool_)):
            raise TypeError(f"batch_norm must be True or False, got {batch_norm!r}")
        self.batch_norm = bool(batch_norm)
        hidden = self.layer_sizes[1:-1] if self.batch_norm else ()
        self.gammas = [np.ones(h, self.dtype) for h in hidden]
        self.dgammas = [np.zeros(h, self.dtype) for h in hidden]
        self.running_means = [np.zeros(h, self.dtype) for h in hidden]
        self.running_vars = [np.ones(h, self.dtype) for h in hidden]

    # ---- shapes ----------------------------------------------------------------------------
    @property
    def n_layers(self):
        """Number of weight layers (len(layer_sizes) - 1)."""
        return len(self.layer_sizes) - 1

    @property
    def n_features(self):
        return self.layer_sizes[0]

    @property
    def n_outputs(self):
        return self.layer_sizes[-1]

    n_classes = n_outputs

    @property
    def is_classifier(self):
        """True for the softmax and logistic outputs."""
        return self.output in ("softmax", "logistic")

    def __repr__(self):
        kinds = "" if (self.activation, self.output) == ("relu", "softmax") else \
            f", activation={self.activation!r}, output={self.output!r}"
        if any(self.dropout):
            kinds += f", dropout={self.dropout}"
        std = ", standardize=True" if self.standardize else ""
        if self.batch_norm:
            std += ", batch_norm=True"
        return (f"MLP(layer_sizes={self.layer_sizes}, dtype={self.dtype.name}, "
                f"backend={self.backend.name!r}{kinds}{std})")

    def workspace(self, n, x_capacity=None):
        """A new training workspace for batches of up to n rows (sparse ones of up to
        x_capacity stored entries, when it is given)."""
        return Workspace(self.layer_sizes, n, self.dtype, self.output, x_capacity,
                         self.batch_norm)

    # ---- parameters -------------------------------------------------------------------------
    @property
    def params(self):
        """The trained parameters, in the optimizer's order: weights, biases, then the
        gammas of a batch_norm model (new list, the arrays themselves)."""
        return self.weights + self.biases + self.gammas

    @property
    def grads(self):
        """Their gradient buffers, in the same order."""
        return self.dweights + self.dbiases + self.dgammas

    @property
    def buffers(self):
        """The arrays training changes besides the parameters: a batch_norm model's running
        means and variances (new list, the arrays themselves)."""
        return self.running_means + self.running_vars

    def bn_arrays(self, ws, state=None):
        """The contract.BatchNorm of this batch_norm model with workspace `ws` (rows of a
        Workspace) and the gammas' optimizer `state`; None without batch_norm."""
        if not self.batch_norm:
            return None
        return BatchNorm(self.gammas, self.dgammas, ws.zhats, ws.means, ws.vars,
                         self.running_means, self.running_vars,
                         state if state is not None else [None] * len(self.gammas))

    def inference_params(self):
        """(weights, biases) of the network as inference runs it: the model's own arrays, or
        for a batch_norm model the hidden layers with their running estimates folded in
        (reference.bn_fold: new arrays, made at each call)."""
        if not self.batch_norm:
            return self.weights, self.biases
        folded = [reference.bn_fold(W, b, g, rm, rv)
                  for W, b, g, rm, rv in zip(self.weights, self.biases, self.gammas,
                                             self.running_means, self.running_vars)]
        return ([W for W, _ in folded] + [self.weights[-1]],
                [b for _, b in folded] + [self.biases[-1]])

    def check_targets(self, y, n, name="y"):
        """Training targets for n samples as the loss kernel takes them (int64 labels for a
        softmax output, (n, n_outputs) values otherwise); TypeError/ValueError otherwise."""
        return V.check_targets(y, n, self.n_outputs, self.output, self.dtype, name=name)

    def check_X(self, X, name="X"):
        """X (N, n_features) as the model takes it (validation.check_X): dense, C-contiguous,
        finite, in the model's dtype (no copy when it already is), or scipy.sparse as a CSR;
        a TypeError for sparse X when the model standardises its inputs."""
        self._refuse_sparse(X, name)
        return V.check_X(X, self.n_features, self.dtype, name=name)

    # ---- input standardisation ------------------------------------------------------------
    def _refuse_sparse(self, X, name="X"):
        if self.standardize and (issparse(X) or isinstance(X, CSR)):
            raise TypeError(f"{name} is sparse, but this model standardises its inputs "
                            f"(standardize=True), and centering would make every entry "
                            f"nonzero: densify {name}, or use a model with "
                            f"standardize=False")

    def fit_input_stats(self, X):
        """Set input_mean and input_scale from the training set X (N, n_features), dense:
        per feature its mean and population standard deviation, computed in float64 (scale
        1 for a constant feature: `input_stats`, and for one whose std is below the dtype's
        smallest normal number), stored in the model's dtype.  For training
        with `Trainer.fit_epoch` / `step`, which need them (`Trainer.fit` calls this itself
        when they are not set).  Returns self."""
        self._need_standardize()
        return self._fit_input_stats(self.check_X(X))

    def _fit_input_stats(self, X):
        """fit_input_stats on X already validated by check_X."""
        mean, scale = input_stats(X)
        scale[scale.astype(self.dtype) < np.finfo(self.dtype).tiny] = 1.0
        return self.set_input_stats(mean, scale)

    def set_input_stats(self, mean, scale):
        """Set input_mean and input_scale: arrays (n_features,), finite, scale > 0 (checked
        after rounding to the model's dtype; ValueError otherwise), copied in the model's
        dtype.  Returns self."""
        self._need_standardize()
        stats = []
        for name, a in (("mean", mean), ("scale", scale)):
            try:
                with np.errstate(over="ignore"):   # too large for the dtype: inf, refused
                    a = np.array(a, dtype=self.dtype)
            except (TypeError, ValueError) as exc:
                raise TypeError(f"{name} could not be read as a numeric array: {exc}") from None
            if a.shape != (self.n_features,):
                raise ValueError(f"{name} must have shape ({self.n_features},), got {a.shape}")
            if not V.all_finite(a):
                raise ValueError(f"{name} contains NaN or infinity (in {self.dtype.name})")
            stats.append(a)
        if not np.all(stats[1] > 0):
            raise ValueError(f"scale must be > 0 (in {self.dtype.name}), got "
                             f"{stats[1][~(stats[1] > 0)][:5]}")
        self.input_mean, self.input_scale = stats
        return self

    def _need_standardize(self):
        if not self.standardize:
            raise ValueError("this model has standardize=False: it takes no input statistics")

    def _input_stats(self):
        """(input_mean, input_scale); ValueError when they are not set yet."""
        if self.input_mean is None:
            raise ValueError("this model standardises its inputs (standardize=True) but has "
                             "no input statistics yet: train it with Trainer.fit, or call "
                             "fit_input_stats(X_train) (or set_input_stats) first")
        return self.input_mean, self.input_scale

    def _standardized(self, X, out=None):
        """(X - input_mean) / input_scale of dense checked X (m, n_features) into out
        (m, n_features), C-contiguous in the model's dtype (a new array when None); returns
        out.  ValueError when the statistics are not set."""
        mean, scale = self._input_stats()
        if out is None:
            out = np.empty(X.shape, self.dtype)
        np.subtract(X, mean, out=out)
        np.divide(out, scale, out=out)
        return out

    # ---- the hot path (no validation, no allocation) ---------------------------------------
    def _loss_grad(self, ws, X, y, sample_weight=None):
        """Forward and backward on batch X (m, D), targets y with workspace rows ws.

        Fills self.dweights / self.dbiases with the gradient of the loss (no penalty) and
        returns that loss."""
        raw, bn = self.backend.raw, self.bn_arrays(ws)
        Z = reference.forward(raw, self.weights, self.biases, X, ws.acts, self.activation,
                              bn=bn)
        loss = reference.loss_grad(raw, self.output, Z, y, ws.dZ, sample_weight)
        reference.backward(raw, self.weights, X, ws.acts, ws.dZ, self.dweights, self.dbiases,
                           ws.deltas, self.activation, bn=bn)
        return loss

    def _n_correct(self, ws, y):
        """Correct predictions among the outputs currently in ws (no allocation): the argmax
        for softmax, every output on the right side of 0 for logistic; 0 for regression."""
        Z = ws.acts[-1]
        if self.output == "softmax":
            Z.argmax(axis=1, out=ws.pred)   # np.argmax's wrapper fills a cache (~3 kB)
            np.equal(ws.pred, y, out=ws.hit)
        elif self.output == "logistic":
            np.greater(Z, 0, out=ws.out)
            np.equal(ws.out, y > 0.5, out=ws.out)
            np.all(ws.out, axis=1, out=ws.hit)
        else:
            return 0
        return int(np.count_nonzero(ws.hit))

    # ---- public API -----------------------------------------------------------------------
    def forward(self, X):
        """The output layer's pre-activation (logits for the classifiers).  X (N, n_features),
        dense or scipy.sparse (dense only for a standardize model, which standardises it) ->
        (N, n_outputs), in the model's dtype."""
        return self._forward(self.check_X(X))

    def _forward(self, X, standardized=False):
        """forward() on X already validated by check_X (C-contiguous, model dtype, finite;
        or a CSR), in chunks of rows through per-thread cached buffers (inference.py).
        standardized: X is already standardised (fit's validation set)."""
        return inference.run(self, X, "logits", self.standardize and not standardized)

    def predict_proba(self, X):
        """Probabilities (N, n_outputs): the softmax over classes, or each logistic output's
        probability of 1.  Only for the classifier outputs."""
        if not self.is_classifier:
            raise TypeError(f"predict_proba needs a softmax or logistic output; this model's "
                            f"output is {self.output!r} (use predict)")
        return inference.run(self, self.check_X(X), "proba", self.standardize)

    def predict(self, X):
        """Predictions: class indices (N,) int64 (softmax), 0/1 outputs (N, n_outputs) int64
        (logistic), values (N, n_outputs) (identity), or means exp(z) (exp)."""
        return inference.run(self, self.check_X(X), "predict", self.standardize)

    def score(self, X, y):
        """Accuracy on (X, y) for the classifiers (every output right, for logistic); the
        coefficient of determination R², averaged over outputs, for regression."""
        X = self.check_X(X)
        y = self.check_targets(y, X.shape[0])
        Z = self._forward(X)
        if self.output == "softmax":
            return float(np.mean(np.argmax(Z, axis=1) == y))
        if self.output == "logistic":
            return float(np.mean(np.all((Z > 0) == (y > 0.5), axis=1)))
        pred = np.exp(Z) if self.output == "exp" else Z
        return r2_score(y, pred)

    def penalty(self, weight_decay):
        """weight_decay * sum over layers of ||W||^2 (biases are not decayed)."""
        if not weight_decay:
            return 0.0
        return weight_decay * sum(float(np.dot(W.reshape(-1), W.reshape(-1)))
                                  for W in self.weights)

    def loss_and_grads(self, X, y, weight_decay=0.0, sample_weight=None):
        """The output's loss + weight_decay * sum ||W||^2 on (X, y), and its gradients
        (X (N, n_features), standardised first by a standardize model; a batch_norm model
        normalises with the batch's statistics, as in training, and leaves its running
        estimates alone).

        Returns (loss, dweights, dbiases): new arrays shaped like weights / biases; a
        batch_norm model returns (loss, dweights, dbiases, dgammas)."""
        X = self.check_X(X)
        y = self.check_targets(y, X.shape[0])
        wd = V.check_number("weight_decay", weight_decay, low=0.0)
        sw = None if sample_weight is None else \
            V.check_sample_weight(sample_weight, X.shape[0], self.dtype)
        ws = self.workspace(X.shape[0])
        if self.standardize:
            X = self._standardized(X, out=ws.X)
        loss = self._loss_grad(ws, X, y, sw) + self.penalty(wd)
        dW = [g + (2 * wd) * W if wd else g.copy() for g, W in zip(self.dweights, self.weights)]
        if self.batch_norm:
            return loss, dW, [g.copy() for g in self.dbiases], [g.copy() for g in self.dgammas]
        return loss, dW, [g.copy() for g in self.dbiases]

    # ---- persistence (persistence.py) -----------------------------------------------------
    def save(self, path):
        """Write the model to `path` (.npz, no pickled objects) atomically: a temporary file in
        the same folder, flushed and fsync'ed, then renamed over the target.  A standardize
        model is saved with its input statistics (ValueError before they are set)."""
        return persistence.save(self, path)

    def to_onnx(self, path=None, dtype=None, opset=18):
        """Export to ONNX (fastmlp/onnx.py; the `onnx` extra): input `X` (N, n_features),
        outputs `label` and `probabilities` (classifiers) or `variable`, as predict and
        predict_proba give them.  Writes `path` when given; returns the onnx.ModelProto."""
        from .onnx import model_to_onnx
        return model_to_onnx(self, path, dtype, opset)

    @classmethod
    def load(cls, path, backend="auto"):
        """Read a model written by `save`; ModelFileError if it is corrupt or inconsistent."""
        arrays = persistence.read(path)
        sizes, dtype, options = persistence.checked(arrays, path)
        model = cls(sizes, dtype=dtype, seed=0, backend=backend, **options)
        for i in range(model.n_layers):
            model.weights[i][...] = arrays[f"W{i}"]
            model.biases[i][...] = arrays[f"b{i}"]
        if model.standardize:
            model.set_input_stats(arrays["input_mean"], arrays["input_scale"])
        for i in range(len(model.gammas)):
            model.gammas[i][...] = arrays[f"gamma{i}"]
            model.running_means[i][...] = arrays[f"running_mean{i}"]
            model.running_vars[i][...] = arrays[f"running_var{i}"]
        return model


def r2_score(y, pred):
    """Coefficient of determination of pred against y (N, K), averaged over the K outputs
    (scikit-learn's r2_score with multioutput='uniform_average'; an output with constant y
    scores 1 when predicted exactly, else 0)."""
    y, pred = np.asarray(y, np.float64), np.asarray(pred, np.float64)
    ss_res = ((y - pred) ** 2).sum(axis=0)
    ss_tot = ((y - y.mean(axis=0)) ** 2).sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        r2 = np.where(ss_tot > 0, 1 - ss_res / ss_tot, np.where(ss_res == 0, 1.0, 0.0))
    return float(np.mean(r2))
