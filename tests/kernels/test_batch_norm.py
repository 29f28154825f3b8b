"""Batch normalisation: the three kernels of every backend against the reference (float32,
float64, awkward shapes, every activation), the kernels' gradient by finite differences, the
fused TrainSteps with batch normalisation (and dropout) against the reference's composition,
and the seed network's gradient (batch normalisation and a fixed dropout mask) by finite
differences in float64."""
import numpy as np
import pytest
from helpers import (check_against_reference, numeric_grad, train_step_arrays,
                     train_step_bn_arrays, train_steps)

import fastmlp
from fastmlp.backends import onednn, reference
from fastmlp.backends.contract import ACTIVATIONS, BatchNorm, check_bn_settings
from fastmlp.testing import Rel

SHAPES = [(1, 1), (1, 7), (2, 3), (13, 37), (64, 256), (300, 5)]
SHAPE_IDS = [f"{n}x{h}" for n, h in SHAPES]


def bn_inputs(shape, dtype, seed=0):
    """A product Z (N, H) with offset, spread-out columns, and gamma, beta (H,)."""
    rng = np.random.default_rng(seed)
    n, h = shape
    Z = (3 * rng.standard_normal(shape) + rng.standard_normal(h) * 5).astype(dtype)
    gamma = (1 + 0.3 * rng.standard_normal(h)).astype(dtype)
    beta = (0.2 * rng.standard_normal(h)).astype(dtype)
    return Z, gamma, beta


@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_batch_norm_forward(compiled_backend, dtype, shape, activation):
    """Z becomes ẑ, out = f(γẑ + β), mean and var the batch's: every backend = the
    reference."""
    Z, gamma, beta = bn_inputs(shape, dtype)
    n, h = shape
    args = [Z, gamma, beta, np.full(shape, np.nan, dtype), np.full(h, np.nan, dtype),
            np.full(h, np.nan, dtype), 1e-5, activation]
    check_against_reference(compiled_backend, "batch_norm_forward", args, outputs=[0, 3, 4, 5],
                            returns=3)


@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
def test_batch_norm_backward(compiled_backend, dtype, shape):
    Z, gamma, _ = bn_inputs(shape, dtype, 1)
    n, h = shape
    mean, var = np.empty(h, dtype), np.empty(h, dtype)
    reference.batch_norm_forward(Z, gamma, gamma, np.empty(shape, dtype), mean, var)
    dY = np.random.default_rng(2).standard_normal(shape).astype(dtype)
    args = [dY, Z, gamma, var, np.full(h, np.nan, dtype), np.full(h, np.nan, dtype), 1e-5]
    check_against_reference(compiled_backend, "batch_norm_backward", args, outputs=[0, 4, 5],
                            returns=0)


@pytest.mark.parametrize("n", [1, 2, 37])
@pytest.mark.parametrize("momentum", [0.0, 0.1, 1.0])
def test_batch_norm_running(compiled_backend, dtype, n, momentum):
    rng = np.random.default_rng(3)
    mean, var = rng.standard_normal(9).astype(dtype), rng.random(9).astype(dtype)
    rm, rv = rng.standard_normal(9).astype(dtype), (1 + rng.random(9)).astype(dtype)
    check_against_reference(compiled_backend, "batch_norm_running", [mean, var, n, rm, rv, momentum],
                            outputs=[3, 4], returns=3)


def test_batch_norm_running_formula():
    """PyTorch's convention, worked out: the unbiased variance; one row changes nothing."""
    rm, rv = np.array([1.0, 2.0]), np.array([4.0, 1.0])
    reference.batch_norm_running(np.array([3.0, 0.0]), np.array([2.0, 8.0]), 5, rm, rv, 0.25)
    np.testing.assert_allclose(rm, [0.75 * 1 + 0.25 * 3, 0.75 * 2])
    np.testing.assert_allclose(rv, [0.75 * 4 + 0.25 * 2.5, 0.75 * 1 + 0.25 * 10])
    before = (rm.copy(), rv.copy())
    reference.batch_norm_running(np.array([9.0, 9.0]), np.array([0.0, 0.0]), 1, rm, rv)
    assert np.array_equal(rm, before[0]) and np.array_equal(rv, before[1])


def test_batch_norm_forward_normalises(dtype):
    """ẑ has column means 0 and variances var / (var + eps); mean and var are the batch's
    (the formula, checked in float64 against NumPy's own mean and var)."""
    Z, gamma, beta = bn_inputs((50, 6), dtype)
    Z0 = Z.astype(np.float64)
    out, mean, var = np.empty_like(Z), np.empty(6, dtype), np.empty(6, dtype)
    reference.batch_norm_forward(Z, gamma, beta, out, mean, var, 1e-3)
    tol = 50 * np.finfo(dtype).eps
    np.testing.assert_allclose(mean, Z0.mean(0), rtol=tol)
    np.testing.assert_allclose(var, Z0.var(0), rtol=tol)
    np.testing.assert_allclose(Z.mean(0), 0, atol=tol * 10)
    np.testing.assert_allclose(Z.var(0), Z0.var(0) / (Z0.var(0) + 1e-3), rtol=tol * 10)
    np.testing.assert_allclose(out, gamma * Z + beta, rtol=tol, atol=tol)


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_batch_norm_kernels_are_the_gradient(backend, activation):
    """batch_norm_backward after activation_backward is the finite-difference gradient of
    L = Σ G·f(γ·BN(Z) + β) w.r.t. Z, γ and β (float64, the batch's statistics)."""
    be = fastmlp.get_backend(backend)
    rng = np.random.default_rng(99)
    Z, gamma, beta = bn_inputs((11, 5), np.float64, 4)
    G = rng.standard_normal(Z.shape)

    def loss():
        out = np.empty_like(Z)
        be.batch_norm_forward(Z.copy(), gamma, beta, out, np.empty(5), np.empty(5), 1e-5,
                              activation)
        return float(np.sum(G * out))

    zhat, out, mean, var = Z.copy(), np.empty_like(Z), np.empty(5), np.empty(5)
    be.batch_norm_forward(zhat, gamma, beta, out, mean, var, 1e-5, activation)
    dY = be.activation_backward(G.copy(), out, activation)
    dgamma, dbeta = np.empty(5), np.empty(5)
    be.batch_norm_backward(dY, zhat, gamma, var, dgamma, dbeta, 1e-5)
    for P, got in ((Z, dY), (gamma, dgamma), (beta, dbeta)):
        np.testing.assert_allclose(got, numeric_grad(loss, P), rtol=1e-6, atol=1e-8)


def test_batch_norm_refuses(compiled_backend):
    be = fastmlp.get_backend(compiled_backend)
    Z = np.ones((4, 3), np.float32)
    v = [np.ones(3, np.float32) for _ in range(4)]
    with pytest.raises(ValueError, match="C-contiguous"):
        be.batch_norm_forward(np.ones((4, 6), np.float32)[:, ::2], *v[:2], np.empty_like(Z),
                              *v[2:])
    with pytest.raises(ValueError, match="must not overlap"):
        be.batch_norm_forward(Z, *v[:2], Z, *v[2:])
    with pytest.raises(ValueError, match="shape"):
        be.batch_norm_forward(Z, np.ones(4, np.float32), v[1], np.empty_like(Z), *v[2:])
    with pytest.raises(TypeError, match="dtype"):
        be.batch_norm_backward(Z, Z, np.ones(3), *v[1:])
    with pytest.raises(ValueError, match="eps must be"):
        be.batch_norm_forward(Z, *v[:2], np.empty_like(Z), *v[2:], 0.0)
    with pytest.raises(ValueError, match="momentum must be"):
        be.batch_norm_running(v[0], v[1], 3, v[2], v[3], 1.5)
    with pytest.raises(ValueError, match="n must be"):
        be.batch_norm_running(v[0], v[1], 0, v[2], v[3])
    with pytest.raises(ValueError, match="must not overlap"):
        be.batch_norm_backward(Z, Z, *v)


def test_check_bn_settings():
    assert check_bn_settings(0.1, 1e-5) == (0.1, 1e-5)
    for bad in ((-0.1, 1e-5), (1.1, 1e-5), (0.1, 0.0), (0.1, float("inf")), (True, 1e-5)):
        with pytest.raises(ValueError):
            check_bn_settings(*bad)


# --------------------------------------------------------------------------- fused steps
# hidden layers of odd widths, a batch smaller than the workspace, a batch of one row, the
# MNIST-sized net whose first GEMM goes to fastmlp's threads, one-unit layers
BN_NETS = [((7, 13, 5, 3), 9, 6, 0.0), ((6, 4, 2), 1, 1, 0.0),
           ((784, 256, 10), 128, 100, 0.2), ((5, 1, 1), 3, 3, 0.0),
           ((7, 13, 5, 3), 9, 9, (0.3, 0.5))]
BN_IDS = ["3layers", "N1", "mnist-drop", "H1C1", "3layers-drop"]
OPTS = {"sgd-wd": ("sgd", {"weight_decay": 1e-2}), "momentum": ("sgd", {"momentum": 0.9}),
        "adam": ("adam", {})}


def bn_case(sizes, n_max, m, dtype, optimizer, hyper, seed=5, x_dtype=None):
    """(args, outputs, kw) of `train_steps` with batch normalisation for
    check_against_reference: the parameters, their state, the gammas and running
    estimates are the compared outputs."""
    rng = np.random.default_rng(seed)
    arrays, outputs = train_step_arrays(rng, sizes, n_max, dtype, optimizer,
                                        hyper.get("momentum", 0))
    bn_arrays, bn_keep = train_step_bn_arrays(rng, sizes, n_max, dtype, optimizer,
                                              hyper.get("momentum", 0))
    X = (2 * rng.standard_normal((m, sizes[0])) + 1).astype(x_dtype or dtype)
    y = rng.integers(0, sizes[-1], m)
    base = 3 + len(arrays)
    kw = dict(n_layers=len(sizes) - 1, optimizer=optimizer, hyper=hyper, lr=0.05, steps=3,
              bn=len(bn_arrays))
    return ([X, y, None] + arrays + bn_arrays,
            [3 + k for k in outputs] + [base + k for k in bn_keep], kw)


@pytest.mark.parametrize("net", BN_NETS, ids=BN_IDS)
@pytest.mark.parametrize("opt", list(OPTS))
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_train_step_with_batch_norm(compiled_backend, dtype, net, opt, activation):
    """Three fused steps with batch normalisation = the reference's kernels composed: the
    weights, biases (BN's shifts), gammas, their optimizer state and the running
    estimates."""
    sizes, n_max, m, drop = net
    optimizer, hyper = OPTS[opt]
    hyper = dict(hyper, activation=activation, dropout=drop, dropout_seed=77)
    args, outputs, kw = bn_case(sizes, n_max, m, dtype, optimizer, hyper)
    check_against_reference(compiled_backend, train_steps, args, kw, outputs=outputs,
                            returns="values", tol=Rel(1024))


def test_train_step_batch_norm_changes_the_result(backend):
    """The tests above could not pass with batch normalisation ignored: the weights after a
    step differ from a step without it, the gammas and running estimates move."""
    sizes = (7, 13, 5, 3)
    hyper = {"momentum": 0.9}
    args, outputs, kw = bn_case(sizes, 9, 9, np.float64, "sgd", hyper)
    plain = [a.copy() if isinstance(a, np.ndarray) else a for a in args]
    n_bn = kw["bn"]
    before = [a.copy() for a in args[-n_bn:]]
    be = fastmlp.get_backend(backend).raw
    train_steps(be, *args, **kw)
    train_steps(be, *plain[:-n_bn], **dict(kw, bn=0))
    assert not np.allclose(args[3], plain[3])
    nh = 2
    for k in list(range(nh)) + list(range(5 * nh, 7 * nh)):   # gammas, running estimates
        assert not np.allclose(args[-n_bn + k], before[k]), k


@pytest.mark.skipif(not onednn.available(), reason="bf16 needs oneDNN: pip install "
                    "\"fastmlp[onednn]\"")
@pytest.mark.parametrize("activation", ["relu", "tanh"])
def test_bf16_train_step_with_batch_norm(compiled_backend, activation):
    """The bf16 step with batch normalisation = the reference's bf16 emulation (bf16
    products, batch normalisation in float32).  rtol 3e-4, not test_bf16.py's 1e-4: after a
    step, float32 differences of ~1e-6 in W flip a few weights' bf16 copies to the
    neighbouring bf16 value (a 2⁻⁸ jump), and through the batch mean one flip moves a
    layer's output by about 1e-4.  Measured for this case (seed 2): both compiled steps
    2.6e-4 from the reference; the reference against itself with another float32 summation
    order up to 2.8e-4 after 3 steps over 10 seeds (all under 0.7e-4 after 1 step); the
    float32 step 7e-4 to 9e-4 from it, so the test still tells bf16 products from float32."""
    hyper = dict(momentum=0.9, activation=activation, dropout=0.3, dropout_seed=9,
                 precision="bf16")
    args, outputs, kw = bn_case((784, 256, 10), 128, 100, np.float32, "sgd", hyper, seed=2)
    check_against_reference(compiled_backend, train_steps, args, kw, outputs=outputs,
                            returns="values", tol=Rel(rtol=3e-4))


def test_train_step_refuses_bad_batch_norm(compiled_backend):
    rng = np.random.default_rng(0)
    args, _, kw = bn_case((7, 13, 5, 3), 9, 6, np.float32, "sgd", {})
    be = fastmlp.get_backend(compiled_backend).raw
    bad = list(args)
    bad[-kw["bn"] + 4] = np.zeros((8, 13), np.float32)   # zhats[0] of 8 rows, not 9
    with pytest.raises(ValueError, match=r"batch_norm.zhats\[0\] has shape"):
        train_steps(be, *bad, **kw)
    bad = list(args)
    bad[-kw["bn"]] = rng.standard_normal(13)             # gammas[0] float64
    with pytest.raises(TypeError, match=r"batch_norm.gammas\[0\] has dtype"):
        train_steps(be, *bad, **kw)
    W = [np.zeros((3, 4), np.float32), np.zeros((4, 2), np.float32)]
    with pytest.raises(TypeError, match="contract.BatchNorm"):
        be.TrainStep(W, [np.zeros(4, np.float32), np.zeros(2, np.float32)],
                     [np.zeros_like(w) for w in W], [np.zeros(4, np.float32),
                                                     np.zeros(2, np.float32)],
                     [np.zeros((2, 4), np.float32), np.zeros((2, 2), np.float32)],
                     [None, np.zeros((2, 4), np.float32)], np.zeros((2, 2), np.float32),
                     [None] * 4, "sgd", batch_norm=(1, 2))


# --------------------------------------------------------------------------- seed network

@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_seed_network_gradient(backend, activation):
    """The CIFAR-10 report's seed network, built small (two hidden layers with batch
    normalisation and dropout 0.4): with the mask held fixed (same seed and step), the
    composition's gradients of the weights, biases and gammas are the finite-difference
    gradients of the loss, float64, the batch's statistics."""
    be = fastmlp.get_backend(backend).raw
    rng = np.random.default_rng(1)
    sizes, n = (6, 10, 7, 3), 8
    X, y = rng.standard_normal((n, sizes[0])), rng.integers(0, sizes[-1], n)
    Ws = [rng.standard_normal((a, b)) / np.sqrt(a) for a, b in zip(sizes[:-1], sizes[1:])]
    bs = [0.1 * rng.standard_normal(b) for b in sizes[1:]]
    gammas = [1 + 0.2 * rng.standard_normal(h) for h in sizes[1:-1]]
    drop = ((0.4, 0.4), 17, 4)

    def loss_grads():
        hidden = sizes[1:-1]
        bn = BatchNorm(gammas, [np.empty(h) for h in hidden],
                       [np.empty((n, h)) for h in hidden], [np.empty(h) for h in hidden],
                       [np.empty(h) for h in hidden], [np.zeros(h) for h in hidden],
                       [np.ones(h) for h in hidden])
        acts = [np.empty((n, W.shape[1])) for W in Ws]
        deltas = [None] + [np.empty((n, W.shape[0])) for W in Ws[1:]]
        dWs, dbs = [np.empty_like(W) for W in Ws], [np.empty_like(b) for b in bs]
        dZ = np.empty_like(acts[-1])
        Z = reference.forward(be, Ws, bs, X, acts, activation, drop, bn)
        loss = reference.loss_grad(be, "softmax", Z, y, dZ)
        reference.backward(be, Ws, X, acts, dZ, dWs, dbs, deltas, activation, drop, bn)
        return loss, dWs, dbs, bn.dgammas

    _, dWs, dbs, dgs = loss_grads()
    for P, G in list(zip(Ws, dWs)) + list(zip(bs, dbs)) + list(zip(gammas, dgs)):
        np.testing.assert_allclose(G, numeric_grad(lambda: loss_grads()[0], P), rtol=1e-6,
                                   atol=1e-8)
