"""Label smoothing of the softmax loss: the reference against the cross-entropy formula
with soft targets, its gradient by finite differences (float64), the fused steps against
the reference's composition, and the Trainer / CLI option.  (Every backend's kernel against
the reference: tests/kernels/test_kernels.py, test_softmax_xent_grad.)"""
import json

import numpy as np
import pytest
from helpers import check_against_reference, train_step_arrays, train_steps

import fastmlp
from fastmlp.backends import reference
from fastmlp.cli import main


def soft_target_xent(Z, y, eps, w=None):
    """Cross-entropy against (1 - eps)·onehot(y) + eps/C, written out in float64."""
    Z = Z.astype(np.float64)
    n, c = Z.shape
    log_p = Z - Z.max(1, keepdims=True)
    log_p -= np.log(np.exp(log_p).sum(1, keepdims=True))
    T = np.full((n, c), eps / c)
    T[np.arange(n), y] += 1 - eps
    w = np.ones(n) if w is None else w.astype(np.float64)
    per_row = -(T * log_p).sum(1)
    grad = (np.exp(log_p) - T) * (w / w.sum())[:, None]
    return float(w @ per_row / w.sum()), grad


@pytest.mark.parametrize("shape", [(1, 1), (1, 4), (9, 10), (33, 3)])
@pytest.mark.parametrize("eps", [0.0, 0.1, 1.0])
def test_reference_is_the_soft_target_cross_entropy(dtype, shape, eps):
    rng = np.random.default_rng(0)
    n, c = shape
    Z = (3 * rng.standard_normal(shape)).astype(dtype)
    y, w = rng.integers(0, c, n), rng.uniform(0.1, 2, n).astype(dtype)
    dZ = np.empty_like(Z)
    loss = reference.softmax_xent_grad(Z, y, dZ, w, eps)
    want, grad = soft_target_xent(Z, y, eps, w)
    rtol = 1e-5 if dtype == np.float32 else 1e-12
    assert loss == pytest.approx(want, rel=rtol, abs=rtol)
    np.testing.assert_allclose(dZ, grad, rtol=rtol, atol=rtol)


def test_smoothing_gradient_matches_finite_differences(backend):
    be = fastmlp.get_backend(backend)
    rng = np.random.default_rng(1)
    Z, y = rng.standard_normal((6, 5)), rng.integers(0, 5, 6)
    dZ = np.empty_like(Z)
    be.softmax_xent_grad(Z, y, dZ, None, 0.2)
    num, h = np.empty_like(Z), 1e-6
    for idx in np.ndindex(Z.shape):
        Zp, Zm = Z.copy(), Z.copy()
        Zp[idx] += h
        Zm[idx] -= h
        num[idx] = (be.softmax_xent_grad(Zp, y, np.empty_like(Z), None, 0.2)
                    - be.softmax_xent_grad(Zm, y, np.empty_like(Z), None, 0.2)) / (2 * h)
    np.testing.assert_allclose(dZ, num, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("net", [((7, 13, 5, 3), 9, 6), ((784, 256, 10), 128, 100)],
                         ids=["3layers", "mnist"])
@pytest.mark.parametrize("opt", ["sgd", "adam"])
def test_train_step_with_label_smoothing(compiled_backend, dtype, net, opt):
    sizes, n_max, m = net
    rng = np.random.default_rng(3)
    arrays, outputs = train_step_arrays(rng, sizes, n_max, dtype, opt, 0)
    X = rng.standard_normal((m, sizes[0])).astype(dtype)
    y, sw = rng.integers(0, sizes[-1], m), rng.uniform(0.1, 2, m).astype(dtype)
    kw = dict(n_layers=len(sizes) - 1, optimizer=opt, lr=0.05, steps=3,
              hyper={"label_smoothing": 0.1, "dropout": 0.1, "dropout_seed": 5})
    check_against_reference(compiled_backend, train_steps, [X, y, sw] + arrays, kw,
                            outputs=[3 + k for k in outputs], returns="values")


@pytest.mark.parametrize("bad, output, text", [
    (-0.1, "softmax", "in \\[0, 1\\]"), (1.5, "softmax", "in \\[0, 1\\]"),
    ("0.1", "softmax", "in \\[0, 1\\]"), (0.1, "identity", "for the softmax output")])
def test_label_smoothing_refused(bad, output, text):
    m = fastmlp.MLP((4, 3, 2), output=output)
    with pytest.raises(ValueError, match=text):
        fastmlp.Trainer(m, label_smoothing=bad)
    with pytest.raises(ValueError, match=text):
        m.backend.raw.TrainStep(m.weights, m.biases, m.dweights, m.dbiases,
                                [np.zeros((2, 3), np.float32), np.zeros((2, 2), np.float32)],
                                [None, np.zeros((2, 3), np.float32)],
                                np.zeros((2, 2), np.float32), [None] * 4, "sgd",
                                output=output, label_smoothing=bad)


def test_trainer_label_smoothing(backend):
    """The Trainer's train_loss is the smoothed loss; val_loss the plain NLL; the smoothed
    model is less confident (its mean top probability is lower) on its training set."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((400, 8)).astype(np.float32)
    y = (X[:, 0] > 0).astype(int) + 2 * (X[:, 1] > 0)
    top = {}
    for eps in (0.0, 0.3):
        m = fastmlp.MLP((8, 32, 4), backend=backend, seed=0)
        tr = fastmlp.Trainer(m, optimizer="adam", lr=1e-2, epochs=20, seed=0,
                             label_smoothing=eps)
        h = tr.fit(X, y, X, y)
        top[eps] = float(m.predict_proba(X).max(1).mean())
        # the epoch's validation loss is the NLL of the model after the epoch
        assert h.last("val_loss") == pytest.approx(m.loss_and_grads(X, y)[0], rel=1e-5)
    assert top[0.3] < top[0.0] - 0.05


def test_cli_label_smoothing(capsys):
    assert main(["train", "--epochs", "3", "--label-smoothing", "0.1", "--json",
                 "--quiet"]) == 0
    assert json.loads(capsys.readouterr().out)["test_accuracy"] > 0.5
    assert main(["train", "--epochs", "1", "--label-smoothing", "2", "--quiet"]) == 2
