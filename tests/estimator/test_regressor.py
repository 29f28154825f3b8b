"""MLPRegressor: agreement with sklearn's MLPRegressor (squared error and Poisson, one or several
outputs, every solver and schedule), early stopping on R², incremental training, weights,
dtypes, shapes, divergence and parameter errors."""
import pickle
import warnings

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.datasets import make_regression
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import GridSearchCV
from sklearn.neural_network import MLPRegressor as SkMLP
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import fastmlp
from fastmlp import MLPRegressor

COMPILED = [b for b in fastmlp.available_backends() if b != "numpy"]
FAST = COMPILED[0] if COMPILED else "numpy"
pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")


def _data(n_targets=1, poisson=False, n=240):
    X, y = make_regression(n_samples=n, n_features=8, n_informative=6, n_targets=n_targets,
                           noise=5.0, random_state=0)
    y = y / y.std()
    if poisson:  # counts with a log-linear mean
        y = np.random.RandomState(0).poisson(np.exp(0.5 * y)).astype(float)
    return X / np.abs(X).max(), y


def _both(params, X, y, fit_kw=None, **ours):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        sk = SkMLP(**params).fit(X, y, **(fit_kw or {}))
        fm = MLPRegressor(**params, **ours).fit(X, y, **(fit_kw or {}))
    return sk, fm


@pytest.mark.parametrize("case", [
    dict(n_targets=1, solver="adam", learning_rate_init=0.01),
    dict(n_targets=3, solver="adam", learning_rate_init=0.01, activation="tanh"),
    dict(n_targets=3, solver="sgd", learning_rate="invscaling", learning_rate_init=0.05,
         power_t=0.25, activation="logistic"),
    dict(n_targets=2, solver="sgd", learning_rate="adaptive", tol=0.05, n_iter_no_change=2,
         activation="identity"),
    dict(n_targets=1, loss="poisson", solver="adam", learning_rate_init=0.01),
    dict(n_targets=2, loss="poisson", solver="sgd", momentum=0.5, nesterovs_momentum=False),
], ids=["sq-adam", "sq3-adam-tanh", "sq3-invscaling-logistic", "sq2-adaptive-identity",
        "poisson-adam", "poisson2-momentum"])
def test_reproduces_sklearn_loss_curve(backend, case):
    """In float64 the training is sklearn's arithmetic, including its reported losses: half
    the squared error averaged over rows and then over outputs (while the gradient is that of
    the sum), and half the Poisson deviance with its y·log(y) − y term, summed over outputs."""
    case = dict(case)
    X, y = _data(case.pop("n_targets"), case.get("loss") == "poisson")
    params = dict(dict(hidden_layer_sizes=(16,), max_iter=20, batch_size=48, alpha=1e-3,
                       random_state=3, learning_rate_init=0.02), **case)
    sk, fm = _both(params, X, y, backend=backend, dtype="float64")
    assert fm.n_iter_ == sk.n_iter_ and fm.t_ == sk.t_
    assert fm.out_activation_ == sk.out_activation_ and fm.n_outputs_ == sk.n_outputs_
    np.testing.assert_allclose(fm.loss_curve_, sk.loss_curve_, rtol=1e-9)
    for a, b in zip(fm.coefs_ + fm.intercepts_, sk.coefs_ + sk.intercepts_):
        np.testing.assert_allclose(a, b, rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(fm.predict(X), sk.predict(X), rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("loss, n_targets", [("squared_error", 1), ("squared_error", 3),
                                             ("poisson", 2)])
def test_lbfgs_follows_sklearn(loss, n_targets):
    """L-BFGS sees sklearn's objective (with several outputs: the loss averaged over them and
    the gradient of their sum, as sklearn hands them to scipy): the same iterates."""
    X, y = _data(n_targets, loss == "poisson")
    params = dict(loss=loss, hidden_layer_sizes=(10,), solver="lbfgs", max_iter=25,
                  random_state=0)
    sk, fm = _both(params, X, y, backend="numpy")
    assert fm.n_iter_ == sk.n_iter_ and fm.loss_ == pytest.approx(sk.loss_, rel=1e-9)
    for a, b in zip(fm.coefs_, sk.coefs_):
        np.testing.assert_allclose(a, b, rtol=1e-7, atol=1e-9)


def test_early_stopping_scores_r2_like_sklearn():
    X, y = _data(2)
    params = dict(hidden_layer_sizes=(16,), solver="sgd", learning_rate_init=0.02, max_iter=80,
                  early_stopping=True, n_iter_no_change=3, random_state=0)
    sk, fm = _both(params, X, y, backend=FAST)
    np.testing.assert_allclose(fm.validation_scores_, sk.validation_scores_, rtol=1e-9)
    assert fm.best_validation_score_ == max(fm.validation_scores_) and fm.best_loss_ is None
    assert fm.n_iter_ == sk.n_iter_ < 80
    for a, b in zip(fm.coefs_, sk.coefs_):  # both restored the best epoch's weights
        np.testing.assert_allclose(a, b, rtol=1e-7, atol=1e-9)


def test_sample_weight_matches_sklearn():
    X, y = _data(2)
    sw = np.random.RandomState(1).uniform(0, 2, len(X))
    params = dict(hidden_layer_sizes=(8,), solver="adam", learning_rate_init=0.01, max_iter=15,
                  batch_size=40, early_stopping=True, random_state=2)
    sk, fm = _both(params, X, y, fit_kw=dict(sample_weight=sw), backend=FAST)
    np.testing.assert_allclose(fm.loss_curve_, sk.loss_curve_, rtol=1e-9)
    np.testing.assert_allclose(fm.validation_scores_, sk.validation_scores_, rtol=1e-9)


def test_zero_weight_equals_dropping_rows():
    X, y = _data(1, n=150)
    keep = np.random.RandomState(1).rand(len(X)) > 0.3
    kw = dict(hidden_layer_sizes=(10,), solver="lbfgs", max_iter=50, random_state=0)
    dropped = MLPRegressor(**kw).fit(X[keep], y[keep])
    weighted = MLPRegressor(**kw).fit(X, y, sample_weight=keep.astype(float))
    np.testing.assert_allclose(weighted.predict(X), dropped.predict(X), rtol=1e-6, atol=1e-8)


def test_fitted_attributes_and_shapes():
    X, y = _data(3)
    reg = MLPRegressor(hidden_layer_sizes=(12, 6), max_iter=5, random_state=0).fit(X, y)
    assert [c.shape for c in reg.coefs_] == [(8, 12), (12, 6), (6, 3)]
    assert (reg.n_layers_, reg.n_outputs_, reg.n_features_in_) == (4, 3, 8)
    assert reg.out_activation_ == "identity" and reg.predict(X).shape == (240, 3)
    assert len(reg.loss_curve_) == reg.n_iter_ == 5 and reg.t_ == 5 * 240
    assert reg.best_loss_ == min(reg.loss_curve_) and reg.validation_scores_ is None
    one = MLPRegressor(hidden_layer_sizes=(4,), max_iter=5, random_state=0).fit(X, y[:, 0])
    assert one.predict(X).shape == (240,) and one.n_outputs_ == 1
    h = np.maximum(X @ one.coefs_[0] + one.intercepts_[0], 0)
    np.testing.assert_allclose(one.predict(X), (h @ one.coefs_[1] + one.intercepts_[1])[:, 0])
    pois = MLPRegressor(loss="poisson", hidden_layer_sizes=(4,), max_iter=5,
                        random_state=0).fit(*_data(1, poisson=True))
    assert pois.out_activation_ == "exp" and (pois.predict(X) > 0).all()
    assert MLPRegressor("poisson").loss == "poisson"  # loss is the first positional argument


@pytest.mark.parametrize("X_dtype, expected", [(np.float32, np.float32), (np.float64, np.float64),
                                               (np.int32, np.float64)])
def test_dtype_follows_X(X_dtype, expected):
    X, y = _data(2)
    X = (X * 100).astype(X_dtype)
    reg = MLPRegressor(hidden_layer_sizes=(8,), max_iter=3, random_state=0).fit(X, y)
    assert all(p.dtype == expected for p in reg.coefs_ + reg.intercepts_)
    assert reg.predict(X).dtype == np.result_type(X_dtype, expected)
    forced = MLPRegressor(hidden_layer_sizes=(8,), max_iter=3, dtype="float32").fit(X, y)
    assert forced.coefs_[0].dtype == np.float32


def test_partial_fit_matches_sklearn_and_pickles():
    X, y = _data(2)
    kw = dict(hidden_layer_sizes=(16,), solver="sgd", learning_rate_init=0.02, random_state=0)
    sk, fm = SkMLP(**kw), MLPRegressor(**kw)
    for s in range(0, 240, 80):
        sk.partial_fit(X[s:s + 80], y[s:s + 80])
        fm.partial_fit(X[s:s + 80], y[s:s + 80])
        assert fm.loss_ == pytest.approx(sk.loss_, rel=1e-9)
    copy = pickle.loads(pickle.dumps(fm))
    fm.partial_fit(X, y)
    copy.partial_fit(X, y)  # the velocities travelled with the pickle
    np.testing.assert_array_equal(copy.predict(X), fm.predict(X))
    assert fm.n_iter_ == 1 and fm.t_ == 2 * 240
    with pytest.raises(AttributeError, match="partial_fit"):
        MLPRegressor(solver="lbfgs").partial_fit


def test_warm_start_continues():
    X, y = _data(1)
    reg = MLPRegressor(hidden_layer_sizes=(16,), max_iter=5, warm_start=True, random_state=0)
    reg.fit(X, y)
    first, W = reg.loss_curve_[-1], reg.coefs_[0]
    reg.fit(X, y)
    assert reg.coefs_[0] is W and len(reg.loss_curve_) == 10 and reg.n_iter_ == 5
    assert reg.loss_curve_[5] < first
    assert len(clone(reg).set_params(warm_start=False).fit(X, y).loss_curve_) == 5


def test_poisson_needs_non_negative_y():
    X, y = _data(1)
    with pytest.raises(ValueError, match="loss='poisson' needs y >= 0"):
        MLPRegressor(loss="poisson", max_iter=2).fit(X, y)


@pytest.mark.parametrize("param, value", [("loss", "huber"), ("alpha", -1.0),
                                          ("activation", "swish"), ("dtype", "int32")])
def test_bad_parameters_name_themselves(param, value):
    with pytest.raises(ValueError, match=f"'{param}' parameter"):
        MLPRegressor(**{param: value}).fit([[0.0], [1.0]], [0.0, 1.0])


def test_divergence_is_sklearns():
    """sklearn's behaviour, not the Trainer's: a non-finite loss leaves non-finite weights
    and fit raises sklearn's ValueError at the end; with early stopping the best (finite)
    epoch is restored and the validation scores end in NaN."""
    rng = np.random.RandomState(0)
    X, y = np.finfo(np.float64).max * rng.uniform(size=(10, 2)), rng.standard_normal(10)
    reg = MLPRegressor(max_iter=5)
    with pytest.raises(ValueError, match="Solver produced non-finite parameter weights"):
        reg.fit(X, y)
    assert np.isnan(reg.loss_curve_).all() and len(reg.loss_curve_) == 5
    X, y = _data(1)
    params = dict(hidden_layer_sizes=(20,), activation="identity", solver="sgd",
                  learning_rate_init=1.0, max_iter=12, early_stopping=True, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        sk, fm = _both(params, X * 300, y * 1e3, backend=FAST)
    assert np.isnan(fm.validation_scores_[-1]) and np.isnan(sk.validation_scores_[-1])
    assert fm.n_iter_ == sk.n_iter_ == 12
    n = np.isfinite(sk.loss_curve_).sum()
    np.testing.assert_allclose(fm.loss_curve_[:n], sk.loss_curve_[:n], rtol=1e-9)
    assert np.isnan(fm.loss_curve_[n + 1:]).all()
    assert all(np.isfinite(c).all() for c in fm.coefs_)


def test_pipeline_and_grid_search():
    X, y = _data(1)
    pipe = make_pipeline(StandardScaler(),
                         MLPRegressor(hidden_layer_sizes=(16,), max_iter=40,
                                      learning_rate_init=0.01, random_state=0))
    assert pipe.fit(X, y).score(X, y) > 0.8
    grid = {"mlpregressor__alpha": [1e-4, 1e-1]}
    gs = GridSearchCV(pipe, grid, cv=3, n_jobs=2).fit(X, y)
    ref = GridSearchCV(pipe, grid, cv=3, n_jobs=1).fit(X, y)
    np.testing.assert_allclose(gs.cv_results_["mean_test_score"],
                               ref.cv_results_["mean_test_score"])
