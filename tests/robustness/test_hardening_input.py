"""Bad input at every public entry point, as tables: each case raises TypeError/ValueError
with a message naming the argument, or works -- and where the input holds the same numbers
as a clean one (read-only, memory-mapped, strided, Fortran-ordered, other dtypes) it gives
the clean input's result bit for bit.

The tables are the source of the tables in docs/robustness.md: `python
tests/robustness/test_hardening_input.py` prints them and `test_docs_table_is_current` keeps the two
equal.  The compiled kernels' own bad calls are in kernels/test_bad_calls.py.
"""
import importlib.util
import pathlib
import struct
import warnings

import numpy as np
import pytest

from fastmlp import MLP, MLPClassifier, Trainer
from fastmlp.backends import BACKEND_NAMES
from fastmlp.cli import main
from fastmlp.datasets import (
    load_dataset,
    load_digits,
    load_fashion_mnist,
    load_idx,
    load_idx_dir,
)


def _kernel_cases():
    """The compiled kernels' bad calls: the table of kernels/test_bad_calls.py."""
    path = pathlib.Path(__file__).parents[1] / "kernels" / "test_bad_calls.py"
    spec = importlib.util.spec_from_file_location("_bad_calls_table", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.CASES


KERNEL_CASES = _kernel_cases()

REPO = pathlib.Path(__file__).resolve().parents[2]
nan, inf = float("nan"), float("inf")
SAME, OK = "works, same result", "works"
# the estimators train (and predict) in float32 on float32 X: the same result as float32 X
SAME32 = "works, same result as float32 X"


class Err:
    """Expected failure: exception type and a substring of its message.  `{X}` / `{y}` stand
    for the argument's name at the entry point (X, X_batch, X_val, ...)."""

    def __init__(self, exc, text):
        self.exc, self.text = exc, text

    def describe(self):
        text = self.text.format(X="X", y="y")
        return f"{self.exc.__name__}: " + (f"`` {text} ``" if "`" in text else f"`{text}`")


def _describe(e):
    return e if isinstance(e, str) else e.describe()


# ---- data: X and y ------------------------------------------------------------------------

def _put(X, i, j, v):
    X = X.copy()
    X[i, j] = v
    return X


def _memmap(a, tmp):
    path = tmp / f"mm{len(list(tmp.iterdir()))}.dat"
    a.tofile(path)
    return np.memmap(path, dtype=a.dtype, mode="r", shape=a.shape)


def _npload(a, tmp):
    path = tmp / f"np{len(list(tmp.iterdir()))}.npy"
    np.save(path, a)
    return np.load(path, mmap_mode="r")


def _readonly(a):
    a = a.copy()
    a.flags.writeable = False
    return a


def _every_other(a, axis):
    """A strided view holding the same numbers as `a`."""
    shape = list(a.shape)
    shape[axis] *= 2
    big = np.zeros(shape, a.dtype)
    idx = [slice(None)] * a.ndim
    idx[axis] = slice(None, None, 2)
    big[tuple(idx)] = a
    return big[tuple(idx)]


def _reversed(a):
    return a[::-1].copy()[::-1]


# (id, which argument is bad, make(X, y, tmp) -> (X, y), MLP/Trainer, MLPClassifier); the
# MLPClassifier entry is one expectation or {"fit": ..., "predict": ...}.
DATA_CASES = [
    ("NaN in X", "X", lambda X, y, t: (_put(X, 3, 1, nan), y),
     Err(ValueError, "{X} contains NaN or infinity"), Err(ValueError, "Input X contains NaN")),
    ("+inf in X", "X", lambda X, y, t: (_put(X, 0, 0, inf), y),
     Err(ValueError, "{X} contains NaN or infinity"),
     Err(ValueError, "Input X contains infinity")),
    ("-inf in X", "X", lambda X, y, t: (_put(X, 29, 3, -inf), y),
     Err(ValueError, "{X} contains NaN or infinity"),
     Err(ValueError, "Input X contains infinity")),
    ("X finite in float64, inf in float32 (1e39)", "X", lambda X, y, t: (_put(X, 2, 2, 1e39), y),
     Err(ValueError, "{X} contains NaN or infinity"), OK),
    ("empty X (0 samples)", "X", lambda X, y, t: (X[:0], y[:0]),
     Err(ValueError, "{X} is empty"), Err(ValueError, "Found array with 0 sample(s)")),
    ("X with 0 features", "X", lambda X, y, t: (X[:, :0], y),
     Err(ValueError, "{X} has 0 features"), Err(ValueError, "0 feature(s)")),
    ("1-D X", "X", lambda X, y, t: (X[0], y),
     Err(ValueError, "{X} must be 2-D"), Err(ValueError, "Expected 2D array")),
    ("3-D X", "X", lambda X, y, t: (X.reshape(30, 2, 2), y),
     Err(ValueError, "{X} must be 2-D"), Err(ValueError, "Found array with dim 3")),
    ("wrong number of features", "X", lambda X, y, t: (X[:, :3], y),
     Err(ValueError, "{X} has 3 features, the model expects 4"),
     {"fit": OK, "predict": Err(ValueError, "X has 3 features, but MLPClassifier is expecting 4")}),
    ("object array of numbers", "X", lambda X, y, t: (X.astype(object), y),
     Err(TypeError, "{X} must be numeric, got dtype object"), SAME),
    ("object array holding None", "X", lambda X, y, t: (_put(X.astype(object), 1, 1, None), y),
     Err(TypeError, "{X} must be numeric, got dtype object"),
     Err(ValueError, "Input X contains NaN")),
    ("strings of numbers", "X", lambda X, y, t: (X.astype(str), y),
     Err(TypeError, "{X} must be numeric, got dtype <U"), SAME),
    ("mixed types in a list (float, int, str)", "X",
     lambda X, y, t: ([[float(r[0]), 1, str(r[2]), r[3]] for r in X], y),
     Err(TypeError, "{X} must be numeric, got dtype <U"), OK),
    ("mixed dtypes in a structured array", "X",
     lambda X, y, t: (np.zeros(30, [("a", "f4"), ("b", "i4")]), y),
     Err(TypeError, "{X} must be numeric"), Err(TypeError, "Cannot cast array data")),
    ("ragged rows", "X", lambda X, y, t: ([list(X[0][:2])] + X[1:].tolist(), y),
     Err(TypeError, "{X} could not be read as a numeric array"),
     Err(ValueError, "inhomogeneous")),
    ("complex X", "X", lambda X, y, t: (X.astype(complex), y),
     Err(TypeError, "{X} must be numeric, got dtype complex128"),
     Err(ValueError, "Complex data not supported")),
    ("nested lists", "X", lambda X, y, t: (X.tolist(), y), SAME, SAME),
    ("float32 X", "X", lambda X, y, t: (X.astype(np.float32), y), SAME, SAME32),
    ("float16 X", "X", lambda X, y, t: (X.astype(np.float16), y), OK, OK),
    ("int X", "X", lambda X, y, t: ((X * 10).astype(np.int32), y), OK, OK),
    ("bool X", "X", lambda X, y, t: (X > 0, y), OK, OK),
    ("big-endian X", "X", lambda X, y, t: (X.astype(">f8"), y), SAME, SAME),
    ("read-only X", "X", lambda X, y, t: (_readonly(X), y), SAME, SAME),
    ("read-only float32 X (no copy made)", "X",
     lambda X, y, t: (_readonly(X.astype(np.float32)), y), SAME, SAME32),
    ("np.memmap X, mode 'r'", "X", lambda X, y, t: (_memmap(X.astype(np.float32), t), y),
     SAME, SAME32),
    ("np.load(mmap_mode='r') X", "X", lambda X, y, t: (_npload(X, t), y), SAME, SAME),
    ("Fortran-ordered X", "X", lambda X, y, t: (np.asfortranarray(X), y), SAME, SAME),
    ("strided rows X[::2]", "X", lambda X, y, t: (_every_other(X, 0), y), SAME, SAME),
    ("strided columns X[:, ::2]", "X", lambda X, y, t: (_every_other(X, 1), y), SAME, SAME),
    ("negative strides X[::-1]", "X", lambda X, y, t: (_reversed(X), y), SAME, SAME),
    ("len(y) != len(X)", "y", lambda X, y, t: (X, y[:-1]),
     Err(ValueError, "{y} has 29 labels but X has 30 samples"),
     Err(ValueError, "inconsistent numbers of samples")),
    ("label = n_classes", "y", lambda X, y, t: (X, np.where(np.arange(30) == 0, 3, y)),
     Err(ValueError, "{y} has labels outside [0, 3): min 0, max 3"), OK),
    ("negative label", "y", lambda X, y, t: (X, np.where(np.arange(30) == 0, -1, y)),
     Err(ValueError, "{y} has labels outside [0, 3): min -1, max 2"), OK),
    ("huge float label 1e20", "y", lambda X, y, t: (X, np.where(np.arange(30) == 0, 1e20, y)),
     Err(ValueError, "{y} has labels outside [0, 3): min 0.0, max 1e+20"),
     Err(ValueError, "Unknown label type: continuous")),
    ("non-integer float labels", "y", lambda X, y, t: (X, y + 0.5),
     Err(TypeError, "{y} must hold integer class labels"),
     Err(ValueError, "Unknown label type: continuous")),
    ("NaN label", "y", lambda X, y, t: (X, np.where(np.arange(30) == 0, nan, y)),
     Err(TypeError, "{y} must hold integer class labels"), Err(ValueError, "Input y contains NaN")),
    ("string labels", "y", lambda X, y, t: (X, np.array(["a", "b", "c"])[y]),
     Err(TypeError, "{y} must hold integer class labels, got dtype <U1"), OK),
    ("object array of int labels", "y", lambda X, y, t: (X, y.astype(object)),
     Err(TypeError, "{y} must hold integer class labels, got dtype object"),
     Err(ValueError, "Unknown label type: unknown")),
    ("2-D y of shape (n, 1)", "y", lambda X, y, t: (X, y[:, None]),
     Err(ValueError, "{y} must be 1-D"), SAME),
    ("0-d y", "y", lambda X, y, t: (X, np.array(1)),
     Err(ValueError, "{y} must be 1-D"),
     Err(TypeError, "Input should have at least 1 dimension")),
    ("whole-number float labels", "y", lambda X, y, t: (X, y.astype(float)), SAME, SAME),
    ("uint8 labels", "y", lambda X, y, t: (X, y.astype(np.uint8)), SAME, SAME),
    ("bool labels", "y", lambda X, y, t: (X, y > 0), OK, OK),
    ("list of labels", "y", lambda X, y, t: (X, y.tolist()), SAME, SAME),
    ("read-only y", "y", lambda X, y, t: (X, _readonly(y)), SAME, SAME),
    ("np.memmap y, mode 'r'", "y", lambda X, y, t: (X, _memmap(y, t)), SAME, SAME),
    ("strided y", "y", lambda X, y, t: (X, _every_other(y, 0)), SAME, SAME),
]


def clean_data():
    rng = np.random.default_rng(0)
    y = np.arange(30) % 3
    return rng.standard_normal((30, 4)) + y[:, None], y


def _model(backend):
    return MLP((4, 6, 3), seed=0, backend=backend)


def _fit(shuffle):
    def run(b, X, y):
        m = _model(b)
        Trainer(m, lr=0.05, epochs=2, batch_size=8, seed=0, shuffle=shuffle).fit(X, y)
        return [w.tobytes() for w in m.weights + m.biases]
    return run


def _fit_val(b, X, y):
    Xc, yc = clean_data()
    m = _model(b)
    h = Trainer(m, lr=0.05, epochs=2, batch_size=8, seed=0).fit(Xc, yc, X, y)
    return h.val_loss, h.val_acc


def _step(b, X, y):
    m = _model(b)
    return Trainer(m, lr=0.05).step(X, y), [w.tobytes() for w in m.weights]


def _loss_and_grads(b, X, y):
    loss, dW, db = _model(b).loss_and_grads(X, y, weight_decay=1e-3)
    return loss, [g.tobytes() for g in dW + db]


# entry point -> (call(backend, X, y) -> comparable result, name of X, name of y)
NATIVE = {
    "MLP.forward": (lambda b, X, y: _model(b).forward(X).tobytes(), "X", None),
    "MLP.predict": (lambda b, X, y: _model(b).predict(X).tobytes(), "X", None),
    "MLP.score": (lambda b, X, y: _model(b).score(X, y), "X", "y"),
    "MLP.loss_and_grads": (_loss_and_grads, "X", "y"),
    "Trainer.fit": (_fit(True), "X", "y"),
    "Trainer.fit(shuffle=False)": (_fit(False), "X", "y"),
    "Trainer.fit(X_val, y_val)": (_fit_val, "X_val", "y_val"),
    "Trainer.step": (_step, "X_batch", "y_batch"),
    "Trainer.evaluate": (lambda b, X, y: Trainer(_model(b)).evaluate(X, y), "X", "y"),
}


def _clf(backend):
    return MLPClassifier((6,), max_iter=3, learning_rate_init=0.05, random_state=0,
                         backend=backend)


def _clf_fit(b, X, y):
    clf = _clf(b).fit(X, y)
    return [c.tobytes() for c in clf.coefs_ + clf.intercepts_]


def _clf_predict(b, X, y):
    Xc, yc = clean_data()
    return _clf(b).fit(Xc, yc).predict_proba(X).tobytes()


SKLEARN = {"MLPClassifier.fit": (_clf_fit, "fit"),
           "MLPClassifier.predict": (_clf_predict, "predict")}


def _check(expect, call, clean_call, names):
    """clean_call(X_dtype): the entry point on the clean input (cast to X_dtype)."""
    if isinstance(expect, Err):
        with pytest.raises(expect.exc) as info:
            call()
        text = expect.text.format(**names)
        assert text in str(info.value), f"{info.value!r} does not say {text!r}"
    else:
        got = call()
        if expect in (SAME, SAME32):
            clean = clean_call(np.float32 if expect == SAME32 else None)
            assert got == clean, "same numbers in another form gave another result"


def _cases(entries, x_only):
    return [pytest.param(c, e, id=f"{c[0]}-{e}") for c in DATA_CASES for e in entries
            if not (x_only(e) and c[1] == "y")]


@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize("case, entry", _cases(NATIVE, lambda e: NATIVE[e][2] is None))
def test_native_entry_points(case, entry, tmp_path):
    _, _, make, expect, _ = case
    call, xname, yname = NATIVE[entry]
    Xc, yc = clean_data()
    X, y = make(Xc, yc, tmp_path)
    for b in BACKEND_NAMES:
        _check(expect, lambda: call(b, X, y), lambda dt: call(b, Xc, yc),
               dict(X=xname, y=yname))


@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize("case, entry", _cases(SKLEARN, lambda e: e.endswith("predict")))
def test_mlpclassifier_entry_points(case, entry, tmp_path):
    _, _, make, _, expect = case
    call, key = SKLEARN[entry]
    expect = expect[key] if isinstance(expect, dict) else expect
    Xc, yc = clean_data()
    X, y = make(Xc, yc, tmp_path)
    for b in BACKEND_NAMES:
        _check(expect, lambda: call(b, X, y),
               lambda dt: call(b, Xc if dt is None else Xc.astype(dt), yc), dict(X="X", y="y"))


# ---- hyper-parameters and layer sizes (values not already in test_trainer / test_model /
# test_estimator) ---------------------------------------------------------------------------

def _trainer(**kw):
    return Trainer(_model("numpy"), **kw)


def _fit_with(**kw):
    X, y = clean_data()
    return Trainer(_model("numpy"), epochs=1).fit(X, y, **kw)


def _clf_with(**kw):
    X, y = clean_data()
    fit_kw = {"sample_weight": kw.pop("sample_weight")} if "sample_weight" in kw else {}
    params = dict(hidden_layer_sizes=(4,), max_iter=2, random_state=0)
    return MLPClassifier(**{**params, **kw}).fit(X, y, **fit_kw)


def _param(name):
    return f"The '{name}' parameter"


# (entry, call, keyword arguments, expectation)
HYPER_CASES = [
    ("Trainer", _trainer, dict(lr=inf), Err(ValueError, "lr must be finite")),
    ("Trainer", _trainer, dict(lr=np.float32(nan)), Err(ValueError, "lr must be finite")),
    ("Trainer", _trainer, dict(lr=None), Err(TypeError, "lr must be a real number")),
    ("Trainer", _trainer, dict(lr=True), Err(TypeError, "lr must be a number, got a bool")),
    ("Trainer", _trainer, dict(weight_decay=nan), Err(ValueError, "weight_decay must be finite")),
    ("Trainer", _trainer, dict(momentum=nan), Err(ValueError, "momentum must be finite")),
    ("Trainer", _trainer, dict(momentum=inf), Err(ValueError, "momentum must be finite")),
    ("Trainer", _trainer, dict(batch_size=-5), Err(ValueError, "batch_size must be >= 1")),
    ("Trainer", _trainer, dict(batch_size=np.int64(0)), Err(ValueError, "batch_size must be >= 1")),
    ("Trainer", _trainer, dict(batch_size=nan), Err(TypeError, "batch_size must be an integer")),
    ("Trainer", _trainer, dict(batch_size=True), Err(TypeError, "batch_size must be a number")),
    ("Trainer", _trainer, dict(epochs=-1), Err(ValueError, "epochs must be >= 1")),
    ("Trainer", _trainer, dict(epochs=1.0), Err(TypeError, "epochs must be an integer")),
    ("Trainer", _trainer, dict(epochs=None), Err(TypeError, "epochs must be an integer")),
    ("Trainer", _trainer, dict(beta2=nan), Err(ValueError, "beta2 must be finite")),
    ("Trainer", _trainer, dict(eps=inf), Err(ValueError, "eps must be finite")),
    ("Trainer", _trainer, dict(eps=-1), Err(ValueError, "eps must be > 0")),
    ("Trainer", _trainer, dict(batch_size=np.int64(8), epochs=np.int32(2), lr=np.float32(0.1)),
     OK),
    ("Trainer.fit", lambda **kw: _trainer(**kw).fit(*clean_data()), dict(batch_size=10 ** 6),
     OK),
    ("Trainer.fit", _fit_with, dict(sample_weight=np.full(30, nan)),
     Err(ValueError, "sample_weight must be finite, non-negative")),
    ("Trainer.fit", _fit_with, dict(sample_weight=-np.ones(30)),
     Err(ValueError, "sample_weight must be finite, non-negative")),
    ("Trainer.fit", _fit_with, dict(sample_weight=np.zeros(30)),
     Err(ValueError, "with a positive sum")),
    ("Trainer.fit", _fit_with, dict(sample_weight=np.ones(29)),
     Err(ValueError, "sample_weight must be numeric of shape (30,)")),
    ("Trainer.fit", _fit_with, dict(sample_weight=np.ones(30, object)),
     Err(TypeError, "sample_weight must be numeric, got dtype object")),
    ("Trainer.fit", _fit_with, dict(X_val=clean_data()[0]),
     Err(ValueError, "give both X_val and y_val")),
    ("Trainer.fit", _fit_with, dict(y_val=clean_data()[1]),
     Err(ValueError, "give both X_val and y_val")),
    ("MLP.loss_and_grads", lambda **kw: _model("numpy").loss_and_grads(*clean_data(), **kw),
     dict(sample_weight=np.full(30, inf)), Err(ValueError, "sample_weight must be")),
    ("MLP.loss_and_grads", lambda **kw: _model("numpy").loss_and_grads(*clean_data(), **kw),
     dict(weight_decay=nan), Err(ValueError, "weight_decay must be finite")),
    ("MLP", MLP, dict(layer_sizes=(0, 3)), Err(ValueError, "layer_sizes entry must be >= 1")),
    ("MLP", MLP, dict(layer_sizes=(4, 0)), Err(ValueError, "layer_sizes entry must be >= 1")),
    ("MLP", MLP, dict(layer_sizes=(4, np.int64(0), 3)),
     Err(ValueError, "layer_sizes entry must be >= 1")),
    ("MLP", MLP, dict(layer_sizes=(4, True, 3)), Err(TypeError, "layer_sizes entry must be")),
    ("MLP", MLP, dict(layer_sizes=(4, nan)), Err(TypeError, "layer_sizes entry must be")),
    ("MLP", MLP, dict(layer_sizes="43"), Err(TypeError, "layer_sizes entry must be")),
    ("MLP", MLP, dict(layer_sizes=None), Err(ValueError, "layer_sizes needs at least 2")),
    ("MLP", MLP, dict(layer_sizes=(4, 3), dtype="int32"),
     Err(ValueError, "dtype must be float32 or float64")),
    ("MLP", MLP, dict(layer_sizes=(4, 3), backend=None), Err(TypeError, "backend must be")),
    ("MLP", MLP, dict(layer_sizes=(np.int64(4), np.uint8(3))), OK),
    ("MLPClassifier", _clf_with, dict(alpha=nan), Err(ValueError, _param("alpha"))),
    ("MLPClassifier", _clf_with, dict(alpha=inf), Err(ValueError, _param("alpha"))),
    ("MLPClassifier", _clf_with, dict(learning_rate_init=nan),
     Err(ValueError, _param("learning_rate_init"))),
    ("MLPClassifier", _clf_with, dict(learning_rate_init=inf),
     Err(ValueError, _param("learning_rate_init"))),
    ("MLPClassifier", _clf_with, dict(solver="sgd", momentum=nan),
     Err(ValueError, _param("momentum"))),
    ("MLPClassifier", _clf_with, dict(solver="sgd", momentum=-0.1),
     Err(ValueError, _param("momentum"))),
    ("MLPClassifier", _clf_with, dict(batch_size=-1), Err(ValueError, _param("batch_size"))),
    ("MLPClassifier", _clf_with, dict(batch_size=2.5), Err(ValueError, _param("batch_size"))),
    ("MLPClassifier", _clf_with, dict(max_iter=1.5), Err(ValueError, _param("max_iter"))),
    ("MLPClassifier", _clf_with, dict(tol=nan), Err(ValueError, _param("tol"))),
    ("MLPClassifier", _clf_with, dict(epsilon=nan), Err(ValueError, _param("epsilon"))),
    ("MLPClassifier", _clf_with, dict(epsilon=0.0), Err(ValueError, _param("epsilon"))),
    ("MLPClassifier", _clf_with, dict(beta_1=1.0), Err(ValueError, _param("beta_1"))),
    ("MLPClassifier", _clf_with, dict(beta_2=inf), Err(ValueError, _param("beta_2"))),
    ("MLPClassifier", _clf_with, dict(power_t=inf), Err(ValueError, _param("power_t"))),
    ("MLPClassifier", _clf_with, dict(validation_fraction=nan),
     Err(ValueError, _param("validation_fraction"))),
    ("MLPClassifier", _clf_with, dict(validation_fraction=1.0),
     Err(ValueError, _param("validation_fraction"))),
    ("MLPClassifier", _clf_with, dict(random_state=-1), Err(ValueError, _param("random_state"))),
    ("MLPClassifier", _clf_with, dict(hidden_layer_sizes=-3),
     Err(ValueError, _param("hidden_layer_sizes"))),
    ("MLPClassifier", _clf_with, dict(hidden_layer_sizes=(8.0,)),
     Err(ValueError, "hidden_layer_sizes must be positive integers")),
    ("MLPClassifier", _clf_with, dict(hidden_layer_sizes=(4, -1)),
     Err(ValueError, "hidden_layer_sizes must be positive integers")),
    ("MLPClassifier", _clf_with, dict(hidden_layer_sizes=()), OK),
    ("MLPClassifier", _clf_with, dict(batch_size=10 ** 6), OK),
    ("MLPClassifier", _clf_with, dict(class_weight={0: -1.0}),
     Err(ValueError, "class_weight must give finite, non-negative weights")),
    ("MLPClassifier", _clf_with, dict(class_weight={0: nan}),
     Err(ValueError, "class_weight must give finite, non-negative weights")),
    ("MLPClassifier", _clf_with, dict(class_weight={7: 1.0}),
     Err(ValueError, "are not in class_weight")),
    ("MLPClassifier.fit", _clf_with, dict(sample_weight=np.full(30, nan)),
     Err(ValueError, "Input sample_weight contains NaN")),
    ("MLPClassifier.fit", _clf_with, dict(sample_weight=np.full(30, inf)),
     Err(ValueError, "Input sample_weight contains infinity")),
    ("MLPClassifier.fit", _clf_with, dict(sample_weight=-np.ones(30)),
     Err(ValueError, "Negative values in data passed to `sample_weight`")),
    ("MLPClassifier.fit", _clf_with, dict(sample_weight=np.ones(29)),
     Err(ValueError, "sample_weight.shape == (29,), expected (30,)")),
    ("MLPClassifier.fit", _clf_with, dict(sample_weight=np.zeros(30)),
     Err(ValueError, "Sample weights must contain at least one non-zero number")),
]


def _hyper_id(c):
    return f"{c[0]}-" + ",".join(f"{k}={v!r}" for k, v in c[2].items())[:60]


@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize("case", HYPER_CASES, ids=[_hyper_id(c) for c in HYPER_CASES])
def test_hyperparameters(case):
    _, call, kw, expect = case
    _check(expect, lambda: call(**kw), None, {})


# ---- dataset loaders ----------------------------------------------------------------------

_IDX_CODES = {np.dtype(np.uint8): 0x08, np.dtype(np.int8): 0x09, np.dtype(np.float32): 0x0D}
_STEMS = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
          "t10k-labels-idx1-ubyte")


def _idx_folder(tmp, train_images=None, train_labels=None, test_images=None,
                test_labels=None):
    """Four IDX files (5 training and 3 test images of 4x4) with any of them replaced."""
    tmp.mkdir(parents=True, exist_ok=True)
    arrays = [np.zeros((5, 4, 4), np.uint8) if train_images is None else train_images,
              np.arange(5, dtype=np.uint8) % 3 if train_labels is None else train_labels,
              np.zeros((3, 4, 4), np.uint8) if test_images is None else test_images,
              np.arange(3, dtype=np.uint8) if test_labels is None else test_labels]
    for stem, a in zip(_STEMS, arrays):
        head = bytes([0, 0, _IDX_CODES[a.dtype], a.ndim]) + struct.pack(f">{a.ndim}I", *a.shape)
        (tmp / stem).write_bytes(head + a.astype(a.dtype.newbyteorder(">")).tobytes())
    return tmp


def _no_train(t):
    return _idx_folder(t, np.zeros((0, 4, 4), np.uint8), np.zeros(0, np.uint8))


# (loader, input, call(tmp folder), expectation)
DATASET_CASES = [
    ("load_idx_dir", "empty training set", lambda t: load_idx_dir(_no_train(t)),
     Err(ValueError, "train-images-idx3-ubyte': no data: images of shape (0, 4, 4)")),
    ("load_idx_dir", "empty test set",
     lambda t: load_idx_dir(_idx_folder(t, test_images=np.zeros((0, 4, 4), np.uint8),
                                        test_labels=np.zeros(0, np.uint8))),
     Err(ValueError, "t10k-images-idx3-ubyte': no data: images of shape (0, 4, 4)")),
    ("load_idx_dir", "images of 0 pixels",
     lambda t: load_idx_dir(_idx_folder(t, np.zeros((5, 0), np.uint8))),
     Err(ValueError, "no data: images of shape (5, 0)")),
    ("load_idx_dir", "1-D images", lambda t: load_idx_dir(_idx_folder(t, np.zeros(5, np.uint8))),
     Err(ValueError, "images must be unsigned bytes (IDX 0x08) of shape (n_images, ...)")),
    ("load_idx_dir", "2-D labels",
     lambda t: load_idx_dir(_idx_folder(t, train_labels=np.zeros((5, 1), np.uint8))),
     Err(ValueError, "labels must be 1-D integers")),
    ("load_idx_dir", "float labels",
     lambda t: load_idx_dir(_idx_folder(t, train_labels=np.zeros(5, np.float32))),
     Err(ValueError, "labels must be 1-D integers, got float32")),
    ("load_idx_dir", "negative labels (int8)",
     lambda t: load_idx_dir(_idx_folder(t, train_labels=-np.ones(5, np.int8))),
     Err(ValueError, "labels span [-1, -1]")),
    ("load_fashion_mnist", "label 10 of 10 classes",
     lambda t: load_fashion_mnist(_idx_folder(t, train_labels=np.full(5, 10, np.uint8))),
     Err(ValueError, "labels span [10, 10], expected [0, 9]")),
    ("load_idx_dir", "test images of another size",
     lambda t: load_idx_dir(_idx_folder(t, test_images=np.zeros((3, 5, 5), np.uint8))),
     Err(ValueError, "training images have 16 pixels, test images 25")),
    ("load_fashion_mnist", "root=123", lambda t: load_fashion_mnist(root=123),
     Err(TypeError, "root must be a path")),
    ("load_dataset", "name None", lambda t: load_dataset(None),
     Err(TypeError, "name_or_dir must be a path")),
    ("load_idx", "path None", lambda t: load_idx(None), Err(TypeError, "path must be a path")),
    ("load_idx", "a folder", lambda t: load_idx(t), Err(IsADirectoryError, "Is a directory")),
    ("load_digits", "test_size=0", lambda t: load_digits(test_size=0),
     Err(ValueError, "test_size must be a float in (0, 1) or an integer in [1, 1797)")),
    ("load_digits", "test_size=1.5", lambda t: load_digits(test_size=1.5),
     Err(ValueError, "test_size must be")),
    ("load_digits", "test_size=nan", lambda t: load_digits(test_size=nan),
     Err(ValueError, "test_size must be")),
    ("load_digits", "test_size='a'", lambda t: load_digits(test_size="a"),
     Err(TypeError, "test_size must be a number")),
    ("load_digits", "seed=-1", lambda t: load_digits(seed=-1),
     Err(ValueError, "seed must be in [0, 2**32)")),
    ("load_digits", "seed=1.5", lambda t: load_digits(seed=1.5),
     Err(TypeError, "seed must be an integer")),
    ("load_digits", "test_size=100, seed=None", lambda t: load_digits(test_size=100, seed=None),
     OK),
]


@pytest.mark.parametrize("case", DATASET_CASES, ids=[f"{c[0]}-{c[1]}" for c in DATASET_CASES])
def test_dataset_loaders(case, tmp_path):
    _, _, call, expect = case
    _check(expect, lambda: call(tmp_path), None, {})


# ---- command line ---------------------------------------------------------------------------

# (arguments; {tmp} is a fresh folder, {model}/{model10} a saved model of 64/10 features,
#  {tablemodel} one trained on a table; text in the one-line error).  All fail before any
#  training or prediction starts.
CLI_CASES = [
    (["train", "--epochs", "-1"], "argument --epochs: '-1' must be >= 1"),
    (["train", "--epochs", "1.5"], "argument --epochs: '1.5' is not an integer"),
    (["train", "--batch-size", "0"], "argument --batch-size: '0' must be >= 1"),
    (["train", "--lr", "0"], "argument --lr: '0' must be > 0"),
    (["train", "--lr", "inf"], "argument --lr: 'inf' must be a finite number"),
    (["train", "--lr", "-1"], "argument --lr: '-1' must be a finite number >= 0"),
    (["train", "--momentum", "1"], "argument --momentum: '1' must be in [0, 1)"),
    (["train", "--momentum", "nan"], "argument --momentum: 'nan' must be a finite number"),
    (["train", "--weight-decay", "-1"], "argument --weight-decay: '-1' must be a finite number"),
    (["train", "--weight-decay", "inf"], "argument --weight-decay: 'inf' must be a finite"),
    (["train", "--hidden", "-3"], "argument --hidden: '-3' must be >= 1"),
    (["train", "--hidden", "2.5"], "argument --hidden: '2.5' is not an integer"),
    (["train", "--hidden"], "argument --hidden: expected at least one argument"),
    (["train", "--validation-fraction", "1"], "--validation-fraction must be < 1"),
    (["train", "--validation-fraction", "nan"], "argument --validation-fraction: 'nan'"),
    (["train", "--lr-decay", "0"], "--lr-decay must be in (0, 1]"),
    (["train", "--dtype", "float16"], "argument --dtype: invalid choice: 'float16'"),
    (["train", "--backend", "gpu"], "argument --backend: invalid choice: 'gpu'"),
    (["train", "--seed", "-1"], "argument --seed: '-1' must be in [0, 2**32)"),
    (["train", "--seed", "abc"], "argument --seed: 'abc' is not an integer"),
    (["train", "--save", "{tmp}/no/such/m.npz"], "--save {tmp}/no/such/m.npz: folder"),
    (["train", "--save", "{tmp}"], "--save {tmp} is a directory"),
    (["train", "--plot", "{tmp}/no/such/p.png"], "--plot {tmp}/no/such/p.png: folder"),
    (["train", "--dataset", "{tmp}/empty"], "no data: images of shape (0, 4, 4)"),
    (["train", "--dataset", "{tmp}/corrupt"], "invalid IDX file"),
    (["predict", "--model", "{tmp}"], "Is a directory"),
    (["predict", "--model", "{model10}"], "the model expects 10 features"),
    (["predict", "--model", "{model}", "--out", "{tmp}/no/such/p.txt"],
     "--out {tmp}/no/such/p.txt: folder"),
    # the user's own tables ({tmp}/<name>.csv, written by cli_files)
    (["train", "--csv", "{tmp}/none.csv", "--target", "y"], "--csv {tmp}/none.csv: no such"),
    (["train", "--csv", "{tmp}/empty.csv", "--target", "y"], "{tmp}/empty.csv is empty"),
    (["train", "--csv", "{tmp}/blank.csv", "--target", "y"], "{tmp}/blank.csv is empty"),
    (["train", "--csv", "{tmp}/header.csv", "--target", "y"], "has a header but no rows"),
    (["train", "--csv", "{tmp}/good.csv"], "--csv needs --target COLUMN"),
    (["train", "--csv", "{tmp}/good.csv", "--target", "z"], "--target 'z': no such column"),
    (["train", "--csv", "{tmp}/good.csv", "--target", "y", "--id", "key"],
     "--id 'key': no such column"),
    (["train", "--csv", "{tmp}/good.csv", "--target", "y", "--drop", "e"],
     "--drop 'e': no such column"),
    (["train", "--csv", "{tmp}/text.csv", "--target", "y"],
     "feature column 'color' is not numeric (e.g. 'red')"),
    (["train", "--csv", "{tmp}/holes.csv", "--target", "y"],
     "feature column 'a' has 1 empty or non-finite values (first in row 2)"),
    (["train", "--csv", "{tmp}/mixed.csv", "--target", "y"],
     "column 'y' mixes numbers and text (row 1: '1', row 2: 'two')"),
    (["train", "--csv", "{tmp}/ragged.csv", "--target", "y"], "row 2 has 3 cells, the header 2"),
    (["train", "--csv", "{tmp}/text.csv", "--target", "color", "--task", "regress"],
     "--task regress needs a numeric target"),
    (["train", "--csv", "{tmp}/one.csv", "--target", "y"], "has a single class 7"),
    (["train", "--csv", "{tmp}/good.csv", "--target", "a", "--drop", "b", "y"],
     "no feature columns left"),
    (["train", "--npz", "{tmp}/xonly.npz"], "has no array 'y'"),
    (["train", "--dataset", "digits", "--csv", "{tmp}/good.csv"], "give --dataset or --csv"),
    (["train", "--csv", "{tmp}/good.csv", "--npz", "{tmp}/xonly.npz"], "not allowed with"),
    (["train", "--target", "y"], "--target, --id and --drop need table data"),
    (["train", "--task", "regress"], "--task needs table data"),
    (["predict", "--model", "{model}", "--csv", "{tmp}/good.csv"], "has no column description"),
    (["predict", "--model", "{tablemodel}", "--csv", "{tmp}/text.csv"],
     "feature 'b': no such column"),
]


CSV_FILES = {   # name -> text, for the table cases above
    "empty": "", "blank": "\n\n", "header": "a,b,y\n", "good": "a,b,y\n1,2,0\n3,4,1\n",
    "text": "a,color,y\n1,red,0\n2,blue,1\n", "holes": "a,b,y\n1,2,0\n,4,1\n",
    "mixed": "a,y\n1,1\n2,two\n", "ragged": "a,y\n1,0\n2,1,5\n", "one": "a,y\n1,7\n2,7\n"}


@pytest.fixture
def cli_files(tmp_path):
    """{tmp}: a folder; {tmp}/empty: IDX files with no training images; {tmp}/corrupt: a bad
    IDX file; {model} / {model10}: saved models of 64 / 10 features; {tmp}/<name>.csv the
    CSV_FILES, {tmp}/xonly.npz an array X and no y; {tablemodel} a model trained on a
    table of features a, b (its column description beside it)."""
    _no_train(tmp_path / "empty")
    _idx_folder(tmp_path / "corrupt")
    (tmp_path / "corrupt" / _STEMS[0]).write_bytes(b"\0\0\x08\x03junk")
    for name, text in CSV_FILES.items():
        (tmp_path / f"{name}.csv").write_text(text)
    np.savez(tmp_path / "xonly.npz", X=np.ones((3, 2)))
    table_model = str(MLP((2, 3)).save(tmp_path / "t.npz"))
    from fastmlp.tabular import save_columns
    save_columns(table_model, {"features": ["a", "b"], "target": "y", "task": "classify",
                               "classes": [0, 1, 2], "id": None})
    return dict(tmp=str(tmp_path), model=str(MLP((64, 10)).save(tmp_path / "m.npz")),
                model10=str(MLP((10, 3)).save(tmp_path / "m10.npz")), tablemodel=table_model)


@pytest.mark.parametrize("args, text", CLI_CASES, ids=[" ".join(c[0]) for c in CLI_CASES])
def test_cli(args, text, cli_files, capsys):
    argv = [a.format(**cli_files) for a in args] + ["--quiet"] * (args[0] == "train")
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse
        code = exc.code
    out, err = capsys.readouterr()
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("fastmlp: error:"), err
    assert text.format(**cli_files) in lines[0]
    assert "accuracy" not in out  # it failed before training or predicting


# ---- the tables in docs/robustness.md ------------------------------------------------------

def markdown_tables():
    """The tables of docs/robustness.md, generated from the cases above."""
    n_native = sum(1 for c in DATA_CASES for e in NATIVE if not (NATIVE[e][2] is None
                                                                 and c[1] == "y"))
    n_sk = sum(1 for c in DATA_CASES for e in SKLEARN if not (e.endswith("predict")
                                                              and c[1] == "y"))
    out = [f"### Data ({len(DATA_CASES)} inputs; {n_native} input x entry-point pairs on "
           f"MLP/Trainer and {n_sk} on MLPClassifier, each run with the "
           f"{len(BACKEND_NAMES)} backends)", "",
           "MLP/Trainer entry points: " + ", ".join(f"`{e}`" for e in NATIVE) +
           " (the message names the argument of each: `X`, `X_batch`, `X_val`, ...). "
           "*works, same result* means bit-identical to the clean input.", "",
           "| input | MLP / Trainer | MLPClassifier.fit | MLPClassifier.predict |",
           "|---|---|---|---|"]
    for name, kind, _, native, sk in DATA_CASES:
        fit, pred = (sk["fit"], sk["predict"]) if isinstance(sk, dict) else (sk, sk)
        pred = "(X only)" if kind == "y" else _describe(pred)
        out.append(f"| {name} | {_describe(native)} | {_describe(fit)} | {pred} |")
    out += ["", f"### Hyper-parameters and layer sizes ({len(HYPER_CASES)} cases)", "",
            "| entry point | arguments | behaviour |", "|---|---|---|"]
    for entry, _, kw, expect in HYPER_CASES:
        args = ", ".join(f"{k}={_short(v)}" for k, v in kw.items())
        out.append(f"| {entry} | `{args}` | {_describe(expect)} |")
    out += ["", f"### Compiled kernels, numba and cython ({len(KERNEL_CASES)} calls each, in a "
            "child process: tests/kernels/test_bad_calls.py)", "",
            "| case | call | behaviour |", "|---|---|---|"]
    for case_id, expr, exc, text in KERNEL_CASES:
        what = "works (result checked)" if exc == "ok" else f"{exc}: message contains `{text}`"
        out.append(f"| {case_id} | `{expr}` | {what} |")
    out += ["", f"### Dataset loaders ({len(DATASET_CASES)} cases)", "",
            "| loader | input | behaviour |", "|---|---|---|"]
    for loader, name, _, expect in DATASET_CASES:
        out.append(f"| {loader} | {name} | {_describe(expect)} |")
    out += ["", f"### Command line ({len(CLI_CASES)} cases; exit code 2, one line "
            "`fastmlp: error: ...` on stderr, before any training)", "",
            "| arguments | the error line contains |", "|---|---|"]
    for args, text in CLI_CASES:
        out.append(f"| `fastmlp {' '.join(args)}` | `{text}` |")
    return "\n".join(out) + "\n"


def _short(v):
    if isinstance(v, np.ndarray):
        return f"array({v.dtype}, {v.shape}, e.g. {v.flat[0]!r})"
    return repr(v)


def test_docs_table_is_current():
    doc = (REPO / "docs" / "robustness.md").read_text()
    assert markdown_tables() in doc, "regenerate: python tests/robustness/test_hardening_input.py"


if __name__ == "__main__":
    warnings.simplefilter("ignore")
    print(markdown_tables(), end="")
