"""MLPClassifier: agreement with sklearn's MLPClassifier (every activation, solver and output
layout), meta-estimators, persistence, labels, weights, dtypes, incremental training and
parameter errors.  The estimator checks are in test_checks.py, sklearn's own test file in
test_sklearn_suite.py, MLPRegressor in test_regressor.py."""
import io
import pickle
import warnings
from contextlib import redirect_stdout

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.datasets import make_multilabel_classification
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import GridSearchCV, cross_val_score
from sklearn.neural_network import MLPClassifier as SkMLP
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import fastmlp
from fastmlp import MLPClassifier

BACKENDS = fastmlp.available_backends()
COMPILED = [b for b in BACKENDS if b != "numpy"]
FAST = COMPILED[0] if COMPILED else "numpy"
ACTIVATIONS = ("identity", "logistic", "tanh", "relu")
pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")


# ---- agreement with scikit-learn ------------------------------------------------------------


@pytest.fixture(scope="module")
def small_digits(digits):
    Xtr, ytr, Xte, yte = digits
    return Xtr[:400], ytr[:400], Xte, yte


def _both(params, X, y, **ours):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        sk = SkMLP(**params).fit(X, y)
        fm = MLPClassifier(**params, **ours).fit(X, y)
    return sk, fm


@pytest.mark.parametrize("params", [
    dict(hidden_layer_sizes=(64,), solver="adam", max_iter=50),
    dict(hidden_layer_sizes=(64,), solver="sgd", learning_rate_init=0.1, max_iter=40),
    dict(hidden_layer_sizes=(64, 32), solver="lbfgs", max_iter=150),
], ids=["adam", "sgd", "lbfgs"])
def test_digits_accuracy_matches_sklearn(digits, params):
    Xtr, ytr, Xte, yte = digits
    sk, fm = _both(dict(params, random_state=0), Xtr, ytr, backend=FAST)
    acc_sk, acc_fm = sk.score(Xte, yte), fm.score(Xte, yte)
    print(f"{params['solver']}: sklearn {acc_sk:.4f}  fastmlp {acc_fm:.4f}")
    assert acc_fm > 0.94
    assert abs(acc_fm - acc_sk) <= 0.01
    if params["solver"] != "lbfgs":  # L-BFGS line searches amplify float32 rounding
        assert fm.n_iter_ == sk.n_iter_ and len(fm.loss_curve_) == len(sk.loss_curve_)
        # same init, shuffles, batches and updates: float32 rounding only
        np.testing.assert_allclose(fm.loss_curve_, sk.loss_curve_, rtol=1e-3)


@pytest.mark.parametrize("schedule", [
    dict(solver="adam", learning_rate_init=0.01, beta_2=0.99, epsilon=1e-4),
    dict(learning_rate="constant"),
    dict(learning_rate="invscaling", learning_rate_init=0.5, power_t=0.25),
    dict(learning_rate="adaptive", learning_rate_init=0.2, tol=0.05, n_iter_no_change=2),
])
def test_reproduces_sklearn_loss_curve(small_digits, backend, schedule):
    """In float64 training is sklearn's arithmetic: init, shuffles, L2, Adam (epsilon placed
    as sklearn places it), momentum (rescaled when the learning rate changes), schedules and
    stopping agree to rounding."""
    X, y = small_digits[0].astype(np.float64), small_digits[1]
    params = dict(dict(hidden_layer_sizes=(32,), solver="sgd", max_iter=25, batch_size=64,
                       alpha=1e-3, random_state=3, learning_rate_init=0.05), **schedule)
    sk, fm = _both(params, X, y, backend=backend, dtype="float64")
    assert fm.n_iter_ == sk.n_iter_ and fm.t_ == sk.t_
    np.testing.assert_allclose(fm.loss_curve_, sk.loss_curve_, rtol=1e-9)
    for a, b in zip(fm.coefs_ + fm.intercepts_, sk.coefs_ + sk.intercepts_):
        np.testing.assert_allclose(a, b, rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("binary", [False, True])
def test_early_stopping_matches_sklearn(small_digits, binary):
    """The same validation split as sklearn: unstratified for multiclass, stratified for binary
    (sklearn stratifies only when its network has one output unit), and the same network."""
    X, y = small_digits[0].astype(np.float64), small_digits[1]
    if binary:
        y = np.where(y < 3, "low", "high")
    params = dict(hidden_layer_sizes=(16,), solver="sgd", learning_rate_init=0.05,
                  max_iter=60, early_stopping=True, n_iter_no_change=3, random_state=0)
    sk, fm = _both(params, X, y, dtype="float64", backend=FAST)
    assert fm.validation_scores_ == pytest.approx(sk.validation_scores_)
    assert fm.best_validation_score_ == max(fm.validation_scores_)
    assert fm.best_loss_ is None and fm.n_iter_ < 60 and fm.n_iter_ == sk.n_iter_
    for a, b in zip(fm.coefs_, sk.coefs_):  # both restored the best epoch's weights
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-9)


def _multilabel():
    X, Y = make_multilabel_classification(n_samples=120, n_classes=4, random_state=0)
    return X / X.max(), Y


@pytest.mark.parametrize("problem", ["binary", "multiclass", "multilabel"])
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_output_layer_and_training_are_sklearns(small_digits, problem, activation):
    """sklearn's layout: one logistic unit for binary, one per label for multilabel, softmax
    for multiclass; with every hidden activation the training (loss curve, weights) and the
    predictions are sklearn's, in float64."""
    X, y = small_digits[0][:200].astype(np.float64), small_digits[1][:200]
    if problem == "binary":
        y = np.where(y < 5, "low", "high")
    elif problem == "multilabel":
        X, y = _multilabel()
    params = dict(hidden_layer_sizes=(12,), activation=activation, solver="sgd",
                  learning_rate_init=0.05, batch_size=50, max_iter=8, random_state=5)
    sk, fm = _both(params, X, y, backend=FAST)
    assert (fm.out_activation_, fm.n_outputs_, fm.n_layers_) == \
        (sk.out_activation_, sk.n_outputs_, sk.n_layers_)
    assert fm.out_activation_ == {"binary": "logistic", "multiclass": "softmax",
                                  "multilabel": "logistic"}[problem]
    assert [c.shape for c in fm.coefs_] == [c.shape for c in sk.coefs_]
    np.testing.assert_array_equal(fm.classes_, sk.classes_)
    np.testing.assert_allclose(fm.loss_curve_, sk.loss_curve_, rtol=1e-9)
    for a, b in zip(fm.coefs_ + fm.intercepts_, sk.coefs_ + sk.intercepts_):
        np.testing.assert_allclose(a, b, rtol=1e-7, atol=1e-10)
    P = fm.predict_proba(X)
    assert P.shape == sk.predict_proba(X).shape and P.dtype == np.float64
    np.testing.assert_allclose(P, sk.predict_proba(X), rtol=1e-7, atol=1e-12)
    np.testing.assert_array_equal(fm.predict(X), sk.predict(X))
    assert fm.score(X, y) == sk.score(X, y)


def test_binary_has_one_logistic_output():
    rng = np.random.RandomState(0)
    X = rng.standard_normal((60, 5))
    y = np.where(X[:, 0] > 0, "yes", "no")
    clf = MLPClassifier((7,), solver="lbfgs", random_state=11).fit(X, y)
    assert clf.n_outputs_ == 1 and clf.coefs_[-1].shape == (7, 1)
    assert clf.out_activation_ == "logistic" and list(clf.classes_) == ["no", "yes"]
    z = np.maximum(X @ clf.coefs_[0] + clf.intercepts_[0], 0) @ clf.coefs_[1] + clf.intercepts_[1]
    p = 1 / (1 + np.exp(-z[:, 0]))
    np.testing.assert_allclose(clf.predict_proba(X), np.c_[1 - p, p], rtol=1e-12)
    np.testing.assert_array_equal(clf.predict(X), np.where(p > 0.5, "yes", "no"))
    assert clf.score(X, y) > 0.95


def test_multilabel_predicts_indicator_matrix():
    X, Y = _multilabel()
    clf = MLPClassifier((30,), solver="lbfgs", max_iter=300, random_state=0).fit(X, Y)
    np.testing.assert_array_equal(clf.classes_, np.arange(4))
    assert clf.out_activation_ == "logistic" and clf.n_outputs_ == 4
    P = clf.predict_proba(X)
    assert P.shape == Y.shape and not np.allclose(P.sum(axis=1), 1)
    np.testing.assert_array_equal(clf.predict(X), (P > 0.5).astype(int))
    assert clf.score(X, Y) > 0.9  # subset accuracy
    part = MLPClassifier((30,), solver="sgd", learning_rate_init=0.2, random_state=0)
    for _ in range(3):
        part.partial_fit(X, Y, classes=np.arange(4))
    assert part.predict(X).shape == Y.shape


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("problem", ["binary", "multiclass"])
def test_lbfgs_follows_sklearn(small_digits, activation, problem):
    """L-BFGS on the same objective and gradient as sklearn (for every activation): the same
    iterates for a short run, in float64."""
    X, y = small_digits[0][:300].astype(np.float64), small_digits[1][:300]
    y = y % 2 if problem == "binary" else y
    params = dict(hidden_layer_sizes=(10,), solver="lbfgs", max_iter=20, activation=activation,
                  random_state=0)
    sk, fm = _both(params, X, y, backend="numpy")
    assert fm.n_iter_ == sk.n_iter_
    assert fm.loss_ == pytest.approx(sk.loss_, rel=1e-9)
    for a, b in zip(fm.coefs_, sk.coefs_):
        np.testing.assert_allclose(a, b, rtol=1e-7, atol=1e-9)


def test_warm_start_learning_rate(small_digits):
    """As sklearn's test_learning_rate_warmstart: a warm-started invscaling fit restarts from
    learning_rate_init and decays with the samples seen so far (t_); constant stays put.
    The loss curves show sklearn's rates were used."""
    X, y = [[3, 2], [1, 6], [5, 6], [-2, -4]], [1, 1, 1, 0]
    for learning_rate in ["invscaling", "constant"]:
        kw = dict(solver="sgd", hidden_layer_sizes=4, learning_rate=learning_rate, max_iter=1,
                  power_t=0.25, warm_start=True, random_state=0)
        sk, fm = SkMLP(**kw), MLPClassifier(**kw)
        sk.fit(X, y), fm.fit(X, y)
        prev = fm._lr
        sk.fit(X, y), fm.fit(X, y)
        assert fm._lr == sk._optimizer.learning_rate
        if learning_rate == "constant":
            assert prev == fm._lr == 0.001
        else:
            assert fm._lr == fm.learning_rate_init / pow(8 + 1, fm.power_t)
        np.testing.assert_allclose(fm.loss_curve_, sk.loss_curve_, rtol=1e-12)


def test_adaptive_learning_rate():
    """As sklearn's test_adaptive_learning_rate: the rate is divided by 5 until <= 1e-6."""
    X, y = [[3, 2], [1, 6]], [1, 0]
    kw = dict(tol=0.5, max_iter=3000, solver="sgd", learning_rate="adaptive", random_state=0)
    sk, fm = SkMLP(**kw).fit(X, y), MLPClassifier(**kw).fit(X, y)
    assert fm.max_iter > fm.n_iter_ == sk.n_iter_
    assert 1e-6 > fm._lr == pytest.approx(sk._optimizer.learning_rate, rel=1e-12)
    np.testing.assert_allclose(fm.loss_curve_, sk.loss_curve_, rtol=1e-9)


@pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")
def test_float32_dtype_refuses_values_beyond_float32():
    """X finite in float64 but not in float32 (1e39): a float32 estimator refuses it at fit
    and predict with sklearn's message; the default (X's dtype, float64) trains on it."""
    rng = np.random.RandomState(0)
    X, y = rng.standard_normal((30, 4)), np.arange(30) % 3
    big = X.copy()
    big[2, 2] = 1e39
    f32 = MLPClassifier((4,), max_iter=2, random_state=0, dtype="float32")
    with pytest.raises(ValueError, match="Input X contains infinity or a value too large"):
        f32.fit(big, y)
    with pytest.raises(ValueError, match="Input X contains infinity or a value too large"):
        f32.fit(X, y).predict(big)
    assert MLPClassifier((4,), max_iter=2, random_state=0).fit(big, y).coefs_[0].dtype == \
        np.float64


# ---- fitted state ------------------------------------------------------------------------------
def test_coefs_are_the_trained_weights(small_digits):
    X, y = small_digits[:2]
    clf = MLPClassifier((20, 10), max_iter=5, random_state=0).fit(X, y)
    assert [c.shape for c in clf.coefs_] == [(64, 20), (20, 10), (10, 10)]
    assert all(c.dtype == np.float32 for c in clf.coefs_ + clf.intercepts_)
    assert clf.n_layers_ == 4 and clf.n_features_in_ == 64 and clf.n_outputs_ == 10
    h = X
    for W, b in zip(clf.coefs_[:-1], clf.intercepts_[:-1]):
        h = np.maximum(h @ W + b, 0)
    z = h @ clf.coefs_[-1] + clf.intercepts_[-1]
    p = np.exp(z - z.max(1, keepdims=True))
    np.testing.assert_allclose(clf.predict_proba(X), p / p.sum(1, keepdims=True), atol=1e-5)
    clf.coefs_[-1][:] = 0
    clf.intercepts_[-1][:] = np.arange(10)  # edits to coefs_ are what predict uses
    assert (clf.predict(X) == 9).all()
    np.testing.assert_allclose(clf.predict_log_proba(X), np.log(clf.predict_proba(X)))


def test_dtype_float64(small_digits):
    X, y = small_digits[:2]
    clf = MLPClassifier((16,), max_iter=3, dtype=np.float64, random_state=0).fit(X, y)
    assert clf.coefs_[0].dtype == np.float64 and clf.predict_proba(X).dtype == np.float64


@pytest.mark.parametrize("X_dtype, expected", [(np.float32, np.float32), (np.float64, np.float64),
                                               (np.int64, np.float64), (np.float16, np.float64)])
def test_dtype_follows_X(small_digits, X_dtype, expected):
    """dtype=None (the default): the parameters take X's dtype, float64 unless X is float32,
    as in sklearn; predictions come in the dtype of X's values and the parameters combined;
    an explicit dtype forces one."""
    X, y = (small_digits[0] * 16).astype(X_dtype), small_digits[1]
    clf = MLPClassifier((8,), max_iter=3, random_state=0).fit(X, y)
    assert all(p.dtype == expected for p in clf.coefs_ + clf.intercepts_)
    assert clf.predict_proba(X).dtype == np.result_type(X_dtype, expected)
    forced = MLPClassifier((8,), max_iter=3, random_state=0, dtype="float32").fit(X, y)
    assert forced.coefs_[0].dtype == np.float32
    assert forced.predict_proba(X.astype(np.float32)).dtype == np.float32
    assert forced.predict_proba(X.astype(np.float64)).dtype == np.float64


def test_convergence_warning_and_verbose(small_digits):
    X, y = small_digits[:2]
    out = io.StringIO()
    with pytest.warns(ConvergenceWarning, match="Maximum iterations"), redirect_stdout(out):
        MLPClassifier((8,), max_iter=2, verbose=True, random_state=0).fit(X, y)
    assert "Iteration 1, loss = " in out.getvalue() and "Iteration 2" in out.getvalue()


def test_stops_when_loss_stalls(small_digits):
    X, y = small_digits[:2]
    clf = MLPClassifier((16,), max_iter=500, tol=10.0, n_iter_no_change=3, random_state=0)
    clf.fit(X, y)
    assert clf.n_iter_ == 5 and len(clf.loss_curve_) == 5
    assert clf.best_loss_ == min(clf.loss_curve_)


def test_lbfgs_reaches_low_loss(digits):
    Xtr, ytr, Xte, yte = digits
    clf = MLPClassifier((64,), solver="lbfgs", max_iter=300, random_state=0).fit(Xtr, ytr)
    assert clf.loss_ < 0.01 and clf.score(Xte, yte) > 0.95
    assert not hasattr(clf, "loss_curve_")


# ---- labels and weights -----------------------------------------------------------------------
@pytest.mark.parametrize("labels", [np.array(["cat", "dog", "eel"]), np.array([3, 7, 10]),
                                    np.array([-1.0, 4.0, 9.0])])
def test_arbitrary_labels(small_digits, labels):
    X, y = small_digits[0], small_digits[1] % 3
    ref = MLPClassifier((16,), max_iter=20, random_state=0).fit(X, y)
    clf = MLPClassifier((16,), max_iter=20, random_state=0).fit(X, labels[y])
    np.testing.assert_array_equal(clf.classes_, labels)
    np.testing.assert_array_equal(clf.predict(X), labels[ref.predict(X)])


def test_class_weight_balanced_favours_minority():
    rng = np.random.RandomState(0)
    X = np.vstack([rng.normal(0, 1, (450, 2)), rng.normal(1.2, 1, (50, 2))])
    y = np.r_[np.zeros(450, int), np.ones(50, int)]
    kw = dict(hidden_layer_sizes=(8,), max_iter=100, learning_rate_init=0.01, random_state=0)
    plain = MLPClassifier(**kw).fit(X, y)
    balanced = MLPClassifier(class_weight="balanced", **kw).fit(X, y)
    as_dict = MLPClassifier(class_weight={0: 500 / 900, 1: 500 / 100}, **kw).fit(X, y)
    assert (balanced.predict(X) == 1).sum() > 2 * (plain.predict(X) == 1).sum()
    np.testing.assert_allclose(balanced.predict_proba(X), as_dict.predict_proba(X), rtol=1e-4)


@pytest.mark.parametrize("solver", ["lbfgs", "adam"])
def test_zero_weight_equals_dropping_rows(solver):
    """Full-batch training (n < 200 for adam) makes this exact up to rounding."""
    rng = np.random.RandomState(1)
    X, y = rng.standard_normal((120, 6)), rng.randint(0, 3, 120)
    keep = rng.rand(120) > 0.3
    kw = dict(hidden_layer_sizes=(10,), solver=solver, max_iter=60, dtype="float64",
              random_state=0, shuffle=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        dropped = MLPClassifier(**kw).fit(X[keep], y[keep])
        weighted = MLPClassifier(**kw).fit(X, y, sample_weight=keep.astype(float))
    np.testing.assert_allclose(weighted.predict_proba(X), dropped.predict_proba(X),
                               rtol=1e-6, atol=1e-8)


def test_sample_weight_not_modified():
    rng = np.random.RandomState(0)
    X, y = rng.standard_normal((50, 3)), rng.randint(0, 2, 50)
    sw = np.ones(50)
    MLPClassifier((4,), max_iter=3, class_weight="balanced", dtype="float64").fit(X, y, sw)
    assert (sw == 1).all()


# ---- incremental training ------------------------------------------------------------------
def test_partial_fit_over_batches(digits):
    Xtr, ytr, Xte, yte = digits
    clf = MLPClassifier((64,), learning_rate_init=0.01, random_state=0)
    with pytest.raises(ValueError, match="classes must be passed"):
        clone(clf).partial_fit(Xtr[:10], ytr[:10])
    for epoch in range(5):
        for s in range(0, len(Xtr), 300):
            clf.partial_fit(Xtr[s:s + 300], ytr[s:s + 300], classes=np.arange(10))
    assert clf.n_iter_ == 1 and clf.t_ == 5 * len(Xtr)
    assert clf.score(Xte, yte) > 0.9
    with pytest.raises(ValueError, match="classes not in"):
        clf.partial_fit(Xtr[:5], ytr[:5] + 10)
    with pytest.raises(AttributeError, match="partial_fit"):
        MLPClassifier(solver="lbfgs").partial_fit


def test_partial_fit_matches_sklearn(small_digits):
    X, y = small_digits[0].astype(np.float64), small_digits[1]
    kw = dict(hidden_layer_sizes=(16,), solver="sgd", learning_rate_init=0.05, random_state=0)
    sk, fm = SkMLP(**kw), MLPClassifier(dtype="float64", **kw)
    for s in range(0, 400, 100):
        sk.partial_fit(X[s:s + 100], y[s:s + 100], classes=np.arange(10))
        fm.partial_fit(X[s:s + 100], y[s:s + 100], classes=np.arange(10))
        assert fm.loss_ == pytest.approx(sk.loss_, rel=1e-9)


def test_pickle_round_trip_and_resume(small_digits):
    X, y = small_digits[:2]
    clf = MLPClassifier((16,), random_state=0).partial_fit(X, y, classes=np.arange(10))
    copy = pickle.loads(pickle.dumps(clf))
    assert "_model" in clf.__dict__  # pickling did not strip the live estimator
    np.testing.assert_array_equal(copy.predict_proba(X), clf.predict_proba(X))
    clf.partial_fit(X, y)
    copy.partial_fit(X, y)  # the Adam moments and step count travelled with the pickle
    np.testing.assert_array_equal(copy.predict_proba(X), clf.predict_proba(X))


def test_warm_start_continues(small_digits):
    X, y = small_digits[:2]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf = MLPClassifier((16,), max_iter=5, warm_start=True, random_state=0).fit(X, y)
        first = clf.loss_curve_[-1]
        W = clf.coefs_[0]
        clf.fit(X, y)
        assert clf.coefs_[0] is W and len(clf.loss_curve_) == 10 and clf.n_iter_ == 5
        assert clf.loss_curve_[5] < first
        with pytest.raises(ValueError, match="same classes"):
            clf.fit(X[y < 5], y[y < 5])
        cold = clone(clf).set_params(warm_start=False).fit(X, y)
        assert len(cold.loss_curve_) == 5


def test_warm_start_switching_solver_and_early_stopping(small_digits):
    X, y = small_digits[:2]
    clf = MLPClassifier((16,), solver="lbfgs", max_iter=5, warm_start=True, random_state=0)
    clf.fit(X, y)
    clf.set_params(solver="adam", early_stopping=True).fit(X, y)
    assert len(clf.loss_curve_) == clf.n_iter_ == len(clf.validation_scores_)
    clf.set_params(early_stopping=False).fit(X, y)
    assert clf.best_loss_ == min(clf.loss_curve_[-clf.n_iter_:])
    clf.set_params(dtype="float64", backend="numpy").fit(X, y)  # converts the weights
    assert clf.coefs_[0].dtype == np.float64 and clf.predict_proba(X).dtype == np.float64


def test_early_stopping_attributes(small_digits):
    X, y = small_digits[:2]
    clf = MLPClassifier((16,), early_stopping=True, learning_rate_init=0.01, max_iter=30,
                        n_iter_no_change=3, random_state=0).fit(X, y)
    assert len(clf.validation_scores_) == clf.n_iter_
    assert clf.best_validation_score_ == max(clf.validation_scores_)
    with pytest.raises(ValueError, match="early_stopping"):
        clf.partial_fit(X, y)


# ---- meta-estimators -----------------------------------------------------------------------
def test_pipeline_cross_val_and_grid_search(small_digits):
    X, y = small_digits[:2]
    pipe = make_pipeline(StandardScaler(), MLPClassifier((16,), max_iter=30,
                                                         learning_rate_init=0.01, random_state=0))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        assert pipe.fit(X, y).score(X, y) > 0.9
        scores = cross_val_score(pipe, X, y, cv=3)
        assert scores.shape == (3,) and scores.mean() > 0.8
        grid = {"mlpclassifier__alpha": [1e-4, 1e-1],
                "mlpclassifier__hidden_layer_sizes": [(8,), (16,)]}
        gs = GridSearchCV(pipe, grid, cv=3, n_jobs=2).fit(X, y)
        ref = GridSearchCV(pipe, grid, cv=3, n_jobs=1).fit(X, y)
    assert gs.best_params_ == ref.best_params_
    np.testing.assert_allclose(gs.cv_results_["mean_test_score"],
                               ref.cv_results_["mean_test_score"])


# ---- parameter errors ------------------------------------------------------------------------
@pytest.mark.parametrize("param, value", [
    ("alpha", -1.0), ("learning_rate_init", 0.0), ("learning_rate_init", -0.1),
    ("batch_size", 0), ("max_iter", 0), ("solver", "newton"), ("momentum", 1.5),
    ("backend", "cuda"), ("dtype", "float16"), ("class_weight", "even"),
    ("hidden_layer_sizes", 0), ("n_iter_no_change", 0), ("activation", "swish"),
])
def test_bad_parameters_name_themselves(param, value):
    with pytest.raises(ValueError, match=f"'{param}' parameter"):
        MLPClassifier(**{param: value}).fit([[0.0], [1.0]], [0, 1])


def test_bad_hidden_layer_entries():
    with pytest.raises(ValueError, match="hidden_layer_sizes"):
        MLPClassifier(hidden_layer_sizes=(8, 0)).fit([[0.0], [1.0]], [0, 1])


def _count_step_builds(monkeypatch, backend):
    """Make the backend's TrainStep count its constructions; returns the list it appends to."""
    raw, built = fastmlp.get_backend(backend).raw, []
    make = raw.TrainStep

    def counting(*args, **kwargs):
        built.append(1)
        return make(*args, **kwargs)
    monkeypatch.setattr(raw, "TrainStep", counting)
    return built


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("params", [dict(solver="adam"),
                                    dict(solver="sgd", learning_rate="invscaling"),
                                    dict(solver="sgd", learning_rate="adaptive", tol=10.0,
                                         n_iter_no_change=1)],
                         ids=["adam", "sgd-invscaling", "sgd-adaptive"])
def test_fit_builds_the_fused_step_once(digits, backend, monkeypatch, params):
    """The per-step weight decay and Adam eps (sklearn's conventions) and the changing
    learning rate are arguments of the step, not a reason to rebuild it."""
    Xtr, ytr = digits[:2]
    built = _count_step_builds(monkeypatch, backend)
    clf = MLPClassifier(max_iter=20, random_state=0, backend=backend, **params).fit(Xtr, ytr)
    assert clf.n_iter_ >= 2 and len(built) == 1
    clf.partial_fit(Xtr, ytr)   # a new call: one more build, for its one epoch
    assert len(built) == 2


@pytest.mark.parametrize("fmt", ["csr", "csc"])
@pytest.mark.parametrize("solver", ["adam", "lbfgs"])
def test_sparse_X_trains_as_dense(fmt, solver):
    """A scipy.sparse X trains without being densified, to the same model as the dense X."""
    import scipy.sparse as sp
    rng = np.random.default_rng(0)
    X = sp.random(200, 60, density=0.1, format=fmt, random_state=0, dtype=np.float64)
    y = (X @ rng.standard_normal(60) > 0).astype(int)
    kw = dict(hidden_layer_sizes=(16,), solver=solver, max_iter=15, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        sparse = MLPClassifier(**kw).fit(X, y)
        dense = MLPClassifier(**kw).fit(X.toarray(), y)
    for a, b in zip(sparse.coefs_, dense.coefs_):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(sparse.predict_proba(X), dense.predict_proba(X.toarray()),
                               rtol=1e-9)


@pytest.mark.parametrize("n", [1, 2, 7, 200])
def test_epoch_shuffle_draws_as_sklearn(n):
    """The solvers' per-epoch shuffle is sklearn.utils.shuffle's draw, epoch after epoch."""
    from sklearn.utils import shuffle

    from fastmlp.estimators._solvers import _shuffle
    ours, theirs = np.random.RandomState(3), np.random.RandomState(3)
    a = b = np.arange(n)
    for _ in range(4):
        a, b = _shuffle(a, ours), shuffle(b, random_state=theirs)
        np.testing.assert_array_equal(a, b)
