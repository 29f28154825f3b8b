"""A loss turning NaN or infinite stops training with TrainingDivergedError (a
FloatingPointError) and leaves finite weights: in the Trainer (exactly the last finite ones
with snapshot_every=1), after many steps, and in MLPClassifier (sgd, adam, lbfgs)."""
import warnings

import numpy as np
import pytest
from helpers import finite, params, record_updates, same

from fastmlp import MLP, MLPClassifier, Trainer, TrainingDivergedError


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


@pytest.mark.parametrize("solver, kw", [("sgd", dict(learning_rate_init=10.0)),
                                        ("lbfgs", dict(alpha=1e300))])
def test_mlpclassifier_divergence_keeps_finite_weights(solver, kw):
    rng = np.random.RandomState(0)
    X, y = rng.standard_normal((100, 4)) * 1e4, rng.randint(0, 3, 100)
    clf = MLPClassifier((32,), solver=solver, max_iter=20, random_state=0, **kw)
    with pytest.raises(TrainingDivergedError, match="loss became"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clf.fit(X, y)
    assert finite(clf.coefs_ + clf.intercepts_)
    assert set(clf.predict(X)) <= {0, 1, 2}


def test_divergence_raises_and_keeps_finite_weights(digits, backend):
    Xtr, ytr = digits[:2]
    m = MLP((64, 32, 10), seed=0, backend=backend)
    with pytest.raises(TrainingDivergedError, match="loss became"):
        Trainer(m, lr=1e30, epochs=5).fit(Xtr * 100, ytr)
    assert all(np.all(np.isfinite(p)) for p in m.weights + m.biases)
    assert issubclass(TrainingDivergedError, FloatingPointError)


def test_divergence_raises():
    rng = np.random.RandomState(0)
    X, y = rng.standard_normal((100, 4)) * 1e4, rng.randint(0, 3, 100)
    clf = MLPClassifier((32,), solver="sgd", learning_rate_init=10.0, max_iter=20,
                        random_state=0)
    with pytest.raises(TrainingDivergedError), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clf.fit(X, y)
    assert issubclass(TrainingDivergedError, FloatingPointError)
