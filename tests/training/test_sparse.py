"""Sparse input (scipy.sparse CSR, CSC, COO; matrix and array types) trains and predicts
exactly as the same data dense: MLP.forward/predict/score/loss_and_grads, Trainer.fit,
fit_epoch and step, every backend, float32 and float64."""
import numpy as np
import pytest
import scipy.sparse as sp

from fastmlp import MLP, Trainer

from helpers import assert_close


def _data(n=300, d=120, density=0.05, seed=0):
    rng = np.random.default_rng(seed)
    X = sp.random(n, d, density=density, format="csr", random_state=seed, dtype=np.float64)
    w = rng.standard_normal((d, 3))
    return X, np.argmax(X @ w + 0.1 * rng.standard_normal((n, 3)), axis=1)


FORMATS = {"csr_matrix": sp.csr_matrix, "csr_array": sp.csr_array, "csc_matrix": sp.csc_matrix,
           "csc_array": sp.csc_array, "coo_array": sp.coo_array}


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_fit_on_sparse_equals_fit_on_dense(backend, dtype, fmt):
    X, y = _data()
    runs = []
    for Xin in (FORMATS[fmt](X), X.toarray()):
        m = MLP((120, 16, 3), dtype=dtype, backend=backend, seed=1, activation="tanh")
        hist = Trainer(m, optimizer="adam", lr=0.01, batch_size=32, epochs=3, seed=2,
                       weight_decay=1e-4).fit(Xin, y, Xin, y)
        runs.append((hist, m))
    (hs, ms), (hd, md) = runs
    for a, b in zip(ms.weights + ms.biases, md.weights + md.biases):
        assert_close(a, b, dtype)
    assert_close(hs.train_loss, hd.train_loss, dtype)
    assert hs.val_acc == hd.val_acc
    Xs = FORMATS[fmt](X)
    assert_close(ms.forward(Xs), md.forward(X.toarray()), dtype)
    np.testing.assert_array_equal(ms.predict(Xs), md.predict(X.toarray()))
    assert ms.score(Xs, y) == md.score(X.toarray(), y)


def test_sparse_gradients_and_steps_equal_dense(backend):
    X, y = _data(40, 30, 0.2)
    m = MLP((30, 7, 3), dtype=np.float64, backend=backend, seed=3, output="softmax")
    ls, dWs, dbs = m.loss_and_grads(X, y, weight_decay=0.01)
    ld, dWd, dbd = m.loss_and_grads(X.toarray(), y, weight_decay=0.01)
    assert ls == pytest.approx(ld, rel=1e-12)
    for a, b in zip(dWs + dbs, dWd + dbd):
        assert_close(a, b, np.float64)
    m2 = MLP((30, 7, 3), dtype=np.float64, backend=backend, seed=3)
    t1, t2 = Trainer(m, lr=0.1), Trainer(m2, lr=0.1)
    assert t1.step(X[:10], y[:10]) == pytest.approx(t2.step(X[:10].toarray(), y[:10]), rel=1e-12)
    for a, b in zip(m.weights + m.biases, m2.weights + m2.biases):
        assert_close(a, b, np.float64)


def test_sparse_regression_and_multilabel(backend):
    X, y = _data(120, 40, 0.1)
    Y = np.stack([y == 0, y == 1], axis=1).astype(np.float64)
    for output, targets in (("logistic", Y), ("identity", Y * 2 - 1)):
        ms = MLP((40, 8, 2), backend=backend, seed=4, output=output)
        md = MLP((40, 8, 2), backend=backend, seed=4, output=output)
        Trainer(ms, optimizer="adam", lr=0.01, batch_size=16, epochs=2, seed=5).fit(X, targets)
        Trainer(md, optimizer="adam", lr=0.01, batch_size=16, epochs=2, seed=5).fit(
            X.toarray(), targets)
        for a, b in zip(ms.weights, md.weights):
            assert_close(a, b, np.float32)


def test_sparse_input_is_checked():
    m = MLP((5, 3, 2), backend="numpy")
    X = sp.csr_array(np.eye(4, 5))
    X.data[0] = np.nan
    with pytest.raises(ValueError, match="NaN or infinity"):
        m.forward(X)
    with pytest.raises(ValueError, match="has 4 features"):
        m.forward(sp.csr_array(np.eye(3, 4)))
    with pytest.raises(ValueError, match="0 samples"):
        m.forward(sp.csr_array((0, 5)))
