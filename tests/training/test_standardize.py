"""MLP(standardize=True): the input statistics (numpy's mean and population std of the
training set, scale 1 for constant features), training that is bit for bit the plain model's
on the standardised X (fit, fit_epoch, step; numpy and the default backend), inference on raw
X equal to the plain model's on standardised X, the errors (no statistics, sparse X, bad
statistics), persistence and repr."""
import numpy as np
import pytest
import scipy.sparse as sp
from helpers import params, same

from fastmlp import MLP, ModelFileError, Trainer, inference
from fastmlp.backends import onednn, reference
from fastmlp.model import input_stats

DTYPES = (np.float32, np.float64)
BACKENDS = ("numpy", "auto")


def data(n=600, d=6, c=3, seed=0):
    """X (n, d) float64 on very different scales and offsets, one constant feature (a large
    value, whose float32 rounding a naive std would see), y (n,) int labels from X."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d)) * [1, 100, 0.01, 10, 1, 1] + [0, -50, 3, 1e3, 0, 0]
    X[:, 4] = 12345.678
    y = np.argmax(X[:, :c] @ rng.standard_normal((c, c)), axis=1)
    return X, y


def standardised(model, X):
    """The plain NumPy expression the model documents: (X - mean) / scale in its dtype."""
    return (np.asarray(X, model.dtype) - model.input_mean) / model.input_scale


def pair(dtype, backend, seed=1):
    """A standardize model and a plain one with the same initial weights."""
    sizes = (6, 16, 8, 3)
    return (MLP(sizes, dtype=dtype, seed=seed, backend=backend, standardize=True),
            MLP(sizes, dtype=dtype, seed=seed, backend=backend))


@pytest.mark.parametrize("dtype", DTYPES)
def test_statistics_are_numpys_mean_and_std(dtype):
    X, y = data()
    m = MLP((6, 8, 3), dtype=dtype, standardize=True)
    assert m.input_mean is None and m.input_scale is None
    Trainer(m, epochs=1).fit(X, y)
    Xd = X.astype(dtype).astype(np.float64)   # the statistics of the data the model sees
    want_scale = Xd.std(axis=0)
    want_scale[4] = 1.0                        # constant feature
    for got, want in ((m.input_mean, Xd.mean(axis=0)), (m.input_scale, want_scale)):
        assert got.dtype == dtype and got.shape == (6,) and got.flags.c_contiguous
        np.testing.assert_allclose(got, want.astype(dtype), rtol=1e-6 if dtype == np.float32
                                   else 1e-12)
    assert m.input_scale[4] == 1


def test_input_stats_in_blocks_match_numpy():
    """Many features: the variance runs in several row blocks."""
    rng = np.random.default_rng(2)
    X = rng.standard_normal((500, 3000)) * 5 + 7
    mean, scale = input_stats(X)
    assert mean.dtype == scale.dtype == np.float64
    np.testing.assert_allclose(mean, X.mean(axis=0), rtol=1e-13)
    np.testing.assert_allclose(scale, X.std(axis=0), rtol=1e-12)


@pytest.mark.parametrize("dtype", DTYPES)
def test_constant_features_get_scale_one(dtype):
    X = np.zeros((50, 3), dtype)
    X[:, 0], X[:, 1], X[:, 2] = 0.1, np.arange(50), -7e5
    m = MLP((3, 4, 2), dtype=dtype, standardize=True).fit_input_stats(X)
    assert m.input_scale[0] == 1 and m.input_scale[2] == 1 and m.input_scale[1] > 1
    assert np.all(np.isfinite(m.predict_proba(X)))
    np.testing.assert_allclose(standardised(m, X)[:, [0, 2]], 0, atol=1e-6)   # mean rounding


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_fit_is_the_plain_fit_on_standardised_X(dtype, backend, monkeypatch):
    monkeypatch.setattr(inference, "CHUNK_BYTES", 1)   # predict in chunks of 256 rows
    X, y = data()
    Xv, yv = data(300, seed=1)
    m, plain = pair(dtype, backend)
    opts = dict(optimizer="adam", lr=1e-2, batch_size=32, epochs=3, seed=4)
    hist = Trainer(m, **opts).fit(X, y, Xv, yv)
    ref = Trainer(plain, **opts).fit(standardised(m, X), y, standardised(m, Xv), yv)
    assert same(params(m), params(plain))
    assert hist.as_dict()["val_loss"] == ref.as_dict()["val_loss"]
    Xs = standardised(m, Xv)
    np.testing.assert_array_equal(m.forward(Xv), plain.forward(Xs))
    np.testing.assert_array_equal(m.predict_proba(Xv), plain.predict_proba(Xs))
    np.testing.assert_array_equal(m.predict(Xv), plain.predict(Xs))
    assert m.score(Xv, yv) == plain.score(Xs, yv)
    assert Trainer(m).evaluate(Xv, yv) == Trainer(plain).evaluate(Xs, yv)
    got, want = m.loss_and_grads(Xv, yv, 1e-3), plain.loss_and_grads(Xs, yv, 1e-3)
    assert got[0] == want[0] and same(got[1] + got[2], want[1] + want[2])


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_fit_epoch_and_step_standardise_what_they_get(dtype, backend):
    X, y = data()
    m, plain = pair(dtype, backend)
    m.fit_input_stats(X)
    Xs = standardised(m, X)
    tm, tp = Trainer(m, lr=0.05, batch_size=64, seed=0), Trainer(plain, lr=0.05, batch_size=64,
                                                                seed=0)
    assert tm.fit_epoch(X, y) == tp.fit_epoch(Xs, y)
    assert tm.step(X[:50], y[:50]) == tp.step(Xs[:50], y[:50])
    assert tm.fit_epoch(X.astype(dtype), y, check_input=False) == \
        tp.fit_epoch(Xs, y, check_input=False)
    assert same(params(m), params(plain))


@pytest.mark.parametrize("backend", ("numpy", "numba", "cython"))
def test_fit_without_shuffling_standardises_the_batches_in_order(backend):
    X, y = data()
    m, plain = pair(np.float32, backend)
    opts = dict(lr=0.05, batch_size=64, epochs=2, shuffle=False, seed=0)
    got = Trainer(m, **opts).fit(X, y).as_dict()
    want = Trainer(plain, **opts).fit(standardised(m, X), y).as_dict()
    assert got["train_loss"] == want["train_loss"] and got["train_acc"] == want["train_acc"]
    assert same(params(m), params(plain))


def test_a_second_fit_keeps_the_statistics():
    X, y = data()
    m = MLP((6, 8, 3), standardize=True)
    tr = Trainer(m, epochs=1)
    tr.fit(X, y)
    mean, scale = m.input_mean.copy(), m.input_scale.copy()
    tr.fit(X * 3 + 1, y)
    np.testing.assert_array_equal(m.input_mean, mean)
    np.testing.assert_array_equal(m.input_scale, scale)


def test_set_input_stats_copies_into_the_models_dtype():
    m = MLP((3, 4, 2), dtype=np.float32, standardize=True)
    mean, scale = np.array([1.0, 2.0, 3.0]), [1, 2, 4]
    assert m.set_input_stats(mean, scale) is m
    mean[0] = 99
    assert m.input_mean.dtype == m.input_scale.dtype == np.float32
    np.testing.assert_array_equal(m.input_mean, [1, 2, 3])
    np.testing.assert_array_equal(m.predict_proba([[1, 2, 3]]),
                                  MLP((3, 4, 2)).predict_proba([[0, 0, 0]]))


def test_no_statistics_is_a_clear_error():
    X, y = data(20)
    m = MLP((6, 4, 3), standardize=True)
    calls = [lambda: m.predict(X), lambda: m.predict_proba(X), lambda: m.forward(X),
             lambda: m.score(X, y), lambda: m.loss_and_grads(X, y),
             lambda: Trainer(m).fit_epoch(X, y), lambda: Trainer(m).step(X, y),
             lambda: Trainer(m).evaluate(X, y), lambda: m.save("never.npz")]
    for call in calls:
        with pytest.raises(ValueError, match="no input statistics yet.*fit_input_stats"):
            call()


@pytest.mark.parametrize("kind", ["csr", "csc", "coo"])
def test_sparse_input_is_refused(kind):
    X, y = data(40)
    Xsp = sp.random(40, 6, density=0.3, format=kind, random_state=0)
    m = MLP((6, 4, 3), standardize=True)
    with pytest.raises(TypeError, match="sparse.*standardize=True"):
        Trainer(m, epochs=1).fit(Xsp, y)
    with pytest.raises(TypeError, match="X_val is sparse"):
        Trainer(m, epochs=1).fit(X, y, Xsp, y)
    assert m.input_mean is None   # nothing was set by the refused fits
    with pytest.raises(TypeError, match="sparse"):
        m.fit_input_stats(Xsp)
    m.fit_input_stats(X)
    tr = Trainer(m)
    for call in (m.predict, m.predict_proba, m.forward, lambda A: m.score(A, y),
                 lambda A: m.loss_and_grads(A, y), lambda A: tr.fit_epoch(A, y),
                 lambda A: tr.step(A, y), lambda A: tr.evaluate(A, y)):
        with pytest.raises(TypeError, match="sparse.*densify"):
            call(Xsp)


@pytest.mark.parametrize("mean, scale, text", [
    (np.zeros(5), np.ones(6), r"mean must have shape \(6,\)"),
    (np.zeros(6), np.ones((1, 6)), r"scale must have shape \(6,\)"),
    (np.zeros(6), 1.0, r"scale must have shape \(6,\)"),
    (np.full(6, np.nan), np.ones(6), "mean contains NaN"),
    (np.zeros(6), np.r_[np.ones(5), np.inf], "scale contains NaN or infinity"),
    (np.full(6, 1e300), np.ones(6), r"mean contains NaN or infinity \(in float32\)"),
    (np.zeros(6), np.r_[np.ones(5), 0.0], "scale must be > 0"),
    (np.zeros(6), -np.ones(6), "scale must be > 0"),
    (np.zeros(6), np.full(6, 1e-50), r"scale must be > 0 \(in float32\)"),
])
def test_bad_statistics_are_refused(mean, scale, text):
    m = MLP((6, 4, 3), standardize=True)
    with pytest.raises(ValueError, match=text):
        m.set_input_stats(mean, scale)
    assert m.input_mean is None


def test_options_are_checked():
    with pytest.raises(TypeError, match="standardize must be True or False"):
        MLP((3, 2), standardize="yes")
    plain = MLP((3, 2))
    for call in (lambda: plain.set_input_stats(np.zeros(3), np.ones(3)),
                 lambda: plain.fit_input_stats(np.ones((4, 3)))):
        with pytest.raises(ValueError, match="standardize=False"):
            call()
    assert plain.input_mean is None


def test_repr():
    assert "standardize=True" in repr(MLP((3, 2), standardize=True))
    assert "standardize" not in repr(MLP((3, 2)))


@pytest.mark.parametrize("dtype", DTYPES)
def test_save_and_load_keep_the_statistics(dtype, tmp_path):
    X, y = data()
    m = MLP((6, 16, 3), dtype=dtype, standardize=True, seed=2)
    Trainer(m, epochs=2).fit(X, y)
    loaded = MLP.load(m.save(tmp_path / "m.npz"))
    assert loaded.standardize and loaded.dtype == dtype
    np.testing.assert_array_equal(loaded.input_mean, m.input_mean)
    np.testing.assert_array_equal(loaded.input_scale, m.input_scale)
    np.testing.assert_array_equal(loaded.predict_proba(X), m.predict_proba(X))
    np.testing.assert_array_equal(loaded.predict(X), m.predict(X))
    plain = MLP.load(MLP((6, 4, 3)).save(tmp_path / "p.npz"))
    assert not plain.standardize and plain.input_mean is None


def _arrays(path):
    with np.load(path) as f:
        return {k: f[k] for k in f.files}


@pytest.fixture
def saved(tmp_path):
    X, y = data(100)
    m = MLP((6, 5, 3), standardize=True)
    m.fit_input_stats(X)
    path = m.save(tmp_path / "m.npz")
    arrays = _arrays(path)
    assert int(arrays["format_version"]) == 4 and bool(arrays["standardize"])
    return arrays


@pytest.mark.parametrize("edit, text", [
    (dict(input_mean=np.zeros(5, np.float32)), "input_mean has shape (5,)"),
    (dict(input_scale=np.ones(6)), "input_scale has shape (6,) dtype float64"),
    (dict(input_mean=np.full(6, np.nan, np.float32)), "input_mean contains NaN"),
    (dict(input_scale=np.zeros(6, np.float32)), "input_scale has entries <= 0"),
    (dict(input_scale=None), "arrays ['input_scale'] do not match"),
    (dict(standardize=np.array(False)), "arrays ['input_mean', 'input_scale'] do not match"),
    (dict(standardize=np.array(1)), "bad standardize"),
    (dict(standardize=None), "missing 'standardize'"),
])
def test_bad_statistics_in_a_file_are_refused(saved, edit, text, tmp_path):
    arrays = {**saved, **edit}
    arrays = {k: v for k, v in arrays.items() if v is not None}
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(ModelFileError) as info:
        MLP.load(tmp_path / "bad.npz")
    assert text in str(info.value)


def test_format_3_files_still_load(saved, tmp_path):
    arrays = {k: v for k, v in saved.items() if k != "batch_norm"}
    np.savez(tmp_path / "v3.npz", **{**arrays, "format_version": np.array(3)})
    m = MLP.load(tmp_path / "v3.npz")
    assert m.standardize and not m.batch_norm and m.layer_sizes == (6, 5, 3)


def test_format_2_files_still_load(saved, tmp_path):
    arrays = {k: v for k, v in saved.items() if k not in ("standardize", "input_mean",
                                                          "input_scale", "dropout",
                                                          "batch_norm")}
    np.savez(tmp_path / "v2.npz", **{**arrays, "format_version": np.array(2)})
    m = MLP.load(tmp_path / "v2.npz")
    assert not m.standardize and m.layer_sizes == (6, 5, 3)


def test_bf16_fit_converts_the_standardised_training_set(monkeypatch):
    """fit standardises before the bf16 conversion; fit_epoch refuses bf16 bits (it would
    have to standardise them).  Runs without oneDNN: nothing here trains."""
    monkeypatch.setattr(onednn, "load", lambda: None)
    X, y = data()
    m = MLP((6, 8, 3), standardize=True)
    tr = Trainer(m, precision="bf16")
    seen = []

    class Stop(Exception):
        pass

    def epoch(Xs, *args):
        seen.append(Xs.copy())
        raise Stop
    monkeypatch.setattr(tr, "_epoch", epoch)
    with pytest.raises(Stop):
        tr.fit(X, y)
    # the bits of the standardised X, converted in blocks (no float32 copy of X)
    want = reference.to_bf16(standardised(m, X), np.empty(X.shape, np.uint16))
    np.testing.assert_array_equal(seen[0], want)
    with pytest.raises(TypeError, match="not its bf16 bits"):
        tr.fit_epoch(np.zeros((4, 6), np.uint16), y[:4])


def test_bf16_bits_of_a_large_training_set_come_in_blocks(monkeypatch):
    """Blocks of rows through one float32 buffer give the bits of the whole standardised X."""
    monkeypatch.setattr(onednn, "load", lambda: None)
    rng = np.random.default_rng(1)
    X = (rng.standard_normal((3000, 400)) * 3 + 1).astype(np.float32)   # 2 blocks and a part
    m = MLP((400, 8, 3), standardize=True).fit_input_stats(X)
    got = Trainer(m, precision="bf16")._standardized_bf16(X)
    want = reference.to_bf16(standardised(m, X), np.empty(X.shape, np.uint16))
    np.testing.assert_array_equal(got, want)


@pytest.mark.skipif(not onednn.available(), reason=f"oneDNN is not installed ({onednn.EXTRA})")
def test_bf16_fit_is_the_plain_bf16_fit_on_standardised_X():
    X, y = data()
    m, plain = pair(np.float32, "cython")
    opts = dict(optimizer="adam", lr=1e-2, batch_size=32, epochs=2, seed=4, precision="bf16")
    Trainer(m, **opts).fit(X, y)
    Trainer(plain, **opts).fit(standardised(m, X), y)
    assert same(params(m), params(plain))
