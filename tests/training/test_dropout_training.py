"""Dropout through the training API: MLP(dropout=), the Trainer's masks (backends agree,
reproducible from the seeds), no dropout at inference, the estimators' `dropout`, the CLI."""
import json

import numpy as np
import pytest
from sklearn.datasets import load_digits

import fastmlp
from fastmlp.cli import main


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)
    return (X / 16).astype(np.float64), y


def test_mlp_dropout_argument():
    assert fastmlp.MLP((4, 5, 6, 2)).dropout == (0.0, 0.0)
    m = fastmlp.MLP((4, 5, 6, 2), dropout=[0.1, 0.4])
    assert m.dropout == (0.1, 0.4) and "dropout=(0.1, 0.4)" in repr(m)
    assert fastmlp.MLP((4, 2), dropout=0.5).dropout == ()   # no hidden layer
    for bad, err in (([0.1], ValueError), (1.0, ValueError), (-0.2, ValueError),
                     ("x", TypeError)):
        with pytest.raises(err):
            fastmlp.MLP((4, 5, 6, 2), dropout=bad)


def _fit(X, y, backend, drop, dtype=np.float64, **kw):
    m = fastmlp.MLP((64, 48, 32, 10), dtype=dtype, backend=backend, dropout=drop, seed=0)
    fastmlp.Trainer(m, optimizer="adam", lr=2e-3, epochs=2, batch_size=64, seed=1,
                    **kw).fit(X, y)
    return m


def test_backends_train_the_same_dropout_network(digits, backend):
    """Every backend's fused step draws the reference's masks: after two epochs with
    dropout the weights agree to float64 rounding."""
    X, y = digits
    want = _fit(X, y, "numpy", (0.3, 0.1))
    got = _fit(X, y, backend, (0.3, 0.1))
    for a, b in zip(got.weights + got.biases, want.weights + want.biases):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)


def test_dropout_is_reproducible_and_keyed_by_the_seeds(digits):
    X, y = digits
    a, b = _fit(X, y, "auto", 0.3), _fit(X, y, "auto", 0.3)
    assert np.array_equal(a.weights[0], b.weights[0])
    c = _fit(X, y, "auto", 0.3, dropout_seed=12345)
    d = _fit(X, y, "auto", 0.0)
    assert not np.allclose(a.weights[0], c.weights[0])
    assert not np.allclose(a.weights[0], d.weights[0])


def test_trainer_step_keys_masks_by_the_step_number(digits):
    """Trainer.step k draws the masks of (dropout_seed, k): the reference TrainStep run with
    those step numbers gives the same weights."""
    X, y = digits
    m = fastmlp.MLP((64, 32, 10), dtype=np.float64, backend="auto", dropout=0.5, seed=0)
    ref = fastmlp.MLP((64, 32, 10), dtype=np.float64, backend="numpy", dropout=0.5, seed=0)
    tr = fastmlp.Trainer(m, optimizer="sgd", lr=0.1, dropout_seed=77)
    rt = fastmlp.Trainer(ref, optimizer="sgd", lr=0.1, dropout_seed=77)
    for k in range(3):
        tr.step(X[k * 50:(k + 1) * 50], y[k * 50:(k + 1) * 50])
        rt.step(X[k * 50:(k + 1) * 50], y[k * 50:(k + 1) * 50])
    np.testing.assert_allclose(m.weights[0], ref.weights[0], rtol=1e-10, atol=1e-13)


def test_no_dropout_at_inference(digits):
    """predict/forward/loss_and_grads ignore dropout: the same as a model without it."""
    X, y = digits
    m = _fit(X, y, "auto", 0.5)
    plain = fastmlp.MLP((64, 48, 32, 10), dtype=np.float64, seed=0)
    for dst, src in zip(plain.weights + plain.biases, m.weights + m.biases):
        dst[...] = src
    np.testing.assert_array_equal(m.forward(X), plain.forward(X))
    np.testing.assert_array_equal(m.forward(X), m.forward(X))
    assert m.loss_and_grads(X, y)[0] == plain.loss_and_grads(X, y)[0]


def test_dropout_regularises_a_wide_net(digits):
    """Not a stub: on a small training set a wide net with dropout 0.5 fits its training
    set less closely than without: a higher last-epoch loss (masks on), and a higher
    training loss at inference (masks off)."""
    X, y = digits
    losses = {}
    for p in (0.0, 0.5):
        m = fastmlp.MLP((64, 256, 10), dtype=np.float64, dropout=p, seed=0)
        h = fastmlp.Trainer(m, optimizer="adam", lr=3e-3, epochs=15, seed=0).fit(X[:300],
                                                                                y[:300])
        losses[p] = h.last("train_loss"), m.loss_and_grads(X[:300], y[:300])[0]
    assert losses[0.5][0] > 2 * losses[0.0][0]
    assert losses[0.5][1] > 1.3 * losses[0.0][1]


def test_estimators_dropout(digits):
    X, y = digits
    assert fastmlp.MLPClassifier().get_params()["dropout"] == 0.0
    kw = dict(hidden_layer_sizes=(64,), dropout=0.3, random_state=0, max_iter=5)
    with pytest.warns(Warning):
        a = fastmlp.MLPClassifier(**kw).fit(X, y)
        b = fastmlp.MLPClassifier(**kw).fit(X, y)
        c = fastmlp.MLPClassifier(**dict(kw, dropout=0.0)).fit(X, y)
    assert np.array_equal(a.coefs_[0], b.coefs_[0])
    assert not np.allclose(a.coefs_[0], c.coefs_[0])
    assert a.score(X, y) > 0.6   # 5 epochs of Adam at lr 1e-3
    with pytest.raises(ValueError, match="dropout is for the 'sgd' and 'adam' solvers"):
        fastmlp.MLPRegressor(solver="lbfgs", dropout=0.2).fit(X, y.astype(float))


def test_cli_dropout(capsys):
    assert main(["train", "--epochs", "10", "--hidden", "32", "16", "--dropout", "0.2", "0.1",
                 "--json", "--quiet"]) == 0
    assert json.loads(capsys.readouterr().out)["test_accuracy"] > 0.5
    assert main(["train", "--epochs", "1", "--hidden", "32", "16", "--dropout", "0.2", "0.1",
                 "0.3", "--quiet"]) == 2
    assert "one probability per hidden layer" in capsys.readouterr().err


def test_dropout_is_saved_with_the_model(tmp_path):
    m = fastmlp.MLP((4, 5, 6, 2), dropout=[0.1, 0.4])
    m.save(tmp_path / "m.npz")
    assert fastmlp.MLP.load(tmp_path / "m.npz").dropout == (0.1, 0.4)
    arrays = dict(np.load(tmp_path / "m.npz"))
    arrays["dropout"] = np.array([0.1, 1.0])
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(fastmlp.ModelFileError, match="bad dropout"):
        fastmlp.MLP.load(tmp_path / "bad.npz")
