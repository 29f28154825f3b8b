"""A loss turning NaN or infinite stops the Trainer with TrainingDivergedError (a
FloatingPointError) and leaves finite weights (exactly the last finite ones with
snapshot_every=1), also after many steps.  The scikit-learn estimators behave as
scikit-learn's instead (sgd, adam, lbfgs): training goes on, and non-finite weights at the
end raise scikit-learn's ValueError."""
import warnings

import numpy as np
import pytest
from helpers import finite, params, record_updates, same
from sklearn import neural_network as sk

from fastmlp import MLP, MLPClassifier, MLPRegressor, Trainer, TrainingDivergedError


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # the reference overflowing on purpose
@pytest.mark.parametrize("lr, scale, outcome", [
    (1e30, 100.0, "still finite and were kept"),  # weights ~1e30: finite, the logits are not
    (1e300, 1.0, "reset to those before step 1"),  # inf in float32: the weights go inf
], ids=["finite-weights", "inf-weights"])
def test_nan_loss_stops_with_the_last_finite_weights(digits, backend, lr, scale, outcome,
                                                     tmp_path):
    Xtr, ytr = digits[:2]
    m = MLP((64, 32, 10), seed=0, backend=backend)
    tr = Trainer(m, lr=lr, epochs=5, batch_size=32, seed=0)
    states = record_updates(tr)
    with pytest.raises(TrainingDivergedError, match="training loss became (nan|inf)") as info:
        tr.fit(Xtr * scale, ytr)
    assert outcome in str(info.value) and "Lower the learning rate" in str(info.value)
    last_finite = [s for s in states if finite(s)][-1]
    assert finite(params(m)) and same(params(m), last_finite)
    assert m.predict(Xtr).shape == (len(Xtr),)  # usable: predicts, saves, loads
    assert same(params(MLP.load(m.save(tmp_path / "m.npz"))), last_finite)


@pytest.mark.parametrize("every", [1, 10])
def test_divergence_after_many_steps_restores_finite_weights(digits, every):
    Xtr, ytr = digits[:2]
    m = MLP((64, 32, 10), seed=0, backend="cython")
    tr = Trainer(m, lr=0.01, epochs=10, batch_size=32, seed=0, snapshot_every=every,
                 lr_schedule=lambda e, lr0: lr0 if e < 3 else 1e300)  # 43 steps an epoch
    states = record_updates(tr)
    with pytest.raises(TrainingDivergedError, match="reset to those before step"):
        tr.fit(Xtr, ytr)
    finite_states = [s for s in states if finite(s)]
    assert finite(params(m))
    if every == 1:  # exactly the last finite weights
        assert same(params(m), finite_states[-1])
    else:  # the latest copy: finite weights at most `every` steps older
        assert any(same(params(m), s) for s in finite_states[-every - 1:])


def _outcome(est, X, y):
    """What fit does: "ok" or sklearn's ValueError; the loss curve; are the weights finite."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            est.fit(X, y)
        result = "ok"
    except ValueError as exc:
        assert "Solver produced non-finite parameter weights" in str(exc)
        result = "ValueError"
    return result, np.isfinite(getattr(est, "loss_curve_", [])), finite(est.coefs_)


@pytest.mark.parametrize("solver", ["sgd", "adam", "lbfgs"])
@pytest.mark.parametrize("name", ["MLPClassifier", "MLPRegressor"])
def test_estimators_diverge_as_sklearn(name, solver):
    """Inputs near float64's maximum: the stochastic solvers end with non-finite weights and
    sklearn's ValueError, L-BFGS stops on scipy's abnormal line search with finite ones --
    fastmlp's estimators as sklearn's, epoch for epoch."""
    rng = np.random.RandomState(0)
    X, y = np.finfo(np.float64).max * rng.uniform(size=(100, 4)), rng.randint(0, 3, 100)
    kw = dict(hidden_layer_sizes=(32,), solver=solver, max_iter=20, random_state=0)
    theirs = _outcome(getattr(sk, name)(**kw), X, y)
    ours = _outcome({"MLPClassifier": MLPClassifier, "MLPRegressor": MLPRegressor}[name](**kw),
                    X, y)
    assert ours[0] == theirs[0] == ("ok" if solver == "lbfgs" else "ValueError")
    assert ours[2] == theirs[2] == (solver == "lbfgs")
    if solver != "lbfgs":  # every epoch after the first is NaN in both
        assert len(ours[1]) == len(theirs[1]) == 20 and not ours[1][1:].any()


def test_divergence_raises_and_keeps_finite_weights(digits, backend):
    Xtr, ytr = digits[:2]
    m = MLP((64, 32, 10), seed=0, backend=backend)
    with pytest.raises(TrainingDivergedError, match="loss became"):
        Trainer(m, lr=1e30, epochs=5).fit(Xtr * 100, ytr)
    assert all(np.all(np.isfinite(p)) for p in m.weights + m.biases)
    assert issubclass(TrainingDivergedError, FloatingPointError)


def test_trainer_keeps_its_own_divergence_rule():
    """On data where the estimator trains on (as sklearn's), the native Trainer raises."""
    rng = np.random.RandomState(0)
    X, y = np.finfo(np.float64).max * rng.uniform(size=(100, 4)), rng.randint(0, 3, 100)
    m = MLP((4, 32, 3), dtype=np.float64, seed=0, backend="numpy")
    with pytest.raises(TrainingDivergedError, match="loss became"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        Trainer(m, lr=1e-3, epochs=2).fit(X, y)
    assert finite(params(m))
    assert issubclass(TrainingDivergedError, FloatingPointError)
