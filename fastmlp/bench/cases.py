"""Benchmark cases shared by `fastmlp bench` (report.py) and the pytest-benchmark files.

Design: every builder returns a zero-argument closure over preallocated inputs, so the caller
(an interleaved timing loop or pytest-benchmark) only calls it; setup, first-call compilation
and workspace allocation happen in the builder.  The contenders of one training step are:

* `gemm_floor`: the step's five matrix products alone, into preallocated outputs, through the
  same BLAS as the compiled backends (or np.matmul): the bound for any step that calls BLAS;
* `fastmlp_step`: `Trainer._step(ws, X, y)` on a fixed batch already in the workspace (the
  hot loop of `fit`, no input validation), or the public `Trainer.step(X, y)`;
* `torch_step`, `sklearn_step`: the same 784-H-10 net and optimizer in PyTorch and
  scikit-learn (`MLPClassifier.partial_fit` on the same batch).

Optional peers raise `Unavailable` (with the reason) when not installed.  `check_step` holds
one step of any contender to the NumPy reference's step from the same parameters.
`step_parts` / `floor_parts` split an unfused step into its kernel calls and the floor into its
GEMMs (the report's breakdown, beside the fused step).  The peers (PyTorch, scikit-learn) and
`check_step` are in peers.py, time to accuracy in tta.py.
"""
import functools

import numpy as np

from ..backends import reference
from ..model import MLP
from ..trainer import Trainer

D, C = 784, 10
STEP_SHAPES = ((32, 128), (128, 256), (512, 1024))   # (N, H) pairs, with D=784, C=10
OPTIMIZERS = {"sgd": dict(optimizer="sgd", lr=0.01, momentum=0.9),
              "adam": dict(optimizer="adam", lr=1e-3)}
# Timed steps repeat one batch: at the recipe's lr the net memorises it, gradients head for
# float32's subnormals and the step slows (Adam N=32 H=128: 1.8x after 20k steps).  A step's
# cost does not depend on lr, so timed steps use this one (docs/benchmarks.md, Methodology).
STEP_LR = 1e-7
TOL_EPS = 64   # fastmlp vs reference: relative tolerance in units of the dtype's epsilon


class Unavailable(Exception):
    """A contender cannot run here; the message says why (e.g. a peer is not installed)."""


def need(module):
    """Import an optional peer ('torch', 'sklearn') or raise Unavailable."""
    try:
        return __import__(module)
    except ImportError as exc:
        raise Unavailable(f"{module} is not installed ({exc})") from None


def batch(n, d=D, c=C, dtype=np.float32, seed=0):
    """A random batch: X (n, d) uniform in [0, 1) of `dtype`, y (n,) int64 in [0, c)."""
    rng = np.random.default_rng(seed)
    return rng.random((n, d), dtype=np.float64).astype(dtype), rng.integers(0, c, n)


def step_flops(n, h, d=D, c=C):
    """Floating-point operations of the five GEMMs of one step of a d-h-c net on n rows."""
    return 4 * n * d * h + 6 * n * h * c


# --------------------------------------------------------------------------- one train step

@functools.lru_cache(maxsize=None)
def _numba_gemms():
    """Numba-compiled GEMM drivers: np.dot inside Numba calls scipy.linalg.cython_blas, the
    same OpenBLAS (and thread pool) as the numba and cython backends."""
    import numba

    @numba.njit(nogil=True, cache=True)
    def five(a1, b1, o1, a2, b2, o2, a3, b3, o3, a4, b4, o4, a5, b5, o5):
        np.dot(a1, b1, o1)
        np.dot(a2, b2, o2)
        np.dot(a3, b3, o3)
        np.dot(a4, b4, o4)
        np.dot(a5, b5, o5)

    @numba.njit(nogil=True, cache=True)
    def one(A, B, out):
        np.dot(A, B, out)
    return five, one


def _floor_products(n, h, d, c, dtype, seed):
    """{product: (A, B, out)} for the five GEMMs of a step, on random buffers."""
    rng = np.random.default_rng(seed)
    X = batch(n, d, c, dtype, seed)[0]
    W1, W2, dZ = (rng.standard_normal(s).astype(dtype) for s in ((d, h), (h, c), (n, c)))
    H, Z, dH, dW1, dW2 = (np.empty(s, dtype) for s in ((n, h), (n, c), (n, h), (d, h), (h, c)))
    return {"X·W1": (X, W1, H), "H·W2": (H, W2, Z), "Hᵀ·dZ": (H.T, dZ, dW2),
            "dZ·W2ᵀ": (dZ, W2.T, dH), "Xᵀ·dH": (X.T, dH, dW1)}


def gemm_floor(n, h, d=D, c=C, dtype=np.float32, blas="scipy", seed=0):
    """The step's five products X·W1, H·W2, Hᵀ·dZ, dZ·W2ᵀ, Xᵀ·dH, into preallocated outputs.

    Parameters
    ----------
    n, h, d, c : int, batch rows, hidden width, inputs, classes
    blas : "scipy" (default): one Numba-compiled call making the five np.dot calls, which go
        to scipy.linalg.cython_blas -- the BLAS library and thread pool the compiled backends
        use; "numpy": five np.matmul calls, into NumPy's own bundled OpenBLAS.

    Returns
    -------
    callable taking no argument; already called once.
    """
    prods = tuple(_floor_products(n, h, d, c, dtype, seed).values())
    if blas == "scipy":
        floor = functools.partial(_numba_gemms()[0], *(x for p in prods for x in p))
    elif blas == "numpy":
        def floor(mm=np.matmul):
            for a, b, out in prods:
                mm(a, b, out=out)
    else:
        raise ValueError(f"blas must be 'scipy' or 'numpy', got {blas!r}")
    floor()
    return floor


# The floor GEMMs inside each kernel call of a step (keys of floor_parts and step_parts).
GEMMS_IN = {"linear_forward 1": ("X·W1",), "linear_forward 2": ("H·W2",),
            "linear_backward 2": ("Hᵀ·dZ", "dZ·W2ᵀ"), "linear_backward 1": ("Xᵀ·dH",)}


def floor_parts(n, h, d=D, c=C, dtype=np.float32, seed=0):
    """The five floor GEMMs (scipy BLAS) as separate closures keyed by product, in step order."""
    one, prods = _numba_gemms()[1], _floor_products(n, h, d, c, dtype, seed)
    out = {k: functools.partial(one, *v) for k, v in prods.items()}
    for f in out.values():
        f()
    return out


class _Recorder:
    """Stands in for a backend's kernels: records each call (name, args) instead of making it,
    so `reference.forward/backward/update` give the calls of one step in order."""

    def __init__(self, raw):
        self.raw, self.calls = raw, []

    def __getattr__(self, name):
        def record(*args):
            self.calls.append((name, args))
            return args[0]   # activation_backward returns dH, which backward passes on
        return record


def step_parts(backend, opt, n, h, dtype=np.float32, seed=0, lr=STEP_LR):
    """The contract's kernel calls that make one step of a 784-h-10 net when composed (as the
    reference's `TrainStep` composes them: `reference.forward`, the loss, `backward`,
    `update`), in call order, as closures on one trainer's workspace and parameters; and that
    trainer's whole `_step` (its backend's fused `TrainStep`).

    Returns (parts, whole): calling every part in order is one unfused step without the
    Python around the calls."""
    tr, X, y = fastmlp_trainer(backend, opt, n, h, dtype=dtype, seed=seed, lr=lr)
    m, raw = tr.model, tr.model.backend.raw
    ws = tr._workspace(n)
    np.copyto(ws.X, X)
    np.copyto(ws.y, y)
    rec = _Recorder(raw)
    reference.forward(rec, m.weights, m.biases, ws.X, ws.acts)
    rec.softmax_xent_grad(ws.acts[-1], ws.y, ws.dZ, None)
    reference.backward(rec, m.weights, ws.X, ws.acts, ws.dZ, m.dweights, m.dbiases, ws.deltas)
    hyper = dict(momentum=0.9) if opt == "sgd" else {}
    reference.update(rec, m.weights + m.biases, m.dweights + m.dbiases, tr.get_state()[0],
                     m.n_layers, opt, lr, 2, **hyper)
    layer = {id(W): i + 1 for i, W in enumerate(m.weights)}
    pname = {id(p): f"{'W' if i < m.n_layers else 'b'}{i % m.n_layers + 1}"
             for i, p in enumerate(m.weights + m.biases)}
    parts = {}
    for name, args in rec.calls:
        if name.endswith("_update"):
            label = f"{name} {pname[id(args[0])]}"
        elif name.startswith("linear_"):
            label = f"{name} {layer[id(args[1] if name == 'linear_forward' else args[2])]}"
        else:
            label = name
        parts[label] = functools.partial(getattr(raw, name), *args)
    return parts, functools.partial(tr._step, ws, ws.X, ws.y)


def _config(opt, lr=None):
    cfg = dict(OPTIMIZERS[opt])
    if lr is not None:
        cfg["lr"] = lr
    return cfg


def fastmlp_trainer(backend, opt, n, h, d=D, c=C, dtype=np.float32, seed=0, lr=None,
                    activation="relu"):
    """(trainer, X, y) for a d-h-c MLP on `backend` with optimizer `opt` ('sgd' or 'adam'),
    after one public step (state, workspace and compiled kernels are ready)."""
    model = MLP((d, h, c), dtype=dtype, seed=seed, backend=backend, activation=activation)
    trainer = Trainer(model, batch_size=n, seed=seed, **_config(opt, lr))
    X, y = batch(n, d, c, dtype, seed)
    trainer.step(X, y)
    return trainer, X, y


def fastmlp_step(backend, opt, n, h, public=False, dtype=np.float32, seed=0, lr=STEP_LR,
                 activation="relu"):
    """One fastmlp optimizer step of a 784-h-10 net on a fixed batch of n rows.

    Parameters
    ----------
    backend : "numpy", "numba" or "cython"
    opt : "sgd" (momentum 0.9) or "adam"
    public : bool
        False: `trainer._step(ws, X, y)`, the batch already in the workspace as in `fit`'s
        loop, nothing validated.  True: the public `trainer.step(X, y)`, which validates.
    lr : float, STEP_LR by default (see its comment)
    activation : the hidden layer's activation

    Returns
    -------
    callable taking no argument (one step per call); one step has been taken.
    """
    trainer, X, y = fastmlp_trainer(backend, opt, n, h, dtype=dtype, seed=seed, lr=lr,
                                    activation=activation)
    if public:
        return functools.partial(trainer.step, X, y)
    ws = trainer._workspace(n)
    np.copyto(ws.X, X)
    np.copyto(ws.y, y)
    return functools.partial(trainer._step, ws, ws.X, ws.y)


# --------------------------------------------------------------------------- inference

def fastmlp_predict(backend, rows, h=256, d=D, c=C, seed=0):
    """`MLP.predict` on `rows` rows of a d-h-c net (weights from `seed`); returns labels."""
    model = MLP((d, h, c), seed=seed, backend=backend)
    X, _ = batch(rows, d, c, np.float32, seed)
    model.predict(X[:8])
    return functools.partial(model.predict, X)


def predict_flops(rows, h=256, d=D, c=C):
    return 2 * rows * (d * h + h * c)


# --------------------------------------------------------------------------- time to accuracy




# --------------------------------------------------------------------------- estimator overhead

ESTIMATOR_CASE = dict(hidden=100, batch_size=200, epochs=20, alpha=1e-4)   # sklearn's defaults


def estimator_vs_trainer(backend, dtype=np.float32, seed=0, **case):
    """The same training through `MLPClassifier.fit` and through `Trainer.fit`: digits (the
    1347 training rows of fastmlp.datasets), 64-100-10, Adam lr 1e-3, batch 200, 20 epochs,
    scikit-learn's alpha=1e-4 (the Trainer gets its per-batch value as a constant weight
    decay: every full batch has 200 rows).

    Returns {"MLPClassifier.fit": closure, "Trainer.fit": closure, "steps": steps per fit};
    each closure trains from the same start every call."""
    from ..datasets import load_digits
    from ..estimators import MLPClassifier
    cfg = dict(ESTIMATOR_CASE, **case)
    X, y = load_digits()[:2]
    X = np.ascontiguousarray(X, dtype)
    n, bs, epochs = X.shape[0], cfg["batch_size"], cfg["epochs"]
    clf = MLPClassifier((cfg["hidden"],), solver="adam", alpha=cfg["alpha"], batch_size=bs,
                        max_iter=epochs, tol=0.0, n_iter_no_change=np.inf, random_state=seed,
                        backend=backend, dtype=np.dtype(dtype).name)
    model = MLP((X.shape[1], cfg["hidden"], int(y.max()) + 1), dtype=dtype, seed=seed,
                backend=backend)
    start = [p.copy() for p in model.weights + model.biases]

    def estimator():
        import warnings
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")   # ConvergenceWarning: max_iter epochs, on purpose
            clf.fit(X, y)

    def trainer():
        for p, p0 in zip(model.weights + model.biases, start):
            np.copyto(p, p0)
        Trainer(model, optimizer="adam", lr=1e-3, batch_size=bs, epochs=epochs,
                weight_decay=0.5 * cfg["alpha"] / bs, seed=seed).fit(X, y)
    estimator()
    trainer()
    return {"MLPClassifier.fit": estimator, "Trainer.fit": trainer,
            "steps": epochs * -(-n // bs)}
