"""Training with precision="bf16" (Trainer, the estimators, the CLI): the loss curve tracks
float32's, the training set is converted once, and the refusals name what to do.

Band: each epoch's bf16 training loss within max(0.01, 10%) of the float32 run's, same seed
(measured on this net: at most 0.002, or 4.4%).  The step itself is held to the reference's
bf16 emulation in tests/kernels/test_bf16.py."""
import numpy as np
import pytest

import fastmlp
from fastmlp.backends import COMPILED_NAMES, onednn
from fastmlp.datasets import load_digits

needs_onednn = pytest.mark.skipif(not onednn.available(),
                                  reason=f"oneDNN is not installed ({onednn.EXTRA})")


@pytest.fixture(scope="module")
def digits():
    return load_digits()


def _fit(backend, digits, precision, optimizer="adam", epochs=12):
    Xtr, ytr, Xte, yte = digits
    m = fastmlp.MLP([64, 128, 64, 10], seed=0, backend=backend)
    tr = fastmlp.Trainer(m, optimizer=optimizer, lr=1e-3 if optimizer == "adam" else 0.05,
                         momentum=0.9 if optimizer == "sgd" else 0.0, epochs=epochs,
                         batch_size=64, seed=0, precision=precision)
    hist = tr.fit(Xtr, ytr)
    return np.array(hist.as_dict()["train_loss"]), m.score(Xte, yte), tr


@needs_onednn
@pytest.mark.parametrize("backend", COMPILED_NAMES)
@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_bf16_loss_curve_tracks_float32(digits, backend, optimizer):
    full, acc_full, _ = _fit(backend, digits, None, optimizer)
    half, acc_half, tr = _fit(backend, digits, "bf16", optimizer)
    band = np.maximum(0.01, 0.1 * full)
    assert np.all(np.abs(half - full) <= band), np.c_[full, half]
    assert half[-1] < 0.2 * half[0]
    assert abs(acc_half - acc_full) <= 0.02
    assert tr.model.weights[0].dtype == np.float32


@needs_onednn
def test_bf16_converts_the_training_set_once(digits, monkeypatch):
    Xtr, ytr = digits[0], digits[1]
    m = fastmlp.MLP([64, 32, 10], seed=0, backend="cython")
    tr = fastmlp.Trainer(m, optimizer="adam", epochs=4, batch_size=100, seed=0,
                         precision="bf16")
    raw, calls = m.backend.raw, []
    real = raw.to_bf16
    monkeypatch.setattr(raw, "to_bf16", lambda x, out: calls.append(x.shape) or real(x, out))
    tr.fit(Xtr, ytr)
    assert calls.count(Xtr.shape) == 1


@needs_onednn
def test_bf16_fit_epoch_takes_bits_and_step_takes_float32(digits):
    Xtr, ytr = digits[0][:256], digits[1][:256]
    runs = []
    for how in ("bits", "float32"):
        m = fastmlp.MLP([64, 32, 10], seed=0, backend="cython")
        tr = fastmlp.Trainer(m, optimizer="sgd", lr=0.05, batch_size=64, shuffle=False,
                             seed=0, precision="bf16")
        if how == "bits":
            tr.fit_epoch(tr.bf16_input(Xtr), ytr)
        else:
            for s in range(0, 256, 64):
                tr.step(Xtr[s:s + 64], ytr[s:s + 64])
        runs.append(m.weights[0].copy())
    np.testing.assert_array_equal(runs[0], runs[1])


def test_bf16_refusals(digits):
    m64 = fastmlp.MLP([64, 8, 10], dtype="float64", seed=0)
    with pytest.raises(TypeError, match="float32"):
        fastmlp.Trainer(m64, precision="bf16")
    with pytest.raises(ValueError, match="precision"):
        fastmlp.Trainer(fastmlp.MLP([64, 8, 10], seed=0), precision="half")


@needs_onednn
def test_bf16_refuses_sparse_input(digits):
    import scipy.sparse
    m = fastmlp.MLP([64, 8, 10], seed=0, backend="cython")
    tr = fastmlp.Trainer(m, epochs=1, precision="bf16")
    with pytest.raises(TypeError, match="dense"):
        tr.fit(scipy.sparse.csr_matrix(digits[0]), digits[1])


def test_bf16_without_onednn_names_the_extra(monkeypatch):
    monkeypatch.setattr(onednn, "_loaded", ImportError(f"oneDNN is not installed "
                                                       f"({onednn.EXTRA})"))
    with pytest.raises(ImportError, match=r"fastmlp\[onednn\]"):
        fastmlp.Trainer(fastmlp.MLP([64, 8, 10], seed=0), precision="bf16")
    fastmlp.Trainer(fastmlp.MLP([64, 8, 10], seed=0))   # full precision is unaffected


@needs_onednn
def test_bf16_estimator(digits):
    Xtr, ytr, Xte, yte = digits
    kw = dict(hidden_layer_sizes=(64,), max_iter=30, random_state=0, backend="cython")
    full = fastmlp.MLPClassifier(**kw).fit(Xtr, ytr)
    half = fastmlp.MLPClassifier(precision="bf16", **kw).fit(Xtr.astype(np.float64), ytr)
    assert half.coefs_[0].dtype == np.float32   # dtype=None means float32 under bf16
    assert abs(half.score(Xte, yte) - full.score(Xte, yte)) <= 0.02
    assert np.allclose(np.abs(np.array(half.loss_curve_) - full.loss_curve_), 0, atol=0.05)
    reg = fastmlp.MLPRegressor(precision="bf16", hidden_layer_sizes=(16,), max_iter=5,
                               random_state=0).fit(Xtr, ytr.astype(float))
    assert np.isfinite(reg.predict(Xte)).all()


def test_bf16_estimator_refusals(digits):
    Xtr, ytr = digits[0][:100], digits[1][:100]
    with pytest.raises(ValueError, match="float32"):
        fastmlp.MLPClassifier(precision="bf16", dtype="float64", max_iter=1).fit(Xtr, ytr)
    with pytest.raises(ValueError, match="solver"):
        fastmlp.MLPClassifier(precision="bf16", solver="lbfgs", max_iter=1).fit(Xtr, ytr)
    with pytest.raises(ValueError):
        fastmlp.MLPClassifier(precision="fp8", max_iter=1).fit(Xtr, ytr)


@needs_onednn
def test_cli_trains_in_bf16(capsys):
    from fastmlp.cli import main
    assert main(["train", "--precision", "bf16", "--epochs", "3", "--quiet", "--json",
                 "--backend", "cython"]) == 0
    import json
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["precision"] == "bf16" and out["test_accuracy"] > 0.8
    assert main(["train", "--precision", "bf16", "--dtype", "float64", "--quiet"]) == 2
