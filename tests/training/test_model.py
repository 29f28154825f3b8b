"""MLP: shapes, gradients (finite differences, across backends), persistence."""
import os
import zipfile

import numpy as np
import pytest
from helpers import numeric_grad

from fastmlp import MLP, ModelFileError
from fastmlp.backends import BACKEND_NAMES


def data(n=20, d=6, c=3, seed=0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, d)).astype(dtype), rng.integers(0, c, n)


def test_shapes_and_init():
    m = MLP((10, 7, 5, 3), seed=1)
    assert m.dtype == np.float32 and m.n_layers == 3
    assert [W.shape for W in m.weights] == [(10, 7), (7, 5), (5, 3)]
    assert all(b.shape == (s,) and not b.any() for b, s in zip(m.biases, (7, 5, 3)))
    assert all(W.flags.c_contiguous and W.dtype == np.float32 for W in m.weights)
    big = MLP((2000, 1000, 10), seed=0)  # He: std sqrt(2 / fan_in)
    assert np.std(big.weights[0]) == pytest.approx(np.sqrt(2 / 2000), rel=0.01)
    assert np.std(big.weights[1]) == pytest.approx(np.sqrt(1 / 1000), rel=0.05)
    X, _ = data(4, 10)
    Z = m.forward(X)
    assert Z.shape == (4, 3) and Z.dtype == np.float32
    P = m.predict_proba(X)
    np.testing.assert_allclose(P.sum(1), 1, rtol=1e-6)
    np.testing.assert_array_equal(m.predict(X), np.argmax(Z, 1))
    assert MLP((10, 7, 5, 3), seed=1).weights[0].tobytes() == m.weights[0].tobytes()


@pytest.mark.parametrize("sizes", [(6, 3), (6, 5, 3), (6, 5, 4, 3)])
def test_loss_and_grads_match_finite_differences(sizes, backend):
    m = MLP(sizes, dtype=np.float64, seed=2, backend=backend)
    for b in m.biases:
        b[:] = np.random.default_rng(3).standard_normal(b.shape) * 0.1
    X, y = data(9, sizes[0], sizes[-1])
    wd = 0.03
    loss, dW, db = m.loss_and_grads(X, y, weight_decay=wd)
    assert loss == pytest.approx(m.loss_and_grads(X, y)[0] + wd * sum((W ** 2).sum()
                                                                      for W in m.weights))
    for P, G in list(zip(m.weights, dW)) + list(zip(m.biases, db)):
        num = numeric_grad(lambda: m.loss_and_grads(X, y, weight_decay=wd)[0], P)
        np.testing.assert_allclose(G, num, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_loss_and_grads_agree_across_backends(dtype):
    X, y = data(50, 12, 4, dtype=dtype)
    results = [MLP((12, 9, 7, 4), dtype=dtype, seed=5, backend=b)
               .loss_and_grads(X, y, weight_decay=1e-3) for b in BACKEND_NAMES]
    rtol = 1e-5 if dtype == np.float32 else 1e-12
    for loss, dW, db in results[1:]:
        assert loss == pytest.approx(results[0][0], rel=rtol)
        for a, b in zip(dW + db, results[0][1] + results[0][2]):
            np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol * np.abs(b).max())


def test_sample_weight_in_loss_and_grads():
    m = MLP((6, 5, 3), dtype=np.float64, seed=0, backend="numpy")
    X, y = data(6)
    w = np.array([1, 0, 2, 1, 0, 1.0])
    rep = np.repeat(np.arange(6), w.astype(int))
    a = m.loss_and_grads(X, y, sample_weight=w)
    b = m.loss_and_grads(X[rep], y[rep])
    assert a[0] == pytest.approx(b[0])
    np.testing.assert_allclose(a[1][0], b[1][0], atol=1e-12)


def test_bad_constructor_args():
    for sizes, err in [((5,), ValueError), ((5, 0, 3), ValueError), ((5, 2.5, 3), TypeError),
                       (5, ValueError), ((5, -1), ValueError)]:
        with pytest.raises(err, match="layer_sizes"):
            MLP(sizes)
    with pytest.raises(ValueError, match="dtype"):
        MLP((3, 2), dtype=np.float16)
    with pytest.raises(ValueError, match="backend"):
        MLP((3, 2), backend="gpu")


@pytest.mark.parametrize("bad, err, text", [
    (np.full((3, 6), np.nan), ValueError, "NaN"),
    (np.full((3, 6), np.inf), ValueError, "NaN or infinity"),
    (np.ones((0, 6)), ValueError, "empty"),
    (np.ones(6), ValueError, "2-D"),
    (np.ones((2, 3, 6)), ValueError, "2-D"),
    (np.ones((3, 5)), ValueError, "features"),
    (np.array([["a"] * 6]), TypeError, "numeric"),
    (np.array([[object()] * 6]), TypeError, "numeric"),
])
def test_predict_bad_input(bad, err, text):
    m = MLP((6, 4, 3))
    with pytest.raises(err, match=text):
        m.predict(bad)


def test_strided_and_readonly_input_work():
    m = MLP((6, 4, 3), dtype=np.float64, backend="cython")
    X, _ = data(10)
    ro = X.copy()
    ro.flags.writeable = False
    np.testing.assert_array_equal(m.forward(ro), m.forward(X))
    big = np.zeros((10, 12))
    big[:, ::2] = X
    np.testing.assert_array_equal(m.forward(big[:, ::2]), m.forward(X))
    np.testing.assert_array_equal(m.forward(np.asfortranarray(X)), m.forward(X))


# ---- persistence --------------------------------------------------------------------------

def test_save_load_roundtrip(tmp_path):
    m = MLP((6, 5, 4, 3), dtype=np.float64, seed=7, backend="numba")
    m.biases[1][:] = 0.5
    path = m.save(tmp_path / "m.npz")
    m2 = MLP.load(path, backend="cython")
    assert m2.layer_sizes == m.layer_sizes and m2.dtype == m.dtype
    assert m2.backend.name == "cython"
    for a, b in zip(m.weights + m.biases, m2.weights + m2.biases):
        np.testing.assert_array_equal(a, b)
    with np.load(path, allow_pickle=False) as f:
        assert int(f["format_version"]) == 4 and str(f["dtype"]) == "float64"
        assert f["batch_norm"].dtype == bool and not f["batch_norm"]
        assert str(f["activation"]) == "relu" and str(f["output"]) == "softmax"
        assert f["standardize"].dtype == bool and not f["standardize"]
        assert "input_mean" not in f.files
    assert [p for p in os.listdir(tmp_path) if p != "m.npz"] == []  # no temp file left


@pytest.mark.parametrize("activation, output", [("tanh", "logistic"), ("logistic", "identity"),
                                                ("identity", "exp"), ("relu", "softmax")])
def test_save_load_keeps_activation_and_output(tmp_path, activation, output):
    m = MLP((6, 5, 3), seed=2, activation=activation, output=output)
    m2 = MLP.load(m.save(tmp_path / "m.npz"))
    assert (m2.activation, m2.output) == (activation, output)
    X = np.random.default_rng(0).standard_normal((4, 6))
    np.testing.assert_array_equal(m2.predict(X), m.predict(X))


def test_format_1_files_load_as_relu_softmax(tmp_path):
    m = MLP((6, 5, 3), seed=3)
    arrays = dict(format_version=np.array(1), layer_sizes=np.array(m.layer_sizes),
                  dtype=np.array("float32"), W0=m.weights[0], b0=m.biases[0],
                  W1=m.weights[1], b1=m.biases[1])
    np.savez(tmp_path / "v1.npz", **arrays)
    m2 = MLP.load(tmp_path / "v1.npz")
    assert (m2.activation, m2.output) == ("relu", "softmax")
    assert all(np.array_equal(a, b) for a, b in zip(m.weights, m2.weights))
    arrays["format_version"] = np.array(2)   # format 2 must say what it is
    np.savez(tmp_path / "v2.npz", **arrays)
    with pytest.raises(ModelFileError, match="missing 'activation'"):
        MLP.load(tmp_path / "v2.npz")
    arrays.update(activation=np.array("swish"), output=np.array("softmax"))
    np.savez(tmp_path / "v2.npz", **arrays)
    with pytest.raises(ModelFileError, match="bad activation"):
        MLP.load(tmp_path / "v2.npz")


def test_save_is_atomic_when_interrupted(tmp_path, monkeypatch):
    m = MLP((6, 5, 3), seed=1)
    path = tmp_path / "m.npz"
    m.save(path)
    before = path.read_bytes()

    def boom(*a, **k):
        raise KeyboardInterrupt
    monkeypatch.setattr(np, "savez", boom)
    with pytest.raises(KeyboardInterrupt):
        MLP((6, 5, 3), seed=2).save(path)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["m.npz"]


def _write_npz(path, **arrays):
    np.savez(path, **arrays)
    return path


def test_load_refuses_bad_files(tmp_path):
    m = MLP((6, 5, 3), seed=1)
    good = m.save(tmp_path / "good.npz")
    raw = open(good, "rb").read()
    (tmp_path / "trunc.npz").write_bytes(raw[: len(raw) // 2])
    (tmp_path / "junk.npz").write_bytes(b"not a zip file at all")
    corrupt = bytearray(raw)
    corrupt[len(raw) // 3: len(raw) // 3 + 64] = b"\xff" * 64
    (tmp_path / "corrupt.npz").write_bytes(bytes(corrupt))
    base = dict(format_version=np.array(1), layer_sizes=np.array([6, 5, 3]),
                dtype=np.array("float32"), W0=m.weights[0], b0=m.biases[0],
                W1=m.weights[1], b1=m.biases[1])
    _write_npz(tmp_path / "shape.npz", **{**base, "W1": np.zeros((4, 3), np.float32)})
    _write_npz(tmp_path / "extra.npz", **base, W2=np.zeros(3, np.float32))
    _write_npz(tmp_path / "missing.npz", **{k: v for k, v in base.items() if k != "b1"})
    _write_npz(tmp_path / "version.npz", **{**base, "format_version": np.array(99)})
    _write_npz(tmp_path / "nan.npz", **{**base, "b0": np.full(5, np.nan, np.float32)})
    _write_npz(tmp_path / "dtype.npz", **{**base, "dtype": np.array("float64")})
    obj = np.array([{"evil": 1}], dtype=object)
    np.savez(tmp_path / "pickled.npz", **{**base, "W0": obj})
    for name in ["trunc", "junk", "corrupt", "shape", "extra", "missing", "version", "nan",
                 "dtype", "pickled"]:
        with pytest.raises(ModelFileError, match=name):
            MLP.load(tmp_path / f"{name}.npz")
    with pytest.raises(FileNotFoundError):
        MLP.load(tmp_path / "nope.npz")
    assert isinstance(MLP.load(good), MLP)
    assert issubclass(ModelFileError, ValueError)


def test_load_does_not_unpickle(tmp_path):
    marker = tmp_path / "executed"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))
    m = MLP((3, 2))
    np.savez(tmp_path / "evil.npz", format_version=np.array(1), layer_sizes=np.array([3, 2]),
             dtype=np.array("float32"), W0=np.array([Evil()], dtype=object), b0=m.biases[0])
    with pytest.raises(ModelFileError):
        MLP.load(tmp_path / "evil.npz")
    assert not marker.exists()
    assert zipfile.is_zipfile(tmp_path / "evil.npz")


def test_outputs_predict_as_their_kind():
    X = np.random.default_rng(0).standard_normal((5, 4))
    for output in ("softmax", "logistic", "identity", "exp"):
        m = MLP((4, 3, 2), seed=1, output=output, activation="tanh")
        Z = m.forward(X)
        pred = m.predict(X)
        if output == "softmax":
            np.testing.assert_array_equal(pred, np.argmax(Z, 1))
            np.testing.assert_allclose(m.predict_proba(X).sum(1), 1, rtol=1e-6)
        elif output == "logistic":
            assert pred.shape == (5, 2) and set(np.unique(pred)) <= {0, 1}
            np.testing.assert_allclose(m.predict_proba(X), 1 / (1 + np.exp(-Z)), rtol=1e-6)
        else:
            np.testing.assert_allclose(pred, np.exp(Z) if output == "exp" else Z, rtol=1e-6)
            with pytest.raises(TypeError, match="predict_proba needs"):
                m.predict_proba(X)


@pytest.mark.parametrize("output, y, err, text", [
    ("identity", np.zeros((5, 3)), ValueError, r"shape \(5, 2\)"),
    ("identity", np.zeros(5), ValueError, r"shape \(5, 2\)"),
    ("logistic", np.full((5, 2), 2.0), ValueError, "0/1 targets"),
    ("exp", -np.ones((5, 2)), ValueError, ">= 0"),
    ("identity", np.full((5, 2), np.nan), ValueError, "NaN"),
    ("identity", np.array([["a", "b"]] * 5), TypeError, "numeric"),
    ("softmax", np.zeros((5, 2)), ValueError, "1-D")])
def test_targets_are_checked_for_the_output(output, y, err, text):
    m = MLP((4, 3, 2), output=output, backend="numpy")
    with pytest.raises(err, match=text):
        m.loss_and_grads(np.zeros((5, 4)), y)


def test_single_output_takes_1d_targets():
    m = MLP((4, 3, 1), output="identity", backend="numpy", dtype=np.float64)
    X, y = np.ones((5, 4)), np.arange(5.0)
    assert m.loss_and_grads(X, y)[0] == m.loss_and_grads(X, y[:, None])[0]


def test_unknown_activation_or_output_is_refused():
    with pytest.raises(ValueError, match="unknown activation 'gelu'"):
        MLP((4, 3, 2), activation="gelu")
    with pytest.raises(ValueError, match="unknown output 'hinge'"):
        MLP((4, 3, 2), output="hinge")
