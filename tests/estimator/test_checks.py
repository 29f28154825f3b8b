"""scikit-learn's estimator checks (`parametrize_with_checks`) on MLPClassifier and
MLPRegressor: each compiled backend in float32, the NumPy reference in float64, and the
default dtype (X's) with L-BFGS and with SGD on other activations."""
import numpy as np
import pytest
from sklearn.utils.estimator_checks import parametrize_with_checks

import fastmlp
from fastmlp import MLPClassifier, MLPRegressor

COMPILED = [b for b in fastmlp.available_backends() if b != "numpy"]
FAST = COMPILED[0] if COMPILED else "numpy"
pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")


def _configs(cls, activations):
    small = dict(hidden_layer_sizes=(8,), max_iter=100, learning_rate_init=0.01, random_state=0)
    cfgs = [dict(backend=b, dtype="float32") for b in COMPILED or ["numpy"]]
    cfgs += [dict(backend="numpy", dtype="float64"),
             dict(backend="numpy", solver="lbfgs", activation=activations[0]),
             dict(backend=FAST, solver="sgd", activation=activations[1])]
    return [cls(**small, **c) for c in cfgs]


@parametrize_with_checks(_configs(MLPClassifier, ("tanh", "logistic"))
                         + _configs(MLPRegressor, ("logistic", "tanh")),
                         expected_failed_checks=lambda est: est._expected_failed_checks())
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


@pytest.mark.parametrize("cls", [MLPClassifier, MLPRegressor])
def test_expected_failures_only_for_float32(cls):
    assert cls()._expected_failed_checks() == {}  # dtype=None: float64 for the checks' data
    assert cls(dtype="float64")._expected_failed_checks() == {}
    reasons = cls(dtype=np.float32)._expected_failed_checks()
    assert set(reasons) == {"check_sample_weight_equivalence_on_dense_data"}
    assert "float32" in reasons["check_sample_weight_equivalence_on_dense_data"]
