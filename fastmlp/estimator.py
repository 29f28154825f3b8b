"""MLPClassifier: a scikit-learn estimator that trains through fastmlp's MLP and Trainer.

Design: the parameters, the initialisation (Glorot uniform drawn in scikit-learn's order), the
shuffles, batches, loss curve, L2 convention, learning-rate schedules and stopping rules mirror
`sklearn.neural_network.MLPClassifier` line for line; every forward/backward pass and optimizer
update runs through an `MLP` and a `Trainer` of the chosen backend.  `coefs_` / `intercepts_`
are the model's parameter arrays themselves, so training updates them in place.  The MLP holds
a backend object (not picklable) and is rebuilt lazily after unpickling; the optimizer state
lives on the estimator as plain arrays, so `partial_fit` resumes exactly after a pickle.

Differences from scikit-learn (docs/estimator.md): ReLU only; the output is always a softmax
(two units for a binary problem, started as sklearn's logistic unit); no sparse input; momentum
must be < 1.
"""
import math
import warnings
from numbers import Integral, Real

import numpy as np
import scipy.optimize
from sklearn.base import BaseEstimator, ClassifierMixin, _fit_context
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import train_test_split
from sklearn.utils import check_random_state, gen_batches
from sklearn.utils import shuffle as _shuffle
from sklearn.utils._param_validation import Interval, Options, StrOptions
from sklearn.utils.class_weight import compute_sample_weight
from sklearn.utils.metaestimators import available_if
from sklearn.utils.multiclass import (_check_partial_fit_first_call,
                                      check_classification_targets, unique_labels)
from sklearn.utils.optimize import _check_optimize_result
from sklearn.utils.validation import _check_sample_weight, check_is_fitted, validate_data

from .model import MLP, softmax_rows
from .trainer import Trainer, TrainingDivergedError

_STOCHASTIC = ("sgd", "adam")


def _lbfgs_print_options(verbose):
    try:  # scipy renamed/deprecated `iprint`; sklearn keeps the shim
        from sklearn.utils.fixes import _get_additional_lbfgs_options_dict
    except ImportError:
        return {}
    return _get_additional_lbfgs_options_dict("iprint", 1 if verbose else -1)


class MLPClassifier(ClassifierMixin, BaseEstimator):
    """Multi-layer perceptron classifier (ReLU hidden layers, softmax output, log-loss).

    A drop-in for `sklearn.neural_network.MLPClassifier`: the same parameters, defaults,
    training loop and fitted attributes, with the arithmetic done by fastmlp's kernels.

    Parameters
    ----------
    hidden_layer_sizes : array-like of shape (n_layers - 2,) or int, default=(100,)
    activation : {"relu"}, default="relu"
        Other values of sklearn's set ("identity", "logistic", "tanh") raise ValueError at fit.
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
    class_weight : dict, "balanced" or None, default=None
        Multiplies each sample's weight by its class's weight (not in sklearn's MLP).
    backend : {"auto", "numpy", "numba", "cython"}, default="auto"
    dtype : {"float32", "float64"} or the numpy type, default="float32"
        Precision of the parameters and of every computation.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
    coefs_ : list of ndarray, coefs_[i] of shape (layer_units[i], layer_units[i + 1])
    intercepts_ : list of ndarray, intercepts_[i] of shape (layer_units[i + 1],)
        coefs_ and intercepts_ are the network's own arrays, trained in place.
    loss_, best_loss_ : float (best_loss_ is None with early stopping)
    loss_curve_ : list of float, one entry per epoch (sgd/adam)
    validation_scores_, best_validation_score_ : list of float, float (early stopping)
    n_iter_ : int; t_ : int, training samples seen by the stochastic solver
    n_features_in_ : int; feature_names_in_ : ndarray, when X has string column names
    n_layers_ : int; n_outputs_ : int, output units = n_classes (2 for binary; sklearn: 1)
    out_activation_ : str, always "softmax"
    """

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
        "class_weight": [dict, StrOptions({"balanced"}), None],
        "backend": [StrOptions({"auto", "numpy", "numba", "cython"})],
        "dtype": [StrOptions({"float32", "float64"}), Options(type, {np.float32, np.float64}),
                  Options(np.dtype, {np.dtype(np.float32), np.dtype(np.float64)})],
    }

    def __init__(self, hidden_layer_sizes=(100,), activation="relu", *, solver="adam",
                 alpha=0.0001, batch_size="auto", learning_rate="constant",
                 learning_rate_init=0.001, power_t=0.5, max_iter=200, shuffle=True,
                 random_state=None, tol=1e-4, verbose=False, warm_start=False, momentum=0.9,
                 nesterovs_momentum=True, early_stopping=False, validation_fraction=0.1,
                 beta_1=0.9, beta_2=0.999, epsilon=1e-8, n_iter_no_change=10, max_fun=15000,
                 class_weight=None, backend="auto", dtype="float32"):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.solver = solver
        self.alpha = alpha
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.learning_rate_init = learning_rate_init
        self.power_t = power_t
        self.max_iter = max_iter
        self.shuffle = shuffle
        self.random_state = random_state
        self.tol = tol
        self.verbose = verbose
        self.warm_start = warm_start
        self.momentum = momentum
        self.nesterovs_momentum = nesterovs_momentum
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.n_iter_no_change = n_iter_no_change
        self.max_fun = max_fun
        self.class_weight = class_weight
        self.backend = backend
        self.dtype = dtype

    # ---- public API ---------------------------------------------------------------------
    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y, sample_weight=None):
        """Fit the network to X (n_samples, n_features) and labels y (n_samples,).

        sample_weight : array-like of shape (n_samples,), optional, non-negative.
        Returns self."""
        return self._fit(X, y, sample_weight, incremental=False)

    def _check_solver(self):
        if self.solver not in _STOCHASTIC:
            raise AttributeError(f"partial_fit is only available for stochastic optimizers. "
                                 f"{self.solver} is not stochastic.")
        return True

    @available_if(_check_solver)
    @_fit_context(prefer_skip_nested_validation=True)
    def partial_fit(self, X, y, sample_weight=None, classes=None):
        """One epoch over X (n_samples, n_features), y (n_samples,) (sklearn's argument order).

        classes : array of shape (n_classes,), required on the first call.  Returns self."""
        _check_partial_fit_first_call(self, classes)
        return self._fit(X, y, sample_weight, incremental=True)

    def predict(self, X):
        """Predicted labels (n_samples,), taken from classes_."""
        Z = self._logits(X)
        return self.classes_[np.argmax(Z, axis=1)]

    def predict_proba(self, X):
        """Class probabilities (n_samples, n_classes), columns ordered as classes_."""
        return softmax_rows(self._logits(X))

    def predict_log_proba(self, X):
        """log(predict_proba(X)), shape (n_samples, n_classes)."""
        P = self.predict_proba(X)
        return np.log(P, out=P)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = False
        tags.classifier_tags.multi_label = False
        return tags

    def _expected_failed_checks(self):
        """Estimator checks expected to fail, {check name: reason}; fed to
        `parametrize_with_checks(expected_failed_checks=...)`."""
        if np.dtype(self.dtype) == np.float32:
            return {"check_sample_weight_equivalence_on_dense_data":
                    "float32: weighting rows instead of repeating them changes the summation "
                    "order, so after training the probabilities differ by ~1e-6 (relative), "
                    "above the check's rtol=1e-7; with dtype='float64' they agree to ~1e-14 "
                    "and the check passes"}
        return {}

    def __getstate__(self):
        state = dict(super().__getstate__())  # BaseEstimator may hand back __dict__ itself
        state.pop("_model", None)  # holds a backend object; rebuilt from coefs_ on demand
        return state

    # ---- fitting --------------------------------------------------------------------------
    def _fit(self, X, y, sample_weight, incremental):
        if self.activation != "relu":
            raise ValueError(f"activation={self.activation!r} is not supported: fastmlp trains "
                             f"ReLU networks only (use sklearn.neural_network.MLPClassifier "
                             f"for other activations)")
        hidden = self.hidden_layer_sizes
        hidden = list(hidden) if np.iterable(hidden) else [hidden]
        if not all(isinstance(h, Integral) and not isinstance(h, bool) and h > 0
                   for h in hidden):
            raise ValueError(f"hidden_layer_sizes must be positive integers, got "
                             f"{self.hidden_layer_sizes!r}")
        dtype = np.dtype(self.dtype)
        first_pass = not hasattr(self, "coefs_") or (not self.warm_start and not incremental)
        X, y = validate_data(self, X, y, dtype=dtype, order="C", reset=first_pass)
        check_classification_targets(y)
        y_enc = self._encode(y, incremental)
        sw = self._weights(sample_weight, X, y, incremental)
        sizes = [X.shape[1]] + [int(h) for h in hidden] + [len(self.classes_)]
        self._random_state = check_random_state(self.random_state)
        if first_pass:
            self._initialize(sizes, dtype)
        elif [c.shape for c in self.coefs_] != list(zip(sizes[:-1], sizes[1:])):
            raise ValueError(f"warm_start / partial_fit needs the same layer sizes: the "
                             f"network has {[c.shape for c in self.coefs_]}, the parameters "
                             f"and data give {sizes}")
        model = self._get_model(fit=True)
        if self.solver == "lbfgs":
            self._fit_lbfgs(model, X, y_enc, sw)
        else:
            self._fit_stochastic(model, X, y_enc, sw, incremental)
        return self

    def _encode(self, y, incremental):
        """Labels -> int64 indices into classes_ (defining classes_ when sklearn does)."""
        if not hasattr(self, "classes_") or (not self.warm_start and not incremental):
            self.classes_ = unique_labels(y)
        else:
            classes = unique_labels(y)
            if self.warm_start and not incremental and set(classes) != set(self.classes_):
                raise ValueError(f"warm_start can only be used where `y` has the same classes "
                                 f"as in the previous call to fit. Previously got "
                                 f"{self.classes_}, `y` has {classes}")
            if np.setdiff1d(classes, self.classes_).size:
                raise ValueError(f"`y` has classes not in `self.classes_`. `self.classes_` "
                                 f"has {self.classes_}. 'y' has {classes}.")
        return np.ascontiguousarray(np.searchsorted(self.classes_, y), dtype=np.int64)

    def _weights(self, sample_weight, X, y, incremental):
        """sample_weight times class weights, (n_samples,) in X's dtype, or None."""
        sw = None
        if sample_weight is not None:
            sw = _check_sample_weight(sample_weight, X, dtype=X.dtype, ensure_non_negative=True)
        if self.class_weight is not None:
            if incremental and isinstance(self.class_weight, str):
                raise ValueError("class_weight='balanced' is not supported by partial_fit: "
                                 "pass a dict, e.g. from sklearn.utils.class_weight."
                                 "compute_class_weight('balanced', classes=..., y=...)")
            cw = compute_sample_weight(self.class_weight, y)
            if not (np.all(np.isfinite(cw)) and np.all(cw >= 0)):
                raise ValueError(f"class_weight must give finite, non-negative weights, got "
                                 f"{self.class_weight!r}")
            sw = cw if sw is None else sw * cw  # never write into the caller's array
            if not np.sum(sw) > 0:
                raise ValueError("class_weight and sample_weight give every sample zero weight")
        return None if sw is None else np.ascontiguousarray(sw, dtype=X.dtype)

    def _initialize(self, sizes, dtype):
        """sklearn's Glorot-uniform draws, in its order: per layer coefs then intercepts."""
        self.n_iter_, self.t_ = 0, 0
        self.n_layers_ = len(sizes)
        self.n_outputs_ = sizes[-1]
        self.out_activation_ = "softmax"
        self.coefs_, self.intercepts_ = [], []
        for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
            drawn = 1 if (i == len(sizes) - 2 and fan_out == 2) else fan_out
            bound = np.sqrt(6.0 / (fan_in + drawn))
            W = self._random_state.uniform(-bound, bound, (fan_in, drawn))
            b = self._random_state.uniform(-bound, bound, drawn)
            if drawn != fan_out:  # binary: sklearn's logistic unit z becomes softmax(0, z)
                W, b = np.hstack([np.zeros_like(W), W]), np.concatenate([[0.0], b])
            self.coefs_.append(np.ascontiguousarray(W, dtype))
            self.intercepts_.append(np.ascontiguousarray(b, dtype))
        for attr in ("_model", "_opt_state", "_best_params"):
            self.__dict__.pop(attr, None)
        if self.solver in _STOCHASTIC:
            self.loss_curve_ = []
            self._no_improvement_count = 0
            if self.early_stopping:
                self.validation_scores_, self.best_validation_score_ = [], -np.inf
                self.best_loss_ = None
            else:
                self.best_loss_ = np.inf
                self.validation_scores_ = self.best_validation_score_ = None

    def _get_model(self, fit=False):
        """The MLP whose parameter arrays are coefs_ / intercepts_ (built when missing)."""
        params = self.coefs_ + self.intercepts_
        m = self.__dict__.get("_model")
        if (m is not None and len(m.weights) + len(m.biases) == len(params)
                and all(p is q for p, q in zip(m.weights + m.biases, params))
                and (not fit or (m.dtype == np.dtype(self.dtype)
                                 and self.backend in ("auto", m.backend.name)))):
            return m
        dtype = np.dtype(self.dtype) if fit else self.coefs_[0].dtype
        if dtype not in (np.float32, np.float64):
            dtype = np.dtype(self.dtype)
        sizes = [self.coefs_[0].shape[0]] + [c.shape[1] for c in self.coefs_]
        m = MLP(sizes, dtype=dtype, seed=0, backend=self.backend)
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

    def _batch_size(self, n):
        if self.batch_size == "auto":
            return min(200, n)
        if self.batch_size > n:
            warnings.warn("Got `batch_size` less than 1 or larger than sample size. It is "
                          "going to be clipped")
        return int(np.clip(self.batch_size, 1, n))

    def _make_trainer(self, model, batch_size, fresh):
        """A Trainer on `model`; it resumes the saved optimizer state unless `fresh`."""
        sgd = self.solver == "sgd"
        mom = float(self.momentum) if sgd else 0.0
        tr = Trainer(model, optimizer=self.solver, lr=self.learning_rate_init, momentum=mom,
                     nesterov=bool(sgd and self.nesterovs_momentum and mom > 0),
                     beta1=self.beta_1, beta2=self.beta_2, eps=self.epsilon,
                     batch_size=batch_size, epochs=1, shuffle=False)
        tr._ensure_state()
        kind = (self.solver, mom > 0, model.dtype.name,
                tuple(p.shape for p in model.weights + model.biases))
        saved = self.__dict__.get("_opt_state")
        if not fresh and saved is not None and self.__dict__.get("_opt_kind") == kind:
            tr._state, tr.t = saved, self._opt_t
        else:
            self._lr, self._opt_t = float(self.learning_rate_init), 0
        self._opt_state, self._opt_kind = tr._state, kind
        tr.current_lr = self._lr
        return tr

    def _set_lr(self, tr, lr):
        """Change the SGD learning rate.  The Trainer keeps PyTorch-style velocities (gradient
        units); rescaling them by old/new keeps the update equal to sklearn's velocities."""
        if self.solver == "sgd" and self.momentum > 0 and lr != self._lr:
            for v in tr._state:
                v *= self._lr / lr
        self._lr = tr.current_lr = float(lr)

    def _split(self, X, y, sw):
        """sklearn's validation split: the same RNG use, and stratified only where sklearn
        stratifies (one or two classes, where its network has a single output unit)."""
        strat = (y == 1)[:, None] if len(self.classes_) <= 2 else None
        arrays = (X, y) if sw is None else (X, y, sw)
        parts = train_test_split(*arrays, random_state=self._random_state,
                                 test_size=self.validation_fraction, stratify=strat)
        if parts[1].shape[0] < 2:
            raise ValueError("The validation set is too small. Increase 'validation_fraction' "
                             "or the size of your dataset.")
        parts = [np.ascontiguousarray(p) for p in parts] + [None, None]
        return parts[0], parts[2], parts[4], parts[1], parts[3], parts[5]

    def _fit_stochastic(self, model, X, y, sw, incremental):
        if self.early_stopping and incremental:
            raise ValueError("partial_fit does not support early_stopping=True")
        # a warm start may switch solver or early_stopping: fill in what that run lacked
        if not hasattr(self, "loss_curve_"):
            self.loss_curve_, self._no_improvement_count = [], 0
        if not self.early_stopping and getattr(self, "best_loss_", None) is None:
            self.best_loss_ = np.inf
        if self.early_stopping:
            if getattr(self, "validation_scores_", None) is None:
                self.validation_scores_, self.best_validation_score_ = [], -np.inf
            if "_best_params" not in self.__dict__:
                self._best_params = [p.copy() for p in model.weights + model.biases]
            X, y, sw, X_val, y_val, sw_val = self._split(X, y, sw)
        else:
            X_val = y_val = sw_val = None
        n = X.shape[0]
        bs = self._batch_size(n)
        tr = self._make_trainer(model, bs, fresh=not incremental)
        ws_full = tr._workspace(bs)
        sw_buf = None if sw is None else np.empty(bs, X.dtype)
        sample_idx = np.arange(n)
        adam = self.solver == "adam"
        try:
            self.n_iter_ = 0
            for _ in range(self.max_iter):
                if self.shuffle:
                    sample_idx = _shuffle(sample_idx, random_state=self._random_state)
                acc = 0.0
                for sl in gen_batches(n, bs):
                    m = sl.stop - sl.start
                    ws = ws_full.rows(m)
                    if self.shuffle:
                        idx = sample_idx[sl]
                        Xb, yb = np.take(X, idx, axis=0, out=ws.X), np.take(y, idx, out=ws.y)
                        swb = None if sw is None else np.take(sw, idx, out=sw_buf[:m])
                    else:
                        Xb, yb, swb = X[sl], y[sl], None if sw is None else sw[sl]
                    denom = m if swb is None else float(swb.sum(dtype=np.float64))
                    if not denom > 0:
                        continue  # zero total weight: no gradient (sklearn divides by zero)
                    tr.weight_decay = 0.5 * self.alpha / denom
                    if adam:  # sklearn adds epsilon to sqrt(v), not to the bias-corrected one
                        tr.eps = self.epsilon / math.sqrt(1.0 - self.beta_2 ** (tr.t + 1))
                    penalty = model.penalty(tr.weight_decay)
                    acc += (tr._step(ws, Xb, yb, swb) + penalty) * m
                self._opt_t = tr.t
                self.n_iter_ += 1
                self.loss_ = acc / n
                self.t_ += n
                self.loss_curve_.append(self.loss_)
                if self.verbose:
                    print("Iteration %d, loss = %.8f" % (self.n_iter_, self.loss_))
                self._update_no_improvement_count(model, X_val, y_val, sw_val)
                if self.solver == "sgd" and self.learning_rate == "invscaling":
                    self._set_lr(tr, self.learning_rate_init / (self.t_ + 1) ** self.power_t)
                if self._no_improvement_count > self.n_iter_no_change:
                    what = "Validation score" if self.early_stopping else "Training loss"
                    msg = (f"{what} did not improve more than tol={self.tol:f} for "
                           f"{self.n_iter_no_change} consecutive epochs.")
                    if self.solver == "adam" or self.learning_rate != "adaptive":
                        if self.verbose:
                            print(msg + " Stopping.")
                        break
                    if self._lr <= 1e-6:
                        if self.verbose:
                            print(msg + " Learning rate too small. Stopping.")
                        break
                    self._set_lr(tr, self._lr / 5.0)
                    if self.verbose:
                        print(msg + " Setting learning rate to %f" % self._lr)
                    self._no_improvement_count = 0
                if incremental:
                    break
                if self.n_iter_ == self.max_iter:
                    warnings.warn(f"Stochastic Optimizer: Maximum iterations ({self.max_iter}) "
                                  f"reached and the optimization hasn't converged yet.",
                                  ConvergenceWarning)
        except KeyboardInterrupt:
            warnings.warn("Training interrupted by user.")
        finally:
            self._opt_t = tr.t
        if self.early_stopping:  # restore the best weights, in place
            for dst, src in zip(model.weights + model.biases, self._best_params):
                np.copyto(dst, src)

    def _update_no_improvement_count(self, model, X_val, y_val, sw_val):
        if self.early_stopping:
            logits = model.forward(X_val)
            score = np.nan if not np.isfinite(logits).all() else \
                float(np.average(np.argmax(logits, axis=1) == y_val, weights=sw_val))
            self.validation_scores_.append(score)
            if self.verbose:
                print("Validation score: %f" % score)
            if score < self.best_validation_score_ + self.tol:
                self._no_improvement_count += 1
            else:
                self._no_improvement_count = 0
            if score > self.best_validation_score_:
                self.best_validation_score_ = score
                for dst, src in zip(self._best_params, model.weights + model.biases):
                    np.copyto(dst, src)
        else:
            last = self.loss_curve_[-1]
            if last > self.best_loss_ - self.tol:
                self._no_improvement_count += 1
            else:
                self._no_improvement_count = 0
            if last < self.best_loss_:
                self.best_loss_ = last

    def _fit_lbfgs(self, model, X, y, sw):
        """scipy's L-BFGS-B on the fused loss and gradient, parameters packed as float64."""
        params = model.weights + model.biases
        grads = model.dweights + model.dbiases
        n_w = len(model.weights)
        bounds = np.cumsum([0] + [p.size for p in params])
        spans = list(zip(bounds[:-1], bounds[1:]))
        ws = model.workspace(X.shape[0])
        wd = 0.5 * self.alpha / (X.shape[0] if sw is None else float(sw.sum(dtype=np.float64)))

        def unpack(x):
            for p, (a, b) in zip(params, spans):
                np.copyto(p.reshape(-1), x[a:b], casting="same_kind")

        x_good = None  # the last parameters with a finite loss, restored on divergence

        def loss_grad(x):
            nonlocal x_good
            unpack(x)
            loss = model._train_pass(ws, X, y, sw) + model.penalty(wd)
            if not math.isfinite(loss):
                unpack(x0 if x_good is None else x_good)
                raise TrainingDivergedError(f"L-BFGS loss became {loss}; the network was reset "
                                            f"to the last parameters with a finite loss. Scale "
                                            f"the inputs or change alpha")
            if x_good is None:
                x_good = x.copy()
            else:
                np.copyto(x_good, x)
            g = np.empty(bounds[-1])
            for i, (p, d, (a, b)) in enumerate(zip(params, grads, spans)):
                g[a:b] = d.reshape(-1)
                if i < n_w and wd:
                    g[a:b] += (2.0 * wd) * p.reshape(-1)
            return loss, g

        x0 = np.concatenate([p.reshape(-1) for p in params]).astype(np.float64)
        res = scipy.optimize.minimize(
            loss_grad, x0, method="L-BFGS-B", jac=True,
            options={"maxfun": self.max_fun, "maxiter": self.max_iter, "gtol": self.tol,
                     **_lbfgs_print_options(self.verbose is True or self.verbose >= 1)})
        self.n_iter_ = _check_optimize_result("lbfgs", res, self.max_iter)
        self.loss_ = float(res.fun)
        unpack(res.x)

    # ---- prediction -------------------------------------------------------------------------
    def _logits(self, X):
        """Output-layer pre-activations (n_samples, n_classes) in the model's dtype."""
        check_is_fitted(self)
        model = self._get_model()
        X = validate_data(self, X, reset=False, dtype=model.dtype, order="C")
        return model.forward(X)
