"""The one helper that holds a backend's kernel to the NumPy reference.

`check_against_reference(backend, kernel, args, kwargs, outputs, returns)` copies the
arguments twice, runs the reference and the backend on separate copies, and compares every
output buffer and the return value with tolerances scaled to the dtype.  It also checks that
the outputs kept their shape and dtype and that a returned array is the caller's buffer.
`kernel` is a contract function's name, or a driver `f(kernels, *args, **kwargs)` given the
reference module and the backend's raw kernels (`train_steps` drives `TrainStep`).
"""
import copy

import numpy as np

from fastmlp.backends import reference

# relative tolerance per dtype, in units of the dtype's machine epsilon
EPS_FACTOR = 64


def tol(dtype):
    return EPS_FACTOR * float(np.finfo(dtype).eps)


def assert_close(got, want, dtype, what=""):
    """|got - want| <= tol * (|want| + max|want|): relative, with an absolute floor scaled to
    the largest magnitude (cancellation in sums makes tiny entries noisy)."""
    got = np.asarray(got, dtype=np.float64)
    want = np.asarray(want, dtype=np.float64)
    scale = max(1.0, float(np.max(np.abs(want)))) if want.size else 1.0
    t = tol(dtype)
    np.testing.assert_allclose(got, want, rtol=t, atol=t * scale, err_msg=what)


def _copy_args(args):
    return [a.copy() if isinstance(a, np.ndarray) else copy.copy(a) for a in args]


def check_against_reference(backend, kernel, args, kwargs=None, outputs=(), returns=None):
    """Run `kernel` of `backend` and of the reference on copies of `args` and compare.

    outputs : positions in `args` (ints) or names in `kwargs` (str) written by the kernel.
    returns : position/name of the buffer the kernel returns, or "float" for a scalar result.
    Returns the (reference result, backend result) pair for further checks.
    """
    kwargs = kwargs or {}
    ref_args, got_args = _copy_args(args), _copy_args(args)
    ref_kw = dict(zip(kwargs, _copy_args(kwargs.values())))
    got_kw = dict(zip(kwargs, _copy_args(kwargs.values())))
    dtype = next(a.dtype for a in args if isinstance(a, np.ndarray) and a.dtype.kind == "f")

    if isinstance(kernel, str):
        want = getattr(reference, kernel)(*ref_args, **ref_kw)
        got = getattr(backend, kernel)(*got_args, **got_kw)
    else:
        want = kernel(reference, *ref_args, **ref_kw)
        got = kernel(backend.raw, *got_args, **got_kw)
        kernel = kernel.__name__

    def pick(pos, a, kw):
        return kw[pos] if isinstance(pos, str) else a[pos]

    for pos in outputs:
        g, w, orig = pick(pos, got_args, got_kw), pick(pos, ref_args, ref_kw), \
            pick(pos, list(args), kwargs)
        assert g.shape == orig.shape and g.dtype == orig.dtype, f"{kernel}: output {pos} changed"
        assert np.all(np.isfinite(g)) == np.all(np.isfinite(w)), f"{kernel}: non-finite output"
        assert_close(g, w, dtype, f"{backend.name}.{kernel} output {pos} ({dtype})")
    if returns == "float":
        assert isinstance(got, float), f"{kernel} must return a Python float, got {type(got)}"
        assert_close(got, want, dtype, f"{backend.name}.{kernel} returned value")
    elif returns == "values":
        assert_close(got, want, dtype, f"{backend.name}.{kernel} returned values")
    elif returns is not None:
        assert got is pick(returns, got_args, got_kw), \
            f"{backend.name}.{kernel} must return the caller's buffer {returns}"
    return want, got


def train_steps(kernels, X, y, sw, *arrays, n_layers, optimizer, hyper, lr, steps):
    """Driver: build `kernels.TrainStep` on `arrays` (the flat weights, biases, dweights,
    dbiases, acts, deltas (deltas[0] None), dZ and per-parameter state: None, a velocity or
    m and v, laid out by `train_step_arrays`) and run it `steps` times on (X, y, sw) with Adam
    step numbers 1, 2, ...; returns the losses."""
    L = n_layers
    W, b, dW, db = (list(arrays[k * L:(k + 1) * L]) for k in range(4))
    acts = list(arrays[4 * L:5 * L])
    deltas = [None] + list(arrays[5 * L:6 * L - 1])
    dZ, rest = arrays[6 * L - 1], list(arrays[6 * L:])
    state = ([None] * 2 * L if not rest else
             [tuple(rest[2 * i:2 * i + 2]) for i in range(2 * L)] if optimizer == "adam"
             else rest)
    plan = kernels.TrainStep(W, b, dW, db, acts, deltas, dZ, state, optimizer, **hyper)
    return np.array([plan.run(X, y, sw, lr, t) for t in range(1, steps + 1)])


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
