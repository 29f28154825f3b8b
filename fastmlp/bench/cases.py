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
GEMMs (the report's breakdown, beside the fused step).  `time_to_accuracy` trains one recipe with one contender and
returns wall time and test accuracy.
"""
import functools
import time
import warnings

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
            return args[0]   # relu_backward returns dH, which backward passes on
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


def fastmlp_trainer(backend, opt, n, h, d=D, c=C, dtype=np.float32, seed=0, lr=None):
    """(trainer, X, y) for a d-h-c MLP on `backend` with optimizer `opt` ('sgd' or 'adam'),
    after one public step (state, workspace and compiled kernels are ready)."""
    model = MLP((d, h, c), dtype=dtype, seed=seed, backend=backend)
    trainer = Trainer(model, batch_size=n, seed=seed, **_config(opt, lr))
    X, y = batch(n, d, c, dtype, seed)
    trainer.step(X, y)
    return trainer, X, y


def fastmlp_step(backend, opt, n, h, public=False, dtype=np.float32, seed=0, lr=STEP_LR):
    """One fastmlp optimizer step of a 784-h-10 net on a fixed batch of n rows.

    Parameters
    ----------
    backend : "numpy", "numba" or "cython"
    opt : "sgd" (momentum 0.9) or "adam"
    public : bool
        False: `trainer._step(ws, X, y)`, the batch already in the workspace as in `fit`'s
        loop, nothing validated.  True: the public `trainer.step(X, y)`, which validates.
    lr : float, STEP_LR by default (see its comment)

    Returns
    -------
    callable taking no argument (one step per call); one step has been taken.
    """
    trainer, X, y = fastmlp_trainer(backend, opt, n, h, dtype=dtype, seed=seed, lr=lr)
    if public:
        return functools.partial(trainer.step, X, y)
    ws = trainer._workspace(n)
    np.copyto(ws.X, X)
    np.copyto(ws.y, y)
    return functools.partial(trainer._step, ws, ws.X, ws.y)


def _torch_net(torch, d, h, c, init=None):
    net = torch.nn.Sequential(torch.nn.Linear(d, h), torch.nn.ReLU(), torch.nn.Linear(h, c))
    if init is not None:   # fastmlp's initial weights (W (fan_in, fan_out), b): same start
        with torch.no_grad():
            for layer, (W, b) in zip((net[0], net[2]), init):
                layer.weight.copy_(torch.from_numpy(np.ascontiguousarray(W.T)))
                layer.bias.copy_(torch.from_numpy(b))
    return net


def _torch_optimizer(torch, opt, params, lr=None):
    cfg = _config(opt, lr)
    if opt == "sgd":
        return torch.optim.SGD(params, lr=cfg["lr"], momentum=cfg["momentum"])
    return torch.optim.Adam(params, lr=cfg["lr"])


def torch_step(opt, n, h, d=D, c=C, seed=0, lr=STEP_LR):
    """One PyTorch CPU step (default threads): zero_grad(set_to_none), forward, backward, step."""
    torch = need("torch")
    torch.manual_seed(seed)
    net = _torch_net(torch, d, h, c)
    optim = _torch_optimizer(torch, opt, net.parameters(), lr)
    loss_fn = torch.nn.CrossEntropyLoss()
    Xn, yn = batch(n, d, c, np.float32, seed)
    X, y = torch.from_numpy(Xn), torch.from_numpy(yn)

    def step():
        optim.zero_grad(set_to_none=True)
        loss = loss_fn(net(X), y)
        loss.backward()
        optim.step()
    step()
    return step


def _sklearn_mlp(opt, h, batch_size, max_iter=1, seed=0, lr=None):
    need("sklearn")
    from sklearn.neural_network import MLPClassifier
    cfg = _config(opt, lr)
    extra = dict(momentum=cfg["momentum"], nesterovs_momentum=False) if opt == "sgd" else {}
    return MLPClassifier(hidden_layer_sizes=(h,), solver=opt, learning_rate_init=cfg["lr"],
                         alpha=0.0, batch_size=batch_size, max_iter=max_iter, tol=0.0,
                         n_iter_no_change=max_iter + 1, random_state=seed, **extra)


def sklearn_step(opt, n, h, d=D, c=C, seed=0, lr=STEP_LR):
    """One scikit-learn step: `MLPClassifier.partial_fit` on the batch (batch_size=n, no
    shuffle, alpha=0), which includes scikit-learn's own input validation."""
    clf = _sklearn_mlp(opt, h, n, seed=seed, lr=lr)
    clf.set_params(shuffle=False)
    X, y = batch(n, d, c, np.float32, seed)
    classes = np.arange(c)
    clf.partial_fit(X, y, classes=classes)
    return functools.partial(clf.partial_fit, X, y)


def _sklearn_from(opt, h, n, init):
    """An MLPClassifier set up for one partial_fit step from parameters `init`."""
    clf = _sklearn_mlp(opt, h, n)
    clf.set_params(shuffle=False)
    X, y = batch(n, init[0][0].shape[0], init[-1][0].shape[1], init[0][0].dtype, seed=1)
    clf.partial_fit(X, y, classes=np.arange(init[-1][0].shape[1]))
    del clf._optimizer   # the next partial_fit starts a fresh optimizer, as at step 1
    clf.coefs_ = [W.copy() for W, _ in init]
    clf.intercepts_ = [b.copy() for _, b in init]
    return clf


def _params(model):
    return [p for pair in zip(model.weights, model.biases) for p in pair]   # W1 b1 W2 b2


def check_step(contender, opt, n, h, seed=0):
    """Hold one step of `contender` to one step of the NumPy reference backend, from the same
    parameters on the same batch, at the recipe's lr.

    Parameters
    ----------
    contender : a fastmlp backend name (rtol = TOL_EPS·eps), "torch" or "sklearn" (rtol 1e-4:
        other summation orders); atol = rtol·max|W|.  Adam's first step moves a weight by
        lr·g/(|g| + eps), about ±lr whatever |g|, so where g is rounding noise two correct
        implementations differ: for Adam 99% of entries must agree within rtol·|W| + lr/100
        and all within 2·lr.  scikit-learn's Adam adds eps before the bias correction; it is
        held to that formula applied to the reference's gradients.

    Raises
    ------
    AssertionError on a mismatch; Unavailable when a peer is not installed.
    """
    ref, X, y = fastmlp_trainer("numpy", opt, n, h, seed=seed)   # has taken the step
    init = MLP((D, h, C), seed=seed, backend="numpy")
    init = list(zip(init.weights, init.biases))
    want, rtol = _params(ref.model), 1e-4
    if contender == "torch":
        torch = need("torch")
        net = _torch_net(torch, D, h, C, init=init)
        optim = _torch_optimizer(torch, opt, net.parameters())
        torch.nn.CrossEntropyLoss()(net(torch.from_numpy(X)), torch.from_numpy(y)).backward()
        optim.step()
        got = [p.detach().numpy().T for p in net.parameters()]
    elif contender == "sklearn":
        clf = _sklearn_from(opt, h, n, init)
        clf.partial_fit(X, y)
        got = [p for pair in zip(clf.coefs_, clf.intercepts_) for p in pair]
        if opt == "adam":   # lr·sqrt(1-b2)/(1-b1) · (1-b1) g / (sqrt((1-b2) g²) + eps)
            grads = [g for pair in zip(ref.model.dweights, ref.model.dbiases) for g in pair]
            lr_t = OPTIMIZERS[opt]["lr"] * np.sqrt(1 - 0.999) / (1 - 0.9)
            want = [p0 - lr_t * 0.1 * g / (np.sqrt(0.001) * np.abs(g) + 1e-8)
                    for p0, g in zip((p for pair in init for p in pair), grads)]
    else:
        got = _params(fastmlp_trainer(contender, opt, n, h, seed=seed)[0].model)
        rtol = TOL_EPS * float(np.finfo(np.float32).eps)
    what = f"{contender} {opt} step differs from the NumPy reference's"
    if opt == "sgd":
        for name, g, w in zip(("W1", "b1", "W2", "b2"), got, want):
            np.testing.assert_allclose(g, w, rtol=rtol, atol=rtol * float(np.max(np.abs(w))),
                                       err_msg=f"{what}: {name}")
        return
    lr = OPTIMIZERS[opt]["lr"]
    diff = np.concatenate([np.abs(g - w).ravel() for g, w in zip(got, want)])
    bound = np.concatenate([(rtol * np.abs(w) + lr / 100).ravel() for w in want])
    share, worst = float(np.mean(diff <= bound)), float(diff.max())
    assert share >= 0.99 and worst <= 2 * lr, \
        f"{what}: {share:.2%} of entries agree, largest difference {worst:.3g}"


# --------------------------------------------------------------------------- inference

def fastmlp_predict(backend, rows, h=256, d=D, c=C, seed=0):
    """`MLP.predict` on `rows` rows of a d-h-c net (weights from `seed`); returns labels."""
    model = MLP((d, h, c), seed=seed, backend=backend)
    X, _ = batch(rows, d, c, np.float32, seed)
    model.predict(X[:8])
    return functools.partial(model.predict, X)


def torch_predict(rows, h=256, d=D, c=C, seed=0):
    """PyTorch argmax of the logits under torch.inference_mode(), same weights and rows as
    `fastmlp_predict(..., seed)`; returns labels as a tensor."""
    torch = need("torch")
    init = MLP((d, h, c), seed=seed, backend="numpy")
    net = _torch_net(torch, d, h, c, init=list(zip(init.weights, init.biases))).eval()
    X = torch.from_numpy(batch(rows, d, c, np.float32, seed)[0])

    def predict():
        with torch.inference_mode():
            return net(X).argmax(dim=1)
    predict()
    return predict


def predict_flops(rows, h=256, d=D, c=C):
    return 2 * rows * (d * h + h * c)


# --------------------------------------------------------------------------- time to accuracy

@functools.lru_cache(maxsize=None)
def dataset(name):
    """(X_train, y_train, X_test, y_test) of 'digits' or 'fashion-mnist', cached; raises
    Unavailable when Fashion-MNIST is not installed."""
    from .. import datasets
    if name == "digits":
        return datasets.load_digits()
    try:
        return datasets.load_fashion_mnist()
    except FileNotFoundError as exc:
        raise Unavailable(" ".join(str(exc).split())) from None


RECIPE = dict(hidden=256, lr=1e-3, batch_size=128)   # Adam, as in the issue
TTA_EPOCHS = {"fashion-mnist": 10, "digits": 30}


def time_to_accuracy(contender, data, epochs, seed=0):
    """Train a D-256-10 net with Adam (lr 1e-3, batch 128) and measure it.

    Parameters
    ----------
    contender : a fastmlp backend name, "torch" or "sklearn".  PyTorch starts from fastmlp's
        initial weights for `seed`; scikit-learn uses its own (Glorot) initialisation.
    data : (X_train (n, D) float32, y_train (n,) int64, X_test, y_test)
    epochs : int

    Returns
    -------
    {"seconds": training wall time, "accuracy": test accuracy}
    """
    Xtr, ytr, Xte, yte = data
    sizes = (Xtr.shape[1], RECIPE["hidden"], int(ytr.max()) + 1)
    if contender == "torch":
        return _torch_tta(data, sizes, epochs, seed)
    if contender == "sklearn":
        clf = _sklearn_mlp("adam", RECIPE["hidden"], RECIPE["batch_size"], epochs, seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")   # ConvergenceWarning after max_iter epochs
            t0 = time.perf_counter()
            clf.fit(Xtr, ytr)
            seconds = time.perf_counter() - t0
        return {"seconds": seconds, "accuracy": float(clf.score(Xte, yte))}
    model = MLP(sizes, seed=seed, backend=contender)
    trainer = Trainer(model, optimizer="adam", lr=RECIPE["lr"],
                      batch_size=RECIPE["batch_size"], epochs=epochs, seed=seed)
    t0 = time.perf_counter()
    trainer.fit(Xtr, ytr)
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "accuracy": model.score(Xte, yte)}


def _torch_tta(data, sizes, epochs, seed):
    torch = need("torch")
    Xtr, ytr, Xte, yte = data
    torch.manual_seed(seed)
    init = MLP(sizes, seed=seed, backend="numpy")
    net = _torch_net(torch, *sizes, init=list(zip(init.weights, init.biases)))
    optim = _torch_optimizer(torch, "adam", net.parameters())
    loss_fn = torch.nn.CrossEntropyLoss()
    X, y = torch.from_numpy(Xtr), torch.from_numpy(ytr)
    gen = torch.Generator().manual_seed(seed)
    n, bs = X.shape[0], RECIPE["batch_size"]
    t0 = time.perf_counter()
    for _ in range(epochs):
        perm = torch.randperm(n, generator=gen)
        for s in range(0, n, bs):
            idx = perm[s:s + bs]
            optim.zero_grad(set_to_none=True)
            loss_fn(net(X[idx]), y[idx]).backward()
            optim.step()
    seconds = time.perf_counter() - t0
    with torch.inference_mode():
        pred = net(torch.from_numpy(Xte)).argmax(dim=1).numpy()
    return {"seconds": seconds, "accuracy": float(np.mean(pred == yte))}
