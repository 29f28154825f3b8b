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
COMPILED = ("cython", "numba")   # the compiled backends every group times
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


@functools.lru_cache(maxsize=None)
def _address_gemms():
    """A Numba-compiled driver making Fortran GEMM calls through a function address (as the
    numba fused step does): a floor for any provider of fastmlp.backends.blas."""
    import numba

    from ..backends.numba.train_step import _fcall, _ptr

    @numba.njit(nogil=True, cache=True)
    def calls(fn, chars, ints, scal, ptrs):
        # per call i: chars[i] = (ta, tb), ints[i] = (m, n, k, lda, ldb, ldc), ptrs[i] = (A,
        # B, C) addresses; scal = (alpha, beta)
        for i in range(ptrs.shape[0]):
            c, iv, s = chars.ctypes.data + 2 * i, ints.ctypes.data + 24 * i, scal.ctypes.data
            _fcall(fn, (_ptr(c), _ptr(c + 1), _ptr(iv), _ptr(iv + 4), _ptr(iv + 8), _ptr(s),
                        _ptr(ptrs[i, 0]), _ptr(iv + 12), _ptr(ptrs[i, 1]), _ptr(iv + 16),
                        _ptr(s + scal.itemsize), _ptr(ptrs[i, 2]), _ptr(iv + 20)))
    return calls


def _fortran_operand(a):
    """(op, leading dimension) of row-major 2-D `a` read as a column-major matrix aᵀ."""
    if a.flags.c_contiguous:
        return b"N", a.shape[1]
    if a.flags.f_contiguous:
        return b"T", a.shape[0]
    raise ValueError("a floor operand must be C- or F-contiguous")


def _provider_floor(prods, provider, dtype):
    """Closure making the row-major products C = A·B of `prods` as column-major Cᵀ = Bᵀ·Aᵀ
    through `provider`'s sgemm/dgemm address."""
    prods = list(prods)
    chars = np.empty((len(prods), 2), np.uint8)
    ints = np.empty((len(prods), 6), np.int32)
    ptrs = np.empty((len(prods), 3), np.int64)
    for i, (A, B, out) in enumerate(prods):
        (tb, ldb), (ta, lda) = _fortran_operand(B), _fortran_operand(A)
        chars[i] = (tb[0], ta[0])
        ints[i] = (out.shape[1], out.shape[0], A.shape[1], ldb, lda, out.shape[1])
        ptrs[i] = (B.ctypes.data, A.ctypes.data, out.ctypes.data)
    scal = np.array([1.0, 0.0], dtype)
    fn = provider.sgemm if np.dtype(dtype) == np.float32 else provider.dgemm
    keep = (prods, chars, ints, scal, ptrs)   # the closure owns every buffer it points at
    calls = _address_gemms()
    return functools.partial(lambda keep: calls(fn, *keep[1:]), keep)


FLOOR_LIBRARIES = ("scipy", "numpy", "openblas", "onednn")


def gemm_floor(n, h, d=D, c=C, dtype=np.float32, blas="scipy", seed=0):
    """The step's five products X·W1, H·W2, Hᵀ·dZ, dZ·W2ᵀ, Xᵀ·dH, into preallocated outputs.

    Parameters
    ----------
    n, h, d, c : int, batch rows, hidden width, inputs, classes
    blas : "scipy" (default): one Numba-compiled call making the five np.dot calls, which go
        to scipy.linalg.cython_blas (SciPy's bundled OpenBLAS and its thread pool); "numpy":
        five np.matmul calls, into NumPy's own bundled OpenBLAS; "openblas": five calls of
        the scipy-openblas32 wheel's sgemm by address (fastmlp.backends.blas, the library
        the fused steps call), from one Numba-compiled function.  Each library runs with its
        own thread count (OpenBLAS keeps small GEMMs on one thread itself); "onednn": five
        calls of oneDNN's dnnl_sgemm (float32 only, on its TBB threads) by address, when the
        onednn extra is installed.

    Returns
    -------
    callable taking no argument; already called once, and checked against np.matmul.
    """
    named = _floor_products(n, h, d, c, dtype, seed)
    prods = tuple(named.values())
    if blas == "scipy":
        floor = functools.partial(_numba_gemms()[0], *(x for p in prods for x in p))
    elif blas == "numpy":
        def floor(mm=np.matmul):
            for a, b, out in prods:
                mm(a, b, out=out)
    elif blas == "openblas":
        from ..backends.blas import get_provider
        try:
            provider = get_provider("openblas")
        except (ValueError, RuntimeError, OSError) as exc:
            raise Unavailable(f"no scipy-openblas32 provider: {exc}") from None
        floor = _provider_floor(prods, provider, dtype)
    elif blas == "onednn":
        from ..backends import onednn
        try:
            engine = onednn.load()
        except ImportError as exc:
            raise Unavailable(str(exc)) from None
        if np.dtype(dtype) != np.float32:
            raise Unavailable("oneDNN has no float64 GEMM")
        floor = _provider_floor(prods, engine, dtype)
    else:
        raise ValueError(f"blas must be one of {FLOOR_LIBRARIES}, got {blas!r}")
    floor()
    tol = 64 * np.finfo(dtype).eps
    for name, (a, b, out) in named.items():
        want = np.matmul(a.astype(np.float64), b.astype(np.float64))
        err = np.abs(out - want).max() / max(np.abs(want).max(), 1e-30)
        if not err <= tol * a.shape[1]:
            raise AssertionError(f"floor {blas} {name}: relative error {err:.2e}")
    return floor


def floor_libraries():
    """{floor blas name: 'library version (kernel, threads) path'} of each floor's library:
    threadpoolctl's view for SciPy's and NumPy's OpenBLAS, the provider's own for openblas."""
    out = {}
    try:
        from threadpoolctl import threadpool_info
        info = threadpool_info()
    except ImportError:
        info = []
    for name, marker in (("scipy", "scipy"), ("numpy", "numpy")):
        for p in info:
            path = p.get("filepath", "")
            if p.get("user_api") == "blas" and (f"{marker}.libs" in path
                                                 or f"/{marker}/" in path):
                out[name] = (f"{p.get('internal_api')} {p.get('version')} "
                             f"({p.get('architecture')} kernels, {p.get('num_threads')} "
                             f"threads) {path}")
                break
        else:
            out[name] = "not found by threadpoolctl"
    try:
        from ..backends.blas import get_provider
        out["openblas"] = get_provider("openblas").describe()
    except (ValueError, RuntimeError, OSError) as exc:
        out["openblas"] = f"unavailable: {exc}"
    from ..backends import onednn
    try:
        out["onednn"] = onednn.load().describe()
    except ImportError as exc:
        out["onednn"] = f"unavailable: {exc}"
    return out


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
    `update`), in call order, as closures on one trainer's workspace and parameters: calling
    every part in order is one unfused step without the Python around the calls."""
    tr, X, y = fastmlp_trainer(backend, opt, n, h, dtype=dtype, seed=seed, lr=lr)
    m, raw = tr.model, tr.model.backend.raw
    ws = _filled_workspace(tr, X, y)
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
    return parts


def _filled_workspace(trainer, X, y):
    """The trainer's workspace rows for the batch X, y, with both copied in (as fit's loop
    leaves them before a step)."""
    ws = trainer._workspace(X.shape[0])
    np.copyto(ws.X, X)
    np.copyto(ws.y, y)
    return ws


def _config(opt, lr=None):
    cfg = dict(OPTIMIZERS[opt])
    if lr is not None:
        cfg["lr"] = lr
    return cfg


def fastmlp_trainer(backend, opt, n, h, d=D, c=C, dtype=np.float32, seed=0, lr=None,
                    activation="relu", threads="auto", precision=None):
    """(trainer, X, y) for a d-h-c MLP on `backend` with optimizer `opt` ('sgd' or 'adam'),
    after one public step (state, workspace and compiled kernels are ready)."""
    model = MLP((d, h, c), dtype=dtype, seed=seed, backend=backend, activation=activation)
    trainer = Trainer(model, batch_size=n, seed=seed, threads=threads, precision=precision,
                      **_config(opt, lr))
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
    ws = _filled_workspace(trainer, X, y)
    return functools.partial(trainer._step, ws, ws.X, ws.y)


def fastmlp_steps(backend, opt, n, h, steps, threads="auto", dtype=np.float32, seed=0,
                  lr=STEP_LR, precision=None):
    """`steps` optimizer steps of a 784-h-10 net on a fixed batch, as `fit` runs them: the
    Trainer's thread policy steers the GEMM provider for the call (fastmlp.threads: the
    provider's pool at 1 thread, the step's large GEMMs on fastmlp's threads), so one call is
    a slice of an epoch; precision="bf16" takes the batch as bf16 bits, as `fit` gathers it.
    Returns a closure; one call has been made."""
    trainer, X, y = fastmlp_trainer(backend, opt, n, h, dtype=dtype, seed=seed, lr=lr,
                                    threads=threads, precision=precision)
    ws = _filled_workspace(trainer, X, y)
    one = functools.partial(trainer._step, ws, trainer.bf16_input(ws.X), ws.y)

    def run():
        with trainer._steered:
            for _ in range(steps):
                one()
    run()
    return run


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

ESTIMATOR_CASE = dict(hidden=100, batch_size=200, epochs=200, alpha=1e-4)   # sklearn's defaults


def estimator_vs_trainer(backend, dtype=np.float32, seed=0, **case):
    """The same training through `MLPClassifier.fit` and through `Trainer.fit`: digits (the
    1347 training rows of fastmlp.datasets), 64-100-10, Adam lr 1e-3, batch 200, 200 epochs
    (scikit-learn's max_iter: a fit's fixed validation cost, ~2.5 ms, is then ~1% of it),
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


# --------------------------------------------------------------------------- sparse input

SPARSE_CASE = dict(rows=20_000, features=10_000, density=0.005, classes=5, hidden=100,
                   epochs=2)


def sparse_problem(rows, features, density, classes, seed=0, dtype=np.float32):
    """A TF-IDF-like classification problem: a CSR X (rows, features) of non-negative
    entries at `density`, rows scaled to unit norm, labels from a planted linear model."""
    import scipy.sparse
    rng = np.random.default_rng(seed)
    X = scipy.sparse.random(rows, features, density=density, format="csr", dtype=np.float64,
                            random_state=seed)
    norms = np.sqrt(np.asarray(X.multiply(X).sum(axis=1)).ravel())
    X = scipy.sparse.diags(1 / np.maximum(norms, 1e-12)) @ X
    y = np.argmax(X @ rng.standard_normal((features, classes)), axis=1)
    return X.astype(dtype).tocsr(), y


def sparse_fits(backend, dtype=np.float32, seed=0, **case):
    """`fastmlp.MLPClassifier.fit` and scikit-learn's on the same sparse problem (SPARSE_CASE:
    20 000 x 10 000 at 0.5%, 100 hidden units, Adam, batch 200, `epochs` epochs, float32 X),
    each a closure that trains from scratch; {"fastmlp", "sklearn", "epochs", "nnz"}."""
    import warnings
    from ..estimators import MLPClassifier as Ours
    from .peers import need
    need("sklearn")
    from sklearn.neural_network import MLPClassifier as Theirs
    cfg = dict(SPARSE_CASE, **case)
    X, y = sparse_problem(cfg["rows"], cfg["features"], cfg["density"], cfg["classes"], seed,
                          dtype)
    kw = dict(hidden_layer_sizes=(cfg["hidden"],), max_iter=cfg["epochs"], tol=0.0,
              n_iter_no_change=np.inf, random_state=seed)
    ours, theirs = Ours(backend=backend, **kw), Theirs(**kw)

    def fit(est):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")   # ConvergenceWarning: max_iter epochs, on purpose
            est.fit(X, y)
    return {"fastmlp": lambda: fit(ours), "sklearn": lambda: fit(theirs),
            "epochs": cfg["epochs"], "nnz": X.nnz, "model": ours, "data": (X, y)}
