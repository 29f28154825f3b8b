"""ONNX export: onnxruntime's outputs equal fastmlp's (and scikit-learn's) predictions within
the dtype's tolerance, for every activation and output layer, float32 and float64; fastmlp's
estimators convert inside a Pipeline with skl2onnx; without the extra, a clear ImportError."""
import sys
import warnings

import numpy as np
import pytest

onnx = pytest.importorskip("onnx", reason="the onnx extra is not installed "
                                          "(pip install '.[onnx]')")
ort = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed "
                                                "(pip install '.[onnx]')")

import fastmlp  # noqa: E402
import fastmlp.estimators  # noqa: E402
import fastmlp.onnx  # noqa: E402
from fastmlp.backends.contract import ACTIVATIONS, OUTPUTS  # noqa: E402
from fastmlp.cli import main  # noqa: E402

TOL = {np.float32: 1e-5, np.float64: 1e-12}   # relative, floored at the largest magnitude
DTYPES = (np.float32, np.float64)
pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")


def run(model, X):
    """{output name: array} of onnxruntime on a ModelProto and input X."""
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    out = sess.run(None, {sess.get_inputs()[0].name: X})
    return dict(zip([o.name for o in sess.get_outputs()], out))


def close(got, want, dtype):
    want = np.asarray(want)
    assert got.dtype == dtype and got.shape == want.shape
    tol = TOL[dtype]
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol * max(1.0, np.abs(want).max()))


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((300, 12))
    w = rng.standard_normal((12, 3))
    Z = X @ w
    return {"X": X, "multiclass": np.argmax(Z, axis=1), "binary": (Z[:, 0] > 0).astype(int),
            "strings": np.array(["cat", "dog", "eel"])[np.argmax(Z, axis=1)],
            "multilabel": (Z > 0).astype(int), "regression": Z[:, 0] * 10,
            "regression2": Z[:, :2] * 10, "counts": rng.poisson(np.exp(0.3 * Z[:, 0]))}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("output", OUTPUTS)
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_mlp_export_matches_predict(data, activation, output, dtype, tmp_path):
    k = 4 if output == "softmax" else 3
    model = fastmlp.MLP((12, 16, 8, k), dtype=dtype, seed=1, activation=activation,
                        output=output)
    X = data["X"].astype(dtype)
    path = tmp_path / "m.onnx"
    model.to_onnx(path)
    got = run(onnx.load(str(path)), X)
    if model.is_classifier:
        close(got["probabilities"], model.predict_proba(X), dtype)
        np.testing.assert_array_equal(got["label"], model.predict(X))
    else:
        close(got["variable"], model.predict(X), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("output", ["softmax", "logistic", "identity"])
def test_standardize_model_export_matches_predict(data, output, dtype):
    """The graph standardises X first (Sub input_mean, Div input_scale)."""
    model = fastmlp.MLP((12, 16, 3), dtype=dtype, seed=1, output=output, standardize=True)
    X = (data["X"] * np.arange(1, 13) + 40).astype(dtype)   # far from standardised
    model.fit_input_stats(X)
    graph = model.to_onnx()
    assert [n.op_type for n in graph.graph.node[:3]] == ["Sub", "Div", "MatMul"]
    got = run(graph, X)
    if model.is_classifier:
        close(got["probabilities"], model.predict_proba(X), dtype)
        np.testing.assert_array_equal(got["label"], model.predict(X))
    else:
        close(got["variable"], model.predict(X), dtype)
    with pytest.raises(ValueError, match="no input statistics"):
        fastmlp.MLP((12, 3), standardize=True).to_onnx()


def _subclasses():
    from sklearn.neural_network import MLPClassifier, MLPRegressor

    class SkClassifier(MLPClassifier):
        """A sklearn-compatible class skl2onnx does not know."""

    class SkRegressor(MLPRegressor):
        pass
    return SkClassifier, SkRegressor


CLASSIFIER_CASES = ("binary", "multiclass", "strings", "multilabel")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("target", CLASSIFIER_CASES)
def test_sklearn_classifier_export(data, target, activation, dtype):
    cls = _subclasses()[0]
    X = data["X"].astype(dtype)
    est = cls(hidden_layer_sizes=(8,), activation=activation, max_iter=30, random_state=0).fit(X, data[target])
    got = run(fastmlp.onnx.estimator_to_onnx(est), X)
    close(got["probabilities"], est.predict_proba(X), dtype)
    np.testing.assert_array_equal(got["label"], est.predict(X))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("target, loss", [("regression", "squared_error"),
                                          ("regression2", "squared_error"),
                                          ("counts", "poisson")])
def test_sklearn_regressor_export(data, target, loss, activation, dtype):
    cls = _subclasses()[1]
    if loss not in cls._parameter_constraints["loss"][0].options:
        pytest.skip(f"this scikit-learn's MLPRegressor has no loss={loss!r}")
    X = data["X"].astype(dtype)
    est = cls(hidden_layer_sizes=(8,), activation=activation, loss=loss, max_iter=50, random_state=0)
    est.fit(X, data[target])
    got = run(fastmlp.onnx.estimator_to_onnx(est), X)
    close(got["variable"], est.predict(X).reshape(len(X), -1), dtype)


def _fastmlp_estimators():
    """fastmlp's estimators with their targets (MLPRegressor when this version has it)."""
    cases = [("MLPClassifier", "binary"), ("MLPClassifier", "multiclass"),
             ("MLPClassifier", "strings"), ("MLPClassifier", "multilabel")]
    if hasattr(fastmlp.estimators, "MLPRegressor"):
        cases += [("MLPRegressor", "regression"), ("MLPRegressor", "regression2")]
    return cases


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name, target", _fastmlp_estimators())
def test_fastmlp_estimator_to_onnx(data, name, target, dtype, tmp_path):
    est = getattr(fastmlp.estimators, name)(hidden_layer_sizes=(8,), max_iter=20, random_state=0, dtype=dtype)
    X = data["X"].astype(dtype)
    est.fit(X, data[target])
    got = run(est.to_onnx(tmp_path / "e.onnx"), X)
    if "probabilities" in got:
        close(got["probabilities"], est.predict_proba(X), dtype)
        np.testing.assert_array_equal(got["label"], est.predict(X))
    else:
        close(got["variable"], est.predict(X).reshape(len(X), -1), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("target", ("binary", "multiclass", "strings"))
def test_pipeline_converts_with_skl2onnx(data, target, dtype):
    skl2onnx = pytest.importorskip("skl2onnx", reason="skl2onnx is not installed")
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    X = (data["X"] * 5 + 3).astype(dtype)
    pipe = make_pipeline(StandardScaler(), fastmlp.MLPClassifier(
        (8,), max_iter=20, random_state=0, dtype=dtype)).fit(X, data[target])
    want_p, want_l = pipe.predict_proba(X), pipe.predict(X)
    got = run(skl2onnx.to_onnx(pipe, X[:1], options={"zipmap": False}), X)
    close(got["probabilities"], want_p, dtype)
    np.testing.assert_array_equal(got["label"], want_l)
    # skl2onnx's default adds a ZipMap (one {class: probability} dict per row, float32 only)
    got = run(skl2onnx.to_onnx(pipe, X[:1]), X)
    zipped = np.array([[row[c] for c in pipe.classes_] for row in got["output_probability"]])
    np.testing.assert_allclose(zipped, want_p, rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(got["output_label"], want_l)


@pytest.mark.parametrize("dtype", DTYPES)
def test_regressor_pipeline_converts_with_skl2onnx(data, dtype):
    skl2onnx = pytest.importorskip("skl2onnx", reason="skl2onnx is not installed")
    if not hasattr(fastmlp.estimators, "MLPRegressor"):
        pytest.skip("this fastmlp has no MLPRegressor")
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    X = (data["X"] * 5 + 3).astype(dtype)
    pipe = make_pipeline(StandardScaler(), fastmlp.estimators.MLPRegressor(
        hidden_layer_sizes=(8,), max_iter=30, random_state=0, dtype=dtype))
    pipe.fit(X, data["regression2"])
    got = run(skl2onnx.to_onnx(pipe, X[:1]), X)
    close(got["variable"], pipe.predict(X), dtype)


@pytest.mark.parametrize("kind", ("multilabel", "regression2"))
def test_registered_sklearn_subclass_in_a_pipeline(data, kind):
    skl2onnx = pytest.importorskip("skl2onnx", reason="skl2onnx is not installed")
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    clf_cls, reg_cls = _subclasses()
    fastmlp.onnx.register(clf_cls, reg_cls)
    X = data["X"].astype(np.float32)
    est = (clf_cls if kind == "multilabel" else reg_cls)(hidden_layer_sizes=(8,), max_iter=30, random_state=0)
    pipe = make_pipeline(StandardScaler(), est).fit(X, data[kind])
    options = {clf_cls: {"zipmap": False}} if kind == "multilabel" else None
    got = run(skl2onnx.to_onnx(pipe, X[:1], options=options), X)
    if kind == "multilabel":
        close(got["probabilities"], pipe.predict_proba(X), np.float32)
        np.testing.assert_array_equal(got["label"], pipe.predict(X))
    else:
        close(got["variable"], pipe.predict(X), np.float32)


def test_export_of_an_unfitted_estimator_is_refused():
    from sklearn.exceptions import NotFittedError
    with pytest.raises(NotFittedError):
        fastmlp.MLPClassifier().to_onnx()
    with pytest.raises(ValueError, match="not fitted"):
        fastmlp.onnx.estimator_to_onnx(_subclasses()[0]())


def test_cli_export(tmp_path, capsys):
    model = fastmlp.MLP((64, 16, 10), seed=0, activation="tanh")
    model.save(tmp_path / "m.npz")
    out = tmp_path / "m.onnx"
    assert main(["export", "--model", str(tmp_path / "m.npz"), "--out", str(out)]) == 0
    assert str(out) in capsys.readouterr().out
    X = np.random.default_rng(0).random((20, 64), dtype=np.float32)
    got = run(onnx.load(str(out)), X)
    close(got["probabilities"], model.predict_proba(X), np.float32)
    assert main(["export", "--model", str(tmp_path / "m.npz"), "--out",
                 str(tmp_path / "no" / "m.onnx")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_without_the_extra_to_onnx_names_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)   # `import onnx` now raises ImportError
    with pytest.raises(ImportError, match=r"fastmlp\[onnx\]"):
        fastmlp.MLP((4, 3, 2)).to_onnx()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est = fastmlp.MLPClassifier((3,), max_iter=2).fit(np.eye(4), [0, 1, 0, 1])
    with pytest.raises(ImportError, match=r"fastmlp\[onnx\]"):
        est.to_onnx()


def test_cli_export_without_the_extra(monkeypatch, tmp_path, capsys):
    fastmlp.MLP((4, 3, 2)).save(tmp_path / "m.npz")
    monkeypatch.setitem(sys.modules, "onnx", None)
    assert main(["export", "--model", str(tmp_path / "m.npz"), "--out",
                 str(tmp_path / "m.onnx")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "fastmlp[onnx]" in err and not (tmp_path / "m.onnx").exists()
