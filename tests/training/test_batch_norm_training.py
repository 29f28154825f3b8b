"""MLP(batch_norm=True) through the Trainer, in every backend: the running estimates follow
the batches' statistics step by step and estimate the training set's, inference uses them
(folded into the layers), the gradients are the finite-difference ones, and the model
saves, loads, exports and recovers from divergence with its gammas and running estimates."""
import numpy as np
import pytest
from helpers import numeric_grad

import fastmlp
from fastmlp import MLP, ModelFileError, Trainer, TrainingDivergedError
from fastmlp.backends.contract import BN_EPS, BN_MOMENTUM


def data(n=240, d=10, c=3, seed=0, dtype=np.float32):
    rng = np.random.default_rng(seed)
    X = (rng.standard_normal((n, d)) * np.arange(1, d + 1) + 3).astype(dtype)
    y = (X[:, 0] + X[:, 1] > 6).astype(np.int64) + (X[:, 2] > 3)
    return X, np.minimum(y, c - 1)


def bn_model(backend, dtype=np.float32, sizes=(10, 16, 8, 3), **kw):
    return MLP(sizes, dtype=dtype, seed=1, backend=backend, batch_norm=True, **kw)


def test_batch_norm_model_arrays():
    m = MLP((5, 7, 4, 2), batch_norm=True)
    assert [g.shape for g in m.gammas] == [(7,), (4,)]
    assert all(np.all(g == 1) for g in m.gammas)
    assert all(np.all(r == 0) for r in m.running_means)
    assert all(np.all(r == 1) for r in m.running_vars)
    assert len(m.params) == 2 * 3 + 2 and len(m.buffers) == 4
    assert "batch_norm=True" in repr(m)
    plain = MLP((5, 7, 2))
    assert plain.gammas == [] and plain.buffers == [] and len(plain.params) == 4
    with pytest.raises(TypeError, match="batch_norm must be True or False"):
        MLP((5, 7, 2), batch_norm="yes")


def test_running_estimates_follow_the_batches(backend):
    """After each Trainer.step the running estimates are the momentum average of the
    batch's column means and unbiased variances of the hidden product, computed here from
    the weights before the step (float64 model)."""
    X, y = data(dtype=np.float64)
    m = bn_model(backend, np.float64)
    tr = Trainer(m, optimizer="adam", lr=1e-2)
    rm = [np.zeros(h) for h in (16, 8)]
    rv = [np.ones(h) for h in (16, 8)]
    for s in range(0, 120, 30):
        Xb, yb = X[s:s + 30], y[s:s + 30]
        a = Xb
        for i in range(2):   # the hidden products with the weights before this step
            z = a @ m.weights[i]
            mu, var = z.mean(0), z.var(0)
            rm[i] = (1 - BN_MOMENTUM) * rm[i] + BN_MOMENTUM * mu
            rv[i] = (1 - BN_MOMENTUM) * rv[i] + BN_MOMENTUM * var * 30 / 29
            a = np.maximum(m.gammas[i] * (z - mu) / np.sqrt(var + BN_EPS) + m.biases[i], 0)
        tr.step(Xb, yb)
        for i in range(2):
            np.testing.assert_allclose(m.running_means[i], rm[i], rtol=1e-9, atol=1e-12)
            np.testing.assert_allclose(m.running_vars[i], rv[i], rtol=1e-9)
    assert not np.allclose(m.gammas[0], 1)   # the gammas were trained


def test_running_estimates_estimate_the_training_statistics(backend):
    """With the weights barely moving (lr 1e-9), many batches make the running estimates
    the training set's statistics of the first hidden product, within the sampling noise of
    a momentum average of batch statistics (about 0.25·std/√batch)."""
    X, y = data(2000)
    m = bn_model(backend)
    Trainer(m, optimizer="sgd", lr=1e-9, batch_size=100, epochs=5, seed=0).fit(X, y)
    z = X.astype(np.float64) @ m.weights[0]
    std = z.std(0)
    assert np.all(np.abs(m.running_means[0] - z.mean(0)) < 0.15 * std)
    assert np.all(np.abs(m.running_vars[0] / z.var(0) - 1) < 0.3)


def test_inference_uses_the_running_estimates(backend, dtype):
    """forward = the network with each hidden layer normalised by its running estimates
    (written out here in float64), not by the batch's statistics."""
    X, y = data()
    m = bn_model(backend, dtype)
    Trainer(m, optimizer="adam", lr=1e-2, batch_size=32, epochs=3, seed=0).fit(X, y)
    a = X.astype(np.float64)
    for i in range(2):
        z = a @ m.weights[i]
        a = np.maximum(m.gammas[i] * (z - m.running_means[i])
                       / np.sqrt(m.running_vars[i].astype(np.float64) + BN_EPS)
                       + m.biases[i], 0)
    want = a @ m.weights[2] + m.biases[2]
    got = m.forward(X)
    tol = 1e-4 if dtype == np.float32 else 1e-10
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol * np.abs(want).max())
    # the same rows in a batch of one: inference does not depend on the batch
    np.testing.assert_allclose(m.forward(X[:1]), got[:1], rtol=tol, atol=tol)


@pytest.mark.parametrize("drop", [0.0, 0.3])
def test_loss_and_grads_is_the_gradient(backend, drop):
    """MLP.loss_and_grads of a batch_norm model (the batch's statistics) = finite
    differences, float64, for the weights, biases and gammas; the running estimates are
    left alone."""
    X, y = data(12, dtype=np.float64)
    m = bn_model(backend, np.float64, dropout=drop)
    rng = np.random.default_rng(3)
    for g in m.gammas:
        g[...] = 1 + 0.3 * rng.standard_normal(g.shape)
    loss, dW, db, dg = m.loss_and_grads(X, y, weight_decay=1e-3)
    assert all(np.all(r == 0) for r in m.running_means)

    def f():
        return m.loss_and_grads(X, y, weight_decay=1e-3)[0]
    for P, G in list(zip(m.weights, dW)) + list(zip(m.biases, db)) + list(zip(m.gammas, dg)):
        np.testing.assert_allclose(G, numeric_grad(f, P), rtol=1e-6, atol=1e-8)


def test_batch_norm_trains_digits(backend):
    from sklearn.datasets import load_digits
    X, y = load_digits(return_X_y=True)
    X = (X / 16).astype(np.float32)
    m = MLP((64, 64, 32, 10), seed=0, backend=backend, batch_norm=True)
    Trainer(m, optimizer="adam", lr=3e-3, batch_size=32, epochs=10, seed=0).fit(X[:1400],
                                                                                y[:1400])
    assert m.score(X[1400:], y[1400:]) > 0.9


def test_backends_train_alike(dtype):
    """The compiled steps' training with batch normalisation (and dropout) follows the
    reference's (a few steps, float64 tight, float32 loose: Adam's first steps amplify
    rounding)."""
    X, y = data(dtype=dtype)
    models = {}
    for name in fastmlp.available_backends():
        m = bn_model(name, dtype, dropout=0.2)
        Trainer(m, optimizer="adam", lr=1e-3, batch_size=50, epochs=1, seed=0,
                dropout_seed=5).fit(X, y)
        models[name] = m
    ref = models.pop("numpy")
    tol = 1e-3 if dtype == np.float32 else 1e-9
    for name, m in models.items():
        for a, b in zip(m.params + m.buffers, ref.params + ref.buffers):
            np.testing.assert_allclose(a, b, rtol=tol, atol=tol, err_msg=name)


def test_sparse_input_with_batch_norm(backend):
    """A CSR training set trains as its dense copy does (the first layer's product goes to
    the normalisation without a bias in both paths)."""
    import scipy.sparse
    X, y = data(dtype=np.float64)
    X[X < 3] = 0
    ms = []
    for Xt in (X, scipy.sparse.csr_matrix(X)):
        m = bn_model(backend, np.float64)
        Trainer(m, optimizer="sgd", lr=0.05, momentum=0.9, batch_size=40, epochs=2,
                seed=0).fit(Xt, y)
        ms.append(m)
    for a, b in zip(ms[0].params + ms[0].buffers, ms[1].params + ms[1].buffers):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)


def test_state_covers_the_gammas(backend):
    m = bn_model(backend)
    tr = Trainer(m, optimizer="adam")
    state, t = tr.get_state()
    assert len(state) == len(m.params) == 3 * 2 + 2
    assert state[-1][0].shape == m.gammas[-1].shape
    tr2 = Trainer(m, optimizer="adam")
    tr2.set_state(state, t)
    with pytest.raises(ValueError, match="one entry per parameter"):
        tr2.set_state(state[:-1], t)


@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")
def test_divergence_restores_the_batch_norm_arrays(backend):
    """Non-finite parameters are reset to the last snapshot (taken before step 1 here: the
    copy before step 2 is only kept if that step's loss is finite), gammas and running
    estimates included."""
    X, y = data()
    m = bn_model(backend)
    tr = Trainer(m, optimizer="sgd", lr=0.01, snapshot_every=1)
    kept = [p.copy() for p in m.params + m.buffers]
    tr.step(X[:20], y[:20])
    assert not np.array_equal(m.running_means[0], kept[len(m.params)])
    m.gammas[0][0] = np.inf            # as if an update had overflowed
    m.running_vars[0][0] = np.nan
    with pytest.raises(TrainingDivergedError, match="reset"):
        tr.step(X[20:40], y[20:40])
    for a, b in zip(m.params + m.buffers, kept):
        np.testing.assert_array_equal(a, b)


def test_save_and_load_keep_batch_norm(backend, tmp_path):
    X, y = data()
    m = bn_model(backend, dropout=0.1)
    Trainer(m, optimizer="adam", lr=1e-2, epochs=2, seed=0).fit(X, y)
    m2 = MLP.load(m.save(tmp_path / "m.npz"), backend=backend)
    assert m2.batch_norm
    for a, b in zip(m.params + m.buffers, m2.params + m2.buffers):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(m2.forward(X), m.forward(X))


@pytest.mark.parametrize("edit, text", [
    (dict(gamma0=None), "arrays ['gamma0'] do not match"),
    (dict(running_var1=-np.ones(8, np.float32)), "running_var1 has entries < 0"),
    (dict(running_mean0=np.zeros(3, np.float32)), "running_mean0 has shape (3,)"),
    (dict(gamma1=np.full(8, np.nan, np.float32)), "gamma1 contains NaN"),
    (dict(batch_norm=np.array(1)), "bad batch_norm"),
    (dict(batch_norm=np.array(False)), "do not match"),
])
def test_bad_batch_norm_files_are_refused(tmp_path, edit, text):
    path = bn_model("numpy").save(tmp_path / "m.npz")
    with np.load(path) as f:
        arrays = {k: f[k] for k in f.files}
    arrays = {k: v for k, v in {**arrays, **edit}.items() if v is not None}
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(ModelFileError) as info:
        MLP.load(tmp_path / "bad.npz")
    assert text in str(info.value)


def test_onnx_export_folds_batch_norm():
    pytest.importorskip("onnxruntime")
    import onnxruntime as ort
    X, y = data()
    m = bn_model("numpy")
    Trainer(m, optimizer="adam", lr=1e-2, epochs=2, seed=0).fit(X, y)
    sess = ort.InferenceSession(m.to_onnx().SerializeToString(),
                                providers=["CPUExecutionProvider"])
    got = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, {"X": X})))
    np.testing.assert_allclose(got["probabilities"], m.predict_proba(X), rtol=1e-4,
                               atol=1e-6)
    np.testing.assert_array_equal(got["label"], m.predict(X))


def test_batch_norm_is_pytorchs():
    """The same network in PyTorch (Linear without bias, BatchNorm1d shifted by fastmlp's
    bias, ReLU) in training mode has the same loss and gradients (float32)."""
    torch = pytest.importorskip("torch")
    from fastmlp.bench.recipes_group import _torch_mlp
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((64, 20)).astype(np.float32), rng.integers(0, 5, 64)
    m = MLP((20, 16, 8, 5), batch_norm=True, backend="numpy", seed=3)
    for b in m.biases:
        b[...] = 0.1 * rng.standard_normal(b.shape)
    for g in m.gammas:
        g[...] = 1 + 0.1 * rng.standard_normal(g.shape)
    net = _torch_mlp(torch, m.layer_sizes, (0.0, 0.0), list(zip(m.weights, m.biases)), True)
    bns = [layer for layer in net if isinstance(layer, torch.nn.BatchNorm1d)]
    with torch.no_grad():
        for bn, g in zip(bns, m.gammas):
            bn.weight.copy_(torch.from_numpy(g))
    net.train()
    want = torch.nn.CrossEntropyLoss()(net(torch.from_numpy(X)), torch.from_numpy(y))
    want.backward()
    loss, dW, db, dg = m.loss_and_grads(X, y)
    assert abs(loss - want.item()) < 1e-5
    lin = [layer for layer in net if isinstance(layer, torch.nn.Linear)]
    for i in range(3):
        np.testing.assert_allclose(dW[i], lin[i].weight.grad.numpy().T, atol=1e-6)
    for i in range(2):
        np.testing.assert_allclose(dg[i], bns[i].weight.grad.numpy(), atol=1e-6)
        np.testing.assert_allclose(db[i], bns[i].bias.grad.numpy(), atol=1e-6)
        np.testing.assert_allclose(m.running_means[i], 0)   # loss_and_grads leaves them
    Trainer(m, optimizer="sgd", lr=0.1).step(X, y)   # its running estimates = PyTorch's
    for i in range(2):                               # after that one forward pass
        np.testing.assert_allclose(m.running_means[i], bns[i].running_mean.numpy(),
                                   rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(m.running_vars[i], bns[i].running_var.numpy(), rtol=1e-5)
