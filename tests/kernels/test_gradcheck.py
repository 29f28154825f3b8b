"""Finite-difference check (central differences, float64) of whole networks built from the
kernels of each backend -- every hidden activation, every output loss, with weight decay --
composed by the reference's `forward` / `loss_grad` / `backward` (the package's one
composition of kernels)."""
import numpy as np
import pytest
from helpers import numeric_grad

import fastmlp
from fastmlp.backends import reference
from fastmlp.backends.contract import ACTIVATIONS, OUTPUTS


def targets(rng, output, n, k):
    """Targets an output's loss takes: labels (softmax), 0/1 (logistic), reals, counts."""
    if output == "softmax":
        return rng.integers(0, k, n)
    if output == "logistic":
        return (rng.random((n, k)) < 0.5).astype(np.float64)
    if output == "exp":
        return rng.poisson(1.5, (n, k)).astype(np.float64)
    return rng.standard_normal((n, k))


def net_loss_and_grads(be, Ws, bs, X, y, wd, activation="relu", output="softmax"):
    """The output's loss + wd * sum ||W||^2 and its gradients, with the kernels of `be`."""
    n = X.shape[0]
    acts = [np.empty((n, W.shape[1])) for W in Ws]
    deltas = [None] + [np.empty((n, W.shape[0])) for W in Ws[1:]]
    dWs, dbs = [np.empty_like(W) for W in Ws], [np.empty_like(b) for b in bs]
    dZ = np.empty_like(acts[-1])
    Z = reference.forward(be, Ws, bs, X, acts, activation)
    loss = reference.loss_grad(be, output, Z, y, dZ) + wd * sum(float(np.sum(W * W)) for W in Ws)
    reference.backward(be, Ws, X, acts, dZ, dWs, dbs, deltas, activation)
    return loss, [dW + 2 * wd * W for dW, W in zip(dWs, Ws)], dbs


@pytest.mark.parametrize("sizes", [(5, 4, 3), (6, 5, 4, 3)], ids=["2-layer", "3-layer"])
@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("output", OUTPUTS)
def test_network_gradient_matches_finite_differences(backend, sizes, activation, output):
    be = fastmlp.get_backend(backend)
    rng = np.random.default_rng(0)
    n, wd = 8, 0.01
    X = rng.standard_normal((n, sizes[0]))
    y = targets(rng, output, n, sizes[-1])
    Ws = [rng.standard_normal((a, b)) / np.sqrt(a) for a, b in zip(sizes[:-1], sizes[1:])]
    bs = [0.1 * rng.standard_normal(b) for b in sizes[1:]]
    _, dWs, dbs = net_loss_and_grads(be, Ws, bs, X, y, wd, activation, output)

    def f():
        return net_loss_and_grads(be, Ws, bs, X, y, wd, activation, output)[0]

    for P, G in list(zip(Ws, dWs)) + list(zip(bs, dbs)):
        num = numeric_grad(f, P)
        np.testing.assert_allclose(G, num, rtol=1e-6, atol=1e-8)
    assert any(np.any(dW != 0) for dW in dWs)
