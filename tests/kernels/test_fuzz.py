"""Property tests: hypothesis drives every kernel of both compiled backends with random
shapes, dtypes and values and holds them to the NumPy reference.

Values mix ordinary numbers with the edges: zeros of both signs, subnormals, the smallest
normal, magnitudes from 1e-20 to 1e8, logits of +-1e4; separate properties sprinkle NaN and
+-inf and require the same non-finite pattern as the reference.  Tolerances are forward error
bounds of the computation, not a fixed rtol: a dot product of length k may be off by
~k eps sum|x_i w_i| (both sides round, so twice that), elementwise updates by a few eps of
the magnitudes involved, plus (k + 2) * tiny for subnormal results (a flush to zero).

One more property runs in a child process (a crash must fail, not kill, the run): random
dtypes, ranks, shapes and memory layouts at the checked boundary either raise
TypeError/ValueError or give the reference's result.

Budget: derandomized (the same examples on every run), well under a minute in all.
"""
import os
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import fastmlp
from fastmlp import testing
from fastmlp.backends import reference
from fastmlp.backends.contract import ACTIVATIONS

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")  # the reference on NaN/inf
FUZZ = settings(max_examples=60, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
C_FACTOR = 4  # slack on the first-order bounds below

dtypes = st.sampled_from([np.float32, np.float64])
dims = st.integers(1, 12)


def edge_values(dtype):
    fi = np.finfo(dtype)
    sub = float(fi.smallest_subnormal)
    return [0.0, -0.0, sub, -sub, 3 * sub, float(fi.tiny), -float(fi.tiny), 1.0, -1.0]


@st.composite
def values(draw, dtype, shape, scales=(1e-20, 1e-5, 1.0, 1e3, 1e8), nonneg=False):
    """An array of `shape`: floats up to a drawn scale, mixed with edge values."""
    scale = float(np.dtype(dtype).type(draw(st.sampled_from(scales))))  # representable
    width = np.dtype(dtype).itemsize * 8
    lo = 0.0 if nonneg else -scale
    elems = st.one_of(st.floats(lo, scale, width=width),
                      st.sampled_from([v for v in edge_values(dtype) if v >= 0 or not nonneg]))
    return draw(hnp.arrays(dtype, shape, elements=elems))


@st.composite
def nonfinite_values(draw, dtype, shape):
    a = draw(values(dtype, shape, scales=(1.0, 1e3)))
    mask = draw(hnp.arrays(np.int8, shape, elements=st.sampled_from([0] * 6 + [1, 2, 3])))
    a[mask == 1], a[mask == 2], a[mask == 3] = np.nan, np.inf, -np.inf
    return a


def run_both(backend, kernel, args, outputs):
    """fastmlp.testing.run_both (the reference and `backend` on separate copies); returns
    (want, got) lists of the output buffers followed by the return value."""
    want, got, (ref_args, _), (got_args, _) = testing.run_both(backend, kernel, args)
    return [ref_args[i] for i in outputs] + [want], [got_args[i] for i in outputs] + [got]


def assert_within(got, want, bound, what):
    testing.Within(bound).check(got, want, what=what)


def dot_bound(k, dtype, magnitude):
    """Twice the forward-error bound of k-term dot products of the given |x| |w| sums."""
    fi = np.finfo(dtype)
    return 2 * C_FACTOR * (k + 2) * (float(fi.eps) * magnitude + float(fi.tiny))


def same_nonfinite(got, want, what):
    testing.SameNonFinite().check(got, want, what=what)


# ---- linear layers ----------------------------------------------------------------------------

@st.composite
def linear_case(draw, nonfinite=False):
    dt, n, d, h = draw(dtypes), draw(dims), draw(dims), draw(dims)
    arr = (lambda s: nonfinite_values(dt, s)) if nonfinite else (lambda s: values(dt, s))
    return (dt, draw(arr((n, d))), draw(arr((d, h))), draw(arr((h,))),
            draw(st.sampled_from(ACTIVATIONS)))


@FUZZ
@given(case=linear_case())
def test_linear_forward(compiled, case):
    dt, X, W, b, activation = case
    (out, ret), (gout, gret) = run_both(compiled, "linear_forward",
                                        [X, W, b, np.full((len(X), len(b)), np.nan, dt),
                                         activation],
                                        [3])
    assert gret is not None
    mag = np.abs(X.astype(np.float64)) @ np.abs(W.astype(np.float64)) + np.abs(b)
    # tanh and logistic have slopes <= 1 and outputs <= 1: the product's error carries over,
    # plus a few eps of the function's own rounding
    own = 0.0 if activation in ("identity", "relu") else 4 * C_FACTOR * float(np.finfo(dt).eps)
    assert_within(gout, out, dot_bound(X.shape[1], dt, mag) + own,
                  f"{compiled} linear_forward {activation}")


@FUZZ
@given(case=linear_case(nonfinite=True))
def test_linear_forward_passes_nan_and_inf_through(compiled, case):
    dt, X, W, b, activation = case
    (out, _), (gout, _) = run_both(compiled, "linear_forward",
                                   [X, W, b, np.empty((len(X), len(b)), dt), activation], [3])
    same_nonfinite(gout, out, f"{compiled} linear_forward")


@FUZZ
@given(case=linear_case(), with_dx=st.booleans(), data=st.data())
def test_linear_backward(compiled, case, with_dx, data):
    dt, X, W, _, _ = case
    n, d, h = X.shape[0], X.shape[1], W.shape[1]
    dY = data.draw(values(dt, (n, h)))
    args = [dY, X, W, np.full((d, h), np.nan, dt), np.full(h, np.nan, dt)]
    outputs = [3, 4]
    if with_dx:
        args.append(np.full((n, d), np.nan, dt))
        outputs.append(5)
    want, got = run_both(compiled, "linear_backward", args, outputs)
    aX, aW, adY = (np.abs(a.astype(np.float64)) for a in (X, W, dY))
    assert_within(got[0], want[0], dot_bound(n, dt, aX.T @ adY), f"{compiled} dW")
    assert_within(got[1], want[1], dot_bound(n, dt, adY.sum(0)), f"{compiled} db")
    if with_dx:
        assert_within(got[2], want[2], dot_bound(h, dt, adY @ aW.T), f"{compiled} dX")


@FUZZ
@given(dt=dtypes, n=dims, h=dims, data=st.data())
def test_relu_backward_is_exact(compiled, dt, n, h, data):
    dH = data.draw(nonfinite_values(dt, (n, h)))
    H = data.draw(nonfinite_values(dt, (n, h)))
    (want, _), (got, _) = run_both(compiled, "activation_backward", [dH, H, "relu"], [0])
    np.testing.assert_array_equal(got, want)  # a mask: no rounding at all
    np.testing.assert_array_equal(np.signbit(got), np.signbit(want))


# ---- softmax cross-entropy --------------------------------------------------------------------

@st.composite
def xent_case(draw, nonfinite=False):
    dt, n, c = draw(dtypes), draw(dims), draw(st.integers(1, 8))
    if nonfinite:
        Z = draw(nonfinite_values(dt, (n, c)))
    else:
        Z = draw(values(dt, (n, c), scales=(1e-20, 1.0, 30.0, 1e3, 1e4)))
        Z[draw(hnp.arrays(np.bool_, (n, c)))] = draw(st.sampled_from([1e4, -1e4, 0.0]))
    y = draw(hnp.arrays(np.int64, n, elements=st.integers(0, c - 1)))
    sw = None
    if draw(st.booleans()):
        sw = draw(values(dt, (n,), scales=(1e-3, 1.0, 100.0), nonneg=True))
        assume(sw.sum(dtype=np.float64) > 1e-6)
    return dt, Z, y, sw


@FUZZ
@given(case=xent_case())
def test_softmax_xent_grad(compiled, case):
    dt, Z, y, sw = case
    (dZ, loss), (gdZ, gloss) = run_both(compiled, "softmax_xent_grad",
                                        [Z, y, np.full(Z.shape, np.nan, dt), sw], [2])
    assert isinstance(gloss, float) and np.isfinite(gloss)
    eps = float(np.finfo(dt).eps)
    n, c = Z.shape
    zmax = float(np.abs(Z).max())
    # each row's NLL is log-sum-exp minus the shifted logit: both carry eps * |Z| at most
    assert_within(gloss, loss, 2 * C_FACTOR * eps * (2 * zmax + np.log(c) + 1),
                  f"{compiled} loss")
    w = np.ones(n) if sw is None else sw.astype(np.float64)
    share = (w / w.sum())[:, None]  # dZ_i = share_i (p_i - onehot_i), |p| <= 1
    assert_within(gdZ, dZ, 2 * C_FACTOR * (c + 2) * (eps * share + float(np.finfo(dt).tiny)),
                  f"{compiled} dZ")


@FUZZ
@given(case=xent_case(nonfinite=True))
def test_softmax_xent_grad_non_finite_logits(compiled, case):
    dt, Z, y, _ = case
    (dZ, loss), (gdZ, gloss) = run_both(compiled, "softmax_xent_grad",
                                        [Z, y, np.empty(Z.shape, dt)], [2])
    same_nonfinite(gdZ, dZ, f"{compiled} dZ")
    same_nonfinite(gloss, loss, f"{compiled} loss")


# ---- optimizer updates --------------------------------------------------------------------------

shapes = st.one_of(st.tuples(st.integers(1, 40)), st.tuples(dims, dims),
                   st.tuples(st.integers(1, 3), st.integers(1, 4), st.integers(1, 5)))
UPDATE_SCALES = (1e-20, 1e-5, 1.0, 1e3, 1e6)


@FUZZ
@given(dt=dtypes, shape=shapes, data=st.data(),
       lr=st.floats(0, 10), wd=st.one_of(st.just(0.0), st.floats(0, 1)),
       mode=st.sampled_from(["plain", "momentum", "nesterov"]), momentum=st.floats(0, 0.999))
def test_sgd_update(compiled, dt, shape, data, lr, wd, mode, momentum):
    W, dW, v = (data.draw(values(dt, shape, UPDATE_SCALES)) for _ in range(3))
    eps, tiny = float(np.finfo(dt).eps), float(np.finfo(dt).tiny)
    if mode == "plain":
        (gW_, _), (gW, _) = run_both(compiled, "sgd_update", [W, dW, lr, wd], [0])
    else:
        want, got = run_both(compiled, "sgd_update",
                             [W, dW, lr, wd, v, momentum, mode == "nesterov"], [0, 4])
        gW_, gW = want[0], got[0]
    aW, adW, av = (np.abs(a.astype(np.float64)) for a in (W, dW, v))
    g = adW + 2 * wd * aW
    mu = 0.0 if mode == "plain" else momentum
    vel = mu * av + g
    mag = aW + lr * (g + mu * vel + (mu * av if mode == "momentum" else 0))
    assert_within(gW, gW_, 2 * C_FACTOR * (eps * (mag + lr * vel) + tiny), f"{compiled} W")
    if mode != "plain":
        assert_within(got[1], want[1], 2 * C_FACTOR * (eps * vel + tiny), f"{compiled} velocity")


@FUZZ
@given(dt=dtypes, shape=shapes, data=st.data(), step=st.integers(1, 10 ** 4),
       lr=st.floats(0, 1), beta1=st.floats(0, 0.99), beta2=st.floats(0, 0.9999),
       eps_adam=st.floats(1e-8, 0.1), wd=st.one_of(st.just(0.0), st.floats(0, 1)))
def test_adam_update(compiled, dt, shape, data, step, lr, beta1, beta2, eps_adam, wd):
    W, dW, m = (data.draw(values(dt, shape, UPDATE_SCALES)) for _ in range(3))
    v = data.draw(values(dt, shape, UPDATE_SCALES, nonneg=True))
    want, got = run_both(compiled, "adam_update",
                         [W, dW, m, v, step, lr, beta1, beta2, eps_adam, wd], [0, 2, 3])
    eps, tiny = float(np.finfo(dt).eps), float(np.finfo(dt).tiny)
    aW, adW, am, av = (np.abs(a.astype(np.float64)) for a in (W, dW, m, v))
    g = adW + 2 * wd * aW
    m_mag = beta1 * am + (1 - beta1) * g
    v_mag = beta2 * av + (1 - beta2) * g * g
    c1, c2 = 1 - beta1 ** step, 1 - beta2 ** step
    u = lr * (np.abs(want[1].astype(np.float64)) / c1) / (
        np.sqrt(want[2].astype(np.float64) / c2) + eps_adam)
    tol = 2 * C_FACTOR * 8
    assert_within(got[1], want[1], tol * (eps * m_mag + tiny), f"{compiled} m")
    assert_within(got[2], want[2], tol * (eps * v_mag + tiny), f"{compiled} v")
    # u's own rounding, plus the propagated error of m (relative) and of v (half, via sqrt)
    u_err = u * (eps + (eps * m_mag + tiny) / np.maximum(m_mag, tiny)) + \
        lr / c1 * (eps * m_mag + tiny) / (np.sqrt(v_mag / c2) + eps_adam)
    assert_within(got[0], want[0], tol * (eps * aW + u_err + tiny), f"{compiled} W")


# ---- random dtypes, ranks and layouts at the checked boundary (in a child process) -------------

CHILD_ENV = "FASTMLP_FUZZ_CHILD"


def test_checked_boundary_in_a_child_process(tmp_path):
    env = dict(os.environ, **{CHILD_ENV: "1"})
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           "--no-header", "-o", "addopts=", f"{__file__}::test_checked_boundary"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"child exited {proc.returncode}:\n{proc.stdout[-4000:]}" \
                                 f"\n{proc.stderr[-2000:]}"
    assert " passed" in proc.stdout


LAYOUTS = ["C", "C", "C", "F", "strided", "reversed", "readonly", "float16", "int64", "object",
           "other float", "wrong shape", "extra axis", "list"]


def _as_layout(a, layout, other):
    """`a` (a float array) presented in `layout`; `other` is the other float dtype."""
    if not isinstance(a, np.ndarray):
        return a
    if layout == "F":
        return np.asfortranarray(a)
    if layout == "strided":
        big = np.zeros((2 * a.shape[0],) + a.shape[1:] if a.ndim else (), a.dtype)
        big[::2] = a
        return big[::2]
    if layout == "reversed":
        return a[::-1].copy()[::-1] if a.ndim else a
    if layout == "readonly":
        a = a.copy()
        a.flags.writeable = False
        return a
    if layout in ("float16", "int64", "object"):
        return a.astype(layout)
    if layout == "other float":
        return a.astype(other)
    if layout == "wrong shape":
        return np.zeros(tuple(s + 1 for s in a.shape) or (1,), a.dtype)
    if layout == "extra axis":
        return a[None]
    if layout == "list":
        return a.tolist()
    return a.copy()


@st.composite
def checked_call(draw):
    dt = draw(dtypes)
    other = np.float64 if dt == np.float32 else np.float32
    n, d, h, c = draw(dims), draw(dims), draw(dims), draw(st.integers(1, 5))
    rng = np.random.default_rng(draw(st.integers(0, 2 ** 16)))
    r = lambda *s: rng.standard_normal(s).astype(dt)  # noqa: E731
    kernel = draw(st.sampled_from(["linear_forward", "linear_backward", "activation_backward",
                                   "softmax_xent_grad", "sgd_update", "adam_update"]))
    y = rng.integers(0, c, n)
    args = {"linear_forward": [r(n, d), r(d, h), r(h), r(n, h)],
            "linear_backward": [r(n, h), r(n, d), r(d, h), r(d, h), r(h), r(n, d)],
            "activation_backward": [r(n, h), np.maximum(r(n, h), 0)],
            "softmax_xent_grad": [r(n, c), y, r(n, c)],
            "sgd_update": [r(d, h), r(d, h), 0.1, 0.01, r(d, h), 0.9, True],
            "adam_update": [r(d, h), r(d, h), r(d, h), np.abs(r(d, h)), 3, 0.01]}[kernel]
    layouts = [draw(st.sampled_from(LAYOUTS)) if isinstance(a, np.ndarray) and a.dtype == dt
               else "C" for a in args]
    given_args = [_as_layout(a, lay, other) for a, lay in zip(args, layouts)]
    outputs = {"linear_forward": [3], "linear_backward": [3, 4, 5], "activation_backward": [0],
               "softmax_xent_grad": [2], "sgd_update": [0, 4], "adam_update": [0, 2, 3]}[kernel]
    floats = [(i, a, g) for i, (a, g) in enumerate(zip(args, given_args))
              if isinstance(a, np.ndarray) and a.dtype == dt]
    layout_ok = all(isinstance(g, np.ndarray) and g.dtype in (np.float32, np.float64) and
                    g.dtype == floats[0][2].dtype and g.flags.c_contiguous and
                    (g.flags.writeable or i not in outputs)
                    for i, a, g in floats)  # one float dtype, C order, writable outputs
    shapes_kept = all(np.shape(g) == a.shape for _, a, g in floats)
    return kernel, given_args, layout_ok, shapes_kept


if os.environ.get(CHILD_ENV) == "1":  # collected in the child process only
    @settings(max_examples=150, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(call=checked_call())
    def test_checked_boundary(compiled, call):
        kernel, args, layout_ok, shapes_kept = call
        ref_args = [a.copy() if isinstance(a, np.ndarray) else a for a in args]
        try:
            got = getattr(fastmlp.get_backend(compiled), kernel)(*args)
        except (TypeError, ValueError):
            assert not (layout_ok and shapes_kept), "valid arguments were refused"
            return
        # accepted: the arguments keep the contract, and the answer is the reference's
        assert layout_ok, "arguments breaking the contract were accepted"
        want = getattr(reference, kernel)(*ref_args)
        if kernel == "softmax_xent_grad":
            assert got == pytest.approx(want, rel=1e-4)
        else:
            np.testing.assert_allclose(np.asarray(got, np.float64), np.asarray(want, np.float64),
                                       rtol=1e-4, atol=1e-4)
