"""Every kernel of every compiled backend against the NumPy reference (float32 and float64)."""
import re

import numpy as np
import pytest

import fastmlp
from fastmlp.backends import reference

from kernel_helper import (assert_close, check_against_reference, train_step_arrays,
                           train_steps)

# (N, D, H, C): N=1, H=1, C=1 and C=2, odd sizes, and the size of a real MNIST step
SHAPES = [(1, 3, 2, 2), (2, 4, 1, 1), (7, 13, 5, 3), (5, 6, 3, 2), (33, 17, 9, 1),
          (256, 784, 512, 10)]
SHAPE_IDS = ["N1", "H1C1", "odd", "C2", "C1", "large"]


def rand(rng, shape, dtype, scale=1.0):
    return (scale * rng.standard_normal(shape)).astype(dtype)


def test_all_backends_available():
    assert fastmlp.available_backends() == ("numpy", "numba", "cython")
    assert fastmlp.get_backend("auto").name == "cython"
    for name in ("numpy", "numba", "cython"):
        assert fastmlp.get_backend(name).name == name


def test_unknown_backend_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown backend 'cuda'"):
        fastmlp.get_backend("cuda")


@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
@pytest.mark.parametrize("relu", [False, True])
def test_linear_forward(compiled_backend, dtype, shape, relu):
    n, d, h, _ = shape
    rng = np.random.default_rng(1)
    args = [rand(rng, (n, d), dtype), rand(rng, (d, h), dtype), rand(rng, (h,), dtype),
            np.full((n, h), np.nan, dtype)]
    check_against_reference(compiled_backend, "linear_forward", args, {"relu": relu},
                            outputs=[3], returns=3)


@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
@pytest.mark.parametrize("with_dx", [False, True])
def test_linear_backward(compiled_backend, dtype, shape, with_dx):
    n, d, h, _ = shape
    rng = np.random.default_rng(2)
    args = [rand(rng, (n, h), dtype), rand(rng, (n, d), dtype), rand(rng, (d, h), dtype),
            np.full((d, h), np.nan, dtype), np.full((h,), np.nan, dtype)]
    outputs = [3, 4]
    if with_dx:
        args.append(np.full((n, d), np.nan, dtype))
        outputs.append(5)
    check_against_reference(compiled_backend, "linear_backward", args, outputs=outputs,
                            returns=3)


@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
def test_relu_backward(compiled_backend, dtype, shape):
    n, _, h, _ = shape
    rng = np.random.default_rng(3)
    H = np.maximum(rand(rng, (n, h), dtype), 0)
    H.flat[::3] = 0  # exact zeros are "off"
    args = [rand(rng, (n, h), dtype), H]
    check_against_reference(compiled_backend, "relu_backward", args, outputs=[0], returns=0)


@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
@pytest.mark.parametrize("weighted", [False, True])
def test_softmax_xent_grad(compiled_backend, dtype, shape, weighted):
    n, _, _, c = shape
    rng = np.random.default_rng(4)
    args = [rand(rng, (n, c), dtype, 3.0), rng.integers(0, c, n), np.full((n, c), np.nan, dtype)]
    kw = {"sample_weight": rng.uniform(0.1, 2.0, n).astype(dtype)} if weighted else {}
    check_against_reference(compiled_backend, "softmax_xent_grad", args, kw, outputs=[2],
                            returns="float")


@pytest.mark.parametrize("param_shape", [(1,), (7,), (13, 5), (784, 256)])
@pytest.mark.parametrize("mode", ["plain", "momentum", "nesterov"])
@pytest.mark.parametrize("weight_decay", [0.0, 1e-3])
def test_sgd_update(compiled_backend, dtype, param_shape, mode, weight_decay):
    rng = np.random.default_rng(5)
    W, dW = rand(rng, param_shape, dtype), rand(rng, param_shape, dtype)
    kw = {"weight_decay": weight_decay}
    outputs = [0]
    if mode != "plain":
        kw.update(velocity=rand(rng, param_shape, dtype), momentum=0.9,
                  nesterov=mode == "nesterov")
        outputs.append("velocity")
    check_against_reference(compiled_backend, "sgd_update", [W, dW, 0.05], kw,
                            outputs=outputs, returns=0)


@pytest.mark.parametrize("param_shape", [(1,), (7,), (13, 5), (784, 256)])
@pytest.mark.parametrize("step", [1, 2, 1000])
@pytest.mark.parametrize("weight_decay", [0.0, 1e-3])
def test_adam_update(compiled_backend, dtype, param_shape, step, weight_decay):
    rng = np.random.default_rng(6)
    W, dW = rand(rng, param_shape, dtype), rand(rng, param_shape, dtype)
    m, v = rand(rng, param_shape, dtype, 0.1), np.abs(rand(rng, param_shape, dtype, 0.1))
    check_against_reference(compiled_backend, "adam_update", [W, dW, m, v, step, 1e-3],
                            {"weight_decay": weight_decay}, outputs=[0, 2, 3], returns=0)


# --- the whole training step (TrainStep) ------------------------------------------------------

# (layer sizes, workspace rows, batch rows): one layer, one class, a hidden width of 1, odd
# sizes over 3 layers, a batch of 1 and a last batch smaller than the workspace, MNIST-sized
STEP_NETS = [((3, 2), 4, 4), ((5, 1, 1), 3, 1), ((7, 13, 5, 3), 9, 9), ((7, 13, 5, 3), 9, 4),
             ((6, 4, 2), 1, 1), ((784, 256, 10), 128, 100)]
STEP_NET_IDS = ["1layer", "H1C1", "3layers", "partial", "N1", "mnist"]
STEP_OPTS = {"sgd": ("sgd", {}), "sgd-wd": ("sgd", {"weight_decay": 1e-2}),
             "momentum": ("sgd", {"momentum": 0.9}),
             "momentum-wd": ("sgd", {"momentum": 0.9, "weight_decay": 1e-2}),
             "nesterov-wd": ("sgd", {"momentum": 0.9, "nesterov": True, "weight_decay": 1e-2}),
             "adam": ("adam", {}), "adam-wd": ("adam", {"weight_decay": 1e-2, "beta1": 0.8})}


@pytest.mark.parametrize("net", STEP_NETS, ids=STEP_NET_IDS)
@pytest.mark.parametrize("opt", list(STEP_OPTS))
@pytest.mark.parametrize("weighted", [False, True], ids=["", "weighted"])
def test_train_step(compiled_backend, dtype, net, opt, weighted):
    """Three steps of the fused TrainStep = the reference's kernels composed: losses,
    parameters and optimizer state."""
    sizes, n_max, m = net
    optimizer, hyper = STEP_OPTS[opt]
    rng = np.random.default_rng(8)
    arrays, outputs = train_step_arrays(rng, sizes, n_max, dtype, optimizer,
                                        hyper.get("momentum", 0))
    X, y = rand(rng, (m, sizes[0]), dtype), rng.integers(0, sizes[-1], m)
    sw = rng.uniform(0.1, 2.0, m).astype(dtype) if weighted else None
    kw = dict(n_layers=len(sizes) - 1, optimizer=optimizer, hyper=hyper, lr=0.05, steps=3)
    check_against_reference(compiled_backend, train_steps, [X, y, sw] + arrays, kw,
                            outputs=[3 + k for k in outputs], returns="values")


def _step_args(optimizer="sgd", momentum=0.9):
    rng = np.random.default_rng(9)
    arrays, _ = train_step_arrays(rng, (5, 4, 3), 6, np.float32, optimizer, momentum)
    W, b, dW, db = ([arrays[2 * k], arrays[2 * k + 1]] for k in range(4))
    acts, deltas, dZ, state = arrays[8:10], [None, arrays[10]], arrays[11], arrays[12:]
    if optimizer == "adam":
        state = [tuple(state[i:i + 2]) for i in range(0, len(state), 2)]
    return [W, b, dW, db, acts, deltas, dZ, state, optimizer], {"momentum": momentum}


def _read_only(a):
    a = a.copy()
    a.flags.writeable = False
    return a


# (what, how to spoil the TrainStep arguments, exception, text in the message)
BAD_STEPS = [
    ("float64 bias", lambda a, k: a[1].__setitem__(0, a[1][0].astype(np.float64)), TypeError,
     "biases[0]"),
    ("acts shape", lambda a, k: a[4].__setitem__(0, np.zeros((6, 5), np.float32)), ValueError,
     "acts[0]"),
    ("strided delta", lambda a, k: a[5].__setitem__(1, np.zeros((6, 8), np.float32)[:, ::2]),
     ValueError, "deltas[1]"),
    ("read-only weight", lambda a, k: a[0].__setitem__(1, _read_only(a[0][1])), ValueError,
     "weights[1]"),
    ("read-only velocity", lambda a, k: a[7].__setitem__(0, _read_only(a[7][0])), ValueError,
     "state[0]"),
    ("missing state", lambda a, k: a[7].pop(), ValueError, "state"),
    ("layers do not chain", lambda a, k: a[0].__setitem__(1, np.zeros((3, 3), np.float32)),
     ValueError, "weights[1]"),
    ("unknown optimizer", lambda a, k: a.__setitem__(8, "rmsprop"), ValueError, "rmsprop"),
]


@pytest.mark.parametrize("what, spoil, exc, text", BAD_STEPS, ids=[b[0] for b in BAD_STEPS])
def test_train_step_rejects_bad_arrays(compiled_backend, what, spoil, exc, text):
    args, kw = _step_args()
    spoil(args, kw)
    with pytest.raises(exc, match=re.escape(text)):
        compiled_backend.raw.TrainStep(*args, **kw)


def test_train_step_adam_state_must_be_pairs(compiled_backend):
    args, kw = _step_args("adam", 0.0)
    args[7][0] = args[7][0][0]
    with pytest.raises(ValueError, match=re.escape("state[0]")):
        compiled_backend.raw.TrainStep(*args, **kw)


@pytest.mark.parametrize("rows, cols, sw_rows, text", [
    (7, 5, None, "batch of 7 rows"), (3, 4, None, "X has shape"), (3, 5, 2, "sample_weight")])
def test_train_step_run_checks_the_batch(compiled_backend, rows, cols, sw_rows, text):
    args, kw = _step_args()
    step = compiled_backend.raw.TrainStep(*args, **kw)
    X, y = np.zeros((rows, cols), np.float32), np.zeros(rows, np.int64)
    sw = None if sw_rows is None else np.ones(sw_rows, np.float32)
    before = [p.copy() for p in args[0] + args[1]]
    with pytest.raises(ValueError, match=text):
        step.run(X, y, sw, 0.1, 1)
    assert all(np.array_equal(p, q) for p, q in zip(args[0] + args[1], before))


@pytest.mark.parametrize("X_dt, y_dt, sw_dt", [
    (np.float64, np.int64, None), (np.float32, np.int32, None), (np.float32, np.float32, None),
    (np.float32, np.int64, np.float64)], ids=["X float64", "y int32", "y float", "sw float64"])
def test_train_step_run_checks_the_batch_dtypes(compiled_backend, X_dt, y_dt, sw_dt):
    # the float32 step reads X, y and sample_weight through raw pointers: a wrong dtype must
    # be refused (Cython: its typed memoryviews' ValueError; Numba: TypeError), not misread
    args, kw = _step_args()
    step = compiled_backend.raw.TrainStep(*args, **kw)
    X, y = np.zeros((3, 5), X_dt), np.zeros(3, y_dt)
    sw = None if sw_dt is None else np.ones(3, sw_dt)
    before = [p.copy() for p in args[0] + args[1]]
    with pytest.raises((TypeError, ValueError)):
        step.run(X, y, sw, 0.1, 1)
    assert all(np.array_equal(p, q) for p, q in zip(args[0] + args[1], before))


@pytest.mark.parametrize("name", ["numpy", "numba", "cython"])
def test_train_step_non_finite_loss_changes_nothing(name):
    args, kw = _step_args()
    args[0][0][0, 0] = np.inf
    step = fastmlp.get_backend(name).raw.TrainStep(*args, **kw)
    before = [p.copy() for p in args[0] + args[1] + args[7]]
    with np.errstate(all="ignore"):
        loss = step.run(np.ones((4, 5), np.float32), np.zeros(4, np.int64), None, 0.1, 1)
    assert not np.isfinite(loss)
    after = args[0] + args[1] + args[7]
    assert all(np.array_equal(p, q, equal_nan=True) for p, q in zip(after, before))


def test_read_only_inputs_work(compiled_backend, dtype):
    rng = np.random.default_rng(7)
    X, W, b = rand(rng, (6, 5), dtype), rand(rng, (5, 4), dtype), rand(rng, (4,), dtype)
    for a in (X, W, b):
        a.flags.writeable = False
    out = np.empty((6, 4), dtype)
    compiled_backend.linear_forward(X, W, b, out, relu=True)
    assert_close(out, np.maximum(X @ W + b, 0), dtype)


# --- softmax cross-entropy: extremes -------------------------------------------------------

def _all_backends():
    return [fastmlp.get_backend(n) for n in ("numpy", "numba", "cython")]


@pytest.mark.parametrize("backend", ["numpy", "numba", "cython"])
def test_softmax_huge_logits_are_finite(backend, dtype):
    be = fastmlp.get_backend(backend)
    Z = np.array([[1e4, -1e4, 0.0], [-1e4, -1e4, -1e4], [1e4, 1e4, -1e4]], dtype)
    y = np.array([1, 2, 0])
    dZ = np.empty_like(Z)
    loss = be.softmax_xent_grad(Z, y, dZ)
    assert np.isfinite(loss) and np.all(np.isfinite(dZ))
    # row 0: NLL = 2e4 (label -1e4 against max 1e4); row 1: log 3; row 2: log 2
    assert loss == pytest.approx((2e4 + np.log(3) + np.log(2)) / 3, rel=1e-6)
    np.testing.assert_allclose(dZ.sum(axis=1), 0, atol=1e-6)
    np.testing.assert_allclose(dZ[0], np.array([1, -1, 0]) / 3, atol=1e-6)


@pytest.mark.parametrize("backend", ["numpy", "numba", "cython"])
def test_softmax_one_dominant_class(backend, dtype):
    be = fastmlp.get_backend(backend)
    Z = np.zeros((4, 5), dtype)
    Z[:, 2] = 50.0  # softmax is (almost exactly) one-hot on class 2
    y = np.array([2, 2, 0, 2])
    dZ = np.empty_like(Z)
    loss = be.softmax_xent_grad(Z, y, dZ)
    # rows with y=2 cost ~exp(-50); the row with y=0 costs 50 + log(1 + 4 e^-50) = 50
    assert loss == pytest.approx(50 / 4, rel=1e-6)
    assert dZ[2, 0] == pytest.approx(-1 / 4) and dZ[2, 2] == pytest.approx(1 / 4)
    np.testing.assert_allclose(dZ[[0, 1, 3]], 0, atol=1e-7)


@pytest.mark.parametrize("backend", ["numpy", "numba", "cython"])
def test_softmax_sample_weight_is_weighted_mean(backend, dtype):
    be = fastmlp.get_backend(backend)
    rng = np.random.default_rng(8)
    Z, y = rand(rng, (6, 4), dtype), rng.integers(0, 4, 6)
    w = np.array([0, 1, 2, 0, 3, 1], dtype)
    dZ = np.empty_like(Z)
    loss = be.softmax_xent_grad(Z, y, dZ, sample_weight=w)
    # integer weights = repeating rows: same loss as the unweighted mean over the repeated set
    rep = np.repeat(np.arange(6), w.astype(int))
    Zr, yr = np.ascontiguousarray(Z[rep]), y[rep]
    dZr = np.empty_like(Zr)
    want = be.softmax_xent_grad(Zr, yr, dZr)
    assert loss == pytest.approx(want, rel=1e-5 if dtype == np.float32 else 1e-12)
    assert_close(dZ[[1, 2, 4, 5]].sum(0), dZr.sum(0), dtype)
    assert np.all(dZ[[0, 3]] == 0)


def test_backends_agree_on_loss_value(dtype):
    rng = np.random.default_rng(9)
    Z, y = rand(rng, (50, 7), dtype, 5.0), rng.integers(0, 7, 50)
    losses = [be.softmax_xent_grad(Z, y, np.empty_like(Z)) for be in _all_backends()]
    assert_close(losses, [losses[0]] * 3, dtype)
    assert losses[0] == pytest.approx(reference.softmax_xent_grad(Z, y, np.empty_like(Z)))
