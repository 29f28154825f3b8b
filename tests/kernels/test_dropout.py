"""Dropout: the `dropout` kernel of every backend against the reference (exactly: the mask is
a counter-based draw, so all three backends draw the same one), the mask's statistics and
keys, the fused TrainSteps with dropout against the reference's composition (float32,
float64, every activation, bf16), and the gradient through a fixed mask by finite
differences."""
import numpy as np
import pytest
from helpers import check_against_reference, numeric_grad, train_step_arrays, train_steps

import fastmlp
from fastmlp.backends import onednn, reference
from fastmlp.backends.contract import ACTIVATIONS, check_dropout, mix64
from fastmlp.testing import Rel, Within

SHAPES = [(1, 1), (1, 7), (13, 37), (64, 256)]


@pytest.mark.parametrize("shape", SHAPES, ids=[f"{n}x{h}" for n, h in SHAPES])
@pytest.mark.parametrize("p", [0.0, 0.1, 0.5, 0.9])
def test_dropout_kernel(backend, dtype, shape, p):
    """Every backend's kernel = the reference's, bit for bit (the same draws, one multiply)."""
    A = np.random.default_rng(3).standard_normal(shape).astype(dtype)
    check_against_reference(backend, "dropout", [A, p, 2**63 + 11, 12345, 2], outputs=[0],
                            returns=0, tol=Within(0))


def test_mix64_is_splitmix64():
    """contract.mix64 is SplitMix64's finaliser: the first outputs of SplitMix64 seeded with 0
    (state += GOLDEN, then the finaliser), as published with the generator."""
    golden = 0x9E3779B97F4A7C15
    assert [mix64(golden * k) for k in (1, 2, 3)] == \
        [0xE220A8397B1DCDAF, 0x6E789E6AA1B965F4, 0x06C45D188009454F]


def test_dropout_mask_statistics():
    """The drop rate is p within 5 binomial standard deviations, kept entries are scaled by
    1 / (1 - p), and the mean is preserved on average."""
    n, h = 512, 512
    for p in (0.1, 0.4, 0.75):
        A = reference.dropout(np.ones((n, h)), p, 7, 1, 0)
        rate = float(np.mean(A == 0))
        assert abs(rate - p) < 5 * np.sqrt(p * (1 - p) / (n * h)), (p, rate)
        assert np.allclose(A[A != 0], 1 / (1 - p))
        assert abs(A.mean() - 1) < 0.02
    rows = reference.dropout_keep((n, h), 0.5, 7, 1, 0)
    # rows and columns are not correlated with their neighbours
    assert abs(np.corrcoef(rows[:-1].ravel(), rows[1:].ravel())[0, 1]) < 0.01
    assert abs(np.corrcoef(rows[:, :-1].ravel(), rows[:, 1:].ravel())[0, 1]) < 0.01


def test_dropout_mask_keys():
    """The mask depends on seed, step and layer, and on nothing else: the same key draws the
    same mask, a batch's rows are the first rows of a larger batch's."""
    keep = reference.dropout_keep
    base = keep((40, 30), 0.5, 1, 5, 0)
    assert np.array_equal(base, keep((40, 30), 0.5, 1, 5, 0))
    for other in (keep((40, 30), 0.5, 2, 5, 0), keep((40, 30), 0.5, 1, 6, 0),
                  keep((40, 30), 0.5, 1, 5, 1)):
        assert 0.4 < np.mean(other != base) < 0.6
    assert np.array_equal(keep((7, 30), 0.5, 1, 5, 0), base[:7])


def test_dropout_p0_changes_nothing(backend):
    A = np.random.default_rng(0).standard_normal((5, 6)).astype(np.float32)
    assert np.array_equal(fastmlp.get_backend(backend).dropout(A.copy(), 0.0, 1, 2, 3), A)


@pytest.mark.parametrize("args, err, text", [
    ((1.0, 0, 1, 0), ValueError, "p must be < 1"),
    ((-0.1, 0, 1, 0), ValueError, "p must be >= 0"),
    ((0.5, -1, 1, 0), ValueError, "seed must be an int"),
    ((0.5, 2**64, 1, 0), ValueError, "seed must be an int"),
    ((0.5, 0, -1, 0), ValueError, "step must be >= 0"),
    ((0.5, 0, 1, 2**16), ValueError, "layer < 65536"),
    ((0.5, 0, 1.5, 0), TypeError, "step must be an integer"),
])
def test_dropout_kernel_refuses(compiled_backend, args, err, text):
    """The compiled backends' checked face (the reference is permissive, as for every
    kernel)."""
    be = fastmlp.get_backend(compiled_backend)
    with pytest.raises(err, match=text):
        be.dropout(np.ones((2, 3), np.float32), *args)
    with pytest.raises(ValueError, match="C-contiguous"):
        be.dropout(np.ones((4, 6), np.float32)[:, ::2], 0.5, 0, 1, 0)


def test_check_dropout():
    assert check_dropout(0.3, 2) == (0.3, 0.3)
    assert check_dropout([0.1, 0.2], 2) == (0.1, 0.2)
    assert check_dropout(None, 1) == (0.0,)
    assert check_dropout(0.5, 0) == ()
    with pytest.raises(ValueError, match="one probability per hidden layer"):
        check_dropout([0.1], 2)
    with pytest.raises(ValueError, match=r"in \[0, 1\)"):
        check_dropout(1.0, 1)
    with pytest.raises(TypeError, match="number or a sequence"):
        check_dropout(object(), 1)


# the fused steps: hidden layers of odd widths, a batch smaller than the workspace, a batch
# of one row, and the MNIST-sized net whose first GEMM goes to fastmlp's threads; the last
# field seeds the fixture (see _relu_margin)
DROP_NETS = [((7, 13, 5, 3), 9, 6, (0.3, 0.5), 5), ((6, 4, 2), 1, 1, 0.5, 5),
             ((784, 256, 10), 128, 100, 0.2, 6), ((5, 1, 1), 3, 3, 0.4, 5)]
DROP_IDS = ["3layers", "N1", "mnist", "H1C1"]
OPTS = {"sgd-wd": ("sgd", {"weight_decay": 1e-2}), "momentum": ("sgd", {"momentum": 0.9}),
        "adam": ("adam", {})}
RELU_MARGIN = 1e-5   # ~50x a float32 784-term product's rounding (measured: 1-2e-7)


def _dropout_fixture(seed, sizes, n_max, m, dtype, optimizer, hyper):
    rng = np.random.default_rng(seed)
    arrays, outputs = train_step_arrays(rng, sizes, n_max, dtype, optimizer,
                                        hyper.get("momentum", 0))
    X = rng.standard_normal((m, sizes[0])).astype(dtype)
    return arrays, outputs, X, rng.integers(0, sizes[-1], m)


def _relu_margin(seed, sizes, n_max, m, optimizer, hyper, steps):
    """min |X·W1 + b1| before each of the steps, from the float64 reference.  A first-layer
    pre-activation within float32 rounding of ReLU's kink makes the derivative's 0/1 depend
    on the GEMM library's summation order, and one such entry moves a whole column of W1
    (seed 5 put one at 5.9e-8 before the second Adam step; oneDNN's sgemm and NumPy's
    OpenBLAS then rounded it to opposite signs), so a float32 fixture must keep clear of it."""
    low = np.inf
    for k in range(steps):
        arrays, _, X, y = _dropout_fixture(seed, sizes, n_max, m, np.float64, optimizer, hyper)
        if k:
            train_steps(reference, X, y, None, *arrays, n_layers=len(sizes) - 1,
                        optimizer=optimizer, hyper=hyper, lr=0.05, steps=k)
        low = min(low, np.abs(X @ arrays[0] + arrays[len(sizes) - 1]).min())
    return low


@pytest.mark.parametrize("net", DROP_NETS, ids=DROP_IDS)
@pytest.mark.parametrize("opt", list(OPTS))
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_train_step_with_dropout(compiled_backend, dtype, net, opt, activation):
    """Three fused steps with dropout = the reference's kernels composed (the same masks:
    forward, and the delta through them before the activation's derivative)."""
    sizes, n_max, m, drop, seed = net
    optimizer, hyper = OPTS[opt]
    hyper = dict(hyper, activation=activation, dropout=drop, dropout_seed=2**40 + 3)
    if activation == "relu" and dtype == np.float32:
        low = _relu_margin(seed, sizes, n_max, m, optimizer, hyper, 3)
        assert low > RELU_MARGIN, f"the fixture sits on ReLU's kink ({low:.1e}): reseed it"
    arrays, outputs, X, y = _dropout_fixture(seed, sizes, n_max, m, dtype, optimizer, hyper)
    kw = dict(n_layers=len(sizes) - 1, optimizer=optimizer, hyper=hyper, lr=0.05, steps=3)
    check_against_reference(compiled_backend, train_steps, [X, y, None] + arrays, kw,
                            outputs=[3 + k for k in outputs], returns="values")


def test_train_step_dropout_changes_the_result(compiled_backend):
    """The tests above could not pass with dropout ignored: a step with dropout differs from
    one without, and two seeds differ."""
    def after(drop, seed):
        rng = np.random.default_rng(5)
        arrays, _ = train_step_arrays(rng, (7, 13, 5, 3), 9, np.float64, "sgd", 0)
        X, y = rng.standard_normal((9, 7)), rng.integers(0, 3, 9)
        kw = dict(n_layers=3, optimizer="sgd", lr=0.1, steps=1,
                  hyper={"dropout": drop, "dropout_seed": seed})
        train_steps(fastmlp.get_backend(compiled_backend).raw, X, y, None, *arrays, **kw)
        return arrays[0]
    assert not np.allclose(after(0.0, 1), after(0.5, 1))
    assert not np.allclose(after(0.5, 1), after(0.5, 2))
    assert np.array_equal(after(0.5, 1), after(0.5, 1))


@pytest.mark.skipif(not onednn.available(), reason="bf16 needs oneDNN: pip install "
                    "\"fastmlp[onednn]\"")
@pytest.mark.parametrize("activation", ["relu", "tanh"])
def test_bf16_train_step_with_dropout(compiled_backend, activation):
    """The bf16 step with dropout = the reference's bf16 emulation with the same masks (the
    tolerance of tests/kernels/test_bf16.py)."""
    sizes, n_max, m = (784, 256, 10), 128, 100
    hyper = dict(momentum=0.9, activation=activation, dropout=0.3, dropout_seed=9,
                 precision="bf16")
    rng = np.random.default_rng(2)
    arrays, outputs = train_step_arrays(rng, sizes, n_max, np.float32, "sgd", 0.9)
    X = rng.standard_normal((m, sizes[0])).astype(np.float32)
    y = rng.integers(0, sizes[-1], m)
    kw = dict(n_layers=2, optimizer="sgd", hyper=hyper, lr=0.05, steps=3)
    check_against_reference(compiled_backend, train_steps, [X, y, None] + arrays, kw,
                            outputs=[3 + k for k in outputs], returns="values",
                            tol=Rel(rtol=1e-4))


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_gradient_through_a_fixed_mask(backend, activation):
    """With the mask held fixed (same seed and step), the gradient the composition computes
    is the finite-difference gradient of the dropped-out network's loss, float64."""
    be = fastmlp.get_backend(backend).raw
    rng = np.random.default_rng(1)
    sizes, n = (6, 9, 7, 3), 8
    X, y = rng.standard_normal((n, sizes[0])), rng.integers(0, sizes[-1], n)
    Ws = [rng.standard_normal((a, b)) / np.sqrt(a) for a, b in zip(sizes[:-1], sizes[1:])]
    bs = [0.1 * rng.standard_normal(b) for b in sizes[1:]]
    drop = ((0.3, 0.5), 17, 4)

    def loss_grads():
        acts = [np.empty((n, W.shape[1])) for W in Ws]
        deltas = [None] + [np.empty((n, W.shape[0])) for W in Ws[1:]]
        dWs, dbs = [np.empty_like(W) for W in Ws], [np.empty_like(b) for b in bs]
        dZ = np.empty_like(acts[-1])
        Z = reference.forward(be, Ws, bs, X, acts, activation, drop)
        loss = reference.loss_grad(be, "softmax", Z, y, dZ)
        reference.backward(be, Ws, X, acts, dZ, dWs, dbs, deltas, activation, drop)
        return loss, dWs, dbs

    _, dWs, dbs = loss_grads()
    for P, G in list(zip(Ws, dWs)) + list(zip(bs, dbs)):
        np.testing.assert_allclose(G, numeric_grad(lambda: loss_grads()[0], P), rtol=1e-6,
                                   atol=1e-8)
