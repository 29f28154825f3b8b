"""MLPClassifier: a scikit-learn classifier that trains through fastmlp's MLP and Trainer.

Design: the labels, class weights, output layer and prediction of
`sklearn.neural_network.MLPClassifier`; everything else is `BaseMLP` (_base.py).

Differences from scikit-learn (docs/estimator.md): ReLU only; the output is always a softmax
(two units for a binary problem, started as sklearn's logistic unit); no sparse input; momentum
must be < 1.
"""
import numpy as np
from sklearn.base import ClassifierMixin, _fit_context
from sklearn.utils._param_validation import StrOptions
from sklearn.utils.class_weight import compute_sample_weight
from sklearn.utils.metaestimators import available_if
from sklearn.utils.multiclass import (_check_partial_fit_first_call,
                                      check_classification_targets, unique_labels)
from sklearn.utils.validation import _check_sample_weight

from ..model import softmax_rows
from ._base import BaseMLP


class MLPClassifier(ClassifierMixin, BaseMLP):
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
        **BaseMLP._parameter_constraints,
        "class_weight": [dict, StrOptions({"balanced"}), None],
    }

    def __init__(self, hidden_layer_sizes=(100,), activation="relu", *, solver="adam",
                 alpha=0.0001, batch_size="auto", learning_rate="constant",
                 learning_rate_init=0.001, power_t=0.5, max_iter=200, shuffle=True,
                 random_state=None, tol=1e-4, verbose=False, warm_start=False, momentum=0.9,
                 nesterovs_momentum=True, early_stopping=False, validation_fraction=0.1,
                 beta_1=0.9, beta_2=0.999, epsilon=1e-8, n_iter_no_change=10, max_fun=15000,
                 class_weight=None, backend="auto", dtype="float32"):
        super().__init__(
            hidden_layer_sizes=hidden_layer_sizes, activation=activation, solver=solver,
            alpha=alpha, batch_size=batch_size, learning_rate=learning_rate,
            learning_rate_init=learning_rate_init, power_t=power_t, max_iter=max_iter,
            shuffle=shuffle, random_state=random_state, tol=tol, verbose=verbose,
            warm_start=warm_start, momentum=momentum, nesterovs_momentum=nesterovs_momentum,
            early_stopping=early_stopping, validation_fraction=validation_fraction,
            beta_1=beta_1, beta_2=beta_2, epsilon=epsilon, n_iter_no_change=n_iter_no_change,
            max_fun=max_fun, backend=backend, dtype=dtype)
        self.class_weight = class_weight

    # ---- public API ---------------------------------------------------------------------
    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y, sample_weight=None):
        """Fit the network to X (n_samples, n_features) and labels y (n_samples,).

        sample_weight : array-like of shape (n_samples,), optional, non-negative.
        Returns self."""
        return self._fit(X, y, sample_weight, incremental=False)

    @available_if(BaseMLP._check_solver)
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

    # ---- what BaseMLP asks of a classifier ---------------------------------------------------
    def _targets(self, y, incremental):
        """Labels -> int64 indices into classes_ (defining classes_ when sklearn does)."""
        check_classification_targets(y)
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

    def _n_outputs(self):
        return len(self.classes_)

    def _sample_weight(self, sample_weight, X, y, incremental):
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

    def _drawn_units(self, fan_out):
        return 1 if fan_out == 2 else fan_out

    def _init_output(self, W, b, fan_out):
        self.out_activation_ = "softmax"
        if W.shape[1] != fan_out:  # binary: sklearn's logistic unit z becomes softmax(0, z)
            W, b = np.hstack([np.zeros_like(W), W]), np.concatenate([[0.0], b])
        return W, b

    def _stratify(self, y):
        """sklearn stratifies its split only with one or two classes (a single output unit)."""
        return (y == 1)[:, None] if len(self.classes_) <= 2 else None

    def _validation_score(self, model, X_val, y_val, sw_val):
        logits = model.forward(X_val)
        if not np.isfinite(logits).all():
            return np.nan
        return float(np.average(np.argmax(logits, axis=1) == y_val, weights=sw_val))
