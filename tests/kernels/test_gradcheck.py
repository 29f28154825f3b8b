"""Finite-difference check (central differences, float64) of whole networks built from the
kernels of each backend, with weight decay."""
import numpy as np
import pytest

import fastmlp


def net_loss_and_grads(be, Ws, bs, X, y, wd):
    """loss = mean NLL + wd * sum ||W||^2 and its gradients, composed from the kernels."""
    acts = [X]
    for i, (W, b) in enumerate(zip(Ws, bs)):
        out = np.empty((X.shape[0], W.shape[1]), X.dtype)
        be.linear_forward(acts[-1], W, b, out, relu=i < len(Ws) - 1)
        acts.append(out)
    dZ = np.empty_like(acts[-1])
    loss = be.softmax_xent_grad(acts[-1], y, dZ) + wd * sum(float(np.sum(W * W)) for W in Ws)
    dWs, dbs = [None] * len(Ws), [None] * len(Ws)
    delta = dZ
    for i in reversed(range(len(Ws))):
        dWs[i], dbs[i] = np.empty_like(Ws[i]), np.empty_like(bs[i])
        dX = np.empty_like(acts[i]) if i > 0 else None
        be.linear_backward(delta, acts[i], Ws[i], dWs[i], dbs[i], dX)
        dWs[i] += 2 * wd * Ws[i]
        if i > 0:
            delta = be.relu_backward(dX, acts[i])
    return loss, dWs, dbs


def numeric_grad(f, P, h=1e-6):
    """Central differences of scalar f() with respect to every entry of P (modified in place)."""
    G = np.zeros_like(P)
    for idx in np.ndindex(P.shape):
        old = P[idx]
        P[idx] = old + h
        fp = f()
        P[idx] = old - h
        fm = f()
        P[idx] = old
        G[idx] = (fp - fm) / (2 * h)
    return G


@pytest.mark.parametrize("sizes", [(5, 4, 3), (6, 5, 4, 3)], ids=["2-layer", "3-layer"])
def test_network_gradient_matches_finite_differences(backend, sizes):
    be = fastmlp.get_backend(backend)
    rng = np.random.default_rng(0)
    n, wd = 8, 0.01
    X = rng.standard_normal((n, sizes[0]))
    y = rng.integers(0, sizes[-1], n)
    Ws = [rng.standard_normal((a, b)) for a, b in zip(sizes[:-1], sizes[1:])]
    bs = [0.1 * rng.standard_normal(b) for b in sizes[1:]]
    _, dWs, dbs = net_loss_and_grads(be, Ws, bs, X, y, wd)

    def f():
        return net_loss_and_grads(be, Ws, bs, X, y, wd)[0]

    for P, G in list(zip(Ws, dWs)) + list(zip(bs, dbs)):
        num = numeric_grad(f, P)
        np.testing.assert_allclose(G, num, rtol=1e-6, atol=1e-8)
    assert any(np.any(dW != 0) for dW in dWs)
