"""MLPClassifier: scikit-learn's estimator checks, agreement with sklearn's MLPClassifier,
meta-estimators, persistence, labels, weights, incremental training and parameter errors."""
import io
import pickle
import warnings
from contextlib import redirect_stdout

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import GridSearchCV, cross_val_score
from sklearn.neural_network import MLPClassifier as SkMLP
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

import fastmlp
from fastmlp import MLPClassifier

BACKENDS = fastmlp.available_backends()
COMPILED = [b for b in BACKENDS if b != "numpy"]
FAST = COMPILED[0] if COMPILED else "numpy"
pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")


def _check_configs():
    small = dict(hidden_layer_sizes=(8,), max_iter=100, learning_rate_init=0.01, random_state=0)
    cfgs = [dict(backend=b, dtype="float32") for b in COMPILED or ["numpy"]]
    cfgs += [dict(backend="numpy", dtype="float64"),
             dict(backend="numpy", dtype="float64", solver="lbfgs"),
             dict(backend=FAST, dtype="float64", solver="sgd")]
    return [MLPClassifier(**small, **c) for c in cfgs]


@parametrize_with_checks(_check_configs(),
                         expected_failed_checks=lambda est: est._expected_failed_checks())
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


def test_expected_failures_only_for_float32():
    assert MLPClassifier(dtype="float64")._expected_failed_checks() == {}
    reasons = MLPClassifier()._expected_failed_checks()
    assert set(reasons) == {"check_sample_weight_equivalence_on_dense_data"}
    assert "float32" in reasons["check_sample_weight_equivalence_on_dense_data"]


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
    (sklearn stratifies only when its network has one output unit)."""
    X, y = small_digits[0].astype(np.float64), small_digits[1]
    if binary:
        y = np.where(y < 3, "low", "high")
    params = dict(hidden_layer_sizes=(16,), solver="sgd", learning_rate_init=0.05,
                  max_iter=60, early_stopping=True, n_iter_no_change=3, random_state=0)
    sk, fm = _both(params, X, y, dtype="float64", backend=FAST)
    assert fm.validation_scores_ == pytest.approx(sk.validation_scores_)
    assert fm.best_validation_score_ == max(fm.validation_scores_)
    assert fm.best_loss_ is None and fm.n_iter_ < 60
    if not binary:  # (binary: 2 softmax units vs sklearn's logistic unit, close not equal)
        for a, b in zip(fm.coefs_, sk.coefs_):  # both restored the best epoch's weights
            np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-9)


def test_binary_starts_from_sklearns_logistic_unit():
    rng = np.random.RandomState(0)
    X = rng.standard_normal((60, 5))
    y = np.where(X[:, 0] > 0, "yes", "no")
    params = dict(hidden_layer_sizes=(7,), solver="sgd", learning_rate_init=1e-12,
                  momentum=0.0, max_iter=1, random_state=11)
    sk, fm = _both(params, X, y, dtype="float64")
    np.testing.assert_allclose(fm.predict_proba(X), sk.predict_proba(X), rtol=1e-9)
    assert fm.n_outputs_ == 2 and fm.coefs_[-1].shape == (7, 2)
    assert fm.out_activation_ == "softmax" and list(fm.classes_) == ["no", "yes"]


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
def test_activation_other_than_relu_is_refused():
    with pytest.raises(ValueError, match="activation='tanh'.*ReLU"):
        MLPClassifier(activation="tanh").fit([[0.0], [1.0]], [0, 1])


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
