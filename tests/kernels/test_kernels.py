"""Every kernel of every compiled backend against the NumPy reference (float32 and float64)."""

import numpy as np
import pytest
from helpers import assert_close, check_against_reference

import fastmlp
from fastmlp.backends import BACKEND_NAMES, reference
from fastmlp.backends.contract import ACTIVATIONS

# (N, D, H, C): N=1, H=1, C=1 and C=2, odd sizes, and the size of a real MNIST step
SHAPES = [(1, 3, 2, 2), (2, 4, 1, 1), (7, 13, 5, 3), (5, 6, 3, 2), (33, 17, 9, 1),
          (256, 784, 512, 10)]
SHAPE_IDS = ["N1", "H1C1", "odd", "C2", "C1", "large"]


def rand(rng, shape, dtype, scale=1.0):
    return (scale * rng.standard_normal(shape)).astype(dtype)


def test_all_backends_available():
    assert fastmlp.available_backends() == BACKEND_NAMES == ("numpy", "numba", "cython")
    assert fastmlp.get_backend("auto").name == "cython"
    for name in BACKEND_NAMES:
        assert fastmlp.get_backend(name).name == name
        assert fastmlp.get_backend(fastmlp.get_backend(name)) is fastmlp.get_backend(name)


def test_a_backend_must_be_a_name_or_from_get_backend():
    class Lookalike:
        name, raw = "mine", None
    with pytest.raises(TypeError, match="backend must be a name"):
        fastmlp.get_backend(Lookalike())


def test_unknown_backend_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown backend 'cuda'"):
        fastmlp.get_backend("cuda")


@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_linear_forward(compiled_backend, dtype, shape, activation):
    n, d, h, _ = shape
    rng = np.random.default_rng(1)
    args = [rand(rng, (n, d), dtype), rand(rng, (d, h), dtype), rand(rng, (h,), dtype),
            np.full((n, h), np.nan, dtype)]
    check_against_reference(compiled_backend, "linear_forward", args,
                            {"activation": activation}, outputs=[3], returns=3)


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_activations_saturate_without_nan(backend, dtype, activation):
    """Pre-activations of ±1e4: relu, tanh and logistic give their limits, never NaN."""
    be = fastmlp.get_backend(backend)
    X = np.array([[1.0], [-1.0], [0.0]], dtype)
    W, b = np.array([[1e4]], dtype), np.zeros(1, dtype)
    out = be.linear_forward(X, W, b, np.empty((3, 1), dtype), activation=activation)
    want = {"identity": [1e4, -1e4, 0], "relu": [1e4, 0, 0], "tanh": [1, -1, 0],
            "logistic": [1, 0, 0.5]}[activation]
    np.testing.assert_array_equal(out[:, 0], np.array(want, dtype))


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
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_activation_backward(compiled_backend, dtype, shape, activation):
    n, _, h, _ = shape
    rng = np.random.default_rng(3)
    # H as the activation would output it: relu >= 0 with exact zeros ("off"), tanh in
    # (-1, 1), logistic in (0, 1)
    H = reference.activate(rand(rng, (n, h), dtype, 2.0), activation)
    if activation == "relu":
        H.flat[::3] = 0
    args = [rand(rng, (n, h), dtype), H, activation]
    check_against_reference(compiled_backend, "activation_backward", args, outputs=[0],
                            returns=0)


def _value_targets(rng, loss, shape, dtype):
    """Targets of a value loss: 0/1 (logistic), reals (squared error), counts (poisson)."""
    if loss == "logistic_xent_grad":
        return (rng.random(shape) < 0.4).astype(dtype)
    if loss == "poisson_grad":
        return rng.poisson(2.0, shape).astype(dtype)
    return rand(rng, shape, dtype, 2.0)


VALUE_LOSSES = ["logistic_xent_grad", "squared_error_grad", "poisson_grad"]


@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("loss", VALUE_LOSSES)
def test_value_losses(compiled_backend, dtype, shape, weighted, loss):
    n, _, _, k = shape
    rng = np.random.default_rng(10)
    Z = rand(rng, (n, k), dtype, 1.0 if loss == "poisson_grad" else 3.0)
    args = [Z, _value_targets(rng, loss, (n, k), dtype), np.full((n, k), np.nan, dtype)]
    kw = {"sample_weight": rng.uniform(0.1, 2.0, n).astype(dtype)} if weighted else {}
    check_against_reference(compiled_backend, loss, args, kw, outputs=[2], returns="float")


@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_softmax_xent_grad(compiled_backend, dtype, shape, weighted, smoothing):
    n, _, _, c = shape
    rng = np.random.default_rng(4)
    args = [rand(rng, (n, c), dtype, 3.0), rng.integers(0, c, n), np.full((n, c), np.nan, dtype)]
    kw = {"sample_weight": rng.uniform(0.1, 2.0, n).astype(dtype)} if weighted else {}
    if smoothing:
        kw["label_smoothing"] = smoothing
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


def test_read_only_inputs_work(compiled_backend, dtype):
    rng = np.random.default_rng(7)
    X, W, b = rand(rng, (6, 5), dtype), rand(rng, (5, 4), dtype), rand(rng, (4,), dtype)
    for a in (X, W, b):
        a.flags.writeable = False
    out = np.empty((6, 4), dtype)
    compiled_backend.linear_forward(X, W, b, out, activation="relu")
    assert_close(out, np.maximum(X @ W + b, 0), dtype)


# --- softmax cross-entropy: extremes -------------------------------------------------------

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
    losses = [fastmlp.get_backend(b).softmax_xent_grad(Z, y, np.empty_like(Z))
              for b in BACKEND_NAMES]
    assert_close(losses, [losses[0]] * 3, dtype)
    assert losses[0] == pytest.approx(reference.softmax_xent_grad(Z, y, np.empty_like(Z)))


def test_logistic_loss_is_finite_and_exact_at_huge_logits(backend, dtype):
    """softplus(z) - y z at z = ±1e4: 0 when the target agrees, 1e4 when it does not."""
    be = fastmlp.get_backend(backend)
    Z = np.array([[1e4, -1e4], [-1e4, 1e4]], dtype)
    Y = np.array([[1, 0], [1, 0]], dtype)
    dZ = np.empty_like(Z)
    loss = be.logistic_xent_grad(Z, Y, dZ)
    assert loss == pytest.approx(1e4)   # row 0 costs 0, row 1 costs 2e4: mean 1e4
    np.testing.assert_allclose(dZ, [[0, 0], [-0.5, 0.5]], atol=1e-6)


def test_squared_error_and_poisson_worked_out(backend, dtype):
    be = fastmlp.get_backend(backend)
    Z = np.array([[1.0, 2.0], [0.0, -1.0]], dtype)
    Y = np.array([[0.0, 2.0], [2.0, 1.0]], dtype)
    dZ = np.empty_like(Z)
    # ½ Σ_k (z - y)² per row: ½(1 + 0) and ½(4 + 4); mean 2.25; dZ = (z - y) / 2
    assert be.squared_error_grad(Z, Y, dZ) == pytest.approx(2.25)
    np.testing.assert_allclose(dZ, [[0.5, 0], [-1, -1]])
    # exp(z) - y z + y log y - y per entry, summed per row, mean over rows
    want = np.mean([np.e - 0 + 0 - 0 + np.e ** 2 - 4 + 2 * np.log(2) - 2,
                    1 - 0 + 2 * np.log(2) - 2 + np.exp(-1) + 1 + 0 - 1])
    assert be.poisson_grad(Z, Y, dZ) == pytest.approx(want, rel=1e-6)
    np.testing.assert_allclose(dZ, (np.exp(Z.astype(np.float64)) - Y) / 2, rtol=1e-6)


# --- the sparse first layer ---------------------------------------------------------------

def _csr_case(rng, n, d, dtype, density):
    """A CSR X (n, d) with an empty row, a repeated column and unsorted indices, as a view
    of rows 1..n of a bigger matrix (absolute offsets)."""
    import scipy.sparse
    from fastmlp.backends.csr import as_csr
    big = as_csr(scipy.sparse.random(n + 2, d, density=density, format="csr",
                                     random_state=int(rng.integers(1 << 30))), dtype)
    if n > 1:
        lo, hi = big.indptr[1], big.indptr[2]     # row 0 of the view: reversed, a repeat
        big.indices[lo:hi] = big.indices[lo:hi][::-1]
        if hi - lo >= 2:
            big.indices[lo] = big.indices[lo + 1]
    return big.rows(1, n + 1)


@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
@pytest.mark.parametrize("activation", ["identity", "relu", "logistic"])
@pytest.mark.parametrize("density", [0.0, 0.05, 0.5])
def test_csr_linear_forward(compiled_backend, dtype, shape, activation, density):
    n, d, h, _ = shape
    rng = np.random.default_rng(11)
    X = _csr_case(rng, n, d, dtype, density)
    args = [X.data, X.indices, X.indptr, rand(rng, (d, h), dtype), rand(rng, (h,), dtype),
            np.full((n, h), np.nan, dtype)]
    check_against_reference(compiled_backend, "csr_linear_forward", args,
                            {"activation": activation}, outputs=[5], returns=5)


@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
@pytest.mark.parametrize("density", [0.0, 0.05, 0.5])
def test_csr_linear_backward(compiled_backend, dtype, shape, density):
    n, d, h, _ = shape
    rng = np.random.default_rng(12)
    X = _csr_case(rng, n, d, dtype, density)
    args = [rand(rng, (n, h), dtype), X.data, X.indices, X.indptr,
            np.full((d, h), np.nan, dtype), np.full((h,), np.nan, dtype)]
    check_against_reference(compiled_backend, "csr_linear_backward", args, outputs=[4, 5],
                            returns=4)


@pytest.mark.parametrize("rows", [[0], [2, 0, 2, 1], list(range(7))[::-1]],
                         ids=["one", "repeats", "all-reversed"])
def test_csr_gather_rows(compiled_backend, dtype, rows):
    rng = np.random.default_rng(13)
    X = _csr_case(rng, 7, 9, dtype, 0.4)
    rows = np.array(rows, np.int64)
    cap = X.nnz + 5
    args = [X.data, X.indices, X.indptr, rows, np.zeros(cap, dtype), np.zeros(cap, np.int64),
            np.zeros(rows.size + 1, np.int64)]
    want, got = check_against_reference(compiled_backend, "csr_gather_rows", args,
                                        outputs=[4, 5, 6])
    assert got == want == int(np.sum(np.diff(X.indptr)[rows]))


@pytest.mark.parametrize("rows", [[0], [2, 0, 2, 1], list(range(7))[::-1], []],
                         ids=["one", "repeats", "all-reversed", "none"])
@pytest.mark.parametrize("standardize", [False, True], ids=["plain", "standardised"])
@pytest.mark.parametrize("d", [1, 13, 784])
def test_gather_rows(compiled_backend, dtype, rows, standardize, d):
    """The dense mini-batch gather, plain and standardised: the reference's values exactly
    (the same subtraction and division in X's dtype)."""
    rng = np.random.default_rng(16)
    X = rand(rng, (7, d), dtype, 5.0) + 3
    rows = np.array(rows, np.int64)
    stats = [rand(rng, (d,), dtype), np.abs(rand(rng, (d,), dtype)) + dtype(0.3)] \
        if standardize else []
    args = [X, rows, np.full((rows.size, d), np.nan, dtype)] + stats
    want, got = check_against_reference(compiled_backend, "gather_rows", args, outputs=[2],
                                        returns=2)
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("rows", [[0], [2, 0, 2, 1], []], ids=["one", "repeats", "none"])
@pytest.mark.parametrize("d", [1, 784])
def test_gather_rows_of_bf16_bits(compiled_backend, rows, d):
    """A bf16 step's training set (uint16 bits) gathers as it is, every bit pattern kept."""
    rng = np.random.default_rng(17)
    X = rng.integers(0, 1 << 16, (7, d)).astype(np.uint16)
    rows = np.array(rows, np.int64)
    got = fastmlp.get_backend(compiled_backend).gather_rows(
        X, rows, np.zeros((rows.size, d), np.uint16))
    np.testing.assert_array_equal(got, reference.gather_rows(
        X, rows, np.ones((rows.size, d), np.uint16)))


def test_sparse_kernels_equal_dense_ones(backend, dtype):
    """X·W and Xᵀ·dY from the CSR kernels = the dense kernels on X.toarray()."""
    be = fastmlp.get_backend(backend)
    rng = np.random.default_rng(14)
    X = _csr_case(rng, 20, 30, dtype, 0.2)
    Xd = np.ascontiguousarray(X.toarray())
    W, b, dY = rand(rng, (30, 6), dtype), rand(rng, (6,), dtype), rand(rng, (20, 6), dtype)
    s_out, d_out = np.empty((20, 6), dtype), np.empty((20, 6), dtype)
    be.csr_linear_forward(X.data, X.indices, X.indptr, W, b, s_out, "tanh")
    be.linear_forward(Xd, W, b, d_out, "tanh")
    assert_close(s_out, d_out, dtype)
    s_dW, d_dW = np.empty((30, 6), dtype), np.empty((30, 6), dtype)
    s_db, d_db = np.empty(6, dtype), np.empty(6, dtype)
    be.csr_linear_backward(dY, X.data, X.indices, X.indptr, s_dW, s_db)
    be.linear_backward(dY, Xd, W, d_dW, d_db)
    assert_close(s_dW, d_dW, dtype)
    assert_close(s_db, d_db, dtype)


def test_csr_gather_that_would_overflow_writes_nothing_past_the_buffer(backend):
    """The raw gather (which the Trainer calls unchecked) refuses rows that do not fit."""
    raw = fastmlp.get_backend(backend).raw
    rng = np.random.default_rng(15)
    X = _csr_case(rng, 6, 8, np.float64, 0.6)
    need = int(np.sum(np.diff(X.indptr)))
    out_data = np.full(need + 2, 7.0)
    out_idx = np.full(need + 2, 7, np.int64)
    got = raw.csr_gather_rows(X.data, X.indices, X.indptr, np.arange(6), out_data[:need - 1],
                              out_idx[:need - 1], np.zeros(7, np.int64))
    assert got == -1 and np.all(out_data[need - 1:] == 7.0) and np.all(out_idx[need - 1:] == 7)
