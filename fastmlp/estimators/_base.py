"""What fastmlp's scikit-learn estimators share: parameters, initialisation, fitting, the link
to an MLP and the output layer.

Design: scikit-learn's `BaseMultilayerPerceptron` line for line where its behaviour is
visible (the parameters and their validation, the dtype taken from X, Glorot-uniform
initialisation drawn in its order, the output activation, the check for non-finite weights
after fitting), with every forward/backward pass and optimizer update done by an `MLP` (whose
`activation` and `output` are the estimator's `activation` and `out_activation_`) and a
`Trainer`; the solvers are `SolversMixin` (_solvers.py).  `coefs_` / `intercepts_` are the
model's own parameter arrays (trained in place).  The MLP holds a backend object (not
picklable) and is rebuilt lazily after unpickling; the optimizer state lives on the estimator
as plain arrays, so `partial_fit` resumes exactly after a pickle.  The classifier
(classifier.py) and the regressor (regressor.py) add their targets, output layer, validation
score and predictions.
"""
from numbers import Integral, Real

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.utils import check_random_state

from ..backends.contract import check_dropout
from sklearn.utils._param_validation import Interval, Options, StrOptions
from sklearn.utils.validation import _check_sample_weight, check_is_fitted, validate_data

from ..backends import reference
from ..model import MLP, softmax_rows
from ._solvers import STOCHASTIC, SolversMixin, as_model_input

_FLOATS = (np.float32, np.float64)

# the parameters both estimators share, for their docstrings
PARAMETERS_DOC = """hidden_layer_sizes : array-like of shape (n_layers - 2,) or int, default=(100,)
    activation : {"identity", "logistic", "tanh", "relu"}, default="relu"
    solver : {"adam", "sgd", "lbfgs"}, default="adam"
    alpha : float >= 0, default=1e-4
        L2 strength in sklearn's convention: a batch's loss gets 0.5 * alpha * sum ||W||^2 / m,
        m its number of samples (or its sum of sample weights).
    batch_size : int or "auto" (= min(200, n_samples)), default="auto"
    learning_rate : {"constant", "invscaling", "adaptive"}, default="constant" (sgd only)
    learning_rate_init, power_t : float, default=0.001, 0.5
    max_iter : int >= 1, default=200 (epochs for sgd/adam, iterations for lbfgs)
    shuffle, warm_start, nesterovs_momentum, early_stopping, verbose : bool
    random_state : int, RandomState instance or None, default=None
    tol : float >= 0, default=1e-4
    momentum : float in [0, 1), default=0.9
    validation_fraction, beta_1, beta_2 : float in [0, 1), default=0.1, 0.9, 0.999
    epsilon : float > 0, default=1e-8
    n_iter_no_change : int >= 1 or np.inf, default=10
    max_fun : int >= 1, default=15000 (lbfgs only)
    backend : {"auto", "numpy", "numba", "cython"}, default="auto"
    threads : "auto" or int >= 1, default="auto"
        Threads the sgd/adam steps' large GEMMs may use (fastmlp.threads): never more than
        the process's BLAS limit (OPENBLAS_NUM_THREADS, threadpoolctl, joblib's and Dask's
        worker limits, CPU affinity); "auto" gives them back while other work runs.  The
        result does not depend on it.  lbfgs runs the backend's kernels on the process's own
        BLAS threads.
    precision : None or "bf16", default=None
        None: every product in the parameters' dtype.  "bf16" (sgd/adam; needs
        `pip install "fastmlp[onednn]"`): the fused step's GEMMs take bfloat16 operands and
        accumulate in float32; parameters, optimizer state and the loss stay float32, the
        training set is converted once per fit, and predictions run in float32.  The model is
        float32 (dtype=None then means float32; dtype="float64" is refused).  Dense X only.
    dropout : float in [0, 1) or one per hidden layer, default=0.0
        Inverted dropout on the hidden layers' outputs while training (sgd/adam; fastmlp's
        extension: 0 is scikit-learn's network).  The masks are drawn from random_state.
    dtype : None, "float32" or "float64" (or the numpy type), default=None
        Precision of the parameters and of every computation; None: X's dtype when it is
        float32 or float64, else float64 (as scikit-learn)."""
ATTRIBUTES_DOC = """coefs_ : list of ndarray, coefs_[i] of shape (units[i], units[i + 1])
    intercepts_ : list of ndarray, intercepts_[i] of shape (layer_units[i + 1],)
        coefs_ and intercepts_ are the network's own arrays, trained in place.
    loss_, best_loss_ : float (best_loss_ is None with early stopping)
    loss_curve_ : list of float, one entry per epoch (sgd/adam)
    n_iter_ : int; t_ : int, training samples seen by the stochastic solver
    n_features_in_ : int; feature_names_in_ : ndarray, when X has string column names
    n_layers_ : int"""


def store_parameters(estimator, values):
    """Set each constructor argument in `values` (the constructor's locals()) as the attribute
    of the same name, unchanged, as scikit-learn's estimators must."""
    for name, value in values.items():
        if name not in ("self", "__class__"):
            setattr(estimator, name, value)


class BaseMLP(SolversMixin, BaseEstimator):
    """Parameters, fitting and the MLP behind MLPClassifier and MLPRegressor."""

    _parameter_constraints: dict = {
        "hidden_layer_sizes": ["array-like", Interval(Integral, 1, None, closed="left")],
        "activation": [StrOptions({"identity", "logistic", "tanh", "relu"})],
        "solver": [StrOptions({"lbfgs", "sgd", "adam"})],
        "alpha": [Interval(Real, 0, None, closed="left")],
        "batch_size": [StrOptions({"auto"}), Interval(Integral, 1, None, closed="left")],
        "learning_rate": [StrOptions({"constant", "invscaling", "adaptive"})],
        "learning_rate_init": [Interval(Real, 0, None, closed="neither")],
        "power_t": [Interval(Real, 0, None, closed="left")],
        "max_iter": [Interval(Integral, 1, None, closed="left")],
        "shuffle": ["boolean"],
        "random_state": ["random_state"],
        "tol": [Interval(Real, 0, None, closed="left")],
        "verbose": ["verbose"],
        "warm_start": ["boolean"],
        "momentum": [Interval(Real, 0, 1, closed="left")],
        "nesterovs_momentum": ["boolean"],
        "early_stopping": ["boolean"],
        "validation_fraction": [Interval(Real, 0, 1, closed="left")],
        "beta_1": [Interval(Real, 0, 1, closed="left")],
        "beta_2": [Interval(Real, 0, 1, closed="left")],
        "epsilon": [Interval(Real, 0, None, closed="neither")],
        "n_iter_no_change": [Interval(Integral, 1, None, closed="left"), Options(Real, {np.inf})],
        "max_fun": [Interval(Integral, 1, None, closed="left")],
        "backend": [StrOptions({"auto", "numpy", "numba", "cython"})],
        "threads": [StrOptions({"auto"}), Interval(Integral, 1, None, closed="left")],
        "precision": [None, StrOptions({"bf16"})],
        "dropout": [Interval(Real, 0, 1, closed="left"), "array-like"],
        "dtype": [None, StrOptions({"float32", "float64"}), Options(type, set(_FLOATS)),
                  Options(np.dtype, {np.dtype(t) for t in _FLOATS})],
    }

    def _check_solver(self):
        if self.solver not in STOCHASTIC:
            raise AttributeError(f"partial_fit is only available for stochastic optimizers. "
                                 f"{self.solver} is not stochastic.")
        return True

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True   # scipy.sparse CSR/CSC: the sparse first-layer kernels
        return tags

    def __getstate__(self):
        state = dict(super().__getstate__())  # BaseEstimator may hand back __dict__ itself
        state.pop("_model", None)  # holds a backend object; rebuilt from coefs_ on demand
        return state

    def _validate_X_y(self, X, y, reset, **kwargs):
        """sklearn's validate_data; X in the parameters' dtype: `dtype`, or else X's own when
        it is float32 or float64, else float64 (as scikit-learn)."""
        dtype = _FLOATS[::-1] if self.dtype is None else np.dtype(self.dtype)
        if self.solver not in STOCHASTIC and np.any(np.asarray(self.dropout) > 0):
            raise ValueError(f"dropout is for the 'sgd' and 'adam' solvers; solver="
                             f"{self.solver!r} trains the whole network deterministically")
        if self.precision == "bf16":
            if self.dtype is not None and np.dtype(self.dtype) != np.float32:
                raise ValueError(f"precision='bf16' trains a float32 model; dtype="
                                 f"{self.dtype!r} asks for {np.dtype(self.dtype)}")
            if self.solver not in STOCHASTIC:
                raise ValueError("precision='bf16' is for the 'sgd' and 'adam' solvers; "
                                 f"solver={self.solver!r} runs in full precision")
            dtype = np.float32
        return validate_data(self, X, y, dtype=dtype, order="C", multi_output=True,
                             accept_sparse=("csr", "csc"), reset=reset, **kwargs)

    # ---- fitting (subclasses provide _validate_input, _out_activation, _encode, _stratify
    # and _validation_score) ------------------------------------------------------------------
    def _fit(self, X, y, sample_weight, incremental):
        hidden = self.hidden_layer_sizes
        hidden = list(hidden) if np.iterable(hidden) else [hidden]
        if not all(isinstance(h, Integral) and not isinstance(h, bool) and h > 0
                   for h in hidden):
            raise ValueError(f"hidden_layer_sizes must be positive integers, got "
                             f"{self.hidden_layer_sizes!r}")
        first_pass = not hasattr(self, "coefs_") or (not self.warm_start and not incremental)
        X, Y, sw = self._validate_input(X, y, sample_weight, incremental, reset=first_pass)
        if Y.ndim == 1:
            Y = Y.reshape(-1, 1)
        self.n_outputs_ = Y.shape[1]
        sizes = [X.shape[1]] + [int(h) for h in hidden] + [self.n_outputs_]
        self._random_state = check_random_state(self.random_state)
        if first_pass:
            self._initialize(sizes, X.dtype)
        elif [np.shape(c) for c in self.coefs_] != list(zip(sizes[:-1], sizes[1:])):
            raise ValueError(f"warm_start / partial_fit needs the same layer sizes: the "
                             f"network has {[np.shape(c) for c in self.coefs_]}, the "
                             f"parameters and data give {sizes}")
        model = self._get_model(X.dtype)
        targets = self._encode(Y, X.dtype)
        if self.solver == "lbfgs":
            self._fit_lbfgs(model, X, targets, sw)
        else:
            self._fit_stochastic(model, X, targets, sw, incremental, self._stratify(Y))
        if not all(np.isfinite(p).all() for p in model.weights + model.biases):
            raise ValueError("Solver produced non-finite parameter weights. The input data "
                             "may contain large values and need to be preprocessed.")
        return self

    def _sample_weight(self, sample_weight, X):
        """sample_weight as sklearn checks it, non-negative, (n_samples,) in X's dtype."""
        if sample_weight is None:
            return None
        return _check_sample_weight(sample_weight, X, dtype=X.dtype, ensure_non_negative=True)

    def _initialize(self, sizes, dtype):
        """sklearn's Glorot-uniform draws, in its order: per layer coefs then intercepts
        (bound sqrt(6 / (fan_in + fan_out)), sqrt(2 / ...) for the logistic activation)."""
        self.n_iter_, self.t_ = 0, 0
        self.n_layers_ = len(sizes)
        self.n_outputs_ = sizes[-1]
        self.out_activation_ = self._out_activation()
        factor = 2.0 if self.activation == "logistic" else 6.0
        self.coefs_, self.intercepts_ = [], []
        for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
            bound = np.sqrt(factor / (fan_in + fan_out))
            W = self._random_state.uniform(-bound, bound, (fan_in, fan_out))
            b = self._random_state.uniform(-bound, bound, fan_out)
            self.coefs_.append(np.ascontiguousarray(W, dtype))
            self.intercepts_.append(np.ascontiguousarray(b, dtype))
        for attr in ("_model", "_opt_state", "_best_params", "_mask_seed"):
            self.__dict__.pop(attr, None)
        if self.solver in STOCHASTIC:
            self.loss_curve_ = []
            self._no_improvement_count = 0
            if self.early_stopping:
                self.validation_scores_, self.best_validation_score_ = [], -np.inf
                self.best_loss_ = None
            else:
                self.best_loss_ = np.inf
                self.validation_scores_ = self.best_validation_score_ = None

    def _get_model(self, dtype=None):
        """The MLP whose parameter arrays are coefs_ / intercepts_ (built when missing or when
        the activation, output or backend changed).  dtype: fitting's (coefs_ are converted to
        it); None for prediction, which uses coefs_'s own."""
        params = self.coefs_ + self.intercepts_
        fit = dtype is not None
        if not fit:
            dtype = np.asarray(self.coefs_[0]).dtype
            dtype = dtype if dtype in _FLOATS else np.dtype(np.float64)
        m = self.__dict__.get("_model")
        if (m is not None and len(m.weights) + len(m.biases) == len(params)
                and all(p is q for p, q in zip(m.weights + m.biases, params))
                and (m.activation, m.output) == (self.activation, self.out_activation_)
                and m.dtype == dtype and self.backend in ("auto", m.backend.name)
                and m.dropout == check_dropout(self.dropout, len(m.weights) - 1)):
            return m
        sizes = [np.shape(self.coefs_[0])[0]] + [np.shape(c)[1] for c in self.coefs_]
        m = MLP(sizes, dtype=dtype, seed=0, backend=self.backend, activation=self.activation,
                output=self.out_activation_, dropout=self.dropout)
        for own, src in ((m.weights, self.coefs_), (m.biases, self.intercepts_)):
            for i, a in enumerate(src):
                if (isinstance(a, np.ndarray) and a.dtype == dtype and a.shape == own[i].shape
                        and a.flags.c_contiguous and (a.flags.writeable or not fit)):
                    own[i] = a  # share: training updates coefs_ in place
                else:
                    np.copyto(own[i], a)
                    if fit:
                        src[i] = own[i]
        self._model = m
        return m

    # ---- prediction -------------------------------------------------------------------------
    def to_onnx(self, path=None, dtype=None, opset=18):
        """Export the fitted network to ONNX (fastmlp/onnx.py; the `onnx` extra): input `X`,
        outputs `label` and `probabilities` (classifiers) or `variable` (regressors), as
        predict / predict_proba give them.  Writes `path` when given; returns the ModelProto."""
        check_is_fitted(self)
        from ..onnx import estimator_to_onnx
        return estimator_to_onnx(self, path, dtype, opset)

    def _activate(self, Z):
        """The output activation applied to pre-activations Z (n_samples, n_outputs), in
        place: softmax, logistic, identity or exp."""
        out = self.out_activation_
        if out == "softmax":
            return softmax_rows(Z)
        if out == "exp":
            with np.errstate(over="ignore"):
                return np.exp(Z, out=Z)
        return reference.activate(Z, out)  # logistic or identity

    def _output(self, X):
        """The network's output (n_samples, n_outputs) on X, computed in the parameters'
        dtype; for a numeric array X returned in the dtype scikit-learn's arithmetic gives
        (X's and the parameters' combined: float64 for float64 or integer X)."""
        check_is_fitted(self)
        model = self._get_model()
        given = getattr(X, "dtype", None)
        X = validate_data(self, X, reset=False, dtype=model.dtype, order="C",
                          accept_sparse=("csr", "csc"))
        numeric = isinstance(given, np.dtype) and given.kind in "biuf"
        dtype = np.result_type(given, model.dtype) if numeric else model.dtype
        # validate_data has checked X as MLP.forward would: no second pass over it
        P = self._activate(model._forward(as_model_input(X, model.dtype)))
        return P if P.dtype == dtype else P.astype(dtype)

    def _expected_failed_checks(self):
        """Estimator checks expected to fail, {check name: reason}; fed to
        `parametrize_with_checks(expected_failed_checks=...)`."""
        if self.dtype is not None and np.dtype(self.dtype) == np.float32:
            why = ("float32: weighting rows instead of repeating them changes the summation "
                   "order, so after training the predictions differ by a few float32 units "
                   "in the last place (1e-7 to 1e-6 relative): the check's rtol=1e-7 lies "
                   "below float32's resolution (eps 1.2e-7); in float64 (the default for "
                   "float64 X) they agree to ~1e-14 and the check passes")
            return {f"check_sample_weight_equivalence_on_{kind}_data": why
                    for kind in ("dense", "sparse")}
        return {}
