"""Holding a backend to the NumPy reference: the one comparison helper of fastmlp's tests, fuzz
properties and benchmarks.

`check_against_reference(backend, kernel, args, kwargs, outputs, returns, tol)` copies the
arguments twice, runs the reference and the backend on separate copies (`run_both`), and
compares every output buffer and the return value under a tolerance rule.  It also checks
that the outputs kept their shape and dtype and that a returned array is the caller's buffer.
`kernel` is a contract function's name, or a driver `f(kernels, *args, **kwargs)` given the
reference module and the backend's raw kernels (e.g. one that drives `TrainStep`).

A tolerance rule is an object with `check(got, want, dtype, what)` that raises
AssertionError on a mismatch:

* `Rel(factor)`: |got - want| <= tol·(|want| + max(1, max|want|)), tol = factor·eps(dtype):
  relative, with an absolute floor scaled to the largest magnitude (cancellation in sums makes
  tiny entries noisy).  The default, Rel(64).  `Rel(rtol=r, floor=0)` is a fixed rtol with
  atol = r·max|want|.
* `Within(bound)`: |got - want| <= bound elementwise (a forward-error bound the caller
  derives), with the same finite/non-finite pattern.
* `SameNonFinite()`: NaN, +inf and -inf in the same places.
* `Mostly(rtol, atol, share, cap)`: at least `share` of the entries within rtol·|want| + atol,
  and all within `cap` (for steps whose rounding noise an update amplifies, e.g. Adam's first
  step moves a weight by about ±lr whatever the size of its gradient).
"""
import copy

import numpy as np

from .backends import get_backend, reference


class Rel:
    """Relative tolerance `factor` machine epsilons of the dtype (or a fixed `rtol`), with an
    absolute floor of that tolerance times max(floor, max|want|)."""

    def __init__(self, factor=64, rtol=None, floor=1.0):
        self.factor, self.rtol, self.floor = factor, rtol, floor

    def tol(self, dtype):
        return self.rtol if self.rtol is not None else self.factor * float(np.finfo(dtype).eps)

    def check(self, got, want, dtype, what=""):
        got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
        scale = max(self.floor, float(np.max(np.abs(want)))) if want.size else self.floor
        t = self.tol(dtype)
        np.testing.assert_allclose(got, want, rtol=t, atol=t * scale, err_msg=what)


class Within:
    """|got - want| <= bound, elementwise (bound broadcasts), where `want` is finite; the
    finite pattern must match."""

    def __init__(self, bound):
        self.bound = bound

    def check(self, got, want, dtype=None, what=""):
        got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
        assert got.shape == want.shape, f"{what}: shape {got.shape} != {want.shape}"
        np.testing.assert_array_equal(np.isfinite(got), np.isfinite(want), err_msg=what)
        ok = np.isfinite(want)
        err = np.abs(got[ok] - want[ok])
        limit = np.broadcast_to(self.bound, want.shape)[ok]
        worst = int(np.argmax(err - limit)) if err.size else 0
        assert np.all(err <= limit), (f"{what}: |got - want| = {err[worst]:.3g} > bound "
                                      f"{limit[worst]:.3g} (want {want[ok][worst]:.6g})")


class SameNonFinite:
    """NaN, +inf and -inf in the same places (the values themselves are not compared)."""

    def check(self, got, want, dtype=None, what=""):
        g, w = np.asarray(got, np.float64), np.asarray(want, np.float64)
        np.testing.assert_array_equal(np.isnan(g), np.isnan(w), err_msg=what + " NaN")
        np.testing.assert_array_equal(np.isposinf(g), np.isposinf(w), err_msg=what + " +inf")
        np.testing.assert_array_equal(np.isneginf(g), np.isneginf(w), err_msg=what + " -inf")


class Mostly:
    """At least `share` of the entries within rtol·|want| + atol, every one within `cap`."""

    def __init__(self, rtol, atol, share, cap):
        self.rtol, self.atol, self.share, self.cap = rtol, atol, share, cap

    def check(self, got, want, dtype=None, what=""):
        got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
        diff = np.abs(got - want)
        agree = float(np.mean(diff <= self.rtol * np.abs(want) + self.atol)) if diff.size else 1.0
        worst = float(diff.max()) if diff.size else 0.0
        assert agree >= self.share and worst <= self.cap, \
            f"{what}: {agree:.2%} of entries agree, largest difference {worst:.3g}"


DEFAULT = Rel(64)


def assert_close(got, want, dtype, what="", tol=DEFAULT):
    """`tol.check(got, want, dtype, what)` (Rel(64) by default)."""
    tol.check(got, want, dtype, what)


def _copies(args):
    return [a.copy() if isinstance(a, np.ndarray) else copy.copy(a) for a in args]


def run_both(backend, kernel, args, kwargs=None):
    """Run `kernel` of the reference and of `backend` (a name or a backend object) on
    separate copies of `args` / `kwargs`.  A named kernel goes through the backend's checked
    face; a driver f(kernels, ...) gets the reference module and the backend's raw kernels.
    Returns (want, got, (ref_args, ref_kwargs), (got_args, got_kwargs))."""
    backend = get_backend(backend)
    kwargs = kwargs or {}
    ref_args, got_args = _copies(args), _copies(args)
    ref_kw = dict(zip(kwargs, _copies(kwargs.values())))
    got_kw = dict(zip(kwargs, _copies(kwargs.values())))
    if isinstance(kernel, str):
        want = getattr(reference, kernel)(*ref_args, **ref_kw)
        got = getattr(backend, kernel)(*got_args, **got_kw)
    else:
        want = kernel(reference, *ref_args, **ref_kw)
        got = kernel(backend.raw, *got_args, **got_kw)
    return want, got, (ref_args, ref_kw), (got_args, got_kw)


def check_against_reference(backend, kernel, args, kwargs=None, outputs=(), returns=None,
                            tol=DEFAULT):
    """Run `kernel` of `backend` and of the reference on copies of `args` and compare.

    outputs : positions in `args` (ints) or names in `kwargs` (str) written by the kernel.
    returns : position/name of the buffer the kernel returns, "float" for a scalar result,
        "values" for an array of values (compared, not identified), or None.
    tol : a tolerance rule (module docstring); Rel(64) by default.
    Returns the (reference result, backend result) pair for further checks.
    """
    backend = get_backend(backend)
    kwargs = kwargs or {}
    want, got, (ref_args, ref_kw), (got_args, got_kw) = run_both(backend, kernel, args, kwargs)
    dtype = next(a.dtype for a in args if isinstance(a, np.ndarray) and a.dtype.kind == "f")
    name = kernel if isinstance(kernel, str) else kernel.__name__

    def pick(pos, a, kw):
        return kw[pos] if isinstance(pos, str) else a[pos]

    for pos in outputs:
        g, w, orig = pick(pos, got_args, got_kw), pick(pos, ref_args, ref_kw), \
            pick(pos, list(args), kwargs)
        assert g.shape == orig.shape and g.dtype == orig.dtype, f"{name}: output {pos} changed"
        assert np.all(np.isfinite(g)) == np.all(np.isfinite(w)), f"{name}: non-finite output"
        tol.check(g, w, dtype, f"{backend.name}.{name} output {pos} ({dtype})")
    if returns == "float":
        assert isinstance(got, float), f"{name} must return a Python float, got {type(got)}"
        tol.check(got, want, dtype, f"{backend.name}.{name} returned value")
    elif returns == "values":
        tol.check(got, want, dtype, f"{backend.name}.{name} returned values")
    elif returns is not None:
        assert got is pick(returns, got_args, got_kw), \
            f"{backend.name}.{name} must return the caller's buffer {returns}"
    return want, got
