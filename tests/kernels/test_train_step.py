"""The fused TrainStep of every compiled backend against the reference's (its kernels
composed), and its checks of the arrays it is built on and of the batch it runs."""
import re

import numpy as np
import pytest
import scipy.sparse
from helpers import check_against_reference, train_step_arrays, train_steps

import fastmlp
from fastmlp.backends import onednn
from fastmlp.backends.contract import ACTIVATIONS, OUTPUTS
from fastmlp.backends.csr import CSR, as_csr


def rand(rng, shape, dtype, scale=1.0):
    return (scale * rng.standard_normal(shape)).astype(dtype)


# (layer sizes, workspace rows, batch rows): one layer, one class, a hidden width of 1, odd
# sizes over 3 layers, a batch of 1 and a last batch smaller than the workspace, MNIST-sized,
# and a hidden layer wider than the input.  The last two's first-layer GEMMs go to fastmlp's
# threads with the weight update carried block by block (pool.h's fm_post): MNIST's dW1ᵀ
# (256, 784) is cut into runs of whole columns, the wide net's (300, 100) into row blocks,
# updated one column run at a time.
STEP_NETS = [((3, 2), 4, 4), ((5, 1, 1), 3, 1), ((7, 13, 5, 3), 9, 9), ((7, 13, 5, 3), 9, 4),
             ((6, 4, 2), 1, 1), ((784, 256, 10), 128, 100), ((100, 300, 10), 64, 61)]
STEP_NET_IDS = ["1layer", "H1C1", "3layers", "partial", "N1", "mnist", "wide"]
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


# every hidden activation with every output layer, on a 3-layer net with a partial batch and
# on the MNIST-sized one, for plain SGD with weight decay, momentum and Adam
FAMILY_NETS = [((7, 13, 5, 3), 9, 6), ((784, 256, 10), 128, 100)]


def _targets(rng, output, m, k, dtype):
    if output == "softmax":
        return rng.integers(0, k, m)
    if output == "logistic":
        return (rng.random((m, k)) < 0.5).astype(dtype)
    if output == "exp":
        return rng.poisson(1.0, (m, k)).astype(dtype)
    return rand(rng, (m, k), dtype)


@pytest.mark.parametrize("net", FAMILY_NETS, ids=["3layers", "mnist"])
@pytest.mark.parametrize("opt", ["sgd-wd", "momentum", "adam"])
@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("output", OUTPUTS)
def test_train_step_family(compiled_backend, dtype, net, opt, activation, output):
    """The fused step with each activation and output = the reference's kernels composed."""
    sizes, n_max, m = net
    optimizer, hyper = STEP_OPTS[opt]
    hyper = dict(hyper, activation=activation, output=output)
    rng = np.random.default_rng(12)
    arrays, outputs = train_step_arrays(rng, sizes, n_max, dtype, optimizer,
                                        hyper.get("momentum", 0))
    X, y = rand(rng, (m, sizes[0]), dtype), _targets(rng, output, m, sizes[-1], dtype)
    if output == "exp":   # small weights: exp of the outputs stays moderate
        arrays[len(sizes) - 2] *= 0.1
    sw = rng.uniform(0.1, 2.0, m).astype(dtype)
    kw = dict(n_layers=len(sizes) - 1, optimizer=optimizer, hyper=hyper, lr=0.02, steps=3)
    check_against_reference(compiled_backend, train_steps, [X, y, sw] + arrays, kw,
                            outputs=[3 + k for k in outputs], returns="values")


def _sparse_batch(rng, m, d, dtype, density=0.3):
    """A CSR batch of m rows with empty rows, repeated and unsorted column indices."""
    X = scipy.sparse.random(m, d, density=density, random_state=rng.integers(1 << 30),
                            format="csr", dtype=np.float64)
    X = as_csr(X, dtype)
    if m > 2:   # an empty row, and a row whose entries repeat a column out of order
        lo, hi = X.indptr[1], X.indptr[2]
        X.data[lo:hi] = 0
        X.indices[lo:hi] = X.indices[lo:hi][::-1]
    return X


@pytest.mark.parametrize("net", [((7, 13, 5, 3), 9, 6), ((300, 64, 10), 32, 32)],
                         ids=["3layers", "wide"])
@pytest.mark.parametrize("opt", list(STEP_OPTS))
@pytest.mark.parametrize("output", ["softmax", "logistic"])
def test_train_step_sparse_input(compiled_backend, dtype, net, opt, output):
    """A CSR first layer in the fused step = the reference's sparse kernels composed."""
    sizes, n_max, m = net
    optimizer, hyper = STEP_OPTS[opt]
    hyper = dict(hyper, activation="tanh", output=output)
    rng = np.random.default_rng(13)
    arrays, outputs = train_step_arrays(rng, sizes, n_max, dtype, optimizer,
                                        hyper.get("momentum", 0))
    X = _sparse_batch(rng, m, sizes[0], dtype)
    y = _targets(rng, output, m, sizes[-1], dtype)
    kw = dict(n_layers=len(sizes) - 1, optimizer=optimizer, hyper=hyper, lr=0.05, steps=3)
    check_against_reference(compiled_backend, train_steps, [X, y, None] + arrays, kw,
                            outputs=[3 + k for k in outputs], returns="values")


def test_train_step_refuses_a_corrupt_sparse_batch(compiled_backend):
    args, kw = _step_args()
    step = compiled_backend.raw.TrainStep(*args, **kw)
    X = as_csr(scipy.sparse.random(4, 5, density=0.5, random_state=0, format="csr"),
               np.float32)
    before = [p.copy() for p in args[0] + args[1]]
    y = np.zeros(4, np.int64)
    bad = CSR(X.data, X.indices.copy(), X.indptr, X.shape)
    bad.indices[0] = 5
    with pytest.raises(ValueError, match="column index of X is outside"):
        step.run(bad, y, None, 0.1, 1)
    with pytest.raises(TypeError, match="X.indices must be"):
        step.run(CSR(X.data, X.indices.astype(np.int32), X.indptr, X.shape), y, None, 0.1, 1)
    with pytest.raises(ValueError, match="do not fit together"):
        step.run(CSR(X.data[:-1], X.indices[:-1], X.indptr, X.shape), y, None, 0.1, 1)
    assert all(np.array_equal(p, q) for p, q in zip(args[0] + args[1], before))


def test_train_step_refuses_targets_of_the_other_kind(compiled_backend):
    args, kw = _step_args()
    step = compiled_backend.raw.TrainStep(*args, **kw, output="identity")
    X = np.zeros((4, 5), np.float32)
    with pytest.raises(TypeError, match="y has dtype"):
        step.run(X, np.zeros(4, np.int64), None, 0.1, 1)
    with pytest.raises(ValueError, match=r"y must be C-contiguous of shape \(4, 3\)"):
        step.run(X, np.zeros((4, 2), np.float32), None, 0.1, 1)
    with pytest.raises(ValueError, match="unknown output"):
        compiled_backend.raw.TrainStep(*args, **kw, output="hinge")
    with pytest.raises(ValueError, match="unknown activation"):
        compiled_backend.raw.TrainStep(*args, **kw, activation="gelu")


def test_train_step_labels_out_of_range_change_nothing(compiled_backend):
    args, kw = _step_args()
    step = compiled_backend.raw.TrainStep(*args, **kw)
    before = [p.copy() for p in args[0] + args[1]]
    with pytest.raises(ValueError, match="labels must be in"):
        step.run(np.ones((4, 5), np.float32), np.array([0, 1, 3, 0]), None, 0.1, 1)
    assert all(np.array_equal(p, q) for p, q in zip(args[0] + args[1], before))


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


def test_train_step_non_finite_loss_changes_nothing(backend):
    args, kw = _step_args()
    args[0][0][0, 0] = np.inf
    step = fastmlp.get_backend(backend).raw.TrainStep(*args, **kw)
    before = [p.copy() for p in args[0] + args[1] + args[7]]
    with np.errstate(all="ignore"):
        loss = step.run(np.ones((4, 5), np.float32), np.zeros(4, np.int64), None, 0.1, 1)
    assert not np.isfinite(loss)
    after = args[0] + args[1] + args[7]
    assert all(np.array_equal(p, q, equal_nan=True) for p, q in zip(after, before))


@pytest.mark.parametrize("gemm", ["openblas", "scipy", "onednn"])
def test_train_step_every_gemm_provider(compiled_backend, dtype, gemm):
    """The fused step through each GEMM provider = the reference (its large GEMMs are cut
    into blocks for fastmlp's threads: X·W1 and Xᵀ·δ here are 40 MFLOP each).  "onednn":
    oneDNN's sgemm for float32, its BLAS base's dgemm for float64."""
    from fastmlp.backends.blas import get_provider
    if gemm == "onednn" and not onednn.available():
        pytest.skip(f"oneDNN is not installed ({onednn.EXTRA})")
    sizes, n_max, m = (784, 256, 10), 128, 100
    optimizer, hyper = STEP_OPTS["momentum"]
    rng = np.random.default_rng(14)
    arrays, outputs = train_step_arrays(rng, sizes, n_max, dtype, optimizer, 0.9)
    X, y = rand(rng, (m, sizes[0]), dtype), rng.integers(0, sizes[-1], m)
    kw = dict(n_layers=2, optimizer=optimizer, hyper=dict(hyper, gemm=gemm), lr=0.05, steps=3)
    check_against_reference(compiled_backend, train_steps, [X, y, None] + arrays, kw,
                            outputs=[3 + k for k in outputs], returns="values")
    step = compiled_backend.raw.TrainStep(*_step_args()[0], **_step_args()[1], gemm=gemm)
    assert step.provider is get_provider(gemm)


@pytest.mark.parametrize("net", [((784, 256, 10), 128, 128), ((100, 300, 10), 64, 64)],
                         ids=["mnist", "wide"])
@pytest.mark.parametrize("opt", ["sgd-wd", "momentum", "nesterov-wd", "adam"])
@pytest.mark.parametrize("precision", [None, "bf16"], ids=["fp32", "bf16"])
def test_train_step_result_does_not_depend_on_threads(compiled_backend, net, opt, precision):
    """set_threads(1) and set_threads(2): the same bits (the blocks, and so the blocks each
    thread updates, are fixed by shape; a bf16 step's update goes to the threads alone)."""
    if precision and not onednn.available():
        pytest.skip(f"oneDNN is not installed ({onednn.EXTRA})")
    sizes, n_max, m = net
    optimizer, hyper = STEP_OPTS[opt]
    runs = []
    for threads in (1, 2, 1):
        rng = np.random.default_rng(15)
        arrays, _ = train_step_arrays(rng, sizes, n_max, np.float32, optimizer,
                                      hyper.get("momentum", 0))
        X, y = rand(rng, (m, sizes[0]), np.float32), rng.integers(0, sizes[-1], m)
        W, b = arrays[0:2], arrays[2:4]
        state = arrays[12:]
        state = [tuple(state[i:i + 2]) for i in range(0, len(state), 2)] \
            if optimizer == "adam" else (state or [None] * 4)
        built = {k: v for k, v in hyper.items() if k != "weight_decay"}
        step = compiled_backend.raw.TrainStep(W, b, arrays[4:6], arrays[6:8], arrays[8:10],
                                              [None, arrays[10]], arrays[11], state, optimizer,
                                              precision=precision, **built)
        step.set_threads(threads)
        for t in range(1, 4):
            step.run(X, y, None, 0.05, t, hyper.get("weight_decay", 0.0))
        runs.append(b"".join(p.tobytes() for p in W + b))
    assert runs[0] == runs[1] == runs[2]
