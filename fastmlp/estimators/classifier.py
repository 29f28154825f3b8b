"""MLPClassifier: a scikit-learn classifier that trains through fastmlp's MLP and Trainer.

Design: the labels, class weights, output layer and predictions of
`sklearn.neural_network.MLPClassifier`: a `LabelBinarizer` defines classes_ and the targets; a
multiclass problem gets a softmax output trained on the class indices, a binary one a single
logistic output and a multilabel indicator y one logistic output per label.  Everything else
is `BaseMLP` (_base.py).  Differences from scikit-learn: docs/estimator.md.
"""
import numpy as np
from sklearn.base import ClassifierMixin, _fit_context
from sklearn.preprocessing import LabelBinarizer
from sklearn.utils._param_validation import StrOptions
from sklearn.utils.class_weight import compute_sample_weight
from sklearn.utils.metaestimators import available_if
from sklearn.utils.multiclass import (_check_partial_fit_first_call,
                                      check_classification_targets, type_of_target,
                                      unique_labels)
from sklearn.utils.validation import column_or_1d

from ._base import ATTRIBUTES_DOC, PARAMETERS_DOC, BaseMLP, store_parameters


class MLPClassifier(ClassifierMixin, BaseMLP):
    __doc__ = f"""Multi-layer perceptron classifier, trained on the log-loss by fastmlp's kernels.

    A drop-in for `sklearn.neural_network.MLPClassifier`: the same parameters, defaults,
    output layer, training loop and fitted attributes.

    Parameters
    ----------
    {PARAMETERS_DOC}
    class_weight : dict, "balanced" or None, default=None
        Multiplies each sample's weight by its class's weight (not in sklearn's MLP).

    Attributes
    ----------
    {ATTRIBUTES_DOC}
    classes_ : ndarray of shape (n_classes,)
    validation_scores_, best_validation_score_ : accuracy on the validation set (early stopping)
    n_outputs_ : int, output units: n_classes (multiclass), 1 (binary), n_labels (multilabel)
    out_activation_ : str, "softmax" (multiclass) or "logistic" (binary, multilabel)
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
                 class_weight=None, backend="auto", dtype=None, threads="auto",
                 precision=None, dropout=0.0):
        store_parameters(self, locals())

    # ---- public API ---------------------------------------------------------------------
    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y, sample_weight=None):
        """Fit the network to X (n_samples, n_features) and labels y (n_samples,), or a
        label indicator matrix (n_samples, n_labels) for multilabel classification.

        sample_weight : array-like of shape (n_samples,), optional, non-negative.
        Returns self."""
        return self._fit(X, y, sample_weight, incremental=False)

    @available_if(BaseMLP._check_solver)
    @_fit_context(prefer_skip_nested_validation=True)
    def partial_fit(self, X, y, sample_weight=None, classes=None):
        """One epoch over X (n_samples, n_features), y (sklearn's argument order).

        classes : array of shape (n_classes,), required on the first call.  Returns self."""
        if _check_partial_fit_first_call(self, classes):
            self._label_binarizer = LabelBinarizer()
            multilabel = type_of_target(y).startswith("multilabel")
            self._label_binarizer.fit(y if multilabel else classes)
        return self._fit(X, y, sample_weight, incremental=True)

    def predict(self, X):
        """Predicted labels (n_samples,) taken from classes_, or the label indicator matrix
        (n_samples, n_labels) for multilabel."""
        P = self._output(X)
        return self._label_binarizer.inverse_transform(P.ravel() if P.shape[1] == 1 else P)

    def predict_proba(self, X):
        """Probabilities (n_samples, n_classes), columns ordered as classes_: the softmax
        (multiclass), (1 - p, p) (binary), or each label's own probability (multilabel)."""
        P = self._output(X)
        if P.shape[1] == 1:
            p = P[:, 0]
            return np.stack([1 - p, p], axis=1)
        return P

    def predict_log_proba(self, X):
        """log(predict_proba(X)), shape (n_samples, n_classes)."""
        P = self.predict_proba(X)
        return np.log(P, out=P)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_label = True
        return tags

    # ---- what BaseMLP asks of a classifier ---------------------------------------------------
    def _validate_input(self, X, y, sample_weight, incremental, reset):
        """sklearn's: X, the binarized labels (n_samples, n_outputs) as bool (defining
        classes_ when sklearn does), and the sample weights times the class weights."""
        X, y = self._validate_X_y(X, y, reset)
        if y.ndim == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)
        check_classification_targets(y)
        if not hasattr(self, "classes_") or (not self.warm_start and not incremental):
            self._label_binarizer = LabelBinarizer().fit(y)
            self.classes_ = self._label_binarizer.classes_
        else:
            classes = unique_labels(y)
            if self.warm_start and not incremental and set(classes) != set(self.classes_):
                raise ValueError(f"warm_start can only be used where `y` has the same classes "
                                 f"as in the previous call to fit. Previously got "
                                 f"{self.classes_}, `y` has {classes}")
            if np.setdiff1d(classes, self.classes_).size:
                raise ValueError(f"`y` has classes not in `self.classes_`. `self.classes_` "
                                 f"has {self.classes_}. 'y' has {classes}.")
        return X, self._binarize(y), self._class_sample_weight(sample_weight, X, y, incremental)

    def _binarize(self, y):
        """LabelBinarizer.transform(y) as bool (n_samples, n_outputs), built directly for 1-D
        labels (already checked to lie in classes_), the binarizer's own work otherwise."""
        lb = self._label_binarizer
        if y.ndim != 1 or lb.y_type_ not in ("binary", "multiclass"):
            return lb.transform(y).astype(bool)
        if len(self.classes_) <= 2:  # one logistic unit: 1 for classes_[1]
            return (y == self.classes_[-1]).reshape(-1, 1) if len(self.classes_) == 2 else \
                np.zeros((len(y), 1), bool)
        Y = np.zeros((len(y), len(self.classes_)), bool)
        Y[np.arange(len(y)), np.searchsorted(self.classes_, y)] = True
        return Y

    def _class_sample_weight(self, sample_weight, X, y, incremental):
        """sample_weight times class weights, (n_samples,) in X's dtype, or None."""
        sw = self._sample_weight(sample_weight, X)
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

    def _out_activation(self):
        return "softmax" if self._label_binarizer.y_type_ == "multiclass" else "logistic"

    def _encode(self, Y, dtype):
        """The MLP's targets: class indices (softmax output) or the 0/1 matrix (logistic)."""
        if self.out_activation_ == "softmax":
            return np.ascontiguousarray(np.argmax(Y, axis=1), dtype=np.int64)
        return np.ascontiguousarray(Y, dtype=dtype)

    def _stratify(self, Y):
        """sklearn stratifies its split on the binarized y when there is one output unit."""
        return Y if self.n_outputs_ == 1 else None

    def _validation_score(self, model, X_val, y_val, sw_val):
        """Accuracy (every label right, for multilabel) of predict's decisions."""
        P = self._activate(model._forward(X_val))   # checked and converted once per fit
        if self.out_activation_ == "softmax":
            hit = np.argmax(P, axis=1) == y_val
        else:
            hit = np.all((P > 0.5) == (y_val > 0.5), axis=1)
        return float(np.average(hit, weights=sw_val))
