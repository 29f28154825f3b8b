"""MLPRegressor: a scikit-learn regressor that trains through fastmlp's MLP and Trainer.

Design: the targets, losses, output layer, validation score (R²) and predictions of
`sklearn.neural_network.MLPRegressor`: loss="squared_error" is an identity output trained on
half the squared error, loss="poisson" an exp output (log link) trained on half the Poisson
deviance; both for one or several outputs.  The squared error is reported, as scikit-learn
does, as a mean over the outputs (the trained gradient is that of their sum: `_loss_scale`).
Everything else is `BaseMLP` (_base.py).  Differences from scikit-learn: docs/estimator.md.
"""
import numpy as np
from sklearn.base import RegressorMixin, _fit_context
from sklearn.metrics import r2_score
from sklearn.utils._param_validation import StrOptions
from sklearn.utils.metaestimators import available_if
from sklearn.utils.validation import column_or_1d

from ._base import ATTRIBUTES_DOC, PARAMETERS_DOC, BaseMLP, store_parameters


class MLPRegressor(RegressorMixin, BaseMLP):
    __doc__ = f"""Multi-layer perceptron regressor, trained by fastmlp's kernels.

    A drop-in for `sklearn.neural_network.MLPRegressor`: the same parameters, defaults,
    losses, training loop and fitted attributes.

    Parameters
    ----------
    loss : {{"squared_error", "poisson"}}, default="squared_error"
        Half the squared error (identity output), or half the Poisson deviance with a log
        link (exp output; y must be >= 0).
    {PARAMETERS_DOC}

    Attributes
    ----------
    {ATTRIBUTES_DOC}
    validation_scores_, best_validation_score_ : R² on the validation set (early stopping)
    n_outputs_ : int
    out_activation_ : str, "identity" (squared_error) or "exp" (poisson)
    """

    _parameter_constraints: dict = {
        **BaseMLP._parameter_constraints,
        "loss": [StrOptions({"squared_error", "poisson"})],
    }

    def __init__(self, loss="squared_error", hidden_layer_sizes=(100,), activation="relu", *,
                 solver="adam", alpha=0.0001, batch_size="auto", learning_rate="constant",
                 learning_rate_init=0.001, power_t=0.5, max_iter=200, shuffle=True,
                 random_state=None, tol=1e-4, verbose=False, warm_start=False, momentum=0.9,
                 nesterovs_momentum=True, early_stopping=False, validation_fraction=0.1,
                 beta_1=0.9, beta_2=0.999, epsilon=1e-8, n_iter_no_change=10, max_fun=15000,
                 backend="auto", dtype=None, threads="auto",
                 precision=None, dropout=0.0):
        store_parameters(self, locals())

    # ---- public API ---------------------------------------------------------------------
    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y, sample_weight=None):
        """Fit the network to X (n_samples, n_features) and targets y (n_samples,) or
        (n_samples, n_outputs).

        sample_weight : array-like of shape (n_samples,), optional, non-negative.
        Returns self."""
        return self._fit(X, y, sample_weight, incremental=False)

    @available_if(BaseMLP._check_solver)
    @_fit_context(prefer_skip_nested_validation=True)
    def partial_fit(self, X, y, sample_weight=None):
        """One epoch over X (n_samples, n_features), y.  Returns self."""
        return self._fit(X, y, sample_weight, incremental=True)

    def predict(self, X):
        """Predicted values (n_samples,) for one output, else (n_samples, n_outputs)."""
        P = self._output(X)
        return P.ravel() if P.shape[1] == 1 else P

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags

    # ---- what BaseMLP asks of a regressor ----------------------------------------------------
    def _validate_input(self, X, y, sample_weight, incremental, reset):
        X, y = self._validate_X_y(X, y, reset, y_numeric=True)
        if y.ndim == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)
        if self.loss == "poisson" and y.size and np.min(y) < 0:
            raise ValueError("loss='poisson' needs y >= 0 (counts or rates): some values of "
                             "y are negative")
        return X, y, self._sample_weight(sample_weight, X)

    def _out_activation(self):
        return "exp" if self.loss == "poisson" else "identity"

    def _loss_scale(self):
        return 1.0 / self.n_outputs_ if self.out_activation_ == "identity" else 1.0

    def _encode(self, Y, dtype):
        return np.ascontiguousarray(Y, dtype=dtype)

    def _stratify(self, Y):
        return None

    def _validation_score(self, model, X_val, y_val, sw_val):
        """R² of the predictions, NaN when they are not finite (as sklearn)."""
        pred = self._activate(model._forward(X_val))   # checked and converted once per fit
        if not np.isfinite(pred).all():
            return np.nan
        return float(r2_score(y_val, pred, sample_weight=sw_val))
