"""Helpers shared by the tests: the arrays of a `TrainStep` and a driver that runs it, for
`fastmlp.testing.check_against_reference`, the one comparison helper (re-exported here with
`assert_close` and `tol`); parameter snapshots; a small synthetic dataset."""
import numpy as np

from fastmlp.backends.contract import BatchNorm
from fastmlp.testing import DEFAULT, assert_close, check_against_reference  # noqa: F401


def tol(dtype):
    """The default rule's relative tolerance for `dtype`."""
    return DEFAULT.tol(dtype)


def train_steps(kernels, X, y, sw, *arrays, n_layers, optimizer, hyper, lr, steps, bn=0):
    """Driver: build `kernels.TrainStep` on `arrays` (the flat weights, biases, dweights,
    dbiases, acts, deltas (deltas[0] None), dZ and per-parameter state: None, a velocity or
    m and v, laid out by `train_step_arrays`) and run it `steps` times on (X, y, sw) with Adam
    step numbers 1, 2, ...; `hyper` holds the constructor's keywords and run's weight_decay
    and eps.  bn > 0: the last `bn` arrays are a contract.BatchNorm's, laid out by
    `train_step_bn_arrays`.  Returns the losses."""
    L = n_layers
    batch_norm = None
    if bn:
        arrays, flat = arrays[:-bn], list(arrays[-bn:])
        nh = L - 1
        lists = [flat[k * nh:(k + 1) * nh] for k in range(7)]
        rest = flat[7 * nh:]
        gstate = ([None] * nh if not rest else
                  [tuple(rest[2 * i:2 * i + 2]) for i in range(nh)] if optimizer == "adam"
                  else rest)
        batch_norm = BatchNorm(*lists, state=gstate)
    W, b, dW, db = (list(arrays[k * L:(k + 1) * L]) for k in range(4))
    acts = list(arrays[4 * L:5 * L])
    deltas = [None] + list(arrays[5 * L:6 * L - 1])
    dZ, rest = arrays[6 * L - 1], list(arrays[6 * L:])
    state = ([None] * 2 * L if not rest else
             [tuple(rest[2 * i:2 * i + 2]) for i in range(2 * L)] if optimizer == "adam"
             else rest)
    per_run = {k: hyper[k] for k in ("weight_decay", "eps") if k in hyper}
    built = {k: v for k, v in hyper.items() if k not in per_run}
    if batch_norm is not None:
        built["batch_norm"] = batch_norm
    plan = kernels.TrainStep(W, b, dW, db, acts, deltas, dZ, state, optimizer, **built)
    return np.array([plan.run(X, y, sw, lr, t, **per_run) for t in range(1, steps + 1)])


def train_step_arrays(rng, sizes, n_max, dtype, optimizer, momentum):
    """Random parameters, NaN-filled buffers and small random optimizer state for
    `train_steps`; returns (arrays, positions of the parameters and state)."""
    pairs = list(zip(sizes[:-1], sizes[1:]))
    W = [(rng.standard_normal(p) / np.sqrt(p[0])).astype(dtype) for p in pairs]
    b = [(0.1 * rng.standard_normal(p[1])).astype(dtype) for p in pairs]
    nan = [np.full(p.shape, np.nan, dtype) for p in W + b]
    acts = [np.full((n_max, s), np.nan, dtype) for s in sizes[1:]]
    deltas = [np.full((n_max, s), np.nan, dtype) for s in sizes[1:-1]]
    dZ = np.full((n_max, sizes[-1]), np.nan, dtype)
    params = W + b
    if optimizer == "adam":
        state = [a for p in params for a in ((0.1 * rng.standard_normal(p.shape)).astype(dtype),
                                             (0.1 * rng.random(p.shape)).astype(dtype))]
    elif momentum:
        state = [(0.1 * rng.standard_normal(p.shape)).astype(dtype) for p in params]
    else:
        state = []
    arrays = params + nan + acts + deltas + [dZ] + state
    n_p = len(params)
    return arrays, list(range(n_p)) + list(range(len(arrays) - len(state), len(arrays)))


def train_step_bn_arrays(rng, sizes, n_max, dtype, optimizer, momentum):
    """A contract.BatchNorm's arrays for `train_steps(..., bn=len(arrays))`, flat: gammas
    (around 1), NaN dgammas, zhats, means and vars, random running estimates, and γ's
    optimizer state; returns (arrays, positions of gammas, running estimates and state)."""
    hidden = sizes[1:-1]
    gam = [(1 + 0.2 * rng.standard_normal(h)).astype(dtype) for h in hidden]
    nan = [np.full(h, np.nan, dtype) for h in hidden]
    zhats = [np.full((n_max, h), np.nan, dtype) for h in hidden]
    rmean = [(0.1 * rng.standard_normal(h)).astype(dtype) for h in hidden]
    rvar = [(1 + rng.random(h)).astype(dtype) for h in hidden]
    if optimizer == "adam":
        state = [a for h in hidden for a in ((0.1 * rng.standard_normal(h)).astype(dtype),
                                             (0.1 * rng.random(h)).astype(dtype))]
    elif momentum:
        state = [(0.1 * rng.standard_normal(h)).astype(dtype) for h in hidden]
    else:
        state = []
    arrays = gam + nan + zhats + [a.copy() for a in nan] + [a.copy() for a in nan] + \
        rmean + rvar + state
    nh = len(hidden)
    keep = list(range(nh)) + list(range(5 * nh, 7 * nh)) + \
        list(range(7 * nh, 7 * nh + len(state)))
    return arrays, keep


def params(model):
    """Copies of the model's parameters, weights then biases."""
    return [p.copy() for p in model.weights + model.biases]


def same(a, b):
    return all(np.array_equal(x, y) for x, y in zip(a, b))


def finite(ps):
    return all(np.all(np.isfinite(p)) for p in ps)


def small_data(n=300, d=8, c=3, seed=0):
    """n points around c random centres in d dimensions: X (n, d) float32, y (n,) int."""
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((c, d)) * 3
    y = rng.integers(0, c, n)
    return (centers[y] + rng.standard_normal((n, d))).astype(np.float32), y


def record_updates(trainer):
    """Every parameter state of the run: before training, then after each completed step."""
    states = [params(trainer.model)]
    step = trainer._step

    def recorded(*args):
        loss = step(*args)
        states.append(params(trainer.model))
        return loss
    trainer._step = recorded
    return states


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
